"""`make_plan`: config and target in, Plan out, along DESIGN.md's data flow."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from compiler.backends import backend_for
from compiler.codegen.phase import embedding_refusal
from compiler.formats import check_storable, format_rates
from compiler.frontend import build_graph, load_model_config
from compiler.frontend.config import ModelConfig
from compiler.frontend.options import CompileOptions
from compiler.passes import Pipeline
from compiler.passes.embed_on_host import EmbedOnHost
from compiler.passes.expert_placement import ExpertPlacement
from compiler.passes.expert_tiles import ExpertTiles
from compiler.passes.place_kv import PlaceKV
from compiler.passes.quantize import TENSOR_SCALE, Quantize
from compiler.passes.quantize_kv import QuantizeKV
from compiler.plan import Plan, kv_tiers
from compiler.plan.reader import PlanFile
from compiler.plan.search import DECODE_SLACK, plan_from_layout
from ir.errors import ConfigError, DoesNotFitError
from ir.graph import Graph
from ir.ops import Opcode
from ir.parser import parse_graph
from ir.verify import verify_graph
from targets import load_target
from targets.spec import SystemSpec


@dataclass(frozen=True, slots=True)
class Lowered:
    """The two phase graphs after the graph passes."""

    decode: Graph
    prefill: Graph


def graph_passes(options: CompileOptions, system: SystemSpec | None = None) -> Pipeline:
    """The graph passes between the frontend and the partitioner, in order; `system`, the target the
    graphs are planned and compiled for (its matrix tile weighs expert placements: ExpertTiles)."""
    tile = system.chip.matrix_dim if system is not None and not system.is_mesh else 1
    if system is not None and system.is_mesh and options.experts != "auto":
        raise ConfigError(f"--experts {options.experts}: {system.name} is a wafer, whose backend tiles every expert "
                          "over its stage's region (backends.wafer.cost); give --experts auto")
    return Pipeline((Quantize(options.precision), QuantizeKV(options.kv_precision), EmbedOnHost(options.embed_on_host),
                     PlaceKV(options.kv_tier, options.kv_hot), ExpertTiles(tile), ExpertPlacement(options.experts)))


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


def lower(model: str, options: CompileOptions, holds: SystemSpec | None = None,
          system: SystemSpec | None = None, split_layers: bool = False) -> tuple[str, Lowered]:
    """Both phases' graphs for `system` (or `holds`); with `holds`, a config that target could never hold
    is refused first. The target's backend says whether prefill's head runs on every row (Backend.all_logits).
    `split_layers`: each block of a layer its own unit (split_config)."""
    if is_graph_file(model):
        graph = read_graph_file(model)
        return graph.name, Lowered(graph, graph)
    config = load_model_config(model)
    return config.name, lower_config(split_config(config) if split_layers else config, options, holds, system)


def split_config(config: ModelConfig) -> ModelConfig:
    """The config with each block of a layer its own scope (`layers.3`, then `layers.3.mlp`), so a stage may end
    between a layer's attention and its MLP (ModelConfig.block_units)."""
    return replace(config, block_units=True)


def splittable(config: ModelConfig) -> bool:
    """Whether a stage could end inside a layer that the frontend keeps whole: some layer has two blocks."""
    return not config.block_units and any(len([k for k in kinds if k != "none"]) > 1 for kinds in config.layer_plan)


def lower_config(config: ModelConfig, options: CompileOptions, holds: SystemSpec | None = None,
                 system: SystemSpec | None = None) -> Lowered:
    """`lower` on a loaded config."""
    target = system or holds
    passes = graph_passes(options, target)
    shape = {"context": options.context, "prompt": options.prompt, "batch": options.batch, "holds": holds,
             "all_logits": target is not None and backend_for(target).all_logits}
    return Lowered(*(passes(build_graph(config, phase, **shape)) for phase in ("decode", "prefill")))


def lower_one(model: str, phase: str, options: CompileOptions, layers: int | None = None) -> Graph:
    """One phase's graph after the graph passes (what `sramflow lower` prints)."""
    config = load_model_config(model)
    shape = {"context": options.context, "prompt": options.prompt, "batch": options.batch, "layers": layers}
    return graph_passes(options)(build_graph(config, phase, **shape))


def make_plan(model: str, target: str, options: CompileOptions, idle_s: float | None = None) -> Plan:
    return make_plan_on(model, load_target(target), options, idle_s)


def make_plan_on(model: str, system: SystemSpec, options: CompileOptions, idle_s: float | None = None,
                 embeddings: bool = True) -> Plan:
    """`make_plan` on an already loaded target (a sweep's target after its field overrides); `idle_s`
    adds where an idle conversation's KV should wait (kv_tiers.idle); `embeddings`: plan_graphs'."""
    start = time.perf_counter()
    if is_graph_file(model):
        options = graph_file_options(options)
    plan, _ = plan_placed(model, system, options, idle_s, embeddings=embeddings)
    return replace(plan, wall_s=time.perf_counter() - start)


def plan_placed(model: str, system: SystemSpec, options: CompileOptions, idle_s: float | None = None,
                pinned: PlanFile | None = None, known: dict[CompileOptions, tuple[str, Lowered]] | None = None,
                embeddings: bool = True) -> tuple[Plan, CompileOptions]:
    """The plan with its KV cache placed by --kv-tier (compiler/plan/kv_tiers.py), and the options its graphs
    were lowered with (a concrete tier and hot window). `known`: (name, graphs) the caller already lowered
    at some options (graphs are immutable), used instead of lowering them again. `embeddings`: plan_graphs'."""
    def plan_at(placed: CompileOptions) -> Plan:
        def plan_with(split: bool) -> Plan:
            # A config the target could never hold in SRAM is refused at once; below SRAM it may fit.
            holds = system if placed.kv_tier == "sram" else None
            name, graphs = (None if split else (known or {}).get(placed)) or lower(model, placed, holds, system, split)
            return plan_graphs(name, graphs, system, placed, pinned, causal=not is_graph_file(model),
                               embeddings=embeddings)

        if pinned is not None:
            plan = plan_with(pinned.split_layers)
            return _layer_units(plan, True, "as the plan file gives") if pinned.split_layers else plan
        if not (embeddings and _may_split(model, system, placed)):
            return plan_with(False)
        return _layer_choice(plan_with)

    return kv_tiers.place(plan_at, system, options, idle_s, pinned.placement if pinned else None)


# A whole-layer layout within this fraction of its capacity bound is kept as it is: letting stages end inside
# layers as well recovered at most 3% of the chips on the shipped dense models that close (llama-2-70b 648 ->
# 640, mistral-7b 70 -> 68, qwen2-7b 72 -> 71, jamba 475 -> 472), at slower decode on others (405B int8 +19%),
# and where it is tried the plan takes about twice as long (the finer search costs about what the first did).
SPLIT_GAP = 0.05


def _may_split(model: str, system: SystemSpec, options: CompileOptions) -> bool:
    """Whether the planner may also try stages that end inside layers: the fewest-chips objective without a
    pinned count, on chips, with the KV cache in SRAM (a tier's plans are searched over windows already, each
    a plan), for a config whose layers the frontend keeps whole."""
    return (options.objective == "chips" and options.chips is None and not system.is_mesh
            and options.kv_tier == "sram" and not is_graph_file(model) and splittable(load_model_config(model)))


def _layer_choice(plan_with: Callable[[bool], Plan]) -> Plan:
    """The whole-layer plan; where it spans more than SPLIT_GAP over its capacity bound, or does not fit
    --max-chips at all, also the plan whose stages may end between a layer's attention and its MLP, taken
    where it spans fewer chips and decodes within DECODE_SLACK of the whole-layer plan (or only it fits)."""
    try:
        whole = plan_with(False)
    except DoesNotFitError as refusal:
        try:
            finer = plan_with(True)
        except DoesNotFitError as split_refusal:
            raise min((refusal, split_refusal), key=_need) from None
        return _layer_units(finer, True, "only it fits", {"blocks": finer})
    if whole.footprint_chips <= (1 + SPLIT_GAP) * whole.chips_lower_bound:
        return whole
    try:
        finer = plan_with(True)
    except DoesNotFitError:
        return whole
    take = (finer.footprint_chips < whole.footprint_chips
            and finer.decode["latency_us"] <= (1 + DECODE_SLACK) * whole.decode["latency_us"])
    why = (f"spans fewer chips, decode within {DECODE_SLACK:.0%}" if take else
           "spans no fewer chips" if finer.footprint_chips >= whole.footprint_chips else
           f"decodes more than {DECODE_SLACK:.0%} slower")
    return _layer_units(finer if take else whole, take, why, {"layers": whole, "blocks": finer})


def _layer_units(plan: Plan, split: bool, why: str, layouts: dict[str, Plan] | None = None) -> Plan:
    """The plan with its `layer_units` said: whether stages may end inside layers (the build lowers its graphs so,
    split_config), why, and each layout's figures where the planner chose."""
    said = {"split": split, "why": why}
    if layouts:
        said["layouts"] = {k: {"footprint_chips": p.footprint_chips, "decode_us": p.decode["latency_us"],
                               "ttft_ms": p.prefill["ttft_ms"]} for k, p in layouts.items()}
    return replace(plan, extra=plan.extra | {"layer_units": said})


def split_layers(plan: Plan) -> bool:
    """Whether a plan's stages may end inside layers (its graphs lowered with split_config)."""
    return bool(plan.extra.get("layer_units", {}).get("split"))


def plan_graphs(name: str, graphs: Lowered, system: SystemSpec, options: CompileOptions,
                pinned: PlanFile | None = None, causal: bool = True, embeddings: bool = False) -> Plan:
    """The partitioner and performance model on already lowered graphs, through the target's backend;
    with `pinned`, the layout of a plan file (`compile --plan`) costed afresh instead of a search.
    Prefill is causal (compiler.plan.reach) where the backend lowers it so and the model attends;
    `causal` false: a graph file, one step of its own rows over whatever cache it declares. `embeddings`: a tied
    table's lookup may run on the head's chips where the objective gains (_embedding_choice)."""
    if options.embed_on_host and not system.is_mesh:
        raise ConfigError(f"--embed-on-host: {system.name} holds its embedding table; only wafer targets stream "
                          "the token's row in from the host")
    check_storable(system, options)
    backend = backend_for(system)
    backend.check(graphs.decode, system)
    if pinned is not None:
        pinned.check_for(name, system.name, options)
        if pinned.embedding and not backend.embeddings:
            raise ConfigError(f"{pinned.path}: stages[].embedding: the {backend.name} backend runs the embedding on "
                              "the first stage")
    causal = causal and backend.causal and attends(graphs.prefill)
    if pinned is not None or not (embeddings and backend.embeddings and tied(graphs.decode)):
        kind = {"embedding": True} if pinned is not None and pinned.embedding else {}
        layout = backend.layout(graphs.decode, graphs.prefill, system, options, every=pinned is not None, **kind)
        plan = plan_from_layout(name, system.name, options, layout, _totals(graphs), pinned, causal)
    else:
        def plan_of(on_head: bool) -> Plan:
            layout = backend.layout(graphs.decode, graphs.prefill, system, options, embedding=on_head)
            return plan_from_layout(name, system.name, options, layout, _totals(graphs), None, causal)

        plan = _embedding_choice(plan_of, options)
    return replace(plan, decode=plan.decode | {"formats": format_rates(system, options)})


def tied(graph: Graph) -> bool:
    """Whether the head reads the embedding's table (a tied table the head's chips could look rows up in)."""
    return embedding_refusal(graph, 2, [1]) is None


def _embedding_choice(plan_of: Callable[[bool], Plan], options: CompileOptions) -> Plan:
    """A tied table's plan with its lookup on the first stage or on the head's chips (held once), whichever
    the objective prefers: the fewest chips spanned, then the lower decode latency (--objective latency, or
    --chips: the latency first); on a tie the first stage. A layout that cannot be had is not a choice; when
    neither can, the refusal naming fewer chips. The plan says both (`embedding`)."""
    plans, refusals = {}, []
    for on_head in (False, True):
        try:
            plans[on_head] = plan_of(on_head)
        except (DoesNotFitError, ConfigError) as err:
            refusals.append(err)
    if not plans:
        raise min(refusals, key=_need)

    def key(p: Plan) -> tuple:
        chips, latency = p.footprint_chips, p.decode["latency_us"]
        return (chips, latency) if options.objective == "chips" and options.chips is None else (latency, chips)

    best = min(plans, key=lambda on_head: (key(plans[on_head]), on_head))
    said = {("head" if k else "first"): {"footprint_chips": p.footprint_chips, "decode_us": p.decode["latency_us"],
                                         "ttft_ms": p.prefill["ttft_ms"]} for k, p in plans.items()}
    return replace(plans[best], extra=plans[best].extra | {"embedding": {"on": "head" if best else "first",
                                                                         "layouts": said}})


def _need(err: Exception) -> float:
    """How many chips a refusal says would do (a layout that names none, or a ConfigError, last): of two
    refusals the one naming the fewer chips is the true answer."""
    needed = getattr(err, "chips_needed", None)
    return float("inf") if needed is None else needed


def attends(graph: Graph) -> bool:
    """Whether any op reads a KV cache (a model without attention has nothing to make causal)."""
    return any(op.opcode in (Opcode.ATTENTION, Opcode.MLA_ATTENTION) for op in graph.ops)


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


