"""CP-SAT stage selection agrees with exact dynamic programmes on random candidate sets."""

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.partition import dp
from compiler.partition.candidates import Candidate
from compiler.partition.cost import Breakdown
from compiler.partition.cpsat import solve


@st.composite
def candidate_sets(draw):
    units = draw(st.integers(1, 6))
    cands = []
    for first in range(units):
        for stop in range(first + 1, min(units, first + 3) + 1):
            for tp in draw(st.sets(st.integers(1, 8), min_size=0, max_size=3)):
                latency = draw(st.integers(1, 50)) * 1e-6
                cands.append(Candidate(first, stop, tp, 0, 0, Breakdown(memory_s=latency)))
    return units, cands


def _chips(path):
    return sum(c.tp for c in path)


def _latency(path):
    return sum(c.latency_ps for c in path)


@settings(max_examples=60, deadline=None)
@given(candidate_sets())
def test_fewest_chips_matches_dp(case):
    units, cands = case
    best = dp.fewest_chips(cands, units)
    found = solve(cands, units, "chips", None, 10_000, 0, 10.0)
    assert (found is None) == (best is None)
    if best is not None:
        assert found.status == "OPTIMAL"
        assert (_chips(found.stages), _latency(found.stages)) == (_chips(best), _latency(best))


@settings(max_examples=60, deadline=None)
@given(candidate_sets(), st.integers(1, 24))
def test_lowest_latency_within_budget_matches_dp(case, budget):
    units, cands = case
    best = dp.lowest_latency(cands, units, budget)
    found = solve(cands, units, "latency", None, budget, 0, 10.0)
    assert (found is None) == (best is None)
    if best is not None:
        assert _chips(found.stages) <= budget
        assert _latency(found.stages) == _latency(best)


def test_stages_tile_the_units_in_order():
    cands = [Candidate(0, 1, 2, 0, 0, Breakdown(memory_s=1e-6)), Candidate(1, 3, 4, 0, 0, Breakdown(memory_s=2e-6)),
             Candidate(0, 2, 8, 0, 0, Breakdown(memory_s=1e-6)), Candidate(2, 3, 1, 0, 0, Breakdown(memory_s=5e-6))]
    found = solve(cands, 3, "chips", None, 100, 0, 10.0)
    assert [(c.first, c.stop) for c in found.stages] == [(0, 1), (1, 3)]


def test_exact_chip_count_is_honoured_or_refused():
    cands = [Candidate(0, 1, t, 0, 0, Breakdown(memory_s=1e-6 / t)) for t in (2, 4)]
    assert solve(cands, 1, "latency", 4, 4, 0, 10.0).stages[0].tp == 4
    assert solve(cands, 1, "latency", 3, 3, 0, 10.0) is None
