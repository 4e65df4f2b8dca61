"""Exact dynamic programmes over the same candidates: a cross-check for CP-SAT and its hint."""

from __future__ import annotations

import bisect
import itertools
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


@dataclass(frozen=True, slots=True)
class Packing:
    """Stages narrower than a node may take the free tail of an earlier node, out of pipeline order: the
    chips a stage of a node or more left behind when it moved on to a node's first chip (placement.next_start).
    `node`: devices a node; `extra_ps(a, b)`: what a hand-off from device a to device b adds to a stage's
    latency beyond the one hop every candidate's latency holds (candidates._entry)."""

    node: int
    extra_ps: Callable[[int, int], int]


def smallest_footprint(cands: list[Candidate], num_units: int, start_at: Callable[[int, int], int], limit: int,
                       straddle_at: Callable[[int, int], int | None] | None = None,
                       pack: Packing | None = None) -> list[Candidate] | None:
    """The path whose stages, laid out in order from device 0 by `start_at(cursor, tp)` (the first device
    a stage may take at or after the cursor), end soonest within `limit` devices; ties broken by lower
    latency, then fewer devices. `straddle_at(cursor, tp)`, if given, is an earlier first device across
    two groups (None: none), where the stage's latency grows by its `straddle_ps` (footprint_states' soonest
    end). `pack`: small stages may also fill a node's free tail (Packing)."""
    ends = footprint_states(cands, num_units, start_at, limit, straddle_at, pack)
    if not ends:
        return None
    return ends[min(ends, key=lambda e: (e, *ends[e][:2]))][2]


def footprint_states(cands: list[Candidate], num_units: int, start_at: Callable[[int, int], int], limit: int,
                     straddle_at: Callable[[int, int], int | None] | None = None, pack: Packing | None = None
                     ) -> dict[int, tuple[int, int, list[Candidate], list[int]]]:
    """Where a whole path laid out in order by `start_at` (or, sooner, `straddle_at`: smallest_footprint)
    may end within `limit` devices: end -> (latency, devices, the fastest path ending there, then the one on
    fewer devices, its stages' first devices), the ends no sooner end beats on both. The state is (boundary,
    where the last stage ends); an end no later with no more latency and devices dominates, since neither
    rule moves a stage earlier for a later cursor (placement.next_start) and a stage's straddle costs the
    same wherever it lies, so each boundary keeps only its Pareto front. With `pack` the state also holds
    one node's free tail (first device, free devices) a later stage below a node may take instead of the
    cursor, its hand-offs in and out (the next stage's taken at the cursor) priced by `pack.extra_ps`; a
    state then dominates only with a tail at least as large (where the tail lies moves those hand-offs'
    price a little, which the plan's timing of the placed stages then counts exactly)."""
    return _states(cands, num_units, layout_rule(start_at, straddle_at), limit, pack)


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


def _states(cands: list[Candidate], num_units: int, starts: Callable[[int, int], tuple[int, int | None]], limit: int,
            pack: Packing | None = None) -> dict[int, tuple[int, int, list[Candidate], list[int]]]:
    by_first: list[list[Candidate]] = [[] for _ in range(num_units)]
    for c in sorted(cands, key=lambda c: (c.first, c.stop, c.tp, c.split)):
        by_first[c.first].append(c)
    # states[k]: (end, tail's first device, its free devices) -> (latency, devices, candidate, key before, first)
    states: list[dict[tuple[int, int, int], tuple]] = [{} for _ in range(num_units + 1)]
    states[0][0, 0, 0] = (0, 0, None, None, 0)
    for k in range(num_units):
        if not by_first[k]:
            continue
        if pack is None:
            _step_in_order(states, _front(states[k]), by_first[k], starts, limit)
        else:
            _step_packed(states, _front(states[k]), by_first[k], starts, limit, pack, num_units)
    best: dict[int, tuple] = {}
    for key, value in _front(states[-1]):
        if key[0] not in best or value[:2] < best[key[0]][1][:2]:
            best[key[0]] = key, value
    ends = [(end, value) for end, (_, value) in sorted(best.items())]
    return {end: (value[0], value[1], *_back(states, num_units, best[end][0]))
            for i, (end, value) in enumerate(ends) if not any(v[0] <= value[0] and v[1] <= value[1]
                                                              for _, v in ends[:i])}


def _step_in_order(states: list[dict[tuple, tuple]], front: list[tuple[tuple, tuple]], cands: list[Candidate],
                   starts: Callable[[int, int], tuple[int, int | None]], limit: int) -> None:
    """_states' step from one boundary's front without packing (every tail empty): each stage at the rule's
    start, then across two groups (a tie keeps the first value), inlined: the DP takes this step for every
    state and candidate."""
    rows = [(c, states[c.stop], c.tp, c.latency_ps, c.straddle_ps) for c in cands]
    for key, (lat, devices, *_) in front:
        end = key[0]
        for c, target, tp, lat_c, straddle in rows:
            start, across = starts(end, tp)
            for first, extra in ((start, 0),) if across is None else ((start, 0), (across, straddle)):
                stop = first + tp
                if stop > limit:
                    continue
                new_lat, new_devices = lat + lat_c + extra, devices + tp
                old = target.get((stop, 0, 0))
                if old is None or (new_lat, new_devices) < (old[0], old[1]):
                    target[stop, 0, 0] = (new_lat, new_devices, c, key, first)


def _step_packed(states: list[dict[tuple, tuple]], front: list[tuple[tuple, tuple]], cands: list[Candidate],
                 starts: Callable[[int, int], tuple[int, int | None]], limit: int, pack: Packing, num_units: int
                 ) -> None:
    """_states' step from one boundary's front with packing. Each stage may take the rule's start or one across
    two groups, keeping the state's tail or taking the cursor node's chips it leaves behind as the tail
    instead; or lie inside the tail (Packing), its hand-offs in and out priced by `pack.extra_ps` (none out
    of the last stage). A tie keeps the first value, so the order of the moves is part of the answer."""
    rows = [(c, states[c.stop], c.tp, c.latency_ps, c.straddle_ps, c.stop == num_units) for c in cands]
    node, extra_ps = pack.node, pack.extra_ps
    for key, (lat, devices, *_) in front:
        end, tail_first, tail_free = key
        boundary = -(-end // node) * node if end % node else None  # _left_behind's, once per state
        for c, target, tp, lat_c, straddle, last in rows:
            start, across = starts(end, tp)
            moves = [(start, 0)] if across is None else [(start, 0), (across, straddle)]
            for first, extra in moves:
                stop = first + tp
                if stop > limit:
                    continue
                new_lat, new_devices = lat + lat_c + extra, devices + tp
                for stop_key in ((stop, tail_first, tail_free), (stop, end, boundary - end)) \
                        if boundary is not None and first >= boundary else ((stop, tail_first, tail_free),):
                    old = target.get(stop_key)
                    if old is None or (new_lat, new_devices) < (old[0], old[1]):
                        target[stop_key] = (new_lat, new_devices, c, key, first)
            if tail_free >= tp:
                out = 0 if last else extra_ps(tail_first + tp - 1, end)
                rest = (tail_first + tp, tail_free - tp) if tail_free > tp else (0, 0)
                extra = extra_ps(end - 1, tail_first) + out
                new_lat, new_devices = lat + lat_c + extra, devices + tp
                stop_key = (end, *rest)
                old = target.get(stop_key)
                if old is None or (new_lat, new_devices) < (old[0], old[1]):
                    target[stop_key] = (new_lat, new_devices, c, key, tail_first)


def _back(states: list[dict[tuple, tuple]], k: int, key: tuple) -> tuple[list[Candidate], list[int]]:
    """The path into state `key` of boundary k, and its stages' first devices."""
    path, firsts = [], []
    while k:
        _, _, c, key, first = states[k][key]
        path.append(c)
        firsts.append(first)
        k = c.first
    return path[::-1], firsts[::-1]


@dataclass(frozen=True, slots=True)
class FrontPoint:
    """A path on the front: where it ends laid out in order, its latency and devices, its slowest
    stage's prefill chunk (`bottleneck_s`: TTFT's max term), and its stages' first devices."""

    end: int
    latency_ps: int
    devices: int
    bottleneck_s: float
    path: tuple[Candidate, ...]
    starts: tuple[int, ...] = ()

    @property
    def packed(self) -> bool:
        """Whether a stage lies before an earlier stage's end: out of pipeline order, in a node's tail."""
        ends = itertools.accumulate((s + c.tp for s, c in zip(self.starts, self.path, strict=True)), max)
        return any(s < end for s, end in zip(self.starts[1:], ends, strict=False))


def footprint_front(cands: list[Candidate], num_units: int, start_at: Callable[[int, int], int], limit: int,
                    chunk_s: Callable[[Candidate], float],
                    straddle_at: Callable[[int, int], int | None] | None = None,
                    pack: Packing | None = None, first_round: dict | None = None) -> list[FrontPoint]:
    """Every path no other beats on end, latency and slowest stage's prefill chunk (`chunk_s` of each
    candidate), exactly (with `pack`, as exactly as footprint_states): footprint_states with only the
    candidates below a cap on the chunk time, the cap lowered each round to the slowest chunk among the
    paths it found (no cap between changes any end's path), until no path fits. Ordered by end, latency,
    then bottleneck. `first_round`: footprint_states' answer for these candidates and rules within `limit`
    (its ends up to `limit` of a pass with a larger limit are the same: no move ends a path sooner), the
    first round's when no candidate's chunk time is infinite."""
    times = {_key(c): chunk_s(c) for c in cands}
    starts = layout_rule(start_at, straddle_at)
    cap, found = float("inf"), {}
    reuse = first_round is not None and all(t < cap for t in times.values())
    while True:
        usable = [c for c in cands if times[_key(c)] < cap]
        ends = first_round if reuse else _states(usable, num_units, starts, limit, pack)
        reuse = False
        if not ends:
            break
        slowest = {end: max(times[_key(c)] for c in path) for end, (_, _, path, _) in ends.items()}
        for end, (lat, devices, path, firsts) in ends.items():
            found.setdefault((end, lat, slowest[end]),
                             FrontPoint(end, lat, devices, slowest[end], tuple(path), tuple(firsts)))
        cap = max(slowest.values())
    points = sorted(found.values(), key=lambda p: (p.end, p.latency_ps, p.bottleneck_s, p.devices))
    return [p for p in points if not any(q.end <= p.end and q.latency_ps <= p.latency_ps
                                         and q.bottleneck_s <= p.bottleneck_s and q != p for q in points)]


def _key(c: Candidate) -> tuple[int, int, int, bool]:
    return c.first, c.stop, c.tp, c.split


def _front(states: dict[tuple[int, int, int], tuple]) -> list[tuple[tuple[int, int, int], tuple]]:
    """The states no other dominates (ends no later, a free tail no smaller, latency and devices no
    greater), by end, then the larger tail: each tail size keeps the staircase of what came before with a
    tail at least as large, so a state is checked in a few bisections, not against the whole front."""
    front: list[tuple[tuple[int, int, int], tuple]] = []
    frees = sorted({k[2] for k in states})
    if len(frees) == 1:  # one tail size (always without packing): the order by key is the order above
        stair = _Stair()
        for key in sorted(states):
            value = states[key]
            if not stair.beats(value[0], value[1]):
                front.append((key, value))
                stair.insert(value[0], value[1])
        return front
    stairs = [_Stair() for _ in frees]
    for end, free, first in sorted((k[0], -k[2], k[1]) for k in states):
        key = (end, first, -free)
        value = states[key]
        if not stairs[frees.index(-free)].beats(value[0], value[1]):
            front.append((key, value))
            for stair in stairs[:bisect.bisect_right(frees, -free)]:
                stair.add(value[0], value[1])
    return front


class _Stair:
    """(latency, devices) points no other beats on both: latencies rising, devices falling."""

    __slots__ = ("lats", "devs")

    def __init__(self) -> None:
        self.lats: list[int] = []
        self.devs: list[int] = []

    def beats(self, lat: int, devices: int) -> bool:
        """Whether a point has latency and devices no greater."""
        i = bisect.bisect_right(self.lats, lat) - 1
        return i >= 0 and self.devs[i] <= devices

    def add(self, lat: int, devices: int) -> None:
        """A point, unless another beats it, dropping those it beats."""
        if not self.beats(lat, devices):
            self.insert(lat, devices)

    def insert(self, lat: int, devices: int) -> None:
        """A point no other beats, dropping those it beats."""
        i = j = bisect.bisect_left(self.lats, lat)
        while j < len(self.lats) and self.devs[j] >= devices:
            j += 1
        self.lats[i:j], self.devs[i:j] = [lat], [devices]


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
