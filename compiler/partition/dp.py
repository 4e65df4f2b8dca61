"""Exact dynamic programmes over the same candidates: a cross-check for CP-SAT and its hint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

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
    two groups (None: none), where the stage's latency grows by its `straddle_ps` (footprint_states' soonest
    end)."""
    ends = footprint_states(cands, num_units, start_at, limit, straddle_at)
    if not ends:
        return None
    return ends[min(ends, key=lambda e: (e, *ends[e][:2]))][2]


def footprint_states(cands: list[Candidate], num_units: int, start_at: Callable[[int, int], int], limit: int,
                     straddle_at: Callable[[int, int], int | None] | None = None
                     ) -> dict[int, tuple[int, int, list[Candidate]]]:
    """Where a whole path laid out in order by `start_at` (or, sooner, `straddle_at`: smallest_footprint)
    may end within `limit` devices: end -> (latency, devices, the fastest path ending there, then the one on
    fewer devices), the ends no sooner end beats on both. The state is (boundary, where the last stage ends);
    an end no later with no more latency and devices dominates, since neither rule moves a stage earlier for
    a later cursor (placement.next_start) and a stage's straddle costs the same wherever it lies, so each
    boundary keeps only its Pareto front."""
    return _states(cands, num_units, layout_rule(start_at, straddle_at), limit)


def layout_rule(start_at: Callable[[int, int], int], straddle_at: Callable[[int, int], int | None] | None = None
                ) -> Callable[[int, int], tuple[int, int | None]]:
    """(cursor, tp) -> (the first device `start_at` gives, an earlier one across two groups or None),
    memoised: both rules are pure, and the DP asks the same few pairs for every candidate of every state."""
    @cache
    def starts(cursor: int, tp: int) -> tuple[int, int | None]:
        start = start_at(cursor, tp)
        across = straddle_at(cursor, tp) if straddle_at else None
        return start, across if across is not None and across < start else None
    return starts


def _states(cands: list[Candidate], num_units: int, starts: Callable[[int, int], tuple[int, int | None]], limit: int
            ) -> dict[int, tuple[int, int, list[Candidate]]]:
    by_first: list[list[Candidate]] = [[] for _ in range(num_units)]
    for c in sorted(cands, key=lambda c: (c.first, c.stop, c.tp, c.split)):
        by_first[c.first].append(c)
    # states[k]: end -> (latency, devices, candidate, end before it)
    states: list[dict[int, tuple[int, int, Candidate | None, int]]] = [{} for _ in range(num_units + 1)]
    states[0][0] = (0, 0, None, 0)
    for k in range(num_units):
        for end, (lat, devices, _, _) in _front(states[k]):
            for c in by_first[k]:
                start, across = starts(end, c.tp)
                for first, extra in ((start, 0),) if across is None else ((start, 0), (across, c.straddle_ps)):
                    stop_end = first + c.tp
                    key = (lat + c.latency_ps + extra, devices + c.tp, c, end)
                    old = states[c.stop].get(stop_end)
                    if stop_end <= limit and (old is None or key[:2] < old[:2]):
                        states[c.stop][stop_end] = key
    return {end: (lat, devices, _back(states, num_units, end)) for end, (lat, devices, _, _) in _front(states[-1])}


def _back(states: list[dict[int, tuple]], k: int, end: int) -> list[Candidate]:
    path = []
    while k:
        _, _, c, end = states[k][end]
        path.append(c)
        k = c.first
    return path[::-1]


@dataclass(frozen=True, slots=True)
class FrontPoint:
    """A path on the front: where it ends laid out in order, its latency and devices, and its slowest
    stage's prefill chunk (`bottleneck_s`: TTFT's max term)."""

    end: int
    latency_ps: int
    devices: int
    bottleneck_s: float
    path: tuple[Candidate, ...]


def footprint_front(cands: list[Candidate], num_units: int, start_at: Callable[[int, int], int], limit: int,
                    chunk_s: Callable[[Candidate], float],
                    straddle_at: Callable[[int, int], int | None] | None = None) -> list[FrontPoint]:
    """Every path no other beats on end, latency and slowest stage's prefill chunk (`chunk_s` of each
    candidate), exactly: footprint_states with only the candidates below a cap on the chunk time, the cap
    lowered each round to the slowest chunk among the paths it found (no cap between changes any end's
    path), until no path fits. Ordered by end, latency, then bottleneck."""
    times = {_key(c): chunk_s(c) for c in cands}
    starts = layout_rule(start_at, straddle_at)
    cap, found = float("inf"), {}
    while True:
        usable = [c for c in cands if times[_key(c)] < cap]
        ends = _states(usable, num_units, starts, limit)
        if not ends:
            break
        slowest = {end: max(times[_key(c)] for c in path) for end, (_, _, path) in ends.items()}
        for end, (lat, devices, path) in ends.items():
            found.setdefault((end, lat, slowest[end]), FrontPoint(end, lat, devices, slowest[end], tuple(path)))
        cap = max(slowest.values())
    points = sorted(found.values(), key=lambda p: (p.end, p.latency_ps, p.bottleneck_s, p.devices))
    return [p for p in points if not any(q.end <= p.end and q.latency_ps <= p.latency_ps
                                         and q.bottleneck_s <= p.bottleneck_s and q != p for q in points)]


def _key(c: Candidate) -> tuple[int, int, int, bool]:
    return c.first, c.stop, c.tp, c.split


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
