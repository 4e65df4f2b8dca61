"""SRAM provenance in timing mode: the last writer of every byte, held to what each read declares.

Every row that writes SRAM names the value it writes (`val`); every row that reads SRAM names the
value it expects and where that was written (`prov`: this instance, an earlier instance on the
chip, or resident before the phase; ir/program.py). A write's bytes land when it ends; a read sees
what has landed by the cycle it starts. A read is broken (`sram-raw`) when a byte it reads

  - was last written by a write of another value (a clobber of a live buffer, a write or read at a
    wrong address or offset, a read before its producer's bytes landed), or
  - was last written by an older copy of its value: a later write of that value (one overlapping the
    older, as an accumulation rewrites its buffer; not a sibling panel) landed before the read, elsewhere, or
  - was written by nothing in its instance when it expects its own instance's value (MINE), or by
    nothing at all when it expects an earlier instance's (EARLIER): bytes never written. A TAIL read, a
    hand-off's last lane whose slice rounds up, may read past its value's last written byte, whatever
    last wrote the bytes there (padding its receiver drops), and only there.

Resident bytes that nothing wrote are what was loaded (weights, caches, host inputs). Extents are
derived from each row's own columns: a 2-D access covers its hull (first row to last), an indirect
read every place its id could move it, a gather its whole table, a cache append every row a
position could name. So a fault that keeps an access inside the same value's bytes is not seen here
(the functional mode's numerics see it). The roles dialect (a wafer) has no SRAM writes: its reads
are of resident weights nothing can clobber, and only their ranges are checked (sram-range).

Cost follows blocks: each block's reads are paired with its own writes once, every block a lane;
what a read finds open (no writer in its instance) is what lies between instances. On a chip whose
instances follow one another only those open pieces and each block's last writers cross (chips that
run alike blocks at alike offsets are checked once); on a chip where instances overlap, every SRAM
row is unrolled and checked again, reporting only what involves two instances (a batch of such chips at a
time: block_checks.dense_batches).
"""

from __future__ import annotations

import numpy as np

from ir.contract import LOCAL_VALUES, Prov
from ir.isa import Op
from ir.program import Flag, Program
from targets.block_checks import chip_batches, dense_batches
from targets.hazards import Rows

_FAR = 1 << 40  # addresses are packed below this, lanes above it


def check_provenance(program: Program, dur: np.ndarray, found, hazards, dense: np.ndarray, alike) -> None:
    """Block rows first (`found`: the per-block Rows), then what lies between instances (`hazards`).
    `dense`: chips whose instances overlap; `alike(fields, chosen)`: per instance, how many chosen chips
    run what its chip runs as far as `fields` go (0 but on the first of each class)."""
    if program.dialect != "queues":
        return
    b = program.body
    acc = _accesses(b)
    if not len(acc.row):
        return
    lane = np.repeat(np.arange(program.blocks, dtype=np.int64), program.block_rows)[acc.row]
    start = b["issue"].astype(np.int64)
    time = np.where(acc.write, start[acc.row] + dur[acc.row], start[acc.row])
    undeclared = np.zeros(len(start), bool)
    undeclared[acc.row[~acc.write & (b["prov"][acc.row] == Prov.NONE)]] = True
    found.where(undeclared, "sram-raw",
                lambda i: f"{Op(b['op'][i]).name.lower()} of SRAM at {b['src'][i]:#x} declares no provenance (prov): "
                          "what it expects to read cannot be checked")
    # A read no write of its block touches is one open piece (most are weights): only the rest are cut.
    key_lo, key_hi = (lane << 40) | acc.lo, (lane << 40) | acc.hi
    cut = acc.write | _overlaps_any(key_lo, key_hi, key_lo[acc.write], key_hi[acc.write])
    p = _pieces(lane[cut], acc.lo[cut], acc.hi[cut], time[cut], acc.write[cut], acc.row[cut])
    alone, of = np.flatnonzero(~cut), np.flatnonzero(cut)  # indices of the cut subset, back to all accesses
    p.reader = np.r_[of[p.reader], alone]
    p.writer = np.r_[np.where(p.writer >= 0, of[np.maximum(p.writer, 0)], -1), np.full(len(alone), -1)]
    p.lo, p.hi = np.r_[p.lo, acc.lo[alone]], np.r_[p.hi, acc.hi[alone]]
    p.last_writers = of[p.last_writers]
    reader, writer = acc.row[p.reader], np.where(p.writer >= 0, acc.row[np.maximum(p.writer, 0)], -1)
    prov = b["prov"][reader]
    wrong = (writer >= 0) & (b["val"][np.maximum(writer, 0)] != b["val"][reader]) & (prov != Prov.NONE)
    unwritten = (writer < 0) & (prov == Prov.MINE)
    _report(program, found, None, b, reader, writer, p.lo, p.hi, wrong | unwritten, "in its instance")
    # An older copy: its value was written again over these bytes' writer before the read, elsewhere.
    stale = (p.writer >= 0) & ~wrong & (_rewritten(lane, acc, time)[np.maximum(p.writer, 0)] <= start[reader])
    _report(program, found, None, b, reader, writer, p.lo, p.hi, stale & ~(wrong | unwritten), "in its instance",
            ", an older copy: its value was written again since, not over these bytes")
    # What crosses instances: the open pieces of EARLIER and RESIDENT reads, and each block's last writers.
    open_ = (writer < 0) & np.isin(prov, (Prov.EARLIER, Prov.TAIL, Prov.RESIDENT))
    top = _tops(len(start), reader, p.hi, (writer >= 0) & ~wrong)  # where a read's own value's bytes end
    last = np.zeros(len(start), bool)
    last[acc.row[p.last_writers]] = True
    writes = np.zeros(len(start), bool)
    writes[acc.row[acc.write]] = True
    _between(program, dur, hazards, dense, alike, _merged(reader[open_], p.lo[open_], p.hi[open_]), last, writes, top)


def _rewritten(lane: np.ndarray, acc, time: np.ndarray) -> np.ndarray:
    """Per access: when the next write of the same value on its lane lands, if that write is a copy of this
    one's bytes shifted (they overlap, neither holds the other); never otherwise (the next is another
    panel of one copy, the same bytes again, or a shorter copy: a smaller chunk's value in the same
    buffer). Contiguous writes only: a 2-D write's hull overlaps its sibling panels'."""
    out = np.full(len(acc.row), np.iinfo(np.int64).max)
    w = np.flatnonzero(acc.write & acc.flat)
    if len(w) < 2:
        return out
    w = w[np.lexsort((time[w], acc.val[w], lane[w]))]
    same = (lane[w][1:] == lane[w][:-1]) & (acc.val[w][1:] == acc.val[w][:-1])
    a_lo, a_hi, b_lo, b_hi = acc.lo[w][:-1], acc.hi[w][:-1], acc.lo[w][1:], acc.hi[w][1:]
    shifted = (b_lo < a_hi) & (a_lo < b_hi) & (b_lo != a_lo) & (b_hi != a_hi) & ((b_lo < a_lo) == (b_hi < a_hi))
    again = np.flatnonzero(same & shifted)
    out[w[again]] = time[w[again + 1]]
    return out


class _Accesses:
    def __init__(self, row, lo, hi, write, flat, val):
        self.row, self.lo, self.hi, self.write, self.flat, self.val = row, lo, hi, write, flat, val


def _span(nbytes: np.ndarray, m: np.ndarray, stride: np.ndarray) -> np.ndarray:
    """Bytes from a (2-D) access's first byte to its last row's end (functional.py's rows)."""
    rows = np.maximum(m, 1)
    return np.where((m > 0) & (stride != 0), (rows - 1) * np.abs(stride) + nbytes // rows, nbytes)


def _accesses(c: dict) -> _Accesses:
    """Every SRAM read and write of these rows with the byte range it can touch (its hull)."""
    op, flags = c["op"], c["flags"].astype(np.int64)
    m, k, n = (c[x].astype(np.int64) for x in ("m", "k", "n"))
    stride, imm = c["stride"].astype(np.int64), c["imm"].astype(np.int64)
    indirect = (flags & Flag.INDIRECT) != 0
    src, sb = c["src"].astype(np.int64), c["src_bytes"].astype(np.int64)
    dst, db = c["dst"].astype(np.int64), c["dst_bytes"].astype(np.int64)
    per_src = sb // np.maximum(m, 1)
    tiled = (op == Op.READ) & ~indirect & (n > 1)  # every local expert's panel, k bytes apart
    tiles = np.where(tiled, n, 1)
    read_span = np.where(op == Op.GATHER, np.maximum(k, 1) * per_src, _span(sb // tiles, m, stride))
    read_span += np.where((op == Op.READ) & (indirect | tiled), np.maximum(n - 1, 0) * k, 0)  # every id or tile
    seqs = -(-np.maximum(m, 1) // np.maximum(k, 1))
    append = (op == Op.WRITE) & indirect
    cache = (seqs * np.maximum(imm, 1) - 1) * stride + db // np.maximum(m, 1)
    write_span = np.where(append, cache, _span(db, m, stride))
    reads = np.isin(op, (Op.READ, Op.GATHER)) & (src >= 0) & (read_span > 0)
    writes = np.isin(op, (Op.WRITE, Op.FETCH)) & (dst >= 0) & (write_span > 0)
    r, w = np.flatnonzero(reads), np.flatnonzero(writes)
    lo = np.r_[src[r], dst[w]]
    hi = np.r_[src[r] + read_span[r], dst[w] + write_span[w]]
    keep = (lo >= 0) & (hi < _FAR)  # out of the chip's SRAM: sram-range says so
    rows = np.r_[r, w][keep]
    flat = ((m[rows] == 0) | (stride[rows] == 0)) & ~indirect[rows] & ~tiled[rows]
    return _Accesses(rows, lo[keep], hi[keep], np.r_[np.zeros(len(r), bool), np.ones(len(w), bool)][keep], flat,
                     c["val"][rows] if "val" in c else np.full(len(rows), -1))


class _Pieces:
    """Each read cut into byte ranges with one last writer each (-1: none), and the writes that are
    the last writer of some byte when their lane ends."""

    def __init__(self, reader, lo, hi, writer, last_writers):
        self.reader, self.lo, self.hi, self.writer, self.last_writers = reader, lo, hi, writer, last_writers


def _pieces(lane: np.ndarray, lo: np.ndarray, hi: np.ndarray, time: np.ndarray, write: np.ndarray,
            tie: np.ndarray) -> _Pieces:
    """Cut every lane's address space at every access's ends; in each elementary range, in time order
    (a write landing at a cycle before a read starting at it, then `tie`), a read's last writer is the
    latest write before it."""
    key_lo, key_hi = (lane << 40) | lo, (lane << 40) | hi
    cuts = np.unique(np.r_[key_lo, key_hi])
    first, past = np.searchsorted(cuts, key_lo), np.searchsorted(cuts, key_hi)
    count = past - first
    access = np.repeat(np.arange(len(lo)), count)
    seg = _spans(first, count)
    order = np.lexsort((tie[access], ~write[access], time[access], seg))
    seg, access = seg[order], access[order]
    is_write = write[access]
    at = np.arange(len(seg))
    latest = np.maximum.accumulate(np.where(is_write, at, -1)) if len(at) else at
    ok = (latest >= 0) & (seg[np.maximum(latest, 0)] == seg)
    writer = np.where(ok, access[np.maximum(latest, 0)], -1)
    tail = np.r_[seg[1:] != seg[:-1], True] if len(seg) else np.zeros(0, bool)
    last_writers = np.unique(writer[tail & (writer >= 0)])
    r = ~is_write
    return _Pieces(access[r], cuts[seg[r]] & (_FAR - 1), cuts[seg[r] + 1] & (_FAR - 1), writer[r], last_writers)


def _merged(row: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of touching pieces of one row as one range, sorted by row."""
    order = np.lexsort((lo, row))
    row, lo, hi = row[order], lo[order], hi[order]
    head = np.r_[True, (row[1:] != row[:-1]) | (lo[1:] != hi[:-1])] if len(row) else np.zeros(0, bool)
    starts = np.flatnonzero(head)
    ends = np.r_[starts[1:], len(row)][: len(starts)] - 1
    return row[starts], lo[starts], hi[ends]


_SRAM_FIELDS = ("op", "issue", "src", "src_bytes", "dst", "dst_bytes", "m", "k", "n", "stride", "imm", "flags",
                "val", "prov")


def _between(program: Program, dur: np.ndarray, hazards, dense: np.ndarray, alike, pieces, last: np.ndarray,
             writes: np.ndarray, top: np.ndarray) -> None:
    """The open pieces of reads paired with the last writers of earlier instances on their chip.

    Only what could meet crosses: a resident piece that some last writer of a block on its chip
    touches, and the last writers that touch such pieces (a weight nothing on its chip writes needs
    nothing). A piece that only writers of its own value touch can only be unwritten, and bytes once
    written stay so: the first instance of each block on each chip decides it. A piece a writer of
    another value touches is checked over every instance (chips alike checked once)."""
    inst, b = program.inst, program.body
    row, lo, hi = pieces
    blocks = np.repeat(np.arange(program.blocks), program.block_rows)
    classes = _chip_classes(inst)
    w_row = np.flatnonzero(last)
    w = _accesses({n: b[n][w_row] for n in _ACCESS_FIELDS})
    w_row, w_lo, w_hi = w_row[w.row[w.write]], w.lo[w.write], w.hi[w.write]
    # A resident piece no last writer of any block touches is what was loaded: dropped at once.
    near = (b["prov"][row] != Prov.RESIDENT) | _overlaps_any(lo, hi, w_lo, w_hi)
    row, lo, hi = row[near], lo[near], hi[near]
    touch = _touching(blocks[row], lo, hi, b["val"][row], blocks[w_row], w_lo, w_hi, b["val"][w_row], classes)
    kept = (b["prov"][row] != Prov.RESIDENT) | touch.some
    hard = kept & touch.foreign
    sparse = ~np.isin(inst["chip"], dense)
    for mine in (hard, kept & ~hard):
        if not mine.any():
            continue
        chosen = np.zeros(len(blocks), bool)
        chosen[row[mine]] = True
        chosen[w_row[touch.writers(mine)]] = True
        if mine is hard:
            has = np.bincount(blocks[chosen], minlength=program.blocks) > 0
            on = np.zeros(program.chips, bool)
            on[inst["chip"][has[inst["block"]]]] = True
            times = alike(_SRAM_FIELDS, sparse & on[inst["chip"]])
            which = np.flatnonzero(times > 0)
        else:  # the first instance of each block on each chip
            key = (inst["chip"].astype(np.int64) << 32) | inst["block"]
            _, first = np.unique(key, return_index=True)
            which = first[sparse[first]]
            times = np.ones(program.instances, np.int64)
        for part in chip_batches(program, which, chosen):
            _check_rows(program, dur, hazards, part, chosen, times, (row[mine], lo[mine], hi[mine]), top)
    for _, mask in dense_batches(program, dense):
        _check_rows(program, dur, hazards, np.flatnonzero(mask), writes | _reads(b), np.ones(program.instances,
                    np.int64), None, top)


def _check_rows(program: Program, dur: np.ndarray, hazards, which: np.ndarray, rows: np.ndarray, times: np.ndarray,
                pieces, top: np.ndarray) -> None:
    """The chosen rows of the chosen instances, unrolled and paired on their chips: each read's open
    pieces (or, with pieces None, every read whole) against the writes. Reports what involves a writer
    of another instance, or no writer at all."""
    if not len(which):
        return
    c = program.expand(which, names=("chip", "issue", *_ACCESS_FIELDS, "val", "prov"), origin=True, rows=rows,
                       ordered=False)
    r = c["_row"]
    acc = _accesses(c)
    if pieces is None:
        index, a_lo, a_hi, wr = acc.row, acc.lo, acc.hi, acc.write
    else:  # each open read as its open pieces, each writer as its whole range
        row, lo, hi = pieces
        order = np.argsort(row, kind="stable")
        row, lo, hi = row[order], lo[order], hi[order]
        starts = np.searchsorted(row, r, "left")
        count = np.searchsorted(row, r, "right") - starts
        piece = _spans(starts, count)
        wk = acc.write
        index = np.r_[np.repeat(np.arange(len(r)), count), acc.row[wk]]
        a_lo, a_hi = np.r_[lo[piece], acc.lo[wk]], np.r_[hi[piece], acc.hi[wk]]
        wr = np.r_[np.zeros(len(piece), bool), np.ones(int(wk.sum()), bool)]
    start = c["issue"].astype(np.int64)
    time = np.where(wr, start[index] + dur[r[index]], start[index])
    lane = c["chip"].astype(np.int64)[index]
    p = _pieces(lane, a_lo, a_hi, time, wr, index)
    flat = np.zeros(len(c["_row"]), bool)
    flat[acc.row] = acc.flat
    every = _Accesses(index, a_lo, a_hi, wr, flat[index], c["val"][index])
    again = _rewritten(lane, every, time)[np.maximum(p.writer, 0)]
    reader = index[p.reader]
    writer = np.where(p.writer >= 0, index[np.maximum(p.writer, 0)], -1)
    w0 = np.maximum(writer, 0)
    other = (writer >= 0) & (c["_inst"][w0] != c["_inst"][reader])
    prov = c["prov"][reader]
    matches = (writer >= 0) & (c["val"][w0] == c["val"][reader])
    # A TAIL read (a hand-off's last lane) may read past where its value's bytes end, and only there:
    # those bytes are padding its receiver drops, whatever last wrote them.
    end = np.maximum(top[r[reader]], _tops(len(r), reader, p.hi, other & matches)[reader])
    past = (prov == Prov.TAIL) & (end > 0) & (p.lo >= end)
    wrong = other & ~matches & (prov != Prov.NONE) & ~past
    stale = other & matches & (again <= start[reader])
    # An input port's bytes nothing wrote: bytes never written.
    unwritten = (writer < 0) & np.isin(prov, (Prov.EARLIER, Prov.TAIL)) & ~past
    found = Rows(hazards, c["_inst"], r, np.maximum(times[c["_inst"]], 1))
    _report(program, found, c["_inst"], c, reader, writer, p.lo, p.hi, wrong | unwritten, "on its chip")
    _report(program, found, c["_inst"], c, reader, writer, p.lo, p.hi, stale & ~(wrong | unwritten), "on its chip",
            ", an older copy: its value was written again since, not over these bytes")


def _overlaps_any(lo: np.ndarray, hi: np.ndarray, w_lo: np.ndarray, w_hi: np.ndarray) -> np.ndarray:
    """Per interval: whether any of the w intervals overlaps it (whatever lane they are on)."""
    if not len(w_lo):
        return np.zeros(len(lo), bool)
    o = np.argsort(w_lo, kind="stable")
    starts, reach = w_lo[o], np.maximum.accumulate(w_hi[o])
    k = np.searchsorted(starts, hi, "left") - 1
    return (k >= 0) & (reach[np.maximum(k, 0)] > lo)


class _Touching:
    """Which last writers touch which open pieces, on blocks that share a chip."""

    def __init__(self, pairs: list[np.ndarray], n_writers: int, pieces: int, foreign: np.ndarray):
        self.pairs, self.n_writers = pairs, n_writers
        self.some = np.zeros(pieces, bool)
        for piece, _ in pairs:
            self.some[piece] = True
        self.foreign = foreign

    def writers(self, pieces: np.ndarray) -> np.ndarray:
        out = np.zeros(self.n_writers, bool)
        for piece, writer in self.pairs:
            out[writer[pieces[piece]]] = True
        return out


def _chip_classes(inst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class, block) pairs: chips that run the same set of blocks are one class (a layer's ranks on
    every stage at the same place in a node), so what meets on one meets on all of them."""
    key = np.unique((inst["chip"].astype(np.int64) << 32) | inst["block"].astype(np.int64))
    chip, block = key >> 32, key & 0xFFFFFFFF
    cuts = np.flatnonzero(np.r_[True, chip[1:] != chip[:-1]])
    sets = np.split(block, cuts[1:])
    ids: dict[bytes, int] = {}
    of_chip = np.array([ids.setdefault(s.tobytes(), len(ids)) for s in sets], np.int64)
    pairs = np.unique((np.repeat(of_chip, np.diff(np.r_[cuts, len(block)])) << 32) | block)
    return pairs >> 32, pairs & 0xFFFFFFFF


def _in_classes(blocks: np.ndarray, classes: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(index, class) for every class each of `blocks` runs in."""
    cls, block = classes
    order = np.argsort(block, kind="stable")
    first = np.searchsorted(block[order], blocks, "left")
    count = np.searchsorted(block[order], blocks, "right") - first
    at = _spans(first, count)
    return np.repeat(np.arange(len(blocks)), count), cls[order[at]]


def _touching(p_block, p_lo, p_hi, p_val, w_block, w_lo, w_hi, w_val, classes) -> _Touching:
    """Every (piece, writer) pair that overlaps on blocks sharing a chip (paired within each class of
    alike chips, never across all of them at once). A piece is foreign (its every instance must be
    checked) when a writer of another value touches it, or two writers of its value whose ranges
    overlap, neither holding the other (a shifted copy could leave bytes of an older one)."""
    pi, pc = _in_classes(p_block, classes)
    wi, wc = _in_classes(w_block, classes)
    a, b = _overlap_pairs(p_lo[pi] + (pc << _CLASS_SHIFT), p_hi[pi] + (pc << _CLASS_SHIFT),
                          w_lo[wi] + (wc << _CLASS_SHIFT), w_hi[wi] + (wc << _CLASS_SHIFT))
    pairs = np.unique((pi[a].astype(np.int64) << 32) | wi[b]) if len(a) else np.zeros(0, np.int64)
    piece, writer = pairs >> 32, pairs & 0xFFFFFFFF
    foreign = np.zeros(len(p_lo), bool)
    foreign[piece[p_val[piece] != w_val[writer]]] = True
    # distinct ranges of each piece's writers, by start: a later start whose end passes the reach so far
    # overlaps an earlier range without either holding the other (a shifted copy)
    key = np.unique(np.stack([piece, w_lo[writer], w_hi[writer]], 1), axis=0) if len(piece) else np.zeros((0, 3))
    if len(key) > 1:
        reach = np.maximum.accumulate(key[:, 2] + (key[:, 0] << 40)) - (key[:, 0] << 40)
        same = key[1:, 0] == key[:-1, 0]
        shifted = same & (key[1:, 1] < reach[:-1]) & (key[1:, 1] > key[:-1, 1]) & (key[1:, 2] > reach[:-1])
        foreign[key[1:, 0][shifted]] = True
    return _Touching([(piece, writer)], len(w_lo), len(p_lo), foreign)


_CLASS_SHIFT = 40  # past any SRAM address: a class's intervals never meet another's


def _overlap_pairs(a_lo, a_hi, b_lo, b_hi) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) index pairs of overlapping intervals, each once: one of the two holds the other's start
    (b's start in [a_lo, a_hi), or a's in (b_lo, b_hi))."""
    pb, pa = _starts_within(b_lo, a_lo, a_hi, strict=False)
    qa, qb = _starts_within(a_lo, b_lo, b_hi, strict=True)
    return np.r_[pa, qa], np.r_[pb, qb]


def _starts_within(start: np.ndarray, lo: np.ndarray, hi: np.ndarray, strict: bool) -> tuple[np.ndarray, np.ndarray]:
    """(point, interval) pairs with lo <= start < hi (lo < start with `strict`)."""
    o = np.argsort(start, kind="stable")
    first = np.searchsorted(start[o], lo, "right" if strict else "left")
    count = np.maximum(np.searchsorted(start[o], hi, "left") - first, 0)
    at = _spans(first, count)
    return o[at], np.repeat(np.arange(len(lo)), count)


def _spans(first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """first[i], first[i] + 1, ..., first[i] + count[i] - 1 for every i, one after another."""
    return np.repeat(first - np.r_[0, np.cumsum(count)[:-1]], count) + np.arange(int(count.sum()))


_ACCESS_FIELDS = ("op", "src", "src_bytes", "dst", "dst_bytes", "m", "k", "n", "stride", "imm", "flags")


def _reads(b: dict) -> np.ndarray:
    return np.isin(b["op"], (Op.READ, Op.GATHER)) & (b["src"] >= 0)


def _tops(n: int, reader: np.ndarray, hi: np.ndarray, mine: np.ndarray) -> np.ndarray:
    """Per reader (0..n-1), the end of its highest piece in `mine` (-1 if none)."""
    out = np.full(n, -1, np.int64)
    np.maximum.at(out, reader[mine], hi[mine])
    return out


def _report(program: Program, found, inst, c: dict, reader, writer, lo, hi, bad: np.ndarray, scope: str,
            note: str = "") -> None:
    """One hazard per broken read (its first bad piece), naming the read and its bytes' last writer."""
    hits = np.flatnonzero(bad)
    if not len(hits):
        return
    _, first = np.unique(reader[hits], return_index=True)
    hits = hits[first]
    shown = hits[: found.hazards.limit]
    hz = found.hazards
    for k in shown.tolist():
        r, w = int(reader[k]), int(writer[k])
        what = f"[{int(lo[k]):#x}, {int(hi[k]):#x})"
        expects = _value(int(c["val"][r]))
        if w < 0:
            why = (f"reads {what}, which nothing {scope} wrote; it expects {expects} "
                   f"({Prov(int(c['prov'][r])).name.lower()})")
        else:
            at = int(found.inst[w]) if inst is None else int(inst[w])
            row = w if inst is None else int(found.row[w])
            why = (f"reads {what}, last written by {hz.locate(at, row)} ({_value(int(c['val'][w]))}){note}; it "
                   f"expects {expects}")
        found.add(r, "sram-raw", why)
    hz.count("sram-raw", int(found.times[reader[hits[len(shown):]]].sum()))


def _value(val: int) -> str:
    if val < 0:
        return "no value"
    return f"local value {val - LOCAL_VALUES}" if val >= LOCAL_VALUES else f"the value at {val:#x}"
