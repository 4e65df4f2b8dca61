"""List scheduling of one template: earliest start first, ties by emission index.

Each unit (MEM, MXM plane, VXM, SXM, each link direction) issues in order; an
instruction starts at the latest of its dependencies' ends (plus their lags) and
its unit's last end. Popping the ready instruction with the earliest feasible
start approximates time order, so one unit's late instruction does not hold up
another's early one. Deterministic: every key ends with the instruction index.
"""

from __future__ import annotations

import heapq

from compiler.codegen.template import Template


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
    heap = [(start, i) for i in range(n) if waiting[i] == 0]
    heapq.heapify(heap)
    while heap:
        est, i = heapq.heappop(heap)
        ins = t.instrs[i]
        key = (int(ins.kind), ins.unit)
        begin = max(est, free.get(key, start))
        if begin > est:
            heapq.heappush(heap, (begin, i))  # its unit is busy: wait in time order
            continue
        ins.issue = begin
        free[key] = begin + ins.cycles
        for j, lag in succ[i]:
            earliest[j] = max(earliest[j], begin + ins.cycles + lag)
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(heap, (earliest[j], j))
    if any(ins.issue < 0 for ins in t.instrs):
        raise RuntimeError(f"template {t.name}: dependency cycle")
