"""How close plans come to their bounds (issue 16): prints the tables the issue's "Done when" asks for.

1. Every shipped model at default options on lpu: the chips the plan spans (its footprint: idle chips inside
   it are still bought, powered and wired) beside the capacity bound, and the chips with work.
2. Mixtral-8x7B on 2 and 4 H100s, and on lpu at int8: the expert placement each stage takes, the decode
   latency, and the per-chip expert bytes a decode step streams under each placement (feature-sliced,
   expert-parallel: the static timing rule, min(k, experts here) passes of one slice each).
3. Llama-3.1-70B int8 on lpu: time to first token at the chunk the plan takes (the one that minimises
   it) beside the largest chunk every stage has room for (the rule before issue 16).
4. Llama-3.1-70B at 128K context on lpu: the footprint beside the capacity bound.
5. Decode latency (the plan's estimate) beside its physical bound for 8B, 70B, 405B and Mixtral at int8.

    python benchmarks/plan_bounds.py [--quick]     # --quick skips deepseek-v3 (minutes to plan)
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from compiler.frontend import build_graph, load_model_config
from compiler.frontend.options import CompileOptions
from compiler.passes.shard import expert_splits
from compiler.plan import search
from compiler.planner import make_plan
from ir.ops import Opcode, expert_passes

MODELS = ["llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.2-1b", "llama-2-70b", "mistral-7b", "qwen2-7b",
          "mixtral-8x7b", "mamba-2.8b", "jamba-v0.1", "deepseek-v3"]


def capacity_table(models: list[str]) -> Table:
    table = Table(title="1. shipped models, default options, lpu: footprint vs capacity bound (goal <= 1.05x)")
    for col in ("model", "footprint", "chips with work", "bound", "ratio", "stages", "tp per stage"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for model in models:
        plan = make_plan(model, "lpu", CompileOptions())
        tps = sorted({s.tp for s in plan.stages})
        table.add_row(model, str(plan.footprint_chips), str(plan.chips), str(plan.chips_lower_bound),
                      f"{plan.footprint_chips / plan.chips_lower_bound:.3f}", str(len(plan.stages)),
                      ", ".join(map(str, tps)))
    return table


def _streamed_mb(model: str, precision: str, tp: int) -> dict[str, float]:
    """Per-chip expert MB one decode step streams under each split of `tp` chips (the static rule)."""
    graph = build_graph(load_model_config(model), "decode", context=16, layers=1)
    moe = next(op for op in graph.ops if op.opcode is Opcode.EXPERTS)
    experts, hidden, inter = moe.operands[3].type.shape
    per_weight = {"fp16": 2, "int8": 1}[precision]
    out = {}
    for a, b in expert_splits(moe, tp):
        name = "parallel" if b == 1 else "sliced" if a == 1 else f"mixed {a}x{b}"
        passes = expert_passes(1, moe.attr["top_k"], experts // a)
        out[name] = passes * 3 * hidden * (inter // b) * per_weight / 1e6
    return out


def mixtral_table() -> Table:
    table = Table(title="2. mixtral-8x7b: expert placement (issue: 4.8 ms on 2 H100s, 3.6 ms on 4, sliced)")
    for col in ("target", "chips", "placement", "decode ms", "expert MB/step/chip by placement"):
        table.add_column(col)
    for target, precision, chips in (("h100", "fp16", 2), ("h100", "fp16", 4), ("lpu", "int8", None)):
        plan = make_plan("mixtral-8x7b", target, CompileOptions(precision=precision, chips=chips))
        placements = sorted({s.experts or "-" for s in plan.stages})
        tp = max(s.tp for s in plan.stages)
        mb = _streamed_mb("mixtral-8x7b", precision, tp)
        table.add_row(target, str(plan.chips), ", ".join(placements), f"{plan.decode['latency_us'] / 1e3:.2f}",
                      f"tp {tp}: " + ", ".join(f"{k} {v:.1f}" for k, v in mb.items()))
    return table


def ttft_table() -> Table:
    table = Table(title="3. llama-3.1-70b int8 on lpu, prompt 1024: TTFT by chunk (goal: 2x below the largest)")
    for col in ("chunk", "tokens", "chunks", "ttft ms", "bound ms"):
        table.add_column(col)
    chosen = make_plan("llama-3.1-70b", "lpu", CompileOptions(precision="int8"))
    fastest = search.fastest_chunk
    search.fastest_chunk = lambda options, largest, time: (largest, time(largest)[1])  # the rule before issue 16
    try:
        old = make_plan("llama-3.1-70b", "lpu", CompileOptions(precision="int8"))
    finally:
        search.fastest_chunk = fastest
    for label, plan in (("chosen (lowest TTFT)", chosen), ("largest that fits", old)):
        p = plan.prefill
        table.add_row(label, str(p["chunk_tokens"]), str(p["chunks"]), f"{p['ttft_ms']:.3f}",
                      f"{p['ttft_bound_ms']:.3f}")
    table.add_row("ratio", "", "", f"{old.prefill['ttft_ms'] / chosen.prefill['ttft_ms']:.2f}x", "")
    return table


def long_context_table() -> Table:
    table = Table(title="4. llama-3.1-70b at 128K context on lpu (goal <= 1.1x)")
    for col in ("precision", "footprint", "chips with work", "bound", "ratio"):
        table.add_column(col)
    for precision in ("int8", "fp16"):
        plan = make_plan("llama-3.1-70b", "lpu", CompileOptions(precision=precision, context=131072))
        table.add_row(precision, str(plan.footprint_chips), str(plan.chips), str(plan.chips_lower_bound),
                      f"{plan.footprint_chips / plan.chips_lower_bound:.3f}")
    return table


def decode_bound_table() -> Table:
    table = Table(title="5. int8 on lpu: decode estimate vs physical bound (goal <= 1.25x, scheduled)")
    for col in ("model", "chips", "estimate µs", "bound µs", "ratio"):
        table.add_column(col)
    for model in ("llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "mixtral-8x7b"):
        d = make_plan(model, "lpu", CompileOptions(precision="int8"))
        table.add_row(model, str(d.chips), f"{d.decode['latency_us']:,.1f}", f"{d.decode['latency_bound_us']:,.1f}",
                      f"{d.decode['latency_us'] / d.decode['latency_bound_us']:.2f}")
    return table


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    console = Console(width=140)
    console.print(capacity_table([m for m in MODELS if not (quick and m == "deepseek-v3")]))
    console.print(mixtral_table())
    console.print(ttft_table())
    console.print(long_context_table())
    console.print(decode_bound_table())


if __name__ == "__main__":
    main()
