"""Lowering: the Emitter, with which one chip's ops of a unit become template instructions, and
the rules for the basic ops (attention, experts, ssm and mla have modules of their own; rules.EMIT
maps every opcode to its rule).

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
from compiler.partition.chaining import stream_result
from compiler.passes.fuse import columns
from ir.errors import ConfigError
from ir.graph import Op as GraphOp
from ir.graph import Value
from ir.isa import FMT_OF, Fmt, Fn, Op
from ir.program import Flag
from ir.types import DType
from targets.timing import paced_start

FMT = FMT_OF  # the format each stored dtype streams through the MXM (or a GATHER) in


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


@dataclass(frozen=True, slots=True)
class Group:
    """A grouped matmul (routed prefill): its rows are the table's slots (`table`, a value written by
    vop.group), each multiplied by its local expert's tile of the `tiles` stacked in the weight."""

    table: str
    tiles: int


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
    # partition.chaining: the result the op being lowered takes off the vector unit's stream (`fresh`, at byte
    # `fresh_offset` of it), the one the last element-wise op left there (`pending`), as {name: (VOP, stream)},
    # and a one-stream matmul result and its one-row slices (`on_stream`: name -> (VOP, stream, byte offset))
    fresh: dict[str, tuple[int, int]] = field(default_factory=dict)
    fresh_offset: int = 0
    pending: dict[str, tuple[int, int]] = field(default_factory=dict)
    on_stream: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    last_panel: tuple[int, int] = (-1, -1)  # the last matmul's last panel's result: (producer, stream)

    def take_fresh(self, chained: str | None) -> None:
        """Before lowering the next op: the operand partition.chaining.chained_operands says it takes off a
        stream, from the VOP just before or a one-stream matmul result; the plan counted it so, so a value on
        no stream is a lowering the plan does not describe."""
        self.fresh, self.fresh_offset = {}, 0
        if chained in self.pending:
            self.fresh = {chained: self.pending[chained]}
        elif chained is not None:
            if chained not in self.on_stream:
                raise RuntimeError(f"%{chained} is chained by partition.chaining but on no stream")
            producer, stream, self.fresh_offset = self.on_stream[chained]
            self.fresh = {chained: (producer, stream)}
        self.pending = {}

    # ---- primitives -------------------------------------------------------------------------

    def read(self, name: str, nbytes: int | None = None, offset: int | Ref = 0,
             after: Sequence[tuple[int, int]] = (), index: Index | None = None, rows: int = 0,
             stride: int = 0, tiles: tuple[int, int] = (0, 0)) -> tuple[int, int]:
        """READ a value (or `nbytes` of it from `offset`: a byte count, or a Ref whose parts
        make it rank-dependent) onto a new stream: `rows` rows `stride` bytes apart when
        given. With `index` the address moves at run time by an id on a stream; with `tiles`
        (count, step) the same piece of `count` stacked matrices `step` bytes apart, one
        after another (nbytes is one tile's)."""
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
        if tiles[0] > 1:
            size *= tiles[0]
            extra = {"n": tiles[0], "k": tiles[1]}
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
            imm: int | Rel = -1, offset: int | Rel = 0, base: int | Rel = 0, flags: int = 0) -> tuple[int, int]:
        """A vector function over streams a (from byte `offset`), b and c; returns (instruction,
        output stream). `args` are the function's constants (eps, rope frequencies, masks)."""
        out = self.t.stream()
        deps = tuple((x[0], 0) for x in (a, b, c) if x)
        cycles = self.t.timing.vop(fn, m * n, bytes_in, rows=m)
        i = self.t.add(Instr(Op.VOP, cycles, fn=fn, m=m, n=n, src_bytes=bytes_in, s_a=a[1],
                             s_b=b[1] if b else -1, s_c=c[1] if c else -1, s_out=out, deps=deps,
                             args=tuple(sorted(args.items())) if args else None, imm=imm, offset=offset,
                             base=base, flags=flags))
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
        """One VOP; an operand the op before left on the vector unit's stream (`fresh`) is taken from it."""
        reads = [self.fresh.get(v.name) or self.read(v.name) for v in ins]
        offset = self.fresh_offset if ins[0].name in self.fresh else 0  # a slice of a one-stream result
        rows, cols = rows_cols(out)
        i, s = self.vop(fn, rows, cols, reads[0], reads[1] if len(reads) > 1 else None,
                        sum(v.type.nbytes for v in ins), args=args, flags=Flag.ROUND, offset=offset)
        self.result(out)
        self.done(out, self.write(out.name, s, i, out.type.nbytes))
        self.pending = {out.name: (i, s)}

    def matmul(self, x: Value, w: Value, scales: tuple[Value, ...], out: Value, transpose_b: bool,
               index: Index | None = None, group: Group | None = None, xs: tuple[int, int] | None = None,
               columns: tuple[int, int] | None = None, after: int | None = None) -> int:
        """x[M,K] @ w: weight panels stream through the MXM, accumulating over K (each MXM
        takes the previous one's partial sums on s_c). Weights stay row-major as stored, so a
        panel is a 2-D READ; a block-scaled weight's panel brings the rows of its block scales
        on s_d (panels start on block boundaries: formats.check_storable). `scales` are the
        weight's scale operands (none, per channel, or block and tensor scales). `index`: the
        weights (and scales) are chosen at run time. `group`: w (and its scales) stack one
        matrix per local expert; each panel streams every expert's piece once and each of x's
        rows (the table's slots) passes its own expert's (a grouped MXM). `xs`: x already on a stream
        (its producer and stream), not read from SRAM. `columns`: only the weight's output columns
        [start, stop) (start on a whole byte), into `out` [M, stop - start], whose slot the caller made;
        `after`: the MXM the first panel's READ streams ahead of. Returns the last MXM."""
        m, k_all = x.type.shape
        n_all = out.type.shape[1]
        tiles = (group.tiles, w.type.nbytes // group.tiles) if group else (0, 0)
        table = self.read(group.table) if group else None
        fmt = FMT[w.type.dtype]
        block = w.type.dtype.block
        panel = self.t.timing.panel
        xs = xs or self.read(x.name)
        if columns is None:
            columns = (0, n_all)
            self.result(out)
        else:
            n_all = w.type.shape[0] if transpose_b else w.type.shape[1]
        last_mxm = after
        dim = self.t.timing.dim  # panels start on whole tiles, and on scale blocks (formats.check_storable)
        granule = dim if block is None or dim % block.size == 0 else panel
        for column, n0 in enumerate(range(columns[0], columns[1], panel)):
            nb = min(panel, columns[1] - n0)
            acc = None
            for k0, kb in k_panels(k_all, granule, panel, reverse=column % 2 == 1):
                # Stream one panel ahead of the MXM: a READ waits for the previous MXM to start.
                ahead = ((last_mxm, -self.t.instrs[last_mxm].cycles),) if last_mxm is not None else ()
                r, ws = self._panel(w.name, fmt, (k_all, n_all), (k0, n0), (kb, nb), transpose_b, ahead, index, tiles)
                last = (k0 == 0) if column % 2 else (k0 + kb >= k_all)
                flags = (Flag.ACCUMULATE if acc is not None else 0) | (Flag.LAST if last else 0) | (
                    Flag.TRANSPOSE if transpose_b else 0)
                cycles = self.t.timing.mxm(m, kb, nb, fmt, max(1, tiles[0]))
                deps = ((r, self.paced_lag(r, cycles, self.t.timing.install(kb, nb, fmt))), (xs[0], 0)) + (
                    ((acc, 0),) if acc is not None else ())
                s_d = -1
                if block is not None:
                    at, size = (k0 // block.size, n0), (block.scales(kb), nb)
                    shape = (block.scales(k_all), n_all)
                    sr, s_d = self._panel(scales[0].name, FMT[block.scale], shape, at, size, transpose_b, ahead,
                                          replace(index, step=scales[0].type.nbytes) if index else None,
                                          (group.tiles, scales[0].type.nbytes // group.tiles) if group else (0, 0))
                    deps += ((sr, 0),)
                partial = self.t.instrs[acc].s_out if acc is not None else -1
                grouped = {"s_e": table[1], "imm": group.tiles} if group else {}
                deps += ((table[0], 0),) if group else ()
                acc = self.t.add(Instr(Op.MXM, cycles, fmt=fmt, m=m,
                                       k=kb, n=nb, flags=int(flags), s_a=ws, s_b=xs[1], s_c=partial, s_d=s_d,
                                       offset=k0, s_out=self.t.stream(), deps=deps, **grouped))
                last_mxm = acc
            self.last_panel = self._finish_panel(out, scales if block is None else scales[1:], acc, m,
                                                 (n0, nb, n_all), index, group, columns[0])
        return last_mxm

    def hold_stream(self, op: GraphOp) -> None:
        """A stream_result (partition.chaining) is whole on its one panel's scale VOP's stream; a one-row slice
        of it lies at its columns' bytes of that stream."""
        self.on_stream = {}
        if stream_result(op, self.t.timing.panel):
            producer, stream = self.last_panel
            if self.t.instrs[producer].op is not Op.VOP:
                raise RuntimeError(f"%{op.results[0].name}: a stream result not scaled on the vector unit")
            self.on_stream = {op.results[0].name: (producer, stream, 0)}

    def paced_lag(self, read: int, cycles: int, install: int) -> int:
        """Cycles after its weight stream's producer `read` ends that an MXM of `cycles` (`install` of them its
        install) may start: before the end when a READ's panel installs off the stream (targets.timing.paced_start)."""
        producer = self.t.instrs[read]
        if producer.op is not Op.READ:
            return 0
        return int(paced_start(0, producer.cycles, cycles, install)) - producer.cycles

    def _panel(self, name: str, fmt: Fmt, shape: tuple[int, int], at: tuple[int, int], size: tuple[int, int],
               transpose_b: bool, after: tuple, index: Index | None, tiles: tuple[int, int] = (0, 0)
               ) -> tuple[int, int]:
        """READ the weight panel [k0:k0+kb, n0:n0+nb] of a row-major [K, N] matrix (or of
        [N, K] with transpose_b): kb rows of nb elements, or one block when rows are whole."""
        (k_all, n_all), (k0, n0), (kb, nb) = shape, at, size
        if transpose_b:
            (k_all, n_all), (k0, n0), (kb, nb) = (n_all, k_all), (n0, k0), (nb, kb)
        row_bytes, stride = math.ceil(nb * fmt.bits / 8), math.ceil(n_all * fmt.bits / 8)
        offset = k0 * stride + n0 * fmt.bits // 8
        rows = 0 if nb == n_all else kb
        return self.read(name, kb * row_bytes, offset, after, index, rows=rows, stride=stride if rows else 0,
                         tiles=tiles)

    def _finish_panel(self, out: Value, after: tuple[Value, ...], acc: int, m: int, cols: tuple[int, int, int],
                      index: Index | None = None, group: Group | None = None, start: int = 0) -> tuple[int, int]:
        """Scale the products by what multiplies them after the MXM (one 16-bit scale per output
        channel, or NVFP4's f32 tensor scale), rounded on the stream as SRAM will hold them (a reader
        chained off the stream sees what it would read), and write columns [n0, n0+nb) of each row (of `out`,
        which holds the weight's columns from `start`). Grouped,
        every expert's scales stream and each row takes its own expert's (SCALE axis "expert")."""
        n0, nb, n_all = cols
        width = out.type.shape[1]
        stream, producer = self.t.instrs[acc].s_out, acc
        ahead = ((acc, -self.t.instrs[acc].cycles),)  # read when the panel's last MXM starts, not held all unit
        if after and group:
            tensor = after[0].type.dtype is DType.F32
            size, at = (4, 0) if tensor else (nb * 2, n0 * 2)
            step = after[0].type.nbytes // group.tiles
            sr = self.read(after[0].name, size, at, after=ahead, tiles=(group.tiles, step))
            table = self.read(group.table, after=ahead)
            producer, stream = self.vop(Fn.SCALE, m, nb, (acc, stream), sr, size * group.tiles, c=table,
                                        args={"axis": "expert", "format": "f32" if tensor else "act"}, flags=Flag.ROUND)
        elif after and after[0].type.dtype is DType.F32:  # a tensor scale: one f32 for the whole matrix
            sr = self.read(after[0].name, 4, 0, after=ahead, index=replace(index, step=4) if index else None)
            producer, stream = self.vop(Fn.SCALE, m, nb, (acc, stream), sr, 4, args={"axis": "tensor"},
                                        flags=Flag.ROUND)
        elif after:
            sr = self.read(after[0].name, nb * 2, n0 * 2, after=ahead,
                           index=replace(index, step=n_all * 2) if index else None)
            producer, stream = self.vop(Fn.SCALE, m, nb, (acc, stream), sr, nb * 2, flags=Flag.ROUND)
        rows = m if m > 1 and nb < width else 0
        self.done(out, self.write(out.name, stream, producer, m * nb * 2, offset=(n0 - start) * 2, rows=rows,
                                  stride=width * 2 if rows else 0))
        return producer, stream


def k_panels(k_all: int, dim: int, panel: int, reverse: bool = False) -> list[tuple[int, int]]:
    """(first row, rows) of each MXM's weight panel along the inputs: as few panels as `panel` rows allow,
    the k_all / dim whole tiles (or granules of `dim` rows) spread evenly over them (the remainder's rows in
    the last), and in reverse order in every other column. A READ streams one panel ahead of the MXM, so a
    short MXM followed by a full panel's READ leaves the matrix unit idle for their difference: evened out,
    that difference is at most a tile's rows, and reversed, it falls once every two columns (the short panels
    meet) instead of once a column. The products accumulate exactly in any order (targets/functional.py's MXM)."""
    tiles, count = -(-k_all // dim), -(-k_all // panel)
    out, k0 = [], 0
    for p in range(count):
        kb = min(k_all - k0, (tiles // count + (p < tiles % count)) * dim)
        out.append((k0, kb))
        k0 += kb
    return out[::-1] if reverse else out


def rows_cols(v: Value) -> tuple[int, int]:
    shape = v.type.shape
    return (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (1, max(1, shape[0] if shape else 1))


def need_16_bit(op: GraphOp, *values: Value) -> None:
    """The VXM reads these operands as 16-bit floats (quantization leaves Mamba's conv and scan
    params 16-bit); anything else is a lowering the compiler does not have."""
    other = [f"%{v.name}: {v.type.dtype.value}" for v in values if v.type.dtype not in (DType.F16, DType.BF16)]
    if other:
        raise ConfigError(f"{op.opcode.value} %{op.results[0].name}: the lowering reads 16-bit operands, "
                          f"got {', '.join(other)}")


# ---- rules for the basic ops (the others have modules of their own; the table is rules.EMIT) ----

def matmul(e: Emitter, op: GraphOp) -> None:
    x, w = op.operands[:2]  # x off the vector unit's stream when its VOP just made it (partition.chaining)
    cols = columns(op)  # of a fused weight (passes.fuse)
    if cols:
        e.result(op.results[0])
    e.matmul(x, w, op.operands[2:], op.results[0], bool(op.attr.get("transpose_b")), xs=e.fresh.get(x.name),
             columns=cols)
    e.hold_stream(op)


def unary(fn: Fn) -> Callable[[Emitter, GraphOp], None]:
    return lambda e, op: e.elementwise(fn, op.results[0], op.operands[0])


def binary(fn: Fn) -> Callable[[Emitter, GraphOp], None]:
    return lambda e, op: e.elementwise(fn, op.results[0], *op.operands)


def embed(e: Emitter, op: GraphOp) -> None:
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
    block = table.type.dtype.block
    if block is not None:  # the rows' block scales, gathered beside them; then NVFP4's tensor scale
        per_row = block.scales(width)
        scales = _gather(e, op.operands[2], rows, per_row, per_row, ids_read, first_id)
        producer = e.vop(Fn.SCALE, rows, width, producer, scales, rows * per_row,
                         args={"axis": "block", "block": block.size})
        if len(op.operands) == 4:
            producer = e.vop(Fn.SCALE, rows, width, producer, e.read(op.operands[3].name), 4, args={"axis": "tensor"})
    elif len(op.operands) == 3:
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


def rope(e: Emitter, op: GraphOp) -> None:
    e.elementwise(Fn.ROPE, op.results[0], *op.operands, args=op.attr)


def argmax(e: Emitter, op: GraphOp) -> None:
    """The best id of each row: a reduction over the row, so it is sized by its input."""
    x, out = op.operands[0], op.results[0]
    rows, cols = rows_cols(x)
    i, s = e.vop(Fn.ARGMAX, rows, cols, e.read(x.name), bytes_in=x.type.nbytes)
    e.result(out)
    e.done(out, e.write(out.name, s, i, out.type.nbytes))


def accept(e: Emitter, op: GraphOp) -> None:
    """Speculative decoding's acceptance on the vector unit: the target's ids against the tokens the
    verify step was fed, one VOP over every sequence's rows; its timing never reads the ids."""
    predicted, tokens = op.operands
    out = op.results[0]
    a, b = e.read(predicted.name), e.read(tokens.name)
    i, s = e.vop(Fn.ACCEPT, out.type.numel, op.attr["steps"], a, b,
                 bytes_in=predicted.type.nbytes + tokens.type.nbytes)
    e.result(out)
    e.done(out, e.write(out.name, s, i, out.type.nbytes))


def rmsnorm(e: Emitter, op: GraphOp) -> None:
    e.elementwise(Fn.RMSNORM, op.results[0], *op.operands, args=op.attr)


def pick_rows(e: Emitter, op: GraphOp) -> None:
    """Row `row` of every `every` rows (each sequence's last prefill row): one strided READ of those
    rows into the result's WRITE (data movement only)."""
    x, out = op.operands[0], op.results[0]
    width = out.type.nbytes // out.type.shape[0]
    rows, every = out.type.shape[0], op.attr["every"]
    many = rows if rows > 1 else 0
    r = e.read(x.name, rows * width, op.attr["row"] * width, rows=many, stride=every * width if many else 0)
    e.result(out)
    e.done(out, e.write(out.name, r[1], r[0], out.type.nbytes, drain=False))


def slice_columns(e: Emitter, op: GraphOp) -> None:
    """Columns start..stop of every row: a strided READ straight into the result's WRITE (data
    movement only, so no pipeline drain). Of one row, read only inside the unit, the columns are a run
    of x's bytes: the result is that run, no instruction at all (a fused matmul's siblings: passes.fuse)."""
    x, out = op.operands[0], op.results[0]
    rows, cols = math.prod(x.type.shape[:-1]), x.type.shape[-1]
    size = x.type.dtype.bits // 8
    width = (op.attr["stop"] - op.attr["start"]) * size
    if x.name in e.on_stream and rows == 1:  # its bytes of a one-stream matmul result (partition.chaining)
        producer, stream, at = e.on_stream[x.name]
        e.on_stream[out.name] = (producer, stream, at + op.attr["start"] * size)
    if rows == 1 and out.name not in e.exported:
        held = e.slots[x.name]
        e.slots[out.name] = Slot(replace(held.ref, offset=held.ref.offset + op.attr["start"] * size), width,
                                 held.ready)
        return
    many = rows if rows > 1 and width < cols * size else 0
    r = e.read(x.name, rows * width, op.attr["start"] * size, rows=many, stride=cols * size if many else 0)
    e.result(out)
    e.done(out, e.write(out.name, r[1], r[0], out.type.nbytes, drain=False))
