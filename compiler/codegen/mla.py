"""Lowering of DeepSeek's multi-head latent attention over its compressed cache (weight absorption)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from compiler.codegen.attention import cache_blocks
from compiler.codegen.emit import FMT, Emitter, Slot, need_16_bit
from compiler.codegen.template import Instr
from compiler.partition.shard_cost import feature_blocks
from ir.errors import ConfigError
from ir.graph import Op as GraphOp
from ir.graph import Value
from ir.isa import Fmt, Fn, Op
from ir.ops import reach_of
from ir.program import Flag


@dataclass(frozen=True)
class _Latent:
    """One chip's shape of multi-head latent attention: its heads, their dims, the latent
    cache's rows [c_kv (rank) | k_pe (rope)], and kv_b [rank, heads x (nope + v)] as stored."""

    heads: int
    nope: int
    rope: int
    v: int
    rank: int
    rows: int
    batch: int
    tokens: int
    kv_b: Value
    reach: int  # cache rows a sequence's queries read (a causal chunk's prefix; else every row)

    @property
    def width(self) -> int:
        return self.rank + self.rope

    @property
    def per_seq(self) -> int:
        return max(1, self.rows // self.batch)

    @property
    def fmt(self) -> Fmt:
        return FMT[self.kv_b.type.dtype]

    def head_args(self) -> tuple:
        """An attention MXM's arguments: every query head against the cache's one latent head."""
        return tuple(sorted({"heads": self.heads, "kv_heads": 1, "rows": self.rows}.items()))


def lower_mla_attention(e: Emitter, op: GraphOp) -> None:
    """DeepSeek's latent attention with kv_b absorbed (ir.ops), as the flops rule counts it:
    append [c_kv | k_pe] at each row's position; per head, q_nope through W_uk gives latent
    queries (MXM HEADS, a tile per head), written beside q_pe; their scores against the cache's
    whole rows stream the cache block by block (MXM KEYS, one latent head shared by every query
    head); a scaled, masked softmax; the probabilities times the c_kv columns (MXM VALUES) give
    latent outputs, which W_uv takes to values (MXM HEADS). The latent queries and the final
    result are written, so the op pays two drains. A quantized kv_b's per-column scales
    multiply q_nope before W_uk and the values after W_uv."""
    q_nope, q_pe, c_kv, k_pe, cache, pos, kv_b = op.operands[:7]
    refuse_block_scaled_kv_b(op)
    scale = op.operands[7] if len(op.operands) == 8 else None
    out, a = op.results[0], op.attr
    batch, tokens, width = cache.type.shape
    lat = _Latent(a["heads"], a["nope_dim"], a["rope_dim"], a["v_dim"], width - a["rope_dim"], q_nope.type.shape[0],
                  batch, tokens, kv_b, reach_of(a, cache.type))
    need_16_bit(op, cache)
    pos_read = e.read(pos.name)
    appended = tuple((_append_columns(e, new, cache, pos_read, lat, col), 0)
                     for new, col in ((c_kv, 0), (k_pe, lat.rank)))
    scores = _latent_scores(e, lat, q_nope, q_pe, scale, cache.name, appended)
    mask = {"heads": lat.heads, "scale": a["scale"], "tokens": lat.reach, "rows": lat.rows, "batch": batch}
    sm = e.vop(Fn.SOFTMAX, lat.per_seq * lat.heads, lat.reach * batch, scores, pos_read, args=mask)
    latent = _cache_columns(e, lat, cache.name, appended, sm, (0, lat.rank), keys=False)
    values = _per_head_product(e, lat, latent, lat.nope, lat.v)
    if scale is not None:
        sr = _kv_b_scales(e, lat, scale, lat.nope, lat.v)
        values = e.vop(Fn.SCALE, lat.rows, lat.heads * lat.v, values, sr, lat.heads * lat.v * 2)
    e.result(out)
    e.done(out, e.write(out.name, values[1], values[0], out.type.nbytes))


def refuse_block_scaled_kv_b(op: GraphOp) -> None:
    """The absorbed lowering folds kv_b's per-column scales into q_nope and the values; block
    scales run along the latent rank, which W_uk's absorbed product (HEADS with TRANSPOSE)
    outputs rather than contracts, so there is no lowering for them yet: say so."""
    dtype = op.operands[6].type.dtype
    if dtype.block is not None:
        raise ConfigError(f"mla_attention %{op.results[0].name}: compile cannot lower a {dtype.value} kv_b (block "
                          "scales along the latent rank) yet; plan works, and compile takes fp8, int8 or int4")


def _append_columns(e: Emitter, new: Value, cache: Value, pos: tuple[int, int], lat: _Latent, col: int) -> int:
    """Write row r of `new` into columns [col, col + width) of the latent cache row at pos[r]
    of its sequence (data movement only: no drain)."""
    r = e.read(new.name)
    slot = e.slots[cache.name]
    rows, row_bytes = new.type.shape[0], new.type.shape[1] * 2
    i = e.t.add(Instr(Op.WRITE, e.t.timing.mem(rows * row_bytes), flags=int(Flag.INDIRECT),
                      dst=replace(slot.ref, offset=slot.ref.offset + col * 2), dst_bytes=rows * row_bytes, s_a=r[1],
                      s_b=pos[1], m=rows, k=lat.per_seq, imm=lat.tokens, stride=lat.width * 2,
                      deps=((r[0], 0), (pos[0], 0))))
    slot.ready = i
    return i


def _latent_scores(e: Emitter, lat: _Latent, q_nope: Value, q_pe: Value, scale: Value | None, cache: str,
                   appended: tuple) -> tuple[int, int]:
    """Scores [rows, heads, B x tokens]: the absorbed queries (W_uk's products, a block of latent
    features at a time) and q_pe written side by side as queries [rows, heads, rank + rope], then
    the latent cache's whole rows against them, one chain of KEYS products: its k is the row's
    width in whole tiles, not a tile for each block of features (the plan's keys block)."""
    q = e.read(q_nope.name)
    if scale is not None:
        q = e.vop(Fn.SCALE, lat.rows, lat.heads * lat.nope, q, _kv_b_scales(e, lat, scale, 0, lat.nope),
                  q_nope.type.nbytes + lat.heads * lat.nope * 2)
    name, lines = f"{q_nope.name}.latent", lat.rows * lat.heads
    e.slots[name] = Slot(e.t.local(lines * lat.width * 2), lines * lat.width * 2)
    pe = e.read(q_pe.name)
    writes = [e.write(name, pe[1], pe[0], lines * lat.rope * 2, lat.rank * 2, False, lines, lat.width * 2)]
    for r0, rb in _feature_blocks(e, lat, lat.nope):
        w = _kv_b_columns(e, lat, r0, rb, 0, lat.nope)
        flags = Flag.HEADS | Flag.TRANSPOSE | Flag.LAST
        mxm = e.t.add(Instr(Op.MXM, e.t.timing.mxm(lat.rows, lat.nope, lat.heads * rb, lat.fmt), fmt=lat.fmt,
                            m=lat.rows, k=lat.nope, n=lat.heads * rb, flags=int(flags), s_a=w[1], s_b=q[1],
                            s_out=e.t.stream(), args=(("heads", lat.heads),), deps=((w[0], 0), (q[0], 0))))
        writes.append(e.write(name, e.t.instrs[mxm].s_out, mxm, lines * rb * 2, r0 * 2, rows=lines,
                              stride=lat.width * 2))
    queries = e.read(name, after=tuple((i, 0) for i in writes))
    return _cache_columns(e, lat, cache, appended, queries, (0, lat.width), keys=True)


def _feature_blocks(e: Emitter, lat: _Latent, per_head: int) -> list[tuple[int, int]]:
    """(first, count) latent features per per-head MXM: every head's [count, per_head] tile
    together within one instruction's panel (the plan's blocks cut by the same rule)."""
    return feature_blocks(lat.rank, lat.heads * per_head, e.t.timing.panel)


def _kv_b_columns(e: Emitter, lat: _Latent, r0: int, rb: int, col: int, count: int) -> tuple[int, int]:
    """READ kv_b rows [r0, r0 + rb), columns [col, col + count) of every head: rb x heads runs
    `count` elements long, one head's (nope + v) columns apart."""
    bits = lat.kv_b.type.dtype.bits
    per_head = (lat.nope + lat.v) * bits // 8
    offset = r0 * lat.heads * per_head + col * bits // 8
    return e.read(lat.kv_b.name, rb * lat.heads * count * bits // 8, offset, rows=rb * lat.heads, stride=per_head)


def _kv_b_scales(e: Emitter, lat: _Latent, scale: Value, col: int, count: int) -> tuple[int, int]:
    """READ the per-column scales of columns [col, col + count) of every head, [heads x count]."""
    return e.read(scale.name, lat.heads * count * 2, col * 2, rows=lat.heads, stride=(lat.nope + lat.v) * 2)


def _cache_columns(e: Emitter, lat: _Latent, cache: str, appended: tuple, act: tuple[int, int],
                   cols: tuple[int, int], keys: bool) -> tuple[int, int]:
    """Stream columns [c0, c0 + cb) of the latent cache through the MXM block by block, as
    _cache_panels does a cache's whole rows: KEYS (act: queries [rows, heads, cb]) or VALUES
    (act: probabilities [rows, heads, B x reach]); returns the chain's last (instr, stream). A causal
    chunk streams each sequence's first `reach` rows only (attention.cache_blocks)."""
    c0, cb = cols
    blocks = cache_blocks(lat.batch, lat.tokens, lat.reach, max(1, e.t.timing.panel ** 2 // cb))
    kind = Flag.KEYS if keys else Flag.VALUES
    acc = None
    for i, (t0, col, tb) in enumerate(blocks):
        # Stream one block ahead of the MXM (a READ waits for the previous MXM to start), so a
        # long cache holds two streams, not one per block.
        ahead = ((acc, -e.t.instrs[acc].cycles),) if acc is not None else ()
        r = e.read(cache, tb * cb * 2, (t0 * lat.width + c0) * 2, after=appended + ahead, rows=tb,
                   stride=lat.width * 2)
        k_dim, n_dim = (cb, tb) if keys else (tb, cb)
        flags = kind | (Flag.ACCUMULATE if acc is not None else 0) | (Flag.LAST if i == len(blocks) - 1 else 0)
        deps = ((r[0], 0), (act[0], 0)) + (((acc, 0),) if acc is not None else ())
        m, partial = lat.per_seq * lat.heads, e.t.instrs[acc].s_out if acc is not None else -1
        acc = e.t.add(Instr(Op.MXM, e.t.timing.mxm(m, k_dim, n_dim, Fmt.F16), fmt=Fmt.F16, m=m, k=k_dim, n=n_dim,
                            flags=int(flags), s_a=r[1], s_b=act[1], s_c=partial, s_out=e.t.stream(),
                            offset=0 if keys else col, args=lat.head_args(), deps=deps))
    return acc, e.t.instrs[acc].s_out


def _per_head_product(e: Emitter, lat: _Latent, latent: tuple[int, int], col: int, count: int) -> tuple[int, int]:
    """Latent outputs [rows, heads, rank] through W_uv (kv_b's columns [col, col + count) of
    each head): one MXM HEADS per block of latent features, accumulating over them."""
    acc = None
    blocks = _feature_blocks(e, lat, count)
    for r0, rb in blocks:
        w = _kv_b_columns(e, lat, r0, rb, col, count)
        flags = Flag.HEADS | (Flag.ACCUMULATE if acc is not None else 0) | (Flag.LAST if r0 + rb >= lat.rank else 0)
        deps = ((w[0], 0), (latent[0], 0)) + (((acc, 0),) if acc is not None else ())
        acc = e.t.add(Instr(Op.MXM, e.t.timing.mxm(lat.rows, rb, lat.heads * count, lat.fmt), fmt=lat.fmt,
                            m=lat.rows, k=rb, n=lat.heads * count, flags=int(flags), s_a=w[1], s_b=latent[1],
                            s_c=e.t.instrs[acc].s_out if acc is not None else -1, s_out=e.t.stream(), offset=r0,
                            args=(("heads", lat.heads),), deps=deps))
    return acc, e.t.instrs[acc].s_out
