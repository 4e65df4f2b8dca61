"""Wire load of the decode Programs the compiler ships (targets/wires.py): per class of edge (local within a node,
global between two nodes of a group, between groups), the messages crossing it, the worst edge's peak
concurrency against its parallel links, the cycles edges spend with more messages than links, and how much
later the latest RECV would end if each crowded wire were shared fairly (each message's delay alone, and
carried on along every chip's later instructions). A second table says whose messages those are: a stage's
collectives within a node, its collectives across nodes, or the hand-offs between stages (the Program's
stage list). Each case compiles first (`--weights none`)."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import numpy as np
from rich.console import Console
from rich.table import Table

from targets.build_dir import load_build
from targets.wires import CLASSES, Occupancy, class_loads, occupancy

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
KINDS = ("collective in a node", "collective across nodes", "hand-off")
KIND_COLUMNS = ("model", "options", "messages of", "edge class", "hops", "crowded hops", "most delay", "delay sum",
                "carried on", "carried µs")


def main() -> None:
    console = Console(width=240)
    table = Table(title="Wire load of int8 decode Programs: per class of edge, messages against parallel links "
                        "(cycles unless marked; delays from sharing each crowded wire fairly)")
    kinds = Table(title="Whose messages crowd the wires: per kind of message and edge class (carried on: the "
                        "latest RECV's push from these messages' delays alone)")
    for t, columns in ((table, COLUMNS), (kinds, KIND_COLUMNS)):
        for col in columns:
            t.add_column(col, justify="left" if col in ("model", "options", "edges", "messages of", "edge class")
                         else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, extra) in enumerate(CASES):
            build = f"{tmp}/b{i}"
            subprocess.run([sys.executable, "-m", "compiler.cli", "compile", model, *extra, "--weights", "none", "-o",
                            build], check=True, capture_output=True)
            b = load_build(build)
            occ = occupancy(b.programs["decode"], b.system)
            _rows(table, model, extra, occ)
            _kind_rows(kinds, model, extra, occ)
    console.print(table)
    console.print(kinds)


def _rows(table: Table, model: str, extra: list[str], occ: Occupancy) -> None:
    program = occ.program
    clock_mhz = program.clock_hz / 1e6
    for k, (name, c) in enumerate(class_loads(occ).items()):
        first = k == 0
        table.add_row(model if first else "", " ".join(extra) if first else "", str(program.chips) if first else "",
                      f"{program.makespan:,}" if first else "", name, f"{c.edges_used:,}", f"{c.messages:,}",
                      f"{c.hops:,}", f"{c.peak}/{c.links_at_peak}", f"{c.edges_over:,}", f"{c.over_cycles:,}",
                      f"{c.worst_edge_over_cycles:,}", f"{c.most_delay:,}", f"{c.latest_recv_later_by:,}",
                      f"{c.carried:,}", f"{c.carried / clock_mhz:.2f}", end_section=name == "all")



def _kind_rows(table: Table, model: str, extra: list[str], occ: Occupancy) -> None:
    """One row per kind of message and edge class its hops crowd, then the kind over every class."""
    program, system = occ.program, occ.system
    first = np.array([s["first_chip"] for s in program.meta["stages"]], np.int64)
    stage = np.searchsorted(first, np.arange(program.chips), "right") - 1
    node = np.arange(program.chips) // system.chips_per_node
    a, z = occ.cols["chip"][occ.message], occ.cols["peer"][occ.message]
    kind = np.where(stage[a] != stage[z], 2, np.where(node[a] == node[z], 0, 1))
    cls = occ.edges.cls[occ.edge]
    clock_mhz = program.clock_hz / 1e6
    shown = False
    for k, name in enumerate(KINDS):
        for c, where in [*enumerate(CLASSES), (None, "all")]:
            hops = (kind == k) & ((cls == c) if c is not None else True)
            if not hops.any() or (c is not None and not (hops & occ.load.crowded).any()):
                continue
            carried = occ.receives.later_by(occ.message_delays(hops), carried=True)
            table.add_row(model if not shown else "", " ".join(extra) if not shown else "", name, where,
                          f"{int(hops.sum()):,}", f"{int((hops & occ.load.crowded).sum()):,}",
                          f"{int(occ.delay[hops].max()):,}", f"{int(occ.delay[hops].sum()):,}", f"{carried:,}",
                          f"{carried / clock_mhz:.2f}")
            shown = True
    if shown:
        table.rows[-1].end_section = True


if __name__ == "__main__":
    main()
