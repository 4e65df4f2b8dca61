"""Candidate stages: a contiguous run of units on a tensor-parallel group of t chips.

Only candidates whose chips can hold them are kept, and among candidates over
the same units a larger group survives only if it is strictly faster. A group
that can take the split layout (passes.shard.splits_kv) is costed in both: at
equal chips the split survives only if it is faster in decode and no slower in
a prefill chunk (its gathers of every row's queries and partials can cost a
chunk more than its shorter cache saves), and a split candidate
whose whole twin does not fit is marked `room` (it saves chips, see
plan.search's SEQUENCE_SAVING). What is left is small enough for CP-SAT to
choose a path through exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from compiler.partition.chaining import run_boundary
from compiler.partition.cost import Breakdown, boundary_time, handoff, hop_s, unit_time
from compiler.partition.units import Group, Unit
from targets.spec import SystemSpec


@dataclass(frozen=True, slots=True)
class Candidate:
    """Units [first, stop) on `tp` devices of the path model (a chip backend's group of chips, or
    one wafer), with per-device memory and decode time; `cells` is a backend's own layout of the
    candidate (a wafer's grid and the regions its stages take)."""

    first: int
    stop: int
    tp: int
    resident_bytes: int
    act_bytes: int
    decode: Breakdown  # units' time, plus the hand-off into the stage
    cells: object = None
    split: bool = False  # caches by sequence, latent down projections by column (passes.shard.splits_kv)
    room: bool = False  # split where the whole layout does not fit the chips: it saves chips, not time
    straddle_ps: int = 0  # what its collectives add laid out across two groups (a stage that fits one)
    latency_ps: int = field(init=False)  # decode in whole picoseconds: the DPs add it per state and candidate

    def __post_init__(self) -> None:
        object.__setattr__(self, "latency_ps", max(1, round(self.decode.total_s * 1e12)))


@dataclass(frozen=True, slots=True)
class CostTables:
    """Per (unit, group) figures the candidates are summed from; `prefill` the seconds of the largest
    prefill chunk (what decides between a group's two layouts beside the decode time), `straddle` the
    decode seconds the unit's collectives add when the stage lies across two groups."""

    resident: list[dict[Group, int]]
    act: list[dict[Group, int]]
    time: list[dict[Group, Breakdown]]
    prefill: list[dict[Group, float]]
    straddle: list[dict[Group, float]]


def cost_tables(units: list[Unit], system: SystemSpec, precision: str) -> CostTables:
    """Activation space is reserved for a decode step or the smallest prefill chunk, whichever
    is larger (measured at that chunk: some buffers do not grow with the rows)."""
    memo: dict[tuple[int, Group], tuple[int, int, Breakdown, float, float]] = {}
    for u in units:
        for g in u.decode:
            if (u.kind, g) not in memo:
                d = u.decode[g]
                act = max(d.act_bytes, u.prefill_min_act[g])
                pre = unit_time(u.prefill[g], system, precision).total_s if u.splits(g[0]) else 0.0
                time = unit_time(d, system, precision)
                across = unit_time(d, system, precision, True).total_s - time.total_s if can_straddle(g[0], system) \
                    else 0.0
                memo[u.kind, g] = (d.resident_bytes, act, time, pre, across)
    pick = [{g: memo[u.kind, g] for g in u.decode} for u in units]
    return CostTables(*([{t: v[i] for t, v in p.items()} for p in pick] for i in range(5)))


def can_straddle(tp: int, system: SystemSpec) -> bool:
    """Whether a stage of tp chips may lie inside one group or across two: wider than a node (a node lies
    in one group), no wider than a group, on a dragonfly of several groups."""
    return system.topology == "dragonfly" and system.chips_per_node < tp <= system.chips_per_group < system.max_chips


def enumerate_candidates(units: list[Unit], tables: CostTables, crossing: list[int], system: SystemSpec,
                         keep_dominated: bool = False, reserved_bytes: int = 0, embedding: bool = False
                         ) -> list[Candidate]:
    """All stages that fit a chip, in (first, stop, tp) order; `reserved_bytes` of every chip's SRAM
    hold the phase's inputs (token ids, positions), which every stage's layout places. `embedding`: the
    first unit (a tied table's lookup) runs on the last stage's chips over the head's shard of the table
    (codegen.phase.embedding_stage): a first stage costs its units past it and their rows' hand-off in from
    that stage (assumed as wide and one hop away, as every hand-off), a last stage adds the lookup's time and
    activations and no bytes (its table is the head's), and no stage holds the whole model."""
    out: list[Candidate] = []
    last = len(units)
    for first in range(1 if embedding else 0, last):
        row = _from(first, units, tables, crossing, system, keep_dominated, reserved_bytes, embedding)
        if embedding and first == 1:  # the first stage: its units past the embedding
            row = [replace(c, first=0) for c in row if c.stop < last]
        out.extend(row)
    return out


def _from(first: int, units: list[Unit], tables: CostTables, crossing: list[int], system: SystemSpec,
          keep_dominated: bool, reserved_bytes: int = 0, embedding: bool = False) -> list[Candidate]:
    usable = system.chip.usable_sram_bytes - reserved_bytes
    sizes = set(units[first].sizes)
    groups = [(t, split) for t in sorted(sizes) for split in (False, True)]
    resident = dict.fromkeys(groups, 0)
    act = dict.fromkeys(groups, 0)
    time = dict.fromkeys(groups, Breakdown())
    pre = dict.fromkeys(groups, 0.0)
    across = dict.fromkeys(groups, 0.0)
    splits = dict.fromkeys(sizes, False)  # some unit of the run has a split layout at that size
    entry: dict[int, Breakdown] = {}  # _entry by group size: the same for every stop
    out: list[Candidate] = []
    for stop in range(first + 1, len(units) + 1):
        unit = units[stop - 1]
        sizes &= set(unit.sizes)
        u = stop - 1
        in_run = run_boundary([v.kind for v in units[first:stop]])
        for t in sizes:
            if unit.splits(t) and not splits[t]:  # the split layout parts from the whole one here
                splits[t] = True
                for acc in (resident, act, time, pre, across):
                    acc[t, True] = acc[t, False]
            for split in (False, True) if splits[t] else (False,):
                g = unit.group(t, split)
                resident[t, split] += tables.resident[u][g]
                act[t, split] = max(act[t, split], tables.act[u][g])
                time[t, split] = time[t, split] + tables.time[u][g]
                if u > first:  # chained across a run the lowering makes one template (partition.chaining)
                    time[t, split] += boundary_time(units[u - 1].decode[units[u - 1].group(t, split)],
                                                    unit.decode[g], in_run, system)
                pre[t, split] += tables.prefill[u][g]
                across[t, split] += tables.straddle[u][g]
        live = [(t, split) for t in sorted(sizes) for split in (False, True) if splits[t] or not split]
        if embedding and stop == len(units) and first > 1:  # the last stage also runs the embedding
            live = [g for g in live if (g[0], False) in units[0].decode]
            resident, act, time, pre, across = (dict(d) for d in (resident, act, time, pre, across))
            for g in live:
                e = (g[0], False)
                act[g] = max(act[g], tables.act[0][e])
                time[g] = time[g] + tables.time[0][e]
                pre[g] += tables.prefill[0][e]
                across[g] += tables.straddle[0][e]
        fits = [g for g in live if resident[g] + act[g] <= usable]
        if not fits and not any(resident[g] <= usable for g in live):
            break  # adding units only grows the memory needed
        held = set(fits)
        for t, _ in fits:
            if t not in entry:
                entry[t] = _entry(first, t, crossing, system)
        row = [Candidate(first, stop, t, resident[t, split], act[t, split],
                         time[t, split] + entry[t], split=split,
                         room=split and (t, False) not in held,
                         straddle_ps=round(across[t, split] * 1e12))
               for t, split in fits]
        out.extend(row if keep_dominated else _undominated(row, pre))
    return out


def _entry(first: int, tp: int, crossing: list[int], system: SystemSpec) -> Breakdown:
    """Hand-off from the previous stage, assumed as wide and one hop away (placement refines it)."""
    if first == 0:
        return Breakdown()
    hops = 1
    link_s = hop_s(crossing[first], hops, handoff(tp, tp, hops, system), system)
    return Breakdown(link_s=link_s)


def _undominated(row: list[Candidate], prefill: dict[tuple[int, bool], float]) -> list[Candidate]:
    """Keep a larger group only if it is strictly faster than every smaller one kept; of one group
    size's two layouts the whole one, unless the split is faster in decode and no slower in a prefill
    chunk (`prefill`, by group)."""
    fastest: dict[int, Candidate] = {}
    for c in row:  # in (tp, split) order: the whole layout first
        whole = fastest.get(c.tp)
        if whole is None or (c.latency_ps < whole.latency_ps
                             and prefill[c.tp, True] <= prefill[c.tp, False]):
            fastest[c.tp] = c
    kept: list[Candidate] = []
    for c in fastest.values():
        if not kept or c.latency_ps < kept[-1].latency_ps:
            kept.append(c)
    return kept


def resident_total(units: list[Unit], repeated: int = 0) -> int:
    """Every byte that must be resident: each unit on one chip, or split as it must be, less the `repeated`
    bytes of params several units read (units.repeated_params: a tied table counts once)."""
    return -repeated + sum(u.decode[1, False].resident_bytes if (1, False) in u.decode else _whole(u) for u in units)


def capacity_lower_bound(total_bytes: int, device_bytes: int) -> int:
    """Every resident byte over one device's usable SRAM (a chip's, or a wafer's cores' together): no
    layout uses fewer devices. Every backend's bound."""
    return max(1, math.ceil(total_bytes / device_bytes))


def _whole(u: Unit) -> int:
    t = u.sizes[0]
    return u.decode[u.group(t, True)].resident_bytes * t
