"""Timing-mode checks of the host link's transfers (FETCH, STORE) that no other rule covers.

  tier-range   a transfer to a tier the target does not declare, or outside the chip's share of it
               (a node tier's capacity is shared evenly by the node's chips)
  tier-raw     an SRAM read of a fetched block that starts before the FETCH has written it; or, in
               the tier, a FETCH of bytes a STORE begun before it is still writing
  tier-war     a FETCH that overwrites SRAM another instruction is still reading; or, in the tier, a
               STORE into bytes a FETCH begun before it is still reading

A STORE's tier range is its whole window (the rows it keeps are a function of the positions the
host writes each step), so a FETCH and a STORE of one cache on one tier must not run at once.

A READ of exactly a fetched block's bytes (a staging slot) reads what the latest FETCH into that
block started before it brought: it waits for that fetch's end, and there must be one; a FETCH
into a block while a read of it is under way overwrites what that read streams. The functional
mode checks the bytes themselves.
"""

from __future__ import annotations

import numpy as np

from ir.isa import TIER_UNITS, Op
from ir.program import Flag
from targets.hazards import Rows
from targets.spec import SystemSpec


def check_tiers(program, system: SystemSpec, dur: np.ndarray, hazards) -> None:
    """The host link's rules over the unrolled rows (only a Program that uses the host link unrolls);
    `dur` is every block row's derived duration."""
    if not np.isin(program.body["op"], (Op.FETCH, Op.STORE)).any():
        return
    view = _Unrolled(program, dur, hazards)
    c = view.cols
    host = np.flatnonzero(np.isin(c["op"], (Op.FETCH, Op.STORE)))
    _ranges(view, system, host, view.found)
    fetches = np.flatnonzero(c["op"] == Op.FETCH)
    for chip in np.unique(c["chip"][fetches]).tolist():
        _fetched(view, chip, fetches[c["chip"][fetches] == chip], view.start, view.end, view.found)
    _in_the_tier(view, host)


class _Unrolled:
    """Every executed row (program.cols), its start and end, and a `found` that locates row k."""

    def __init__(self, program, dur: np.ndarray, hazards):
        self.cols = program.cols
        rows, insts = program.origin
        self.start = self.cols["issue"].astype(np.int64)
        self.end = self.start + dur[rows]
        self.found = Rows(hazards, insts, rows)


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


def _in_the_tier(view, host: np.ndarray) -> None:
    """FETCH and STORE pairs of one chip and tier whose tier bytes overlap and whose runs overlap: the
    later one's hazard (tier-raw when the STORE began first, tier-war when the FETCH did)."""
    c, start, end = view.cols, view.start, view.end
    fetch = c["op"][host] == Op.FETCH
    low = np.where(fetch, c["src"][host], c["dst"][host]).astype(np.int64)
    high = np.array([low[n] + int(c["src_bytes"][i]) if fetch[n] else _store_top(c, i)
                     for n, i in enumerate(host.tolist())], np.int64)
    for n in np.flatnonzero(~fetch).tolist():
        s = host[n]
        other = fetch & (c["chip"][host] == c["chip"][s]) & (c["unit"][host] == c["unit"][s]) & \
            (low < high[n]) & (high > low[n]) & (start[host] < end[s]) & (end[host] > start[s])
        for f in host[other].tolist():
            lo, hi = max(low[n], int(c["src"][f])), min(high[n], int(c["src"][f] + c["src_bytes"][f]))
            if start[s] <= start[f]:
                view.found.add(f, "tier-raw", f"fetches tier [{lo:#x}, {hi:#x}) at {start[f]} while a STORE into it "
                                              f"runs until {end[s]}")
            else:
                view.found.add(s, "tier-war", f"stores into tier [{lo:#x}, {hi:#x}) at {start[s]} while a FETCH of "
                                              f"it runs until {end[f]}")


def _store_top(c, i: int) -> int:
    """The end of a STORE's buffer: every sequence's window of positions, a row apart."""
    sequences = -(-int(c["m"][i]) // max(1, int(c["k"][i])))
    return int(c["dst"][i]) + sequences * int(c["imm"][i]) * int(c["stride"][i])


def _fetched(program, chip: int, rows: np.ndarray, start: np.ndarray, end: np.ndarray, found) -> None:
    """Reads of exactly a fetched block's bytes (a staging slot), each paired with the latest FETCH into
    that block that started before it; a read after a plain WRITE into those bytes (local SRAM another
    op reuses once the block is done with) reads that write's data, not the tier's."""
    c = program.cols
    on = np.flatnonzero(c["chip"] == chip)
    reads = on[(c["op"][on] == Op.READ)]
    plain = on[(c["op"][on] == Op.WRITE) & (c["flags"][on] & Flag.WINDOW == 0)]  # not a staged block's patch
    low, high = c["dst"][plain].astype(np.int64), _write_top(c, plain)
    blocks = {}
    for i in rows.tolist():
        blocks.setdefault((int(c["dst"][i]), int(c["dst_bytes"][i])), []).append(i)
    for (addr, size), fetches in blocks.items():
        fetches = sorted(fetches, key=lambda i: (start[i], i))
        begins = np.array([start[i] for i in fetches])
        written = np.sort(start[plain[(low < addr + size) & (high > addr)]])
        mine = reads[(c["src"][reads] == addr) & (c["src_bytes"][reads] == size)]
        for j in mine.tolist():
            k = int(np.searchsorted(begins, start[j], "right")) - 1
            w = int(np.searchsorted(written, start[j], "left")) - 1  # the latest plain write begun before it
            if w >= 0 and (k < 0 or written[w] >= begins[k]):
                continue
            if k < 0:
                found.add(j, "tier-raw", f"reads the staged block [{addr:#x}, {addr + size:#x}) at {start[j]}, "
                                         "before any FETCH brings it")
            elif start[j] < end[fetches[k]]:
                found.add(j, "tier-raw", f"reads [{addr:#x}, {addr + size:#x}) at {start[j]}, the FETCH bringing "
                                         f"it ends at {end[fetches[k]]}")
        for i in fetches:
            busy = mine[(start[mine] < start[i]) & (end[mine] > start[i])]
            for j in busy.tolist():
                found.add(i, "tier-war", f"fetches into [{addr:#x}, {addr + size:#x}) at {start[i]} while a read "
                                         f"of it runs until {end[j]}")


def _write_top(c, rows: np.ndarray) -> np.ndarray:
    """The end of each WRITE's bytes: a 2-D write's m rows `stride` apart, else dst + dst_bytes."""
    m, stride, nbytes = c["m"][rows].astype(np.int64), c["stride"][rows].astype(np.int64), c["dst_bytes"][rows]
    two_d = (m > 0) & (stride > 0)
    return c["dst"][rows].astype(np.int64) + np.where(two_d, (m - 1) * stride + nbytes // np.maximum(m, 1), nbytes)


def tier_side(cols: dict[str, np.ndarray], column: str) -> np.ndarray:
    """Rows whose `column` ("src" or "dst") is a tier address, not an SRAM one: a FETCH's source, a
    STORE's destination (tier-range checks those)."""
    return cols["op"] == (Op.FETCH if column == "src" else Op.STORE)
