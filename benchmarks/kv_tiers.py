"""The tiered-KV figures README quotes: where the KV cache lives per context (--kv-tier auto), the chips SRAM
alone needs, what the tier costs a token, and the crossover; with the wall time of each plan. Then tiny
builds with a ring of 8 of their 64 positions in SRAM and the rest in host DRAM, per KV format: decoded
from prompts before and past the ring's length to the context's end, against the reference and the
SRAM-only build.

    python benchmarks/kv_tiers.py [--quick | --tiny]  # --quick: 70B at 32K, 128K, jamba at 256K; --tiny: builds only
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compiler.build import compile_model
from compiler.frontend.options import CompileOptions
from compiler.planner import make_plan
from targets.runner import run_build

CASES = [("llama-3.1-70b", "lpu", c) for c in (4096, 16384, 32768, 65536, 131072)] + [
    ("jamba-v0.1", "lpu", 262144)]
QUICK = [("llama-3.1-70b", "lpu", 32768), ("llama-3.1-70b", "lpu", 131072), ("jamba-v0.1", "lpu", 262144)]


def table(cases: list[tuple[str, str, int]]) -> Table:
    out = Table(title="--kv-tier auto (fp16 weights and cache, batch 1)", header_style="bold")
    for col in ("model", "target", "context", "chips", "SRAM-only chips", "KV in", "hot", "µs/token", "tier ms/token",
                "tokens/s", "wall s"):
        out.add_column(col, justify="left" if col in ("model", "target", "KV in") else "right")
    for model, target, context in cases:
        start = time.perf_counter()
        plan = make_plan(model, target, CompileOptions(context=context, kv_tier="auto"))
        p = plan.kv_tiers["placement"]
        d = plan.decode
        out.add_row(model, target, f"{context:,}", f"{plan.chips:,}", f"{p['sram_chips'] or 0:,}", p["tier"],
                    f"{p['hot_tokens']:,}", f"{d['latency_us']:,.0f}", f"{p['fetch_us_per_token'] / 1e3:,.2f}",
                    f"{d['tokens_per_s']:,.0f}", f"{time.perf_counter() - start:.1f}")
    return out


TINY_PROMPTS = (5, 20, 32)  # tokens: under the ring's 8, past it, and two whole prefill chunks of 16


def tiny_table() -> Table:
    out = Table(title="tiny-llama on lpu-mini, context 64, ring of 8 in SRAM, 56 positions in DRAM",
                header_style="bold")
    for col in ("KV", "prompt", "tokens", "ref", "max Δlogit", "= SRAM", "hazards", "plan µs", "run µs"):
        out.add_column(col, justify="left" if col == "KV" else "right")
    shape = {"context": 64, "prompt": 32, "prefill_chunk": 16}
    with tempfile.TemporaryDirectory() as root:
        for kv in ("fp16", "int8", "fp8", "nvfp4"):
            builds = {name: Path(root) / f"{kv}-{name}" for name in ("ring", "sram")}
            compile_model("tiny-llama", "lpu-mini", CompileOptions(**shape, kv_precision=kv, kv_tier="dram", kv_hot=8),
                          builds["ring"], weights="random")
            compile_model("tiny-llama", "lpu-mini", CompileOptions(**shape, kv_precision=kv), builds["sram"],
                          weights="random")
            for length in TINY_PROMPTS:
                prompt, tokens = [3 * t % 200 + 1 for t in range(length)], 64 - length + 1
                run = run_build(builds["ring"], tokens, prompt=prompt, check_reference=True)
                sram = run_build(builds["sram"], tokens, prompt=prompt)
                ref = run["reference"]
                out.add_row(kv, str(length), str(tokens), "yes" if ref["passed"] else "NO",
                            f"{ref['max_abs_diff']:.3g}",
                            "yes" if run["functional"]["tokens"] == sram["functional"]["tokens"] else "NO",
                            str(len(run["hazards"])), f"{_plan_us(builds['ring']):,.2f}",
                            f"{run['decode']['latency_us']:,.2f}")
    return out


def _plan_us(build: Path) -> float:
    return json.loads((build / "plan.json").read_text())["decode"]["latency_us"]


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--tiny" not in argv:
        Console().print(table(QUICK if "--quick" in argv else CASES))
    Console().print(tiny_table())
