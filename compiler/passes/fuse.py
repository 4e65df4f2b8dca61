"""FuseSiblings: a chip's column-parallel matmuls that read the same input (q|k|v, gate|up) as one.

Each matmul installs its weight in whole dim x dim tiles of the matrix unit, so a chip's narrow slices
(8B on 32 chips: k and v 32 columns each beside q's 128, each a 320-wide tile on its own) install and
pass mostly padding. One matmul over the weights' columns side by side installs ceil(sum / dim) tiles
instead of the sum of each one's, then SLICE ops hand each sibling its columns (data movement only).

The pass runs on the per-chip ops (passes.shard's output), for both the plan's cost (partition.shard_cost)
and the lowering (codegen.phase), so the two agree; the graph IR keeps the model's own matmuls. The fused
weight (and each of its scale operands) is a param named by its parts joined with `+` (`parts`): the SRAM
image concatenates the parts' per-chip shards along their columns (compiler.image). Every column's
products accumulate over the same input panels as before, so results are bit for bit the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from ir.graph import Op, Value
from ir.ops import Opcode
from ir.types import DType

SEP = "+"


def parts(name: str) -> list[str]:
    """The params a fused param concatenates along its columns ([name] for any other)."""
    return name.split(SEP)


def fuse_siblings(chip_ops: Sequence[Op], tile: int) -> list[Op]:
    """`chip_ops` with every group of sibling matmuls (_groups) that saves whole `tile`-wide tiles (the
    target's matrix_dim; 0: no matrix unit, nothing fused) as one matmul and a SLICE per sibling, at the
    first sibling's place."""
    groups = _groups(chip_ops, tile)
    first = {members[0]: members for members in groups}
    dropped = {i for members in groups for i in members[1:]}
    out: list[Op] = []
    for i, op in enumerate(chip_ops):
        if i in first:
            out.extend(_fused([chip_ops[j] for j in first[i]]))
        elif i not in dropped:
            out.append(op)
    return out


def _groups(chip_ops: Sequence[Op], tile: int) -> list[list[int]]:
    """Indices of the fusable matmuls (_key) that share their input, two or more a group, where that saves
    tiles."""
    defined = {r.name for op in chip_ops for r in op.results}
    by_key: dict[tuple, list[int]] = {}
    for i, op in enumerate(chip_ops):
        key = _key(op, defined)
        if key is not None:
            by_key.setdefault(key, []).append(i)
    return [members for members in by_key.values() if len(members) > 1 and _saves_tiles(chip_ops, members, tile)]


def _saves_tiles(chip_ops: Sequence[Op], members: list[int], tile: int) -> bool:
    """Whether the siblings side by side take fewer `tile`-wide columns of whole tiles than apart. Where
    they do not (Mamba's in_proj x and z, 640 columns each on 8 chips) fusing only costs: the fused result
    is there when all its columns are, so the sibling read first (x, into conv1d and the scan) would wait
    for the one read last (z, for the gate at the end) instead of running beside it."""
    if tile <= 0:
        return False
    widths = [chip_ops[i].results[0].type.shape[-1] for i in members]
    return -(-sum(widths) // tile) < sum(-(-w // tile) for w in widths)


def _key(op: Op, defined: set[str]) -> tuple | None:
    """What siblings must share to be one matmul, or None for a matmul that cannot join one: a
    column-parallel [K, N] weight (and its scales: per channel or per block, not a tensor scale, which
    scales the whole product) held by the chip, whose columns fill whole bytes."""
    a = op.attr
    if op.opcode is not Opcode.MATMUL or a.get("split") != "col" or a.get("transpose_b"):
        return None
    w, scales = op.operands[1], op.operands[2:]
    if any(v.name in defined for v in op.operands[1:]) or any(s.type.dtype is DType.F32 for s in scales):
        return None
    if w.type.shape[1] * w.type.dtype.bits % 8:
        return None
    return (op.operands[0].name, op.scope, w.type.dtype, w.type.shape[0],
            tuple((s.type.dtype, s.type.shape[:-1]) for s in scales))


def _fused(siblings: list[Op]) -> list[Op]:
    """One matmul over the siblings' weights side by side, then each sibling's result sliced off it. Over
    several rows (prefill) the slices would be copies beside the fused result, twice the activations (a
    chunk on a full chip must shrink: tiny-llama on lpu-mini 64 -> 48 tokens, TTFT 0.096 -> 0.102 ms): there
    each sibling stays a matmul of its own over its columns [start, stop) of the shared block, which the
    prefill Program must read where decode's does (one SRAM layout)."""
    head = siblings[0]
    operands = (head.operands[0], *(_side_by_side([op.operands[i] for op in siblings])
                                    for i in range(1, len(head.operands))))
    widths = [op.results[0].type.shape[-1] for op in siblings]
    starts = [sum(widths[:i]) for i in range(len(widths))]
    if head.operands[0].type.shape[0] > 1:
        return [Op(Opcode.MATMUL, operands, op.results, (("split", "col"), ("start", a), ("stop", a + w)), op.scope)
                for op, a, w in zip(siblings, starts, widths, strict=True)]
    x = head.results[0].type
    out = Value(SEP.join(op.results[0].name for op in siblings), x.with_shape(*x.shape[:-1], sum(widths)))
    return [Op(Opcode.MATMUL, operands, (out,), (("split", "col"),), head.scope),
            *(Op(Opcode.SLICE, (out,), op.results, (("start", a), ("stop", a + w)), head.scope)
              for op, a, w in zip(siblings, starts, widths, strict=True))]


def columns(op: Op) -> tuple[int, int] | None:
    """The columns [start, stop) of its (fused) weight a matmul computes, or None: all of them."""
    a = op.attr
    return (a["start"], a["stop"]) if op.opcode is Opcode.MATMUL and "stop" in a else None


def _side_by_side(values: list[Value]) -> Value:
    """A param holding `values` along their last axis."""
    t = values[0].type
    width = sum(v.type.shape[-1] for v in values)
    return Value(SEP.join(v.name for v in values), t.with_shape(*t.shape[:-1], width))
