"""Timing rules for wafer Programs: one "chip" of the Program is one role stream of a region's cores.

A wafer Program (compiler/wafer/lower.py) runs the cores of a region as a few role streams (the
cores at one position class of the region's reduction trees); Program.meta["replicas"][s] counts
the cores running stream s. Per-core rates come from the SystemSpec (per cycle = per second / clock):

  READ, WRITE, GATHER  ceil(bytes / core SRAM bytes per cycle)
  MXM (m x k x n)      targets/timing.py's rule with 1 x 1 tiles: install = the block's stored bytes
                       over the core's SRAM bytes per cycle (the core streams its weight block from
                       SRAM), passes = m k n / simd_width multiply-adds per cycle (8-bit and 4-bit
                       weights run at the fp16 rate)
  VOP (m x n)          targets/timing.py's rule with the core's SRAM as its port and 2 simd_width ALUs:
                       a SIMD lane does a multiply and an add per cycle, the core's peak ops
  SEND (C2C unit 0)    ceil(bytes / link bytes per cycle): one fabric link, 4-byte wavelets
  RECV (C2C unit 1)    step_cycles + ceil(bytes / link bytes per cycle): the task a message wakes
                       on the core (its add, with ACCUMULATE, runs as the wavelets arrive: the SIMD
                       adds faster than a link delivers) plus the wavelets themselves
  SEND, RECV on C2C units 2, 3: the wafer-to-wafer link: ceil(bytes / wafer link bytes per cycle)

Arrival: a SEND's hop count is its `imm`. A RECV naming (peer, tag) may start no earlier than
that SEND's start + imm x hop_cycles (+ the wafer link's latency on units 2, 3). One SEND may feed
the RECVs of several streams (the fabric's routers multicast a colour), so pairing is by
(sender stream, tag): every RECV names a SEND that exists, and their byte counts agree; every
SEND's message (tag) is received by some stream. The senders of one tag (the cores of row 0 each
sending their slice, a tree level's senders) start together, so the named one stands for them all.
A RECV from HOST (the host's embedding rows) has no SEND: it arrives over the wafer link no earlier
than the link's latency plus half the mesh's perimeter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ir.isa import Op, UnitKind
from ir.program import HOST, Program
from targets.spec import SystemSpec
from targets.timing import Timing

FABRIC_SEND, FABRIC_RECV, WAFER_SEND, WAFER_RECV = 0, 1, 2, 3  # C2C unit indices of a wafer core


@dataclass(frozen=True, slots=True)
class WaferRoutes:
    """What a wafer's message checks need of its target: the one Timing, and the mesh's size."""

    timing: Timing
    max_hops: int  # one message crosses at most a wafer's half-perimeter and a hop to the edge

    @classmethod
    def of(cls, wafer: SystemSpec) -> WaferRoutes:
        return cls(Timing.of(wafer), wafer.mesh_rows + wafer.mesh_cols)

    def arrival(self, hops: int, far: bool = False) -> int:
        """Cycles from a SEND's start until its data is `hops` fabric hops (and the wafer link) away."""
        t = self.timing
        return hops * t.local.latency_cycles + (t.remote.latency_cycles if far else 0)


def _host_messages(c: dict[str, np.ndarray], recvs: np.ndarray, timing: WaferRoutes, start: np.ndarray,
                   found) -> None:
    """Rows the host sends (--embed-on-host) come in over the wafer link, at the earliest its latency plus
    half the mesh's perimeter after the step begins."""
    far = c["unit"][recvs] >= WAFER_SEND
    for i in recvs[~far].tolist():
        found.add(i, "link-range", "a message from the host arrives over the wafer link (unit 3), not the fabric")
    earliest = timing.arrival(timing.max_hops // 2, far=True)
    for i in recvs[far & (start[recvs] < earliest)].tolist():
        found.add(i, "recv-early", f"starts at {start[i]}, rows from the host arrive at {earliest} at the earliest")


def check_links(program: Program, timing: WaferRoutes, start: np.ndarray, found) -> None:
    """Links and messages of a wafer Program; `found.add(row, kind, detail)` records a hazard."""
    c = program.cols
    c2c = c["kind"] == UnitKind.C2C
    wrong = c2c & ((c["unit"] > WAFER_RECV) | ((c["op"] == Op.SEND) != (c["unit"] % 2 == 0)))
    found.where(wrong, "link-range", lambda i: f"{Op(c['op'][i]).name.lower()} on link unit {c['unit'][i]}: a "
                                               "core has fabric send 0, receive 1, wafer link send 2, receive 3")
    sends = np.flatnonzero(c["op"] == Op.SEND)
    hops = c["imm"][sends]
    for i in sends[(hops < 0) | (hops > timing.max_hops)].tolist():
        found.add(i, "link-range", f"{c['imm'][i]} hops: a message crosses 0..{timing.max_hops} hops")
    key_s = (c["chip"][sends].astype(np.int64) << 32) | c["tag"][sends].astype(np.int64)
    order = np.argsort(key_s, kind="stable")
    sends, key_s = sends[order], key_s[order]
    recvs = np.flatnonzero(c["op"] == Op.RECV)
    _host_messages(c, recvs[c["peer"][recvs] == HOST], timing, start, found)
    recvs = recvs[c["peer"][recvs] != HOST]
    key_r = (c["peer"][recvs].astype(np.int64) << 32) | c["tag"][recvs].astype(np.int64)
    at = np.minimum(np.searchsorted(key_s, key_r), max(0, len(sends) - 1))
    found_send = (at < len(sends)) & (key_s[at] == key_r) if len(sends) else np.zeros(len(recvs), bool)
    for r in recvs[~found_send].tolist():
        found.add(r, "unmatched", f"receive from stream {c['peer'][r]} tag {c['tag'][r]} has no send")
    r, s = recvs[found_send], sends[at[found_send]]
    for i in np.flatnonzero(c["src_bytes"][s] != c["dst_bytes"][r]).tolist():
        found.add(int(r[i]), "unmatched", f"receives {c['dst_bytes'][r[i]]} bytes, the send carries "
                                          f"{c['src_bytes'][s[i]]}")
    far = c["unit"][s] >= WAFER_SEND
    t = timing.timing
    arrival = start[s] + np.maximum(0, c["imm"][s]).astype(np.int64) * t.local.latency_cycles \
        + np.where(far, t.remote.latency_cycles, 0)
    for i in np.flatnonzero(start[r] < arrival).tolist():
        found.add(int(r[i]), "recv-early", f"starts at {start[r[i]]}, the data from stream {c['peer'][r[i]]} "
                                           f"arrives at {arrival[i]}")
    lonely = ~np.isin(c["tag"][sends], c["tag"][recvs])
    for i in sends[lonely].tolist():
        found.add(i, "unmatched", f"send tag {c['tag'][i]} is received by no stream")
