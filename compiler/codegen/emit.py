"""Lowering: one chip's ops of a unit become template instructions (the EMIT table, keyed by opcode).

Every graph op reads its operands from SRAM onto streams (MEM), computes on the
MXM or VXM, and writes its result back (MEM); the write pays the pipeline drain,
so each op on the dependency chain costs the chip's op latency once, as the
plan's estimate assumes. Matrix products stream their weights panel by panel
(up to (dim x planes)^2 weights per MXM instruction), accumulating over the
input features; the KV cache is streamed the same way by attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from compiler.codegen.template import Instr, Ref, Rel, Space, Template
from ir.errors import ConfigError
from ir.graph import Op as GraphOp
from ir.graph import Value
from ir.isa import Fmt, Fn, Op
from ir.ops import Opcode, expert_passes
from ir.program import Flag
from ir.types import DType

FMT = {DType.F16: Fmt.F16, DType.BF16: Fmt.F16, DType.F32: Fmt.F16, DType.FP8: Fmt.FP8, DType.I8: Fmt.I8,
       DType.I4: Fmt.I4}


@dataclass(frozen=True, slots=True)
class Index:
    """A run-time address offset: element `element` of the i32 stream made by `instr`, less
    `first` (the first id this chip holds) and clamped to the `count` it holds, times `step`
    bytes (the expert a routed pass streams)."""

    instr: int
    stream: int
    element: int
    step: int
    first: int | Rel = 0
    count: int = 0


@dataclass
class Slot:
    """A value the template reads or writes: its address and the write that produced it."""

    ref: Ref
    nbytes: int
    ready: int | None = None  # index of the producing WRITE (None: present at start)


@dataclass
class Emitter:
    """Builds one unit's template. `slots` maps every value name to where it lives."""

    t: Template
    slots: dict[str, Slot]
    exported: set[str]  # results a later unit reads (they get PORT_OUT slots)
    ports_out: list[str] = field(default_factory=list)
    tp: int = 1  # chips of the tensor-parallel group running this code

    # ---- primitives -------------------------------------------------------------------------

    def read(self, name: str, nbytes: int | None = None, offset: int | Ref = 0,
             after: Sequence[tuple[int, int]] = (), index: Index | None = None, rows: int = 0,
             stride: int = 0) -> tuple[int, int]:
        """READ a value (or `nbytes` of it from `offset`: a byte count, or a Ref whose parts
        make it rank-dependent) onto a new stream: `rows` rows `stride` bytes apart when
        given. With `index` the address moves at run time by an id on a stream."""
        s = self.slots[name]
        size = s.nbytes if nbytes is None else nbytes
        deps = ((s.ready, 0),) if s.ready is not None else ()
        extra_parts = offset.parts if isinstance(offset, Ref) else ()
        at = offset.offset if isinstance(offset, Ref) else offset
        ref = Ref(s.ref.space, s.ref.slot, s.ref.offset + at, s.ref.parts + extra_parts)
        stream = self.t.stream()
        extra = {}
        if index:
            extra = {"flags": int(Flag.INDIRECT), "s_b": index.stream, "imm": index.element, "k": index.step,
                     "base": index.first, "n": index.count}
            deps += ((index.instr, 0),)
        i = self.t.add(Instr(Op.READ, self.t.timing.mem(size), src=ref, src_bytes=size, s_out=stream,
                             m=rows, stride=stride, deps=deps + tuple(after), **extra))
        return i, stream

    def write(self, name: str, stream: int, producer: int, nbytes: int, offset: int = 0, drain: bool = True,
              rows: int = 0, stride: int = 0) -> int:
        """WRITE a stream into a value's buffer (`rows` rows `stride` bytes apart when given);
        results of compute units pay the drain."""
        s = self.slots[name]
        lag = self.t.timing.drain_cycles if drain else 0
        ref = Ref(s.ref.space, s.ref.slot, s.ref.offset + offset, s.ref.parts)
        return self.t.add(Instr(Op.WRITE, self.t.timing.mem(nbytes), dst=ref, dst_bytes=nbytes, s_a=stream,
                                m=rows, stride=stride, deps=((producer, lag),)))

    def vop(self, fn: Fn, m: int, n: int, a: tuple[int, int], b: tuple[int, int] | None = None,
            bytes_in: int = 0, *, c: tuple[int, int] | None = None, args: dict | None = None,
            imm: int | Rel = -1, offset: int | Rel = 0, base: int | Rel = 0) -> tuple[int, int]:
        """A vector function over streams a (from byte `offset`), b and c; returns (instruction,
        output stream). `args` are the function's constants (eps, rope frequencies, masks)."""
        out = self.t.stream()
        deps = tuple((x[0], 0) for x in (a, b, c) if x)
        cycles = self.t.timing.vop(fn, m * n, bytes_in)
        i = self.t.add(Instr(Op.VOP, cycles, fn=fn, m=m, n=n, src_bytes=bytes_in, s_a=a[1],
                             s_b=b[1] if b else -1, s_c=c[1] if c else -1, s_out=out, deps=deps,
                             args=tuple(sorted(args.items())) if args else None, imm=imm, offset=offset,
                             base=base))
        return i, out

    def result(self, v: Value) -> None:
        """Give a new result its buffer: LOCAL, or PORT_OUT when a later unit reads it."""
        if v.name in self.exported:
            self.ports_out.append(v.name)
            self.slots[v.name] = Slot(Ref(Space.PORT_OUT, len(self.ports_out) - 1), v.type.nbytes)
        else:
            self.slots[v.name] = Slot(self.t.local(v.type.nbytes), v.type.nbytes)

    def pad(self, name: str, nbytes: int) -> None:
        """Grow a result's buffer to `nbytes` (a collective's slices may overhang the tensor)."""
        slot = self.slots[name]
        slot.nbytes = max(slot.nbytes, nbytes)
        if slot.ref.space is Space.LOCAL:
            self.t.local_bytes[slot.ref.slot] = max(self.t.local_bytes[slot.ref.slot], nbytes)

    def port_bytes(self) -> tuple[int, ...]:
        """Bytes of each PORT_OUT buffer, padding included."""
        return tuple(self.slots[n].nbytes for n in self.ports_out)

    def done(self, v: Value, write: int) -> None:
        self.slots[v.name].ready = write

    # ---- compound -------------------------------------------------------------------------

    def elementwise(self, fn: Fn, out: Value, *ins: Value, args: dict | None = None) -> None:
        reads = [self.read(v.name) for v in ins]
        rows, cols = _rows_cols(out)
        i, s = self.vop(fn, rows, cols, reads[0], reads[1] if len(reads) > 1 else None,
                        sum(v.type.nbytes for v in ins), args=args)
        self.result(out)
        self.done(out, self.write(out.name, s, i, out.type.nbytes))

    def matmul(self, x: Value, w: Value, scale: Value | None, out: Value, transpose_b: bool,
               index: Index | None = None) -> None:
        """x[M,K] @ w: weight panels stream through the MXM, accumulating over K (each MXM
        takes the previous one's partial sums on s_c). Weights stay row-major as stored, so a
        panel is a 2-D READ. `index`: the weights (and scales) are chosen at run time."""
        m, k_all = x.type.shape
        n_all = out.type.shape[1]
        fmt = FMT[w.type.dtype]
        panel = self.t.timing.panel
        xs = self.read(x.name)
        self.result(out)
        last_mxm = None
        for n0 in range(0, n_all, panel):
            nb = min(panel, n_all - n0)
            acc = None
            for k0 in range(0, k_all, panel):
                kb = min(panel, k_all - k0)
                # Stream one panel ahead of the MXM: a READ waits for the previous MXM to start.
                ahead = ((last_mxm, -self.t.instrs[last_mxm].cycles),) if last_mxm is not None else ()
                r, ws = self._panel(w.name, fmt, (k_all, n_all), (k0, n0), (kb, nb), transpose_b, ahead, index)
                flags = (Flag.ACCUMULATE if acc is not None else 0) | (Flag.LAST if k0 + kb >= k_all else 0) | (
                    Flag.TRANSPOSE if transpose_b else 0)
                deps = ((r, 0), (xs[0], 0)) + (((acc, 0),) if acc is not None else ())
                partial = self.t.instrs[acc].s_out if acc is not None else -1
                acc = self.t.add(Instr(Op.MXM, self.t.timing.mxm(m, kb, nb, fmt), fmt=fmt, m=m, k=kb, n=nb,
                                       flags=int(flags), s_a=ws, s_b=xs[1], s_c=partial, offset=k0,
                                       s_out=self.t.stream(), deps=deps))
                last_mxm = acc
            self._finish_panel(out, scale, acc, m, (n0, nb, n_all), index)

    def _panel(self, name: str, fmt: Fmt, shape: tuple[int, int], at: tuple[int, int], size: tuple[int, int],
               transpose_b: bool, after: tuple, index: Index | None) -> tuple[int, int]:
        """READ the weight panel [k0:k0+kb, n0:n0+nb] of a row-major [K, N] matrix (or of
        [N, K] with transpose_b): kb rows of nb elements, or one block when rows are whole."""
        (k_all, n_all), (k0, n0), (kb, nb) = shape, at, size
        if transpose_b:
            (k_all, n_all), (k0, n0), (kb, nb) = (n_all, k_all), (n0, k0), (nb, kb)
        row_bytes, stride = math.ceil(nb * fmt.bits / 8), math.ceil(n_all * fmt.bits / 8)
        offset = k0 * stride + n0 * fmt.bits // 8
        rows = 0 if nb == n_all else kb
        return self.read(name, kb * row_bytes, offset, after, index, rows=rows, stride=stride if rows else 0)

    def _finish_panel(self, out: Value, scale: Value | None, acc: int, m: int, cols: tuple[int, int, int],
                      index: Index | None = None) -> None:
        """Dequantise (one scale per output channel) and write columns [n0, n0+nb) of each row."""
        n0, nb, n_all = cols
        stream, producer = self.t.instrs[acc].s_out, acc
        if scale is not None:  # read when the panel's last MXM starts, not held from the unit's start
            sr = self.read(scale.name, nb * 2, n0 * 2, after=((acc, -self.t.instrs[acc].cycles),),
                           index=replace(index, step=n_all * 2) if index else None)
            producer, stream = self.vop(Fn.SCALE, m, nb, (acc, stream), sr, nb * 2)
        rows = m if m > 1 and nb < n_all else 0
        self.done(out, self.write(out.name, stream, producer, m * nb * 2, offset=n0 * 2, rows=rows,
                                  stride=n_all * 2 if rows else 0))


def _rows_cols(v: Value) -> tuple[int, int]:
    shape = v.type.shape
    return (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (1, max(1, shape[0] if shape else 1))


# ---- per-opcode rules -----------------------------------------------------------------------

def _matmul(e: Emitter, op: GraphOp) -> None:
    x, w = op.operands[:2]
    scale = op.operands[2] if len(op.operands) == 3 else None
    e.matmul(x, w, scale, op.results[0], bool(op.attr.get("transpose_b")))


def _unary(fn: Fn) -> Callable[[Emitter, GraphOp], None]:
    return lambda e, op: e.elementwise(fn, op.results[0], op.operands[0])


def _binary(fn: Fn) -> Callable[[Emitter, GraphOp], None]:
    return lambda e, op: e.elementwise(fn, op.results[0], *op.operands)


def _embed(e: Emitter, op: GraphOp) -> None:
    """Gather the tokens' rows (data-dependent addresses, fixed time), scaled if quantized. A
    vocabulary shard holds rows [rank x V/t, (rank + 1) x V/t); other ids give zero rows."""
    ids, table = op.operands[:2]
    out = op.results[0]
    rows, width = out.type.shape
    shard_rows = table.type.shape[0]
    first_id = Rel(per_rank=shard_rows) if op.attr.get("shards", 1) > 1 else 0  # the shard's first row
    row_bytes = math.ceil(width * table.type.dtype.bits / 8)
    ids_read = e.read(ids.name)
    producer = _gather(e, table, rows, width, row_bytes, ids_read, first_id)
    if len(op.operands) == 3:
        scales = _gather(e, op.operands[2], rows, 1, 2, ids_read, first_id)
        producer = e.vop(Fn.SCALE, rows, width, producer, scales, rows * row_bytes, args={"axis": "row"})
    e.result(out)
    e.done(out, e.write(out.name, producer[1], producer[0], out.type.nbytes))


def _gather(e: Emitter, table: Value, rows: int, width: int, row_bytes: int, ids: tuple[int, int],
            first_id: int | Rel) -> tuple[int, int]:
    stream = e.t.stream()
    g = e.t.add(Instr(Op.GATHER, e.t.timing.mem(rows * row_bytes), flags=int(Flag.INDIRECT), fmt=FMT[table.type.dtype],
                      src=e.slots[table.name].ref, src_bytes=rows * row_bytes, m=rows, n=width,
                      k=table.type.shape[0], base=first_id, s_b=ids[1], s_out=stream, deps=((ids[0], 0),)))
    return g, stream


def _attention(e: Emitter, op: GraphOp) -> None:
    """Append k, v at each row's position (data-dependent rows, fixed time), then q.K^T, a
    masked softmax and P.V, the cache streamed through the MXM block by block; each product
    pairs every query head with its own kv head. An 8-bit cache streams its codes at the
    MXM's 8-bit rate and a 16-bit scale per token and kv head beside them."""
    q, k, v, k_cache, v_cache, pos = op.operands[:6]
    scales = op.operands[6:8] if len(op.operands) == 8 else (None, None)
    out = op.results[0]
    a = op.attr
    batch, tokens, width = k_cache.type.shape
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
    kv = _CacheStream(k_cache.type.dtype, width, a["kv_heads"])
    scores = _cache_panels(e, kv, k_cache.name, scales[0], appended[0], qs, m, tokens * batch, block, heads, True)
    mask = {"heads": a["heads"], "head_dim": a["head_dim"], "tokens": tokens, "rows": rows, "batch": batch}
    sm = e.vop(Fn.SOFTMAX, per_seq * a["heads"], tokens * batch, scores, pos_read, args=mask)
    ctx = _cache_panels(e, kv, v_cache.name, scales[1], appended[1], sm, m, tokens * batch, block, heads, False)
    e.result(out)
    e.done(out, e.write(out.name, ctx[1], ctx[0], out.type.nbytes))


@dataclass(frozen=True)
class _CacheStream:
    """How one token's row of a cache is stored: its codes' format and bytes, and its scales."""

    dtype: DType
    width: int
    kv_heads: int

    @property
    def fmt(self) -> Fmt:
        return FMT[self.dtype]

    @property
    def row_bytes(self) -> int:
        return self.width * self.dtype.bits // 8

    @property
    def scale_bytes(self) -> int:
        return self.kv_heads * 2


def _append(e: Emitter, new: Value, cache: Value, scale: Value | None, pos: tuple[int, int], per_seq: int) -> int:
    """Write row r at position pos[r] of its sequence's cache; an 8-bit cache gets codes and scales."""
    r = e.read(new.name)
    slot = e.slots[cache.name]
    rows, tokens = new.type.shape[0], cache.type.shape[1]
    row_bytes = cache.type.shape[2] * cache.type.dtype.bits // 8
    if scale is not None:  # QUANTIZE streams the rows' codes, then their scales
        q = e.vop(Fn.QUANTIZE, rows, new.type.shape[1], r, bytes_in=new.type.nbytes,
                  args={"kv_heads": scale.type.shape[2], "format": cache.type.dtype.value})
        s_slot = e.slots[scale.name]
        s_row = scale.type.shape[2] * 2
        e.t.add(Instr(Op.WRITE, e.t.timing.mem(rows * s_row), flags=int(Flag.INDIRECT), dst=s_slot.ref,
                      dst_bytes=rows * s_row, s_a=q[1], s_b=pos[1], m=rows, k=per_seq, imm=tokens, stride=s_row,
                      offset=rows * row_bytes, deps=((q[0], e.t.timing.drain_cycles), (pos[0], 0))))
        r = q
    lag = e.t.timing.drain_cycles if scale is not None else 0
    i = e.t.add(Instr(Op.WRITE, e.t.timing.mem(rows * row_bytes), flags=int(Flag.INDIRECT), dst=slot.ref,
                      dst_bytes=rows * row_bytes, s_a=r[1], s_b=pos[1], m=rows, k=per_seq, imm=tokens,
                      stride=row_bytes, deps=((r[0], lag), (pos[0], 0))))
    slot.ready = i
    return i


def _cache_panels(e: Emitter, kv: _CacheStream, cache: str, scale: Value | None, appended: int,
                  act: tuple[int, int], m: int, tokens: int, block: int, heads: dict, keys: bool
                  ) -> tuple[int, int]:
    """Stream a cache [tokens, width] through the MXM block by block; returns the last (instr, stream).
    Keys: each block's scores join the earlier blocks' (s_c). Values: each block's products add
    to the earlier blocks' (s_c), reading the probabilities of its tokens (offset). Scales
    multiply the scores (keys) or the probabilities (values) of their tokens."""
    acc = None
    width = kv.width
    kind = Flag.KEYS if keys else Flag.VALUES
    for t0 in range(0, tokens, block):
        tb = min(block, tokens - t0)
        r = e.read(cache, tb * kv.row_bytes, t0 * kv.row_bytes, after=((appended, 0),))
        k_dim, n_dim = (width, tb) if keys else (tb, width)
        step = act
        if scale is not None and not keys:  # the block's probabilities, times its values' scales
            sr = e.read(scale.name, tb * kv.scale_bytes, t0 * kv.scale_bytes, after=((appended, 0),))
            step = e.vop(Fn.SCALE, m, tb, act, sr, tb * kv.scale_bytes,
                         args=heads | {"on": "probabilities", "from": t0, "block": tb})
        flags = kind | (Flag.ACCUMULATE if acc is not None else 0) | (Flag.LAST if t0 + tb >= tokens else 0)
        deps = ((r[0], 0), (step[0], 0)) + (((acc, 0),) if acc is not None else ())
        partial = e.t.instrs[acc].s_out if acc is not None else -1
        acc = e.t.add(Instr(Op.MXM, e.t.timing.mxm(m, k_dim, n_dim, kv.fmt), fmt=kv.fmt, m=m, k=k_dim,
                            n=n_dim, flags=int(flags), s_a=r[1], s_b=step[1], s_c=partial, s_out=e.t.stream(),
                            offset=0 if keys or scale is not None else t0, args=tuple(sorted(heads.items())),
                            deps=deps))
        if scale is not None and keys:  # the block's scores, times its keys' scales
            sr = e.read(scale.name, tb * kv.scale_bytes, t0 * kv.scale_bytes, after=((appended, 0),))
            acc = e.vop(Fn.SCALE, m, tb, (acc, e.t.instrs[acc].s_out), sr, tb * kv.scale_bytes,
                        args=heads | {"on": "scores", "block": tb})[0]
    return acc, e.t.instrs[acc].s_out


def _topk(e: Emitter, op: GraphOp) -> None:
    """Router scores to the k best experts: their weights and their ids, one VOP each (the
    bias, when the router has one, rides on s_b)."""
    logits = e.read(op.operands[0].name)
    bias = e.read(op.operands[1].name) if len(op.operands) == 2 else None
    rows, experts = op.operands[0].type.shape
    for fn, result in ((Fn.TOPK, op.results[0]), (Fn.ARGTOPK, op.results[1])):
        i, s = e.vop(fn, rows, experts, logits, bias, bytes_in=op.operands[0].type.nbytes, args=op.attr)
        e.result(result)
        e.done(result, e.write(result.name, s, i, result.type.nbytes))


def _experts(e: Emitter, op: GraphOp) -> None:
    """Static expert passes (ir.ops.expert_passes): each streams one expert's gate, up and down
    through the MXM, weighs the result by each row's routing weight for that expert (zero if
    not routed there) and adds it to the output. For one row, pass j runs the row's j-th routed
    expert, its weights found by address at run time (a chip that does not hold it streams one
    it does and weighs it zero); for several rows, pass j is local expert j."""
    x, weights, ids, gate, up, down = op.operands[:6]
    scales = op.operands[6:9] if len(op.operands) == 9 else (None, None, None)
    out = op.results[0]
    rows, hidden = x.type.shape
    here, _, inter = gate.type.shape
    passes = expert_passes(rows, op.attr["top_k"], here)
    indirect = rows == 1 and here > op.attr["top_k"]
    first = _first_expert(op.attr["experts"], here, e.tp)
    ids_read = e.read(ids.name)
    weights_read = e.read(weights.name)
    step = {k: math.prod(w.type.shape[1:]) * w.type.dtype.bits // 8 for k, w in enumerate((gate, up, down))}
    e.result(out)
    acc = None
    for j in range(passes):
        expert = 0 if indirect else j
        parts = [_expert_slice(e, w, sc, expert, f"{out.name}.e{j}.{k}")
                 for k, (w, sc) in enumerate(zip((gate, up, down), scales, strict=True))]
        g, u = (Value(f"{out.name}.e{j}.{k}", out.type.with_shape(rows, inter)) for k in ("g", "u"))
        index = [Index(*ids_read, j, step[k], first, here) if indirect else None for k in range(3)]
        for part, res, ix in zip(parts[:2], (g, u), index[:2], strict=True):
            e.matmul(x, part[0], part[1], res, False, ix)
        act = Value(f"{out.name}.e{j}.act", g.type)
        e.elementwise(Fn.SILU if op.attr.get("act", "silu") == "silu" else Fn.GELU, act, g)
        hidden_in = Value(f"{out.name}.e{j}.h", g.type)
        e.elementwise(Fn.MUL, hidden_in, act, u)
        y = Value(f"{out.name}.e{j}.y", out.type)
        e.matmul(hidden_in, parts[2][0], parts[2][1], y, False, index[2])
        which = {"slot": j} if indirect else {"expert": j}
        i, s = e.vop(Fn.ROUTE, rows, hidden, e.read(y.name), weights_read, out.type.nbytes, c=ids_read,
                     args=which | {"local": here}, base=first)
        if acc is not None:
            i, s = e.vop(Fn.SUM, rows, hidden, (i, s), e.read(out.name, after=((acc, 0),)), out.type.nbytes)
        acc = e.write(out.name, s, i, out.type.nbytes)
    e.done(out, acc)


def _first_expert(experts: int, here: int, tp: int) -> Rel:
    """The first expert id a chip holds: `here` each in rank order, or, when the group is wider
    than the experts (each split by its intermediate features over tp / experts chips), one
    expert per run of tp / experts ranks."""
    return Rel(per_rank=here) if here * tp == experts else Rel(per_rank=1, div=tp // experts)


def _expert_slice(e: Emitter, w: Value, scale: Value | None, expert: int, name: str
                  ) -> tuple[Value, Value | None]:
    """Expert `expert`'s [in, out] matrix (and scale row) as values over the stacked params."""
    _, k, n = w.type.shape
    out = []
    for v, shape, tag in ((w, (k, n), "w"), (scale, (n,), "s")):
        if v is None:
            out.append(None)
            continue
        piece = Value(f"{name}.{tag}", v.type.with_shape(*shape))
        slot = e.slots[v.name]
        e.slots[piece.name] = Slot(Ref(slot.ref.space, slot.ref.slot, slot.ref.offset + expert * piece.type.nbytes),
                                   piece.type.nbytes, slot.ready)
        out.append(piece)
    return out[0], out[1]


def _rope(e: Emitter, op: GraphOp) -> None:
    e.elementwise(Fn.ROPE, op.results[0], *op.operands, args=op.attr)


def _argmax(e: Emitter, op: GraphOp) -> None:
    """The best id of each row: a reduction over the row, so it is sized by its input."""
    x, out = op.operands[0], op.results[0]
    rows, cols = _rows_cols(x)
    i, s = e.vop(Fn.ARGMAX, rows, cols, e.read(x.name), bytes_in=x.type.nbytes)
    e.result(out)
    e.done(out, e.write(out.name, s, i, out.type.nbytes))


def _rmsnorm(e: Emitter, op: GraphOp) -> None:
    e.elementwise(Fn.RMSNORM, op.results[0], *op.operands, args=op.attr)


def _slice(e: Emitter, op: GraphOp) -> None:
    """Columns start..stop of every row: a strided READ straight into the result's WRITE (data
    movement only, so no pipeline drain)."""
    x, out = op.operands[0], op.results[0]
    rows, cols = math.prod(x.type.shape[:-1]), x.type.shape[-1]
    size = x.type.dtype.bits // 8
    width = (op.attr["stop"] - op.attr["start"]) * size
    many = rows if rows > 1 and width < cols * size else 0
    r = e.read(x.name, rows * width, op.attr["start"] * size, rows=many, stride=cols * size if many else 0)
    e.result(out)
    e.done(out, e.write(out.name, r[1], r[0], out.type.nbytes, drain=False))


def _conv1d(e: Emitter, op: GraphOp) -> None:
    """Mamba's causal depthwise conv on the VXM. The rows, the conv state and the taps are read
    once; one VOP convolves (K multiply-adds per element) and the bias is added; a second VOP
    shifts the rows into the state, which is written back where it was read from, so the next
    chunk (or token) continues from this one's last K-1 inputs."""
    x, w, state = op.operands[:3]
    _need_16_bit(op, *op.operands)
    out = op.results[0]
    rows, channels = x.type.shape
    batch, _, held = state.type.shape
    taps = w.type.shape[1]
    shape = {"batch": batch, "channels": channels, "rows": rows, "taps": taps}
    xs, ss, ws = (e.read(v.name) for v in (x, state, w))
    moved = x.type.nbytes + state.type.nbytes
    y = e.vop(Fn.CONV1D, rows, channels * taps, xs, ss, moved + w.type.nbytes, c=ws, args=shape)
    if len(op.operands) == 4:
        bias = op.operands[3]
        y = e.vop(Fn.ADD, rows, channels, y, e.read(bias.name), out.type.nbytes + bias.type.nbytes)
    st = e.vop(Fn.CONVSTATE, batch, channels * held, xs, ss, moved, args=shape)
    e.slots[state.name].ready = e.write(state.name, st[1], st[0], state.type.nbytes)
    e.result(out)
    e.done(out, e.write(out.name, y[1], y[0], out.type.nbytes))


def _selective_scan(e: Emitter, op: GraphOp) -> None:
    """Mamba's recurrence on the VXM, sequential over the rows inside one VOP (timed by its
    m x C x N state elements): the f32 state is read once, the per-channel params and the
    per-row operands are joined onto one stream each, and the scan's output stream carries the
    new state (written back once) followed by y (copied off from that offset)."""
    x, dt, a_log, b, c, d, state = op.operands
    _need_16_bit(op, *op.operands[:6])
    out = op.results[0]
    rows, channels = x.type.shape
    batch, _, n = state.type.shape
    h = e.read(state.name)
    params = e.vop(Fn.JOIN, 1, channels * (n + 1), e.read(a_log.name), e.read(d.name),
                   a_log.type.nbytes + d.type.nbytes)
    xdb = e.vop(Fn.JOIN, rows, 2 * channels + n, e.read(x.name), e.read(dt.name),
                x.type.nbytes + dt.type.nbytes + b.type.nbytes, c=e.read(b.name))
    per_row = e.vop(Fn.JOIN, rows, 2 * (channels + n), xdb, e.read(c.name), c.type.nbytes)
    shape = {"batch": batch, "channels": channels, "rows": rows, "state": n}
    s = e.vop(Fn.SCAN, rows, channels * n, h, params, state.type.nbytes, c=per_row, args=shape)
    e.slots[state.name].ready = e.write(state.name, s[1], s[0], state.type.nbytes)
    y = e.vop(Fn.COPY, rows, channels, s, bytes_in=out.type.nbytes, offset=state.type.nbytes)
    e.result(out)
    e.done(out, e.write(out.name, y[1], y[0], out.type.nbytes))


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


def _mla_attention(e: Emitter, op: GraphOp) -> None:
    """DeepSeek's latent attention with kv_b absorbed (ir.ops), as the flops rule counts it:
    append [c_kv | k_pe] at each row's position; per head, q_nope through W_uk gives latent
    queries (MXM HEADS, a tile per head); their scores against the cache's c_kv columns and
    q_pe's against its k_pe columns stream the cache block by block (MXM KEYS, one latent
    head shared by every query head) and are added; a scaled, masked softmax; the
    probabilities times the c_kv columns (MXM VALUES) give latent outputs, which W_uv takes
    to values (MXM HEADS). Only the final result is written, so the op pays one drain. A
    quantized kv_b's per-column scales multiply q_nope before W_uk and the values after W_uv."""
    q_nope, q_pe, c_kv, k_pe, cache, pos, kv_b = op.operands[:7]
    scale = op.operands[7] if len(op.operands) == 8 else None
    out, a = op.results[0], op.attr
    batch, tokens, width = cache.type.shape
    lat = _Latent(a["heads"], a["nope_dim"], a["rope_dim"], a["v_dim"], width - a["rope_dim"], q_nope.type.shape[0],
                  batch, tokens, kv_b)
    _need_16_bit(op, cache)
    pos_read = e.read(pos.name)
    appended = tuple((_append_columns(e, new, cache, pos_read, lat, col), 0)
                     for new, col in ((c_kv, 0), (k_pe, lat.rank)))
    scores = _latent_scores(e, lat, q_nope, q_pe, scale, cache.name, appended)
    mask = {"heads": lat.heads, "scale": a["scale"], "tokens": tokens, "rows": lat.rows, "batch": batch}
    sm = e.vop(Fn.SOFTMAX, lat.per_seq * lat.heads, tokens * batch, scores, pos_read, args=mask)
    latent = _cache_columns(e, lat, cache.name, appended, sm, (0, lat.rank), keys=False)
    values = _per_head_product(e, lat, latent, lat.nope, lat.v)
    if scale is not None:
        sr = _kv_b_scales(e, lat, scale, lat.nope, lat.v)
        values = e.vop(Fn.SCALE, lat.rows, lat.heads * lat.v, values, sr, lat.heads * lat.v * 2)
    e.result(out)
    e.done(out, e.write(out.name, values[1], values[0], out.type.nbytes))


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
    """Scores [rows, heads, B x tokens]: per block of latent features, the absorbed queries
    against those cache columns, and q_pe against the k_pe columns, added on the VXM."""
    q = e.read(q_nope.name)
    if scale is not None:
        q = e.vop(Fn.SCALE, lat.rows, lat.heads * lat.nope, q, _kv_b_scales(e, lat, scale, 0, lat.nope),
                  q_nope.type.nbytes + lat.heads * lat.nope * 2)
    parts = [_cache_columns(e, lat, cache, appended, e.read(q_pe.name), (lat.rank, lat.rope), keys=True)]
    for r0, rb in _feature_blocks(e, lat, lat.nope):
        w = _kv_b_columns(e, lat, r0, rb, 0, lat.nope)
        flags = Flag.HEADS | Flag.TRANSPOSE | Flag.LAST
        mxm = e.t.add(Instr(Op.MXM, e.t.timing.mxm(lat.rows, lat.nope, lat.heads * rb, lat.fmt), fmt=lat.fmt,
                            m=lat.rows, k=lat.nope, n=lat.heads * rb, flags=int(flags), s_a=w[1], s_b=q[1],
                            s_out=e.t.stream(), args=(("heads", lat.heads),), deps=((w[0], 0), (q[0], 0))))
        queries = (mxm, e.t.instrs[mxm].s_out)
        parts.append(_cache_columns(e, lat, cache, appended, queries, (r0, rb), keys=True))
    total = parts[0]
    for part in parts[1:]:  # streams only: B sequences' scores per row, as the products leave them
        total = e.vop(Fn.ADD, lat.rows * lat.heads, lat.tokens * lat.batch, total, part)
    return total


def _feature_blocks(e: Emitter, lat: _Latent, per_head: int) -> list[tuple[int, int]]:
    """(first, count) latent features per per-head MXM: every head's [count, per_head] tile
    together within the (dim x planes)^2 weights one instruction covers."""
    step = max(1, min(lat.rank, e.t.timing.panel ** 2 // (lat.heads * per_head)))
    return [(r0, min(step, lat.rank - r0)) for r0 in range(0, lat.rank, step)]


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
    (act: probabilities [rows, heads, B x tokens]); returns the chain's last (instr, stream)."""
    c0, cb = cols
    total = lat.tokens * lat.batch
    block = max(1, e.t.timing.panel ** 2 // cb)
    kind = Flag.KEYS if keys else Flag.VALUES
    acc = None
    for t0 in range(0, total, block):
        tb = min(block, total - t0)
        # Stream one block ahead of the MXM (a READ waits for the previous MXM to start), so a
        # long cache holds two streams, not one per block.
        ahead = ((acc, -e.t.instrs[acc].cycles),) if acc is not None else ()
        r = e.read(cache, tb * cb * 2, (t0 * lat.width + c0) * 2, after=appended + ahead, rows=tb,
                   stride=lat.width * 2)
        k_dim, n_dim = (cb, tb) if keys else (tb, cb)
        flags = kind | (Flag.ACCUMULATE if acc is not None else 0) | (Flag.LAST if t0 + tb >= total else 0)
        deps = ((r[0], 0), (act[0], 0)) + (((acc, 0),) if acc is not None else ())
        m, partial = lat.per_seq * lat.heads, e.t.instrs[acc].s_out if acc is not None else -1
        acc = e.t.add(Instr(Op.MXM, e.t.timing.mxm(m, k_dim, n_dim, Fmt.F16), fmt=Fmt.F16, m=m, k=k_dim, n=n_dim,
                            flags=int(flags), s_a=r[1], s_b=act[1], s_c=partial, s_out=e.t.stream(),
                            offset=0 if keys else t0, args=lat.head_args(), deps=deps))
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


def _need_16_bit(op: GraphOp, *values: Value) -> None:
    """The VXM reads these operands as 16-bit floats (quantization leaves Mamba's conv and scan
    params 16-bit); anything else is a lowering the compiler does not have."""
    other = [f"%{v.name}: {v.type.dtype.value}" for v in values if v.type.dtype not in (DType.F16, DType.BF16)]
    if other:
        raise ConfigError(f"{op.opcode.value} %{op.results[0].name}: the lowering reads 16-bit operands, "
                          f"got {', '.join(other)}")


EMIT: dict[Opcode, Callable[[Emitter, GraphOp], None]] = {
    Opcode.MATMUL: _matmul,
    Opcode.EMBED: _embed,
    Opcode.ADD: _binary(Fn.ADD),
    Opcode.MUL: _binary(Fn.MUL),
    Opcode.RMSNORM: _rmsnorm,
    Opcode.ROPE: _rope,
    Opcode.ATTENTION: _attention,
    Opcode.SILU: _unary(Fn.SILU),
    Opcode.GELU: _unary(Fn.GELU),
    Opcode.SOFTMAX: _unary(Fn.SOFTMAX),
    Opcode.ARGMAX: _argmax,
    Opcode.TOPK: _topk,
    Opcode.EXPERTS: _experts,
    Opcode.CONV1D: _conv1d,
    Opcode.SELECTIVE_SCAN: _selective_scan,
    Opcode.SLICE: _slice,
    Opcode.MLA_ATTENTION: _mla_attention,
}
