"""MoE prefill by routed rows: each model's plan (fp8 on lpu) and what its expert stages' chips multiply.

For each MoE stage shape of the plan: its placement, and the expert row-passes a chip makes per prompt
token, in whole matrix tiles (one row through one tile of one expert's gate, up or down): with one
pass of every row per local expert (the rule before grouped prefill: `experts here` x the tiles of
one expert's slice), and by routed rows (min(k, experts here) x those tiles: the grouped matmul's
rows x min(k, here) slots). Beside the plan's own placement (--experts auto), the same plan with each
of `--experts` (default sliced, 2 and 4 expert groups, parallel; passes.shard.expert_splits), so what a
wider slicing saves and costs shows: its chips, its expert stages' prefill microseconds a prompt token
(the chunk's time over its tokens: what installing every local expert's slice costs beside the rows),
TTFT and decode. With `--before REPO` (a checkout of the code before the change) the same plan is made
there too, and its placement, row-passes, TTFT and decode beside today's.

    python benchmarks/moe_prefill.py [--before /path/to/checkout] [--experts sliced,2,4,parallel]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compiler.frontend import build_graph, load_model_config
from compiler.passes.shard import expert_width
from ir.ops import Opcode
from targets import load_target

CASES = [("mixtral-8x7b", "lpu", "fp8"), ("deepseek-v3", "lpu", "fp8"), ("deepseek-v3", "lpu", "fp16")]
ALTERNATIVES = "sliced,2,4,parallel"
HERE = Path(__file__).resolve().parent.parent


def plan_json(repo: Path, model: str, target: str, precision: str, experts: str = "auto") -> dict:
    """`sramflow plan --json` as the code in `repo` makes it (`experts`: its --experts, when not auto)."""
    env = dict(os.environ, PYTHONPATH=str(repo))
    placed = ["--experts", experts] if experts != "auto" else []
    out = subprocess.run([sys.executable, "-m", "compiler.cli", "plan", model, "--target", target, "--precision",
                          precision, "--json", *placed], cwd=repo, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def split_of(placement: str, tp: int) -> tuple[int, int]:
    """(expert groups, feature slices) a plan's `experts` names (passes.shard.expert_placement)."""
    if placement == "parallel":
        return tp, 1
    if placement == "sliced":
        return 1, tp
    a, b = placement.removeprefix("mixed ").split("x")
    return int(a), int(b)


def row_passes(model: str, dim: int, placement: str, tp: int) -> tuple[int, int, int]:
    """(experts here, tile-rows a token before, routed) on one chip of a stage."""
    c = load_model_config(model)
    a, b = split_of(placement, tp)
    here = c.num_experts // a
    graph = build_graph(c, "decode", context=16)
    width = expert_width(next(op for op in graph.ops if op.opcode is Opcode.EXPERTS), b)  # as the plan slices it
    tiles = 3 * -(-c.hidden_size // dim) * -(-width // dim)
    return here, here * tiles, min(c.experts_per_token, here) * tiles


def moe_stages(plan: dict) -> list[tuple[str, int]]:
    """Each distinct (placement, tp) of the plan's expert stages, by chips."""
    seen = {(s["experts"], s["tp"]) for s in plan["stages"] if s.get("experts")}
    return sorted(seen, key=lambda s: -s[1])


def prefill_us_a_token(plan: dict, placement: str, tp: int) -> float:
    """The slowest of the plan's stages of that placement and tp: a prefill chunk's time over its tokens."""
    chunk = max(s["prefill_chunk_us"] for s in plan["stages"] if (s.get("experts"), s["tp"]) == (placement, tp))
    return chunk / plan["prefill"]["chunk_tokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a checkout of the code before grouped prefill")
    parser.add_argument("--experts", default=ALTERNATIVES,
                        help=f"placements planned beside the plan's own, comma-separated (default {ALTERNATIVES})")
    args = parser.parse_args()
    table = Table(title="MoE prefill by routed rows (tile-rows: one token's rows through one matrix tile)")
    for col in ("model", "plan", "placement (tp)", "experts a chip", "tile-rows a token, every row", "routed",
                "ratio", "made", "vs before (same tp, else widest)", "chips", "expert stage us a token", "chunk",
                "TTFT ms", "decode us"):
        table.add_column(col, justify="left" if col in ("model", "plan", "placement (tp)") else "right")
    for model, target, precision in CASES:
        dim = load_target(target).chip.matrix_dim
        plans = [("before", plan_json(args.before, model, target, precision))] if args.before else []
        own = plan_json(HERE, model, target, precision)
        plans.append(("now", own))
        for experts in filter(None, args.experts.split(",")):
            other = plan_json(HERE, model, target, precision, experts)
            if moe_stages(other) != moe_stages(own):  # a placement the plan did not choose itself
                plans.append((f"--experts {experts}", other))
        made_before: dict[int, int] = {}  # tile-rows a token the plan before made, by its stages' tp
        for label, plan in plans:
            for placement, tp in moe_stages(plan):
                here, every, routed = row_passes(model, dim, placement, tp)
                now = label != "before"  # before the change a chip made a pass of every row per local expert
                made = routed if now else every
                if not now:
                    made_before[tp] = made
                was = made_before.get(tp, made_before[max(made_before)]) if made_before else None  # same tp, or widest
                versus = f"{was / made:.2f}x" if now and was else "-"
                table.add_row(f"{model} {precision}", label, f"{placement} ({tp})", str(here), f"{every:,}",
                              f"{routed:,}", f"{every / routed:.2f}x", f"{made:,}", versus, f"{plan['chips']:,}",
                              f"{prefill_us_a_token(plan, placement, tp):,.2f}",
                              str(plan["prefill"]["chunk_tokens"]), f"{plan['prefill']['ttft_ms']:,.2f}",
                              f"{plan['decode']['latency_us']:,.1f}")
    Console(width=230).print(table)


if __name__ == "__main__":
    main()
