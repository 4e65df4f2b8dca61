"""The tiered-KV figures README quotes: where the KV cache lives per context (--kv-tier auto), the chips SRAM
alone needs, what the tier costs a token, and the crossover; with the wall time of each plan.

    python benchmarks/kv_tiers.py [--quick]      # --quick: 70B at 32K and 128K, and jamba at 256K only
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

from compiler.frontend.options import CompileOptions
from compiler.planner import make_plan

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


if __name__ == "__main__":
    Console().print(table(QUICK if "--quick" in sys.argv[1:] else CASES))
