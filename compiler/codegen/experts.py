"""Lowering of mixture-of-experts routing and static expert passes (timing never depends on routing)."""

from __future__ import annotations

import math

from compiler.codegen.emit import Emitter, Index, Slot
from compiler.codegen.template import Ref, Rel
from ir.graph import Op as GraphOp
from ir.graph import Value
from ir.isa import Fn
from ir.ops import expert_passes


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
    it does and weighs it zero); for several rows, pass j is local expert j."""
    x, weights, ids, gate, up, down = op.operands[:6]
    per = (len(op.operands) - 6) // 3  # each weight's scale operands: its block or channel scales, its tensor scale
    scales = [op.operands[6 + k::3][:per] for k in range(3)]
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
