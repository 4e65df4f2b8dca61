"""The `sramflow` command line: plan, lower, compile and inspect."""

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
    run = sub.add_parser("run", help="execute a build in the cycle-accurate interpreter; exit 0 only if hazard-free")
    run.add_argument("build", help="a directory written by `sramflow compile`")
    run.add_argument("--tokens", type=int, default=1, help="tokens to generate (decode steps after the prompt)")
    run.add_argument("--check-determinism", action="store_true",
                     help="run again in another chip order and require bit-identical timelines")
    run.add_argument("--json", action="store_true", help="print the figures as JSON and nothing else")
    run.set_defaults(run=_run)
    return parser


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="preset name (examples/models/NAME.json) or path to a config.json")
    p.add_argument("--target", default="lpu", help="preset (lpu, lpu-mini, h100) or path to a target TOML")
    _shape_args(p)
    p.add_argument("--chips", type=int, help="use exactly N chips")
    p.add_argument("--max-chips", type=int, help="use at most N chips")
    p.add_argument("--objective", choices=OBJECTIVES, default="chips",
                   help="fewest chips that fit, or lowest decode latency within the chip limit")


def _shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="weight precision (activations: 16-bit)")
    p.add_argument("--kv-precision", choices=KV_PRECISIONS, default="fp16",
                   help="KV cache precision (8-bit caches keep a 16-bit scale per token and kv head)")
    p.add_argument("--context", default="4096",
                   help="tokens held in the KV cache (plan: a comma list sweeps, one row per context)")
    p.add_argument("--prompt", type=int, default=1024, help="prompt length for time-to-first-token")
    p.add_argument("--batch", type=int, default=1, help="sequences decoded together")


def _contexts(text: str) -> list[int]:
    try:
        values = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"--context: expected N or a comma list like 1024,8192, got {text!r}") from None
    return values


def _options(args: argparse.Namespace, context: int | None = None) -> CompileOptions:
    if context is None:
        contexts = _contexts(args.context)
        if len(contexts) > 1:
            raise ConfigError("--context: a comma list sweeps contexts in `plan` only; give one value here")
        context = contexts[0]
    return CompileOptions(precision=args.precision, kv_precision=args.kv_precision, context=context,
                          prompt=args.prompt, batch=args.batch, chips=getattr(args, "chips", None),
                          max_chips=getattr(args, "max_chips", None), objective=getattr(args, "objective", "chips"))


def _plan(args: argparse.Namespace) -> int:
    from compiler.planner import make_plan
    from compiler.report import render_plan

    contexts = _contexts(args.context)
    if len(contexts) > 1:
        return _sweep(args, contexts)
    plan = make_plan(args.model, args.target, _options(args))
    if args.json:
        sys.stdout.write(plan.to_json())
    else:
        render_plan(plan, Console())
    return 0


def _sweep(args: argparse.Namespace, contexts: list[int]) -> int:
    """One plan per context: how the KV cache grows and what it costs in chips and speed."""
    import json

    from compiler.planner import make_plan
    from compiler.report import render_sweep

    plans = [make_plan(args.model, args.target, _options(args, context)) for context in contexts]
    if args.json:
        sys.stdout.write(json.dumps({"sweep": [json.loads(p.to_json()) for p in plans]}, indent=2,
                                    sort_keys=True) + "\n")
    else:
        render_sweep(plans, Console())
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

    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("compiling", total=None)
        manifest = compile_model(args.model, args.target, _options(args), Path(args.output),
                                 lambda step: bar.update(task, description=step))
    console.print(f"wrote {args.output}: {', '.join(sorted(manifest['files']))}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    from compiler.inspect import load_build, parse_chips, parse_cycles, summary
    from compiler.report import render_summary

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
        render_summary(figures, memory, Console())
    return 0


def _run(args: argparse.Namespace) -> int:
    import json

    from targets.runner import run_build

    figures = run_build(args.build, args.tokens, args.check_determinism)
    if args.json:
        sys.stdout.write(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    else:
        _print_run(figures, Console())
    clean = not figures["hazards"] and figures.get("determinism", {"passed": True})["passed"]
    return 0 if clean else 2


def _print_run(f: dict, console: Console) -> None:
    d, p = f["decode"], f["prefill"]
    console.print(f"decode: {d['latency_us']:,.3f} µs per token ({d['latency_cycles']:,} cycles), "
                  f"{d['tokens_per_s']:,.0f} tokens/s; TTFT {p['ttft_ms']:,.3f} ms; "
                  f"{f['tokens']['count']} tokens in {f['tokens']['total_ms']:,.3f} ms")
    console.print("unit busy (mean over units): " + ", ".join(f"{k} {v:.0%}" for k, v in d["busy"].items()))
    console.print(f"{f['instructions_simulated']:,} instructions simulated in {f['wall_s']:.2f} s")
    if "determinism" in f:
        det = f["determinism"]
        console.print(f"determinism: {'passed' if det['passed'] else 'FAILED'} (digest {det['digest'][:16]}…)")
    hazards = f["hazards"]
    console.print(f"hazards: {len(hazards)}" if hazards else "hazards: none")
    for h in hazards[:20]:
        console.print(f"  {h['phase']} chip {h['chip']} {h['unit']}[{h['index']}] @{h['cycle']}: "
                      f"{h['kind']}: {h['detail']}", markup=False)


if __name__ == "__main__":
    sys.exit(main())
