"""What causal prefill buys: each case planned with every chunk reading only the cache it can see (what the
chip backend lowers) and with every chunk streaming the whole cache (what a non-causal backend does); the
chunk the plan chooses, its reach variants, TTFT and its bound. Prints a table.

    python benchmarks/causal_prefill.py
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from compiler.frontend.options import CompileOptions
from compiler.planner import lower, plan_graphs
from targets import load_target

CASES = [
    ("tiny-llama", "lpu-mini", CompileOptions()),
    ("llama-3.1-8b", "lpu", CompileOptions(precision="int8")),
    ("llama-3.1-8b", "lpu", CompileOptions(precision="int8", context=32768, prompt=32768)),
    ("llama-3.1-70b", "lpu", CompileOptions(precision="int8")),
    ("llama-3.1-70b", "lpu", CompileOptions(precision="int8", context=8192, prompt=8192)),
]


def main() -> None:
    table = Table(title="causal prefill: TTFT with each chunk reading its own reach, against the whole cache")
    for col in ("model", "target", "context / prompt", "chunk x chunks", "variants", "TTFT ms", "whole cache ms",
                "bound ms", "whole-cache bound ms", "wall s"):
        table.add_column(col, justify="left" if col in ("model", "target") else "right")
    for model, target, options in CASES:
        start = time.perf_counter()
        system = load_target(target)
        name, graphs = lower(model, options, system=system)
        causal, whole = (plan_graphs(name, graphs, system, options, causal=c).prefill for c in (True, False))
        table.add_row(model, target, f"{options.context:,} / {options.prompt:,}",
                      f"{causal['chunk_tokens']} x {causal['chunks']}", str(len(causal["variants"])),
                      f"{causal['ttft_ms']:,.2f}", f"{whole['ttft_ms']:,.2f}", f"{causal['ttft_bound_ms']:,.2f}",
                      f"{whole['ttft_bound_ms']:,.2f}", f"{time.perf_counter() - start:.1f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
