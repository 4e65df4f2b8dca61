"""Candidate stages: a contiguous run of units on a tensor-parallel group of t chips.

Only candidates whose chips can hold them are kept, and among candidates over
the same units a larger group survives only if it is strictly faster. What is
left is small enough for CP-SAT to choose a path through exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.partition.cost import Breakdown, hop_s, unit_time
from compiler.partition.units import Unit
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

    @property
    def latency_ps(self) -> int:
        return max(1, round(self.decode.total_s * 1e12))


@dataclass(frozen=True, slots=True)
class CostTables:
    """Per (unit, group size) figures the candidates are summed from."""

    resident: list[dict[int, int]]
    act: list[dict[int, int]]
    time: list[dict[int, Breakdown]]


def cost_tables(units: list[Unit], system: SystemSpec, precision: str) -> CostTables:
    """Activation space is reserved for a decode step or the smallest prefill chunk, whichever
    is larger (measured at that chunk: some buffers do not grow with the rows)."""
    memo: dict[tuple[int, int], tuple[int, int, Breakdown]] = {}
    for u in units:
        for t in u.sizes:
            if (u.kind, t) not in memo:
                d = u.decode[t]
                act = max(d.act_bytes, u.prefill_min_act[t])
                memo[u.kind, t] = (d.resident_bytes, act, unit_time(d, system, precision))
    pick = [{t: memo[u.kind, t] for t in u.sizes} for u in units]
    return CostTables([{t: v[0] for t, v in p.items()} for p in pick],
                      [{t: v[1] for t, v in p.items()} for p in pick],
                      [{t: v[2] for t, v in p.items()} for p in pick])


def enumerate_candidates(units: list[Unit], tables: CostTables, crossing: list[int], system: SystemSpec,
                         keep_dominated: bool = False, reserved_bytes: int = 0) -> list[Candidate]:
    """All stages that fit a chip, in (first, stop, tp) order; `reserved_bytes` of every chip's SRAM
    hold the phase's inputs (token ids, positions), which every stage's layout places."""
    out: list[Candidate] = []
    for first in range(len(units)):
        out.extend(_from(first, units, tables, crossing, system, keep_dominated, reserved_bytes))
    return out


def _from(first: int, units: list[Unit], tables: CostTables, crossing: list[int], system: SystemSpec,
          keep_dominated: bool, reserved_bytes: int = 0) -> list[Candidate]:
    usable = system.chip.usable_sram_bytes - reserved_bytes
    sizes = set(units[first].sizes)
    resident = dict.fromkeys(sizes, 0)
    act = dict.fromkeys(sizes, 0)
    time = dict.fromkeys(sizes, Breakdown())
    out: list[Candidate] = []
    for stop in range(first + 1, len(units) + 1):
        u = stop - 1
        sizes &= set(units[u].sizes)
        for t in sizes:
            resident[t] += tables.resident[u][t]
            act[t] = max(act[t], tables.act[u][t])
            time[t] = time[t] + tables.time[u][t]
        fits = sorted(t for t in sizes if resident[t] + act[t] <= usable)
        if not fits and not any(resident[t] <= usable for t in sizes):
            break  # adding units only grows the memory needed
        row = [Candidate(first, stop, t, resident[t], act[t], time[t] + _entry(first, t, crossing, system))
               for t in fits]
        out.extend(row if keep_dominated else _undominated(row))
    return out


def _entry(first: int, tp: int, crossing: list[int], system: SystemSpec) -> Breakdown:
    """Hand-off from the previous stage, assumed one hop away (placement refines it)."""
    if first == 0:
        return Breakdown()
    hops = 1
    link_s = hop_s(crossing[first], hops, min(tp, system.chips_per_node), system)
    return Breakdown(link_s=link_s)


def _undominated(row: list[Candidate]) -> list[Candidate]:
    """Keep a larger group only if it is strictly faster than every smaller one kept."""
    kept: list[Candidate] = []
    for c in row:
        if not kept or c.latency_ps < kept[-1].latency_ps:
            kept.append(c)
    return kept


def capacity_lower_bound(units: list[Unit], system: SystemSpec) -> int:
    """Every byte that must be resident, over the usable SRAM of one chip."""
    total = sum(u.decode[1].resident_bytes if 1 in u.decode else _whole(u) for u in units)
    return math.ceil(total / system.chip.usable_sram_bytes)


def _whole(u: Unit) -> int:
    t = u.sizes[0]
    return u.decode[t].resident_bytes * t
