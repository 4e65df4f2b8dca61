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
step's earlier work streams its weights. Scores and values stream every cold block, then the ring, as
`_cache_panels` does for one cache; the softmax (args `cold`, `ring`) sees a tier column only once the
ring has passed its position, and a ring row as the position it holds after the sequence's newest row.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.codegen.emit import Emitter
from compiler.codegen.template import Instr, Ref
from compiler.partition.shard_cost import STAGING_SLOTS
from ir.errors import ConfigError
from ir.graph import Op as GraphOp
from ir.graph import Value
from ir.isa import FMT_OF, TIER_UNITS, Fn, Op
from ir.program import Flag

WINDOW = int(Flag.INDIRECT | Flag.WINDOW)


@dataclass(frozen=True, slots=True)
class _Piece:
    """Positions [t0, t0 + tokens) of sequence `seq`'s cache: from staging (cold) or the SRAM cache (hot);
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


def lower_tiered_attention(e: Emitter, op: GraphOp) -> None:
    if len(op.operands) != 8:
        raise ConfigError(f"attention %{op.results[0].name}: the tiered lowering streams 16-bit caches; an "
                          f"{op.operands[3].type.dtype.value} cache held below SRAM plans but does not compile yet "
                          "(use --kv-precision fp16, or --kv-tier sram)")
    q, k, v, k_hot, v_hot, pos, k_cold, v_cold = op.operands
    a = op.attr
    batch, hot, width = k_hot.type.shape
    rows = q.type.shape[0]
    per_seq = max(1, rows // batch)
    cold, block, tier = a["cold"], a["block"], TIER_UNITS.index(a["tier"])
    row_bytes = width * k_hot.type.dtype.bits // 8
    pos_read = e.read(pos.name)
    hot_ready = [_append(e, new, cache, store, pos_read, (cold, hot, per_seq), tier, row_bytes)
                 for new, cache, store in ((k, k_hot, k_cold), (v, v_hot, v_cold))]
    staging = _Staging([e.t.local(block * row_bytes) for _ in range(STAGING_SLOTS)], [None] * STAGING_SLOTS)
    pieces = _pieces(batch, cold, hot, block, max(1, e.t.timing.panel ** 2 // width))
    m = per_seq * (a["heads"] // a["kv_heads"])
    heads = {"heads": a["heads"], "kv_heads": a["kv_heads"], "rows": rows}
    fmt = FMT_OF[k_hot.type.dtype]
    qs = e.read(q.name)
    stream = _Stream(e, staging, tier, row_bytes, pos, per_seq, fmt, m, heads)
    scores = stream.panels(pieces, k, k_hot, k_cold, hot_ready[0], qs, True)
    tokens = cold + hot
    mask = {"heads": a["heads"], "head_dim": a["head_dim"], "tokens": tokens, "rows": rows, "batch": batch,
            "cold": cold, "ring": hot}
    sm = e.vop(Fn.SOFTMAX, per_seq * a["heads"], tokens * batch, scores, pos_read, args=mask)
    ctx = stream.panels(pieces, v, v_hot, v_cold, hot_ready[1], sm, False)
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


def _append(e: Emitter, new: Value, cache: Value, cold_cache: Value, pos: tuple[int, int],
            split: tuple[int, int, int], tier: int, row_bytes: int) -> int:
    """Row r at position pos[r] of its sequence: in ring row pos mod hot of the SRAM cache, and written
    through to the tier if pos < cold (dropped otherwise: the ring keeps the newest `hot` of a context
    of cold + hot positions). Returns the SRAM write (the row's read when nothing is hot)."""
    cold, hot, per_seq = split
    rows = new.type.shape[0]
    r = e.read(new.name)
    slot = e.slots[cache.name]
    i = r[0]
    if hot:  # with no window in SRAM every row goes to the tier
        i = e.t.add(Instr(Op.WRITE, e.t.timing.mem(rows * row_bytes), flags=WINDOW, dst=slot.ref,
                          dst_bytes=rows * row_bytes, s_a=r[1], s_b=pos[1], m=rows, k=per_seq, imm=hot, n=hot,
                          stride=row_bytes, deps=((r[0], 0), (pos[0], 0))))
        slot.ready = i
    e.t.add(Instr(Op.STORE, e.t.timing.host(rows * row_bytes, tier), unit=tier, flags=WINDOW,
                  dst=e.slots[cold_cache.name].ref, dst_bytes=rows * row_bytes, s_a=r[1], s_b=pos[1], m=rows,
                  k=per_seq, imm=cold, base=0, stride=row_bytes, deps=((r[0], 0), (pos[0], 0))))
    return i


@dataclass
class _Stream:
    """Streams one cache (keys or values) through the MXM piece by piece."""

    e: Emitter
    staging: _Staging
    tier: int
    row_bytes: int
    pos: Value
    per_seq: int
    fmt: object
    m: int
    heads: dict

    def panels(self, pieces: list[_Piece], new: Value, hot: Value, cold: Value, hot_ready: int,
               act: tuple[int, int], keys: bool) -> tuple[int, int]:
        e, acc = self.e, None
        width = self.row_bytes * 8 // self.fmt.bits
        kind = Flag.KEYS if keys else Flag.VALUES
        staged = 0
        for n, p in enumerate(pieces):
            if p.cold:
                r = self._cold_block(staged, p, new, cold)
                staged += 1
            else:
                r = e.read(hot.name, p.tokens * self.row_bytes, p.row * self.row_bytes, after=((hot_ready, 0),))
            k_dim, n_dim = (width, p.tokens) if keys else (p.tokens, width)
            last = n == len(pieces) - 1
            flags = kind | (Flag.ACCUMULATE if acc is not None else 0) | (Flag.LAST if last else 0)
            deps = ((r[0], 0), (act[0], 0)) + (((acc, 0),) if acc is not None else ())
            partial = e.t.instrs[acc].s_out if acc is not None else -1
            acc = e.t.add(Instr(Op.MXM, e.t.timing.mxm(self.m, k_dim, n_dim, self.fmt), fmt=self.fmt, m=self.m,
                                k=k_dim, n=n_dim, flags=int(flags), s_a=r[1], s_b=act[1], s_c=partial,
                                s_out=e.t.stream(), offset=0 if keys else p.column,
                                args=tuple(sorted(self.heads.items())), deps=deps))
        return acc, e.t.instrs[acc].s_out

    def _cold_block(self, n: int, p: _Piece, new: Value, cold: Value) -> tuple[int, int]:
        """FETCH the block into its staging slot (once the slot's last reader is done), patch in the new
        rows whose positions it holds, and READ it onto a stream."""
        e, s = self.e, n % len(self.staging.refs)
        nbytes = p.tokens * self.row_bytes
        src = e.slots[cold.name].ref
        free = self.staging.last_read[s]
        fetch = e.t.add(Instr(Op.FETCH, e.t.timing.host(nbytes, self.tier), unit=self.tier,
                              src=Ref(src.space, src.slot, src.offset + p.row * self.row_bytes, src.parts),
                              src_bytes=nbytes, dst=self.staging.refs[s], dst_bytes=nbytes,
                              deps=((free, 0),) if free is not None else ()))
        rows = self.per_seq  # the block's sequence's new rows, and their positions
        r = e.read(new.name, rows * self.row_bytes, p.seq * rows * self.row_bytes, after=((fetch, 0),))
        at = e.read(self.pos.name, rows * 4, p.seq * rows * 4, after=((fetch, 0),))
        patch = e.t.add(Instr(Op.WRITE, e.t.timing.mem(rows * self.row_bytes), flags=WINDOW, dst=self.staging.refs[s],
                              dst_bytes=rows * self.row_bytes, s_a=r[1], s_b=at[1], m=rows, k=rows,
                              imm=p.tokens, base=p.t0, stride=self.row_bytes,
                              deps=((fetch, 0), (r[0], 0), (at[0], 0))))
        stream = e.t.stream()
        read = e.t.add(Instr(Op.READ, e.t.timing.mem(nbytes), src=self.staging.refs[s], src_bytes=nbytes,
                             s_out=stream, deps=((patch, 0), (fetch, 0))))
        self.staging.last_read[s] = read
        return read, stream
