"""Message and barrier rules shared by both modes of the interpreter: FIFO links, SYNC barriers.

Messages (chip Programs). A link delivers in order and a message is consumed once: the SENDs
from chip a to chip b with tag t, in issue order (ties by row), are a queue, and the k-th RECV
on b naming (a, t), in issue order, takes the k-th SEND. A SEND no RECV takes, or a RECV with
no SEND left, is `unmatched` (a duplicated SEND issued before its original shifts every later
pair and leaves one over). Each pair must agree on its byte count and the RECV may start no
earlier than the send's start plus the latency of the fastest path between the two chips through
the wired topology (targets.topology.Wiring over build_topology's graph: each hop its link's latency),
`recv-early`. A peer that is no chip of the Program (nor the host), or one no wire reaches, is
`link-range`.

Wafer Programs pair by (sender stream, tag) with multicast (targets/wafer_timing.py); a second
SEND of one stream with one tag, or a second RECV of one stream naming one (sender, tag), is a
`duplicate` there: a colour carries one message per phase.

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

from ir.isa import Op
from ir.program import HOST, Program
from targets.topology import Wiring


def fifo_pairs(c: dict[str, np.ndarray], sends: np.ndarray, recvs: np.ndarray, sender_r: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FIFO matching of SEND rows to RECV rows: (paired sends, paired recvs, extra sends, extra recvs).
    A send's queue is (chip, peer, tag); a receive's is (sender_r, chip, tag); within a queue the
    k-th in issue order (ties by row) pairs with the k-th."""
    key_s, key_r = _queue_keys(c["chip"][sends], c["peer"][sends], c["tag"][sends],
                               sender_r, c["chip"][recvs], c["tag"][recvs])
    order_s = np.lexsort((sends, c["issue"][sends], key_s))
    order_r = np.lexsort((recvs, c["issue"][recvs], key_r))
    sends, key_s = sends[order_s], key_s[order_s]
    recvs, key_r = recvs[order_r], key_r[order_r]
    rank_r = _rank_in_group(key_r)
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


def check_messages(program: Program, system, start: np.ndarray, found) -> None:
    """Every SEND meets one RECV, FIFO per (sender, receiver, tag), no earlier than the wire allows: the
    latency of the fastest path through the wired topology (targets.topology.Wiring)."""
    c = program.cols
    sends, recvs = np.flatnonzero(c["op"] == Op.SEND), np.flatnonzero(c["op"] == Op.RECV)
    bad = np.r_[sends, recvs]
    bad = bad[((c["peer"][bad] < 0) | (c["peer"][bad] >= program.chips)) & (c["peer"][bad] != HOST)]
    for i in np.sort(bad).tolist():
        found.add(i, "link-range", f"peer {c['peer'][i]} is no chip of the program (0..{program.chips - 1})")
    sends = sends[~np.isin(sends, bad)]
    recvs = recvs[~np.isin(recvs, bad)]
    paired_s, paired_r, extra_s, extra_r = fifo_pairs(c, sends, recvs, c["peer"][recvs])
    for i in extra_s.tolist():
        found.add(i, "unmatched", f"send to chip {c['peer'][i]} tag {c['tag'][i]} has no receive (the link's "
                                  "receives in order each take one send, in order)")
    for i in extra_r.tolist():
        found.add(i, "unmatched", f"receive from chip {c['peer'][i]} tag {c['tag'][i]} has no send left")
    sizes = c["src_bytes"][paired_s] != c["dst_bytes"][paired_r]
    for s, r in zip(paired_s[sizes].tolist(), paired_r[sizes].tolist(), strict=True):
        found.add(r, "unmatched", f"receives {c['dst_bytes'][r]} bytes, the send carries {c['src_bytes'][s]}")
    wire = _wire_cycles(Wiring.of(system, program.chips), c["chip"][paired_s], c["peer"][paired_s])
    for k in np.flatnonzero(wire < 0).tolist():
        s = int(paired_s[k])
        found.add(s, "link-range", f"no wire joins chip {c['chip'][s]} to chip {c['peer'][s]}")
    arrival = start[paired_s] + np.maximum(wire, 0)
    for k in np.flatnonzero(start[paired_r] < arrival).tolist():
        r = int(paired_r[k])
        found.add(r, "recv-early", f"starts at {start[r]}, the data from chip {c['peer'][r]} arrives at "
                                   f"{arrival[k]}")


def _wire_cycles(wiring: Wiring, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Arrival cycles over the wires for every (a, b), computed once per distinct pair (-1: no wire)."""
    if not len(a):
        return np.zeros(0, np.int64)
    pairs, inverse = np.unique(np.stack([a, b], axis=1).astype(np.int64), axis=0, return_inverse=True)
    table = [0 if q == HOST or p == HOST else wiring.arrival_cycles(int(p), int(q)) for p, q in pairs.tolist()]
    return np.array([-1 if t is None else t for t in table], np.int64)[inverse.reshape(-1)]


def check_wafer_duplicates(program: Program, found) -> None:
    """A wafer stream sends one message per tag, and receives one per (sender stream, tag)."""
    c = program.cols
    for op, who, what in ((Op.SEND, "chip", "a second send with tag {tag} from this stream"),
                          (Op.RECV, "peer", "a second receive of stream {peer}'s tag {tag}")):
        rows = np.flatnonzero(c["op"] == op)
        triple = np.stack([c["chip"][rows], c[who][rows], c["tag"][rows]], axis=1).astype(np.int64)
        order = np.lexsort((rows, c["issue"][rows], triple[:, 2], triple[:, 1], triple[:, 0]))
        rows, triple = rows[order], triple[order]
        again = np.r_[False, (triple[1:] == triple[:-1]).all(axis=1)] if len(rows) else np.zeros(0, bool)
        for i in rows[again].tolist():
            found.add(i, "duplicate", what.format(tag=c["tag"][i], peer=c["peer"][i]))


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
