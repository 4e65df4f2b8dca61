"""Timing rules for wafer Programs: one "chip" of the Program is one role stream of a region's cores.

A wafer Program (compiler/wafer/lower.py) runs the cores of a region as a few role streams (the
cores at one position class of the region's reduction trees); Program.meta["replicas"][s] counts
the cores running stream s. Per-core rates come from the WaferSpec (per cycle = per second / clock):

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
from targets.spec import WaferSpec
from targets.timing import STREAMS_PER_CHIP, Timing, _ceil, durations

FABRIC_SEND, FABRIC_RECV, WAFER_SEND, WAFER_RECV = 0, 1, 2, 3  # C2C unit indices of a wafer core


@dataclass(frozen=True, slots=True)
class WaferTiming(Timing):
    """A WaferSpec's per-core rates in per-cycle units (the Timing fields, plus the fabric's)."""

    step_cycles: int = 0
    hop_cycles: int = 1
    max_hops: int = 0  # one message crosses at most a wafer's half-perimeter
    wafer_link_bytes_per_cycle: float = 1.0
    wafer_link_latency_cycles: int = 0

    @classmethod
    def of(cls, wafer: WaferSpec) -> WaferTiming:
        clock = wafer.clock_hz
        return cls(
            clock_hz=clock,
            sram_bytes_per_cycle=wafer.core_mem_bw_bytes_per_s / clock,
            macs_per_cycle={p: r / 2 / clock for p, r in wafer.core_peak_ops_per_s.items()},
            vxm_alus=2 * wafer.simd_width,
            link_bytes_per_cycle=wafer.link_bw_bytes_per_s / clock,
            link_latency_cycles=wafer.hop_cycles,
            drain_cycles=0,
            sync_cycles=0,
            streams=STREAMS_PER_CHIP,
            planes=1,
            dim=1,  # no tiles: a core's SIMD takes its block element by element
            # A core's MXM streams its weight block straight from its SRAM at the stored bytes.
            port_bytes_per_cycle=wafer.core_mem_bw_bytes_per_s / clock,
            install_bytes_per_cycle=wafer.core_mem_bw_bytes_per_s / clock,
            install_bytes_per_weight={"fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5},
            step_cycles=wafer.step_cycles,
            hop_cycles=wafer.hop_cycles,
            max_hops=wafer.mesh_rows + wafer.mesh_cols,
            wafer_link_bytes_per_cycle=wafer.wafer_link.bw_bytes_per_s / clock,
            wafer_link_latency_cycles=max(0, round(wafer.wafer_link.latency_s * clock)),
        )

    # ---- scalar rules (the scheduler) ---------------------------------------------------------

    def send(self, nbytes: int, wafer_link: bool = False) -> int:
        rate = self.wafer_link_bytes_per_cycle if wafer_link else self.link_bytes_per_cycle
        return max(1, _ceil(nbytes / rate))

    def recv(self, nbytes: int, wafer_link: bool = False) -> int:
        return self.send(nbytes, wafer_link) + (0 if wafer_link else self.step_cycles)

    def arrival(self, hops: int, wafer_link: bool = False) -> int:
        return hops * self.hop_cycles + (self.wafer_link_latency_cycles if wafer_link else 0)


def wafer_durations(timing: WaferTiming, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Every instruction's cycles by the rules above (the interpreter's view)."""
    out = durations(timing, cols)
    op, unit = cols["op"], cols["unit"]
    c2c = (op == Op.SEND) | (op == Op.RECV)
    nbytes = np.where(op == Op.SEND, cols["src_bytes"], cols["dst_bytes"]).astype(np.int64)
    far = c2c & (unit >= WAFER_SEND)
    out[far] = np.maximum(1, np.ceil(nbytes[far] / timing.wafer_link_bytes_per_cycle - 1e-9).astype(np.int64))
    out[c2c & ~far & (op == Op.RECV)] += timing.step_cycles
    return out


def _host_messages(c: dict[str, np.ndarray], recvs: np.ndarray, timing: WaferTiming, start: np.ndarray,
                   found) -> None:
    """Rows the host sends (--embed-on-host) come in over the wafer link, at the earliest its latency plus
    half the mesh's perimeter after the step begins."""
    far = c["unit"][recvs] >= WAFER_SEND
    for i in recvs[~far].tolist():
        found.add(i, "link-range", "a message from the host arrives over the wafer link (unit 3), not the fabric")
    earliest = timing.wafer_link_latency_cycles + timing.max_hops // 2 * timing.hop_cycles
    for i in recvs[far & (start[recvs] < earliest)].tolist():
        found.add(i, "recv-early", f"starts at {start[i]}, rows from the host arrive at {earliest} at the earliest")


def check_links(program: Program, timing: WaferTiming, start: np.ndarray, found) -> None:
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
    arrival = start[s] + np.maximum(0, c["imm"][s]).astype(np.int64) * timing.hop_cycles \
        + np.where(far, timing.wafer_link_latency_cycles, 0)
    for i in np.flatnonzero(start[r] < arrival).tolist():
        found.add(int(r[i]), "recv-early", f"starts at {start[r[i]]}, the data from stream {c['peer'][r[i]]} "
                                           f"arrives at {arrival[i]}")
    lonely = ~np.isin(c["tag"][sends], c["tag"][recvs])
    for i in sends[lonely].tolist():
        found.add(i, "unmatched", f"send tag {c['tag'][i]} is received by no stream")
