"""CP-SAT stage selection agrees with exact dynamic programmes on random candidate sets."""

import itertools
from dataclasses import fields, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.partition import dp
from compiler.partition.candidates import Candidate
from compiler.partition.cost import Breakdown
from compiler.partition.cpsat import solve
from compiler.partition.placement import next_start, straddle_start
from targets import load_target

LPU = load_target("lpu")


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


def _paths(cands, units, first=0):
    """Every path of candidates from unit `first` to the end (small cases)."""
    if first == units:
        yield []
        return
    for c in (c for c in cands if c.first == first):
        for rest in _paths(cands, units, c.stop):
            yield [c, *rest]


def _span(path, start_at):
    end = 0
    for c in path:
        end = start_at(end, c.tp) + c.tp
    return end


@st.composite
def wide_candidate_sets(draw):
    """Stages of up to a group's chips and more, where node and group alignment leave gaps."""
    units = draw(st.integers(1, 5))
    sizes = st.sets(st.sampled_from([1, 3, 5, 8, 16, 24, 32, 40, 48, 56, 64, 80]), min_size=0, max_size=3)
    cands = [Candidate(first, stop, tp, 0, 0, Breakdown(memory_s=draw(st.integers(1, 50)) * 1e-6))
             for first in range(units) for stop in range(first + 1, min(units, first + 3) + 1)
             for tp in sorted(draw(sizes))]
    return units, cands


@settings(max_examples=80, deadline=None)
@given(wide_candidate_sets(), st.integers(1, 400))
def test_smallest_footprint_matches_every_path_laid_out(case, limit):
    """The DP's path spans the fewest chips laid out by placement.next_start (then is the fastest, then
    uses the fewest chips), as trying every path says."""
    units, cands = case

    def start_at(cursor, tp):
        return next_start(cursor, tp, LPU)

    found = dp.smallest_footprint(cands, units, start_at, limit)
    laid = [(_span(p, start_at), _latency(p), _chips(p)) for p in _paths(cands, units)]
    best = min((key for key in laid if key[0] <= limit), default=None)
    assert (found is None) == (best is None)
    if best is not None:
        assert (_span(found, start_at), _latency(found), _chips(found)) == best
        assert [c.first for c in found] == [0, *itertools.accumulate(c.stop - c.first for c in found)][:-1]


@settings(max_examples=80, deadline=None)
@given(wide_candidate_sets(), st.integers(1, 400), st.lists(st.integers(0, 60), min_size=40, max_size=40))
def test_smallest_footprint_with_straddles_matches_every_path_and_choice_laid_out(case, limit, extra):
    """With placement.straddle_start offered, the DP's path and layout span the fewest chips (then are the
    fastest, a straddling stage slower by its straddle_ps, then use the fewest chips), as trying every path
    with every stage inside a group or, where sooner, across two says."""
    units, cands = case
    cands = [replace(c, straddle_ps=extra[i % len(extra)] * 10**6) for i, c in enumerate(cands)]

    def start_at(cursor, tp):
        return next_start(cursor, tp, LPU)

    def straddle_at(cursor, tp):
        return straddle_start(cursor, tp, LPU)

    def laid_out(path):
        ends = {0: 0}  # end -> least latency, over every way of laying the path out
        for c in path:
            after = {}
            for end, lat in ends.items():
                options = [(start_at(end, c.tp), 0)]
                across = straddle_at(end, c.tp)
                if across is not None:
                    options.append((across, c.straddle_ps))
                for start, more in options:
                    key = start + c.tp
                    after[key] = min(after.get(key, 2**62), lat + c.latency_ps + more)
            ends = after
        return [(end, lat, _chips(path)) for end, lat in ends.items()]

    found = dp.smallest_footprint(cands, units, start_at, limit, straddle_at)
    best = min((key for p in _paths(cands, units) for key in laid_out(p) if key[0] <= limit), default=None)
    assert (found is None) == (best is None)
    if best is not None:
        assert min(key for key in laid_out(found) if key[0] <= limit) == best


def test_two_stages_straddle_a_group_rather_than_take_a_wider_one():
    """40 + 40 chips span 80 with the second across the first group's end (112 inside groups), so they beat
    one 88-chip stage over both units; without the straddle the 88 would span fewer."""
    cands = [Candidate(0, 1, 40, 0, 0, Breakdown(memory_s=1e-6), straddle_ps=10**6),
             Candidate(1, 2, 40, 0, 0, Breakdown(memory_s=1e-6), straddle_ps=10**6),
             Candidate(0, 2, 88, 0, 0, Breakdown(memory_s=1e-6))]

    def start_at(cursor, tp):
        return next_start(cursor, tp, LPU)

    def straddle_at(cursor, tp):
        return straddle_start(cursor, tp, LPU)

    assert [c.tp for c in dp.smallest_footprint(cands, 2, start_at, 1000, straddle_at)] == [40, 40]
    assert [c.tp for c in dp.smallest_footprint(cands, 2, start_at, 1000)] == [88]


def test_a_stage_fills_what_its_group_has_left_when_that_spans_no_more():
    """48 chips, then 16 or (faster) 24, then 64, which takes a group of its own either way: 48 + 24 fills the
    first 72-chip group where 48 + 16 leaves 8 chips idle, and both span 136."""
    cands = [Candidate(0, 1, 48, 0, 0, Breakdown(memory_s=1e-6)), Candidate(1, 2, 16, 0, 0, Breakdown(memory_s=2e-6)),
             Candidate(1, 2, 24, 0, 0, Breakdown(memory_s=1e-6)), Candidate(2, 3, 64, 0, 0, Breakdown(memory_s=1e-6))]
    path = dp.smallest_footprint(cands, 3, lambda cursor, tp: next_start(cursor, tp, LPU), 1000)
    assert [c.tp for c in path] == [48, 24, 64]
    assert dp.fewest_chips(cands, 3)[1].tp == 16


@given(st.lists(st.floats(0, 1e-3), min_size=14, max_size=14))
def test_breakdowns_add_every_field_and_candidates_keep_their_latency(values):
    """Breakdown.__add__ names its fields one by one (for speed): a sum is the field-wise sum of every field,
    and a Candidate's latency_ps is its decode total in whole picoseconds."""
    n = len(fields(Breakdown))
    left, right = values[:n], values[n:2 * n]
    a, b = Breakdown(*left), Breakdown(*right)
    assert [getattr(a + b, f.name) for f in fields(Breakdown)] == [x + y for x, y in zip(left, right, strict=True)]
    assert Candidate(0, 1, 1, 0, 0, a).latency_ps == max(1, round(a.total_s * 1e12))
