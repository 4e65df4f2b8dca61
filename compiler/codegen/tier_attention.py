"""Lowering of attention over a cache split by position: the newest positions in SRAM, the older ones in a
tier below (host DRAM, flash), fetched over the host link a block at a time into staging slots.

The SRAM part is a ring of the `hot` newest positions (ir.ops._tiered): as decode advances, position p
takes ring row p mod hot from the position a ring's length older, which the tier already holds, since
every row is written through to it when it is made. So the new rows go three ways, each an INDIRECT
write with a WINDOW (a row outside one is dropped; both the row and the window are functions of the
position the host writes each step, the only per-step datum): into the ring (`n` = hot: row p mod hot),
into the tier (positions 0..cold-1, a STORE on the host link), and into every staging block fetched
this step (so a block holding the row's position sees it, whatever the position is at run time; fixed
time either way). A block's FETCH waits only for the slot to be free: the first ones run while the
step's earlier work streams its weights. Scores and values stream every cold block, then the ring,
each block through cache_stream.block_product; the softmax (args `cold`, `ring`) sees a tier column only
once the ring has passed its position, and a ring row as the position it holds after the sequence's
newest row.

A quantized cache (8-bit codes with a 16-bit scale per token and kv head, or NVFP4 codes with e4m3
block scales) keeps its scales beside its codes in both memories: the new rows are QUANTIZEd once,
and codes and scales each take the three ways above (the staged blocks' patches read them from a
scratch copy of the QUANTIZE stream); each cold block's scales are fetched into staging slots of
their own, beside its codes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compiler.codegen.cache_stream import Block, CacheStream, Read, block_product
from compiler.codegen.emit import Emitter
from compiler.codegen.template import Instr, Ref
from compiler.partition.shard_cost import STAGING_SLOTS
from ir.graph import Op as GraphOp
from ir.graph import Value
from ir.isa import TIER_UNITS, Fn, Op
from ir.ops import tier_operands
from ir.program import Flag

WINDOW = int(Flag.INDIRECT | Flag.WINDOW)


@dataclass(frozen=True, slots=True)
class _Piece:
    """Positions [t0, t0 + tokens) of sequence `seq`'s cache: from staging (cold) or the SRAM ring (hot);
    `column` is where its tokens sit among every sequence's (seq x context + t0), `row` the first row
    of its buffer (cold or hot cache) it reads."""

    seq: int
    t0: int
    tokens: int
    cold: bool
    column: int
    row: int


@dataclass
class _Staging:
    """The staging slots and, per slot, the last instruction reading it (a FETCH into it waits for that)."""

    refs: list[Ref]
    last_read: list[int | None]


@dataclass(frozen=True)
class _Part:
    """One stored array of a cache (its codes, or a quantized cache's scales): the ring in SRAM and the
    tier's part, bytes a token, the ring write its reads wait for, and `fresh(seq, after)`: a READ of
    sequence seq's new rows (a staged block's patch), issued after instruction `after`."""

    hot: Value
    cold: Value
    row_bytes: int
    ready: int
    fresh: Callable[[int, int], Read]


@dataclass(frozen=True)
class _Layout:
    cold: int
    hot: int
    per_seq: int
    tier: int


def lower_tiered_attention(e: Emitter, op: GraphOp) -> None:
    q, k, v, k_hot, v_hot, pos = op.operands[:6]
    quantized = len(op.operands) == 12
    hot_scales = op.operands[6:8] if quantized else (None, None)
    colds = [op.operands[i] for i in tier_operands(len(op.operands))]
    cold_scales = colds[2:] if quantized else (None, None)
    a = op.attr
    batch, hot, width = k_hot.type.shape
    rows = q.type.shape[0]
    per_seq = max(1, rows // batch)
    lay = _Layout(a["cold"], hot, per_seq, TIER_UNITS.index(a["tier"]))
    kv = CacheStream(k_hot.type.dtype, width, a["kv_heads"])
    pos_read = e.read(pos.name)
    parts = [_append(e, kv, new, (ring, cold, ring_s, cold_s), pos_read, lay)
             for new, ring, cold, ring_s, cold_s in zip((k, v), (k_hot, v_hot), colds[:2], hot_scales, cold_scales,
                                                          strict=True)]
    block = a["block"]
    staging = [_Staging([e.t.local(block * nbytes) for _ in range(STAGING_SLOTS)], [None] * STAGING_SLOTS)
               for nbytes in (kv.row_bytes, kv.scale_bytes)[:len(parts[0])]]
    pieces = _pieces(batch, lay.cold, hot, block, max(1, e.t.timing.panel ** 2 // width))
    m = per_seq * (a["heads"] // a["kv_heads"])
    heads = {"heads": a["heads"], "kv_heads": a["kv_heads"], "rows": rows}
    qs = e.read(q.name)
    stream = _Stream(e, kv, staging, lay, pos, m, heads)
    scores = stream.panels(pieces, parts[0], qs, True)
    tokens = lay.cold + hot
    mask = {"heads": a["heads"], "head_dim": a["head_dim"], "tokens": tokens, "rows": rows, "batch": batch,
            "cold": lay.cold, "ring": hot}
    sm = e.vop(Fn.SOFTMAX, per_seq * a["heads"], tokens * batch, scores, pos_read, args=mask)
    ctx = stream.panels(pieces, parts[1], sm, False)
    out = op.results[0]
    e.result(out)
    e.done(out, e.write(out.name, ctx[1], ctx[0], out.type.nbytes))


def _pieces(batch: int, cold: int, hot: int, block: int, hot_block: int) -> list[_Piece]:
    """Sequence by sequence, its cold blocks of `block` positions, then its hot part in the MXM's blocks."""
    out = []
    for b in range(batch):
        first = b * (cold + hot)
        out += [_Piece(b, t0, min(block, cold - t0), True, first + t0, b * cold + t0) for t0 in range(0, cold, block)]
        out += [_Piece(b, cold + t0, min(hot_block, hot - t0), False, first + cold + t0, b * hot + t0)
                for t0 in range(0, hot, hot_block)]
    return out


def _append(e: Emitter, kv: CacheStream, new: Value, arrays: tuple, pos: Read, lay: _Layout) -> list[_Part]:
    """Row r at position pos[r] of its sequence: in ring row pos mod hot of the SRAM cache, and written
    through to the tier if pos < cold (dropped otherwise: the ring keeps the newest `hot` of a context
    of cold + hot positions); a quantized cache's codes and scales each so. Returns the cache's parts
    (codes, then scales)."""
    ring, cold, ring_scales, cold_scales = arrays
    rows = new.type.shape[0]
    r = e.read(new.name)
    src, lag = r, 0
    # A staged block's patch: its sequence's new rows, read from the cache's input, or for a quantized
    # cache from a scratch copy of the QUANTIZE stream (codes, then scales)
    fresh = [lambda seq, after: e.read(new.name, lay.per_seq * kv.row_bytes, seq * lay.per_seq * kv.row_bytes,
                                       after=((after, 0),))]
    if ring_scales is not None:
        groups = {"kv_heads": ring_scales.type.shape[2]} if kv.block is None else {}
        src = e.vop(Fn.QUANTIZE, rows, new.type.shape[1], r, bytes_in=new.type.nbytes,
                    args=groups | {"format": kv.dtype.value})
        lag = e.t.timing.drain_cycles
        fresh = _scratch(e, kv, src, rows, lay.per_seq)
    out = []
    for n, (hot, below, nbytes) in enumerate(((ring, cold, kv.row_bytes), (ring_scales, cold_scales, kv.scale_bytes))):
        if hot is None:
            continue
        offset, deps = n * rows * kv.row_bytes, ((src[0], lag), (pos[0], 0))
        ready = src[0]
        if lay.hot:  # with no ring in SRAM every row goes to the tier
            slot = e.slots[hot.name]
            ready = e.t.add(Instr(Op.WRITE, e.t.timing.mem(rows * nbytes), flags=WINDOW, dst=slot.ref,
                                  dst_bytes=rows * nbytes, s_a=src[1], s_b=pos[1], m=rows, k=lay.per_seq, imm=lay.hot,
                                  n=lay.hot, stride=nbytes, offset=offset, deps=deps))
            slot.ready = ready
        e.t.add(Instr(Op.STORE, e.t.timing.host(rows * nbytes, lay.tier), unit=lay.tier, flags=WINDOW,
                      dst=e.slots[below.name].ref, dst_bytes=rows * nbytes, s_a=src[1], s_b=pos[1], m=rows,
                      k=lay.per_seq, imm=lay.cold, base=0, stride=nbytes, offset=offset, deps=deps))
        out.append(_Part(hot, below, nbytes, ready, fresh[n]))
    return out


def _scratch(e: Emitter, kv: CacheStream, quantized: Read, rows: int, per_seq: int) -> list[Callable[[int, int], Read]]:
    """The QUANTIZE stream kept in a local buffer; readers of a sequence's codes and of its scales."""
    total = rows * (kv.row_bytes + kv.scale_bytes)
    ref = e.t.local(total)
    kept = e.t.add(Instr(Op.WRITE, e.t.timing.mem(total), dst=ref, dst_bytes=total, s_a=quantized[1],
                         deps=((quantized[0], e.t.timing.drain_cycles),)))

    def reader(first: int, nbytes: int) -> Callable[[int, int], Read]:
        def read(seq: int, after: int) -> Read:
            size = per_seq * nbytes
            stream = e.t.stream()
            at = Ref(ref.space, ref.slot, ref.offset + first + seq * size)
            i = e.t.add(Instr(Op.READ, e.t.timing.mem(size), src=at, src_bytes=size, s_out=stream,
                              deps=((kept, 0), (after, 0))))
            return i, stream
        return read
    return [reader(0, kv.row_bytes), reader(rows * kv.row_bytes, kv.scale_bytes)]


@dataclass
class _Stream:
    """Streams one cache (keys or values) through the MXM piece by piece."""

    e: Emitter
    kv: CacheStream
    staging: list[_Staging]  # codes', then (a quantized cache) scales'
    lay: _Layout
    pos: Value
    m: int
    heads: dict

    def panels(self, pieces: list[_Piece], parts: list[_Part], act: Read, keys: bool) -> Read:
        e, acc = self.e, None
        staged = 0
        for n, p in enumerate(pieces):
            if p.cold:
                got = [self._cold_block(staged, p, part, staging) for part, staging in zip(parts, self.staging,
                                                                                             strict=True)]
                staged += 1
            else:
                got = [e.read(part.hot.name, p.tokens * part.row_bytes, p.row * part.row_bytes,
                              after=((part.ready, 0),)) for part in parts]
            scales = (lambda s=got[1]: s) if len(got) > 1 else None
            block = Block(p.tokens, p.column, n == len(pieces) - 1)
            acc = block_product(e, self.kv, got[0], scales, act, self.m, block, self.heads, keys, acc)
        return acc, e.t.instrs[acc].s_out

    def _cold_block(self, n: int, p: _Piece, part: _Part, staging: _Staging) -> Read:
        """FETCH the block into its staging slot (once the slot's last reader is done), patch in the new
        rows whose positions it holds, and READ it onto a stream."""
        e, s = self.e, n % len(staging.refs)
        nbytes = p.tokens * part.row_bytes
        src = e.slots[part.cold.name].ref
        free = staging.last_read[s]
        fetch = e.t.add(Instr(Op.FETCH, e.t.timing.host(nbytes, self.lay.tier), unit=self.lay.tier,
                              src=Ref(src.space, src.slot, src.offset + p.row * part.row_bytes, src.parts),
                              src_bytes=nbytes, dst=staging.refs[s], dst_bytes=nbytes,
                              deps=((free, 0),) if free is not None else ()))
        rows = self.lay.per_seq  # the block's sequence's new rows, and their positions
        r = part.fresh(p.seq, fetch)
        at = e.read(self.pos.name, rows * 4, p.seq * rows * 4, after=((fetch, 0),))
        patch = e.t.add(Instr(Op.WRITE, e.t.timing.mem(rows * part.row_bytes), flags=WINDOW, dst=staging.refs[s],
                              dst_bytes=rows * part.row_bytes, s_a=r[1], s_b=at[1], m=rows, k=rows,
                              imm=p.tokens, base=p.t0, stride=part.row_bytes,
                              deps=((fetch, 0), (r[0], 0), (at[0], 0))))
        stream = e.t.stream()
        read = e.t.add(Instr(Op.READ, e.t.timing.mem(nbytes), src=staging.refs[s], src_bytes=nbytes,
                             s_out=stream, deps=((patch, 0), (fetch, 0))))
        staging.last_read[s] = read
        return read, stream
