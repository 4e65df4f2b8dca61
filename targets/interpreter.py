"""The cycle-accurate interpreter, timing mode: executes a Program against the target's rules.

It is the independent judge of what the compiler emits, so it reads only the Program
(ir/) and the target (targets/) and never imports compiler/. Every instruction's
end is re-derived from its operands by targets.timing.durations, not taken from the
Program, and every rule below is checked with the chip, unit, queue index and cycle
of the offending instruction:

  duration     the Program books a different number of cycles than the rule gives
  unit-busy    an instruction starts before the previous one on its unit has ended
  stream-range a stream id the chip does not have
  stream-raw   a stream is read before its producer's data is there (a WRITE of a
               compute result also waits the chip's drain), or before anything wrote it
  stream-war   a stream is overwritten while a reader of its previous value still reads
  sram-range   an SRAM range outside the chip's usable SRAM
  unmatched    a SEND no RECV takes (or a RECV with no SEND left), or sizes differ: links are FIFO
               per (sender, receiver, tag) and a message is consumed once (targets/messages.py)
  recv-early   a RECV scheduled before its data can arrive: send + the latency of the fastest wired
               path (targets/topology.py's graph; on a wafer, the hops its route takes)
  duplicate    (wafer) a second SEND of one stream and tag, or a second RECV of one (sender, tag)
  sync         a SYNC barrier broken: chips reach different barriers, or at different cycles, or
               something runs beside a SYNC or issues before a chip's first one (targets/messages.py)
  link-range   a peer that is no chip; (wafer) a message on a link unit a core lacks, or a route its
               sender and receiver do not sit on
  stream-budget  the instructions running on a chip at some cycle put more bytes a cycle on its
               streams than the stream registers carry (targets/timing.py's stream budget)
  contract     an instruction breaks the ISA contract of its dialect (ir/contract.py): an opcode the
               dialect lacks, a column its opcode does not use holding a value, or vector-function
               arguments off their schema
  roles        (wafer) the metadata's regions and role streams are not what the mesh geometry gives
  tier-range, tier-raw, tier-war  the host link's FETCH and STORE (targets/tier_checks.py)

A Program declares its dialect and runs only on a target whose instruction set reads it (`admit`):
"queues" on a tsp chip, "roles" on a wse wafer; a target with no instruction set runs nothing.

A roles-dialect Program (one "chip" per role stream of a region's cores) runs with the same timing
rules at a core's rates; targets/wafer_timing.py maps its streams onto the mesh and derives every
message's hops from that geometry, never from a figure the compiler wrote.

The simulated makespan is the phase's latency; tokens/s and time-to-first-token come
from it. Chips are checked in any host order with the same result (`order`).

Not checked here: SRAM clobbers between buffers that are live at once (the timing
mode carries no data); the functional mode's numerics catch those.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ir.contract import DIALECT_OF_ISA, violations
from ir.errors import ConfigError
from ir.isa import Op, UnitKind
from ir.program import Program
from targets.messages import check_messages, check_syncs, check_wafer_duplicates
from targets.spec import SystemSpec
from targets.tier_checks import check_tiers, tier_side
from targets.timing import Timing, durations, stream_rates
from targets.wafer_timing import check_links


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


@dataclass(frozen=True)
class Run:
    """What executing one Program gives: its timeline, its hazards, and its digest."""

    program: Program
    start: np.ndarray
    end: np.ndarray
    hazards: list[Hazard]

    @property
    def makespan(self) -> int:
        return int(self.end.max()) if len(self.end) else 0

    @property
    def seconds(self) -> float:
        return self.makespan / self.program.clock_hz

    def digest(self) -> str:
        """sha256 over every instruction's start and end cycle and the hazards found."""
        h = hashlib.sha256()
        h.update(self.start.astype("<i8").tobytes())
        h.update(self.end.astype("<i8").tobytes())
        h.update("\n".join(map(str, self.hazards)).encode())
        return h.hexdigest()

    def busy(self) -> dict[str, float]:
        """Mean share of the makespan each kind of unit is busy, over the units that work."""
        c, span = self.program.cols, max(1, self.makespan)
        out = {}
        for kind in (UnitKind.MEM, UnitKind.MXM, UnitKind.VXM, UnitKind.C2C):
            mask = c["kind"] == kind
            units = len(np.unique(c["chip"][mask].astype(np.int64) * 256 + c["unit"][mask]))
            out[kind.name.lower()] = round(float((self.end - self.start)[mask].sum()) / (span * units), 4) \
                if units else 0.0
        return out

    def busy_by_chip(self) -> list[dict[str, float]]:
        """Per chip, the share of the makespan each kind of unit is busy (mean over the chip's
        units of that kind that work)."""
        c, span, chips = self.program.cols, max(1, self.makespan), self.program.chips
        out = [{} for _ in range(chips)]
        for kind in (UnitKind.MEM, UnitKind.MXM, UnitKind.VXM, UnitKind.C2C):
            mask = c["kind"] == kind
            chip = c["chip"][mask].astype(np.int64)
            busy = np.bincount(chip, (self.end - self.start)[mask], minlength=chips)
            pairs = np.unique(chip * 256 + c["unit"][mask])
            units = np.bincount(pairs // 256, minlength=chips)
            share = np.where(units > 0, busy / (span * np.maximum(units, 1)), 0.0)
            for i, value in enumerate(share.tolist()):
                out[i][kind.name.lower()] = round(value, 4)
        return out


def execute(program: Program, system: SystemSpec, order: Sequence[int] | None = None,
            limit: int = 100) -> Run:
    """Run `program` in timing mode; `order` is the host order chips are checked in.
    At most `limit` hazards of each kind are kept (the count of the rest is reported)."""
    admit(program, system)
    wafer = program.dialect == "roles"
    timing = Timing.of(system)
    c = program.cols
    start = c["issue"].astype(np.int64)
    end = start + durations(timing, c)
    found = _Hazards(program, limit)
    for row, why in violations(program):
        found.add(row, "contract", why)
    found.where(end - start != c["cycles"], "duration",
                lambda i: f"{Op(c['op'][i]).name.lower()} books {c['cycles'][i]} cycles, the rule gives "
                          f"{end[i] - start[i]}")
    chips = list(order) if order is not None else list(range(program.chips))
    for chip in chips:
        rows = program.chip_slice(chip)
        _units(program, rows, start, end, found)
        _streams(program, rows, start, end, timing, found)
    _sram(program, system, found)
    check_tiers(program, system, start, end, found)
    _stream_budget(program, timing, start, end, found)
    check_syncs(program, start, end, found, first_is_sync=not wafer)
    if wafer:
        check_links(program, system, start, found)
        check_wafer_duplicates(program, found)
    else:
        check_messages(program, system, start, found)
    return Run(program, start, end, found.sorted())


def admit(program: Program, system: SystemSpec) -> None:
    """A Program runs only on a target whose instruction set reads its dialect: one line otherwise."""
    isa = system.chip.isa
    if isa not in DIALECT_OF_ISA:
        raise ConfigError(f"{system.name} has no instruction set (isa = {isa!r}): plan and compare it, nothing "
                          "runs on it")
    if program.dialect != DIALECT_OF_ISA[isa]:
        raise ConfigError(f"a {program.dialect}-dialect {program.phase} Program cannot run on {system.name}, whose "
                          f"{isa} instruction set reads the {DIALECT_OF_ISA[isa]} dialect")


class _Hazards:
    """Collects hazards with their queue positions, capped per kind."""

    def __init__(self, program: Program, limit: int):
        self.program, self.limit = program, limit
        self.items: list[Hazard] = []
        self.counts: dict[str, int] = {}
        c = program.cols
        key = (c["chip"].astype(np.int64) << 16) | (c["kind"].astype(np.int64) << 8) | c["unit"]
        first = np.r_[0, np.flatnonzero(key[1:] != key[:-1]) + 1]
        self.queue_index = np.arange(len(key)) - np.repeat(first, np.diff(np.r_[first, len(key)])) \
            if len(key) else np.zeros(0, np.int64)

    def add(self, i: int, kind: str, detail: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.counts[kind] > self.limit:
            return
        c = self.program.cols
        unit = f"{UnitKind(c['kind'][i]).name.lower()}.{c['unit'][i]}"
        self.items.append(Hazard(int(c["chip"][i]), unit, int(self.queue_index[i]), int(c["issue"][i]), kind, detail))

    def where(self, mask: np.ndarray, kind: str, detail) -> None:
        for i in np.flatnonzero(mask)[: self.limit + 1].tolist():
            self.add(i, kind, detail(i))
        extra = int(mask.sum()) - min(int(mask.sum()), self.limit + 1)
        self.counts[kind] = self.counts.get(kind, 0) + extra

    def sorted(self) -> list[Hazard]:
        out = sorted(self.items)
        for kind, n in sorted(self.counts.items()):
            if n > self.limit:
                out.append(Hazard(-1, "-", -1, -1, kind, f"{n - self.limit} more not listed"))
        return out


def _units(program: Program, rows: slice, start: np.ndarray, end: np.ndarray, found: _Hazards) -> None:
    """In-order queues: each instruction starts at or after the previous one's end."""
    c = program.cols
    s, e = start[rows], end[rows]
    same = (c["kind"][rows][1:] == c["kind"][rows][:-1]) & (c["unit"][rows][1:] == c["unit"][rows][:-1])
    for j in np.flatnonzero(same & (s[1:] < e[:-1])).tolist():
        found.add(rows.start + j + 1, "unit-busy", f"starts at {s[j + 1]}, the unit is busy until {e[j]}")


_READS = ("s_a", "s_b", "s_c", "s_d")  # the stream operands an instruction reads


def _streams(program: Program, rows: slice, start: np.ndarray, end: np.ndarray, timing: Timing,
             found: _Hazards) -> None:
    """Pair each stream read with the latest write of that stream issued at or before it
    (an instruction that reads and writes one stream reads the older value)."""
    c = {n: a[rows] for n, a in program.cols.items()}
    s, e = start[rows], end[rows]
    base = rows.start
    for name in ("s_a", "s_b", "s_c", "s_d", "s_out"):
        for j in np.flatnonzero((c[name] >= timing.streams) | (c[name] < -1)).tolist():
            found.add(base + j, "stream-range", f"{name}={c[name][j]}, the chip has {timing.streams} streams")
    prod = np.flatnonzero(c["s_out"] >= 0)
    prod = prod[np.lexsort((prod, s[prod], c["s_out"][prod]))]  # by stream, then time, then row
    prod_key = (c["s_out"][prod].astype(np.int64) << 40) | s[prod]
    readers = np.concatenate([np.flatnonzero(c[n] >= 0) for n in _READS])
    streams = np.concatenate([c[n][c[n] >= 0] for n in _READS]).astype(np.int64)
    k = np.searchsorted(prod_key, (streams << 40) | s[readers], "right") - 1
    if not len(prod):  # nothing on the chip writes a stream: every read is of nothing
        k = np.full(len(readers), -1, np.int64)
    k = np.where((k >= 0) & (prod[np.maximum(k, 0)] == readers), k - 1, k) if len(prod) else k  # itself: older
    valid = (k >= 0) & (c["s_out"][prod[np.maximum(k, 0)]] == streams) if len(prod) else k >= 0
    for j, st in zip(readers[~valid].tolist(), streams[~valid].tolist(), strict=True):
        found.add(base + j, "stream-raw", f"reads stream {st} before anything wrote it")
    j, p = readers[valid], prod[k[valid]]
    drained = (c["op"][j] == Op.WRITE) & np.isin(c["kind"][p], (UnitKind.MXM, UnitKind.VXM))
    ready = e[p] + np.where(drained, timing.drain_cycles, 0)
    for i in np.flatnonzero(s[j] < ready).tolist():
        found.add(base + int(j[i]), "stream-raw", f"reads stream {streams[valid][i]} at {s[j[i]]}, its data is "
                                                  f"ready at {ready[i]}")
    last_read = np.full(len(prod), -1, dtype=np.int64)
    np.maximum.at(last_read, k[valid], e[j])
    same = c["s_out"][prod[1:]] == c["s_out"][prod[:-1]]
    for i in np.flatnonzero(same & (s[prod[1:]] < last_read[:-1])).tolist():
        found.add(base + int(prod[i + 1]), "stream-war", f"overwrites stream {c['s_out'][prod[i + 1]]} at "
                                                         f"{s[prod[i + 1]]} while its value is read until "
                                                         f"{last_read[i]}")


def _stream_budget(program: Program, timing: Timing, start: np.ndarray, end: np.ndarray, found: _Hazards) -> None:
    """At no cycle may a chip's running producers put more on streams than its stream registers carry.
    Rates come from each instruction's own operands and its derived cycles, never the Program's."""
    if not np.isfinite(timing.stream_bytes_per_cycle):
        return
    c = program.cols
    rate = stream_rates({**c, "cycles": end - start})
    rows = np.flatnonzero(rate > 0)
    if not len(rows):
        return
    # Events per chip in time order, an instruction's end before another's start at the same cycle.
    chip = np.concatenate([c["chip"][rows], c["chip"][rows]]).astype(np.int64)
    time = np.concatenate([start[rows], end[rows]])
    delta = np.concatenate([rate[rows], -rate[rows]])
    row = np.concatenate([rows, rows])
    order = np.lexsort((delta, time, chip))
    usage = np.cumsum(delta[order])
    over = np.flatnonzero(usage > timing.stream_bytes_per_cycle)
    seen: set[int] = set()
    for k in over.tolist():
        i, at = int(row[order[k]]), int(time[order[k]])
        if int(c["chip"][i]) in seen:
            continue  # one report per chip: the first cycle over the budget
        seen.add(int(c["chip"][i]))
        on = np.flatnonzero((c["chip"] == c["chip"][i]) & (start <= at) & (end > at) & (rate > 0))
        units = sorted({f"{UnitKind(c['kind'][j]).name.lower()}.{c['unit'][j]}" for j in on.tolist()})
        found.add(i, "stream-budget", f"at cycle {at} {', '.join(units)} put {int(usage[k]):,} B/cycle on streams, "
                                      f"the stream registers carry {timing.stream_bytes_per_cycle:,.0f}")


def _sram(program: Program, system: SystemSpec, found: _Hazards) -> None:
    c = program.cols
    usable = system.chip.usable_sram_bytes
    for addr, size in (("src", "src_bytes"), ("dst", "dst_bytes")):
        used = (c[addr] >= 0) & ~tier_side(c, addr)
        bad = used & ((c[addr] + c[size] > usable) | (c[addr] < 0))
        found.where(bad, "sram-range",
                    lambda i, a=addr, n=size: f"{a} [{c[a][i]:#x}, {c[a][i] + c[n][i]:#x}) is outside the "
                                              f"{usable:,} usable bytes")
    found.where(c["src"] < -1, "sram-range", lambda i: f"negative address {c['src'][i]}")
