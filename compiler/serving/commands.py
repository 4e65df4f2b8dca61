"""The serving commands behind `plan --batch LIST`, `compare --batch LIST` and the pool options of `plan`
and `compile`: argument checks, the work, and what is printed or written."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from rich.console import Console

from compiler.frontend.options import CompileOptions
from ir.errors import ConfigError
from targets import load_target


def batch_list(args: argparse.Namespace) -> list[int] | None:
    """The --batch comma list when it names several batches, else None (one batch: a plain plan)."""
    from compiler.serving.curves import parse_batches

    batches = parse_batches(args.batch)
    return batches if len(batches) > 1 else None


def plan_batches(args: argparse.Namespace, options: CompileOptions, batches: list[int], console: Console) -> int:
    """`plan MODEL --batch 1,4,16 [--plot PNG] [--json]`: one target's batch curve."""
    return _curves(args, options, [args.target or "lpu"], batches, console)


def compare_batches(args: argparse.Namespace, options: CompileOptions, targets: list[str], batches: list[int],
                    console: Console) -> int:
    """`compare MODEL --targets A,B --batch 1,4,16 [--plot PNG] [--json]`: one curve per target."""
    return _curves(args, options, targets, batches, console)


def _curves(args: argparse.Namespace, options: CompileOptions, targets: list[str], batches: list[int],
            console: Console) -> int:
    from compiler.planner import is_graph_file
    from compiler.serving.curve_plot import check_png, write_curve_plot
    from compiler.serving.curve_report import render_curves
    from compiler.serving.curves import batch_curve, curve_dict

    if is_graph_file(args.model):
        raise ConfigError(f"--batch: {args.model} is a graph IR file with rows of its own; a batch curve plans a "
                          "model config at each batch")
    if args.plot:
        check_png(args.plot)
    systems = [load_target(t) for t in targets]
    curves = [batch_curve(args.model, s, replace(options, batch=1), batches) for s in systems]
    if args.plot:
        write_curve_plot(args.model, options, curves, args.plot)
    if args.json:
        body = {"model": args.model, "options": _options_dict(options), "batches": batches,
                "curves": [curve_dict(c) for c in curves]}
        sys.stdout.write(json.dumps({"batch_sweep": body}, indent=2) + "\n")
    else:
        render_curves(args.model, options, curves, console)
        if args.plot:
            console.print(f"wrote {args.plot}")
    return 0


def _options_dict(options: CompileOptions) -> dict:
    from dataclasses import asdict

    return {k: v for k, v in asdict(options).items() if k != "batch"}


def refuse_plot(args: argparse.Namespace) -> None:
    """`plan --plot` draws a batch curve only."""
    if getattr(args, "plot", None):
        raise ConfigError("--plot: `plan` draws a batch curve; give --batch as a comma list (e.g. 1,4,16,64)")


def serving_requested(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "prefill_target", None) or getattr(args, "decode_target", None))


def plan_pools(args: argparse.Namespace, console: Console) -> int:
    """`plan MODEL --prefill-target T1 --decode-target T2 --rate R --prompt S --output N [--json]`."""
    from compiler.planner import is_graph_file
    from compiler.serving.pool_report import render_deployment
    from compiler.serving.pools import Load, deployment_dict, size_deployment

    _check_pool_args(args)
    if is_graph_file(args.model):
        raise ConfigError(f"--prefill-target: {args.model} is a graph IR file with rows of its own; pools plan a "
                          "model config")
    options = CompileOptions(precision=args.precision, kv_precision=args.kv_precision, prompt=args.prompt,
                             context=args.prompt + args.output, prefill_chunk=args.prefill_chunk,
                             embed_on_host=args.embed_on_host, objective=args.objective)
    load = Load(args.rate, args.prompt, args.output, args.min_tokens_per_s, args.max_ttft_ms)
    deployment = size_deployment(args.model, load_target(args.prefill_target), load_target(args.decode_target),
                                 options, load)
    if args.json:
        sys.stdout.write(json.dumps({"serving": deployment_dict(args.model, options, deployment)}, indent=2) + "\n")
    else:
        render_deployment(args.model, deployment, console)
    return 0


def _check_pool_args(args: argparse.Namespace) -> None:
    """Pools need both targets, a rate and an output length; they choose batches and contexts themselves."""
    if not (args.prefill_target and args.decode_target):
        raise ConfigError("--prefill-target and --decode-target: give both (they may name the same target)")
    for flag, value in (("--rate", args.rate), ("--prompt", args.prompt), ("--output", args.output)):
        if value is None:
            raise ConfigError(f"{flag}: required with --prefill-target and --decode-target")
    for flag, value in (("--target", args.target), ("--context", args.context), ("--batch", args.batch),
                        ("--chips", args.chips), ("--max-chips", args.max_chips), ("--plot", args.plot)):
        if value is not None:
            raise ConfigError(f"{flag}: pools size their own replicas (context = prompt + output, batches chosen "
                              "for the load); leave it out with --prefill-target/--decode-target")


def compile_pools(args: argparse.Namespace, options: CompileOptions) -> int:
    """`compile MODEL --prefill-target T1 --decode-target T2 -o DIR`: a disaggregated build."""
    from contextlib import nullcontext
    from pathlib import Path

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from compiler.serving.build import check_request, compile_disaggregated

    if not (args.prefill_target and args.decode_target):
        raise ConfigError("--prefill-target and --decode-target: give both (they may name the same target)")
    if args.target is not None:
        raise ConfigError("--target: a disaggregated build names --prefill-target and --decode-target instead")
    check_request(args.prefill_target, args.decode_target, Path(args.output), args.force)
    console = Console(stderr=True)
    # A spinner only on a terminal, as for `compile`: redirected, stderr holds the result alone.
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                   transient=True) if console.is_terminal else None
    with bar or nullcontext():
        task = bar.add_task("compiling", total=None) if bar else None
        manifest = compile_disaggregated(args.model, args.prefill_target, args.decode_target, options, args.output,
                                         args.weights, (lambda s: bar.update(task, description=s)) if bar else
                                         (lambda _: None), args.force)
    parts = sorted(manifest["files"]) + [f"{name}/" for name in sorted(manifest["builds"])]
    console.print(f"wrote {args.output}: {', '.join(parts)}", soft_wrap=True, markup=False)
    return 0


def print_disaggregated_run(f: dict, console: Console) -> None:
    """`sramflow run DIR` on a disaggregated build: the request end to end, then hazards."""
    h, d, p = f["handoff"], f["decode"], f["prefill"]
    console.print(f"prefill ({f['chips']['prefill']} chips): {p['ttft_ms']:,.4f} ms; KV hand-off {h['bytes']:,} "
                  f"bytes in {h['time_ms']:,.6f} ms ({h['senders']} → {h['receivers']} chips at "
                  f"{h['bw_bytes_per_s'] / 1e9:,.2f} GB/s + {h['latency_s'] * 1e6:,.2f} µs); "
                  f"TTFT {f['ttft_ms']:,.4f} ms")
    console.print(f"decode ({f['chips']['decode']} chips): {d['latency_us']:,.3f} µs per token, "
                  f"{d['tokens_per_s']:,.0f} tokens/s; {f['tokens']['count']} tokens in "
                  f"{f['tokens']['total_ms']:,.4f} ms")
    console.print(f"{f['instructions_executed']:,} instructions executed")
    if "determinism" in f:
        det = f["determinism"]
        console.print(f"determinism: {'passed' if det['passed'] else 'FAILED'} (digest {det['digest'][:16]}…)")
    if "functional" in f:
        fn = f["functional"]
        for prompt, tokens in zip(fn["prompts"], fn["sequences"], strict=True):
            console.print(f"functional: prompt {prompt} -> tokens {tokens}")
        console.print(f"functional: {fn['copied_bytes']:,} cache bytes handed over; {fn['instructions_executed']:,} "
                      "instructions executed on data")
    if "reference" in f:
        ref = f["reference"]
        console.print(f"reference: {ref['sequences']} sequences, {ref['steps']} steps agree (largest logit difference "
                      f"{ref['max_abs_diff']:.3g})")
    hazards = f["hazards"]
    console.print(f"hazards: {len(hazards)}" if hazards else "hazards: none")
    for x in hazards[:20]:
        console.print(f"  {x['pool']} {x['phase']} chip {x['chip']} {x['unit']}[{x['index']}] @{x['cycle']}: "
                      f"{x['kind']}: {x['detail']}", markup=False)
