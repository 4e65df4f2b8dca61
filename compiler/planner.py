"""`make_plan`: config and target in, Plan out, along DESIGN.md's data flow."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from compiler.codegen.alloc import align
from compiler.figures import decode_figures, prefill_figures
from compiler.formats import check_storable, format_rates
from compiler.frontend import build_graph, load_model_config
from compiler.options import MIN_PREFILL_CHUNK, CompileOptions
from compiler.partition import dp
from compiler.partition.candidates import Candidate, capacity_lower_bound, cost_tables, enumerate_candidates
from compiler.partition.cpsat import Solution, solve
from compiler.partition.placement import place
from compiler.partition.shard_cost import ShardCost
from compiler.partition.units import Unit, boundary_bytes, build_units, prefill_costs
from compiler.passes import Pipeline
from compiler.passes.embed_on_host import EmbedOnHost
from compiler.passes.quantize import TENSOR_SCALE, Quantize
from compiler.passes.quantize_kv import QuantizeKV
from compiler.perf import Breakdown, StageBound, handoff_lanes, handoff_wire_s, hop_s, unit_bound, unit_time
from compiler.plan import Memory, Plan, Stage
from compiler.wafer.plan import WaferPlan
from compiler.wafer.planner import plan_wafer
from ir.errors import ConfigError, DoesNotFitError
from ir.graph import Graph
from ir.ops import Opcode
from ir.parser import parse_graph
from ir.verify import verify_graph
from targets import load_target
from targets.spec import SystemSpec, WaferSpec
from targets.topology import chip_hops

# No stage is wider than this: beyond it, collectives cost more than sharding saves on every target we ship.
MAX_GROUP = 2048


@dataclass(frozen=True, slots=True)
class Lowered:
    """The two phase graphs after the graph passes."""

    decode: Graph
    prefill: Graph


def graph_passes(options: CompileOptions) -> Pipeline:
    """The graph passes between the frontend and the partitioner, in order."""
    return Pipeline((Quantize(options.precision), QuantizeKV(options.kv_precision), EmbedOnHost(options.embed_on_host)))


def is_graph_file(model: str) -> bool:
    """Whether `model` names a graph IR text file (a kernel, or an edited `sramflow lower`) rather than a config."""
    return model.endswith(".ir")


def read_graph_file(model: str) -> Graph:
    """A graph IR text file, parsed and verified (errors name FILE:LINE:COL)."""
    path = Path(model)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{model}: no such graph IR file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{model}: cannot read graph IR file: {err}") from None
    graph = parse_graph(text, str(path))
    verify_graph(graph)
    return graph


def graph_file_options(options: CompileOptions) -> CompileOptions:
    """A graph file is one step of its own rows: its prefill is the same graph, once, whole."""
    return replace(options, prompt=1, prefill_chunk=1)


def lower(model: str, options: CompileOptions) -> tuple[str, Lowered]:
    if is_graph_file(model):
        graph = read_graph_file(model)
        return graph.name, Lowered(graph, graph)
    config = load_model_config(model)
    passes = graph_passes(options)
    shape = {"context": options.context, "prompt": options.prompt, "batch": options.batch}
    graphs = (passes(build_graph(config, phase, **shape)) for phase in ("decode", "prefill"))
    return config.name, Lowered(*graphs)


def lower_one(model: str, phase: str, options: CompileOptions, layers: int | None = None) -> Graph:
    """One phase's graph after the graph passes (what `sramflow lower` prints)."""
    config = load_model_config(model)
    shape = {"context": options.context, "prompt": options.prompt, "batch": options.batch, "layers": layers}
    return graph_passes(options)(build_graph(config, phase, **shape))


def make_plan(model: str, target: str, options: CompileOptions) -> Plan | WaferPlan:
    return make_plan_on(model, load_target(target), options)


def make_plan_on(model: str, system: SystemSpec | WaferSpec, options: CompileOptions) -> Plan | WaferPlan:
    """`make_plan` on an already loaded target (a sweep's target after its field overrides)."""
    start = time.perf_counter()
    if is_graph_file(model):
        options = graph_file_options(options)
    name, graphs = lower(model, options)
    plan = plan_graphs(name, graphs, system, options)
    return replace(plan, wall_s=time.perf_counter() - start)


def plan_graphs(name: str, graphs: Lowered, system: SystemSpec | WaferSpec, options: CompileOptions
                ) -> Plan | WaferPlan:
    """The partitioner and performance model on already lowered graphs (a wafer target takes the mesh path)."""
    if options.embed_on_host and not isinstance(system, WaferSpec):
        raise ConfigError(f"--embed-on-host: {system.name} holds its embedding table; only wafer targets stream "
                          "the token's row in from the host")
    check_storable(system, options)
    if isinstance(system, WaferSpec):
        return replace(plan_wafer(name, graphs.decode, graphs.prefill, system, options), totals=_totals(graphs))
    units = build_units(graphs.decode, graphs.prefill, options, min(system.max_chips, MAX_GROUP),
                        system.chips_per_node)
    solution, lower_bound = partition(units, graphs, system, options)
    return evaluate(name, system, options, units, graphs, solution, lower_bound)


def _unplaceable(units: list[Unit], cands: list[Candidate]) -> Unit:
    """The first unit no candidate stage contains."""
    covered = {u for c in cands for u in range(c.first, c.stop)}
    return next((u for i, u in enumerate(units) if i not in covered), units[0])


def partition(units: list[Unit], graphs: Lowered, system: SystemSpec,
              options: CompileOptions) -> tuple[Solution, int]:
    """Choose stages and group sizes; raise DoesNotFitError with the chips that would do."""
    tables = cost_tables(units, system, options.precision)
    crossing = boundary_bytes(graphs.decode)
    exact = options.chips is not None
    reserved = max(input_bytes(graphs.decode, options.batch), input_bytes(graphs.decode, options.min_chunk_rows))
    cands = enumerate_candidates(units, tables, crossing, system, keep_dominated=exact, reserved_bytes=reserved)
    lower_bound = capacity_lower_bound(units, system)
    budget = options.chips or options.max_chips or system.max_chips
    fewest = dp.fewest_chips(cands, len(units))
    if fewest is None:
        stuck = _unplaceable(units, cands)
        raise DoesNotFitError(f"no chip of {system.name} can hold unit {stuck.scope} even split as far as it "
                              f"divides ({max(stuck.sizes)} ways): give the target more SRAM per chip", None)
    needed = sum(c.tp for c in fewest)
    if needed > budget:
        raise DoesNotFitError(f"the model needs at least {needed} chips of {system.name} "
                              f"(capacity bound {lower_bound}); {budget} allowed", needed)
    # The fewest-chips path is feasible, so its figures bound the search (exactly, see dp.prune).
    fewest_latency = sum(c.latency_ps for c in fewest)
    if exact:
        usable, hint = dp.prune(cands, len(units), budget, 2**62), None
    elif options.objective == "chips":
        usable, hint = dp.prune(cands, len(units), needed, fewest_latency), fewest
    else:
        usable, hint = dp.prune(cands, len(units), budget, fewest_latency), fewest
    solution = solve(usable, len(units), options.objective, options.chips, budget, options.solver_seed,
                     options.solver_deterministic_time, hint)
    if solution is None:
        raise DoesNotFitError(f"no layout uses exactly {options.chips} chips; {needed} is the fewest that fit "
                              f"and stage sizes must divide the work", needed)
    return solution, lower_bound


def evaluate(name: str, system: SystemSpec, options: CompileOptions, units: list[Unit], graphs: Lowered,
             solution: Solution, lower_bound: int) -> Plan:
    sizes = [c.tp for c in solution.stages]
    collectives = [sum(len(u.decode[c.tp].collectives) for u in units[c.first:c.stop]) for c in solution.stages]
    starts = place(sizes, collectives, system, options.solver_seed)
    crossing_d, crossing_p = boundary_bytes(graphs.decode), boundary_bytes(graphs.prefill)
    chunk_tokens = prefill_chunk_tokens(solution.stages, units, system, options, graphs.decode)
    chunk = chunk_tokens / options.prompt
    used = {(u.kind, c.tp) for c in solution.stages for u in units[c.first:c.stop]}
    inputs = max(input_bytes(graphs.decode, options.batch), input_bytes(graphs.decode, chunk_tokens * options.batch))
    prefill = prefill_costs(graphs.prefill, units, used, chunk)
    timed = []
    for i, (c, first_chip) in enumerate(zip(solution.stages, starts, strict=True)):
        hops = chip_hops(system, starts[i - 1] + solution.stages[i - 1].tp - 1, first_chip) if i else 0
        prev_tp = solution.stages[i - 1].tp if i else 0
        timed.append(_stage(i, c, first_chip, hops, prev_tp, units, prefill, system, options, crossing_d, crossing_p,
                            chunk, inputs))
    return _assemble(name, system, options, graphs, solution, lower_bound, timed, chunk_tokens)


def input_bytes(decode: Graph, rows: int) -> int:
    """SRAM every stage's chips give the phase's inputs (token ids, positions) at `rows` rows: one
    region each, from a vector boundary, as the layout places them (decode's inputs have one row a
    sequence)."""
    batch = max(1, decode.inputs[0].type.shape[0]) if decode.inputs and decode.inputs[0].type.shape else 1
    return sum(align(math.ceil(v.type.nbytes * rows / batch)) for v in decode.inputs)


def prefill_chunk_tokens(stages: tuple[Candidate, ...], units: list[Unit], system: SystemSpec,
                         options: CompileOptions, decode: Graph | None = None) -> int:
    """The largest prefill chunk (tokens per sequence, a multiple of MIN_PREFILL_CHUNK
    when above it) whose activations fit the space every stage leaves free."""
    largest = options.chunk_rows // options.batch
    smallest = options.min_chunk_rows // options.batch
    usable = system.chip.usable_sram_bytes
    fits = largest
    for c in stages:
        run = units[c.first:c.stop]
        # Activations are affine in the rows: fixed buffers plus a share per token, measured
        # at the smallest and the largest chunk.
        low = max(u.prefill_min_act[c.tp] for u in run)
        high = max(u.prefill[c.tp].act_bytes for u in run)
        if decode is not None:  # the inputs' regions, as bytes per row plus at most a vector each
            low += input_bytes(decode, smallest * options.batch)
            high += input_bytes(decode, largest * options.batch)
        per_token = (high - low) / (largest - smallest) if largest > smallest else 0
        free = usable - c.resident_bytes
        if free >= low and per_token:
            fits = min(fits, smallest + int((free - low) // per_token))
    if fits >= MIN_PREFILL_CHUNK:
        fits -= fits % MIN_PREFILL_CHUNK
    return max(smallest, min(largest, fits))


def _stage(i: int, c: Candidate, first_chip: int, hops: int, prev_tp: int, units: list[Unit],
           prefill_cost: dict[tuple[int, int], ShardCost], system: SystemSpec, options: CompileOptions,
           crossing_d: list[int], crossing_p: list[int], chunk: float, inputs_bytes: int = 0) -> _Timed:
    run = units[c.first:c.stop]
    t, precision = c.tp, options.precision
    pre = [prefill_cost[u.kind, t] for u in run]
    decode = sum((unit_time(u.decode[t], system, precision) for u in run), Breakdown())
    prefill = sum((unit_time(p, system, precision) for p in pre), Breakdown())
    entry = StageBound(wire_s=handoff_wire_s(system)) if i else StageBound()
    bound = sum((unit_bound(u.decode[t], system, precision) for u in run), entry)
    prefill_bound = sum((unit_bound(p, system, precision) for p in pre), entry)
    if hops:
        lanes = handoff_lanes(prev_tp, t, system.chips_per_node)
        decode += Breakdown(link_s=hop_s(crossing_d[c.first], hops, lanes, system))
        prefill += Breakdown(link_s=hop_s(math.ceil(crossing_p[c.first] * chunk), hops, lanes, system))
    memory = Memory(
        weights=sum(u.decode[t].weight_bytes for u in run),
        kv_cache=sum(u.decode[t].state_bytes for u in run),
        activations=max(max(u.decode[t].act_bytes, p.act_bytes) for u, p in zip(run, pre, strict=True))
        + inputs_bytes,
        program=system.chip.program_reserve_bytes,
        capacity=system.chip.sram_bytes,
    )
    stage = Stage(i, run[0].scope, run[-1].scope, _layers(run), t, first_chip, memory, decode.total_s * 1e6,
                  bound.total_s * 1e6, prefill.total_s * 1e6, hops, decode.binding, bound.to_dict(),
                  decode.tiles_s * 1e6)
    return _Timed(stage, decode, bound.total_s, prefill, prefill_bound.total_s)


@dataclass(frozen=True, slots=True)
class _Timed:
    """A stage with the unrounded figures the totals are summed from."""

    stage: Stage
    decode: Breakdown
    decode_bound_s: float
    prefill: Breakdown
    prefill_bound_s: float


def _assemble(name: str, system: SystemSpec, options: CompileOptions, graphs: Lowered, solution: Solution,
              lower_bound: int, timed: list[_Timed], chunk_tokens: int) -> Plan:
    stages = tuple(t.stage for t in timed)
    last = stages[-1]
    return Plan(
        model=name,
        target=system.name,
        options=asdict(options),
        chips=sum(s.tp for s in stages),
        chips_lower_bound=lower_bound,
        footprint_chips=last.first_chip + last.tp,
        stages=stages,
        decode=decode_figures(timed, options) | {"formats": format_rates(system, options)},
        prefill=prefill_figures(timed, options, chunk_tokens),
        binding=_binding(timed, options),
        solver={"status": solution.status, "objective": options.objective, "candidates": solution.candidates,
                "wall_s": round(solution.deterministic_s, 3)},
        totals=_totals(graphs),
    )


def _binding(timed: list[_Timed], options: CompileOptions) -> dict:
    chips = "sram-capacity" if options.objective == "chips" and options.chips is None else "chip-budget"
    return {"chips": chips, "decode": sum((t.decode for t in timed), Breakdown()).binding,
            "prefill": sum((t.prefill for t in timed), Breakdown()).binding}


def _totals(graphs: Lowered) -> dict:
    decode = graphs.decode
    ssm = _ssm_state_bytes(decode)
    names = {p.name for p in decode.params}
    weights = [p for p in decode.params if not _is_scale(p.name, names)]
    return {"params": sum(p.type.numel for p in weights), "weight_bytes": decode.param_bytes(),
            "kv_cache_bytes": decode.state_bytes() - ssm, "ssm_state_bytes": ssm}


def _is_scale(name: str, names: set[str]) -> bool:
    """A quantized weight's scales (`<weight>.scale`, `<weight>.tensor_scale`): bytes, not parameters."""
    return any(name.endswith(suffix) and name[: -len(suffix)] in names for suffix in (".scale", TENSOR_SCALE))


def _ssm_state_bytes(graph: Graph) -> int:
    """Mamba's conv and SSM states: a fixed size per sequence, whatever the context (unlike
    the KV cache, which grows with it)."""
    names = {v.name for op in graph.ops if op.opcode in (Opcode.CONV1D, Opcode.SELECTIVE_SCAN) for v in op.operands}
    return sum(s.type.nbytes for s in graph.state if s.name in names)


def _layers(run: list[Unit]) -> tuple[int, int] | None:
    numbers = [int(u.scope.split(".")[1]) for u in run if u.scope.startswith("layers.")]
    return (numbers[0], numbers[-1]) if numbers else None
