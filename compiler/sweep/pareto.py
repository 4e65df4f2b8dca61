"""Pareto fronts of a results table: the rows no other row beats on both of two figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Goal:
    """A figure to optimise: a column and whether smaller (`lower=True`) or larger is better."""

    column: str
    lower: bool

    def value(self, row: Row) -> float:
        """The column's value, signed so that smaller is always better."""
        return row[self.column] if self.lower else -row[self.column]


def front(table: list[Row], x: Goal, y: Goal) -> list[Row]:
    """The rows that no other row dominates (at least as good on both goals, better on one), best x
    first; rows equal on both figures are all kept, by `point`. Rows missing either figure (a point
    that failed) take no part."""
    usable = [r for r in table if r.get(x.column) is not None and r.get(y.column) is not None]
    usable.sort(key=lambda r: (x.value(r), y.value(r), r["point"]))
    kept: list[Row] = []
    for row in usable:
        figures = (x.value(row), y.value(row))
        # Better than every row with an x at least as good, or a tie with the row kept last.
        if not kept or figures[1] < y.value(kept[-1]) or figures == (x.value(kept[-1]), y.value(kept[-1])):
            kept.append(row)
    return kept


def groups(table: list[Row], key: Callable[[Row], Any]) -> dict[Any, list[Row]]:
    """Rows by `key`, groups in order of first appearance, rows in table order."""
    out: dict[Any, list[Row]] = {}
    for row in table:
        out.setdefault(key(row), []).append(row)
    return out
