"""Scheduling of one template: three list schedules, the shortest kept (the first on a tie).

Each unit (MEM, MXM plane, VXM, SXM, each link direction) runs one instruction at a
time, in the order of their issue cycles; an instruction starts once its dependencies
have ended (plus their lags), and where the stream registers have room for its output
(targets/timing.py: the producers running at any cycle stay within the chip's stream
budget). Accesses to one SRAM slot keep their emission order where one of them writes:
the emitter's dependencies name a value's producer, not every earlier access to its
bytes. The schedules:

- in time order (`_TimeOrder`): the ready instruction with the earliest feasible start
  goes next (ties by index), as the scheduler always did;
- the same, deferring: unless a more critical one on its unit becomes ready before it
  would end and the template ends sooner, by both tails (the longest path from an
  instruction's start to the template's end), with that one first;
- by priority (`_by_priority`): the ready instruction with the longest tail goes next,
  at the earliest cycle its unit and the streams have room for it, in a gap before
  instructions already placed if it fits (a weight prefetch fills the MEM queue's idle
  cycles instead of holding up the critical path).

Deterministic: every key ends with the instruction index.
"""

from __future__ import annotations

import bisect
import heapq
import math

from compiler.codegen.template import Instr, Ref, Template
from ir.isa import Op
from ir.program import Flag
from targets.timing import result_bytes


class StreamBudget:
    """Bytes a cycle the instructions booked so far put on streams, as a step function of time."""

    def __init__(self, limit: float):
        self.limit = limit
        self.times: list[int] = [0]  # usage[i] holds from times[i] to times[i + 1]
        self.usage: list[int] = [0]

    def earliest(self, start: int, cycles: int, rate: int) -> int:
        """The first cycle at or after `start` from which `rate` more fits for `cycles` cycles."""
        if rate <= 0:
            return start
        i = bisect.bisect_right(self.times, start) - 1
        begin = start
        while i < len(self.times):
            end = self.times[i + 1] if i + 1 < len(self.times) else None
            if self.usage[i] + rate > self.limit:
                if end is None:
                    raise RuntimeError(f"an instruction puts {rate} B/cycle on streams, over the budget {self.limit}")
                begin = end
            elif end is None or end >= begin + cycles:
                return begin
            i += 1
        return begin

    def book(self, start: int, cycles: int, rate: int) -> None:
        if rate <= 0 or cycles <= 0:
            return
        first, last = self._split(start), self._split(start + cycles)
        for i in range(first, last):
            self.usage[i] += rate

    def _split(self, t: int) -> int:
        """Index of the step that starts at t (made if needed)."""
        i = bisect.bisect_right(self.times, t) - 1
        if self.times[i] == t:
            return i
        self.times.insert(i + 1, t)
        self.usage.insert(i + 1, self.usage[i])
        return i + 1


def _rate(ins: Instr) -> int:
    """Bytes a cycle the instruction puts on streams: its results spread evenly over its cycles."""
    return -(-result_bytes(ins.op, ins.m, ins.n, ins.fn, ins.src_bytes, ins.dst_bytes) // max(1, ins.cycles))


def _footprint(ins: Instr, ref: Ref, nbytes: int) -> tuple[int, float]:
    """The bytes of its slot an access may touch, as a hull [lo, hi): a 2-D access's rows `stride` apart,
    a rank's share (`parts`) on any member of its group; an indexed or tiled one the whole slot."""
    whole = ins.op not in (Op.READ, Op.WRITE) or ins.flags & Flag.INDIRECT or (ins.op is Op.READ and ins.n > 1)
    if whole or any(b < 0 for _, b in ref.parts):
        return 0, math.inf
    rows = max(ins.m, 1)
    span = (rows - 1) * abs(ins.stride) + nbytes // rows if ins.m > 0 and ins.stride else nbytes
    return ref.offset, ref.offset + span + sum(b * (peer.group - 1) for peer, b in ref.parts)


def _sram_order(t: Template) -> list[list[int]]:
    """For each instruction, the earlier ones it must follow on SRAM: those touching bytes of a slot it
    reads or writes, where one of the two writes."""
    after: list[list[int]] = [[] for _ in t.instrs]
    reads: dict[tuple[int, int], list[tuple[int, float, int]]] = {}
    writes: dict[tuple[int, int], list[tuple[int, float, int]]] = {}
    for i, ins in enumerate(t.instrs):
        for ref, nbytes, written in ((ins.src, ins.src_bytes, False), (ins.dst, ins.dst_bytes, True)):
            if ref is None:
                continue
            slot, (lo, hi) = (int(ref.space), ref.slot), _footprint(ins, ref, nbytes)
            earlier = (*writes.get(slot, ()), *(reads.get(slot, ()) if written else ()))
            after[i].extend(j for a, b, j in earlier if a < hi and lo < b and j != i)
            (writes if written else reads).setdefault(slot, []).append((lo, hi, i))
    return after


class _Graph:
    """The dependencies and the SRAM order as successor lists (instruction, lag), and every tail."""

    def __init__(self, t: Template):
        n = len(t.instrs)
        self.succ: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        self.preds = [0] * n
        for i, (ins, order) in enumerate(zip(t.instrs, _sram_order(t), strict=True)):
            for d, lag in (*ins.deps, *((d, 0) for d in order)):
                self.succ[d].append((i, lag))
                self.preds[i] += 1
        self.tail = [0] * n  # emission order is topological: one backward pass
        for i in range(n - 1, -1, -1):
            self.tail[i] = t.instrs[i].cycles + max((lag + self.tail[j] for j, lag in self.succ[i]), default=0)


class _Placement:
    """What a schedule books as it goes: each instruction's earliest start from its placed
    predecessors, the stream budget, and the predecessors still to place."""

    def __init__(self, t: Template, g: _Graph, start: int):
        self.instrs, self.g, self.start = t.instrs, g, start
        self.earliest = [start] * len(t.instrs)
        self.waiting = list(g.preds)
        self.budget = StreamBudget(t.timing.stream_bytes_per_cycle)
        self.rates = [_rate(ins) for ins in t.instrs]
        self.units = [(int(ins.kind), ins.unit) for ins in t.instrs]

    def place(self, i: int, begin: int) -> list[int]:
        """Issue i at `begin`; returns the successors that became ready."""
        ins = self.instrs[i]
        ins.issue = begin
        self.budget.book(begin, ins.cycles, self.rates[i])
        ready = []
        for j, lag in self.g.succ[i]:
            self.earliest[j] = max(self.earliest[j], begin + ins.cycles + lag)
            self.waiting[j] -= 1
            if self.waiting[j] == 0:
                ready.append(j)
        return ready


class _TimeOrder:
    """The ready instructions in time order; each unit's also by the cycle they may start, so one
    about to take its unit sees a more critical one that becomes ready before it would end."""

    def __init__(self, t: Template, g: _Graph, start: int, defer: bool):
        self.p, self.tail, self.instrs, self.defer = _Placement(t, g, start), g.tail, t.instrs, defer
        n = len(t.instrs)
        self.ready_at = [start] * n
        self.queued = [False] * n
        self.unit_queue: dict[tuple[int, int], list[tuple[int, int]]] = {}  # a unit's ready ones: (cycle, index)
        self.free: dict[tuple[int, int], int] = {}
        self.heap: list[tuple[int, int, int]] = []  # (cycle, deferred, index)
        for i in range(n):
            if g.preds[i] == 0:
                self.push(i, start)

    def push(self, i: int, at: int, deferred: int = 0) -> None:
        q = self.unit_queue.setdefault(self.p.units[i], [])
        if self.queued[i]:
            q.pop(bisect.bisect_left(q, (self.ready_at[i], i)))
        self.queued[i], self.ready_at[i] = True, at
        bisect.insort(q, (at, i))
        heapq.heappush(self.heap, (at, deferred, i))

    def rival(self, i: int, begin: int, deferred: int) -> int:
        """A ready instruction on i's unit, ready before i would end, that should go first: the template
        ends sooner by both tails with it first. -1 if none. None at i's own cycle once i has deferred
        there, so every deferral moves i on."""
        q, end, ti = self.unit_queue[self.p.units[i]], begin + self.instrs[i].cycles, self.tail[i]
        for at, j in q[bisect.bisect_left(q, (begin, -1)):]:
            if at >= end:
                break
            if j == i or (at == begin and deferred):
                continue
            i_first = max(begin + ti, max(end, at) + self.tail[j])
            j_first = max(at + self.tail[j], at + self.instrs[j].cycles + ti)
            if j_first < i_first:
                return j
        return -1

    def run(self) -> None:
        p = self.p
        while self.heap:
            est, deferred, i = heapq.heappop(self.heap)
            if est != self.ready_at[i] or self.instrs[i].issue >= 0:
                continue  # superseded by a later push
            ins, unit = self.instrs[i], p.units[i]
            begin = p.budget.earliest(max(est, self.free.get(unit, p.start)), ins.cycles, p.rates[i])
            if begin > est:
                self.push(i, begin)  # its unit or the streams are busy: wait in time order
                continue
            j = self.rival(i, begin, deferred) if self.defer else -1
            if j >= 0:
                self.push(i, self.ready_at[j], deferred=1)  # leave the unit to the more critical one
                continue
            q = self.unit_queue[unit]
            q.pop(bisect.bisect_left(q, (est, i)))
            self.free[unit] = begin + ins.cycles
            for j in p.place(i, begin):
                self.push(j, p.earliest[j])


class _Busy:
    """One unit's booked intervals in time order: an instruction may fill a gap before later ones."""

    def __init__(self):
        self.starts: list[int] = []
        self.ends: list[int] = []

    def earliest(self, start: int, cycles: int) -> int:
        k = bisect.bisect_right(self.ends, start)  # the first interval ending after `start`
        while k < len(self.starts) and self.starts[k] < start + cycles:
            start = max(start, self.ends[k])
            k += 1
        return start

    def book(self, start: int, cycles: int) -> None:
        k = bisect.bisect_left(self.starts, start)
        self.starts.insert(k, start)
        self.ends.insert(k, start + cycles)


def _by_priority(t: Template, g: _Graph, start: int) -> None:
    p = _Placement(t, g, start)
    units: dict[tuple[int, int], _Busy] = {}
    heap = [(-g.tail[i], i) for i in range(len(t.instrs)) if g.preds[i] == 0]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        ins = t.instrs[i]
        busy = units.setdefault(p.units[i], _Busy())
        begin = p.earliest[i]
        while (at := p.budget.earliest(busy.earliest(begin, ins.cycles), ins.cycles, p.rates[i])) != begin:
            begin = at  # the unit's next gap, then the streams' room from there, until both agree
        busy.book(begin, ins.cycles)
        for j in p.place(i, begin):
            heapq.heappush(heap, (-g.tail[j], j))


def schedule(t: Template, start: int = 0) -> None:
    """Set every instruction's `issue` (cycles from the template's start): the shortest of time order
    without and with deferring to a more critical instruction, and priority order (the first on a tie)."""
    g = _Graph(t)
    best: tuple[int, list[int]] | None = None
    for run in (lambda: _TimeOrder(t, g, start, False).run(), lambda: _TimeOrder(t, g, start, True).run(),
                lambda: _by_priority(t, g, start)):
        for ins in t.instrs:
            ins.issue = -1
        run()
        if any(ins.issue < 0 for ins in t.instrs):
            raise RuntimeError(f"template {t.name}: dependency cycle")
        if best is None or t.makespan < best[0]:
            best = (t.makespan, [ins.issue for ins in t.instrs])
    for ins, at in zip(t.instrs, best[1], strict=True):
        ins.issue = at
