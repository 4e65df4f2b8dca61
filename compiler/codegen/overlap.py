"""Lowering of a row-parallel matmul and its all-reduce in column pieces (the rule: partition.overlap).

Piece p's product is written piece-major into the partial sums (its [rows, width] block contiguous),
so its all-reduce is the ordinary one over those bytes; the MXM goes on with piece p + 1 while the
links carry piece p. One row: a piece is a contiguous run of the result, reduced in place. Several
rows: each piece is reduced in place (the all-reduce reads its whole piece into streams before it writes
any of it back) and moved into its columns of the result by one strided READ and WRITE (data movement,
no drain); no buffer beyond the partial sums and the result, which the plan's activation peak counts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from compiler.codegen.collectives import Collectives
from compiler.codegen.emit import FMT, Emitter, Slot
from compiler.codegen.template import Ref
from compiler.partition.chaining import piece_lead, piece_on_one_stream, scaled_after_mxm
from compiler.partition.overlap import best_pieces, max_pieces
from ir.graph import Op, Value
from ir.isa import Op as Isa


def lower_overlapped(e: Emitter, coll: Collectives, mm: Op, ar: Op) -> bool:
    """Lower the pair in pieces; False (nothing emitted) when the rule gives one piece."""
    x, w = mm.operands[:2]
    part, out = mm.results[0], ar.results[0]
    rows, cols = part.type.shape
    product, collective = _cycles(e, coll, mm)
    scaled = scaled_after_mxm(mm)
    lead = piece_lead(rows, cols, e.t.timing.panel, e.tp, scaled, e.t.timing.drain_cycles)
    pieces = best_pieces(rows, cols, e.t.timing.panel, e.tp, product, part.type.nbytes, collective,
                         max_pieces([lv.group for lv in coll.levels], coll.reduced(part.type.nbytes, rows == 1), rows),
                         lead)
    if len(pieces) == 1:
        return False
    e.slots[part.name] = Slot(e.t.local(part.type.nbytes), part.type.nbytes)
    e.result(out)
    staged = rows > 1
    last_mxm, finals = None, []
    for j, (c0, c1) in enumerate(pieces):
        width = c1 - c0
        piece = Value(f"{part.name}.p{j}", part.type.with_shape(rows, width))
        _alias(e, piece.name, part.name, rows * c0 * 2, piece.type.nbytes)
        last_mxm = e.matmul(x, w, mm.operands[2:], piece, bool(mm.attr.get("transpose_b")), columns=(c0, c1),
                            after=last_mxm, xs=e.fresh.get(x.name))
        reduced = f"{out.name}.p{j}"
        _alias(e, reduced, part.name if staged else out.name, rows * c0 * 2, piece.type.nbytes)
        on_stream = piece_on_one_stream(rows, width, e.t.timing.panel, e.tp, scaled)
        done = coll.allreduce(piece.name, reduced, piece.type.nbytes, rows * width, rows == 1,
                              src=_scale_stream(e) if on_stream else None)
        if staged:  # into columns [c0, c1) of every row
            r = e.read(reduced)
            done = e.write(out.name, r[1], r[0], piece.type.nbytes, offset=c0 * 2, rows=rows, stride=cols * 2,
                           drain=False)
        finals.append(done)
    # Readers wait for the last piece's write; it waits in turn for every piece's.
    last = e.t.instrs[finals[-1]]
    last.deps = last.deps + tuple((f, 0) for f in finals[:-1])
    e.done(out, finals[-1])
    return True


def _scale_stream(e: Emitter) -> tuple[int, int]:
    """The piece just made, whole on its scale VOP's stream (partition.chaining.piece_on_one_stream, as the
    plan counts it): the all-reduce's first sends take it from there, so the drain and the re-read before
    them leave the path."""
    producer, stream = e.last_panel
    if e.t.instrs[producer].op is not Isa.VOP:
        raise RuntimeError("a piece on one stream not scaled on the vector unit")
    return producer, stream


def _cycles(e: Emitter, coll: Collectives, mm: Op) -> tuple[int, Callable[[float], float]]:
    """The product's MXM cycles, and an all-reduce's cycles by its bytes, by the rules the plan times them
    with (partition.cost, partition.mesh.allreduce_steps)."""
    x, w, part = mm.operands[0], mm.operands[1], mm.results[0]
    (m, k), n, t = x.type.shape, part.type.shape[1], e.t.timing
    return t.mxm(m, k, n, FMT[w.type.dtype]), functools.partial(coll.allreduce_cycles, one_row=m == 1)


def _alias(e: Emitter, name: str, of: str, offset: int, nbytes: int) -> None:
    """`name` as the `nbytes` of value `of` from byte `offset` (its producer's write is tracked apart)."""
    slot = e.slots[of]
    e.slots[name] = Slot(Ref(slot.ref.space, slot.ref.slot, slot.ref.offset + offset, slot.ref.parts), nbytes)
