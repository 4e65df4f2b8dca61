"""Lowering of grouped-query attention: cache appends at the positions, then the cache streamed block by
block through the MXM for scores and values, with a masked softmax between."""

from __future__ import annotations

from compiler.codegen.cache_stream import Block, CacheStream, block_product
from compiler.codegen.collectives import Collectives
from compiler.codegen.emit import Emitter, Slot, rows_cols
from compiler.codegen.template import Instr, Rel
from compiler.codegen.tier_attention import lower_tiered_attention
from ir.graph import Op as GraphOp
from ir.graph import Value
from ir.isa import Fn, Op
from ir.ops import attended_heads, reach_of
from ir.program import Flag


def lower_attention(e: Emitter, op: GraphOp) -> None:
    """Append k, v at each row's position (data-dependent rows, fixed time), then q.K^T, a
    masked softmax and P.V, the cache streamed through the MXM block by block; each product
    pairs every query head with its own kv head. An 8-bit cache streams its codes at the
    MXM's 8-bit rate and a 16-bit scale per token and kv head beside them; an NVFP4 cache streams
    its codes with their e4m3 block scales on s_d (the MXM scales the codes itself). A causal
    chunk (`reach`) streams only each sequence's first `reach` cache rows."""
    if "tier" in op.attr:
        return lower_tiered_attention(e, op)
    q, k, v, k_cache, v_cache, pos = op.operands[:6]
    scales = op.operands[6:8] if len(op.operands) == 8 else (None, None)
    out = op.results[0]
    a = op.attr
    batch, tokens, width = k_cache.type.shape
    reach = reach_of(a, k_cache.type)
    rows = q.type.shape[0]
    per_seq = max(1, rows // batch)
    # Each row attends its own sequence's cache: per sequence, its rows' query heads of one kv
    # head form the MXM's rows; the B caches stream one after another.
    m = per_seq * (a["heads"] // a["kv_heads"])
    heads = {"heads": a["heads"], "kv_heads": a["kv_heads"], "rows": rows}
    pos_read = e.read(pos.name)
    appended = [_append(e, new, cache, scale, pos_read, per_seq)
                for new, cache, scale in zip((k, v), (k_cache, v_cache), scales, strict=True)]
    qs = e.read(q.name)
    block = max(1, e.t.timing.panel ** 2 // width)
    kv = CacheStream(k_cache.type.dtype, width, a["kv_heads"])
    blocks = cache_blocks(batch, tokens, reach, block)
    scores = _cache_panels(e, kv, k_cache.name, scales[0], appended[0], qs, m, blocks, heads, True)
    mask = {"heads": a["heads"], "head_dim": a["head_dim"], "tokens": reach, "rows": rows, "batch": batch}
    sm = e.vop(Fn.SOFTMAX, per_seq * a["heads"], reach * batch, scores, pos_read, args=mask)
    ctx = _cache_panels(e, kv, v_cache.name, scales[1], appended[1], sm, m, blocks, heads, False)
    # The context leaves through a rounding COPY, as SRAM would hold it: the matmul after it takes it off that
    # stream (partition.chaining.leaves_through_copy), not from SRAM after the drain.
    i, s = e.vop(Fn.COPY, *rows_cols(out), ctx, bytes_in=out.type.nbytes, flags=Flag.ROUND)
    e.result(out)
    e.done(out, e.write(out.name, s, i, out.type.nbytes))
    e.pending = {out.name: (i, s)}


def cache_blocks(batch: int, tokens: int, reach: int, block: int) -> list[tuple[int, int, int]]:
    """(first cache row, first score column, rows) of each block a [batch, tokens] cache streams: the
    first `reach` rows of every sequence, whose scores sit side by side (sequence b's from column
    b x reach). Reaching the whole cache, the B caches are one run of rows."""
    runs = [(0, batch * tokens)] if reach >= tokens else [(b * tokens, reach) for b in range(batch)]
    out, col = [], 0
    for first, count in runs:
        for t0 in range(0, count, block):
            tb = min(block, count - t0)
            out.append((first + t0, col, tb))
            col += tb
    return out


def lower_sequence_shards(e: Emitter, coll: Collectives, op: GraphOp) -> None:
    """Attention on one of the s chips that share a kv head's cache by sequence (seq_shards): this chip
    holds positions [j x held, (j + 1) x held) of every sequence (j its index among the s), appends the
    rows whose positions it holds (a WINDOW write drops the others), gathers the kv head's queries from
    the s chips (unless they arrive whole: q_slice), attends them over its positions (softmax and
    log-sum-exp, masked by global position), and all-gathers the s partials, which COMBINE merges
    (flash-decoding) into this chip's own features: its heads', or its q_slice of the kv head's."""
    q, k, v, k_cache, v_cache, pos = op.operands[:6]
    scales = op.operands[6:8] if len(op.operands) == 8 else (None, None)
    out, a = op.results[0], op.attr
    shards, d = a["seq_shards"], a["head_dim"]
    batch, held, width = k_cache.type.shape
    reach = reach_of(a, k_cache.type)
    rows = q.type.shape[0]
    per_seq = max(1, rows // batch)
    heads = attended_heads(a)  # every query head of the chip's kv head
    keep = a.get("q_slice", a["heads"] * d)  # the merged context's features this chip keeps
    sub = coll.subgroup(shards)
    first = Rel(parts=sub.member(held))  # the position of this chip's first cache row
    pos_read = e.read(pos.name)
    appended = [_append(e, new, cache, scale, pos_read, per_seq, first)
                for new, cache, scale in zip((k, v), (k_cache, v_cache), scales, strict=True)]
    queries, part, parts = (f"{out.name}.{n}" for n in ("queries", "partial", "partials"))
    part_bytes = rows * heads * (d + 2) * 2
    buffers = ((part, part_bytes), (parts, shards * part_bytes))
    for name, nbytes in buffers if "q_slice" in a else ((queries, rows * heads * d * 2), *buffers):
        e.slots[name] = Slot(e.t.local(nbytes), nbytes)
    if "q_slice" in a:
        qs = e.read(q.name)
    else:
        gathered = sub.gather_rows(q.name, queries, rows, q.type.nbytes // rows)
        qs = e.read(queries, after=tuple((w, 0) for w in gathered))
    kv = CacheStream(k_cache.type.dtype, width, 1)
    blocks = cache_blocks(batch, held, reach, max(1, e.t.timing.panel ** 2 // width))
    grouping = {"heads": heads, "kv_heads": 1, "rows": rows}
    m = per_seq * heads
    scores = _cache_panels(e, kv, k_cache.name, scales[0], appended[0], qs, m, blocks, grouping, True)
    mask = {"heads": heads, "head_dim": d, "tokens": reach, "rows": rows, "batch": batch}
    sm = e.vop(Fn.SOFTMAX, m, reach * batch, scores, pos_read, args=mask, base=first)
    lse = e.vop(Fn.SOFTMAX, m, reach * batch, scores, pos_read, args=mask | {"lse": True}, base=first)
    ctx = _cache_panels(e, kv, v_cache.name, scales[1], appended[1], sm, m, blocks, grouping, False)
    w = e.write(part, ctx[1], ctx[0], rows * heads * d * 2)
    w2 = e.write(part, lse[1], lse[0], rows * heads * 4, offset=rows * heads * d * 2)
    e.t.instrs[w2].deps += ((w, 0),)
    e.slots[part].ready = w2
    e.slots[parts].ready = sub.allgather(part, parts, shards * part_bytes)
    coll.rejoin(sub)
    merge = {"shards": shards, "rows": rows, "heads": heads, "head_dim": d, "keep": keep}
    i, st = e.vop(Fn.COMBINE, rows * shards, keep, e.read(parts), bytes_in=shards * part_bytes,
                  args=merge, base=Rel(parts=sub.member(keep)))
    e.result(out)
    e.done(out, e.write(out.name, st, i, out.type.nbytes))


def _append(e: Emitter, new: Value, cache: Value, scale: Value | None, pos: tuple[int, int], per_seq: int,
            first: Rel | None = None) -> int:
    """Write row r at position pos[r] of its sequence's cache; a quantized cache gets codes and scales.
    A cache holding a run of positions from `first` (a sequence shard) drops the rows outside it."""
    window = {"flags": int(Flag.INDIRECT | Flag.WINDOW), "base": first} if first is not None else \
        {"flags": int(Flag.INDIRECT)}
    r = e.read(new.name)
    slot = e.slots[cache.name]
    rows, tokens = new.type.shape[0], cache.type.shape[1]
    row_bytes = cache.type.shape[2] * cache.type.dtype.bits // 8
    if scale is not None:  # QUANTIZE streams the rows' codes, then their scales
        dtype = cache.type.dtype  # 8-bit: a scale per kv head; NVFP4: one per 16 values of the row
        groups = {"kv_heads": scale.type.shape[2]} if dtype.block is None else {}
        q = e.vop(Fn.QUANTIZE, rows, new.type.shape[1], r, bytes_in=new.type.nbytes,
                  args=groups | {"format": dtype.value})
        s_slot = e.slots[scale.name]
        s_row = scale.type.nbytes // (scale.type.shape[0] * scale.type.shape[1])
        e.t.add(Instr(Op.WRITE, e.t.timing.mem(rows * s_row), **window, dst=s_slot.ref,
                      dst_bytes=rows * s_row, s_a=q[1], s_b=pos[1], m=rows, k=per_seq, imm=tokens, stride=s_row,
                      offset=rows * row_bytes, deps=((q[0], e.t.timing.drain_cycles), (pos[0], 0))))
        r = q
    lag = e.t.timing.drain_cycles if scale is not None else 0
    i = e.t.add(Instr(Op.WRITE, e.t.timing.mem(rows * row_bytes), **window, dst=slot.ref,
                      dst_bytes=rows * row_bytes, s_a=r[1], s_b=pos[1], m=rows, k=per_seq, imm=tokens,
                      stride=row_bytes, deps=((r[0], lag), (pos[0], 0))))
    slot.ready = i
    return i


def _cache_panels(e: Emitter, kv: CacheStream, cache: str, scale: Value | None, appended: int,
                  act: tuple[int, int], m: int, blocks: list[tuple[int, int, int]], heads: dict, keys: bool
                  ) -> tuple[int, int]:
    """Stream a cache's `blocks` (cache_blocks) through the MXM (cache_stream.block_product); returns
    the last (instr, stream)."""
    acc = None
    for i, (t0, col, tb) in enumerate(blocks):
        r = e.read(cache, tb * kv.row_bytes, t0 * kv.row_bytes, after=((appended, 0),))
        scales = None if scale is None else (
            lambda t0=t0, tb=tb: e.read(scale.name, tb * kv.scale_bytes, t0 * kv.scale_bytes, after=((appended, 0),)))
        acc = block_product(e, kv, r, scales, act, m, Block(tb, col, i == len(blocks) - 1), heads, keys, acc)
    return acc, e.t.instrs[acc].s_out
