"""Pictures of a Program over time: a per-unit Gantt chart (PNG) and a Chrome trace-event file.

Both show one row per functional-unit queue of the chosen chips; the trace opens in
Perfetto (ui.perfetto.dev) or chrome://tracing with a process per chip and a thread
per unit. Trace times are whole nanoseconds at exact cycle boundaries (written in the
format's microseconds with three decimals), so a slice ends where the next one on its
queue may begin and never overlaps it. Both files are written to a temporary name and
renamed into place.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from ir.files import atomic_write
from ir.isa import Fn, Op, UnitKind
from ir.program import Program

# Colour per opcode class, so memory streaming, matrix work, vector work and links stand apart.
COLOURS = {
    Op.READ: "#4c78a8", Op.WRITE: "#72b7b2", Op.GATHER: "#9ecae9",
    Op.MXM: "#f58518",
    Op.VOP: "#54a24b",
    Op.SHIFT: "#b279a2", Op.TRANSPOSE: "#b279a2", Op.PERMUTE: "#b279a2",
    Op.SEND: "#e45756", Op.RECV: "#ff9d98",
    Op.SYNC: "#bab0ac",
}


def queue_label(kind: int, unit: int) -> str:
    return f"{UnitKind(kind).name.lower()}.{unit}"


def write_gantt(program: Program, chips: list[int], window: tuple[int, int] | None, path: str | Path) -> None:
    """A PNG with one lane per unit queue of `chips`, bars coloured by opcode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    part = program.window(chips, window)
    lanes = list(part.queues())
    lo, hi = window or (0, max(program.makespan, 1))
    fig, ax = plt.subplots(figsize=(14, max(3.0, 0.22 * len(lanes) + 1.5)), dpi=110)
    c = part.cols
    for y, (*_, rows) in enumerate(lanes):
        starts, widths, ops = c["issue"][rows], c["cycles"][rows], c["op"][rows]
        for op in np.unique(ops):
            sel = ops == op
            spans = list(zip((starts[sel] / 1e3).tolist(), (np.maximum(widths[sel], 1) / 1e3).tolist(), strict=True))
            ax.broken_barh(spans, (y - 0.4, 0.8), facecolors=COLOURS.get(Op(op), "black"), linewidth=0)
    ax.set_yticks(range(len(lanes)), [f"chip {ch} {queue_label(k, u)}" for ch, k, u, _ in lanes], fontsize=7)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_xlim(lo / 1e3, hi / 1e3)
    ax.set_xlabel(f"kilocycles ({program.clock_hz / 1e6:g} MHz: 1 kcycle = {1e9 / program.clock_hz:g} µs)")
    ax.set_title(f"{program.phase} on {program.target}: chips {_chip_range(chips)}, "
                 f"cycles {lo:,}–{hi:,} of {program.makespan:,}")
    used = sorted({Op(o) for o in np.unique(c["op"])})
    ax.legend(handles=[Patch(color=COLOURS[o], label=o.name.lower()) for o in used],
              loc="upper right", fontsize=7, ncol=len(used))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    plt.close(fig)


def write_trace(program: Program, chips: list[int] | None, window: tuple[int, int] | None,
                path: str | Path) -> None:
    """Chrome trace-event JSON: complete ("X") events at whole nanoseconds, a process per chip."""
    part = program.window(chips, window)
    clock = Fraction(program.clock_hz)  # exact, so cycle c starts at floor(c * 1e9 / clock) ns
    ns = (10**9 * clock.denominator, clock.numerator)
    c = {n: a.tolist() for n, a in part.cols.items()}
    events: list[dict] = []
    named = None
    for chip, kind, unit, rows in part.queues():
        tid = kind * 256 + unit
        if chip != named:
            events.append({"ph": "M", "name": "process_name", "pid": chip, "tid": 0, "args": {"name": f"chip {chip}"}})
            named = chip
        events.append({"ph": "M", "name": "thread_name", "pid": chip, "tid": tid,
                       "args": {"name": queue_label(kind, unit)}})
        events.extend(_event(c, i, chip, tid, ns) for i in range(rows.start, rows.stop))
    doc = {"traceEvents": events, "displayTimeUnit": "ns",
           "otherData": {"phase": program.phase, "target": program.target, "clock_hz": program.clock_hz}}
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, separators=(",", ":"))))


def cycle_ns(cycle: int, ns: tuple[int, int]) -> int:
    """The whole nanosecond cycle `cycle` starts at; `ns` is (1e9 x clock denominator, clock numerator)."""
    return cycle * ns[0] // ns[1]


def _event(c: dict[str, list[int]], i: int, chip: int, tid: int, ns: tuple[int, int]) -> dict:
    op = Op(c["op"][i])
    name = op.name.lower() + (f".{Fn(c['fn'][i]).name.lower()}" if c["fn"][i] else "")
    args = {k: c[k][i] for k in ("src", "src_bytes", "dst", "dst_bytes", "s_a", "s_b", "s_out", "peer", "tag")
            if c[k][i] not in (-1, 0)}
    args["issue"] = c["issue"][i]
    start, end = cycle_ns(c["issue"][i], ns), cycle_ns(c["issue"][i] + c["cycles"][i], ns)
    # n / 1000 is the float nearest the decimal with three places, and repr() writes exactly that decimal.
    return {"ph": "X", "name": name, "cat": UnitKind(c["kind"][i]).name.lower(), "pid": chip, "tid": tid,
            "ts": start / 1000, "dur": (end - start) / 1000, "args": args}


def _chip_range(chips: list[int]) -> str:
    return f"{chips[0]}–{chips[-1]}" if chips == list(range(chips[0], chips[-1] + 1)) else ",".join(map(str, chips))
