"""Wire load of the decode Programs the compiler ships (targets/wires.py): per class of edge (local within a node,
global between two nodes of a group, between groups), the messages crossing it, the worst edge's peak
concurrency against its parallel links, the cycles edges spend with more messages than links, and how much
later the latest RECV would end if each crowded wire were shared fairly (each message's delay alone, and
carried on along every chip's later instructions). Each case compiles first (`--weights none`)."""

from __future__ import annotations

import subprocess
import sys
import tempfile

from rich.console import Console
from rich.table import Table

from targets.build_dir import load_build
from targets.wires import class_loads, occupancy

CASES = [
    ("tiny-llama", ["--target", "lpu-mini", "--chips", "8"]),
    ("tiny-llama", ["--target", "lpu-mini", "--chips", "16"]),
    ("tiny-llama", ["--target", "lpu-mini", "--chips", "32"]),
    ("tiny-llama", ["--target", "lpu-mini", "--chips", "80"]),
    ("llama-3.1-8b", ["--precision", "int8"]),
    ("llama-3.1-70b", ["--precision", "int8"]),
    ("llama-3.1-405b", ["--precision", "int8"]),
    ("mixtral-8x7b", ["--precision", "int8"]),
]
COLUMNS = ("model", "options", "chips", "decode cycles", "edges", "used", "messages", "hops", "worst peak/links",
           "edges over", "cycles over", "worst edge over", "most delay", "latest RECV later", "carried on",
           "carried µs")


def main() -> None:
    console = Console(width=240)
    table = Table(title="Wire load of int8 decode Programs: per class of edge, messages against parallel links "
                        "(cycles unless marked; delays from sharing each crowded wire fairly)")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("model", "options", "edges") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, extra) in enumerate(CASES):
            build = f"{tmp}/b{i}"
            subprocess.run([sys.executable, "-m", "compiler.cli", "compile", model, *extra, "--weights", "none", "-o",
                            build], check=True, capture_output=True)
            _rows(table, model, extra, build)
    console.print(table)


def _rows(table: Table, model: str, extra: list[str], build: str) -> None:
    b = load_build(build)
    program = b.programs["decode"]
    clock_mhz = program.clock_hz / 1e6
    for k, (name, c) in enumerate(class_loads(occupancy(program, b.system)).items()):
        first = k == 0
        table.add_row(model if first else "", " ".join(extra) if first else "", str(program.chips) if first else "",
                      f"{program.makespan:,}" if first else "", name, f"{c.edges_used:,}", f"{c.messages:,}",
                      f"{c.hops:,}", f"{c.peak}/{c.links_at_peak}", f"{c.edges_over:,}", f"{c.over_cycles:,}",
                      f"{c.worst_edge_over_cycles:,}", f"{c.most_delay:,}", f"{c.latest_recv_later_by:,}",
                      f"{c.carried:,}", f"{c.carried / clock_mhz:.2f}", end_section=name == "all")


if __name__ == "__main__":
    main()
