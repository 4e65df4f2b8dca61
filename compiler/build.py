"""`compile`: a plan, both phases' graph IR and Programs, written as a build directory.

The directory is written beside its destination under a temporary name and renamed
into place, so a failed or interrupted compile never leaves a partial build, and only a
new, empty or previous-build directory is ever replaced (ir.build_io). The build holds
the target in full (target.toml), so it never depends on the file it was compiled for.
manifest.json lists every file's sha256; the same command twice gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from compiler.backends import backend_for
from compiler.codegen.alloc import align
from compiler.codegen.lowering import Lowering
from compiler.frontend import build_graph, load_model_config
from compiler.frontend.mtp import build_mtp_graph
from compiler.frontend.options import CompileOptions, Speculation
from compiler.image import AUTO_LIMIT_BYTES, RANDOM, check_weights_fit, load_weights, sram_image
from compiler.partition.units import with_reach
from compiler.plan import Plan
from compiler.plan.reader import read_plan
from compiler.planner import (
    Lowered,
    graph_file_options,
    graph_passes,
    is_graph_file,
    lower_config,
    plan_graphs,
    plan_placed,
    read_graph_file,
    split_config,
    split_layers,
)
from compiler.speculation import (
    SHARED,
    check_speculation,
    mtp_graph,
    proposer_options,
    sharing_options,
    sharing_system,
    speculative_figures,
    verify_graph,
    with_speculation,
)
from ir.build_io import build_writer, check_destination, write_manifest
from ir.errors import ConfigError, DoesNotFitError
from ir.graph import Graph
from ir.image_io import save_image
from ir.memory_map import MemoryMap
from ir.printer import print_graph
from ir.program import Program
from ir.program_io import save_program
from targets import load_target
from targets.build_dir import TARGET_FILE
from targets.spec import SystemSpec
from targets.speculative import program_extent
from targets.target_file import dumps_target

Progress = Callable[[str], None]


def compile_model(model: str, target: str, options: CompileOptions, out: str | Path,
                  progress: Progress = lambda _: None, weights: str = "auto", force: bool = False,
                  plan_file: str | Path | None = None, speculation: Speculation | None = None,
                  share: tuple[SystemSpec, int] | None = None) -> dict:
    """Plan, lower and schedule `model`; write the build directory `out`; return the manifest.
    `weights`: "random", a checkpoint (.npz), "none", or "auto" (random for models whose
    weights take at most 256 MiB): the SRAM image the functional interpreter runs on.
    `out` must be absent, empty or a sramflow build (an edited one only with `force`). `plan_file`: lower
    the stages of that plan (`plan --json`, maybe edited) instead of searching for them. `speculation`:
    the build also holds the verify program and the proposer's build (`draft/` or `mtp/`); none when
    `--speculate auto` finds no K faster than plain decode (the plan says K = 0). `share`: a draft on
    the target's chips, planned on that system (the SRAM they leave free) and laid out from that base."""
    out = check_destination(out, force)
    pinned = read_plan(plan_file) if plan_file is not None else None
    system = load_target(target)
    plan_system, sram_base = share or (system, 0)
    if is_graph_file(model):
        if pinned is not None:
            raise ConfigError("--plan: a graph IR file is planned as one unit; there are no stages to give")
        if speculation is not None:
            raise ConfigError("--speculate: a graph IR file has no model to verify drafts with")
        return _compile_graph_file(model, system, options, out, progress, weights, force)
    config = load_model_config(model)
    if speculation is not None:
        check_speculation(config, system, options, speculation)
    backend = backend_for(system)
    progress("lowering graphs")
    graphs = lower_config(config, options, system, system)
    backend.check_lowerable(graphs.decode, system)
    source = _weights_source(weights, graphs.decode.param_bytes(), system)
    check_weights_fit(source, graphs.decode)
    progress("partitioning")
    asked = options
    # A speculative target keeps its embedding on its first stage, as `plan --draft` plans it: the verify step
    # is costed and lowered on the target's stages as pinned, without the head's lookup.
    plan, options = plan_placed(model, plan_system, options, pinned=pinned, known={asked: (config.name, graphs)},
                                embeddings=speculation is None)
    if split_layers(plan):  # stages that end inside layers: every graph below lowered with each block a unit
        config = split_config(config)
    if options != asked or split_layers(plan):  # the KV tier placed, or the layers split: lowered again so
        graphs = lower_config(config, options, system=system)
    verify = {}
    if speculation is not None:
        progress("planning the proposer and the verify step")
        plan = with_speculation(plan, speculative_figures(config.name, config, graphs, plan, system, options,
                                                          speculation))
        if plan.extra["speculative"]["steps"] == 0:
            speculation = None  # auto's answer: plain decode is faster (plan.json's speculative section says why)
        else:
            verify = {"verify": verify_graph(config, options, plan.extra["speculative"]["steps"], speculation.mtp,
                                             system)}
            backend.check_lowerable(verify["verify"], system)
    chunks = _chunk_graphs(config, options, plan.prefill, system, speculation is not None and speculation.mtp)
    base = {"sram_base": sram_base} if sram_base else {}
    lowered = backend.lower(plan, graphs.decode, graphs.prefill, chunks, system, options, progress, **verify, **base)
    image = None
    if source != "none":
        progress("laying out weights")
        float_weights = load_weights(source, build_graph(config, "decode", context=options.context,
                                                         batch=options.batch))
        image = sram_image(lowered.codes, plan.stages, graphs.decode, float_weights, options.precision)
    progress("writing")
    proposer = None
    if speculation is not None:
        proposer = _proposer_build(config, target, options, speculation, weights, progress,
                                   (plan, lowered.memory, (lowered.decode, lowered.prefill, lowered.verify)))
    return _write(out, plan, graphs.decode, lowered, system, (image, source), force,
                  {"vocab_size": config.vocab_size}, proposer)


def _proposer_build(config, target: str, options: CompileOptions, speculation: Speculation, weights: str,
                    progress: Progress, lowered: tuple[Plan, dict, tuple[Program, ...]]
                    ) -> tuple[str, Callable[[Path], dict]]:
    """(sub-directory, how to write it): the draft model's own build (on chips of its own, or on the
    target's first chips above the target's layout: `lowered`, its plan, memory map and Programs), or the MTP
    module's (its one Program runs over a verify step's rows; its image holds the module's weights,
    the embedding table the model's own)."""
    popts = proposer_options(options)
    plan, memory, programs = lowered
    if speculation.draft is not None and plan.extra["speculative"]["placement"] == SHARED:
        system = load_target(target)
        base = sram_end(memory, programs)
        share = (sharing_system(system, system.chip.usable_sram_bytes - base), base)
        return "draft", lambda path: _compile_shared(speculation.draft, target, sharing_options(options, plan.chips),
                                                     path, progress, weights, share)
    if speculation.draft is not None:
        return "draft", lambda path: compile_model(speculation.draft, target, popts, path, progress, weights)
    rows = config.mtp_layers + 1
    return "mtp", lambda path: _compile_mtp(config, rows, load_target(target), popts, path, progress, weights)


def _compile_shared(draft: str, target: str, options: CompileOptions, out: Path, progress: Progress, weights: str,
                    share: tuple[SystemSpec, int]) -> dict:
    try:
        return compile_model(draft, target, options, out, progress, weights, share=share)
    except DoesNotFitError:
        raise ConfigError(f"--draft {draft}: the target's stages were planned to hold it, but the lowered target "
                          f"leaves {share[0].chip.usable_sram_bytes:,} bytes of SRAM free per chip from address "
                          f"{share[1]:#x}, too few; give --draft-placement own") from None


def sram_end(memory: dict, programs: tuple[Program, ...]) -> int:
    """Where a layout above a lowered build's may start: past the highest SRAM address its memory map
    lays out or its Programs name on any chip (tier regions aside; the map records only each stage's
    largest arena), aligned."""
    mapped = (r["addr"] + r["bytes"] for st in memory["stages"] for r in st["regions"] if r["kind"] != "tier")
    named = (hi for p in programs if p is not None for _, hi in program_extent(p).values())
    return align(max((*mapped, *named), default=0))


def _compile_mtp(config, rows: int, system: SystemSpec, options: CompileOptions, out: Path, progress: Progress,
                 weights: str) -> dict:
    graph = mtp_graph(config, options, rows, system)
    options = graph_file_options(options)  # one Program: the module's step over the verify rows
    backend = backend_for(system)
    backend.check_lowerable(graph, system)
    source = _weights_source(weights, graph.param_bytes(), system)
    plan = plan_graphs(graph.name, Lowered(graph, graph), system, options)
    lowered = backend.lower(plan, graph, graph, (graph,), system, options, progress)
    image = None
    if source != "none":
        floats = load_weights(source, build_mtp_graph(config, context=options.context, batch=options.batch,
                                                      rows=rows))
        image = sram_image(lowered.codes, plan.stages, graph, floats, options.precision)
    return _write(out, plan, graph, lowered, system, (image, source), memory_extra={"vocab_size": config.vocab_size})


def _compile_graph_file(path: str, system, options: CompileOptions, out: Path, progress: Progress,
                        weights: str, force: bool) -> dict:
    """A graph IR text file (a kernel, or an edited `sramflow lower`): planned and scheduled as one
    step of its own rows; its prefill Program runs the same graph once. It carries no weights."""
    if weights not in ("auto", "none"):
        raise ConfigError(f"{path}: a graph IR file carries no weights; compile it with --weights none")
    return _compile_graph(read_graph_file(path), system, graph_file_options(options), out, progress, force)


def _compile_graph(graph: Graph, system, options: CompileOptions, out: Path, progress: Progress,
                   force: bool = False) -> dict:
    backend = backend_for(system)
    backend.check_lowerable(graph, system)
    progress("partitioning")
    plan = plan_graphs(graph.name, Lowered(graph, graph), system, options)
    lowered = backend.lower(plan, graph, graph, (graph,), system, options, progress)
    progress("writing")
    return _write(out, plan, graph, lowered, system, (None, "none"), force)


def _weights_source(weights: str, weight_bytes: int, system: SystemSpec) -> str:
    """What sram.img is made from; an SRAM image only where a functional run can use it."""
    sram = system.chip.memory_kind == "sram" and not system.is_mesh
    if weights == "auto":
        return RANDOM if sram and weight_bytes <= AUTO_LIMIT_BYTES else "none"
    if weights not in ("none", "auto") and system.is_mesh:
        raise ConfigError(f"--weights {weights}: a wafer build has no SRAM image yet (functional runs are chip "
                          "only); leave --weights out or give none")
    if weights != "none" and not sram:
        raise ConfigError(f"--weights {weights}: {system.name} keeps weights in {system.chip.memory_kind.upper()} and "
                          "functional runs execute SRAM chips only; give --weights none (or leave it out)")
    if weights in (RANDOM, "none"):
        return weights
    path = Path(weights)
    if path.suffix != ".npz" or not path.is_file():
        raise ConfigError(f"--weights {weights}: expected random, none, auto or an existing .npz checkpoint")
    return str(path.resolve())


def _chunk_graphs(config, options: CompileOptions, prefill: dict, system: SystemSpec, hidden: bool = False
                  ) -> tuple[Graph, ...]:
    """The prefill graph of one chunk per reach variant of the plan (compiler.plan.reach), against the
    cache the whole prompt needs; a variant reaching the whole cache reads all of it (`hidden`: with
    every row's hidden state, which an MTP proposer's prefill reads)."""
    passes = graph_passes(options, system)
    cache, chunk = max(options.context, options.prompt), prefill["chunk_tokens"]
    # The head's row is where the whole prompt ends in its last chunk, so that prompt's first token
    # comes from prefill at any chunk.
    whole = passes(build_graph(config, "prefill", context=cache, prompt=chunk, batch=options.batch, hidden=hidden,
                               all_logits=backend_for(system).all_logits, head_row=(options.prompt - 1) % chunk))
    return tuple(with_reach(whole, v["reach"]) for v in prefill["variants"])


def _write(out: Path, plan: Plan, decode_graph: Graph, lowered: Lowering, system: SystemSpec,
           image: tuple[dict | None, str], force: bool = False, memory_extra: dict | None = None,
           proposer: tuple[str, Callable[[Path], dict]] | None = None) -> dict:
    shape = {"context": plan.options["context"], "batch": plan.options["batch"],
             "recurrent": plan.totals.get("ssm_state_bytes", 0) > 0}
    memory = MemoryMap.from_dict(lowered.memory | shape | (memory_extra or {}))
    with build_writer(out, force) as tmp:
        (tmp / "plan.json").write_text(replace(plan, wall_s=0.0).to_json())
        (tmp / "decode.ir").write_text(print_graph(decode_graph))
        (tmp / "prefill.ir").write_text(print_graph(lowered.prefill_graph))
        save_program(lowered.decode, tmp / "decode.prog")
        save_program(lowered.prefill, tmp / "prefill.prog")
        if lowered.verify is not None:
            (tmp / "verify.ir").write_text(print_graph(lowered.verify_graph))
            save_program(lowered.verify, tmp / "verify.prog")
        (tmp / "memory.json").write_text(memory.to_json())
        (tmp / TARGET_FILE).write_text(dumps_target(system))
        if image[0] is not None:
            save_image(image[0], tmp / "sram.img", image[1])
        if proposer is not None:
            proposer[1](tmp / proposer[0])
        manifest = write_manifest(tmp, system.name, builds=(proposer[0],) if proposer else ())
    return manifest
