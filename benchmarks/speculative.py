"""The speculative-decoding figures README quotes: per case the K chosen (0: plain decode), where the
proposer goes and its chips, the step beside its bound and tokens/s beside plain decode, across
acceptance rates, with each plan's wall time.

    python benchmarks/speculative.py [--quick]      # --quick: the tiny models only
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

from compiler.frontend.options import CompileOptions, Speculation
from compiler.speculation import make_speculative_plan

CASES = [
    ("llama-3.1-70b", "lpu", CompileOptions(precision="int8"), {"draft": "llama-3.2-1b"}),
    ("deepseek-v3", "lpu", CompileOptions(precision="fp8", prompt=16), {"mtp": True}),
]
QUICK = [
    ("tiny-llama", "lpu-mini", CompileOptions(), {"draft": "tiny-llama-draft"}),
    ("tiny-deepseek-v3", "lpu-mini", CompileOptions(), {"mtp": True}),
]
ACCEPTANCE = (0.3, 0.5, 0.7, 0.9)


def table(cases: list) -> Table:
    out = Table(title="speculative decoding (--speculate auto)", header_style="bold")
    for col in ("model", "target", "proposer", "A", "K", "placement", "chips", "step µs", "bound µs", "tokens/step",
                "tokens/s", "bound", "plain tokens/s", "x", "wall s"):
        out.add_column(col, justify="left" if col in ("model", "target", "proposer", "placement") else "right")
    for model, target, options, proposer in cases:
        for a in ACCEPTANCE:
            start = time.perf_counter()
            s = make_speculative_plan(model, target, options, Speculation(acceptance=a, **proposer)).extra[
                "speculative"]
            own = f" + {s['proposer_chips']:,}" if s["placement"] == "own chips" else ""
            out.add_row(model, target, s["proposer_model"], f"{a:g}", str(s["steps"]), s["placement"],
                        f"{s['target_chips']:,}{own}", f"{s['step_us']:,.1f}",
                        f"{s['step_bound_us']:,.1f}", f"{s['expected_tokens_per_step']:.3f}",
                        f"{s['tokens_per_s']:,.0f}", f"{s['tokens_per_s_bound']:,.0f}",
                        f"{s['plain']['tokens_per_s']:,.0f}", f"{s['speedup']:.2f}",
                        f"{time.perf_counter() - start:.1f}")
    return out


if __name__ == "__main__":
    Console(width=200).print(table(QUICK if "--quick" in sys.argv else CASES))
