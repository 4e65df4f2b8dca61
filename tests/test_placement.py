"""Placement keeps pipeline order, aligns stages to nodes and never does worse than the greedy layout."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.partition.placement import _extra_hops_ps, greedy, place
from ir.errors import ConfigError
from targets import load_target

LPU = load_target("lpu")


def _groups(start, t):
    g = LPU.chips_per_group
    return start // g, (start + t - 1) // g


def _cost(starts, sizes, collectives):
    straddles = sum(c for s, t, c in zip(starts, sizes, collectives, strict=True)
                    if t <= LPU.chips_per_group and len(set(_groups(s, t))) > 1)
    crossings = sum(_groups(starts[i], sizes[i])[0] != _groups(starts[i - 1], sizes[i - 1])[1]
                    for i in range(1, len(sizes)))
    return straddles, crossings


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 4, 8, 16, 24, 40, 64, 128]), min_size=1, max_size=12),
       st.integers(0, 8))
def test_placement_is_ordered_aligned_and_no_worse_than_greedy(sizes, k):
    collectives = [k] * len(sizes)  # a straddle weighs k hand-offs between groups
    starts = place(sizes, [k * _extra_hops_ps(LPU) for k in collectives], LPU)
    node = LPU.chips_per_node
    for i, (s, t) in enumerate(zip(starts, sizes, strict=True)):
        if i:
            assert s >= starts[i - 1] + sizes[i - 1]
        if t >= node:
            assert s % node == 0
        else:
            assert s // node == (s + t - 1) // node
    base = greedy(sizes, LPU)
    assert starts[-1] + sizes[-1] <= base[-1] + sizes[-1]
    mine, theirs = _cost(starts, sizes, collectives), _cost(base, sizes, collectives)
    assert sum(mine) <= sum(theirs)  # the objective: weighted straddles plus crossings


def test_stage_that_fits_a_group_is_not_split_across_two():
    starts = place([40, 64], [10**7, 10**7], LPU)
    assert _groups(starts[1], 64)[0] == _groups(starts[1], 64)[1]


def test_stages_straddle_groups_rather_than_run_past_the_machine():
    """163 stages of 64 chips fill 10,432 of the lpu's 10,440; skipping to a group of 72 for each would need
    11,736, so they lie node-aligned end to end (deepseek-v3 --objective latency had asked for chip 10,535)."""
    sizes = [64] * 163
    starts = place(sizes, [2 * 10**6] * len(sizes), LPU)
    assert starts[-1] + sizes[-1] <= LPU.max_chips
    assert all(s % LPU.chips_per_node == 0 for s in starts)
    assert all(b >= a + t for a, b, t in zip(starts, starts[1:], sizes, strict=False))


def test_stages_that_cannot_lie_node_aligned_on_the_machine_are_refused_in_one_line():
    sizes = [4] + [8] * 1304 + [4]  # 10,440 chips, but the last 4 need a node of their own
    with pytest.raises(ConfigError, match=r"need 10,444 laid out node-aligned.*at most 10,440"):
        greedy(sizes, LPU)


def test_across_ends_soonest_and_straddles_only_where_it_must():
    """Under --objective chips the layout ends where the soonest one does (stages straddling groups where that
    starts them sooner) and straddles no more than it needs: 40 + 40 chips fit two groups' 144 only if the
    second straddles the first group's end; with a third stage of 64 one of the three must straddle."""
    group = LPU.chips_per_group
    for sizes in ([40, 40], [40, 40, 64]):
        starts = place(sizes, [10**7] * len(sizes), LPU, across=True)
        soonest = greedy(sizes, LPU, across=True)
        assert starts[-1] + sizes[-1] == soonest[-1] + sizes[-1] == sum(sizes)
        straddling = [s // group != (s + t - 1) // group for s, t in zip(starts, sizes, strict=True)]
        assert sum(straddling) == 1
