"""Wire occupancy: the wires each chip message crosses between its two ends, and when it holds them.

The message rules (targets/messages.py) hold a RECV to its SEND's start plus the latency of the fastest
wired path, and a SEND's duration to its bytes over one link of its class; what the wires between the two
ends carry meanwhile they leave open. Here every SEND takes the path the arrival rule times
(targets.topology.Wiring.routes: the fastest, then the fewest hops, then the fewest global hops, then the lowest
chip ids) and holds each directed edge of it for ceil(bytes / one link's bytes a cycle) cycles, cut-through: hop i
starts at the send's start plus the latency of the hops before it. An edge of `links` parallel links carries up to
`links` messages at once; `load` sweeps every edge's starts and ends for its peak concurrency and the
cycles it spends over its links (a link freed at a cycle is free for a message starting at it).

The `link-busy` hazard (`check_link_busy`, which `sramflow run --wires` adds to the interpreter's rules): a
SEND one of whose hops starts on an edge already carrying as many messages as it has links.

What sharing would cost (`shared_delays`): where an edge's overlapping messages ever outnumber its
links, they share it fairly (processor sharing: n messages on `links` links each move at
min(1, links / n) of one link's rate); a message's delay is the most any of its hops ends later than it
would alone. That is a lower bound on the cost: a hop's delay pushes neither the hops after it nor the
instructions waiting on the RECV.

Edges are of three classes: "local" (within a node), "global" (between two nodes of a group) and
"groups" (between groups). SENDs whose peer is no chip of the Program or that no wire reaches are the
message rules' link-range hazards: counted (`unrouted`), not routed. Every step is vectorised but the
sharing, which runs only over the edges' oversubscribed stretches.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ir.errors import ConfigError
from ir.isa import Op
from ir.program import Program
from targets.messages import fifo_pairs
from targets.spec import SystemSpec
from targets.timing import Timing, durations
from targets.topology import Wiring

CLASSES = ("local", "global", "groups")
_MESSAGE_COLUMNS = ("chip", "op", "peer", "tag", "issue", "src_bytes")


@dataclass(frozen=True, eq=False)
class Edges:
    """The directed edges of a wiring: edge 2k runs from the lower chip of the k-th wire to the higher,
    2k + 1 back. Per edge its ends, parallel links, one link's bytes a cycle, hop cycles and class."""

    ends: np.ndarray
    links: np.ndarray
    bytes_per_cycle: np.ndarray
    cycles: np.ndarray
    cls: np.ndarray

    @classmethod
    def of(cls, wiring: Wiring) -> Edges:
        graph = wiring.graph
        wires = sorted(((min(u, v), max(u, v), e) for u, v, e in graph.edges(data=True)), key=lambda w: w[:2])
        ends = np.array([p for u, v, _ in wires for p in ((u, v), (v, u))], np.int64).reshape(-1, 2)
        group = np.array([graph.nodes[c]["group"] for c in range(graph.number_of_nodes())], np.int64)
        kind = np.where(group[ends[::2, 0]] != group[ends[::2, 1]], 2,
                        np.array([0 if e["kind"] == "local" else 1 for *_, e in wires], np.int64))

        def both_ways(values, dtype=np.int64) -> np.ndarray:
            return np.repeat(np.array(values, dtype), 2)

        return cls(ends=ends, links=both_ways([e["links"] for *_, e in wires]),
                   bytes_per_cycle=both_ways([e["bw_bytes_per_s"] / e["links"] / wiring.clock_hz for *_, e in wires],
                                             np.float64),
                   cycles=both_ways([e["cycles"] for *_, e in wires]), cls=np.repeat(kind, 2))

    def index(self) -> dict[tuple[int, int], int]:
        return {(int(u), int(v)): k for k, (u, v) in enumerate(self.ends.tolist())}


@dataclass(frozen=True, eq=False)
class Occupancy:
    """Every hop of every routed SEND: the message (a row of `cols`), the directed edge, and the cycles
    [start, end) it holds one of the edge's links. `arrival`: per row of `cols`, the cycles from a SEND's
    start until its data is at its peer (the fastest path's latency; -1 for RECVs and unrouted SENDs)."""

    program: Program
    system: SystemSpec
    edges: Edges
    cols: dict[str, np.ndarray]
    arrival: np.ndarray
    message: np.ndarray
    edge: np.ndarray
    start: np.ndarray
    end: np.ndarray
    unrouted: int

    @cached_property
    def load(self) -> Load:
        return load(self)

    @cached_property
    def delay(self) -> np.ndarray:
        """Per hop, `shared_delays`."""
        return shared_delays(self)

    @cached_property
    def receives(self) -> Receives:
        return Receives.of(self)

    def message_delays(self, hops: np.ndarray) -> np.ndarray:
        """Per row of `cols`, the most any of its chosen `hops` (a mask over hops) ends later when shared."""
        out = np.zeros(len(self.arrival), np.int64)
        np.maximum.at(out, self.message[hops], self.delay[hops])
        return out


def occupancy(program: Program, system: SystemSpec) -> Occupancy:
    """Route every SEND of a chip Program over its target's wiring and lay out its hops in time."""
    if program.dialect != "queues":
        raise ConfigError(f"wire occupancy follows chip links; a {program.dialect}-dialect Program's routes run on "
                          "a wafer's mesh (targets/wafer_timing.py)")
    wiring = Wiring.of(system, program.chips)
    edges = Edges.of(wiring)
    msg = np.isin(program.body["op"], (Op.SEND, Op.RECV))
    cols = program.expand(np.flatnonzero(_has(program, msg)), names=_MESSAGE_COLUMNS, ordered=False, origin=True,
                          rows=msg)
    sends = np.flatnonzero(cols["op"] == Op.SEND)
    chip, peer = cols["chip"][sends].astype(np.int64), cols["peer"][sends].astype(np.int64)
    aimed = (peer >= 0) & (peer < program.chips) & (peer != chip)
    pairs, inverse = np.unique(chip[aimed] * program.chips + peer[aimed], return_inverse=True)
    ends = [divmod(int(p), program.chips) for p in pairs.tolist()]
    found, at = wiring.routes(ends), edges.index()
    paths = [[at[hop] for hop in zip(r.path, r.path[1:], strict=False)] if (r := found.get(e)) else [] for e in ends]
    hops = np.array([len(p) for p in paths], np.int64)
    table = np.array([e for p in paths for e in p], np.int64)
    before = _latency_before(edges.cycles[table], hops)  # cycles of the hops before each hop on its path
    latency = np.bincount(np.repeat(np.arange(len(pairs)), hops), edges.cycles[table], len(pairs)).astype(np.int64)
    pair = np.full(len(sends), -1, np.int64)
    pair[aimed] = inverse.reshape(-1)
    routed = aimed & (hops[np.maximum(pair, 0)] > 0)
    arrival = np.full(len(cols["op"]), -1, np.int64)
    arrival[sends[peer == chip]] = 0  # a message to its own chip crosses no wire
    rows, pair = sends[routed], pair[routed]
    arrival[rows] = latency[pair]
    message = np.repeat(rows, hops[pair])
    hop = np.repeat(np.cumsum(hops)[pair] - hops[pair], hops[pair]) + _rank(hops[pair])
    edge = table[hop]
    start = cols["issue"][message].astype(np.int64) + before[hop]
    hold = np.maximum(1, np.ceil(cols["src_bytes"][message] / edges.bytes_per_cycle[edge] - 1e-9)).astype(np.int64)
    unrouted = int((~routed & (peer != chip)).sum())
    return Occupancy(program, system, edges, cols, arrival, message, edge, start, start + hold, unrouted)


def busy_hops(occ: Occupancy) -> np.ndarray:
    """Per hop, how many messages hold its edge as it starts (itself included; a message ending at a cycle
    has left the link a message starting at it takes)."""
    span = int(occ.end.max(initial=0)) + 1
    starts, ends = np.sort(occ.edge * span + occ.start), np.sort(occ.edge * span + occ.end)
    at = occ.edge * span + occ.start
    return np.searchsorted(starts, at, "right") - np.searchsorted(ends, at, "right")


def check_link_busy(program: Program, system: SystemSpec, found) -> None:
    """`link-busy`: each SEND of a chip Program one of whose hops starts on a directed edge whose links are all
    held, located at the SEND, naming the edge, the cycle and the messages holding it (`found`: a
    targets.hazards.Hazards)."""
    if program.dialect != "queues":
        return
    occ = occupancy(program, system)
    held = busy_hops(occ)
    over = np.flatnonzero(held > occ.edges.links[occ.edge])
    if not len(over):
        return
    over = over[np.lexsort((over, occ.start[over]))]
    _, first = np.unique(occ.message[over], return_index=True)  # a SEND once, at its first crowded hop
    over = over[np.sort(first)]
    shown = over[:found.limit]
    for h in shown.tolist():
        m = int(occ.message[h])
        found.add_at(int(occ.cols["_inst"][m]), int(occ.cols["_row"][m]), "link-busy", _busy_detail(occ, h))
    found.count("link-busy", len(over) - len(shown))


def _busy_detail(occ: Occupancy, hop: int) -> str:
    e, t = int(occ.edge[hop]), int(occ.start[hop])
    mine = np.flatnonzero((occ.edge == e) & (occ.start <= t) & (occ.end > t) & (np.arange(len(occ.edge)) != hop))
    c = occ.cols
    holders = ", ".join(f"chip {int(c['chip'][m])} -> {int(c['peer'][m])} sent @{int(c['issue'][m])}"
                        for m in occ.message[mine[:4]].tolist()) + (" ..." if len(mine) > 4 else "")
    u, v = occ.edges.ends[e].tolist()
    return (f"its message to chip {int(c['peer'][occ.message[hop]])} enters edge {u}->{v} "
            f"({int(occ.edges.links[e])} link(s)) at cycle {t}, held by {holders}")


def _has(program: Program, rows: np.ndarray) -> np.ndarray:
    """Per instance, whether its block holds any of `rows`."""
    block = np.repeat(np.arange(program.blocks), program.block_rows)
    return (np.bincount(block[rows], minlength=program.blocks) > 0)[program.inst["block"]]


def _rank(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., counts[i] - 1 for each i, concatenated."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def _latency_before(cycles: np.ndarray, hops: np.ndarray) -> np.ndarray:
    """For paths laid end to end (`hops` each), the summed cycles of the hops before each hop on its path."""
    total = np.cumsum(cycles) - cycles
    return total - np.repeat(total[np.cumsum(hops) - hops] if len(hops) else total[:0], hops)


@dataclass(frozen=True, eq=False)
class Load:
    """Per directed edge: hops it carries, its peak concurrency, and the cycles its messages outnumber
    its links. Per hop: its stretch (a maximal run of overlapping hops on its edge) and whether that
    stretch ever outnumbers the links."""

    hops: np.ndarray
    peak: np.ndarray
    over_cycles: np.ndarray
    stretch: np.ndarray
    crowded: np.ndarray


def load(occ: Occupancy) -> Load:
    """One sweep over every edge's hop starts (+1) and ends (-1), sorted by edge, then cycle, ends first."""
    n, edges = len(occ.edge), len(occ.edges.links)
    ev_edge, ev_t = np.r_[occ.edge, occ.edge], np.r_[occ.start, occ.end]
    ev_d = np.r_[np.ones(n, np.int64), -np.ones(n, np.int64)]
    order = np.lexsort((ev_d, ev_t, ev_edge))
    ev_edge, ev_t, ev_d = ev_edge[order], ev_t[order], ev_d[order]
    level = np.cumsum(ev_d)  # each edge's events sum to 0: the running sum restarts at every edge
    links = occ.edges.links[ev_edge]
    peak = np.zeros(edges, np.int64)
    if n:
        firsts = np.r_[0, np.flatnonzero(ev_edge[1:] != ev_edge[:-1]) + 1]
        peak[ev_edge[firsts]] = np.maximum.reduceat(level, firsts)
    same = ev_edge[1:] == ev_edge[:-1]
    over = same & (level[:-1] > links[:-1])
    over_cycles = np.bincount(ev_edge[:-1][over], (ev_t[1:] - ev_t[:-1])[over], edges).astype(np.int64)
    opens = (ev_d > 0) & (level == 1)  # a hop starting on an idle edge begins a stretch
    stretch_of_event = np.cumsum(opens) - 1
    stretch_peak = np.zeros(int(opens.sum()), np.int64)
    np.maximum.at(stretch_peak, stretch_of_event, level)
    crowded_stretch = stretch_peak > occ.edges.links[ev_edge[opens]]
    starts = ev_d > 0
    stretch = np.empty(n, np.int64)
    stretch[order[starts]] = stretch_of_event[starts]
    return Load(np.bincount(occ.edge, minlength=edges), peak, over_cycles, stretch, crowded_stretch[stretch])


def shared_delays(occ: Occupancy) -> np.ndarray:
    """Per hop, the cycles it ends later when its edge's crowded stretch is shared fairly (0 elsewhere)."""
    lo = occ.load
    hops = np.flatnonzero(lo.crowded)
    hops = hops[np.lexsort((hops, occ.start[hops], lo.stretch[hops]))]
    delay = np.zeros(len(occ.edge), np.int64)
    if not len(hops):
        return delay
    cuts = np.r_[0, np.flatnonzero(lo.stretch[hops][1:] != lo.stretch[hops][:-1]) + 1, len(hops)]
    start, hold = occ.start[hops], occ.end[hops] - occ.start[hops]
    links = occ.edges.links[occ.edge[hops]]
    ends = np.zeros(len(hops), np.int64)
    for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
        ends[a:b] = _shared_ends(start[a:b].tolist(), hold[a:b].tolist(), int(links[a]))
    delay[hops] = np.maximum(0, ends - occ.end[hops])
    return delay


def _shared_ends(start: list[int], work: list[int], links: int) -> list[int]:
    """Ends of jobs (`start` ascending, `work` cycles alone) on `links` servers shared fairly: the n jobs
    present each progress at min(1, links / n) a cycle. Ends round up to whole cycles."""
    n, i, t = len(start), 0, float(start[0])
    left: dict[int, float] = {}
    end = [0] * n
    while i < n or left:
        while i < n and start[i] <= t:
            left[i] = float(work[i])
            i += 1
        if not left:
            t = float(start[i])
            continue
        rate = min(1.0, links / len(left))
        least = min(left.values())
        done_at = t + least / rate
        step = min(done_at, float(start[i])) if i < n else done_at
        moved = (step - t) * rate
        t = step
        for k in list(left):
            left[k] -= moved
            if left[k] <= 1e-9:
                end[k] = int(np.ceil(t - 1e-9))
                del left[k]
    return end


@dataclass(frozen=True, slots=True)
class ClassLoad:
    """One class of edge under a Program's messages (the benchmark's row). `latest_recv_later_by`: how
    much later the latest RECV ends when the class's wires are shared fairly, with each message's delay
    alone; `carried`: when every instruction of a chip after a pushed RECV waits as long (an estimate of
    what the delays add up to along the Program's chains)."""

    edges_used: int
    messages: int
    hops: int
    peak: int
    links_at_peak: int
    edges_over: int
    over_cycles: int
    worst_edge_over_cycles: int
    most_delay: int
    latest_recv_later_by: int
    carried: int


def class_loads(occ: Occupancy) -> dict[str, ClassLoad]:
    """Per edge class, and over them all ("all"): what its edges carry, how far over their links, and what
    sharing them fairly costs the RECVs (each message delayed by its worst hop on the class's edges)."""
    lo, edges = occ.load, occ.edges
    out = {}
    for name, mine in [*((n, edges.cls == k) for k, n in enumerate(CLASSES)), ("all", np.ones(len(edges.cls), bool))]:
        hop_mine = mine[occ.edge]
        used = mine & (lo.hops > 0)
        worst = int(np.argmax(np.where(used, lo.peak / np.maximum(edges.links, 1), -1.0)))
        per_msg = occ.message_delays(hop_mine)
        out[name] = ClassLoad(
            edges_used=int(used.sum()),
            messages=len(np.unique(occ.message[hop_mine])),
            hops=int(hop_mine.sum()),
            peak=int(lo.peak[worst]) if used.any() else 0,
            links_at_peak=int(edges.links[worst]) if used.any() else 0,
            edges_over=int((mine & (lo.over_cycles > 0)).sum()),
            over_cycles=int(lo.over_cycles[mine].sum()),
            worst_edge_over_cycles=int(lo.over_cycles[mine].max(initial=0)),
            most_delay=int(per_msg.max(initial=0)),
            latest_recv_later_by=occ.receives.later_by(per_msg),
            carried=occ.receives.later_by(per_msg, carried=True),
        )
    return out


@dataclass(frozen=True, eq=False)
class Receives:
    """Every RECV of a chip (rows of the Occupancy's cols) with its SEND, in the order of their ends: where
    each runs, when it starts and ends, and the earliest it could end (its SEND's start, the path's latency,
    then its own cycles)."""

    send: np.ndarray
    chip: np.ndarray
    sender: np.ndarray
    start: np.ndarray
    send_start: np.ndarray
    end: np.ndarray
    floor: np.ndarray

    @classmethod
    def of(cls, occ: Occupancy) -> Receives:
        c = occ.cols
        dur = durations(Timing.of(occ.system), occ.program.body)[c["_row"]]
        sends = np.flatnonzero((c["op"] == Op.SEND) & (occ.arrival >= 0))
        recvs = np.flatnonzero((c["op"] == Op.RECV) & (c["peer"] >= 0))
        s, r, _, _ = fifo_pairs(c, sends, recvs, c["peer"][recvs])
        end = c["issue"][r] + dur[r]
        order = np.lexsort((r, end))
        s, r, end = s[order], r[order], end[order]
        return cls(s, c["chip"][r].astype(np.int64), c["chip"][s].astype(np.int64), c["issue"][r].astype(np.int64),
                   c["issue"][s].astype(np.int64), end, c["issue"][s] + occ.arrival[s] + dur[r])

    def later_by(self, delay: np.ndarray, carried: bool = False) -> int:
        """How much later the latest RECV ends when each message arrives `delay[its SEND]` cycles later;
        `carried`: each chip's instructions after a pushed RECV's end wait its push too, a SEND's message
        leaving as late as its chip's push at its start."""
        if not len(self.end):
            return 0
        if not carried:
            return int(np.maximum(self.end, self.floor + delay[self.send]).max() - self.end.max())
        return int((self.end + self._carried(delay[self.send])).max() - self.end.max())

    def _carried(self, delay: np.ndarray) -> np.ndarray:
        """Each RECV's push, in order of their ends: a chip's push at a cycle is the largest push of its RECVs
        ended by then (a step function per chip, kept as rising breakpoints)."""
        times: dict[int, list[int]] = {}
        pushes: dict[int, list[int]] = {}
        out = np.zeros(len(self.end), np.int64)
        for k, (chip, sender, start, sent, end, floor, d) in enumerate(zip(
                self.chip.tolist(), self.sender.tolist(), self.start.tolist(), self.send_start.tolist(),
                self.end.tolist(), self.floor.tolist(), delay.tolist(), strict=True)):
            here = _push_at(times.get(chip), pushes.get(chip), start)
            there = _push_at(times.get(sender), pushes.get(sender), sent)
            push = max(here, floor + there + d - end, 0)
            out[k] = push
            if push > _push_at(times.get(chip), pushes.get(chip), end):
                times.setdefault(chip, []).append(end)
                pushes.setdefault(chip, []).append(push)
        return out


def _push_at(times: list[int] | None, pushes: list[int] | None, cycle: int) -> int:
    """A chip's push at `cycle`: the last breakpoint at or before it (0 before the first)."""
    if not times:
        return 0
    k = bisect_right(times, cycle)
    return pushes[k - 1] if k else 0
