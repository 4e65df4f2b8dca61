"""List scheduling of one template: earliest start first, ties by emission index.

Each unit (MEM, MXM plane, VXM, SXM, each link direction) issues in order; an
instruction starts at the latest of its dependencies' ends (plus their lags) and
its unit's last end, and where the stream registers have room for its output
(targets/timing.py: the producers running at any cycle stay within the chip's
stream budget). Popping the ready instruction with the earliest feasible start
approximates time order, so one unit's late instruction does not hold up
another's early one. Deterministic: every key ends with the instruction index.
"""

from __future__ import annotations

import bisect
import heapq

from compiler.codegen.template import Instr, Template
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


def schedule(t: Template, start: int = 0) -> None:
    """Set every instruction's `issue` (cycles from the template's start)."""
    n = len(t.instrs)
    succ: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    waiting = [0] * n
    for i, ins in enumerate(t.instrs):
        for d, lag in ins.deps:
            succ[d].append((i, lag))
            waiting[i] += 1
    earliest = [start] * n
    free: dict[tuple[int, int], int] = {}
    budget = StreamBudget(t.timing.stream_bytes_per_cycle)
    rates = [_rate(ins) for ins in t.instrs]
    heap = [(start, i) for i in range(n) if waiting[i] == 0]
    heapq.heapify(heap)
    while heap:
        est, i = heapq.heappop(heap)
        ins = t.instrs[i]
        key = (int(ins.kind), ins.unit)
        begin = budget.earliest(max(est, free.get(key, start)), ins.cycles, rates[i])
        if begin > est:
            heapq.heappush(heap, (begin, i))  # its unit or the streams are busy: wait in time order
            continue
        ins.issue = begin
        free[key] = begin + ins.cycles
        budget.book(begin, ins.cycles, rates[i])
        for j, lag in succ[i]:
            earliest[j] = max(earliest[j], begin + ins.cycles + lag)
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(heap, (earliest[j], j))
    if any(ins.issue < 0 for ins in t.instrs):
        raise RuntimeError(f"template {t.name}: dependency cycle")
