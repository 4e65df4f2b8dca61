"""The batch-curve picture: aggregate against per-user tokens/s, one curve per target, the turn marked."""

from __future__ import annotations

from pathlib import Path

from compiler.frontend.options import CompileOptions
from compiler.serving.curves import BatchPoint, Curve
from ir.errors import ConfigError
from ir.files import atomic_write

COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#72b7b2")


def check_png(path: str) -> None:
    """Refuse a --plot path that is not a .png in a writable folder, before any planning."""
    from ir.files import check_output_file

    check_output_file(path, "--plot", ".png")


def write_curve_plot(model: str, options: CompileOptions, curves: list[Curve], path: str | Path) -> None:
    """Two log-log panels sharing the x axis (tokens/s per user): aggregate tokens/s of one replica,
    and that per device. Each point is labelled with its batch; the plan where the step turns
    compute-bound is a star. Written to a temporary name, then renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(p.fits for c in curves for p in c.points):
        raise ConfigError(f"--plot: {model} fits no batch on {', '.join(c.target for c in curves)}; nothing to draw")
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5), dpi=110)
    for i, curve in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        for ax, per_device in zip(axes, (False, True), strict=True):
            _draw(ax, curve, colour, per_device)
    _finish(axes[0], "aggregate decode tokens/s (one replica, all sequences)")
    _finish(axes[1], "aggregate decode tokens/s per device")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=10, frameon=False)
    fig.suptitle(f"{model}: throughput against interactivity as the batch grows ({options.precision} weights, "
                 f"{options.kv_precision} KV cache, context {options.context:,}); ★ where the step turns "
                 "compute-bound", fontsize=12)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(curves) + 2) // 3), 1, 0.95))
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    except OSError as err:
        raise ConfigError(f"--plot: cannot write {path}: {err.strerror or err}") from None
    finally:
        plt.close(fig)


def _y(p: BatchPoint, per_device: bool) -> float:
    return p.tokens_per_s_per_device if per_device else p.throughput_tokens_per_s


def _draw(ax, curve: Curve, colour: str, per_device: bool) -> None:
    turn = curve.crossover.point if curve.crossover.batch is not None else None
    listed = {p.batch: p for p in curve.points if p.fits}
    if turn is not None:
        listed.setdefault(turn.batch, turn)  # the turn sits on the curve even when not asked for
    points = [listed[b] for b in sorted(listed)]
    misfits = [f"{p.batch:,}" for p in curve.points if not p.fits]
    missing = f"; batch {', '.join(misfits)} do{'es' if len(misfits) == 1 else ''} not fit" if misfits else ""
    label = f"{curve.target} ({_turn_text(curve)}{missing})"
    ax.plot([p.tokens_per_s for p in points], [_y(p, per_device) for p in points], "-o", color=colour, label=label,
            linewidth=2, markersize=6)
    for p in points:
        if p is turn:
            continue  # labelled as the turn below
        devices = f", {p.devices:,} {curve.device}{'s' if p.devices > 1 else ''}" if not per_device else ""
        ax.annotate(f"B={p.batch:,}{devices}", (p.tokens_per_s, _y(p, per_device)), textcoords="offset points",
                    xytext=(6, 6), fontsize=8, color=colour)
    if turn is not None:
        ax.scatter([turn.tokens_per_s], [_y(turn, per_device)], marker="*", s=320, color=colour, edgecolors="black",
                   linewidths=1, zorder=4)
        ax.annotate(f"B={turn.batch:,}: compute-bound", (turn.tokens_per_s, _y(turn, per_device)),
                    textcoords="offset points", xytext=(0, -22), ha="center", fontsize=8, color=colour,
                    fontweight="bold")


def _turn_text(curve: Curve) -> str:
    c = curve.crossover
    if c.batch is not None:
        return f"compute-bound from batch {c.batch:,}"
    return f"streaming-bound up to batch {c.searched_to:,}" if c.point else "batch 1 does not fit"


def _finish(ax, y_label: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # plain figures at 1, 2, 5 x 10^k: these are read as numbers
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(_number))
        axis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    ax.set_xlabel("decode tokens/s per user (interactivity; batch grows to the left)", fontsize=11)
    ax.set_ylabel(y_label, fontsize=11)
    ax.grid(which="major", alpha=0.35)
    ax.grid(which="minor", alpha=0.1)
    ax.margins(0.15)


def _number(x: float, _position: int) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:,.2g}"
