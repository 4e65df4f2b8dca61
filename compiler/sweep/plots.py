"""Pareto pictures of a sweep: per model, one PNG per picture, one colour per machine, the front highlighted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.sweep.pareto import Goal, Row, front, groups
from ir.errors import ConfigError
from ir.files import atomic_write

COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#72b7b2", "#eeca3b", "#9d755d", "#ff9da6",
           "#bab0ac")
# One marker per weight precision, so a colour (the machine) and a shape (the precision) read apart.
MARKERS = {"fp16": "o", "fp8": "^", "int8": "s", "int4": "D"}
PER_DEVICE = "tokens_per_s_per_device"  # derived: throughput over devices


@dataclass(frozen=True, slots=True)
class Picture:
    """One picture: its file suffix, title, and the two goals (x, y) whose front it highlights."""

    suffix: str
    title: str
    x: Goal
    y: Goal
    x_label: str
    y_label: str


PICTURES = (
    Picture("tokens-vs-devices", "per-user decode tokens/s vs devices", Goal("plan.chips", lower=True),
            Goal("plan.decode.tokens_per_s", lower=False), "devices (chips; wafers on wse3, GPUs on h100)",
            "decode tokens/s per user"),
    Picture("tokens-per-device-vs-batch", "decode throughput per device vs batch", Goal("batch", lower=True),
            Goal(PER_DEVICE, lower=False), "batch (sequences decoded together)",
            "decode tokens/s per device (all sequences)"),
    Picture("ttft-vs-context", "time to first token vs context", Goal("context", lower=False),
            Goal("plan.prefill.ttft_ms", lower=True), "context (tokens in the KV cache)",
            "time to first token (ms)"),
)


def write_plots(table: list[Row], out: Path) -> list[Path]:
    """Every picture for every model of the table, into `out` (created); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--plot {out}: cannot create the directory: {err.strerror or err}") from None
    colours = {m: COLOURS[i % len(COLOURS)] for i, m in enumerate(groups(table, lambda r: r["machine"]))}
    written = []
    for model, model_rows in groups(_with_derived(table), lambda r: r["model"]).items():
        for picture in PICTURES:
            path = out / f"{file_stem(model)}-{picture.suffix}.png"
            _draw(model, model_rows, picture, colours, path)
            written.append(path)
    return written


def file_stem(label: str) -> str:
    """A model label ('llama-3.1-8b', 'models/mine.json') as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label.removesuffix(".json")).strip("_")


def _with_derived(table: list[Row]) -> list[Row]:
    out = []
    for row in table:
        throughput, devices = row.get("plan.decode.throughput_tokens_per_s"), row.get("plan.chips")
        out.append(row | {PER_DEVICE: throughput / devices if throughput is not None and devices else None})
    return out


def _draw(model: str, rows: list[Row], picture: Picture, colours: dict[str, str], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11.5, 6.5), dpi=110)
    try:
        drawn = [r for r in rows if r.get(picture.x.column) is not None and r.get(picture.y.column) is not None]
        for (machine, precision), some in groups(drawn, lambda r: (r["machine"], r["precision"])).items():
            ax.scatter([r[picture.x.column] for r in some], [r[picture.y.column] for r in some], s=36,
                       color=colours[machine], marker=MARKERS.get(precision, "o"), alpha=0.75, zorder=2)
        _front(ax, front(drawn, picture.x, picture.y), picture, colours)
        _axes(ax, drawn, picture, model, len(rows) - len(drawn))
        _legend(ax, drawn, colours)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    except OSError as err:
        raise ConfigError(f"--plot: cannot write {path}: {err.strerror or err}") from None
    finally:
        plt.close(fig)


def _front(ax: Any, best: list[Row], picture: Picture, colours: dict[str, str]) -> None:
    """The front as a step line (what is reachable at each x) and each front point ringed and labelled."""
    if not best:
        return
    best = sorted(best, key=lambda r: r[picture.x.column])
    xs, ys = [r[picture.x.column] for r in best], [r[picture.y.column] for r in best]
    # Lower x better: a front point's y holds from its x rightwards; higher x better: leftwards.
    ax.plot(xs, ys, drawstyle="steps-post" if picture.x.lower else "steps-pre", color="black", linewidth=1.6,
            zorder=3, label="Pareto front")
    for row in best:
        ax.scatter([row[picture.x.column]], [row[picture.y.column]], s=120, color=colours[row["machine"]],
                   marker=MARKERS.get(row["precision"], "o"), edgecolors="black", linewidths=1.4, zorder=4)
    for i, row in enumerate(best):  # labels alternate below-right and above-left so neighbours do not collide
        offset, align = ((8, -13), "left") if i % 2 == 0 else ((-8, 7), "right")
        ax.annotate(_point_label(row, picture), (row[picture.x.column], row[picture.y.column]),
                    textcoords="offset points", xytext=offset, ha=align, fontsize=8, zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "linewidth": 0})


def _point_label(row: Row, picture: Picture) -> str:
    """What a front point is (its marker shows the precision): its context and batch, unless the x axis shows them."""
    parts = [f"ctx {_tokens(row['context'])}"] if picture.x.column != "context" else []
    return ", ".join(parts + ([f"batch {row['batch']}"] if picture.x.column != "batch" else []))


def _tokens(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _axes(ax: Any, drawn: list[Row], picture: Picture, model: str, missing: int) -> None:
    for axis, goal, setter in ((ax.xaxis, picture.x, ax.set_xscale), (ax.yaxis, picture.y, ax.set_yscale)):
        values = [r[goal.column] for r in drawn if r[goal.column] > 0]
        if values and max(values) / min(values) >= 10:  # log where values span a decade or more
            setter("log", base=2 if goal.column in ("context", "batch") else 10)
        _integer_ticks(axis, goal.column, values)
    better = "; ".join(_direction(g) for g in (picture.x, picture.y))
    note = f"; {missing} point{'s' if missing != 1 else ''} that did not plan not shown" if missing else ""
    ax.set_title(f"{model}: {picture.title}\n({better}{note})", fontsize=12)
    ax.set_xlabel(picture.x_label, fontsize=11)
    ax.set_ylabel(picture.y_label, fontsize=11)
    ax.grid(which="major", alpha=0.3)


def _legend(ax: Any, drawn: list[Row], colours: dict[str, str]) -> None:
    """Beside the axes, never over a point: the machines' colours, the precisions' markers, the front."""
    from matplotlib.lines import Line2D

    machines = groups(drawn, lambda r: r["machine"])
    precisions = groups(drawn, lambda r: r["precision"])
    handles = [Line2D([], [], linestyle="", marker="o", markersize=8, color=colours[m], label=m) for m in machines]
    handles += [Line2D([], [], linestyle="", marker=MARKERS.get(p, "o"), markersize=7, markerfacecolor="white",
                       markeredgecolor="black", label=f"{p} weights") for p in precisions]
    handles.append(Line2D([], [], color="black", linewidth=1.6, label="Pareto front"))
    ax.legend(handles=handles, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _integer_ticks(axis: Any, column: str, values: list[float]) -> None:
    """Context and batch are powers of two in practice: tick exactly the values swept."""
    if column in ("context", "batch") and values:
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        axis.set_major_locator(FixedLocator(sorted(set(values))))
        axis.set_minor_locator(NullLocator())
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: _tokens(int(v)) if column == "context" else f"{v:g}"))


def _direction(goal: Goal) -> str:
    names: dict[str, str] = {"plan.chips": "devices", "batch": "batch", "context": "context",
                             "plan.decode.tokens_per_s": "tokens/s", PER_DEVICE: "tokens/s per device",
                             "plan.prefill.ttft_ms": "TTFT"}
    return f"{names.get(goal.column, goal.column)}: {'lower' if goal.lower else 'higher'} is better"

