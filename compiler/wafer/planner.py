"""`plan_wafer`: lowered graphs and a SystemSpec in, a WaferPlan out (the wafer branch of make_plan)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from compiler.figures import decode_figures, prefill_figures
from compiler.options import MIN_PREFILL_CHUNK, CompileOptions
from compiler.partition import dp
from compiler.partition.cpsat import Solution, solve
from compiler.partition.units import boundary_bytes, signature
from compiler.passes.embed_on_host import HOST_INPUT
from compiler.perf import Breakdown
from compiler.plan import Memory
from compiler.wafer.layout import (
    CostOf,
    WaferCandidate,
    capacity_lower_bound,
    enumerate_wafers,
    region_handoff,
    wafer_handoff,
)
from compiler.wafer.mesh_cost import MeshCost, Shape, unit_mesh_cost
from compiler.wafer.plan import WaferPlan, WaferStage
from ir.errors import ConfigError, DoesNotFitError
from ir.graph import Graph, Op
from targets.mesh import Region, region_hops
from targets.spec import SystemSpec


@dataclass(frozen=True, slots=True)
class _Costed:
    """The units of one phase graph, and their costs on a cell shape. Identical units share a kind,
    so costs are computed once per (kind, shape, rows): the work grows with distinct layer shapes."""

    graph: Graph
    scopes: list[str]
    kinds: list[int]
    ops: list[list[Op]]  # by kind
    memo: dict[tuple[int, Shape, float], MeshCost]

    @classmethod
    def of(cls, graph: Graph) -> _Costed:
        seen: dict[tuple, int] = {}
        scopes = graph.scopes()
        ops: list[list[Op]] = []
        kinds = []
        for scope in scopes:
            unit = list(graph.ops_in(scope))
            kinds.append(seen.setdefault(signature(unit), len(seen)))
            if kinds[-1] == len(ops):
                ops.append(unit)
        return cls(graph, scopes, kinds, ops, {})

    def kind_cost(self, kind: int, shape: Shape, wafer: SystemSpec, precision: str, rows_scale: float = 1.0
                  ) -> MeshCost:
        key = (kind, shape, rows_scale)
        if key not in self.memo:
            self.memo[key] = unit_mesh_cost(self.ops[kind], shape, wafer, precision, rows_scale)
        return self.memo[key]

    def costs(self, shape: Shape, wafer: SystemSpec, precision: str, rows_scale: float = 1.0) -> list[MeshCost]:
        return [self.kind_cost(k, shape, wafer, precision, rows_scale) for k in self.kinds]


def plan_wafer(name: str, decode: Graph, prefill: Graph, wafer: SystemSpec, options: CompileOptions) -> WaferPlan:
    """Choose wafers, grids and stages; time them; raise DoesNotFitError with the wafers that would do."""
    units, prompt = _Costed.of(decode), _Costed.of(prefill)
    crossing = boundary_bytes(decode)
    bound = capacity_lower_bound(decode.param_bytes() + decode.state_bytes(), wafer)
    cost_of, cands = _layout_inputs(units, prompt, crossing, wafer, options, bound)
    solution = _choose(cands, units.scopes, wafer, options, bound)
    return _evaluate(name, wafer, options, units, prompt, cost_of, crossing, solution, bound)


def _layout_inputs(units: _Costed, prompt: _Costed, crossing: list[int], wafer: SystemSpec, options: CompileOptions,
                   bound: int) -> tuple[CostOf, list[WaferCandidate]]:
    """Costs and candidates with room for a prefill chunk of MIN_PREFILL_CHUNK tokens beside every stage,
    unless that room costs a wafer decode does not need: then room for one token (prefill never
    costs a device; the chunk actually used is the largest that fits afterwards)."""
    choices = []
    for tokens in (min(options.prompt, MIN_PREFILL_CHUNK), 1):
        cost_of = _room_for_prefill(units, prompt, tokens / options.prompt, wafer, options.precision)
        cands = enumerate_wafers(cost_of, crossing, wafer)
        fewest = dp.fewest_chips(cands, len(crossing) - 1)
        choices.append((len(fewest) if fewest else math.inf, cost_of, cands))
        if fewest and len(fewest) <= bound:
            break
    wafers = min(c[0] for c in choices)
    return next((cost_of, cands) for n, cost_of, cands in choices if n == wafers)


def _room_for_prefill(units: _Costed, prompt: _Costed, scale: float, wafer: SystemSpec, precision: str) -> CostOf:
    """Every unit's decode cost on a shape, its activation space widened to hold `scale` of the prompt's
    rows. Costs are computed when first asked for, once per (shape, kind of unit)."""
    memo: dict[tuple[Shape, int, int], MeshCost] = {}

    def merged(shape: Shape, u: int) -> MeshCost:
        key = (shape, units.kinds[u], prompt.kinds[u])
        if key not in memo:
            d = units.kind_cost(key[1], shape, wafer, precision)
            p = prompt.kind_cost(key[2], shape, wafer, precision, scale)
            memo[key] = replace(d, act_bytes=max(d.act_bytes, p.act_bytes))
        return memo[key]

    return lambda shape: _UnitCosts(shape, len(units.kinds), merged)


class _UnitCosts(Sequence[MeshCost]):
    """Every unit's cost on one shape, as a read-only sequence computed on demand."""

    def __init__(self, shape: Shape, units: int, get: Callable[[Shape, int], MeshCost]):
        self.shape, self.units, self.get = shape, units, get

    def __len__(self) -> int:
        return self.units

    def __getitem__(self, index):  # int or slice, as a list's
        if isinstance(index, slice):
            return [self.get(self.shape, u) for u in range(*index.indices(self.units))]
        return self.get(self.shape, range(self.units)[index])


def _choose(cands: list[WaferCandidate], scopes: list[str], wafer: SystemSpec, options: CompileOptions,
            bound: int) -> Solution:
    if options.chips and options.chips > wafer.max_nodes:
        raise ConfigError(f"--chips {options.chips}: {wafer.name} joins at most {wafer.max_nodes} wafers")
    fewest = dp.fewest_chips(cands, len(scopes))
    if fewest is None:
        covered = {u for c in cands for u in range(c.first, c.stop)}
        stuck = next((s for i, s in enumerate(scopes) if i not in covered), scopes[0])
        raise DoesNotFitError(f"unit {stuck} does not fit one {wafer.name} wafer even tiled over every core: "
                              "give the target more SRAM per core", None)
    needed = len(fewest)
    budget = options.chips or options.max_chips or wafer.max_nodes
    if needed > budget:
        raise DoesNotFitError(f"the model needs at least {needed} wafers of {wafer.name} "
                              f"(capacity bound {bound}); {budget} allowed", needed)
    limit = needed if options.objective == "chips" and options.chips is None else budget
    # The fewest-wafers path is feasible, so its latency bounds the search, except when the count is
    # pinned: a path of exactly --chips wafers may be slower.
    slowest = 2**62 if options.chips else sum(c.latency_ps for c in fewest)
    usable = dp.prune(cands, len(scopes), limit, slowest)
    solution = solve(usable, len(scopes), options.objective, options.chips, budget, options.solver_seed,
                     options.solver_deterministic_time, fewest)
    if solution is None:
        raise DoesNotFitError(f"no layout uses exactly {options.chips} wafers; {needed} is the fewest that fit",
                              needed)
    return solution


@dataclass(frozen=True, slots=True)
class _Timed:
    """A stage with the unrounded figures the totals are summed from."""

    stage: WaferStage
    decode: Breakdown
    decode_bound_s: float
    prefill: Breakdown
    prefill_bound_s: float


def _evaluate(name: str, wafer: SystemSpec, options: CompileOptions, units: _Costed, prefill: _Costed,
              cost_of: CostOf, crossing: list[int], solution: Solution, bound: int) -> WaferPlan:
    runs = _stage_runs(solution.stages, wafer)
    chunk = _prefill_chunk(runs, prefill, cost_of, wafer, options)
    scale = chunk / options.prompt
    timed: list[_Timed] = []
    for i, (region, first, stop) in enumerate(runs):
        shape = Shape(region.rows, region.cols)
        pre = prefill.costs(shape, wafer, options.precision, scale)[first:stop]
        prev = runs[i - 1][0] if i else None
        host = host_input_bytes(units.graph) if i == 0 else 0
        timed.append(_stage(i, region, units.scopes, cost_of(shape)[first:stop], pre, prev, crossing, first, chunk,
                            wafer, options, host))
    return _assemble(name, wafer, options, units.graph, solution, bound, timed, chunk)


def _stage_runs(wafers: tuple[WaferCandidate, ...], wafer: SystemSpec) -> list[tuple[Region, int, int]]:
    """(region, first unit, stop unit) of every stage, wafer by wafer, region by region."""
    runs = []
    for w, cand in enumerate(wafers):
        stops = [u for u, _ in cand.stages[1:]] + [cand.stop]
        for (first, slot), stop in zip(cand.stages, stops, strict=True):
            runs.append((slot.region(cand.grid, wafer, w), first, stop))
    return runs


def _prefill_chunk(runs: list[tuple[Region, int, int]], prefill: _Costed, cost_of: CostOf, wafer: SystemSpec,
                   options: CompileOptions) -> int:
    """The largest prefill chunk (tokens per sequence; halving from --prefill-chunk) whose activations
    fit beside every stage's resident bytes."""
    chunk = min(options.prompt, options.prefill_chunk)
    while chunk > 1:
        if all(_fits_chunk(run, prefill, cost_of, wafer, options, chunk / options.prompt) for run in runs):
            break
        chunk = chunk // 2 if chunk > MIN_PREFILL_CHUNK else chunk - 1
    return max(1, chunk)


def _fits_chunk(run: tuple[Region, int, int], prefill: _Costed, cost_of: CostOf, wafer: SystemSpec,
                options: CompileOptions, scale: float) -> bool:
    region, first, stop = run
    shape = Shape(region.rows, region.cols)
    resident = sum(c.resident_bytes for c in cost_of(shape)[first:stop])
    act = max(c.act_bytes for c in prefill.costs(shape, wafer, options.precision, scale)[first:stop])
    return resident + act <= wafer.chip.usable_sram_bytes


def _stage(i: int, region: Region, scopes: list[str], dec: list[MeshCost], pre: list[MeshCost], prev: Region | None,
           crossing: list[int], first: int, chunk: int, wafer: SystemSpec, options: CompileOptions,
           host_bytes: int = 0) -> _Timed:
    decode = sum((c.time for c in dec), Breakdown())
    prefill = sum((c.time for c in pre), Breakdown())
    bound = sum(c.bound_s for c in dec)
    prefill_bound = sum(c.bound_s for c in pre)
    hops = 0
    if host_bytes:  # the embedding rows from the host, over the system I/O and across the mesh: all unavoidable
        decode, prefill = decode + host_input(host_bytes, wafer), prefill + host_input(host_bytes * chunk, wafer)
        bound, prefill_bound = bound + host_input(host_bytes, wafer).total_s, \
            prefill_bound + host_input(host_bytes * chunk, wafer).total_s
    if prev is not None:
        entry, entry_p, wire, hops = _entry(prev, region, crossing[first], chunk, wafer)
        decode, prefill = decode + entry, prefill + entry_p
        bound, prefill_bound = bound + wire, prefill_bound + wire
    memory = Memory(weights=sum(c.weight_bytes for c in dec), kv_cache=sum(c.state_bytes for c in dec),
                    activations=max(max(c.act_bytes for c in dec), max(c.act_bytes for c in pre)),
                    program=wafer.chip.program_reserve_bytes, capacity=wafer.chip.sram_bytes)
    last = first + len(dec) - 1
    stage = WaferStage(i, scopes[first], scopes[last], _layers(scopes[first:last + 1]), region, memory,
                       decode.total_s * 1e6, bound * 1e6, prefill.total_s * 1e6, hops, decode.binding)
    return _Timed(stage, decode, bound, prefill, prefill_bound)


def host_input_bytes(graph: Graph) -> int:
    """Bytes a step's host-written embedding rows take (0 unless --embed-on-host)."""
    return sum(v.type.nbytes for v in graph.inputs if v.name == HOST_INPUT)


def host_input(nbytes: int, wafer: SystemSpec) -> Breakdown:
    """Rows from the host: over the wafer's system I/O link, then from its edge to the region (at most
    half the mesh's perimeter)."""
    hops = (wafer.mesh_rows + wafer.mesh_cols) // 2
    return Breakdown(link_s=wafer.global_link.latency_s + nbytes / wafer.global_link.bw_bytes_per_s + hops * wafer.local_link.latency_s)


def _entry(prev: Region, region: Region, nbytes: int, chunk: int, wafer: SystemSpec
           ) -> tuple[Breakdown, Breakdown, float, int]:
    """The hand-off into a stage for decode and for one prefill chunk, its wire latency, and its hops."""
    if prev.wafer != region.wafer:
        wire = wafer.global_link.latency_s
        return wafer_handoff(nbytes, wafer), wafer_handoff(nbytes * chunk, wafer), wire, 1
    values = math.ceil(nbytes / 2)  # 16-bit values
    hops = region_hops(prev, region)
    return (region_handoff(values, prev, region, wafer), region_handoff(values * chunk, prev, region, wafer),
            hops * wafer.local_link.latency_s, hops)


def _assemble(name: str, wafer: SystemSpec, options: CompileOptions, decode: Graph, solution: Solution, bound: int,
              timed: list[_Timed], chunk: int) -> WaferPlan:
    stages = tuple(t.stage for t in timed)
    wafers = solution.stages
    return WaferPlan(
        model=name, target=wafer.name, options=asdict(options), chips=len(wafers), chips_lower_bound=bound,
        stages=stages, wafer_memory=_wafer_memory(stages, len(wafers), wafer),
        mesh=_mesh(wafers, stages, wafer), decode=decode_figures(timed, options),
        prefill=prefill_figures(timed, options, chunk),
        binding={"chips": "sram-capacity" if options.objective == "chips" and options.chips is None
                 else "chip-budget",
                 "decode": sum((t.decode for t in timed), Breakdown()).binding,
                 "prefill": sum((t.prefill for t in timed), Breakdown()).binding},
        solver={"status": solution.status, "objective": options.objective, "candidates": solution.candidates,
                "wall_s": round(solution.deterministic_s, 3)},
        totals={"params": sum(p.type.numel for p in decode.params), "weight_bytes": decode.param_bytes(),
                "kv_cache_bytes": decode.state_bytes()},
    )


def _wafer_memory(stages: tuple[WaferStage, ...], wafers: int, wafer: SystemSpec) -> tuple[Memory, ...]:
    """Each wafer's memory summed over the cores of its regions (idle cores hold nothing)."""
    out = []
    for w in range(wafers):
        mine = [s for s in stages if s.region.wafer == w]
        out.append(Memory(weights=sum(s.memory.weights * s.cores for s in mine),
                          kv_cache=sum(s.memory.kv_cache * s.cores for s in mine),
                          activations=sum(s.memory.activations * s.cores for s in mine),
                          program=sum(s.memory.program * s.cores for s in mine), capacity=(wafer.chips_per_node * wafer.chip.sram_bytes)))
    return tuple(out)


def _mesh(wafers: tuple[WaferCandidate, ...], stages: tuple[WaferStage, ...], wafer: SystemSpec) -> dict:
    return {
        "mesh_rows": wafer.mesh_rows,
        "mesh_cols": wafer.mesh_cols,
        "cores_per_wafer": wafer.chips_per_node,
        "cores_used": sum(s.cores for s in stages),
        "regions": len(stages),
        "wafers": [{"wafer": w, "grid": [c.grid.bands, c.grid.per_band],
                    "cell": [c.grid.cell.rows, c.grid.cell.cols], "regions_used": len(c.stages),
                    "cells_used": sum(slot.span for _, slot in c.stages),
                    "units": [c.first, c.stop]} for w, c in enumerate(wafers)],
    }


def _layers(scopes: list[str]) -> tuple[int, int] | None:
    numbers = [int(s.split(".")[1]) for s in scopes if s.startswith("layers.")]
    return (numbers[0], numbers[-1]) if numbers else None
