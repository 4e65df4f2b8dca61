"""The `sramflow` command line: plan and lower (compile, inspect, run come with the scheduler)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from compiler.options import OBJECTIVES, PRECISIONS, CompileOptions
from ir.errors import SramflowError


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
    p.add_argument("--context", type=int, default=4096, help="tokens held in the KV cache")
    p.add_argument("--prompt", type=int, default=1024, help="prompt length for time-to-first-token")
    p.add_argument("--batch", type=int, default=1, help="sequences decoded together")


def _options(args: argparse.Namespace) -> CompileOptions:
    return CompileOptions(precision=args.precision, context=args.context, prompt=args.prompt, batch=args.batch,
                          chips=getattr(args, "chips", None), max_chips=getattr(args, "max_chips", None),
                          objective=getattr(args, "objective", "chips"))


def _plan(args: argparse.Namespace) -> int:
    from compiler.planner import make_plan
    from compiler.report import render_plan

    plan = make_plan(args.model, args.target, _options(args))
    if args.json:
        sys.stdout.write(plan.to_json())
    else:
        render_plan(plan, Console())
    return 0


def _lower(args: argparse.Namespace) -> int:
    from compiler.planner import lower_one
    from ir.printer import print_graph

    sys.stdout.write(print_graph(lower_one(args.model, args.phase, _options(args), args.layers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
