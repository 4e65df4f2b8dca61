"""What limits the prefill chunk: per stage of the plan, what fills a chip's SRAM (weights, KV cache,
program reserve) and the room left beside a chunk's activations at each chunk size, with the stage's
time for a chunk that reads the whole cache. Prints one table per case.

    python benchmarks/chunk_room.py [8b-4k | 8b-16k | 8b-32k | 70b]   (default: the three 8B cases)
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from compiler.backends import backend_for
from compiler.frontend.options import CompileOptions
from compiler.plan.search import choose
from compiler.planner import lower
from targets import load_target

CASES = {
    "8b-4k": ("llama-3.1-8b", CompileOptions(precision="int8", context=4096, prompt=4096)),
    "8b-16k": ("llama-3.1-8b", CompileOptions(precision="int8", context=16384, prompt=16384)),
    "8b-32k": ("llama-3.1-8b", CompileOptions(precision="int8", context=32768, prompt=32768)),
    "70b": ("llama-3.1-70b", CompileOptions(precision="int8")),
}
CHUNKS = (16, 32, 64, 128, 256)
MIB = 2**20


def table(case: str) -> Table:
    model, options = CASES[case]
    system = load_target("lpu")
    backend = backend_for(system)
    _, graphs = lower(model, options, system, backend.all_logits)
    layout = backend.layout(graphs.decode, graphs.prefill, system, options)
    runs = layout.place(choose(layout, options).stages, options)
    cache = max(options.context, options.prompt)
    out = Table(title=f"{model} {options.precision}, prompt = context = {options.prompt:,}: "
                      f"{sum(r.cand.tp for r in runs)} chips; MiB a chip (usable "
                      f"{system.chip.usable_sram_bytes / MIB:,.1f}, program reserve "
                      f"{system.chip.program_reserve_bytes / MIB:,.1f})")
    for col in ("stage", "units", "tp", "weights", "kv cache", *(f"room @{c}" for c in CHUNKS),
                *(f"us/chunk @{c}" for c in CHUNKS[1:])):
        out.add_column(col, justify="left" if col == "units" else "right")
    for i, run in enumerate(runs):
        c = run.cand
        units = layout.units_[c.first:c.stop]
        shards = [u.decode[u.group(c.tp, c.split)] for u in units]  # each unit's cost at the stage's layout
        weights = sum(s.weight_bytes for s in shards)
        kv = sum(s.state_bytes for s in shards)
        rooms = [f"{layout.room(run, k) / MIB:,.2f}" for k in CHUNKS]
        times = [f"{layout.time(i, run, runs, k, cache).prefill.total_s * 1e6:,.0f}" for k in CHUNKS[1:]]
        out.add_row(str(i), f"{units[0].scope} .. {units[-1].scope}", str(c.tp), f"{weights / MIB:,.1f}",
                    f"{kv / MIB:,.1f}", *rooms, *times)
    return out


def main() -> None:
    console = Console(width=240)
    for case in sys.argv[1:] or ("8b-4k", "8b-16k", "8b-32k"):
        console.print(table(case))


if __name__ == "__main__":
    main()
