"""Lowering of mixture-of-experts routing: static expert passes for one row (decode) and a grouped
matmul over the routed rows for several (prefill); timing never depends on routing."""

from __future__ import annotations

import math

from compiler.codegen.emit import FMT, Emitter, Group, Index, Slot
from compiler.codegen.template import Instr, Ref, Rel
from ir.graph import Op as GraphOp
from ir.graph import Value
from ir.isa import Fn, Op
from ir.ops import by_address, expert_passes, routed_slots
from ir.program import Flag
from ir.types import DType, TensorType


def lower_topk(e: Emitter, op: GraphOp) -> None:
    """Router scores to the k best experts: their weights and their ids, one VOP each (the
    bias, when the router has one, rides on s_b)."""
    logits = e.read(op.operands[0].name)
    bias = e.read(op.operands[1].name) if len(op.operands) == 2 else None
    rows, experts = op.operands[0].type.shape
    for fn, result in ((Fn.TOPK, op.results[0]), (Fn.ARGTOPK, op.results[1])):
        i, s = e.vop(fn, rows, experts, logits, bias, bytes_in=op.operands[0].type.nbytes, args=op.attr)
        e.result(result)
        e.done(result, e.write(result.name, s, i, result.type.nbytes))


def lower_experts(e: Emitter, op: GraphOp) -> None:
    """Static expert passes (ir.ops.expert_passes): each streams one expert's gate, up and down
    through the MXM, weighs the result by each row's routing weight for that expert (zero if
    not routed there) and adds it to the output. For one row, pass j runs the row's j-th routed
    expert, its weights found by address at run time (a chip that does not hold it streams one
    it does and weighs it zero). Several rows take the grouped lowering (lower_grouped)."""
    rows = op.operands[0].type.shape[0]
    if rows > 1:
        (lower_by_address if by_address(rows, op.attr["top_k"], op.operands[3].type.shape[0]) else lower_grouped)(e, op)
        return
    x, weights, ids, gate, up, down, scales = _operands(op)
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
            e.matmul(x, part[0], part[1:], res, False, ix)
        act = Value(f"{out.name}.e{j}.act", g.type)
        e.elementwise(Fn.SILU if op.attr.get("act", "silu") == "silu" else Fn.GELU, act, g)
        hidden_in = Value(f"{out.name}.e{j}.h", g.type)
        e.elementwise(Fn.MUL, hidden_in, act, u)
        y = Value(f"{out.name}.e{j}.y", out.type)
        e.matmul(hidden_in, parts[2][0], parts[2][1:], y, False, index[2])
        which = {"slot": j} if indirect else {"expert": j}
        i, s = e.vop(Fn.ROUTE, rows, hidden, e.read(y.name), weights_read, out.type.nbytes, c=ids_read,
                     args=which | {"local": here}, base=first)
        if acc is not None:
            i, s = e.vop(Fn.SUM, rows, hidden, (i, s), e.read(out.name, after=((acc, 0),)), out.type.nbytes)
        acc = e.write(out.name, s, i, out.type.nbytes)
    e.done(out, acc)


def lower_by_address(e: Emitter, op: GraphOp) -> None:
    """Several rows routed to fewer (row, expert) pairs than the chip's experts (ir.ops.by_address): row
    r's pass j streams the row's j-th routed expert (by address, as decode's passes) over that row alone
    and adds its weighted output into row r. Rows run one after another, so the result's last write
    follows every other, and at most IN_FLIGHT passes at once (each keeps a few streams live)."""
    x, weights, ids, gate, up, down, scales = _operands(op)
    out = op.results[0]
    rows, hidden = x.type.shape
    here, _, inter = gate.type.shape
    k = op.attr["top_k"]
    first = _first_expert(op.attr["experts"], here, e.tp)
    step = {n: math.prod(w.type.shape[1:]) * w.type.dtype.bits // 8 for n, w in enumerate((gate, up, down))}
    row_bytes, id_bytes, weight_bytes = (v.type.nbytes // rows for v in (out, ids, weights))
    e.result(out)
    acc, ends = None, []
    for r in range(rows):
        xr = _alias(e, x, x.type.with_shape(1, hidden), r * x.type.nbytes // rows, f"{out.name}.r{r}")
        for j in range(k):
            # every read of the pass waits for the pass IN_FLIGHT before it: its weights' reads follow its ids
            window = ((ends[-IN_FLIGHT], 0),) if len(ends) >= IN_FLIGHT else ()
            ids_r = e.read(ids.name, id_bytes, r * id_bytes, after=window)
            weights_r = e.read(weights.name, weight_bytes, r * weight_bytes, after=window)
            name = f"{out.name}.r{r}.e{j}"
            parts = [_expert_slice(e, w, sc, 0, f"{name}.{n}")
                     for n, (w, sc) in enumerate(zip((gate, up, down), scales, strict=True))]
            index = [Index(*ids_r, j, step[n], first, here) for n in range(3)]
            g, u = (Value(f"{name}.{n}", out.type.with_shape(1, inter)) for n in ("g", "u"))
            xs = e.read(xr.name, after=window)
            for part, res, ix in zip(parts[:2], (g, u), index[:2], strict=True):
                e.matmul(xr, part[0], part[1:], res, False, ix, xs=xs)
            act = Value(f"{name}.act", g.type)
            e.elementwise(Fn.SILU if op.attr.get("act", "silu") == "silu" else Fn.GELU, act, g)
            h = Value(f"{name}.h", g.type)
            e.elementwise(Fn.MUL, h, act, u)
            y = Value(f"{name}.y", out.type.with_shape(1, hidden))
            e.matmul(h, parts[2][0], parts[2][1:], y, False, index[2])
            chain = ((acc, 0),) if acc is not None and j == 0 else ()  # after the previous row's last write
            i, s = e.vop(Fn.ROUTE, 1, hidden, e.read(y.name, after=chain), weights_r, row_bytes, c=ids_r,
                         args={"slot": j, "local": here}, base=first)
            if j > 0:
                i, s = e.vop(Fn.SUM, 1, hidden, (i, s), e.read(out.name, row_bytes, r * row_bytes, after=((acc, 0),)),
                             row_bytes)
            acc = e.write(out.name, s, i, row_bytes, offset=r * row_bytes)
            ends.append(acc)
    e.done(out, acc)


IN_FLIGHT = 4  # passes by address a chip overlaps: DeepSeek-V3's 128 (16 rows, 256 sliced experts) kept 677 streams


def _operands(op: GraphOp) -> tuple:
    """An experts op's x, routing weights, ids, gate, up, down, and each weight's scale operands (its
    block or channel scales, its tensor scale)."""
    per = (len(op.operands) - 6) // 3
    return (*op.operands[:6], [op.operands[6 + k::3][:per] for k in range(3)])


def _alias(e: Emitter, v: Value, type_: TensorType, offset: int, name: str) -> Value:
    """Bytes [offset, offset + its size) of `v`'s buffer as a value of its own (one row of it)."""
    slot = e.slots[v.name]
    e.slots[name] = Slot(Ref(slot.ref.space, slot.ref.slot, slot.ref.offset + offset, slot.ref.parts),
                         type_.nbytes, slot.ready)
    return Value(name, type_)


def lower_grouped(e: Emitter, op: GraphOp) -> None:
    """Prefill by routed rows (a grouped matmul, as jax.lax.ragged_dot and MegaBlocks' grouped GEMM):
    vop.group sorts the (row, expert) pairs routed to this chip's experts into a fixed buffer of
    routed_slots slots, a GATHER permutes x's rows into it, gate, up and down are grouped MXMs
    (each panel streams every local expert's piece once; each slot passes its own expert's) and
    vop.ungroup weighs every slot back into its row. Every size is the buffer's, so timing never
    depends on routing; a feature-sliced chip's buffer is exactly rows x k. The permuted rows stream
    straight into gate's and up's MXMs (gathered for each), and the activation and the product are
    written over gate's and up's results: k x rows slots hold no more SRAM than they must
    (ir.ops._experts_scratch)."""
    x, weights, ids, gate, up, down, scales = _operands(op)
    out = op.results[0]
    rows, hidden = x.type.shape
    here, _, inter = gate.type.shape
    k = op.attr["top_k"]
    slots = routed_slots(rows, k, here)
    first = _first_expert(op.attr["experts"], here, e.tp)
    table = Value(f"{out.name}.table", TensorType(DType.I32, (3 * slots,)))
    i, s = e.vop(Fn.GROUP, slots, 3, e.read(ids.name), e.read(weights.name), ids.type.nbytes + weights.type.nbytes,
                 args={"local": here, "rows": rows, "k": k}, base=first)
    e.result(table)
    e.done(table, e.write(table.name, s, i, table.type.nbytes))
    group = Group(table.name, here)
    xg = Value(f"{out.name}.x", x.type.with_shape(slots, hidden))
    g, u = (Value(f"{out.name}.{n}", x.type.with_shape(slots, inter)) for n in ("g", "u"))
    for w, sc, res in ((gate, scales[0], g), (up, scales[1], u)):
        e.matmul(xg, w, sc, res, False, group=group, xs=_permuted(e, x, table, slots))
    act = _in_place(e, Fn.SILU if op.attr.get("act", "silu") == "silu" else Fn.GELU, g, f"{out.name}.act", g)
    h = _in_place(e, Fn.MUL, u, f"{out.name}.h", act, u)
    y = Value(f"{out.name}.y", x.type.with_shape(slots, hidden))
    e.matmul(h, down, scales[2], y, False, group=group)
    i, s = e.vop(Fn.UNGROUP, slots, hidden, e.read(y.name), e.read(table.name), y.type.nbytes + table.type.nbytes,
                 args={"rows": rows})
    e.result(out)
    e.done(out, e.write(out.name, s, i, out.type.nbytes))


def _permuted(e: Emitter, x: Value, table: Value, slots: int) -> tuple[int, int]:
    """x's rows in the table's slots, on a stream (a GATHER by each slot's row; an empty slot gets zeros)."""
    rows, hidden = x.type.shape
    ids = e.read(table.name, slots * 4)
    src = e.slots[x.name]
    stream = e.t.stream()
    nbytes = slots * hidden * x.type.dtype.bits // 8
    deps = ((ids[0], 0),) + (((src.ready, 0),) if src.ready is not None else ())
    g = e.t.add(Instr(Op.GATHER, e.t.timing.mem(nbytes), flags=int(Flag.INDIRECT), fmt=FMT[x.type.dtype], src=src.ref,
                      src_bytes=nbytes, m=slots, n=hidden, k=rows, base=0, s_b=ids[1], s_out=stream, deps=deps))
    return g, stream


def _in_place(e: Emitter, fn: Fn, over: Value, name: str, *ins: Value) -> Value:
    """fn of `ins` written over `over`'s buffer (read by this function last)."""
    out = Value(name, over.type)
    reads = [e.read(v.name) for v in ins]
    rows, cols = over.type.shape
    i, s = e.vop(fn, rows, cols, reads[0], reads[1] if len(reads) > 1 else None, sum(v.type.nbytes for v in ins))
    e.slots[out.name] = Slot(e.slots[over.name].ref, over.type.nbytes)
    e.done(out, e.write(out.name, s, i, out.type.nbytes))
    return out


def _first_expert(experts: int, here: int, tp: int) -> Rel:
    """The first expert id a chip holds: ranks run over the a = experts / here groups of experts,
    each group's experts sliced by their features over tp / a consecutive ranks
    (passes.shard.expert_split; feature-sliced: every chip starts at expert 0)."""
    return Rel(per_rank=here, div=tp * here // experts)


def _expert_slice(e: Emitter, w: Value, scales: tuple[Value, ...], expert: int, name: str) -> tuple[Value, ...]:
    """Expert `expert`'s [in, out] matrix and its scales (a channel row [out], block scales
    [in / block, out], a tensor scale []) as values over the stacked params."""
    out = []
    for j, v in enumerate((w, *scales)):
        piece = Value(f"{name}.{j}", v.type.with_shape(*v.type.shape[1:]))
        slot = e.slots[v.name]
        e.slots[piece.name] = Slot(Ref(slot.ref.space, slot.ref.slot, slot.ref.offset + expert * piece.type.nbytes),
                                   piece.type.nbytes, slot.ready)
        out.append(piece)
    return tuple(out)
