"""Batch curves for people: one row per batch, then the crossover beside the rule of thumb and why."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from compiler.frontend.options import CompileOptions
from compiler.serving.curves import Curve


def render_curves(model: str, options: CompileOptions, curves: list[Curve], console: Console) -> None:
    """`plan --batch A,B,...` (one curve) and `compare --batch A,B,...` (one per target)."""
    o = options
    console.print(Text.assemble((model, "bold"), f"  {o.precision} weights, {o.kv_precision} KV cache, context "
                                f"{o.context}, prompt {o.prompt}"))
    table = Table(header_style="bold", box=None)
    columns = ("target", "batch", "devices", "tokens/s per user", "aggregate tokens/s", "per device", "µs/token",
               "bound µs", "compute µs", "streaming µs", "binds")
    for col in columns:
        table.add_column(col, justify="left" if col in ("target", "binds") else "right")
    for curve in curves:
        for p in curve.points:
            if not p.fits:
                table.add_row(curve.target, f"{p.batch:,}", "—", "—", "—", "—", "—", "—", "—", "—", "does not fit")
                continue
            table.add_row(curve.target, f"{p.batch:,}", f"{p.devices:,} {curve.device}{'s' if p.devices > 1 else ''}",
                          _tokens(p.tokens_per_s), _tokens(p.throughput_tokens_per_s),
                          _tokens(p.tokens_per_s_per_device), f"{p.latency_us:,.1f}", f"{p.latency_bound_us:,.1f}",
                          f"{p.compute_us:,.1f}", f"{p.streaming_us:,.1f}",
                          p.binding + (" (compute-bound)" if p.compute_bound else ""))
    console.print(table)
    for curve in curves:
        for line in crossover_lines(curve):
            console.print(line, markup=False, highlight=False)
        for p in curve.points:
            if not p.fits:
                console.print(f"{curve.target} at batch {p.batch}: {p.error}", style="dim", markup=False)


def _tokens(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:,.2f}"


def crossover_lines(curve: Curve) -> list[str]:
    """Where the step turns compute-bound (the planner's search), the rule of thumb, and why they differ."""
    c, r = curve.crossover, curve.rule
    if c.point is None:
        return [f"{curve.target}: batch 1 does not fit, so there is no curve to search"]
    if c.batch is not None:
        head = (f"{curve.target}: compute-bound from batch {c.batch:,} (the planner's smallest batch whose compute "
                f"exceeds its streaming, {_plans(c.plans)})")
    else:
        limit = "the largest batch that fits" if c.searched_to < 4096 else "the search limit"
        head = (f"{curve.target}: not compute-bound up to batch {c.searched_to:,} ({limit}; compute is "
                f"{c.point.compute_us / c.point.streaming_us:.0%} of streaming there, {_plans(c.plans)})")
    if r is None:
        return [head]
    return [head, "  " + _rule_line(r), "  " + _why_line(curve, r)]


def _rule_line(r: dict) -> str:
    share = "" if r["params"] == r["active_params"] else \
        f" ({r['active_params'] / 1e9:,.1f}B of {r['params'] / 1e9:,.1f}B parameters active)"
    return f"rule of thumb 300 x total/active parameters: batch {r['rule_batch']:,.0f}{share}"


def _why_line(curve: Curve, r: dict) -> str:
    """The machine's ops per byte at the weight format, then the cache and the rest."""
    parts = [f"{curve.target} does {r['ops_per_weight_byte']:,.1f} ops per byte of its weight path at the weight "
             f"format ({r['peak_ops_per_s'] / 1e12:,.0f} TOPS over {r['weight_bytes_per_s'] / 1e12:,.2f} TB/s, "
             f"{r['bytes_per_weight']:g} B a weight), so weights alone turn compute-bound at batch "
             f"{r['weights_only_batch']:,.1f}"]
    if r["static_expert_passes"]:
        parts.append("every expert's weights stream each step whatever the routing, and above batch 1 a row "
                     "multiplies only its k routed experts (a grouped matmul), so all experts stream and the active "
                     "ones compute")
    kv, arith = r["kv_us_per_sequence"], r["compute_us_per_sequence"]
    if r["kv_bytes_per_sequence"]:
        verdict = ("longer than its arithmetic, so the cache alone keeps it streaming-bound" if kv >= arith
                   else "small beside its arithmetic" if curve.crossover.batch == 1 else "which pushes the turn later")
        parts.append(f"each sequence adds {_size(r['kv_bytes_per_sequence'])} of KV cache, {_us(kv)} µs a "
                     f"step on one {curve.device}'s path against {_us(arith)} µs of arithmetic, {verdict}")
    if r["tiles_us"] > 0:
        d = r["matrix_dim"]
        parts.append(f"whole {d}x{d} tiles add {r['tiles_us']:,.1f} µs to the step at batch {r['batch']:,}")
    return "; ".join(parts)


def _plans(n: int) -> str:
    return f"{n} plan{'s' if n != 1 else ''}"


def _us(x: float) -> str:
    """Microseconds to three significant digits (a wafer's per-sequence figures are hundredths)."""
    return f"{x:,.1f}" if x >= 100 else f"{x:.3g}"


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.0f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:,.1f} KB"
