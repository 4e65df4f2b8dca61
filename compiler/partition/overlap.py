"""A row-parallel matmul overlapped with its all-reduce, by column pieces: the one rule the plan's
estimate (partition.cost) and the lowering (codegen.overlap) share.

A row-parallel matmul (attention's o_proj, the MLP's down_proj) leaves partial sums that an
all-reduce completes. An output column is final on this chip once its column of weight panels is
through the MXM, so the lowering cuts the output into pieces of whole panels: piece p's all-reduce
runs on the links while the MXM does piece p + 1, and only the last piece's collective waits for
the whole product (the next op, a residual add and a norm, needs whole rows).

Pieces: one per weight panel of the output (the matmul's own panel loop; Timing.panel columns), the
narrow one left over first or last, whichever makes the pair shorter (best_pieces).
More pieces shrink the exposed last one, and a piece costs the links nothing extra but its message
latency, which the pieces after it hide; so the rule takes every panel, provided each piece's
elements divide evenly over the group (its collective's slices then stay inside the piece).
Otherwise the product is one piece (no overlap), as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ir.graph import Op
from ir.ops import Opcode


def overlapped(chip_ops: Sequence[Op]) -> dict[int, int]:
    """Index of each row-parallel matmul whose all-reduce can overlap it -> the all-reduce's index:
    the all-reduce follows the matmul directly and is the only reader of its 2-D partial sums."""
    readers: dict[str, int] = {}
    for op in chip_ops:
        for v in op.operands:
            readers[v.name] = readers.get(v.name, 0) + 1
    pairs = {}
    for i, (mm, ar) in enumerate(zip(chip_ops, chip_ops[1:], strict=False)):
        if (mm.opcode is Opcode.MATMUL and ar.opcode is Opcode.ALLREDUCE and len(mm.results[0].type.shape) == 2
                and ar.operands[0].name == mm.results[0].name and readers[mm.results[0].name] == 1):
            pairs[i] = i + 1
    return pairs


def column_pieces(rows: int, columns: int, panel: int, group: int,
                  narrow_first: bool = False) -> tuple[tuple[int, int], ...]:
    """The output's column ranges [start, stop), one per `panel` columns, when each piece's
    rows x columns elements divide over the `group` chips; else the whole range. The narrower piece
    (what is left over from whole panels) is the last, or the first with `narrow_first`."""
    rem = columns % panel if narrow_first else 0
    pieces = (((0, rem),) if rem else ()) + tuple((c, min(c + panel, columns)) for c in range(rem, columns, panel))
    if group <= 1 or any(rows * (b - a) % group for a, b in pieces):
        return ((0, columns),)
    return pieces


def best_pieces(rows: int, columns: int, panel: int, group: int, matmul: float, nbytes: int,
                collective: Callable[[float], float]) -> tuple[tuple[int, int], ...]:
    """column_pieces with the narrow piece where the pair (pair_s, in the caller's time unit) is shorter:
    last when the product is the longer stream (only the last piece's collective trails it), first when
    the collective is (the links start after the first piece's product). 70B int8 on lpu: prefill chunks
    are link-bound, and the narrow piece first gives 2% lower TTFT than last (8B: 4%)."""
    last, first = (column_pieces(rows, columns, panel, group, f) for f in (False, True))
    return first if pair_s(matmul, nbytes, first, collective) < pair_s(matmul, nbytes, last, collective) else last


def pair_s(matmul_s: float, nbytes: int, pieces: Sequence[tuple[int, int]],
           collective: Callable[[float], float]) -> float:
    """Seconds for the matmul and its all-reduce of `nbytes` in pieces: the longer of the two
    streams, the MXM's (the whole product, then the last piece's collective) and the links' (the
    first piece's product, then every piece's collective back to back, one collective's latency)."""
    columns = pieces[-1][1]
    if len(pieces) == 1:
        return matmul_s + collective(nbytes)
    first, last = ((b - a) / columns for a, b in (pieces[0], pieces[-1]))
    return max(matmul_s + collective(nbytes * last), matmul_s * first + collective(nbytes))
