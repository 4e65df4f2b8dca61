"""The wafer backend's Layout: units tiled over regions of a wafer's cores, wafers in a pipeline.

Candidates are runs of units on one wafer cut into a grid of regions (compiler/backends/wafer/layout.py:
the grid/region search, a candidate generator of its own); the shared search (compiler/plan/search.py)
chooses the wafer boundaries; each region's stage is timed by the mesh cost rules
(compiler/backends/wafer/cost.py) plus its hand-off over the fabric or the wafer link.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from compiler.backends.wafer.cost import ZERO, MeshCost, Shape, unit_mesh_cost
from compiler.backends.wafer.layout import CostOf, entry, enumerate_wafers
from compiler.frontend.options import CompileOptions
from compiler.partition import dp
from compiler.partition.candidates import Candidate, capacity_lower_bound
from compiler.partition.units import boundary_bytes, unit_kinds
from compiler.passes.embed_on_host import HOST_INPUT
from compiler.plan.reader import PlanFile, unit_ranges
from compiler.plan.records import Memory, Stage
from compiler.plan.search import Layout, Timed, fullest
from ir.errors import ConfigError
from ir.graph import Graph
from targets.mesh import Region, pipeline_edge
from targets.spec import SystemSpec


class _Costed:
    """The units of one phase graph (partition.units.unit_kinds), each kind costed once a (region shape,
    rows): the work grows with distinct layer shapes."""

    def __init__(self, graph: Graph, wafer: SystemSpec):
        self.graph = graph
        self.scopes, self.kinds, ops = unit_kinds(graph)
        self.kind = functools.cache(lambda k, shape, scale: unit_mesh_cost(ops[k], shape, wafer, scale))

    def costs(self, shape: Shape, rows_scale: float = 1.0) -> list[MeshCost]:
        return [self.kind(k, shape, rows_scale) for k in self.kinds]


@dataclass(frozen=True, slots=True)
class Run:
    """A region's run of units [first, stop)."""

    region: Region
    first: int
    stop: int


@dataclass
class WaferLayout(Layout):
    """The search's view of a model on a wafer system (plan.search.Layout)."""

    system: SystemSpec
    options: CompileOptions
    units_: _Costed
    prompt: _Costed
    cost_of: CostOf
    candidates: list[Candidate]
    lower_bound: int
    device: str = "wafer"
    crossing: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, decode: Graph, prefill: Graph, system: SystemSpec, options: CompileOptions,
           every: bool = False) -> WaferLayout:
        """`every` is the chip layout's flag: a wafer's candidates are all kept already."""
        units, prompt = (_Costed(g, system) for g in (decode, prefill))
        crossing = boundary_bytes(decode)
        bound = capacity_lower_bound(decode.param_bytes() + decode.state_bytes(),
                                     system.chips_per_node * system.chip.usable_sram_bytes)
        cost_of, cands = _layout_inputs(units, prompt, crossing, system, options, bound)
        return cls(system, options, units, prompt, cost_of, cands, bound, crossing=crossing)

    @property
    def max_devices(self) -> int:
        return self.system.max_nodes

    @property
    def units(self) -> int:
        return len(self.units_.scopes)

    def unplaceable(self, unit: int) -> str:
        return (f"unit {self.units_.scopes[unit]} does not fit one {self.system.name} wafer even tiled over every "
                "core: give the target more SRAM per core")

    def place(self, path: Sequence[Candidate], options: CompileOptions) -> list[Run]:
        return [run for w, cand in enumerate(path) for run in _runs(cand, w, self.system)]

    def pin(self, plan: PlanFile) -> tuple[list[Candidate], list[Run]]:
        """Each wafer's stages must be one candidate's cells exactly: regions of one grid, in its order."""
        ranges = unit_ranges(plan, self.units_.scopes)
        given = []
        for i, (s, (first, stop)) in enumerate(zip(plan.stages, ranges, strict=True)):
            if s.region is None:
                raise ConfigError(f"{plan.path}: stages[{i}]: a wafer stage names its region, not a chip range")
            given.append((i, Run(Region(*s.region), first, stop)))
        path = []
        for w in range(max(r.region.wafer for _, r in given) + 1):
            mine = [(i, r) for i, r in given if r.region.wafer == w]
            if not mine:
                raise ConfigError(f"{plan.path}: no stage on wafer {w}; wafers are used in order from 0")
            want = [r for _, r in mine]
            cand = next((c for c in self.candidates if (c.first, c.stop) == (want[0].first, want[-1].stop)
                         and _runs(c, w, self.system) == want), None)
            if cand is None:
                raise ConfigError(f"{plan.path}: stages[{mine[0][0]}..{mine[-1][0]}]: wafer {w}'s regions are not "
                                  "cells of one grid this planner lays out (edit the units a stage holds, or re-plan)")
            path.append(cand)
        return path, [r for _, r in given]

    def fits(self, run: Run, chunk: int) -> bool:
        resident = sum(self.cost_of(run.region.shape)[run.first:run.stop], ZERO).resident_bytes
        act = sum(self.prompt.costs(run.region.shape, chunk / self.options.prompt)[run.first:run.stop], ZERO).act_bytes
        return resident + act <= self.system.chip.usable_sram_bytes

    def time(self, index: int, run: Run, runs: list[Run], chunk: int, reach: int | None = None) -> Timed:
        """`reach` is always None: the wafer's lowering streams every chunk over the whole cache (its
        Backend entry is not causal), and so does this cost model."""
        shape, system = run.region.shape, self.system
        dec = sum(self.cost_of(shape)[run.first:run.stop], ZERO)
        pre = sum(self.prompt.costs(shape, chunk / self.options.prompt)[run.first:run.stop], ZERO)
        decode, prefill, bound, prefill_bound = dec.time, pre.time, dec.bound_s, pre.bound_s
        prev = runs[index - 1].region if index else None
        nbytes = self.crossing[run.first] if index else host_input_bytes(self.units_.graph)
        edge = pipeline_edge(prev, run.region, system) if index else {"hops": 0}
        if index or nbytes:  # what enters over layout.entry's wire, as the lowering's _into
            d, p = (entry(prev, run.region, n, system).time(system) for n in (nbytes, nbytes * chunk))
            decode, prefill = decode + d, prefill + p
            # unavoidable: a hand-off's wire latency (the pipeline edge's); the host's rows (--embed-on-host) whole
            bound += edge["latency_s"] if index else d.total_s
            prefill_bound += edge["latency_s"] if index else p.total_s
        memory = Memory(dec.weight_bytes, dec.state_bytes, max(dec.act_bytes, pre.act_bytes),
                        system.chip.program_reserve_bytes, system.chip.sram_bytes)
        return Timed.of(index, self.units_.scopes[run.first:run.stop], run.region, memory, decode, bound, prefill,
                        prefill_bound, edge["hops"])

    def memory(self, timed: list[Timed]) -> Memory:
        return fullest(_wafer_memory([t.stage for t in timed], self.system))

    def extra(self, path: Sequence[Candidate], timed: list[Timed]) -> dict:
        stages = [t.stage for t in timed]
        core = fullest(s.memory for s in stages)
        return {"mesh": _mesh(path, stages, self.system) | {"memory_per_core_bytes": core.to_dict()}}

    def footprint(self, timed: list[Timed]) -> int:
        return max(t.stage.region.wafer for t in timed) + 1


def _runs(cand: Candidate, wafer: int, system: SystemSpec) -> list[Run]:
    """A wafer candidate's stages: each cell's region on wafer `wafer` and the units it holds."""
    cells = cand.cells
    stops = [u for u, _ in cells.stages[1:]] + [cand.stop]
    return [Run(slot.region(cells.grid, system, wafer), first, stop)
            for (first, slot), stop in zip(cells.stages, stops, strict=True)]


def _layout_inputs(units: _Costed, prompt: _Costed, crossing: list[int], wafer: SystemSpec, options: CompileOptions,
                   bound: int) -> tuple[CostOf, list[Candidate]]:
    """Costs and candidates with room beside every stage for the smallest prefill chunk a plan must hold
    (CompileOptions.min_chunk_rows, the chip backend's rule), unless that room costs a wafer decode does
    not need: then room for one token (prefill never costs a device; the chunk actually used is the
    largest that fits afterwards)."""
    choices = []
    for tokens in (options.min_chunk_rows // options.batch, 1):
        cost_of = _room_for_prefill(units, prompt, tokens / options.prompt)
        cands = enumerate_wafers(cost_of, crossing, wafer)
        fewest = dp.fewest_chips(cands, len(crossing) - 1)
        choices.append((len(fewest) if fewest else math.inf, cost_of, cands))
        if fewest and len(fewest) <= bound:
            break
    wafers = min(c[0] for c in choices)
    return next((cost_of, cands) for n, cost_of, cands in choices if n == wafers)


def _room_for_prefill(units: _Costed, prompt: _Costed, scale: float) -> CostOf:
    """Every unit's decode cost on a shape, its activation space widened to hold `scale` of the prompt's
    rows; once a shape."""

    @functools.cache
    def cost_of(shape: Shape) -> list[MeshCost]:
        return [replace(d, act_bytes=max(d.act_bytes, p.act_bytes))
                for d, p in zip(units.costs(shape), prompt.costs(shape, scale), strict=True)]

    return cost_of


def host_input_bytes(graph: Graph) -> int:
    """Bytes a step's host-written embedding rows take (0 unless --embed-on-host)."""
    return sum(v.type.nbytes for v in graph.inputs if v.name == HOST_INPUT)


def _wafer_memory(stages: list[Stage], wafer: SystemSpec) -> list[Memory]:
    """Each wafer's memory summed over the cores of its regions (idle cores hold nothing)."""
    parts = ("weights", "kv_cache", "activations", "program")
    return [Memory(*(sum(getattr(s.memory, f) * s.cores for s in stages if s.region.wafer == w) for f in parts),
                   capacity=wafer.chips_per_node * wafer.chip.sram_bytes)
            for w in range(max(s.region.wafer for s in stages) + 1)]


def _mesh(wafers: Sequence[Candidate], stages: list[Stage], wafer: SystemSpec) -> dict:
    return {
        "mesh_rows": wafer.mesh_rows,
        "mesh_cols": wafer.mesh_cols,
        "cores_per_wafer": wafer.chips_per_node,
        "cores_used": sum(s.cores for s in stages),
        "regions": len(stages),
        "wafers": [{"wafer": w, "grid": [c.cells.grid.bands, c.cells.grid.per_band],
                    "cell": [c.cells.grid.cell.rows, c.cells.grid.cell.cols], "regions_used": len(c.cells.stages),
                    "cells_used": sum(slot.span for _, slot in c.cells.stages),
                    "units": [c.first, c.stop]} for w, c in enumerate(wafers)],
    }
