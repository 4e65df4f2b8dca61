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
from dataclasses import dataclass, field

from compiler.codegen.template import Instr, Ref, Space, Template
from ir.graph import Op as GraphOp
from ir.graph import Value
from ir.isa import Fmt, Fn, Op
from ir.ops import Opcode, expert_passes
from ir.program import Flag
from ir.types import DType

FMT = {DType.F16: Fmt.F16, DType.BF16: Fmt.F16, DType.F32: Fmt.F16, DType.FP8: Fmt.FP8, DType.I8: Fmt.I8,
       DType.I4: Fmt.I4}


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

    # ---- primitives -------------------------------------------------------------------------

    def read(self, name: str, nbytes: int | None = None, offset: int = 0, after: Sequence[tuple[int, int]] = (),
             index: tuple[int, int] | None = None) -> tuple[int, int]:
        """READ a value (or `nbytes` of it from `offset`) onto a new stream. With `index`
        (instruction, stream) the address is offset at run time by the ids on that stream."""
        s = self.slots[name]
        size = s.nbytes if nbytes is None else nbytes
        deps = ((s.ready, 0),) if s.ready is not None else ()
        ref = Ref(s.ref.space, s.ref.slot, s.ref.offset + offset)
        stream = self.t.stream()
        extra = {"flags": int(Flag.INDIRECT), "s_b": index[1]} if index else {}
        deps += ((index[0], 0),) if index else ()
        i = self.t.add(Instr(Op.READ, self.t.timing.mem(size), src=ref, src_bytes=size, s_out=stream,
                             deps=deps + tuple(after), **extra))
        return i, stream

    def write(self, name: str, stream: int, producer: int, nbytes: int, offset: int = 0, drain: bool = True) -> int:
        """WRITE a stream into a value's buffer; results of compute units pay the drain."""
        s = self.slots[name]
        lag = self.t.timing.drain_cycles if drain else 0
        ref = Ref(s.ref.space, s.ref.slot, s.ref.offset + offset)
        return self.t.add(Instr(Op.WRITE, self.t.timing.mem(nbytes), dst=ref, dst_bytes=nbytes, s_a=stream,
                                deps=((producer, lag),)))

    def vop(self, fn: Fn, m: int, n: int, a: tuple[int, int], b: tuple[int, int] | None = None,
            bytes_in: int = 0) -> tuple[int, int]:
        """A vector function over streams a (and b); returns (instruction, output stream)."""
        out = self.t.stream()
        deps = (a[0], 0), *(((b[0], 0),) if b else ())
        cycles = self.t.timing.vop(fn, m * n, bytes_in)
        i = self.t.add(Instr(Op.VOP, cycles, fn=fn, m=m, n=n, src_bytes=bytes_in, s_a=a[1],
                             s_b=b[1] if b else -1, s_out=out, deps=deps))
        return i, out

    def result(self, v: Value) -> None:
        """Give a new result its buffer: LOCAL, or PORT_OUT when a later unit reads it."""
        if v.name in self.exported:
            self.ports_out.append(v.name)
            self.slots[v.name] = Slot(Ref(Space.PORT_OUT, len(self.ports_out) - 1), v.type.nbytes)
        else:
            self.slots[v.name] = Slot(self.t.local(v.type.nbytes), v.type.nbytes)

    def done(self, v: Value, write: int) -> None:
        self.slots[v.name].ready = write

    # ---- compound -------------------------------------------------------------------------

    def elementwise(self, fn: Fn, out: Value, *ins: Value) -> None:
        reads = [self.read(v.name) for v in ins]
        rows, cols = _rows_cols(out)
        i, s = self.vop(fn, rows, cols, reads[0], reads[1] if len(reads) > 1 else None,
                        sum(v.type.nbytes for v in ins))
        self.result(out)
        self.done(out, self.write(out.name, s, i, out.type.nbytes))

    def matmul(self, x: Value, w: Value, scale: Value | None, out: Value, transpose_b: bool,
               index: tuple[int, int] | None = None) -> None:
        """x[M,K] @ w: weight panels stream through the MXM, accumulating over K. `index`:
        the weights (and scales) are chosen at run time by the ids on that stream."""
        m, k_all = x.type.shape
        n_all = out.type.shape[1]
        fmt = FMT[w.type.dtype]
        panel = self.t.timing.panel
        xs = self.read(x.name)
        self.result(out)
        offset, last_mxm = 0, None
        for n0 in range(0, n_all, panel):
            nb = min(panel, n_all - n0)
            acc = None
            for k0 in range(0, k_all, panel):
                kb = min(panel, k_all - k0)
                nbytes = math.ceil(kb * nb * fmt.bits / 8)
                # Stream one panel ahead of the MXM: a READ waits for the previous MXM to start.
                ahead = ((last_mxm, -self.t.instrs[last_mxm].cycles),) if last_mxm is not None else ()
                r, ws = self.read(w.name, nbytes, offset, ahead, index)
                offset += nbytes
                flags = (Flag.ACCUMULATE if acc is not None else 0) | (Flag.LAST if k0 + kb >= k_all else 0)
                deps = ((r, 0), (xs[0], 0)) + (((acc, 0),) if acc is not None else ())
                acc = self.t.add(Instr(Op.MXM, self.t.timing.mxm(m, kb, nb, fmt), fmt=fmt, m=m, k=kb, n=nb,
                                       flags=int(flags), s_a=ws, s_b=xs[1], s_out=self.t.stream(), deps=deps))
                last_mxm = acc
            self._finish_panel(out, scale, acc, m, n0, nb, index)
        del transpose_b  # the panels cover the same bytes whichever way the weight is stored

    def _finish_panel(self, out: Value, scale: Value | None, acc: int, m: int, n0: int, nb: int,
                      index: tuple[int, int] | None = None) -> None:
        stream, producer = self.t.instrs[acc].s_out, acc
        if scale is not None:  # dequantise on the way out: one scale per output channel
            sr = self.read(scale.name, nb * 2, n0 * 2, index=index)
            producer, stream = self.vop(Fn.SCALE, m, nb, (acc, stream), sr, nb * 2)
        self.done(out, self.write(out.name, stream, producer, m * nb * 2, offset=m * n0 * 2))


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
    """Gather the tokens' rows (data-dependent addresses, fixed time), scaled if quantized."""
    ids, table = op.operands[:2]
    out = op.results[0]
    rows, width = out.type.shape
    row_bytes = math.ceil(width * table.type.dtype.bits / 8)
    ids_read = e.read(ids.name)
    stream = e.t.stream()
    g = e.t.add(Instr(Op.GATHER, e.t.timing.mem(rows * row_bytes), flags=int(Flag.INDIRECT),
                      src=e.slots[table.name].ref, src_bytes=rows * row_bytes, m=rows, n=width,
                      s_b=ids_read[1], s_out=stream, deps=((ids_read[0], 0),)))
    producer = (g, stream)
    if len(op.operands) == 3:
        scale = op.operands[2]
        ss = e.t.stream()
        gs = e.t.add(Instr(Op.GATHER, e.t.timing.mem(rows * 2), flags=int(Flag.INDIRECT),
                           src=e.slots[scale.name].ref, src_bytes=rows * 2, m=rows, n=1, s_b=ids_read[1],
                           s_out=ss, deps=((ids_read[0], 0),)))
        producer = e.vop(Fn.SCALE, rows, width, producer, (gs, ss), rows * row_bytes)
    e.result(out)
    e.done(out, e.write(out.name, producer[1], producer[0], out.type.nbytes))


def _attention(e: Emitter, op: GraphOp) -> None:
    """Append k, v at pos (data-dependent rows, fixed time), then q.K^T, softmax and P.V with
    the cache streamed through the MXM in panels. An 8-bit cache streams its codes at the
    MXM's 8-bit rate and a 16-bit scale per token and kv head beside them."""
    q, k, v, k_cache, v_cache, _pos = op.operands[:6]
    scales = op.operands[6:8] if len(op.operands) == 8 else (None, None)
    out = op.results[0]
    a = op.attr
    batch, tokens, width = k_cache.type.shape
    # Each row attends its own sequence's cache: per sequence, its rows' query heads of one kv
    # head form the MXM's rows; the B caches stream one after another.
    m = max(1, q.type.shape[0] // batch) * (a["heads"] // a["kv_heads"])
    tokens *= batch
    appended = [_append(e, new, cache, scale) for new, cache, scale in zip((k, v), (k_cache, v_cache), scales,
                                                                          strict=True)]
    qs = e.read(q.name)
    block = max(1, e.t.timing.panel ** 2 // width)
    kv = _CacheStream(k_cache.type.dtype, width, a["kv_heads"])
    scores = _cache_panels(e, kv, k_cache.name, scales[0], appended[0], qs, m, tokens, block, keys=True)
    sm = e.vop(Fn.SOFTMAX, m, tokens, scores, bytes_in=0)
    ctx = _cache_panels(e, kv, v_cache.name, scales[1], appended[1], sm, m, tokens, block, keys=False)
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


def _append(e: Emitter, new: Value, cache: Value, scale: Value | None) -> int:
    """Write the new rows at their positions; an 8-bit cache gets codes and scales."""
    r = e.read(new.name)
    slot = e.slots[cache.name]
    rows = new.type.shape[0]
    codes = rows * cache.type.shape[2] * cache.type.dtype.bits // 8
    if scale is not None:
        q = e.vop(Fn.QUANTIZE, rows, new.type.shape[1], r, bytes_in=new.type.nbytes)
        s_slot = e.slots[scale.name]
        e.t.add(Instr(Op.WRITE, e.t.timing.mem(rows * scale.type.shape[2] * 2), flags=int(Flag.INDIRECT),
                      dst=s_slot.ref, dst_bytes=rows * scale.type.shape[2] * 2, s_a=q[1],
                      deps=((q[0], e.t.timing.drain_cycles),)))
        r = q
    lag = e.t.timing.drain_cycles if scale is not None else 0
    i = e.t.add(Instr(Op.WRITE, e.t.timing.mem(codes), flags=int(Flag.INDIRECT), dst=slot.ref,
                      dst_bytes=codes, s_a=r[1], deps=((r[0], lag),)))
    slot.ready = i
    return i


def _cache_panels(e: Emitter, kv: _CacheStream, cache: str, scale: Value | None, appended: int,
                  act: tuple[int, int], m: int, tokens: int, block: int, keys: bool) -> tuple[int, int]:
    """Stream a cache [tokens, width] through the MXM block by block; returns the last (instr, stream).
    Scales multiply the scores (keys) or the probabilities (values) of their tokens."""
    acc = None
    width = kv.width
    for t0 in range(0, tokens, block):
        tb = min(block, tokens - t0)
        r = e.read(cache, tb * kv.row_bytes, t0 * kv.row_bytes, after=((appended, 0),))
        k_dim, n_dim = (width, tb) if keys else (tb, width)
        step = act
        if scale is not None and not keys:
            sr = e.read(scale.name, tb * kv.scale_bytes, t0 * kv.scale_bytes, after=((appended, 0),))
            step = e.vop(Fn.SCALE, m, tb, act, sr, tb * kv.scale_bytes)
        flags = (Flag.ACCUMULATE if acc is not None and not keys else 0) | (
            Flag.LAST if keys or t0 + tb >= tokens else 0)
        deps = ((r[0], 0), (step[0], 0)) + (((acc, 0),) if acc is not None else ())
        acc = e.t.add(Instr(Op.MXM, e.t.timing.mxm(m, k_dim, n_dim, kv.fmt), fmt=kv.fmt, m=m, k=k_dim,
                            n=n_dim, flags=int(flags), s_a=r[1], s_b=step[1], s_out=e.t.stream(), deps=deps))
        if scale is not None and keys:
            sr = e.read(scale.name, tb * kv.scale_bytes, t0 * kv.scale_bytes, after=((appended, 0),))
            acc = e.vop(Fn.SCALE, m, tb, (acc, e.t.instrs[acc].s_out), sr, tb * kv.scale_bytes)[0]
    return acc, e.t.instrs[acc].s_out


def _topk(e: Emitter, op: GraphOp) -> None:
    """Router scores to the k best experts: their weights and their ids, one VOP each."""
    logits = e.read(op.operands[0].name)
    rows, experts = op.operands[0].type.shape
    for fn, result in ((Fn.TOPK, op.results[0]), (Fn.ARGTOPK, op.results[1])):
        i, s = e.vop(fn, rows, experts, logits, bytes_in=op.operands[0].type.nbytes)
        e.result(result)
        e.done(result, e.write(result.name, s, i, result.type.nbytes))


def _experts(e: Emitter, op: GraphOp) -> None:
    """Static expert passes (ir.ops.expert_passes): each streams one expert's gate, up and down
    through the MXM, weighs the result by the token's routing weight (zero if not routed
    there) and adds it to the output. For one row, pass j runs the row's j-th routed expert,
    its weights found by address at run time; for several rows, pass j is local expert j."""
    x, weights, ids, gate, up, down = op.operands[:6]
    scales = op.operands[6:9] if len(op.operands) == 9 else (None, None, None)
    out = op.results[0]
    rows, hidden = x.type.shape
    here, _, inter = gate.type.shape
    passes = expert_passes(rows, op.attr["top_k"], here)
    indirect = rows == 1 and here > op.attr["top_k"]
    ids_read = e.read(ids.name) if indirect else None
    e.result(out)
    acc = None
    for j in range(passes):
        expert = 0 if indirect else j
        parts = [_expert_slice(e, w, sc, expert, f"{out.name}.e{j}.{k}")
                 for k, (w, sc) in enumerate(zip((gate, up, down), scales, strict=True))]
        g, u = (Value(f"{out.name}.e{j}.{k}", out.type.with_shape(rows, inter)) for k in ("g", "u"))
        for part, res in zip(parts[:2], (g, u), strict=True):
            e.matmul(x, part[0], part[1], res, False, ids_read)
        act = Value(f"{out.name}.e{j}.act", g.type)
        e.elementwise(Fn.SILU if op.attr.get("act", "silu") == "silu" else Fn.GELU, act, g)
        hidden_in = Value(f"{out.name}.e{j}.h", g.type)
        e.elementwise(Fn.MUL, hidden_in, act, u)
        y = Value(f"{out.name}.e{j}.y", out.type)
        e.matmul(hidden_in, parts[2][0], parts[2][1], y, False, ids_read)
        yr, wr = e.read(y.name), e.read(weights.name)
        i, s = e.vop(Fn.SCALE, rows, hidden, yr, wr, out.type.nbytes)
        if acc is not None:
            i, s = e.vop(Fn.SUM, rows, hidden, (i, s), e.read(out.name, after=((acc, 0),)), out.type.nbytes)
        acc = e.write(out.name, s, i, out.type.nbytes)
    e.done(out, acc)


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
    e.elementwise(Fn.ROPE, op.results[0], *op.operands)


EMIT: dict[Opcode, Callable[[Emitter, GraphOp], None]] = {
    Opcode.MATMUL: _matmul,
    Opcode.EMBED: _embed,
    Opcode.ADD: _binary(Fn.ADD),
    Opcode.MUL: _binary(Fn.MUL),
    Opcode.RMSNORM: _binary(Fn.RMSNORM),
    Opcode.ROPE: _rope,
    Opcode.ATTENTION: _attention,
    Opcode.SILU: _unary(Fn.SILU),
    Opcode.GELU: _unary(Fn.GELU),
    Opcode.SOFTMAX: _unary(Fn.SOFTMAX),
    Opcode.ARGMAX: _unary(Fn.ARGMAX),
    Opcode.TOPK: _topk,
    Opcode.EXPERTS: _experts,
}
