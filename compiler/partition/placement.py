"""Placement: which chips of the network each pipeline stage occupies (CP-SAT).

Stages keep pipeline order, so every hand-off goes a short way forward. The
model, for stages s with sizes t_s on a machine of nodes of n chips and groups
of G chips:

    start_s + t_s <= start_{s+1}                      (order, no overlap)
    start_s = n * a_s                    if t_s >= n  (whole nodes: collectives span fewest nodes)
    start_s // n = (start_s + t_s - 1) // n   if t_s < n   (a small stage never straddles nodes)
    straddle_s >= [start_s // G != (start_s + t_s - 1) // G]   (t_s <= G)
    cross_s    >= [first group of s != last group of s-1]
    end = start_last + t_last <= the footprint of the greedy layout (within the machine)
    minimise  sum_s w_s straddle_s + w_x sum_s cross_s  (then footprint)

w_s is the extra latency a straddling stage pays on its collectives each token (its candidate's
straddle_ps: the unit costs over a mesh across two groups, partition.cost.group_mesh) and w_x the extra
latency of a hand-off between groups, both in picoseconds from the target's hop counts and link
latencies. The greedy layout (node-aligned, jump to the next group rather than straddle: next_start)
is the hint and the fallback; under --objective chips the stage sizes were chosen to span the fewest
chips laid out in order at the first chip next_start allows or, where sooner, straddling two groups
(straddle_start; dp.smallest_footprint), so the hint is that soonest layout and the end bound keeps
its footprint: the model then straddles where it must at the least cost. A layout whose small stages
fill earlier nodes' free tails out of order (dp.Packing) is not placed here: it keeps the DP's first chips.
"""

from __future__ import annotations

from collections.abc import Sequence

from ortools.sat.python import cp_model

from compiler.partition.solving import run_solver
from ir.errors import ConfigError
from targets.spec import SystemSpec
from targets.topology import chip_hops


def greedy(sizes: Sequence[int], system: SystemSpec, across: bool = False) -> list[int]:
    """Node-aligned layout in order; a stage that would straddle a group it fits in moves on, unless the
    chips skipped that way would run past the machine's last (then stages may straddle groups), or
    `across` (stages straddle groups wherever that starts them sooner: the layout that ends soonest)."""
    for jump_groups in (False,) if across else (True, False):
        starts = _node_aligned(sizes, system, jump_groups)
        if starts[-1] + sizes[-1] <= system.max_chips:
            return starts
    raise ConfigError(f"{system.name}: {len(sizes)} stages of {sum(sizes):,} chips need {starts[-1] + sizes[-1]:,} "
                      f"laid out node-aligned, and it joins at most {system.max_chips:,}: give a smaller --max-chips")


def _node_aligned(sizes: Sequence[int], system: SystemSpec, jump_groups: bool) -> list[int]:
    starts, cursor = [], 0
    for t in sizes:
        cursor = next_start(cursor, t, system, jump_groups)
        starts.append(cursor)
        cursor += t
    return starts


def next_start(cursor: int, t: int, system: SystemSpec, jump_groups: bool = True) -> int:
    """The first chip at or after `cursor` where a stage of t chips may start: a node's first chip if it
    spans nodes (or would straddle one), and with `jump_groups` the next group's first if it would straddle
    a group it fits in. The end (start + t) never falls as the cursor or t grows, so laying stages out this
    way in order ends soonest among the layouts that keep these rules."""
    node, group = system.chips_per_node, system.chips_per_group
    if t >= node or cursor // node != (cursor + t - 1) // node:
        cursor = _round_up(cursor, node)
    if jump_groups and t <= group and cursor // group != (cursor + t - 1) // group:
        cursor = _round_up(cursor, group)
    return cursor


def straddle_start(cursor: int, t: int, system: SystemSpec) -> int | None:
    """An earlier first chip than next_start's for a stage of t chips, across two groups (None: none)."""
    across = next_start(cursor, t, system, jump_groups=False)
    return across if across < next_start(cursor, t, system) else None


def place(sizes: Sequence[int], straddle_ps: Sequence[int], system: SystemSpec,
          seed: int = 0, deterministic_s: float = 0.25, across: bool = False) -> list[int]:
    """First chip of each stage. `straddle_ps[s]`: what stage s's collectives add a token laid out across
    two groups. `across`: end no later than the layout that ends soonest, straddling groups where it must
    (the footprint --objective chips chose the stages for, dp.smallest_footprint)."""
    hint = greedy(sizes, system, across)
    if system.chips_per_group >= hint[-1] + sizes[-1]:
        return hint  # one group holds everything: nothing to trade
    model, starts = build_model(sizes, straddle_ps, system, hint)
    solver = cp_model.CpSolver()
    solver.parameters.random_seed = seed
    solver.parameters.num_workers = 1
    solver.parameters.max_deterministic_time = deterministic_s
    if run_solver(solver, model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return hint
    return [solver.value(v) for v in starts]


def build_model(sizes: Sequence[int], straddle_ps: Sequence[int], system: SystemSpec,
                hint: list[int]) -> tuple[cp_model.CpModel, list[cp_model.IntVar]]:
    """The model in the module docstring, hinted with `hint`."""
    m = cp_model.CpModel()
    node, group = system.chips_per_node, system.chips_per_group
    horizon = hint[-1] + sizes[-1]
    starts = [m.new_int_var(0, horizon - t, f"start{s}") for s, t in enumerate(sizes)]
    first_group, last_group = [], []
    for s, t in enumerate(sizes):
        _align(m, starts[s], t, node, horizon, f"{s}")
        first_group.append(_div(m, starts[s], 0, group, horizon, f"g0_{s}"))
        last_group.append(_div(m, starts[s], t - 1, group, horizon, f"g1_{s}"))
        m.add_hint(starts[s], hint[s])
    for s in range(1, len(sizes)):
        m.add(starts[s] >= starts[s - 1] + sizes[s - 1])
    costs = _straddles(m, sizes, straddle_ps, system, first_group, last_group)
    costs += _crossings(m, sizes, system, first_group, last_group)
    end = starts[-1] + sizes[-1]
    m.minimize(sum(costs) * (horizon + 1) + end)
    return m, starts


def _align(m: cp_model.CpModel, start: cp_model.IntVar, t: int, node: int, horizon: int, name: str) -> None:
    if t >= node:
        a = m.new_int_var(0, horizon // node, f"a{name}")
        m.add(start == node * a)
    else:
        m.add(_div(m, start, 0, node, horizon, f"n0_{name}") == _div(m, start, t - 1, node, horizon, f"n1_{name}"))


def _div(m: cp_model.CpModel, start: cp_model.IntVar, offset: int, k: int, horizon: int, name: str) -> cp_model.IntVar:
    """(start + offset) // k as a new variable."""
    q = m.new_int_var(0, horizon // k, name)
    m.add_division_equality(q, start + offset, k)
    return q


def _straddles(m, sizes, straddle_ps, system, first_group, last_group) -> list:
    costs = []
    for s, t in enumerate(sizes):
        if t <= system.chips_per_group and straddle_ps[s]:
            b = m.new_bool_var(f"straddle{s}")
            m.add(last_group[s] == first_group[s]).only_enforce_if(b.Not())
            costs.append(straddle_ps[s] * b)
    return costs


def _crossings(m, sizes, system, first_group, last_group) -> list:
    extra_ps = _extra_hops_ps(system)
    costs = []
    for s in range(1, len(sizes)):
        b = m.new_bool_var(f"cross{s}")
        m.add(first_group[s] == last_group[s - 1]).only_enforce_if(b.Not())
        costs.append(extra_ps * b)
    return costs


def _extra_hops_ps(system: SystemSpec) -> int:
    """Extra latency of reaching another group rather than another node of the same group."""
    within = chip_hops(system, 0, system.chips_per_node) if system.nodes_per_group > 1 else 1
    across = chip_hops(system, 0, min(system.max_chips - 1, system.chips_per_group))
    return max(0, across - within) * round(system.global_link.latency_s * 1e12)


def _round_up(x: int, k: int) -> int:
    return -(-x // k) * k
