"""Where the units go on a row of wafers: each wafer's grid of regions and the wafer boundaries.

The layout family. A wafer is cut into a uniform grid of `bands x per_band` cells, numbered in
serpentine order (targets/mesh.py). A region is one cell, or a few neighbouring cells of one
band merged into a wider rectangle for a unit too large for one cell (an embedding table or an
LM head beside small layers). Each region holds a contiguous run of units, every unit tiled over
the whole region (cost.py). Units run one after another (decode is a chain),
so a unit's time depends only on its region's shape.

Two decisions, two methods:

1. Inside a wafer, for a given grid, units are packed greedily: a region takes units while
   their per-core bytes fit, then the next unit opens a region of the fewest cells that hold it,
   at the next free cell (a band too short for it is left idle to its end). When every unit
   fits one cell this is exact: a unit's time does not depend on which cell holds it, every
   hand-off between serpentine neighbours costs the same, so the fastest packing is the one
   with fewest cells, and greedy first-fit over an ordered sequence with a monotone capacity
   test uses the fewest cells. With merged cells it is a heuristic, and the grid search below
   still keeps the fastest result.
2. Across wafers, the wafer boundaries and each wafer's grid are chosen by the project's CP-SAT
   path model (compiler/partition/cpsat.py), a wafer playing the part of a one-chip stage: a
   candidate covers units [first, stop) on one wafer with the fastest grid that holds them
   (any other grid for the same units costs the same one wafer and is slower, so it is
   dominated), and its latency includes the wafer-to-wafer hand-off into it, on the grids
   `screen_grids` keeps.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from compiler.backends.wafer.cost import ACT_BYTES, MeshCost, Shape, messages, timing_of
from compiler.partition.candidates import Candidate
from compiler.partition.cost import Breakdown
from targets.mesh import Region, band_region, region_hops, shared_edge
from targets.spec import SystemSpec
from targets.wafer_timing import FABRIC_SEND, WAFER_SEND

MAX_CUTS = 16  # bands and cells per band considered: up to 256 regions a wafer
KEEP_GRIDS = 8  # grids enumerated for every run of units beyond the wafers-latency front


@dataclass(frozen=True, slots=True)
class Grid:
    """A wafer cut into `bands` x `per_band` equal cells of shape `cell`."""

    bands: int
    per_band: int
    cell: Shape

    @property
    def cells(self) -> int:
        return self.bands * self.per_band


@dataclass(frozen=True, slots=True)
class Slot:
    """Cells `pos .. pos+span-1` (serpentine positions) of band `band`: one rectangular region."""

    band: int
    pos: int
    span: int

    def region(self, grid: Grid, wafer: SystemSpec, index: int = 0) -> Region:
        return band_region(wafer, grid.bands, grid.per_band, self.band, self.pos, self.span, index)


@dataclass(frozen=True, slots=True)
class Cells:
    """How a wafer candidate is cut: its `grid`, and the unit opening each region with its slot."""

    grid: Grid
    stages: tuple[tuple[int, Slot], ...]


def wafer_candidate(first: int, stop: int, grid: Grid, stages: tuple[tuple[int, Slot], ...],
                    decode: Breakdown) -> Candidate:
    """Units [first, stop) on one wafer (the path model counts it as one device); `decode` holds
    the units, the hand-offs between regions, and the hand-off into this wafer."""
    return Candidate(first, stop, 1, 0, 0, decode, Cells(grid, stages))


CostOf = Callable[[Shape], Sequence[MeshCost]]  # every unit's cost on a region of that shape


def grids(wafer: SystemSpec) -> list[Grid]:
    """Every grid of up to MAX_CUTS x MAX_CUTS cells of at least one core, in a fixed order."""
    return [Grid(b, p, Shape(wafer.mesh_rows // b, wafer.mesh_cols // p))
            for b in range(1, min(MAX_CUTS, wafer.mesh_rows) + 1) for p in range(1, min(MAX_CUTS, wafer.mesh_cols) + 1)]


@dataclass(frozen=True, slots=True)
class Hop:
    """A hand-off's wire, as the plan costs it and the lowering emits it: `hops` hops of fabric, then the
    wafer link when `far`; `nbytes` each of its parallel links carries."""

    hops: int
    nbytes: int
    far: bool

    @property
    def unit(self) -> int:
        """The C2C unit its SENDs leave on (its RECVs take the next): the wafer link's or the fabric's."""
        return WAFER_SEND if self.far else FABRIC_SEND

    def time(self, wafer: SystemSpec) -> Breakdown:
        """As the lowering emits it: a SEND on its unit, its RECV."""
        return messages((self.hops,), self.nbytes, timing_of(wafer), self.unit)


def entry(prev: Region | None, region: Region, nbytes: int, wafer: SystemSpec) -> Hop:
    """`nbytes` into `region` from `prev`: over the links of their shared edge (or the narrower side) on one
    wafer; from another wafer, `across`; from the host (`prev` None: --embed-on-host), over the system I/O
    link and half a mesh perimeter from its edge."""
    if prev is None:
        return Hop((wafer.mesh_rows + wafer.mesh_cols) // 2, nbytes, True)
    if prev.wafer != region.wafer:
        return across(nbytes, wafer)
    links = max(1, shared_edge(prev, region) or min(region.rows, region.cols))
    return Hop(region_hops(prev, region), math.ceil(math.ceil(nbytes / ACT_BYTES) / links) * ACT_BYTES, False)


def across(nbytes: int, wafer: SystemSpec) -> Hop:
    """Out of one wafer and into the next: across both meshes to their I/O edges (at most a half-perimeter
    each) and over the wafer link."""
    return Hop(wafer.mesh_rows + wafer.mesh_cols, nbytes, True)


def enumerate_wafers(cost_of: CostOf, crossing: list[int], wafer: SystemSpec) -> list[Candidate]:
    """The fastest screened grid for every run of units that fits one wafer, in (first, stop) order.
    `crossing[k]` is the bytes entering unit k."""
    best: dict[tuple[int, int], Candidate] = {}
    kept = screen_grids(cost_of, crossing, wafer)
    for first in range(len(crossing) - 1):
        into = across(crossing[first], wafer).time(wafer) if first else Breakdown()
        for grid in kept:
            for stop, stages, time in _packings(first, grid, cost_of, crossing, wafer):
                cand = wafer_candidate(first, stop, grid, stages, into + time)
                key = (first, stop)
                if key not in best or cand.latency_ps < best[key].latency_ps:
                    best[key] = cand
    return [best[k] for k in sorted(best)]


def screen_grids(cost_of: CostOf, crossing: list[int], wafer: SystemSpec) -> list[Grid]:
    """The grids worth enumerating (every run of units on each of the MAX_CUTS**2 would take seconds for
    80-layer models): each grid lays out the whole model once, wafer after wafer, and we keep the fastest
    for every wafer count that is fastest so far (the Pareto front of wafers against latency) and the
    KEEP_GRIDS fastest overall, in menu order. The front holds the grid of every optimal single-grid
    layout; mixing grids across wafers draws on the kept set."""
    scored = []
    for index, grid in enumerate(grids(wafer)):
        layout = _whole_model(grid, cost_of, crossing, wafer)
        if layout is not None:
            scored.append((*layout, index, grid))
    scored.sort(key=lambda s: s[:3])
    front, fastest = [], math.inf
    for _, latency, index, _ in scored:
        if latency < fastest:
            front.append(index)
            fastest = latency
    by_speed = sorted(scored, key=lambda s: (s[1], s[2]))[:KEEP_GRIDS]
    kept = set(front) | {s[2] for s in by_speed}
    return [grid for _, _, index, grid in sorted(scored, key=lambda s: s[2]) if index in kept]


def _whole_model(grid: Grid, cost_of: CostOf, crossing: list[int], wafer: SystemSpec) -> tuple[int, int] | None:
    """(wafers, latency in ps) of the model laid out greedily on `grid`, a new wafer when one fills."""
    first, wafers, total = 0, 0, Breakdown()
    while first < len(crossing) - 1:
        packed = deque(_packings(first, grid, cost_of, crossing, wafer), maxlen=1)  # the longest run
        if not packed:
            return None
        stop, _, time = packed[0]
        total += time + (across(crossing[first], wafer).time(wafer) if first else Breakdown())
        first, wafers = stop, wafers + 1
    return wafers, round(total.total_s * 1e12)


def _packings(first: int, grid: Grid, cost_of: CostOf, crossing: list[int], wafer: SystemSpec
              ) -> Iterator[tuple[int, tuple[tuple[int, Slot], ...], Breakdown]]:
    """Greedy packings of units [first, stop) into the grid's regions, for every stop that fits:
    (stop, the stages so far, the units' time with the hand-offs between regions)."""
    usable = wafer.chip.usable_sram_bytes
    stages: tuple[tuple[int, Slot], ...] = ()
    band = pos = resident = act = 0
    costs: Sequence[MeshCost] = ()
    region: Region | None = None
    time = Breakdown()
    for u in range(first, len(crossing) - 1):
        if not costs or resident + costs[u].resident_bytes + max(act, costs[u].act_bytes) > usable:
            span = _span(u, grid, cost_of, usable)
            if span is None:
                return  # this unit fits no region of the grid
            if pos + span > grid.per_band:
                band, pos = band + 1, 0
            if band >= grid.bands:
                return
            slot = Slot(band, pos, span)
            here = slot.region(grid, wafer)
            if region is not None:
                time += entry(region, here, crossing[u], wafer).time(wafer)
            stages += ((u, slot),)
            costs, region, resident, act = cost_of(here.shape), here, 0, 0
            band, pos = (band + 1, 0) if pos + span == grid.per_band else (band, pos + span)
        resident += costs[u].resident_bytes
        act = max(act, costs[u].act_bytes)
        time += costs[u].time
        yield u + 1, stages, time


def _span(u: int, grid: Grid, cost_of: CostOf, usable: int) -> int | None:
    """The fewest cells of a band that hold unit u alone, if any do."""
    one = cost_of(grid.cell)[u]
    if one.resident_bytes + one.act_bytes <= usable:
        return 1
    # Resident bytes per core shrink about as 1/span: start from that estimate, then check.
    for span in range(max(2, math.ceil(one.resident_bytes / usable)), grid.per_band + 1):
        c = cost_of(Shape(grid.cell.rows, grid.cell.cols * span))[u]
        if c.resident_bytes + c.act_bytes <= usable:
            return span
    return None
