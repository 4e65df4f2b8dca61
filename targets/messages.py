"""Message and barrier rules shared by both modes of the interpreter: links, routes, SYNC barriers.

Messages: one checker for every dialect (`check_messages`), the pairing its ISA contract declares
(ir.contract.MULTICAST) and the arrival rule of its target's links (targets/universes.py's ROUTES).

Pairing. A queue of messages is (sender, receiver, tag) on chip links, (sender stream, tag) where
routers multicast (a wafer's colours). In a unicast queue SENDs and RECVs each run in issue order
(ties by row) and the k-th RECV takes the k-th SEND; in a multicast queue every RECV takes its one
SEND, and a second SEND of one queue, or a second RECV of it on one stream, is `duplicate` (a
colour carries one message a phase). The streams that send one colour (one tag: a tree level's
senders) start together and stand for one another, so a RECV names one of them and a SEND is
received when its colour is. A SEND no RECV takes, or a RECV with no SEND left, is
`unmatched` (a duplicated SEND issued before its original shifts every later pair and leaves one
over), as is a pair whose byte counts differ. A peer that is no chip of the Program is `link-range`
(the host, HOST, only sends).

Arrival (`routes`: an arrival rule built once for the Program, targets/universes.py's ROUTES). A RECV
may start no earlier than its SEND's start plus the cycles the rule gives the SEND's route, `recv-early`.
On chips that is the fastest path through the wired topology to the chip the SEND names (Wires over
targets.topology.Wiring: each hop its link's latency); on a wafer, the hops each route takes on the
mesh from the streams' places (targets/wafer_timing.py), and the host's rows arrive when its link
delivers them. A SEND the rule cannot route is `link-range`, as is a RECV that sits elsewhere than the
route delivers or takes the message on other than a receiving unit (odd) of the class the SEND left on.

Barriers. SYNC is a barrier over every chip of the Program: every chip issues the same number
of SYNCs; the k-th SYNC of every chip starts at the same cycle; a SYNC has its chip to itself
(everything issued on the chip before it has ended when it starts, nothing else issues until it
ends); and in a chip Program every chip's first instruction is a SYNC (`sync`; the compiler
starts every chip with one). Wafer role streams are level-synchronous and carry no SYNC; any
they carry follow the same rules.

Every check is vectorised (sorts and searches over the columns): large builds have millions of
messages.
"""

from __future__ import annotations

import numpy as np

from ir.contract import MULTICAST
from ir.isa import Op
from ir.program import HOST, Program
from targets.timing import Timing
from targets.topology import Wiring


def fifo_pairs(c: dict[str, np.ndarray], sends: np.ndarray, recvs: np.ndarray, sender_r: np.ndarray,
               multicast: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Matching of SEND rows to RECV rows: (paired sends, paired recvs, extra sends, extra recvs).
    A send's queue is (chip, peer, tag), a receive's (sender_r, chip, tag), and within a queue the
    k-th in issue order (ties by row) pairs with the k-th; `multicast`: the queues are (chip, tag)
    and (sender_r, tag), and every receive takes its queue's first send."""
    to_s = np.zeros(len(sends), np.int64) if multicast else c["peer"][sends]
    to_r = np.zeros(len(recvs), np.int64) if multicast else c["chip"][recvs]
    key_s, key_r = _queue_keys(c["chip"][sends], to_s, c["tag"][sends], sender_r, to_r, c["tag"][recvs])
    order_s = np.lexsort((sends, c["issue"][sends], key_s))
    order_r = np.lexsort((recvs, c["issue"][recvs], key_r))
    sends, key_s = sends[order_s], key_s[order_s]
    recvs, key_r = recvs[order_r], key_r[order_r]
    rank_r = np.zeros(len(recvs), np.int64) if multicast else _rank_in_group(key_r)
    first = np.searchsorted(key_s, key_r, "left")
    count = np.searchsorted(key_s, key_r, "right") - first
    taken = rank_r < count
    paired_r, paired_s = recvs[taken], sends[first[taken] + rank_r[taken]]
    used = np.zeros(len(sends), bool)
    used[first[taken] + rank_r[taken]] = True
    return paired_s, paired_r, sends[~used], recvs[~taken]


def _queue_keys(a0: np.ndarray, a1: np.ndarray, a2: np.ndarray, b0: np.ndarray, b1: np.ndarray,
                b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One int64 per (sender, receiver, tag) triple, equal exactly when the triples are, for both sets."""
    fields = [np.concatenate([x, y]).astype(np.int64) for x, y in ((a0, b0), (a1, b1), (a2, b2))]
    n = len(a0)
    lows = [f.min(initial=0) for f in fields]
    spans = [int(f.max(initial=0)) - int(low) + 1 for f, low in zip(fields, lows, strict=True)]
    if spans[0] * spans[1] * spans[2] < 2**62:
        key = ((fields[0] - lows[0]) * spans[1] + fields[1] - lows[1]) * spans[2] + fields[2] - lows[2]
    else:  # too wide to pack: number the distinct triples
        _, key = np.unique(np.stack(fields, axis=1), axis=0, return_inverse=True)
        key = key.reshape(-1).astype(np.int64)
    return key[:n], key[n:]


def _rank_in_group(sorted_key: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal keys."""
    if not len(sorted_key):
        return np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1]
    return np.arange(len(sorted_key)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_key)]))


class Wires:
    """The chip rule: a message takes the fastest path through the wired topology (Wiring) to the chip
    its SEND names; the host sends chips no messages."""

    host_cycles, place = None, "chip"

    def __init__(self, program: Program, system, _hazards=None):
        self.wiring, self.timing = Wiring.of(system, program.chips), Timing.of(system)

    def cycles(self, c: dict[str, np.ndarray], sends: np.ndarray, found) -> np.ndarray:
        """Cycles from each send's start until its data can be at its peer (-1 and a hazard: no wire joins them)."""
        if not len(sends):
            return np.zeros(0, np.int64)
        chips = self.wiring.graph.number_of_nodes()  # one int64 a (sender, peer) pair: a 1-D unique is fast
        pairs, inverse = np.unique(c["chip"][sends].astype(np.int64) * chips + c["peer"][sends], return_inverse=True)
        table = [self.wiring.arrival_cycles(*divmod(int(p), chips)) for p in pairs.tolist()]
        wire = np.array([-1 if t is None else t for t in table], np.int64)[inverse.reshape(-1)]
        for s in sends[wire < 0].tolist():
            found.add(s, "link-range", f"no wire joins chip {c['chip'][s]} to chip {c['peer'][s]}")
        return wire

    def delivers(self, c: dict[str, np.ndarray], sends: np.ndarray, recvs: np.ndarray) -> tuple[np.ndarray, ...]:
        """(where each send's message goes, where its receiver sits): the chips."""
        return c["peer"][sends], c["chip"][recvs]


def check_messages(program: Program, start: np.ndarray, found, routes) -> None:
    """Every RECV takes a SEND (its dialect's pairing), of its size, where and no earlier than `routes` (an
    arrival rule built for the Program: Wires, targets.wafer_timing.MeshRoutes) says it arrives."""
    c, multicast = program.cols, MULTICAST[program.dialect]
    sends, recvs = np.flatnonzero(c["op"] == Op.SEND), np.flatnonzero(c["op"] == Op.RECV)
    rows = np.r_[sends, recvs]
    host = (c["peer"][rows] == HOST) & (c["op"][rows] == Op.RECV)
    bad = rows[((c["peer"][rows] < 0) | (c["peer"][rows] >= program.chips)) & ~host]
    for i in np.sort(bad).tolist():
        found.add(i, "link-range", f"peer {c['peer'][i]} is no chip of the program (0..{program.chips - 1})")
    _from_host(c, rows[host], start, found, routes)
    sends, recvs = sends[~np.isin(sends, bad)], recvs[~np.isin(recvs, np.r_[bad, rows[host]])]
    paired_s, paired_r, extra_s, extra_r = fifo_pairs(c, sends, recvs, c["peer"][recvs], multicast)
    if multicast:  # the streams sending a colour start together and stand for one another: one is named
        extra_s = extra_s[~np.isin(c["tag"][extra_s], c["tag"][paired_s])]
        for i in _repeats(c, sends, ("chip", "tag")).tolist():
            found.add(i, "duplicate", f"a second send with tag {c['tag'][i]} from this stream")
        for i in _repeats(c, recvs, ("chip", "peer", "tag")).tolist():
            found.add(i, "duplicate", f"a second receive of chip {c['peer'][i]}'s tag {c['tag'][i]}")
    for i in extra_s.tolist():
        found.add(i, "unmatched", f"send to chip {c['peer'][i]} tag {c['tag'][i]} has no receive (the link's "
                                  "receives in order each take one send, in order)")
    for i in extra_r.tolist():
        found.add(i, "unmatched", f"receive from chip {c['peer'][i]} tag {c['tag'][i]} has no send left")
    sizes = c["src_bytes"][paired_s] != c["dst_bytes"][paired_r]
    for s, r in zip(paired_s[sizes].tolist(), paired_r[sizes].tolist(), strict=True):
        found.add(r, "unmatched", f"receives {c['dst_bytes'][r]} bytes, the send carries {c['src_bytes'][s]}")
    cycles = routes.cycles(c, sends, found)[np.searchsorted(sends, paired_s)]
    reached = cycles >= 0
    _delivered(c, paired_s[reached], paired_r[reached], found, routes)
    arrival = start[paired_s] + cycles
    for k in np.flatnonzero(reached & (start[paired_r] < arrival)).tolist():
        r = int(paired_r[k])
        found.add(r, "recv-early", f"starts at {start[r]}, the data from chip {c['peer'][r]} arrives at "
                                   f"{arrival[k]}")


def _delivered(c: dict[str, np.ndarray], sends: np.ndarray, recvs: np.ndarray, found, routes) -> None:
    """Each RECV sits where its SEND's route delivers, and takes it on a receiving unit of the link class
    the SEND left on."""
    where, got = routes.delivers(c, sends, recvs)
    receiving, remote = _receiving(c["unit"][recvs], routes.timing)
    sent_remote = c["unit"][sends] // 2 >= routes.timing.local_links
    for k in np.flatnonzero((where != got) | ~receiving | (remote != sent_remote)).tolist():
        found.add(int(recvs[k]), "link-range", f"receives on unit {c['unit'][recvs[k]]} at {routes.place} {got[k]} "
                                               f"a message its route delivers at {routes.place} {where[k]} over a "
                                               f"{('local', 'global')[int(sent_remote[k])]} link")


def _from_host(c: dict[str, np.ndarray], rows: np.ndarray, start: np.ndarray, found, routes) -> None:
    """RECVs of rows the host sends: over a global link (the node's I/O), no earlier than the rule's
    `host_cycles` after the step begins (None: the target's host sends no messages)."""
    if routes.host_cycles is None:
        for i in rows.tolist():
            found.add(i, "link-range", "the host sends no messages on this target")
        return
    receiving, remote = _receiving(c["unit"][rows], routes.timing)
    for i in rows[~receiving | ~remote].tolist():
        found.add(i, "link-range", f"receives on unit {c['unit'][i]} rows from the host, which arrive over a "
                                   "global link")
    for i in rows[start[rows] < routes.host_cycles].tolist():
        found.add(i, "recv-early", f"starts at {start[i]}, rows from the host arrive at {routes.host_cycles} at "
                                   "the earliest")


def _receiving(unit: np.ndarray, timing: Timing) -> tuple[np.ndarray, np.ndarray]:
    """Whether each C2C unit is a receiving one (odd, of the chip's links), and whether its link is global."""
    unit = unit.astype(np.int64)
    return (unit % 2 == 1) & (unit // 2 < timing.links), unit // 2 >= timing.local_links


def _repeats(c: dict[str, np.ndarray], rows: np.ndarray, fields: tuple[str, ...]) -> np.ndarray:
    """The rows after the first, in issue order, of each run that agrees on `fields`."""
    key = np.stack([c[f][rows] for f in fields], axis=1).astype(np.int64)
    order = np.lexsort((rows, c["issue"][rows], *key.T[::-1]))
    rows, key = rows[order], key[order]
    return rows[np.r_[False, (key[1:] == key[:-1]).all(axis=1)]] if len(rows) else rows


def check_syncs(program: Program, start: np.ndarray, end: np.ndarray, found, first_is_sync: bool) -> None:
    """The barrier rules above; `first_is_sync` for chip Programs (every chip starts with a SYNC)."""
    c = program.cols
    syncs = np.flatnonzero(c["op"] == Op.SYNC)
    syncs = syncs[np.lexsort((syncs, start[syncs], c["chip"][syncs]))]
    chip = c["chip"][syncs].astype(np.int64)
    counts = np.bincount(chip, minlength=program.chips)
    present = np.bincount(c["chip"].astype(np.int64), minlength=program.chips) > 0
    _sync_counts(program, counts, present, syncs, found)
    rank = _rank_in_group(chip)
    _sync_cycles(c, syncs, rank, start, found)
    _sync_alone(c, syncs, start, end, found)
    if first_is_sync:
        _sync_first(program, start, present, counts, found)


def _sync_counts(program: Program, counts: np.ndarray, present: np.ndarray, syncs: np.ndarray, found) -> None:
    values, freq = np.unique(counts[present], return_counts=True)
    if len(values) <= 1:
        return
    usual = int(values[np.argmax(freq)])  # the most common count (ties: the smallest)
    for chip in np.flatnonzero(present & (counts != usual)).tolist():
        mine = syncs[(program.cols["chip"][syncs] == chip)]
        row = int(mine[min(len(mine), usual + 1) - 1]) if len(mine) else int(program.chip_slice(chip).start)
        found.add(row, "sync", f"chip {chip} reaches {counts[chip]} barriers, the other chips {usual}: every chip "
                               "issues the same SYNCs")


def _sync_cycles(c: dict[str, np.ndarray], syncs: np.ndarray, rank: np.ndarray, start: np.ndarray, found) -> None:
    """SYNC k starts at the same cycle on every chip: the earliest chip's k-th SYNC sets it."""
    if not len(syncs):
        return
    order = np.lexsort((c["chip"][syncs], start[syncs], rank))
    r, s = rank[order], start[syncs][order]
    first = np.r_[True, r[1:] != r[:-1]]
    at = np.maximum.accumulate(np.where(first, np.arange(len(r)), 0))
    for k in np.flatnonzero(s != s[at]).tolist():
        i = int(syncs[order[k]])
        found.add(i, "sync", f"barrier {r[k]} starts at {s[k]} here, at {s[at[k]]} on chip "
                             f"{c['chip'][syncs[order[at[k]]]]}: every chip starts it together")


def _sync_alone(c: dict[str, np.ndarray], syncs: np.ndarray, start: np.ndarray, end: np.ndarray, found) -> None:
    """Nothing else on the chip runs while a SYNC does: no instruction overlaps [start, end) of one.
    SYNCs of a chip follow each other on its one sync unit, so the latest one starting before an
    instruction ends is the only one it can overlap."""
    if not len(syncs):
        return
    others = np.flatnonzero(c["op"] != Op.SYNC)
    key = (c["chip"][syncs].astype(np.int64) << 40) | start[syncs]
    order = np.argsort(key, kind="stable")
    key, ordered = key[order], syncs[order]
    at = np.searchsorted(key, (c["chip"][others].astype(np.int64) << 40) | (end[others] - 1), "right") - 1
    sync = ordered[np.maximum(at, 0)]
    hit = (at >= 0) & (c["chip"][sync] == c["chip"][others]) & (end[sync] > start[others]) \
        & (start[sync] < end[others])
    for i, j in zip(sync[hit].tolist(), others[hit].tolist(), strict=True):
        found.add(j, "sync", f"runs from {start[j]} to {end[j]} during the barrier from {start[i]} to {end[i]}: "
                             "a SYNC has its chip to itself")


def _sync_first(program: Program, start: np.ndarray, present: np.ndarray, counts: np.ndarray, found) -> None:
    """A chip Program's first instruction on every chip is a SYNC (nothing issues before the chip is aligned)."""
    c = program.cols
    chip = c["chip"].astype(np.int64)
    never = np.iinfo(np.int64).max
    first_sync = np.full(program.chips, never)
    np.minimum.at(first_sync, chip[c["op"] == Op.SYNC], start[c["op"] == Op.SYNC])
    early = (c["op"] != Op.SYNC) & (start < first_sync[chip])
    rows = np.flatnonzero(early)
    rows = rows[np.lexsort((rows, start[rows], chip[rows]))]
    firsts = rows[np.r_[True, chip[rows][1:] != chip[rows][:-1]]] if len(rows) else rows
    for i in firsts.tolist():
        why = "the chip has no SYNC" if counts[chip[i]] == 0 else "it issues before the chip's first SYNC"
        found.add(i, "sync", f"{Op(c['op'][i]).name.lower()} at {start[i]}: {why}")
