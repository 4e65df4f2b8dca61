"""Exact dynamic programmes over the same candidates: a cross-check for CP-SAT and its hint."""

from __future__ import annotations

from collections.abc import Callable

from compiler.partition.candidates import Candidate


def fewest_chips(cands: list[Candidate], num_units: int) -> list[Candidate] | None:
    """The path with fewest chips, ties broken by lower latency, then by stage order."""
    best: list[tuple[int, int] | None] = [None] * (num_units + 1)
    back: list[Candidate | None] = [None] * (num_units + 1)
    best[0] = (0, 0)
    for c in sorted(cands, key=lambda c: (c.first, c.stop, c.tp, c.split)):
        if best[c.first] is None:
            continue
        chips, lat = best[c.first]
        key = (chips + c.tp, lat + c.latency_ps)
        if best[c.stop] is None or key < best[c.stop]:
            best[c.stop], back[c.stop] = key, c
    return _path(back, num_units) if best[num_units] else None


def smallest_footprint(cands: list[Candidate], num_units: int, start_at: Callable[[int, int], int], limit: int,
                       straddle_at: Callable[[int, int], int | None] | None = None) -> list[Candidate] | None:
    """The path whose stages, laid out in order from device 0 by `start_at(cursor, tp)` (the first device
    a stage may take at or after the cursor), end soonest within `limit` devices; ties broken by lower
    latency, then fewer devices. `straddle_at(cursor, tp)`, if given, is an earlier first device across
    two groups (None: none), where the stage's latency grows by its `straddle_ps`. The state is (boundary,
    where the last stage ends); an end no later with no more latency and devices dominates, since neither
    rule moves a stage earlier for a later cursor (placement.next_start) and a stage's straddle costs the
    same wherever it lies, so each boundary keeps only its Pareto front."""
    by_first: list[list[Candidate]] = [[] for _ in range(num_units)]
    for c in sorted(cands, key=lambda c: (c.first, c.stop, c.tp, c.split)):
        by_first[c.first].append(c)
    # states[k]: end -> (latency, devices, candidate, end before it)
    states: list[dict[int, tuple[int, int, Candidate | None, int]]] = [{} for _ in range(num_units + 1)]
    states[0][0] = (0, 0, None, 0)
    for k in range(num_units):
        for end, (lat, devices, _, _) in _front(states[k]):
            for c in by_first[k]:
                for start, extra in _starts(end, c, start_at, straddle_at):
                    stop_end = start + c.tp
                    key = (lat + c.latency_ps + extra, devices + c.tp, c, end)
                    old = states[c.stop].get(stop_end)
                    if stop_end <= limit and (old is None or key[:2] < old[:2]):
                        states[c.stop][stop_end] = key
    if not states[num_units]:
        return None
    end = min(states[num_units], key=lambda e: (e, *states[num_units][e][:2]))
    path, k = [], num_units
    while k:
        _, _, c, end = states[k][end]
        path.append(c)
        k = c.first
    return path[::-1]


def _starts(cursor: int, c: Candidate, start_at: Callable[[int, int], int],
            straddle_at: Callable[[int, int], int | None] | None) -> list[tuple[int, int]]:
    """Where candidate `c` may start after `cursor`, with the latency each adds beyond its own."""
    starts = [(start_at(cursor, c.tp), 0)]
    across = straddle_at(cursor, c.tp) if straddle_at else None
    if across is not None and across < starts[0][0]:
        starts.append((across, c.straddle_ps))
    return starts


def _front(states: dict[int, tuple[int, int, Candidate | None, int]]) -> list[tuple[int, tuple]]:
    """The states no other dominates (ends no later with latency and devices no greater), by end."""
    front: list[tuple[int, tuple]] = []
    for end, value in sorted(states.items()):
        if not any(v[0] <= value[0] and v[1] <= value[1] for _, v in front):
            front.append((end, value))
    return front


def lowest_latency(cands: list[Candidate], num_units: int, max_chips: int) -> list[Candidate] | None:
    """The fastest path within a chip budget (a knapsack over boundaries; small cases)."""
    table: list[dict[int, tuple[int, list[Candidate]]]] = [{} for _ in range(num_units + 1)]
    table[0][0] = (0, [])
    for k in range(num_units):
        for c in (c for c in cands if c.first == k):
            for chips, (lat, path) in sorted(table[k].items()):
                n = chips + c.tp
                if n <= max_chips and (n not in table[c.stop] or lat + c.latency_ps < table[c.stop][n][0]):
                    table[c.stop][n] = (lat + c.latency_ps, path + [c])
    if not table[num_units]:
        return None
    return min(table[num_units].values(), key=lambda v: (v[0], sum(c.tp for c in v[1])))[1]


def prune(cands: list[Candidate], num_units: int, max_chips: int, max_latency_ps: int) -> list[Candidate]:
    """The candidates that can lie on a path within `max_chips` and `max_latency_ps`.

    A candidate survives when the fewest chips (and, separately, the least latency)
    of any path through it fits: the best way to reach its first unit, plus itself,
    plus the best way on from its stop. Exact: no path within both limits is lost."""
    chips_in, chips_out = _reach(cands, num_units, lambda c: c.tp)
    lat_in, lat_out = _reach(cands, num_units, lambda c: c.latency_ps)
    return [c for c in cands
            if chips_in[c.first] + c.tp + chips_out[c.stop] <= max_chips
            and lat_in[c.first] + c.latency_ps + lat_out[c.stop] <= max_latency_ps]


def _reach(cands: list[Candidate], num_units: int, weight) -> tuple[list[float], list[float]]:
    """Least total weight of a path from unit 0 to each boundary, and from each boundary to the end."""
    inf = float("inf")
    into, onward = [inf] * (num_units + 1), [inf] * (num_units + 1)
    into[0], onward[num_units] = 0, 0
    for c in sorted(cands, key=lambda c: c.first):
        into[c.stop] = min(into[c.stop], into[c.first] + weight(c))
    for c in sorted(cands, key=lambda c: -c.stop):
        onward[c.first] = min(onward[c.first], weight(c) + onward[c.stop])
    return into, onward


def _path(back: list[Candidate | None], stop: int) -> list[Candidate]:
    path = []
    while stop:
        c = back[stop]
        path.append(c)
        stop = c.first
    return path[::-1]
