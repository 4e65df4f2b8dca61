"""The interpreter's rules about one chip's rows, checked per block and then between instances.

A block runs on one chip, so every rule about a chip's rows (in-order units, stream producers and
readers, the stream-register budget, SRAM ranges) is checked over all blocks at once, each block a
"lane" of its own (`check_blocks`). What a block cannot see alone is what lies between its
instances (`check_seams`): on a chip whose instances follow one another, only stream values cross
from one to the next (a block's open reads, first and last writers and the readers of its last
value are its boundary rows); on a chip where instances overlap in time, every row is unrolled and
all rules run again, reporting only what involves two instances (a batch of chips at a time; chips alike
in what these rules read, checked once and counted per chip).
"""

from __future__ import annotations

import hashlib

import numpy as np

from ir.isa import Op, UnitKind
from ir.program import Flag, Program
from targets.hazards import Rows
from targets.messages import check_syncs
from targets.spec import SystemSpec
from targets.tier_checks import tier_side
from targets.timing import Timing, install_cycles, paced_start, stream_rates
from targets.views import RowsView

_READS = ("s_a", "s_b", "s_c", "s_d", "s_e")  # the stream operands an instruction reads


def check_blocks(program: Program, dur: np.ndarray, timing: Timing, system: SystemSpec, found) -> np.ndarray:
    """Check every block's rows as one chip's; returns the block rows on each block's boundary."""
    c = program.body
    lane = np.repeat(np.arange(program.blocks, dtype=np.int64), program.block_rows)
    start = c["issue"].astype(np.int64)
    end = start + dur
    _units(c, lane, start, end, found, None)
    _stream_range(c, timing, found)
    pairs = stream_pairs(c, lane, start, end, timing)
    _report_streams(c, pairs, start, found, None)
    _stream_budget(c, lane, start, end, timing, found, None)
    _sram(c, system, found)
    return pairs.boundary


def check_seams(program: Program, dur: np.ndarray, timing: Timing, boundary: np.ndarray, hazards) -> None:
    """Between instances: stream values on chips whose instances follow one another (their boundary
    rows; chips that run alike blocks at alike offsets are checked once), every rule on chips where
    instances overlap (only what involves two of them)."""
    dense = overlapping_chips(program, dur)
    sparse = ~np.isin(program.inst["chip"], dense)
    times = alike_chips(program, dur, sparse)
    # overlapping chips alike as far as these rules read are checked once too, counted per chip
    times[~sparse] = alike_chips(program, dur, ~sparse, _ROW_FIELDS)[~sparse]
    firsts = np.unique(program.inst["chip"][~sparse & (times > 0)])
    parts = [(None, which, boundary) for which in chip_batches(program, np.flatnonzero(sparse & (times > 0)), boundary)]
    parts += [(chips, np.flatnonzero(mask), None) for chips, mask in dense_batches(program, firsts)]
    for chips, which, rows in parts:
        if not len(which):
            continue
        c = program.expand(which, origin=True, rows=rows, ordered=chips is not None)
        start = c["issue"].astype(np.int64)
        end = start + dur[c["_row"]]
        lane = c["chip"].astype(np.int64)
        inst = c["_inst"]
        found = Rows(hazards, inst, c["_row"], np.maximum(times[inst], 1))
        if chips is not None:
            _units(c, lane, start, end, found, inst)
            _stream_budget(c, lane, start, end, timing, found, inst)
        _report_streams(c, stream_pairs(c, lane, start, end, timing), start, found, inst)


_STREAM_FIELDS = ("op", "kind", "s_a", "s_b", "s_c", "s_d", "s_e", "s_out", "issue")
# what the unit, stream and stream-budget rules read of a row (with its derived cycles): timing.stream_rates'
# result bytes, install_cycles' weight tiles
_ROW_FIELDS = (*_STREAM_FIELDS, "unit", "fn", "src_bytes", "dst_bytes", "m", "k", "n", "dtype")


def alike_chips(program: Program, dur: np.ndarray, chosen: np.ndarray,
                fields: tuple[str, ...] = _STREAM_FIELDS) -> np.ndarray:
    """Per instance: how many chosen chips run what its chip runs, as far as `fields` go (the same
    blocks' columns and durations, at the same offsets from the chip's first instance), on the first
    chip of each such class; 0 elsewhere. A stream seam is a fact of the stream columns alone."""
    blocks = np.zeros(program.blocks, np.int64)
    seen: dict[bytes, int] = {}
    for k in range(program.blocks):
        rows = slice(int(program.bounds[k]), int(program.bounds[k + 1]))
        h = hashlib.blake2b(digest_size=16)
        for name in fields:
            h.update(np.ascontiguousarray(program.body[name][rows]).data)
        h.update(np.ascontiguousarray(dur[rows]).data)
        blocks[k] = seen.setdefault(h.digest(), len(seen))
    inst = program.inst
    idx = np.flatnonzero(chosen)
    idx = idx[np.argsort(inst["chip"][idx], kind="stable")]  # each chip's instances together, in table order
    times = np.zeros(program.instances, np.int64)
    if not len(idx):
        return times
    chip = inst["chip"][idx]
    starts = np.flatnonzero(np.r_[True, chip[1:] != chip[:-1]])
    issue = inst["issue"][idx].astype(np.int64)
    rel = np.stack([blocks[inst["block"][idx]], issue - np.repeat(issue[starts], np.diff(np.r_[starts, len(idx)]))],
                   axis=1)
    ends = np.r_[starts[1:], len(idx)]
    classes: dict[bytes, list[int]] = {}
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        classes.setdefault(rel[s:e].tobytes(), []).append(s)
    for members in classes.values():
        s = members[0]
        e = ends[np.searchsorted(starts, s)]
        times[idx[s:e]] = len(members)
    return times


def check_sync_rows(program: Program, dur: np.ndarray, hazards, first_is_sync: bool) -> None:
    """The barrier rules (targets/messages.py) over the rows they concern: every SYNC, each instance's
    first row, and every row of an instance that overlaps a SYNC on its chip."""
    b, inst = program.body, program.inst
    is_sync = b["op"] == Op.SYNC
    block = np.repeat(np.arange(program.blocks), program.block_rows)
    has_sync = np.bincount(block[is_sync], minlength=program.blocks) > 0
    first, last = program.spans(dur)
    # Absolute SYNC intervals per chip: against them, which instances (without a SYNC) overlap one.
    sync_inst = has_sync[inst["block"]]
    s = program.expand(np.flatnonzero(sync_inst), names=("chip", "issue", "cycles"), ordered=False,
                       origin=True, rows=is_sync)
    s_end = s["issue"] + dur[s["_row"]]
    key = (s["chip"].astype(np.int64) << 40) | s["issue"]
    order = np.argsort(key, kind="stable")
    key, s_end, s_chip = key[order], s_end[order], s["chip"][order]
    if not len(key):  # no barrier anywhere: the rules report the chips that lack one
        s_end = s_chip = np.zeros(1, np.int64)
    j_start = inst["issue"] + first[inst["block"]]
    j_end = inst["issue"] + last[inst["block"]]
    at = np.searchsorted(key, (inst["chip"].astype(np.int64) << 40) | (j_end - 1), "right") - 1
    ok = at >= 0
    hit = ok & (s_chip[np.maximum(at, 0)] == inst["chip"]) & (s_end[np.maximum(at, 0)] > j_start)
    whole = sync_inst | hit
    earliest = np.zeros(len(b["op"]), bool)
    nonempty = program.block_rows > 0
    starts = program.bounds[:-1][nonempty]
    if len(starts):
        # each block's earliest-issuing row: where the running minimum of its issues is reached first
        low = np.minimum.reduceat(b["issue"], starts)
        owner = np.repeat(np.flatnonzero(nonempty), program.block_rows[nonempty])
        cand = np.flatnonzero(b["issue"] == np.repeat(low, program.block_rows[nonempty]))
        _, firsts = np.unique(owner[cand], return_index=True)
        earliest[cand[firsts]] = True
    parts = []
    for mask, rows in ((whole, None), (~whole, earliest | is_sync)):
        if mask.any():
            parts.append(program.expand(np.flatnonzero(mask), origin=True, rows=rows))
    if not parts:
        return
    c = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
    order = np.lexsort((c["_row"], c["_inst"], c["issue"], c["chip"]))
    c = {n: a[order] for n, a in c.items()}
    start = c["issue"].astype(np.int64)
    check_syncs(RowsView(program, c), start, start + dur[c["_row"]], Rows(hazards, c["_inst"], c["_row"]),
                first_is_sync)


DENSE_BATCH_ROWS = 1 << 18  # rows unrolled at once on chips whose instances overlap: bounds the peak memory (and
# keeps the sorts of each batch in cache: on the 70B int8 build 2**18 ran faster than 2**16, 2**20 or 2**22)


def dense_batches(program: Program, dense: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The chips whose instances overlap in batches of about DENSE_BATCH_ROWS unrolled rows, in chip order,
    each as (chips, mask over the instances). Every rule checked on them is one of a chip's own rows (its
    units, streams, stream budget, SRAM bytes), so checking them a batch at a time finds what checking all
    at once does."""
    inst = program.inst
    rows = np.bincount(inst["chip"], program.block_rows[inst["block"]], minlength=program.chips)[dense]
    out, at = [], 0
    while at < len(dense):
        past = at + max(1, int(np.searchsorted(np.cumsum(rows[at:]), DENSE_BATCH_ROWS, "right")))
        chips = dense[at:past]
        out.append((chips, np.isin(inst["chip"], chips)))
        at = past
    return out


def chip_batches(program: Program, which: np.ndarray, rows: np.ndarray | None = None) -> list[np.ndarray]:
    """`which` (instances, in their order) cut into batches of whole chips of about DENSE_BATCH_ROWS of the
    `rows` (a mask over the body; all if None) each, in chip order. For rules that pair a chip's rows only
    with its own, checking a batch at a time finds what checking all at once does, and the unrolled rows
    stay bounded (a subset stage's chips are alike in nothing, so every chip of it is checked)."""
    if not len(which):
        return []
    per_block = program.block_rows if rows is None else np.bincount(
        np.repeat(np.arange(program.blocks), program.block_rows)[rows], minlength=program.blocks)
    chip = program.inst["chip"][which].astype(np.int64)
    chips, of = np.unique(chip, return_inverse=True)
    load = np.cumsum(np.bincount(of.reshape(-1), per_block[program.inst["block"][which]], minlength=len(chips)))
    batch = (load - 1) // DENSE_BATCH_ROWS  # a chip past the budget alone is one batch
    _, cuts = np.unique(batch, return_index=True)
    return [which[(of >= lo) & (of < hi)] for lo, hi in zip(cuts, np.r_[cuts[1:], len(chips)], strict=True)]


def overlapping_chips(program: Program, dur: np.ndarray) -> np.ndarray:
    """Chips on which some instance starts before an earlier-starting one has ended."""
    inst = program.inst
    first, last = program.spans(dur)
    nonempty = program.block_rows[inst["block"]] > 0
    chip = inst["chip"][nonempty].astype(np.int64)
    start = (inst["issue"] + first[inst["block"]])[nonempty]
    end = (inst["issue"] + last[inst["block"]])[nonempty]
    order = np.lexsort((end, start, chip))
    chip, start, end = chip[order], start[order], end[order]
    if len(chip) < 2:
        return np.zeros(0, np.int64)
    # running maximum of ends within each chip: offset ends by chip so the maximum never crosses chips
    span = int(end.max() - min(0, start.min())) + 1
    reach = np.maximum.accumulate(end + chip * span) - chip * span
    clash = (chip[1:] == chip[:-1]) & (start[1:] < reach[:-1])
    return np.unique(chip[1:][clash])


def _units(c: dict, lane: np.ndarray, start: np.ndarray, end: np.ndarray, found, inst: np.ndarray | None) -> None:
    """In-order queues: each instruction starts at or after the previous one on its unit has ended
    (rows in queue order within each lane). With `inst`, only pairs from two instances."""
    same = (lane[1:] == lane[:-1]) & (c["kind"][1:] == c["kind"][:-1]) & (c["unit"][1:] == c["unit"][:-1])
    bad = same & (start[1:] < end[:-1])
    if inst is not None:
        bad &= inst[1:] != inst[:-1]
    for j in np.flatnonzero(bad).tolist():
        found.add(j + 1, "unit-busy", f"starts at {start[j + 1]}, the unit is busy until {end[j]}")


def _stream_range(c: dict, timing: Timing, found) -> None:
    for name in ("s_a", "s_b", "s_c", "s_d", "s_e", "s_out"):
        found.where((c[name] >= timing.streams) | (c[name] < -1), "stream-range",
                    lambda j, n=name: f"{n}={c[n][j]}, the chip has {timing.streams} streams")


class StreamPairs:
    """Each stream read paired with the latest write of that stream on its lane issued at or before
    it (an instruction that reads and writes one stream reads the older value)."""

    def __init__(self, readers, streams, producer, ready, war, boundary):
        self.readers, self.streams, self.producer, self.ready = readers, streams, producer, ready
        self.war = war  # (overwriting row, row whose value it overwrites, the last read of that value, reader row)
        self.boundary = boundary


def stream_pairs(c: dict, lane: np.ndarray, start: np.ndarray, end: np.ndarray, timing: Timing) -> StreamPairs:
    n = len(c["s_out"])
    readers = np.concatenate([np.flatnonzero(c[x] >= 0) for x in _READS])
    operand = np.concatenate([np.full(np.count_nonzero(c[x] >= 0), i) for i, x in enumerate(_READS)])
    streams = np.concatenate([c[x][c[x] >= 0] for x in _READS]).astype(np.int64)
    prod = np.flatnonzero(c["s_out"] >= 0)
    # (lane, stream) pairs numbered densely, so (pair, cycle) packs into one sortable int64
    pair_r = lane[readers] * 65536 + streams
    pair_p = lane[prod] * 65536 + c["s_out"][prod].astype(np.int64)
    keys, inv = np.unique(np.r_[pair_p, pair_r], return_inverse=True)
    inv = inv.reshape(-1)
    g_p, g_r = inv[:len(prod)], inv[len(prod):]
    at = start - start.min(initial=0)  # cycles from the first (a broken Program may issue before 0)
    if at.max(initial=0) >= 2**34 or len(keys) >= 2**29:
        raise ValueError("program too long to check: its issue cycles span more than 2**34")
    order = np.lexsort((prod, start[prod], g_p))
    prod, g_p = prod[order], g_p[order]
    prod_key = (g_p << 34) | at[prod]
    k = np.searchsorted(prod_key, (g_r << 34) | at[readers], "right") - 1
    if len(prod):
        k = np.where((k >= 0) & (prod[np.maximum(k, 0)] == readers), k - 1, k)  # itself: the older value
        valid = (k >= 0) & (g_p[np.maximum(k, 0)] == g_r)
    else:
        valid = np.zeros(len(readers), bool)
    producer = np.where(valid, prod[np.maximum(k, 0)] if len(prod) else -1, -1)
    p = producer[valid]
    drained = (c["op"][readers[valid]] == Op.WRITE) & np.isin(c["kind"][p], (UnitKind.MXM, UnitKind.VXM))
    ready = np.full(len(readers), -1, np.int64)
    ready[valid] = end[p] + np.where(drained, timing.drain_cycles, 0)
    _pace_weights(c, readers, operand, valid, producer, ready, start, end, timing)
    # Overwrites: consecutive writes of one pair, the later one before the earlier value's last read.
    last_read = np.full(len(prod), -1, np.int64)
    last_reader = np.full(len(prod), -1, np.int64)
    if valid.any():
        kv, ev = k[valid], end[readers[valid]]
        o = np.lexsort((ev, kv))
        kv, ev, rv = kv[o], ev[o], readers[valid][o]
        tail = np.r_[kv[1:] != kv[:-1], True]
        last_read[kv[tail]], last_reader[kv[tail]] = ev[tail], rv[tail]
    same = g_p[1:] == g_p[:-1]
    w = np.flatnonzero(same & (start[prod[1:]] < last_read[:-1]))
    war = (prod[w + 1], prod[w], last_read[w], last_reader[w])
    # Boundary rows: open reads, each pair's first and last writer, and the readers of its last value.
    boundary = np.zeros(n, bool)
    boundary[readers[~valid]] = True
    if len(prod):
        head = np.r_[True, ~same]
        tail = np.r_[~same, True]
        boundary[prod[head]] = True
        boundary[prod[tail]] = True
        is_tail = np.zeros(len(prod), bool)
        is_tail[tail] = True
        boundary[readers[valid][is_tail[k[valid]]]] = True
    return StreamPairs(readers, streams, producer, ready, war, boundary)


def _pace_weights(c: dict, readers: np.ndarray, operand: np.ndarray, valid: np.ndarray, producer: np.ndarray,
                  ready: np.ndarray, start: np.ndarray, end: np.ndarray, timing: Timing) -> None:
    """An MXM's weight stream (s_a) from a READ is ready by targets.timing.paced_start: an install-bound MXM
    may take it as MEM puts it out."""
    weights = valid & (operand == 0) & (c["op"][readers] == Op.MXM)
    weights[weights] = c["op"][producer[weights]] == Op.READ
    if not weights.any():
        return
    mxm, read = readers[weights], producer[weights]
    at = np.zeros(len(c["op"]), bool)
    at[mxm] = True
    install = np.zeros(len(c["op"]), np.int64)
    install[at] = install_cycles(timing, c, at)
    ready[weights] = paced_start(start[read], end[read], end[mxm] - start[mxm], install[mxm])


def _report_streams(c: dict, pairs: StreamPairs, start: np.ndarray, found, inst: np.ndarray | None) -> None:
    """Block level (inst None): late reads and overwrites inside a block; open reads wait for the seams.
    Between instances: reads nothing wrote, and late reads and overwrites that involve two instances."""
    r, p = pairs.readers, pairs.producer
    if inst is not None:
        for j, st in zip(r[p < 0].tolist(), pairs.streams[p < 0].tolist(), strict=True):
            found.add(j, "stream-raw", f"reads stream {st} before anything wrote it")
    late = (p >= 0) & (start[r] < pairs.ready)
    if inst is not None:
        late &= inst[r] != inst[np.maximum(p, 0)]
    for i in np.flatnonzero(late).tolist():
        found.add(int(r[i]), "stream-raw", f"reads stream {pairs.streams[i]} at {start[r[i]]}, its data is "
                                           f"ready at {pairs.ready[i]}")
    new, old, until, reader = pairs.war
    if inst is not None:
        keep = (inst[new] != inst[old]) | (inst[np.maximum(reader, 0)] != inst[old])
        new, old, until = new[keep], old[keep], until[keep]
    for j, t in zip(new.tolist(), until.tolist(), strict=True):
        found.add(j, "stream-war", f"overwrites stream {c['s_out'][j]} at {start[j]} while its value is read "
                                   f"until {t}")


def _stream_budget(c: dict, lane: np.ndarray, start: np.ndarray, end: np.ndarray, timing: Timing, found,
                   inst: np.ndarray | None) -> None:
    """At no cycle may a lane's running producers put more on streams than its stream registers carry.
    Rates come from each instruction's own operands and its derived cycles, never the Program's. With
    `inst`, only cycles at which rows of two instances run."""
    if not np.isfinite(timing.stream_bytes_per_cycle):
        return
    rate = stream_rates({**c, "cycles": end - start})
    rows = np.flatnonzero(rate > 0)
    if not len(rows):
        return
    # Events per lane in time order, an instruction's end before another's start at the same cycle.
    who = np.concatenate([lane[rows], lane[rows]])
    time = np.concatenate([start[rows], end[rows]])
    delta = np.concatenate([rate[rows], -rate[rows]])
    row = np.concatenate([rows, rows])
    order = np.lexsort((delta, time, who))
    usage = np.cumsum(delta[order])
    over = np.flatnonzero(usage > timing.stream_bytes_per_cycle)
    seen: set[int] = set()
    for k in over.tolist():
        i, at = int(row[order[k]]), int(time[order[k]])
        if int(lane[i]) in seen:
            continue  # one report per lane: the first cycle over the budget
        on = rows[(lane[rows] == lane[i]) & (start[rows] <= at) & (end[rows] > at)]
        seen.add(int(lane[i]))
        if inst is not None and len(np.unique(inst[on])) < 2:
            continue  # inside one instance: its block's own check reports it
        units = sorted({f"{UnitKind(c['kind'][j]).name.lower()}.{c['unit'][j]}" for j in on.tolist()})
        found.add(i, "stream-budget", f"at cycle {at} {', '.join(units)} put {int(usage[k]):,} B/cycle on streams, "
                                      f"the stream registers carry {timing.stream_bytes_per_cycle:,.0f}")


def _read_extent(c: dict) -> np.ndarray:
    """Bytes from a read's first address past its last: src_bytes, or a tiled READ's n tiles k bytes
    apart (ir/program.py: every local expert's panel), the last tile's span (its m rows `stride` apart)
    from the last start."""
    sb, n, k, m, stride = (c[x].astype(np.int64) for x in ("src_bytes", "n", "k", "m", "stride"))
    tiled = (c["op"] == Op.READ) & ((c["flags"] & Flag.INDIRECT) == 0) & (n > 1)
    per = sb // np.maximum(n, 1)
    span = np.where((m > 0) & (stride != 0), (np.maximum(m, 1) - 1) * np.abs(stride) + per // np.maximum(m, 1), per)
    return np.where(tiled, (n - 1) * k + span, sb)


def _sram(c: dict, system: SystemSpec, found) -> None:
    usable = system.chip.usable_sram_bytes
    for addr, size in (("src", "src_bytes"), ("dst", "dst_bytes")):
        used = (c[addr] >= 0) & ~tier_side(c, addr)  # a FETCH's source, a STORE's destination: tier addresses
        end = c[addr].astype(np.int64) + (_read_extent(c) if addr == "src" else c[size])
        bad = used & ((end > usable) | (c[addr] < 0))
        found.where(bad, "sram-range",
                    lambda i, a=addr, e=end: f"{a} [{c[a][i]:#x}, {e[i]:#x}) is outside the {usable:,} usable bytes")
    found.where(c["src"] < -1, "sram-range", lambda i: f"negative address {c['src'][i]}")
