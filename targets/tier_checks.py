"""Timing-mode checks of the host link's transfers (FETCH, STORE) that no other rule covers.

  tier-range   a transfer to a tier the target does not declare, or outside the chip's share of it
               (a node tier's capacity is shared evenly by the node's chips)
  tier-raw     an SRAM read of a fetched block that starts before the FETCH has written it
  tier-war     a FETCH that overwrites SRAM another instruction is still reading

A FETCH's SRAM range is paired with the reads that overlap it: those issued after the fetch
starts (and before the next fetch into the same bytes) read what it brought, so they wait for
its end; a read under way when the fetch starts must have ended by then. The functional mode
checks the bytes themselves.
"""

from __future__ import annotations

import numpy as np

from ir.isa import TIER_UNITS, Op
from targets.spec import SystemSpec


def check_tiers(program, system: SystemSpec, start: np.ndarray, end: np.ndarray, found) -> None:
    c = program.cols
    host = np.flatnonzero(np.isin(c["op"], (Op.FETCH, Op.STORE)))
    if not len(host):
        return
    _ranges(program, system, host, found)
    for i in np.flatnonzero(c["op"] == Op.FETCH).tolist():
        _fetched(program, i, start, end, found)


def _ranges(program, system: SystemSpec, rows: np.ndarray, found) -> None:
    c = program.cols
    for i in rows.tolist():
        unit = int(c["unit"][i])
        name = TIER_UNITS[unit] if 0 <= unit < len(TIER_UNITS) else f"unit {unit}"
        tier = system.tiers.get(name)
        if tier is None:
            found.add(i, "tier-range", f"{system.name} declares no {name} tier")
            continue
        share = tier.capacity_bytes // (system.chips_per_node if tier.per == "node" else 1)
        addr = int(c["src"][i] if c["op"][i] == Op.FETCH else c["dst"][i])
        top = addr + int(c["src_bytes"][i]) if c["op"][i] == Op.FETCH else _store_top(c, i)
        if addr < 0 or top > share:
            found.add(i, "tier-range", f"{name} [{addr:#x}, {top:#x}) is outside the chip's {share:,} bytes of it")


def _store_top(c, i: int) -> int:
    """The end of a STORE's buffer: its rows' window of positions, a row apart."""
    return int(c["dst"][i]) + int(c["imm"][i]) * int(c["stride"][i])


def _fetched(program, i: int, start: np.ndarray, end: np.ndarray, found) -> None:
    c = program.cols
    chip = c["chip"] == c["chip"][i]
    lo, hi = int(c["dst"][i]), int(c["dst"][i]) + int(c["dst_bytes"][i])
    src, size = c["src"].astype(np.int64), c["src_bytes"].astype(np.int64)
    reads = chip & np.isin(c["op"], (Op.READ, Op.GATHER)) & (src < hi) & (src + size > lo)
    refill = chip & (c["op"] == Op.FETCH) & (c["dst"] < hi) & (c["dst"] + c["dst_bytes"] > lo) & (start > start[i])
    until = start[refill].min() if refill.any() else np.iinfo(np.int64).max
    after = reads & (start >= start[i]) & (start < until)
    for j in np.flatnonzero(after & (start < end[i])).tolist():
        found.add(j, "tier-raw", f"reads [{lo:#x}, {hi:#x}) at {start[j]}, the FETCH bringing it ends at {end[i]}")
    for j in np.flatnonzero(reads & (start < start[i]) & (end > start[i])).tolist():
        found.add(i, "tier-war", f"fetches into [{lo:#x}, {hi:#x}) at {start[i]} while a read of it runs until "
                                 f"{end[j]}")


def tier_side(cols: dict[str, np.ndarray], column: str) -> np.ndarray:
    """Rows whose `column` ("src" or "dst") is a tier address, not an SRAM one: a FETCH's source, a
    STORE's destination (tier-range checks those)."""
    return cols["op"] == (Op.FETCH if column == "src" else Op.STORE)
