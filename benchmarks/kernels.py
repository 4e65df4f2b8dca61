"""Matvec chains compiled on one lpu chip: scheduled cycles beside the timing rules' hand arithmetic.

Each kernel is x[batch, d0] through matmuls d0 x d1, d1 x d2, ... (graph IR text, `sramflow compile
FILE.ir --chips 1`). The hand arithmetic per matmul is the rules of targets/timing.py summed the way a
person would: the MXM instructions' max(install of their tiles, passes), plus the READ of the first
weight panel, or its first cycle where the first MXM is install-bound (it takes the panel off the stream as
MEM puts it out: targets.timing.paced_start; later panels stream under the MXM), the dequantising VOP of
int8 panels, the drain of the last result, and the reads and writes of the activations; plus the start sync.
"extra" is what the scheduler adds beyond it (MEM queue order: a scale read or write landing between weight
panels).
Prints a table; it asserts nothing.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.build import compile_model  # noqa: E402
from compiler.frontend.options import CompileOptions  # noqa: E402
from ir.isa import Fmt, Fn  # noqa: E402
from ir.program_io import load_program  # noqa: E402
from targets import load_target  # noqa: E402
from targets.timing import Timing, paced_start  # noqa: E402

SHAPES = ([320, 320], [640, 640], [1000, 1000], [4096, 4096], [4096, 4096, 4096, 4096], [8192, 8192])
BATCHES = (1, 8, 32, 64)
FORMATS = (("i8", Fmt.I8), ("f16", Fmt.F16))


def chain_ir(rows: int, dims: list[int], dtype: str) -> str:
    """x[rows, dims[0]] through matmuls dims[i] x dims[i+1] (int8 weights carry per-column scales)."""
    lines = ["graph chain {", f"  input %x: f16[{rows},{dims[0]}]"]
    for i, (k, n) in enumerate(zip(dims, dims[1:], strict=False)):
        lines.append(f"  param %w{i}: {dtype}[{k},{n}]")
        if dtype == "i8":
            lines.append(f"  param %w{i}.scale: f16[{n}]")
    lines.append("  scope chain {")
    value = "%x"
    for i, n in enumerate(dims[1:]):
        scale = f", %w{i}.scale" if dtype == "i8" else ""
        lines.append(f"    %y{i}: f16[{rows},{n}] = matmul {value}, %w{i}{scale}")
        value = f"%y{i}"
    lines += ["  }", f"  output {value}", "}"]
    return "\n".join(lines) + "\n"


def hand_cycles(t: Timing, rows: int, dims: list[int], fmt: Fmt) -> tuple[int, int]:
    """(MXM cycles, whole kernel) by the rules, matmul after matmul."""
    panel, mxm_total, total = t.panel, 0, t.sync_cycles
    for k, n in zip(dims, dims[1:], strict=False):
        mxms = [t.mxm(rows, min(panel, k - k0), min(panel, n - n0), fmt)
                for n0 in range(0, n, panel) for k0 in range(0, k, panel)]
        kb, nb = min(panel, k), min(panel, n)
        # the first MXM waits for its panel's READ, or only its first cycle when install-bound (paced_start)
        first = int(paced_start(0, t.mem(kb * nb * fmt.bits // 8), mxms[0], t.install(kb, nb, fmt)))
        scale = t.vop(Fn.SCALE, rows * min(panel, n), min(panel, n) * 2) if fmt is Fmt.I8 else 0
        mxm_total += sum(mxms)
        total += t.mem(rows * k * 2) + first + sum(mxms) + scale + t.drain_cycles + t.mem(rows * n * 2)
    return mxm_total, total


def main_table() -> None:
    timing = Timing.of(load_target("lpu"))
    table = Table(title="matvec chains on one lpu chip: scheduled cycles vs the rules by hand")
    for col in ("shape", "format", "batch", "tiles", "MXM cycles", "hand total", "scheduled", "extra",
                "weights B/cycle"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for dims in SHAPES:
            for dtype, fmt in FORMATS:
                for rows in BATCHES:
                    source = Path(tmp) / "k.ir"
                    source.write_text(chain_ir(rows, dims, dtype))
                    out = Path(tmp) / f"b{len(table.rows)}"
                    compile_model(str(source), "lpu", CompileOptions(chips=1), out)
                    scheduled = load_program(out / "decode.prog").makespan
                    mxm, hand = hand_cycles(timing, rows, dims, fmt)
                    tiles = sum(timing.tiles(k, n) for k, n in zip(dims, dims[1:], strict=False))
                    weight_bytes = sum(k * n for k, n in zip(dims, dims[1:], strict=False)) * fmt.bits // 8
                    table.add_row("x".join(map(str, dims)), dtype, str(rows), f"{tiles:,}", f"{mxm:,}", f"{hand:,}",
                                  f"{scheduled:,}", f"{scheduled - hand:+,}",
                                  f"{weight_bytes / max(1, scheduled - timing.sync_cycles):,.0f}")
    Console(width=170).print(table)
    print(f"install path {timing.install_bytes_per_cycle:,.0f} B/cycle, MEM port {timing.mem_bytes_per_cycle:,.0f} "
          f"B/cycle, tile {timing.dim} x {timing.dim}; {math.floor(timing.macs_per_cycle['int8']):,} int8 MACs/cycle")


if __name__ == "__main__":
    main_table()
