"""The `sramflow` command line: plan, compare, lower, compile, inspect, run and sweep."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from compiler.options import KV_PRECISIONS, OBJECTIVES, PRECISIONS, CompileOptions
from ir.errors import ConfigError, SramflowError


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except SramflowError as error:
        print(f"sramflow: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sramflow", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    plan = sub.add_parser("plan", help="how many chips, and how the model is laid out on them")
    _model_args(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON and nothing else")
    plan.add_argument("--plot", metavar="PNG", help="with --batch A,B,...: draw the batch curve into this PNG")
    _pool_args(plan)
    plan.set_defaults(run=_plan)
    lower = sub.add_parser("lower", help="print the model's graph IR")
    lower.add_argument("model", help="preset name (examples/models/NAME.json) or path to a config.json")
    lower.add_argument("--phase", choices=("decode", "prefill"), default="decode")
    lower.add_argument("--layers", type=int, help="build only this many decoder layers")
    _shape_args(lower)
    lower.set_defaults(run=_lower)
    comp = sub.add_parser("compile", help="plan, lower and schedule: write a build directory")
    _model_args(comp)
    comp.add_argument("-o", "--output", required=True, help="build directory to write (replaced if it exists)")
    _pool_targets(comp)
    comp.add_argument("--weights", default="auto",
                      help="the SRAM image for `run --functional`: random (seeded), a .npz checkpoint of arrays "
                           "by parameter name, none, or auto (random up to 256 MiB of weights)")
    comp.set_defaults(run=_compile)
    insp = sub.add_parser("inspect", help="summarise a build directory, print assembly, draw timelines")
    insp.add_argument("build", help="a directory written by `sramflow compile`")
    insp.add_argument("--json", action="store_true", help="print the summary as JSON and nothing else")
    insp.add_argument("--chip", help="chips to show: N, A-B or a comma list (with --asm, --gantt)")
    insp.add_argument("--asm", action="store_true", help="print the chips' instruction streams as assembly")
    insp.add_argument("--phase", choices=("decode", "prefill"), default="decode")
    insp.add_argument("--cycles", help="cycle window LO:HI (with --asm, --gantt)")
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
    run.add_argument("--prompt", default="1", help="prompt token ids for --functional, e.g. \"1 2 3 4\"")
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
    p.add_argument("model", help="preset name (examples/models/NAME.json) or path to a config.json")
    p.add_argument("--target", help="preset (lpu, lpu-mini, lpu3, h100, b200, rubin, wse3) or path to a target TOML "
                                    "(default lpu)")
    _shape_args(p)
    p.add_argument("--chips", type=int, help="use exactly N chips")
    p.add_argument("--max-chips", type=int, help="use at most N chips")
    p.add_argument("--objective", choices=OBJECTIVES, default="chips",
                   help="fewest chips that fit, or lowest decode latency within the chip limit")


def _shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="weight precision (activations: 16-bit)")
    p.add_argument("--kv-precision", choices=KV_PRECISIONS, default="fp16",
                   help="KV cache precision (8-bit caches keep a 16-bit scale per token and kv head)")
    p.add_argument("--context", help="tokens held in the KV cache, default 4096 (plan: a comma list sweeps, one row "
                                     "per context)")
    p.add_argument("--prompt", type=int, default=1024, help="prompt length for time-to-first-token")
    p.add_argument("--batch", help="sequences decoded together, default 1 (plan, compare: a comma list draws the "
                                   "batch curve)")
    p.add_argument("--prefill-chunk", type=int, default=256,
                   help="largest prefill chunk in tokens (the plan picks the largest multiple of 16 that fits)")
    p.add_argument("--embed-on-host", action="store_true",
                   help="wafers: keep the embedding table off the wafer; the host streams each token's row in")


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
    text = "4096" if text is None else text
    try:
        values = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"--context: expected N or a comma list like 1024,8192, got {text!r}") from None
    return values


def _options(args: argparse.Namespace, context: int | None = None, batch: int | None = None) -> CompileOptions:
    if context is None:
        contexts = _contexts(args.context)
        if len(contexts) > 1:
            raise ConfigError("--context: a comma list sweeps contexts in `plan` only; give one value here")
        context = contexts[0]
    return CompileOptions(precision=args.precision, kv_precision=args.kv_precision, context=context,
                          prompt=args.prompt, batch=batch or _batch(args.batch), chips=getattr(args, "chips", None),
                          max_chips=getattr(args, "max_chips", None), objective=getattr(args, "objective", "chips"),
                          prefill_chunk=args.prefill_chunk, embed_on_host=args.embed_on_host)


def _batch(text: str | None) -> int:
    from compiler.serving.curves import parse_batches

    batches = parse_batches(text)
    if len(batches) > 1:
        raise ConfigError("--batch: a comma list draws a batch curve in `plan` and `compare` only; give one value here")
    return batches[0]


def _plan(args: argparse.Namespace) -> int:
    from compiler.planner import make_plan
    from compiler.report import render_plan
    from compiler.serving import commands
    from compiler.wafer.plan import WaferPlan
    from compiler.wafer.report import render_wafer_plan

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
    plan = make_plan(args.model, args.target or "lpu", _options(args))
    if args.json:
        sys.stdout.write(plan.to_json())
    elif isinstance(plan, WaferPlan):
        render_wafer_plan(plan, _console())
    else:
        render_plan(plan, _console())
    return 0


def _sweep(args: argparse.Namespace, contexts: list[int]) -> int:
    """One plan per context: how the KV cache grows and what it costs in chips and speed."""
    import json

    from compiler.planner import make_plan
    from compiler.report import render_sweep

    plans = [make_plan(args.model, args.target or "lpu", _options(args, context)) for context in contexts]
    if args.json:
        sys.stdout.write(json.dumps({"sweep": [json.loads(p.to_json()) for p in plans]}, indent=2,
                                    sort_keys=True) + "\n")
    else:
        render_sweep(plans, _console())
    return 0


def _compare(args: argparse.Namespace) -> int:
    from compiler.compare import compare, parse_targets, render_compare, to_json, write_plot
    from compiler.serving import commands

    targets = parse_targets(args.targets)
    batches = commands.batch_list(args)
    if batches:
        return commands.compare_batches(args, _options(args, batch=1), targets, batches, _console())
    options = _options(args)
    rows = compare(args.model, targets, options)
    if args.plot:
        write_plot(args.model, options, rows, args.plot)
    if args.json:
        sys.stdout.write(to_json(args.model, options, rows))
    else:
        render_compare(args.model, options, rows, _console())
        if args.plot:
            Console().print(f"wrote {args.plot}")
    return 0


def _lower(args: argparse.Namespace) -> int:
    from compiler.planner import lower_one
    from ir.printer import print_graph

    sys.stdout.write(print_graph(lower_one(args.model, args.phase, _options(args), args.layers)))
    return 0


def _compile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from compiler.build import compile_model
    from compiler.serving import commands

    options = _options(args)  # option mistakes are reported before the progress bar starts
    if commands.serving_requested(args):
        return commands.compile_pools(args, options)
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("compiling", total=None)
        manifest = compile_model(args.model, args.target or "lpu", options, Path(args.output),
                                 lambda step: bar.update(task, description=step), weights=args.weights)
    console.print(f"wrote {args.output}: {', '.join(sorted(manifest['files']))}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    from compiler.inspect import load_build, parse_chips, parse_cycles, summary
    from compiler.report import render_summary
    from targets.handoff import is_disaggregated

    if is_disaggregated(args.build):
        raise ConfigError(f"{args.build}: a disaggregated build holds two builds; inspect {args.build}/prefill or "
                          f"{args.build}/decode")
    plan, memory, decode, prefill = load_build(args.build)
    program = decode if args.phase == "decode" else prefill
    chips = parse_chips(args.chip, program.chips) if args.chip else None
    window = parse_cycles(args.cycles) if args.cycles else None
    if args.asm:
        from ir.asm import print_asm

        sys.stdout.write(print_asm(program, chips=chips, cycles=window))
        return 0
    if args.gantt or args.trace:
        from compiler.timeline import write_gantt, write_trace

        if args.gantt:
            write_gantt(program, chips or list(range(min(8, program.chips))), window, args.gantt)
        if args.trace:
            write_trace(program, chips, window, args.trace)
        return 0
    figures = summary(plan, decode, prefill)
    if args.json:
        sys.stdout.write(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    else:
        render_summary(figures, memory, _console())
    return 0


def _run(args: argparse.Namespace) -> int:
    import json

    from targets.handoff import is_disaggregated, run_disaggregated
    from targets.runner import run_build

    prompt = _prompt(args.prompt) if args.functional else None
    run = run_disaggregated if is_disaggregated(args.build) else run_build
    figures = run(args.build, args.tokens, args.check_determinism, prompt)
    if args.json:
        sys.stdout.write(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    elif run is run_disaggregated:
        from compiler.serving.commands import print_disaggregated_run

        print_disaggregated_run(figures, _console())
    else:
        _print_run(figures, _console())
    clean = not figures["hazards"] and figures.get("determinism", {"passed": True})["passed"]
    return 0 if clean else 2


def _sweep_spec(args: argparse.Namespace) -> int:
    from pathlib import Path

    from compiler.sweep.best import render_best
    from compiler.sweep.command import sweep
    from compiler.sweep.plots import write_plots
    from compiler.sweep.runner import Cluster

    if args.cpus is not None and (args.cpus < 1 or args.address):
        raise ConfigError("--cpus: must be a positive integer, for the local Ray instance only (not with --address)")
    err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
    outcome = sweep(args.spec, args.out, Cluster(args.address, args.cpus), err)
    statuses = [r["status"] for r in outcome.table]
    err.print(f"wrote {', '.join(str(f) for f in outcome.files)}: {len(statuses)} points, "
              f"{statuses.count('ok')} planned, {len(statuses) - statuses.count('ok')} failed")
    if args.plot:
        err.print(f"wrote {len(write_plots(outcome.table, Path(args.plot)))} plots in {args.plot}")
    if args.best:
        render_best(outcome.table, _console())
    if outcome.internal_errors:
        err.print(f"{outcome.internal_errors} points failed with internal errors (see the table's error column); "
                  "running the sweep again retries them")
        return 2
    return 0


def _console() -> Console:
    """Standard output; a pipe or file gets 160 columns, so wide tables keep their headers."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _prompt(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"--prompt: expected token ids separated by spaces, got {text!r}") from None
    if not ids or min(ids) < 0:
        raise ConfigError(f"--prompt: expected one or more non-negative token ids, got {text!r}")
    return ids


def _print_run(f: dict, console: Console) -> None:
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
    console.print(f"{f['instructions_simulated']:,} instructions simulated in {f['wall_s']:.2f} s")
    if "determinism" in f:
        det = f["determinism"]
        console.print(f"determinism: {'passed' if det['passed'] else 'FAILED'} (digest {det['digest'][:16]}…)")
    if "functional" in f:
        fn = f["functional"]
        console.print(f"functional: prompt {fn['prompt']} -> tokens {fn['tokens']} "
                      f"({fn['instructions_executed']:,} instructions executed on data)")
    hazards = f["hazards"]
    console.print(f"hazards: {len(hazards)}" if hazards else "hazards: none")
    for h in hazards[:20]:
        console.print(f"  {h['phase']} chip {h['chip']} {h['unit']}[{h['index']}] @{h['cycle']}: "
                      f"{h['kind']}: {h['detail']}", markup=False)


if __name__ == "__main__":
    sys.exit(main())
