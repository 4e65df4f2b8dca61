"""Placement: which chips of the network each pipeline stage occupies.

Stages are laid out in pipeline order so every hand-off goes to the next chips
over. A stage of at least a node's worth of chips starts on a node boundary so
its collectives span the fewest nodes; a smaller stage never straddles two nodes.
Where a stage would straddle a Dragonfly group that it could fit inside, it
starts at the next group instead. The holes this leaves are counted as the
plan's footprint, not as chips used.
"""

from __future__ import annotations

from collections.abc import Sequence

from targets.spec import SystemSpec


def place(sizes: Sequence[int], system: SystemSpec) -> list[int]:
    """First chip of each stage, given the stages' group sizes in pipeline order."""
    starts, cursor = [], 0
    node = system.chips_per_node
    group = node * system.nodes_per_group
    for t in sizes:
        if t >= node or cursor // node != (cursor + t - 1) // node:
            cursor = _round_up(cursor, node)
        if t <= group and cursor // group != (cursor + t - 1) // group:
            cursor = _round_up(cursor, group)
        starts.append(cursor)
        cursor += t
    return starts


def _round_up(x: int, k: int) -> int:
    return -(-x // k) * k
