"""A row-parallel matmul overlapped with its all-reduce, by column pieces: the one rule the plan's
estimate (partition.cost) and the lowering (codegen.overlap) share.

A row-parallel matmul (attention's o_proj, the MLP's down_proj) leaves partial sums that an
all-reduce completes. An output column is final on this chip once its column of weight panels is
through the MXM, so the lowering cuts the output into pieces of whole panels: piece p's all-reduce
runs on the links while the MXM does piece p + 1, and only the last piece's collective waits for
the whole product (the next op, a residual add and a norm, needs whole rows).

Pieces: whole weight panels of the output (the matmul's own panel loop; Timing.panel columns), the
narrow one left over first or last, whichever makes the pair shorter (best_pieces).
More pieces shrink the exposed last one, and a piece costs the links nothing extra but its message
latency, which the pieces after it hide; but each piece's all-reduce is its own messages, 2 x sum of
(level size - 1) a chip, in every layer and prefill chunk. So the rule takes as many pieces as the
panels give up to a budget of PIECE_MESSAGES messages a chip per pair (twice for one row: max_pieces), panels shared
evenly among them (pair_s times any widths exactly), provided each piece's elements divide evenly
over the group (its collective's slices then stay inside the piece). Otherwise the product is one
piece (no overlap), as before.
Every panel its own piece gave llama-3.1-405b int8 (tp 64, 16384 columns: 13 pieces of 28 messages)
1,378 M prefill instructions instead of 261 M, a 79 s timing run and a 5 GB compile; 2 pieces still
356 M and 20 s. llama-3.1-70b int8 (tp 8) at 3 pieces plans 5.94 ms TTFT (7 pieces: 5.62, whole: 6.51).
"""

from __future__ import annotations

import functools
import itertools
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


PIECE_MESSAGES = 48  # a chip's messages for one pair's pieces: tp 8 (14 a piece) takes 3 pieces, tp 64 (28) one,
# or two where its nodes exchange in one shot (21: a decode step's rows)
# A pair of one row (a decode step at batch 1) is lowered once a token, not once a prefill chunk, and its
# all-reduce is latency more than bytes: twice the budget. llama-3.1-405b int8 on lpu (tp 64, 21 messages a
# piece): 2 -> 4 pieces, decode scheduled 1,730.2 -> 1,698.5 us; 9 pieces (4 x the budget) schedule 1,746.3 us,
# which pair_s's pipelined pieces do not foresee (estimate 1,659).
ONE_ROW_PIECE_MESSAGES = 2 * PIECE_MESSAGES


def max_pieces(level_sizes: Sequence[int], reduced: int | None = None, rows: int = 0) -> int:
    """Pieces a pair of `rows` rows may take: PIECE_MESSAGES (ONE_ROW_PIECE_MESSAGES for one row) over one
    all-reduce's messages a chip (size - 1 a level for its reduce-scatter and as many for its all-gather on
    the `reduced` innermost levels, all of them by default; size - 1 for each level after them, exchanged in
    one shot: partition.mesh.allreduce_steps), at least one. The whole tensor's form sets it: a piece is
    smaller, so it takes at least as many shots."""
    k = len(level_sizes) if reduced is None else reduced
    messages = sum((2 if i < k else 1) * (size - 1) for i, size in enumerate(level_sizes))
    budget = ONE_ROW_PIECE_MESSAGES if rows == 1 else PIECE_MESSAGES
    return max(1, budget // messages) if messages else 1


def column_pieces(rows: int, columns: int, panel: int, group: int, narrow_first: bool = False,
                  most: int = 1 << 30) -> tuple[tuple[int, int], ...]:
    """The output's column ranges [start, stop), at most `most` of them, each of the same whole number
    of `panel`s but one, when each piece's rows x columns elements divide over the `group` chips; else
    the whole range. The narrower piece (what is left over) is the last, or the first with
    `narrow_first`."""
    panels = -(-columns // panel)
    width = -(-panels // max(1, min(most, panels))) * panel
    rem = columns % width if narrow_first else 0
    pieces = (((0, rem),) if rem else ()) + tuple((c, min(c + width, columns)) for c in range(rem, columns, width))
    if group <= 1 or any(rows * (b - a) % group for a, b in pieces):
        return ((0, columns),)
    return pieces


def best_pieces(rows: int, columns: int, panel: int, group: int, matmul: float, nbytes: int,
                collective: Callable[[float], float], most: int = 1 << 30,
                lead: Callable[[int, int], float] = lambda a, b: 0.0) -> tuple[tuple[int, int], ...]:
    """The pieces for which the pair (pair_s with `lead`, in the caller's time unit) is shortest. One row (a
    decode step): of every cut of the output's panels (the narrow one left over last or first) into at most
    `most` runs whose elements divide over the `group` chips, the shortest, then the fewest pieces, then the
    widest first. The pieces need not be equal: narrow last ones shorten the exposed tail, as each piece's first
    sends wait for its drain and a one-panel piece's take it off its scale (partition.chaining.piece_lead); wide
    first ones hide under the product still to come. 70B int8 on lpu: o_proj's decode row (2, 2, 2, 0.4
    panels) -> (4, 1, 1, 0.4), decode scheduled 1,211.6 -> 1,204.6 us. Several rows (prefill, verify), or an
    all-reduce longer than its product: equal pieces (_best_equal_pieces). There the links bind, and the
    schedule does not bear out the uneven cuts the pipelined model (pair_s) prefers: 70B int8 prefill scheduled
    11.15 -> 11.38 ms TTFT, 405B int8 decode (tp 48-80, across nodes) 1,647.6 -> 1,677.8 us. Prefill chunks
    are link-bound, and the narrow piece first gives 2% lower TTFT than last (8B: 4%)."""
    if rows > 1 or collective(nbytes) >= matmul:
        return _best_equal_pieces(rows, columns, panel, group, matmul, nbytes, collective, most, lead)
    full, rem = divmod(columns, panel)
    orders = [[panel] * full + [rem], [rem] + [panel] * full] if rem else [[panel] * full]
    timed = functools.cache(collective)  # the cuts share their pieces' suffixes

    whole = pair_s(matmul, nbytes, ((0, columns),), timed, lead)

    def pair(pieces: tuple[tuple[int, int], ...]) -> float:  # relative: seconds (plan), cycles (lowering) tie alike
        return round(pair_s(matmul, nbytes, pieces, timed, lead) / whole, 9) if whole > 0 else 0.0

    best = ((0, columns),)
    key = (1.0 if whole > 0 else 0.0, 1, ())
    for widths in orders:
        starts = [sum(widths[:i]) for i in range(len(widths) + 1)]
        for count in range(2, min(most, len(widths)) + 1):
            for cuts in itertools.combinations(range(1, len(widths)), count - 1):
                edges = (0, *cuts, len(widths))
                pieces = tuple((starts[i], starts[j]) for i, j in itertools.pairwise(edges))
                if any(rows * (b - a) % group for a, b in pieces):
                    continue
                candidate = (pair(pieces), count, tuple(a - b for a, b in pieces))
                if candidate < key:
                    best, key = pieces, candidate
    return best


def _best_equal_pieces(rows: int, columns: int, panel: int, group: int, matmul: float, nbytes: int,
                       collective: Callable[[float], float], most: int, lead: Callable[[int, int], float]
                       ) -> tuple[tuple[int, int], ...]:
    """column_pieces with the narrow piece where the pair is shorter: last when the product is the longer stream
    (only the last piece's collective trails it), first when the collective is (the links start after the first
    piece's product)."""
    last, first = (column_pieces(rows, columns, panel, group, f, most) for f in (False, True))
    shorter = pair_s(matmul, nbytes, first, collective, lead) < pair_s(matmul, nbytes, last, collective, lead)
    return first if shorter else last


def pair_s(matmul_s: float, nbytes: int, pieces: Sequence[tuple[int, int]],
           collective: Callable[[float], float], lead: Callable[[int, int], float] = lambda a, b: 0.0) -> float:
    """Seconds for the matmul and its all-reduce of `nbytes` in pieces: the MXM makes the pieces in
    order, the links carry each once it is made, back to back (one collective's latency), so the pair
    ends when the latest of, over pieces p, piece p's product and then the collective of the pieces
    from p on. p first: the first piece's product, then the whole collective; p last: the whole
    product, then the last piece's collective. `lead(a, b)`: what piece [a, b) waits between its product
    and its first sends (partition.cost: its drain, unless they take it off its scale's stream)."""
    columns = pieces[-1][1]
    if len(pieces) == 1:
        return matmul_s + lead(*pieces[0]) + collective(nbytes)
    return max(matmul_s * b / columns + lead(a, b) + collective(nbytes * (columns - a) / columns) for a, b in pieces)
