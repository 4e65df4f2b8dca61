"""`sweep --best`: the Pareto front of per-user tokens/s (higher) against devices (fewer), per model, as a table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from compiler.frontend.options import CompileOptions
from compiler.sweep.pareto import Goal, Row, front, groups

DEVICES = Goal("plan.chips", lower=True)
TOKENS_PER_S = Goal("plan.decode.tokens_per_s", lower=False)
_OPTIONS = tuple(CompileOptions.__dataclass_fields__)


def best_rows(table: list[Row]) -> dict[str, list[Row]]:
    """Each model's front, fewest devices first."""
    return {model: front(rows, DEVICES, TOKENS_PER_S) for model, rows in groups(table, lambda r: r["model"]).items()}


def render_best(table: list[Row], console: Console) -> None:
    """One table per model: the front's points with the axes that vary in the sweep and their figures."""
    varying = [c for c in ("machine", *_target_fields(table), *_OPTIONS) if len({r.get(c) for r in table}) > 1]
    for model, rows in best_rows(table).items():
        out = Table(title=f"{model}: Pareto front of tokens/s per user against devices", title_justify="left")
        for name in ("point", *varying):
            out.add_column(name, justify="right" if name == "point" else "left")
        for name in ("devices", "tokens/s", "latency µs (bound)", "TTFT ms", "binds"):
            out.add_column(name, justify="right")
        for row in rows:
            out.add_row(str(row["point"]), *(str(row.get(c)) for c in varying), *_figures(row))
        if not rows:
            out.add_row(*["-"] * (len(varying) + 6))
        console.print(out)


def _target_fields(table: list[Row]) -> list[str]:
    return [c for c in table[0] if c.startswith("target.")] if table else []


def _figures(row: Row) -> tuple[str, ...]:
    return (f"{row['plan.chips']:,}", f"{row['plan.decode.tokens_per_s']:,.0f}",
            f"{row['plan.decode.latency_us']:,.1f} ({row['plan.decode.latency_bound_us']:,.1f})",
            f"{row['plan.prefill.ttft_ms']:,.2f}", str(row.get("plan.decode.binding")))
