"""`sramflow compare`: one model planned on several targets, side by side in a table, JSON and a picture.

Each row is a plan from the same first-principles models (`plan` on that target): how many
devices (chips, GPUs or wafers), the memory they hold against what they have, decode latency
beside its lower bound, tokens/s, time to first token, and what binds: the device count (set by
memory capacity, or by the budget) and the decode step (memory bandwidth, fabric or chip links,
compute, or fixed pipeline latency). A target the model cannot fit still gets a row saying so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from compiler.frontend.options import CompileOptions
from compiler.plan import Plan
from compiler.planner import make_plan
from ir.errors import ConfigError, DoesNotFitError
from ir.files import atomic_write
from targets import load_target

# What a plan's decode binding means for a reader comparing machines.
DECODE_BINDS = {"sram-bandwidth": "bandwidth-bound", "links": "link-bound", "compute": "compute-bound",
                "pipeline-latency": "latency-bound"}
DEVICES_BIND = {"sram-capacity": "capacity-bound", "chip-budget": "budget-bound"}


@dataclass(frozen=True, slots=True)
class Row:
    """One target's figures; `error` is set (and the figures zero) when the model does not fit."""

    target: str
    device: str  # "chip", "GPU" or "wafer"
    devices: int
    devices_lower_bound: int
    memory_used_bytes: int
    memory_capacity_bytes: int
    decode_latency_us: float
    decode_latency_bound_us: float
    tokens_per_s: float
    tokens_per_s_bound: float
    ttft_ms: float
    ttft_bound_ms: float
    devices_binds: str
    decode_binds: str
    error: str = ""


def parse_targets(text: str) -> list[str]:
    """`lpu,wse3,h100` into names, each checked now so a typo fails before any planning."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"--targets: expected a comma list like lpu,wse3,h100, got {text!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--targets: a target is named twice in {text!r}")
    for name in names:
        load_target(name)
    return names


def compare(model: str, targets: list[str], options: CompileOptions) -> list[Row]:
    """Plan `model` on every target, in the order given."""
    return [_row(model, t, options) for t in targets]


def _row(model: str, target: str, options: CompileOptions) -> Row:
    device = _device(target)
    try:
        plan = make_plan(model, target, options)
    except DoesNotFitError as err:
        return Row(target, device, err.chips_needed or 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                   "does not fit", "", str(err))
    used, capacity = _memory(plan)
    d, p = plan.decode, plan.prefill
    return Row(target, device, plan.chips, plan.chips_lower_bound, used, capacity, d["latency_us"],
               d["latency_bound_us"], d["tokens_per_s"], d["tokens_per_s_bound"], p["ttft_ms"], p["ttft_bound_ms"],
               DEVICES_BIND.get(plan.binding["chips"], plan.binding["chips"]),
               DECODE_BINDS.get(d["binding"], d["binding"]))


def _device(target: str) -> str:
    system = load_target(target)
    if system.is_mesh:
        return "wafer"
    return "GPU" if system.chip.memory_kind == "hbm" else "chip"


def _memory(plan: Plan) -> tuple[int, int]:
    """Bytes held over all devices (weights, caches, activations, program reserve) and bytes they have
    (on wafers, every core of the wafers taken, idle ones too)."""
    used = sum(s.memory.total * s.tp for s in plan.stages)
    if plan.on_wafers:
        return used, plan.chips * plan.extra["mesh"]["cores_per_wafer"] * plan.stages[0].memory.capacity
    return used, sum(s.memory.capacity * s.tp for s in plan.stages)


def to_json(model: str, options: CompileOptions, rows: list[Row]) -> str:
    import json

    return json.dumps({"model": model, "options": asdict(options), "rows": [asdict(r) for r in rows]},
                      indent=2) + "\n"


# ---------------------------------------------------------------- the table


def render_compare(model: str, options: CompileOptions, rows: list[Row], console: Console) -> None:
    o = options
    console.print(Text.assemble((model, "bold"), f"  {o.precision} weights, context {o.context}, "
                                f"prompt {o.prompt}, batch {o.batch}"))
    table = Table(header_style="bold", box=None)
    for col in ("target", "devices (bound)", "GB used/has", "µs/token", "bound µs", "tokens/s", "TTFT ms",
                "binds: devices, decode"):
        table.add_column(col, justify="left" if col in ("target", "binds: devices, decode") else "right")
    for r in rows:
        if r.error:
            needed = f"≥{r.devices:,} {r.device}s" if r.devices else "—"
            table.add_row(r.target, needed, "—", "—", "—", "—", "—", "does not fit")
            continue
        table.add_row(r.target, f"{r.devices:,} {r.device}{'s' if r.devices > 1 else ''} ({r.devices_lower_bound:,})",
                      _gigabytes(r.memory_used_bytes, r.memory_capacity_bytes),
                      f"{r.decode_latency_us:,.1f}", f"{r.decode_latency_bound_us:,.1f}", f"{r.tokens_per_s:,.0f}",
                      f"{r.ttft_ms:,.1f}", f"{_short(r.devices_binds)}, {_short(r.decode_binds)}")
    console.print(table)
    for r in rows:
        if r.error:
            console.print(f"{r.target}: {r.error}", style="dim", markup=False)


def _gigabytes(used: int, capacity: int) -> str:
    """Whole GB for real machines; two decimals for the tiny test targets so figures keep their digits."""
    digits = 0 if capacity >= 10e9 else 2
    return f"{used / 1e9:,.{digits}f}/{capacity / 1e9:,.{digits}f}"


def _short(binds: str) -> str:
    return binds.removesuffix("-bound")


# ---------------------------------------------------------------- the picture

COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#72b7b2")


def write_plot(model: str, options: CompileOptions, rows: list[Row], path: str | Path) -> None:
    """A PNG of four panels, one bar per target: tokens/s, decode latency beside its bound, devices
    with memory used, and time to first token. Written to a temporary name, then renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fitted = [r for r in rows if not r.error]
    if not fitted:
        raise ConfigError(f"--plot: {model} fits none of the targets, so there is nothing to draw")
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), dpi=110)
    names = [r.target for r in fitted]
    colours = [COLOURS[i % len(COLOURS)] for i in range(len(fitted))]
    _panel(axes[0][0], names, [r.tokens_per_s for r in fitted], [r.tokens_per_s_bound for r in fitted], colours,
           "decode tokens/s per user (higher is better)", "tokens/s", [r.decode_binds for r in fitted])
    _panel(axes[0][1], names, [r.decode_latency_us for r in fitted], [r.decode_latency_bound_us for r in fitted],
           colours, "decode latency per token (lower is better)", "µs", None)
    _panel(axes[1][0], names, [r.devices for r in fitted], None, colours, "devices needed", "devices",
           [f"{r.device}{'s' if r.devices > 1 else ''}, {r.memory_used_bytes / 1e9:,.0f} of "
            f"{r.memory_capacity_bytes / 1e9:,.0f} GB used\n"
            f"{r.devices_binds}" for r in fitted])
    _panel(axes[1][1], names, [r.ttft_ms for r in fitted], [r.ttft_bound_ms for r in fitted], colours,
           f"time to first token, {options.prompt}-token prompt (lower is better)", "ms", None)
    fig.suptitle(f"{model} ({options.precision} weights, context {options.context}, batch {options.batch}): "
                 "bars are predictions, black ticks their lower bounds", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    except OSError as err:
        raise ConfigError(f"--plot: cannot write {path}: {err.strerror or err}") from None
    finally:
        plt.close(fig)


def _panel(ax, names: list[str], values: list[float], bounds: list[float] | None, colours: list[str], title: str,
           unit: str, notes: list[str] | None) -> None:
    """Bars on a log scale (the machines differ by orders of magnitude), each labelled with its value."""
    x = range(len(names))
    ax.bar(x, values, color=colours, width=0.6)
    if bounds:
        ax.scatter(x, bounds, marker="_", s=900, linewidths=3, color="black", zorder=3, label="lower bound")
        ax.legend(loc="upper left", fontsize=9)
    ax.set_yscale("log")
    top = max(values + (bounds or []))
    ax.set_ylim(min(v for v in values + (bounds or []) if v > 0) / 3, top * 8)
    ax.set_xticks(list(x), names, fontsize=12)
    ax.set_title(title, fontsize=12)
    ax.set_ylabel(unit, fontsize=11)
    for i, v in enumerate(values):
        label = f"{v:,.0f}" if v >= 10 or float(v).is_integer() else f"{v:,.2f}"
        if notes:
            label += f"\n{notes[i]}"
        above = max(v, bounds[i]) if bounds else v  # clear of the bound's tick
        ax.annotate(label, (i, above), textcoords="offset points", xytext=(0, 6), ha="center", va="bottom",
                    fontsize=9)
    ax.grid(axis="y", which="major", alpha=0.3)
