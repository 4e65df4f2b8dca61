"""The `sramflow` command line: plan, compare, lower, compile, inspect, run and sweep (exit codes: .exits)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

# Only the standard library here and in compiler.cli.exits: Ctrl-C is sramflow's from the first line of main().
from compiler.cli.exits import (
    EX_INTERRUPTED,
    EX_USAGE,
    OneLineParser,
    UsageError,
    closed_pipe,
    crash,
    exit_with,
    fail,
    interrupted_by,
)


def entry() -> None:
    """The `sramflow` console script and `python -m compiler.cli`."""
    exit_with(main())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        status = args.run(args)
        sys.stdout.flush()  # here, so a reader that went away is met below and not at exit
        return status
    except UsageError as error:
        return fail(f"error: {error}", EX_USAGE)
    except KeyboardInterrupt:
        return fail("interrupted", EX_INTERRUPTED)
    except BrokenPipeError:
        return closed_pipe()
    except Exception as error:  # the last resort: one line, never a bare traceback
        from ir.errors import ExecutionError, SramflowError

        if isinstance(error, ExecutionError):  # the build is wrong (functional mode, the reference): as a hazard
            return fail(f"error: {error}", 2)
        if isinstance(error, SramflowError):
            return fail(f"error: {error}", 1)
        if interrupted_by(error):
            return fail("interrupted", EX_INTERRUPTED)
        return crash(error)


def _parser() -> argparse.ArgumentParser:
    from compiler.frontend.options import OBJECTIVES

    parser = OneLineParser(prog="sramflow", description=__doc__.split(" (exit")[0] + ".")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    plan = sub.add_parser("plan", help="how many chips, and how the model is laid out on them")
    _model_args(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON and nothing else")
    plan.add_argument("--plot", metavar="PNG", help="with --batch A,B,...: draw the batch curve into this PNG")
    plan.add_argument("--idle", type=float, metavar="SECONDS",
                      help="which tier should hold an idle conversation's KV cache, and what resuming costs")
    _pool_args(plan)
    _speculation_args(plan)
    plan.set_defaults(run=_plan)
    lower = sub.add_parser("lower", help="print the model's graph IR")
    lower.add_argument("model", help="preset name (examples/models/NAME.json) or path to a config.json")
    lower.add_argument("--phase", choices=("decode", "prefill"), default="decode")
    lower.add_argument("--layers", type=int, help="build only this many decoder layers")
    _shape_args(lower, chunk=False)
    lower.set_defaults(run=_lower)
    comp = sub.add_parser("compile", help="plan, lower and schedule: write a build directory")
    _model_args(comp)
    comp.add_argument("-o", "--output", required=True,
                      help="build directory to write: new, empty, or a previous sramflow build (replaced)")
    comp.add_argument("--force", action="store_true",
                      help="replace a sramflow build even if edited (never a directory that is not a build)")
    _pool_targets(comp)
    _speculation_args(comp)
    comp.add_argument("--weights", default="auto",
                      help="the SRAM image for `run --functional`: random (seeded), a .npz checkpoint of arrays "
                           "by parameter name, none, or auto (random up to 256 MiB of weights)")
    comp.add_argument("--plan", metavar="PLAN_JSON",
                      help="compile the stages of this plan (`plan --json`, or a build's plan.json, maybe edited) "
                           "instead of searching: every figure is costed afresh")
    comp.set_defaults(run=_compile)
    insp = sub.add_parser("inspect", help="summarise a build directory, print assembly, draw timelines")
    insp.add_argument("build", help="a directory written by `sramflow compile`")
    insp.add_argument("--json", action="store_true", help="print the summary as JSON and nothing else")
    insp.add_argument("--chip", help="chips to show: N, A-B or a comma list (with --asm, --gantt, --trace)")
    insp.add_argument("--asm", action="store_true", help="print the chips' instruction streams as assembly")
    insp.add_argument("--phase", choices=("decode", "prefill", "verify"),
                      help="the phase to show (with --asm, --gantt, --trace; default decode)")
    insp.add_argument("--cycles", help="cycle window LO:HI (with --asm, --gantt, --trace)")
    insp.add_argument("--gantt", metavar="PNG", help="draw the chips' units over time into a PNG")
    insp.add_argument("--trace", metavar="JSON", help="write a Chrome trace-event file (Perfetto)")
    insp.set_defaults(run=_inspect)
    comp_ = sub.add_parser("compare", help="one model on several targets: a table, JSON, and a PNG")
    comp_.add_argument("model", help="preset name (examples/models/NAME.json) or path to a config.json")
    comp_.add_argument("--targets", default="lpu,wse3,h100", help="comma list of presets or target TOML paths")
    _shape_args(comp_)
    comp_.add_argument("--objective", choices=OBJECTIVES, default="chips",
                       help="fewest devices that fit, or lowest decode latency within each target's limit")
    comp_.add_argument("--plot", metavar="PNG", help="also draw the comparison into this PNG")
    comp_.add_argument("--json", action="store_true", help="print the comparison as JSON and nothing else")
    comp_.set_defaults(run=_compare)
    run = sub.add_parser("run", help="execute a build in the cycle-accurate interpreter; exit 0 only if hazard-free")
    run.add_argument("build", help="a directory written by `sramflow compile`")
    run.add_argument("--tokens", type=int, default=1, help="tokens to generate (decode steps after the prompt)")
    run.add_argument("--check-determinism", action="store_true",
                     help="run again in another chip order and require bit-identical timelines")
    run.add_argument("--json", action="store_true", help="print the figures as JSON and nothing else")
    run.add_argument("--functional", action="store_true",
                     help="also execute every instruction on the build's SRAM image: prompt in, greedy tokens out")
    run.add_argument("--prompt",
                     help="prompt token ids for --functional, e.g. \"1 2 3 4\" (default \"1\"); ';' separates one "
                          "prompt per sequence of the batch (several groups of --batch prompts run one after another)")
    run.add_argument("--check-reference", action="store_true",
                     help="with --functional: run the graph IR reference on the same weights and prompts and "
                          "require its logits (within the formats' tolerance) and tokens; exit 2 at the first "
                          "step that differs")
    run.add_argument("--wires", action="store_true",
                     help="also check what every wire carries at once: a SEND entering a wire whose links are all "
                          "held is a link-busy hazard (targets/wires.py)")
    run.set_defaults(run=_run)
    sweep = sub.add_parser("sweep", help="plan (or compile and run) every point of a TOML spec on Ray: table, plots")
    sweep.add_argument("spec", help="a sweep spec (TOML): axes and what to run per point")
    sweep.add_argument("--out", help="the sweep's directory (default: <spec stem>.sweep/ next to the spec)")
    sweep.add_argument("--address", help="join a Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: a local "
                                         "Ray instance started in-process)")
    sweep.add_argument("--cpus", type=int, help="CPUs of the local Ray instance (default: all of the machine's)")
    sweep.add_argument("--plot", metavar="DIR", help="draw the Pareto pictures of every model into DIR")
    sweep.add_argument("--best", action="store_true", help="print each model's Pareto front (tokens/s vs devices)")
    sweep.set_defaults(run=_sweep_spec)
    return parser


def _model_args(p: argparse.ArgumentParser) -> None:
    from compiler.frontend.options import OBJECTIVES

    p.add_argument("model", help="preset name (examples/models/NAME.json) or path to a config.json")
    p.add_argument("--target", help="preset (lpu, lpu-mini, lpu3, h100, b200, rubin, wse3) or path to a target TOML "
                                    "(default lpu)")
    _shape_args(p)
    p.add_argument("--chips", type=int, help="use exactly N chips")
    p.add_argument("--max-chips", type=int, help="use at most N chips")
    p.add_argument("--objective", choices=OBJECTIVES, default="chips",
                   help="fewest chips that fit, or lowest decode latency within the chip limit")
    p.add_argument("--experts", default="auto", metavar="auto|parallel|sliced|N",
                   help="how MoE stages spread their experts: the static timing rule's choice (auto), whole experts "
                        "a chip, every expert's features over the stage, or N groups of experts each sliced over "
                        "the rest of the stage's chips")
    _tier_args(p)


def _tier_args(p: argparse.ArgumentParser) -> None:
    from compiler.frontend.options import KV_TIERS

    p.add_argument("--kv-tier", choices=KV_TIERS, default="sram",
                   help="where the KV cache lives: SRAM, its older positions in the target's dram or flash tier, "
                        "or auto (whichever the objective favours)")
    p.add_argument("--kv-hot", type=int, metavar="TOKENS",
                   help="with --kv-tier dram|flash: the newest positions of every cache kept in SRAM (default: the "
                        "largest window that keeps the tier's chip count)")


def _shape_args(p: argparse.ArgumentParser, chunk: bool = True) -> None:
    from compiler.frontend.options import KV_PRECISIONS, PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="weight precision (activations: 16-bit)")
    p.add_argument("--kv-precision", choices=KV_PRECISIONS, default="fp16",
                   help="KV cache precision (8-bit caches keep a 16-bit scale per token and kv head)")
    p.add_argument("--context", help="tokens held in the KV cache, prompt included, default 4096 (plan: a comma list "
                                     "sweeps, one row per context)")
    p.add_argument("--prompt", type=int,
                   help="prompt length for time-to-first-token (default 1024, or the context if shorter)")
    p.add_argument("--batch", type=_batch_text, help="sequences decoded together, default 1 (plan, compare: a comma "
                                                     "list draws the batch curve)")
    if chunk:
        p.add_argument("--prefill-chunk", type=int, default=256,
                       help="largest prefill chunk in tokens (the plan picks the largest multiple of 16 that fits)")
    p.add_argument("--embed-on-host", action="store_true",
                   help="wafers: keep the embedding table off the wafer; the host streams each token's row in")


def _speculation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--draft", metavar="MODEL", help="speculative decoding: a draft model of the target's vocabulary "
                                                    "proposes tokens (see --draft-placement)")
    p.add_argument("--mtp", action="store_true",
                   help="speculative decoding: the model's own multi-token-prediction module proposes (DeepSeek-V3)")
    p.add_argument("--speculate", metavar="K",
                   help="drafts the target verifies per step, or auto (the K with the most tokens/s; the default "
                        "with --draft or --mtp)")
    p.add_argument("--acceptance", type=float,
                   help="per-token acceptance rate the plan's expected tokens per step assume (default 0.7)")
    p.add_argument("--draft-placement", metavar="auto|own|shared",
                   help="the draft on chips of its own, or shared: on the target's stages (its weights in their spare "
                        "SRAM); auto (the default): whichever gives more tokens/s per chip")


def _speculation(args: argparse.Namespace):
    """The speculative-decoding request, or None when no option of it is given."""
    from compiler.frontend.options import DEFAULT_ACCEPTANCE, Speculation
    from ir.errors import ConfigError

    given = (args.draft, args.mtp or None, args.speculate, args.acceptance, args.draft_placement)
    if all(v is None for v in given):
        return None
    steps = args.speculate or "auto"
    if steps != "auto":
        try:
            steps = int(steps)
        except ValueError:
            raise ConfigError(f"--speculate must be auto or a number of drafts, got {args.speculate!r}") from None
    acceptance = DEFAULT_ACCEPTANCE if args.acceptance is None else args.acceptance
    return Speculation(args.draft, args.mtp, steps, acceptance, args.draft_placement or "auto")


def _pool_targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefill-target", help="disaggregated serving: the prefill pool's target (with --decode-target)")
    p.add_argument("--decode-target", help="disaggregated serving: the decode pool's target (with --prefill-target)")


def _pool_args(p: argparse.ArgumentParser) -> None:
    _pool_targets(p)
    p.add_argument("--rate", type=float, help="pools: requests per second to serve")
    p.add_argument("--output", type=int, help="pools: tokens generated per request")
    p.add_argument("--min-tokens-per-s", type=float,
                   help="pools: per-user decode tokens/s floor (default: half the decode target's batch-1 speed)")
    p.add_argument("--max-ttft-ms", type=float, help="pools: time-to-first-token ceiling for the prefill batch")


def _contexts(text: str | None) -> list[int]:
    from ir.errors import ConfigError

    text = "4096" if text is None else text
    try:
        values = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"--context: expected N or a comma list like 1024,8192, got {text!r}") from None
    return values


def _options(args: argparse.Namespace, context: int | None = None, batch: int | None = None):
    from compiler.frontend.options import CompileOptions
    from ir.errors import ConfigError

    if context is None:
        contexts = _contexts(args.context)
        if len(contexts) > 1:
            raise ConfigError("--context: a comma list sweeps contexts in `plan` only; give one value here")
        context = contexts[0]
    return CompileOptions(precision=args.precision, kv_precision=args.kv_precision, context=context,
                          prompt=args.prompt, batch=batch or _batch(args.batch), chips=getattr(args, "chips", None),
                          max_chips=getattr(args, "max_chips", None), objective=getattr(args, "objective", "chips"),
                          prefill_chunk=getattr(args, "prefill_chunk", 256), embed_on_host=args.embed_on_host,
                          kv_tier=getattr(args, "kv_tier", "sram"), kv_hot=getattr(args, "kv_hot", None),
                          experts=getattr(args, "experts", "auto"))


def _batch_text(text: str) -> str:
    """--batch as argparse reads it: a malformed value is a usage error, like any other number's."""
    from compiler.serving.curves import parse_batches
    from ir.errors import ConfigError

    try:
        parse_batches(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--batch: ")) from None
    return text


def _batch(text: str | None) -> int:
    from compiler.serving.curves import parse_batches
    from ir.errors import ConfigError

    batches = parse_batches(text)
    if len(batches) > 1:
        raise ConfigError("--batch: a comma list draws a batch curve in `plan` and `compare` only; give one value here")
    return batches[0]


def _plan(args: argparse.Namespace) -> int:
    from compiler.plan.report import render_plan
    from compiler.planner import make_plan
    from compiler.serving import commands
    from ir.errors import ConfigError

    spec = _speculation(args)
    if spec is not None:
        return _plan_speculative(args, spec)
    if commands.serving_requested(args) or args.rate is not None or args.output is not None:
        return commands.plan_pools(args, _console())
    contexts, batches = _contexts(args.context), commands.batch_list(args)
    if batches and len(contexts) > 1:
        raise ConfigError("--context and --batch: sweep one of them at a time (a comma list for one, one value for "
                          "the other)")
    if batches:
        return commands.plan_batches(args, _options(args, contexts[0], batch=1), batches, _console())
    commands.refuse_plot(args)
    if len(contexts) > 1:
        return _sweep(args, contexts)
    plan = make_plan(args.model, args.target or "lpu", _options(args), args.idle)
    if args.json:
        sys.stdout.write(plan.to_json())
    else:
        render_plan(plan, _console())
    return 0


def _plan_speculative(args: argparse.Namespace, spec) -> int:
    from compiler.plan.report import render_plan
    from compiler.serving import commands
    from compiler.speculation import make_speculative_plan, render_speculative
    from ir.errors import ConfigError

    if commands.serving_requested(args) or args.rate is not None or commands.batch_list(args) or args.plot:
        raise ConfigError("--draft/--mtp/--speculate plan one deployment: not with pools, batch curves or --plot")
    plan = make_speculative_plan(args.model, args.target or "lpu", _options(args), spec)
    if args.json:
        sys.stdout.write(plan.to_json())
    else:
        render_plan(plan, _console())
        render_speculative(plan, _console())
    return 0


def _sweep(args: argparse.Namespace, contexts: list[int]) -> int:
    """One plan per context: how the KV cache grows and what it costs in chips and speed."""
    import json

    from compiler.plan.report import render_sweep
    from compiler.planner import make_plan

    plans = [make_plan(args.model, args.target or "lpu", _options(args, context), args.idle) for context in contexts]
    if args.json:
        sys.stdout.write(json.dumps({"sweep": [json.loads(p.to_json()) for p in plans]}, indent=2,
                                    sort_keys=True) + "\n")
    else:
        render_sweep(plans, _console())
    return 0


def _compare(args: argparse.Namespace) -> int:
    from compiler.compare import compare, parse_targets, render_compare, to_json, write_plot
    from compiler.serving import commands
    from ir.files import check_output_file

    plot = check_output_file(args.plot, "--plot", ".png") if args.plot is not None else None
    targets = parse_targets(args.targets)
    batches = commands.batch_list(args)
    if batches:
        return commands.compare_batches(args, _options(args, batch=1), targets, batches, _console())
    options = _options(args)
    rows = compare(args.model, targets, options)
    if plot:
        write_plot(args.model, options, rows, plot)
    if args.json:
        sys.stdout.write(to_json(args.model, options, rows))
    else:
        render_compare(args.model, options, rows, _console())
        if plot:
            _console().print(f"wrote {args.plot}", soft_wrap=True)
    return 0


def _lower(args: argparse.Namespace) -> int:
    from compiler.planner import lower_one
    from ir.printer import print_graph

    sys.stdout.write(print_graph(lower_one(args.model, args.phase, _options(args), args.layers)))
    return 0


def _compile(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from compiler.build import compile_model
    from compiler.serving import commands
    from ir.errors import ConfigError

    options = _options(args)  # option mistakes are reported before the progress bar starts
    speculation = _speculation(args)
    if speculation is not None and (commands.serving_requested(args) or args.plan):
        raise ConfigError("--draft/--mtp/--speculate: a speculative build plans itself; not with --plan or pools")
    if commands.serving_requested(args):
        if args.plan:
            raise ConfigError("--plan: a disaggregated build plans its two pools itself; give --plan without "
                              "--prefill-target/--decode-target")
        return commands.compile_pools(args, options)
    console = Console(stderr=True)
    # A spinner only on a terminal: redirected, stderr holds nothing but the result (or one error line).
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                   transient=True) if console.is_terminal else None
    with bar or nullcontext():
        task = bar.add_task("compiling", total=None) if bar else None
        manifest = compile_model(args.model, args.target or "lpu", options, args.output,
                                 (lambda step: bar.update(task, description=step)) if bar else (lambda _: None),
                                 weights=args.weights, force=args.force, plan_file=args.plan,
                                 speculation=speculation)
    console.print(f"wrote {args.output}: {', '.join(sorted(manifest['files']))}", soft_wrap=True, markup=False)
    if speculation is not None:
        import json
        from pathlib import Path

        line = json.loads((Path(args.output) / "plan.json").read_text())["speculative"]["no_speculation"]
        if line:
            console.print(f"--speculate auto: {line}", soft_wrap=True, markup=False)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    from compiler.inspect import check_drawable, parse_chips, parse_cycles, summary
    from compiler.plan.report import render_summary
    from ir.errors import ConfigError
    from targets.build_dir import load_build
    from targets.handoff import is_disaggregated

    if is_disaggregated(args.build):
        raise ConfigError(f"{args.build}: a disaggregated build holds two builds; inspect {args.build}/prefill or "
                          f"{args.build}/decode")
    _check_views(args)
    build = load_build(args.build)
    if (args.phase or "decode") not in build.programs:
        raise ConfigError(f"--phase {args.phase}: {args.build} is not a speculative build (no verify.prog)")
    program = build.programs[args.phase or "decode"]
    chips = parse_chips(args.chip, program.chips) if args.chip is not None else None
    window = parse_cycles(args.cycles, program) if args.cycles is not None else None
    if args.asm:
        from ir.asm import print_asm

        sys.stdout.write(print_asm(program, chips=chips, cycles=window))
        return 0
    if args.gantt or args.trace:
        from compiler.timeline import write_gantt, write_trace

        if args.gantt:
            lanes = chips or list(range(min(8, program.chips)))
            check_drawable(program, lanes, window, "--gantt")
            write_gantt(program, lanes, window, args.gantt)
        if args.trace:
            check_drawable(program, chips, window, "--trace")
            write_trace(program, chips, window, args.trace)
        return 0
    figures = summary(build.plan, build.programs["decode"], build.programs["prefill"])
    if args.json:
        sys.stdout.write(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    else:
        render_summary(figures, build.memory, _console())
    return 0


def _check_views(args: argparse.Namespace) -> None:
    """inspect's options that would do nothing together are refused, and output files checked,
    before the build is read."""
    from ir.errors import ConfigError
    from ir.files import check_output_file

    views = [flag for flag, on in (("--asm", args.asm), ("--gantt", args.gantt is not None),
                                   ("--trace", args.trace is not None)) if on]
    if "--asm" in views and len(views) > 1:
        raise ConfigError(f"--asm prints assembly and writes no file; give {views[1]} in a command of its own")
    if views and args.json:
        raise ConfigError(f"--json prints the summary, which {views[0]} replaces; give one of them")
    for flag, value in (("--chip", args.chip), ("--cycles", args.cycles), ("--phase", args.phase)):
        if value is not None and not views:
            raise ConfigError(f"{flag} chooses what --asm, --gantt or --trace show; alone it does nothing")
    if args.gantt is not None:
        check_output_file(args.gantt, "--gantt", ".png")
    if args.trace is not None:
        check_output_file(args.trace, "--trace", ".json")


def _run(args: argparse.Namespace) -> int:
    import json

    from ir.errors import ConfigError
    from targets.handoff import is_disaggregated, run_disaggregated
    from targets.runner import run_build

    if args.prompt is not None and not args.functional:
        raise ConfigError("--prompt is read by functional runs only; add --functional (or leave --prompt out)")
    if args.check_reference and not args.functional:
        raise ConfigError("--check-reference compares a functional run with the reference; add --functional")
    prompt = _prompts(args.prompt if args.prompt is not None else "1") if args.functional else None
    from targets.speculative import is_speculative, run_speculative_build

    speculative = is_speculative(args.build)
    run = run_disaggregated if is_disaggregated(args.build) else run_speculative_build if speculative else run_build
    if args.wires and run is not run_build:
        raise ConfigError("--wires checks a plain build's decode and prefill; this build is "
                          f"{'disaggregated' if run is run_disaggregated else 'speculative'}")
    wires = {"wires": True} if args.wires else {}
    figures = run(args.build, args.tokens, args.check_determinism, prompt, args.check_reference, **wires)
    if args.json:
        sys.stdout.write(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    elif run is run_disaggregated:
        from compiler.serving.commands import print_disaggregated_run

        print_disaggregated_run(figures, _console())
    else:
        _print_run(figures, _console())
        if speculative:
            _print_speculative(figures, _console())
    clean = not figures["hazards"] and figures.get("determinism", {"passed": True})["passed"]
    return 0 if clean else 2


def _sweep_spec(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from compiler.sweep.best import render_best
    from compiler.sweep.command import sweep
    from compiler.sweep.plots import write_plots
    from compiler.sweep.runner import Cluster
    from ir.errors import ConfigError

    if args.cpus is not None and (args.cpus < 1 or args.address):
        raise ConfigError("--cpus: must be a positive integer, for the local Ray instance only (not with --address)")
    err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
    outcome = sweep(args.spec, args.out, Cluster(args.address, args.cpus), err)
    statuses = [r["status"] for r in outcome.table]
    err.print(f"wrote {', '.join(str(f) for f in outcome.files)}: {len(statuses)} points, "
              f"{statuses.count('ok')} planned, {len(statuses) - statuses.count('ok')} failed", soft_wrap=True)
    if args.plot:
        err.print(f"wrote {len(write_plots(outcome.table, Path(args.plot)))} plots in {args.plot}", soft_wrap=True)
    if args.best:
        render_best(outcome.table, _console())
    if outcome.internal_errors:
        err.print(f"{outcome.internal_errors} points failed with internal errors (see the table's error column); "
                  "running the sweep again retries them")
        return 2
    return 0


def _console():
    """Standard output; a pipe or file gets 160 columns, so wide tables keep their headers."""
    from rich.console import Console

    class Output(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1; main() handles it as for any other output
            self.quiet = True
            raise BrokenPipeError

    return Output() if sys.stdout.isatty() else Output(width=160)


def _prompts(text: str) -> list[list[int]]:
    """Token ids separated by spaces (or commas); ';' starts the next sequence's prompt."""
    return [_prompt(part, text) for part in text.split(";")]


def _prompt(part: str, text: str) -> list[int]:
    from ir.errors import ConfigError

    try:
        ids = [int(t) for t in part.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"--prompt: expected token ids separated by spaces, got {text!r}") from None
    if not ids or min(ids) < 0:
        raise ConfigError(f"--prompt: expected one or more non-negative token ids in every prompt, got {text!r}")
    return ids


def _print_speculative(f: dict, console) -> None:
    s = f["speculative"]
    expected = (f", {s['expected_tokens_per_step']:.3f} tokens a step expected at acceptance {s['acceptance']:g}: "
                f"{s['tokens_per_s']:,.0f} tokens/s") if s["acceptance"] is not None else ""
    shared = s["placement"] == "target's stages"
    parts = (f"verify {s['verify_cycles']:,} + mtp {s['proposer_cycles']:,}" if s["proposer"] == "mtp" else
             f"{s['steps'] + shared} x {s['proposer_cycles']:,} draft{' on the target chips' if shared else ''} + "
             f"verify {s['verify_cycles']:,}")
    console.print(f"speculative: K = {s['steps']}, {s['cycles_per_step']:,} cycles a step ({s['step_us']:,.3f} µs: "
                  f"{parts} + hand-offs {s['handoff_cycles']:,}){expected}", soft_wrap=True)
    if "functional" in f:
        fn = f["functional"]
        console.print(f"functional: {fn['steps']} steps, {fn['tokens_per_step']:.3f} tokens a step, acceptance "
                      f"{fn['acceptance']} measured: {fn['tokens_per_s']:,.0f} tokens/s", soft_wrap=True)


def _print_run(f: dict, console) -> None:
    d, p = f["decode"], f["prefill"]
    console.print(f"decode: {d['latency_us']:,.3f} µs per token ({d['latency_cycles']:,} cycles), "
                  f"{d['tokens_per_s']:,.0f} tokens/s; TTFT {p['ttft_ms']:,.3f} ms; "
                  f"{f['tokens']['count']} tokens in {f['tokens']['total_ms']:,.3f} ms")
    console.print("unit busy (mean over units): " + ", ".join(f"{k} {v:.0%}" for k, v in d["busy"].items()))
    by_chip = d["busy_by_chip"]
    if len(by_chip) > 1:
        mem = [chip["mem"] for chip in by_chip]
        console.print(f"MEM busy per chip: {min(mem):.0%} (chip {mem.index(min(mem))}) to {max(mem):.0%} "
                      f"(chip {mem.index(max(mem))}); --json gives every chip's units")
    console.print(f"{f['instructions_executed']:,} instructions executed in {f['wall_s']:.2f} s")
    if "determinism" in f:
        det = f["determinism"]
        console.print(f"determinism: {'passed' if det['passed'] else 'FAILED'} (digest {det['digest'][:16]}…)")
    if "functional" in f:
        fn = f["functional"]
        for prompt, tokens in zip(fn["prompts"], fn["sequences"], strict=True):
            console.print(f"functional: prompt {prompt} -> tokens {tokens}")
        console.print(f"functional: {fn['instructions_executed']:,} instructions executed on data")
    if "reference" in f:
        ref = f["reference"]
        console.print(f"reference: {ref['sequences']} sequences, {ref['steps']} steps agree (largest logit difference "
                      f"{ref['max_abs_diff']:.3g}, tolerance {ref['tolerance']['absolute']:g} + "
                      f"{ref['tolerance']['relative']:g} x the largest logit)")
    hazards = f["hazards"]
    console.print(f"hazards: {len(hazards)}" if hazards else "hazards: none")
    for h in hazards[:20]:
        console.print(f"  {h['phase']} chip {h['chip']} {h['unit']}[{h['index']}] @{h['cycle']}: "
                      f"{h['kind']}: {h['detail']}", markup=False)
