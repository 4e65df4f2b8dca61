"""ShardTensorParallel: one chip's share of a unit on a tensor-parallel group of t chips.

Contract. Requires: a verified graph whose matmuls carry `split` ("col"/"row",
Megatron style) and, where the output is attention heads, `heads`. Produces the
ops every chip of the group runs (SPMD: the chip's rank picks its slices):
params, caches and activations take their per-chip shapes; an `allreduce` is
inserted where a partial sum is consumed or leaves the unit, an `allgather`
where an op needs a whole value it holds only a shard of. When t exceeds a
layer's kv heads, each chip keeps a whole kv head (replicated t/kv_heads times,
as Megatron and vLLM do). The result is the input of both the partitioner's
cost model and the lowering, so the two cannot disagree on what a chip holds.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from ir.errors import VerifyError
from ir.graph import Graph, Op, Value, sorted_attrs
from ir.ops import OPDEFS, Opcode
from ir.types import DType, TensorType


class Layout(enum.Enum):
    REPL = "repl"  # every chip holds all of it
    SHARD = "shard"  # split t ways along the last axis
    PARTIAL = "partial"  # every chip holds a partial sum


@dataclass(frozen=True, slots=True)
class ShardTensorParallel:
    """Rewrite one unit's ops (`ops`) for a group of `tp` chips; see the module docstring."""

    tp: int

    def __call__(self, ops: Sequence[Op]) -> list[Op]:
        return shard_unit(ops, self.tp)[0]


def shard_unit(ops: Sequence[Op], tp: int, outer: dict[str, Value] | None = None
               ) -> tuple[list[Op], dict[str, Value]]:
    """The per-chip ops, and the per-chip value that stands for each original name.
    `outer` gives the per-chip values of names defined by earlier units."""
    sharder = _Sharder(tp, ops, outer or {})
    return sharder.run(), sharder.value


def allowed_tp(ops: Sequence[Op], limit: int) -> list[int]:
    """Group sizes t <= limit that split the unit's work evenly: query heads, split
    features, and kv heads (either split or each kept whole by t/kv_heads chips).
    Any integer qualifies, not only powers of two."""
    return [t for t in range(1, limit + 1) if all(_divides(op, t) and _packs(op, t) for op in ops)]


def _packs(op: Op, t: int) -> bool:
    """Packed int4 weights hold two per byte along each row: a chip's rows must stay even."""
    if op.opcode is Opcode.MATMUL and "split" in op.attr and op.operands[1].type.dtype is DType.I4:
        return _matmul_operand_type(op.operands[1].type, 1, op.attr, t).shape[-1] % 2 == 0
    if op.opcode is Opcode.EXPERTS and _divides(op, t):
        return all(_expert_operand_type(v.type, i, t).shape[-1] % 2 == 0
                   for i, v in enumerate(op.operands) if i in (3, 4, 5) and v.type.dtype is DType.I4)
    return True


def _divides(op: Op, t: int) -> bool:
    a = op.attr
    if op.opcode is Opcode.ATTENTION:
        kv = a["kv_heads"]
        return a["heads"] % t == 0 and (kv % t == 0 or t % kv == 0)
    if op.opcode is Opcode.EXPERTS:
        experts, inter = op.operands[3].type.shape[0], op.operands[3].type.shape[2]
        return experts % t == 0 or (t % experts == 0 and inter % (t // experts) == 0
                                    and _whole_blocks(op.operands[5].type, inter // (t // experts)))
    if op.opcode is Opcode.EMBED:  # vocabulary rows by ceil(V / t): every chip's shard must hold some row
        rows = op.operands[1].type.shape[0]
        return t <= rows and -(-rows // t) * (t - 1) < rows
    if op.opcode is Opcode.MLA_ATTENTION:  # whole heads per chip; no replication past the head count
        return a["heads"] % t == 0
    if op.opcode in _CHANNEL_OPERANDS:  # Mamba's conv and scan: whole channels per chip
        return op.operands[0].type.shape[1] % t == 0
    if op.opcode is Opcode.MATMUL and "split" in a:
        k, n = _weight_kn(op)
        width = n if a["split"] == "col" else k
        heads = a.get("heads")
        if a["split"] == "row" and t > 1 and not _whole_blocks(op.operands[1].type, k // t):
            return False
        return (heads % t == 0 or t % heads == 0) if heads else width % t == 0
    return True


def _whole_blocks(weight: TensorType, inputs: int) -> bool:
    """Whether a chip's `inputs` of a block-scaled weight's contraction axis are whole blocks
    (a shard must not split a block: its one scale serves the block's inputs together)."""
    block = weight.dtype.block
    return block is None or inputs % block.size == 0


class _Sharder:
    def __init__(self, tp: int, ops: Sequence[Op], outer: dict[str, Value]):
        self.tp, self.ops, self.outer = tp, ops, outer
        self.defined = {r.name for op in ops for r in op.results}
        self.used = {v.name for op in ops for v in op.operands}
        self.value: dict[str, Value] = {}
        self.layout: dict[str, Layout] = {}
        self.out: list[Op] = []

    def run(self) -> list[Op]:
        for op in self.ops:
            self._visit(op)
        for op in self.ops:  # partial sums leaving the unit are completed inside it
            for r in op.results:
                if r.name not in self.used and self.layout[r.name] is Layout.PARTIAL:
                    self._reduce(r.name, op.scope)
        return self.out

    def _visit(self, op: Op) -> None:
        operands = [self._operand(op, i, v) for i, v in enumerate(op.operands)]
        attrs, layout = _RULES.get(op.opcode, _rule_follow)(self, op, operands)
        if self.tp == 1:
            layout = Layout.REPL
        types = OPDEFS[op.opcode].type_rule(tuple(v.type for v in operands), attrs)
        results = tuple(Value(r.name, t) for r, t in zip(op.results, types, strict=True))
        self.out.append(Op(op.opcode, tuple(operands), results, sorted_attrs(attrs), op.scope))
        for r in results:
            self.value[r.name], self.layout[r.name] = r, layout

    def _operand(self, op: Op, index: int, v: Value) -> Value:
        if v.name not in self.defined and v.name not in self.value:
            resident = _resident_type(self, op, index, v)
            if resident is not None:
                return Value(v.name, resident)
            self.value[v.name] = self.outer.get(v.name, v)  # an input from an earlier unit, whole
            self.layout[v.name] = Layout.REPL
        if self.layout[v.name] is Layout.PARTIAL and not self._sums_partials(op):
            self._reduce(v.name, op.scope)
        return self.value[v.name]

    def _sums_partials(self, op: Op) -> bool:
        """An add of two partial sums is itself one: reduce once, after it (DeepSeek's routed
        plus shared experts)."""
        return op.opcode is Opcode.ADD and all(self.layout.get(v.name) is Layout.PARTIAL for v in op.operands)

    def _reduce(self, name: str, scope: str) -> None:
        self._collective(Opcode.ALLREDUCE, name, scope)

    def gather(self, v: Value, scope: str) -> Value:
        if self.layout.get(v.name) is Layout.SHARD and self.tp > 1:
            self._collective(Opcode.ALLGATHER, v.name, scope)
        return self.value.get(v.name, v)

    def _collective(self, opcode: Opcode, name: str, scope: str) -> None:
        v = self.value[name]
        (t,) = OPDEFS[opcode].type_rule((v.type,), {"group": self.tp})
        done = Value(f"{name}.{opcode.value}", t)
        self.out.append(Op(opcode, (v,), (done,), (("group", self.tp),), scope))
        self.value[name], self.layout[name] = done, Layout.REPL

    def layout_of(self, v: Value) -> Layout:
        return self.layout.get(v.name, Layout.REPL)


def _resident_type(s: _Sharder, op: Op, index: int, v: Value) -> TensorType | None:
    """The per-chip type of a param or cache operand; None for an activation input."""
    t, shape, a = s.tp, v.type.shape, op.attr
    if not shape and index >= 1 and op.opcode in _WEIGHT_OPS:  # NVFP4's tensor scale: every chip holds it
        return v.type
    if op.opcode is Opcode.MATMUL and index >= 1:
        return _matmul_operand_type(v.type, index, a, t)
    if op.opcode is Opcode.EMBED and index >= 1:  # the table and its scales, by vocabulary rows
        return v.type.with_shape(-(-shape[0] // t), *shape[1:])
    if op.opcode is Opcode.RMSNORM and index == 1:
        return v.type
    if op.opcode is Opcode.EXPERTS and index >= 3:
        return _expert_operand_type(v.type, index, t)
    if op.opcode is Opcode.MLA_ATTENTION and index >= 4:
        return _mla_operand_type(v.type, index, a, t)
    if op.opcode is Opcode.TOPK and index == 1:  # the router's bias, beside the replicated router
        return v.type
    if index in _CHANNEL_OPERANDS.get(op.opcode, ()):
        return _channel_operand_type(v.type, t)
    if op.opcode is Opcode.ATTENTION and index >= 3 and index != 5:  # caches (hot, cold), their per-head scales
        kv = a["kv_heads"]
        return v.type.with_shape(*shape[:2], shape[2] // kv * _per_chip(kv, t))
    if op.opcode in (Opcode.ADD, Opcode.MUL) and len(shape) == 1 and index == 1:
        return v.type.with_shape(s.value[op.operands[0].name].type.shape[-1])  # a bias follows its input
    return None


_WEIGHT_OPS = (Opcode.MATMUL, Opcode.EMBED, Opcode.MLA_ATTENTION)


def _weight_kn(op: Op) -> tuple[int, int]:
    """A matmul weight's (in, out) features, whichever way it is stored."""
    rows, cols = op.operands[1].type.shape
    return (cols, rows) if op.attr.get("transpose_b") else (rows, cols)


def _matmul_operand_type(t_in: TensorType, index: int, a: dict, t: int) -> TensorType:
    """Per-chip weight (index 1), or scale/bias (2), of a split matmul. The out-feature
    axis is the last one, or the first of a `transpose_b` weight. Block scales (a 2-D scale)
    are laid out like their weight, one row per block of inputs, and split like it."""
    split, shape = a.get("split"), t_in.shape
    like_weight = index == 1 or len(shape) == 2
    out_axis = 0 if like_weight and a.get("transpose_b") else len(shape) - 1
    if split == "col":
        return t_in.with_shape(*(_col_width(d, a.get("heads"), t) if i == out_axis else d
                                 for i, d in enumerate(shape)))
    if split == "row" and like_weight:
        in_axis = 1 - out_axis
        return t_in.with_shape(*(d // t if i == in_axis else d for i, d in enumerate(shape)))
    return t_in


def _mla_operand_type(t_in: TensorType, index: int, a: dict, t: int) -> TensorType | None:
    """kv_b (6) and its scale (7) keep the chip's heads' columns. The latent cache (4) stays
    whole: every head attends over all of it, so each chip of the group holds a full copy
    and the plan counts it on every chip, as it must. Positions (5) are an input."""
    if index in (6, 7) and t_in.shape:  # kv_b and its per-column or block scales; a tensor scale stays whole
        return t_in.with_shape(*t_in.shape[:-1], t_in.shape[-1] // t)
    return t_in if index == 4 else None


# Mamba's per-channel operands: conv1d's weight, state and bias; the scan's A_log, D and state.
_CHANNEL_OPERANDS = {Opcode.CONV1D: (1, 2, 3), Opcode.SELECTIVE_SCAN: (2, 5, 6)}


def _channel_operand_type(t_in: TensorType, t: int) -> TensorType:
    """The chip's C/t channels of a param [C, ...] or a state [B, C, ...]."""
    axis = 1 if len(t_in.shape) == 3 else 0
    return t_in.with_shape(*(d // t if i == axis else d for i, d in enumerate(t_in.shape)))


def _expert_operand_type(t_in: TensorType, index: int, t: int) -> TensorType:
    """Experts spread over the group (E/t each); a group wider than E also splits each
    expert's intermediate features t/E ways (gate/up by column, down by row)."""
    experts, *rest = t_in.shape
    if experts % t == 0:
        return t_in.with_shape(experts // t, *rest)
    ways = t // experts
    # Operands 3-5 are gate, up, down [E, in, out]; 6-8 their scales, per channel [E, out] or
    # in blocks [E, in / block, out]; 9-11 NVFP4's tensor scales [E].
    blocks = len(rest) == 2
    inter_axis = {3: 2, 4: 2, 5: 1, 6: 2 if blocks else 1, 7: 2 if blocks else 1, 8: 1 if blocks else None}.get(index)
    return t_in.with_shape(1, *(d // ways if i + 1 == inter_axis else d for i, d in enumerate(rest)))


def _col_width(n: int, heads: int | None, t: int) -> int:
    if heads is None:
        return n // t
    return n // heads * _per_chip(heads, t)


def _per_chip(heads: int, t: int) -> int:
    """Heads one chip keeps: its share, or one whole head when the group is wider."""
    return max(1, heads // t)


def _rule_follow(s: _Sharder, op: Op, operands: list[Value]) -> tuple[dict, Layout]:
    acts = [v for v in operands if v.name in s.layout]
    layouts = {s.layout_of(v) for v in acts}
    if len(layouts) > 1:  # mixed: make everything whole
        for i, v in enumerate(operands):
            operands[i] = s.gather(v, op.scope) if v.name in s.layout else v
        return op.attr, Layout.REPL
    return op.attr, layouts.pop() if layouts else Layout.REPL


def _rule_whole(s: _Sharder, op: Op, operands: list[Value]) -> tuple[dict, Layout]:
    operands[0] = s.gather(operands[0], op.scope)
    return op.attr, Layout.REPL


def _rule_matmul(s: _Sharder, op: Op, operands: list[Value]) -> tuple[dict, Layout]:
    split = op.attr.get("split")
    if split == "row":
        if s.layout_of(operands[0]) is not Layout.SHARD and s.tp > 1:
            raise VerifyError(f"row-split matmul {op.results[0]} needs a sharded input")
        return op.attr, Layout.PARTIAL
    operands[0] = s.gather(operands[0], op.scope)
    return op.attr, Layout.SHARD if split == "col" else Layout.REPL


def _rule_embed(s: _Sharder, op: Op, operands: list[Value]) -> tuple[dict, Layout]:
    return (op.attr | {"shards": s.tp} if s.tp > 1 else op.attr), Layout.PARTIAL


def _rule_rope(s: _Sharder, op: Op, operands: list[Value]) -> tuple[dict, Layout]:
    heads = operands[0].type.shape[1] // op.attr["head_dim"]
    return op.attr | {"heads": heads}, s.layout_of(operands[0])


def _rule_attention(s: _Sharder, op: Op, operands: list[Value]) -> tuple[dict, Layout]:
    a = op.attr
    return a | {"heads": a["heads"] // s.tp if s.tp > 1 else a["heads"],
                "kv_heads": _per_chip(a["kv_heads"], s.tp)}, Layout.SHARD


def _rule_mla(s: _Sharder, op: Op, operands: list[Value]) -> tuple[dict, Layout]:
    """Queries arrive split by head, the latent rows whole; each chip's heads' outputs are a shard."""
    for i in (2, 3):
        operands[i] = s.gather(operands[i], op.scope)
    return op.attr | {"heads": op.attr["heads"] // s.tp}, Layout.SHARD


def _rule_channels(s: _Sharder, op: Op, operands: list[Value]) -> tuple[dict, Layout]:
    """Mamba's conv and scan work channel by channel, so the channels (x, and the scan's dt)
    arrive split from a column-split matmul and stay split; the scan's B and C, shared by
    every channel, are whole (x_proj's partial sums were reduced on the way in)."""
    channels = (0, 1) if op.opcode is Opcode.SELECTIVE_SCAN else (0,)
    if s.tp > 1 and any(s.layout_of(operands[i]) is not Layout.SHARD for i in channels):
        raise VerifyError(f"{op.opcode.value} {op.results[0]} needs its channels split over the group")
    for i in range(len(operands)):
        if i not in channels and operands[i].name in s.layout:
            operands[i] = s.gather(operands[i], op.scope)
    return op.attr, Layout.SHARD


def _rule_experts(s: _Sharder, op: Op, operands: list[Value]) -> tuple[dict, Layout]:
    """Every chip sees every token; each sums its own experts' weighted outputs (zero for
    experts the router did not pick), so the result is a partial sum."""
    operands[0] = s.gather(operands[0], op.scope)
    return op.attr, Layout.PARTIAL


def _rule_argmax(s: _Sharder, op: Op, operands: list[Value]) -> tuple[dict, Layout]:
    sharded = s.layout_of(operands[0]) is Layout.SHARD and s.tp > 1
    return (op.attr | {"shards": s.tp} if sharded else op.attr), Layout.REPL


_RULES = {
    Opcode.MATMUL: _rule_matmul,
    Opcode.EMBED: _rule_embed,
    Opcode.ROPE: _rule_rope,
    Opcode.ATTENTION: _rule_attention,
    Opcode.ARGMAX: _rule_argmax,
    Opcode.RMSNORM: _rule_whole,
    Opcode.SOFTMAX: _rule_whole,
    Opcode.TOPK: _rule_whole,
    Opcode.EXPERTS: _rule_experts,
    Opcode.CONV1D: _rule_channels,
    Opcode.SELECTIVE_SCAN: _rule_channels,
    Opcode.MLA_ATTENTION: _rule_mla,
}


def shard_graph(graph: Graph, tp: int) -> Graph:
    """Every scope of `graph` sharded over `tp` chips: one chip's program, params and caches."""
    ops: list[Op] = []
    final: dict[str, Value] = {}
    for scope in graph.scopes():
        chip_ops, values = shard_unit(list(graph.ops_in(scope)), tp, final)
        ops.extend(chip_ops)
        final.update(values)
    seen = {v.name: v for op in ops for v in op.operands}
    params = tuple(seen.get(p.name, p) for p in graph.params)
    state = tuple(seen.get(s.name, s) for s in graph.state)
    outputs = tuple(final.get(v.name, v) for v in graph.outputs)
    return Graph(f"{graph.name}.tp{tp}", graph.inputs, params, state, tuple(ops), outputs)
