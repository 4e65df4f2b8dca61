"""Hazards: one broken rule located by chip, unit queue, index and cycle; and how rules report them.

Rules report rows of whatever set of rows they check (a block's, a universe's messages, the rows beside
a barrier); `Rows` maps each back to the instance and block row it stands for, and how many times it
occurs (a block's hazard happens in each of its instances), and `Hazards` locates, caps and counts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ir.isa import UnitKind
from ir.program import Program


@dataclass(frozen=True, slots=True, order=True)
class Hazard:
    """One broken rule, located: chip, unit queue (`mem.0`), index in that queue, cycle."""

    chip: int
    unit: str
    index: int
    cycle: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"chip {self.chip} {self.unit}[{self.index}] @{self.cycle}: {self.kind}: {self.detail}"

    def to_dict(self) -> dict:
        return {"chip": self.chip, "unit": self.unit, "index": self.index, "cycle": self.cycle,
                "kind": self.kind, "detail": self.detail}


class Hazards:
    """Collects hazards located by (instance, block row), capped per kind: the first `limit` of each
    kind are listed, the rest counted. A hazard inside a block happens in every instance of it."""

    def __init__(self, program: Program, limit: int):
        self.program, self.limit = program, limit
        self.items: list[Hazard] = []
        self.counts: dict[str, int] = {}
        self.listed: dict[str, int] = {}
        self._queues: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def add_at(self, inst: int, row: int, kind: str, detail: str, times: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + int(times)
        if self.listed.get(kind, 0) >= self.limit:
            return
        self.listed[kind] = self.listed.get(kind, 0) + 1
        chip, unit, index, cycle = self._place(inst, row)
        self.items.append(Hazard(chip, unit, index, cycle, kind, detail))

    def locate(self, inst: int, row: int) -> str:
        """Where block row `row` of instance `inst` runs, as a hazard names it: `chip 3 mem.1[17] @480`."""
        chip, unit, index, cycle = self._place(inst, row)
        return f"chip {chip} {unit}[{index}] @{cycle}"

    def _place(self, inst: int, row: int) -> tuple[int, str, int, int]:
        p, b = self.program, self.program.body
        chip = int(p.inst["chip"][inst]) + int(b["chip"][row])
        unit = f"{UnitKind(b['kind'][row]).name.lower()}.{b['unit'][row]}"
        cycle = int(p.inst["issue"][inst]) + int(b["issue"][row])
        return chip, unit, self._queue_index(chip, inst, row), cycle

    def count(self, kind: str, times: int) -> None:
        """Hazards of `kind` found but not located (past the limit)."""
        self.counts[kind] = self.counts.get(kind, 0) + int(times)

    def per_block(self) -> Rows:
        """Block rows located at the first instance of their block, counted once per instance."""
        p = self.program
        block = np.repeat(np.arange(p.blocks), p.block_rows)
        blocks, first = np.unique(p.inst["block"], return_index=True)
        at = np.zeros(p.blocks, np.int64)
        at[blocks] = first
        times = np.bincount(p.inst["block"], minlength=p.blocks)
        return Rows(self, at[block], np.arange(len(block)), times[block])

    def _queue_index(self, chip: int, inst: int, row: int) -> int:
        """The row's place in its unit's queue on its chip (unrolls that chip's unit columns once)."""
        if chip not in self._queues:
            p = self.program
            mine = np.flatnonzero(p.inst["chip"] == chip)
            c = p.expand(mine, names=("chip", "kind", "unit", "issue"), origin=True)
            self._queues[chip] = (c["kind"].astype(np.int64) << 8 | c["unit"], c["_inst"], c["_row"])
        lane, insts, rows = self._queues[chip]
        at = np.flatnonzero((insts == inst) & (rows == row))
        if not len(at):
            return -1
        k = int(at[0])
        return k - int(np.searchsorted(lane, lane[k], "left"))

    def sorted(self) -> list[Hazard]:
        out = sorted(self.items)
        for kind, n in sorted(self.counts.items()):
            if n > self.listed.get(kind, 0):
                out.append(Hazard(-1, "-", -1, -1, kind, f"{n - self.listed.get(kind, 0)} more not listed"))
        return out


class Rows:
    """The `found` that the row-level rules report to: row k of some set of rows is block row
    `row[k]` of instance `inst[k]`, and stands for `times[k]` occurrences."""

    def __init__(self, hazards: Hazards, inst: np.ndarray, row: np.ndarray, times: np.ndarray | int = 1):
        self.hazards, self.inst, self.row = hazards, inst, row
        self.times = np.broadcast_to(np.asarray(times, np.int64), np.shape(row))

    def add(self, k: int, kind: str, detail: str) -> None:
        self.hazards.add_at(int(self.inst[k]), int(self.row[k]), kind, detail, int(self.times[k]))

    def where(self, mask: np.ndarray, kind: str, detail) -> None:
        hits = np.flatnonzero(mask)
        shown = hits[: self.hazards.limit]
        for k in shown.tolist():
            self.add(k, kind, detail(k))
        self.hazards.count(kind, int(self.times[hits[len(shown):]].sum()))
