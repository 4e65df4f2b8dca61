"""A layer whose attention runs on the first a of a stage's t chips and the rest of it on all t.

The attention part (attention_split: up to the residual add that takes the output projection's sum) is sharded
over the a chips up to the projection's partial sums; the other t - a chips put a zero partial sum in its place
(ZEROS), and the all-reduce over all t and the residual add leave the residual row whole on every chip. The rest
(the MLP) splits its features over all t: evenly (every chip's template the same), or, given `share`, unevenly:
the a attention chips keep `share` features each and the others more, as parts that each run one template on
every chip they cover: a body of `share` features a chip over all t, an extra of extra_width features a chip over
the t - a others, whose partial sum each adds to its body's in place (`EXTRA`: the sum's name, at the partial's
address), then the all-reduce and residual add (the tail) on all t. Features are laid out body first (chip r's
from r x share), then the extra's (other chip j's from t x share + (j - a) x extra_width), the last padded with
zero features the plan counts. codegen.phase._subset_pieces lowers the parts in turn.

A layer whose attention is a unit of its own (DeepSeek's `layers.N`, its MLA attention, and `layers.N.moe_shared`,
its experts and shared expert: frontend block_units) is two: the attention unit's rest is empty (the residual
row the mix leaves is all it hands on), and a unit without attention is its body alone, sharded over all t as
any stage's unit (the experts as passes.shard.expert_split lays them out over t).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from compiler.passes.shard import _feature_axis, _weight_kn, shard_unit
from ir.errors import VerifyError
from ir.graph import Op, Value
from ir.ops import Opcode

EXTRA = "@extra"  # the extra part's params and results: the original name and this
ZEROS = "@zeros"  # a zero partial sum (and the zero param it is the residual row times) on the others' chips
_ELEMENTWISE = (Opcode.SILU, Opcode.GELU, Opcode.MUL)
_ATTENTION = (Opcode.ATTENTION, Opcode.MLA_ATTENTION)


@dataclass(frozen=True, slots=True)
class Subset:
    """A layer's per-chip parts (see the module docstring); `values`: the per-chip value of each name."""

    head: list[Op]  # the attention chips': up to the output projection's partial sum
    zeros: list[Op]  # the other chips': a zero partial sum (ZEROS), at the head's partial's address
    mix: list[Op]  # every chip's: the all-reduce of the partial sums and the residual add
    body: list[Op]  # every chip's: the whole rest when even, else up to its partial sum
    extra: list[Op]  # the other chips' extra features, ending in the add into the body's partial ([] when even)
    tail: list[Op]  # every chip's all-reduce and residual add ([] when even)
    values: dict[str, Value]

    @property
    def parts(self) -> tuple[str, ...]:
        return ("head", "zeros", "mix", "body", "extra", "tail")


def attention_split(ops: Sequence[Op]) -> int | None:
    """Where a layer's attention part ends: past the residual add that takes the output projection's
    sum (a grouped-query or latent attention's, whose projection is row-split), provided what follows reads
    of the part only that add's result (the residual row every chip needs), if anything; else None (no such
    layer)."""
    att = next((op for op in ops if op.opcode in _ATTENTION), None)
    if att is None:
        return None
    o = next((op for op in ops if op.opcode is Opcode.MATMUL and op.operands[0].name == att.results[0].name), None)
    end = next((i for i, op in enumerate(ops) if op.opcode is Opcode.ADD and o is not None
                and o.results[0].name in {v.name for v in op.operands}), None)
    if o is None or o.attr.get("split") != "row" or end is None:
        return None
    head = {r.name for op in ops[:end + 1] for r in op.results}
    read = {v.name for op in ops[end + 1:] for v in op.operands if v.name in head}
    return end + 1 if read <= {ops[end].results[0].name} else None


def has_attention(ops: Sequence[Op]) -> bool:
    return any(op.opcode in _ATTENTION for op in ops)


def mlp_features(ops: Sequence[Op]) -> int | None:
    """The features the rest of a layer (past attention_split) splits unevenly: its column-split
    matmuls' outputs, which elementwise ops join and one row-split matmul sums; None if it has no such run."""
    end = attention_split(ops)
    run = _feature_run(list(ops[end:])) if end is not None else None
    return None if run is None else _weight_kn(ops[end + run[0]])[1]


def extra_width(features: int, tp: int, attention_tp: int, share: int) -> int:
    """Features each of the t - a other chips keeps past its `share`: the rest, spread evenly."""
    return -(-(features - tp * share) // (tp - attention_tp))


def shard_subset(ops: Sequence[Op], tp: int, attention_tp: int, outer: dict[str, Value] | None = None,
                 split: bool = True, share: int | None = None) -> Subset:
    """The layer's parts on `tp` chips, its attention on the first `attention_tp` (see the module docstring);
    `share`: the MLP features each attention chip keeps (None: the MLP even over all tp). Raises VerifyError
    where the layer has no such parts, or the share leaves the others nothing or takes more than there is. A unit
    without attention is its body alone, on every chip (even: a share needs a layer's MLP beside its attention)."""
    if not has_attention(ops) and 1 <= attention_tp < tp:
        if share is not None:
            raise VerifyError(f"{ops[0].scope}: {share} MLP features on each attention chip need the MLP in its "
                              "attention's unit (this unit has no attention)")
        body, values = shard_unit(list(ops), tp, outer, split)
        return Subset([], [], [], body, [], [], values)
    end = attention_split(ops)
    if end is None or not 1 <= attention_tp < tp:
        raise VerifyError(f"{ops[0].scope}: no attention part to run on {attention_tp} of {tp} chips")
    head, values = shard_unit(ops[:end], attention_tp, outer, split)
    head, zeros, mix = _mixed(head, tp, ops[0].scope)
    outer = (outer or {}) | values
    rest = list(ops[end:])
    if share is None:
        body, more = shard_unit(rest, tp, outer, split)
        return Subset(head, zeros, mix, body, [], [], values | more)
    run, features = _feature_run(rest), mlp_features(ops)
    if run is None or not share >= 1 or tp * share >= features:
        raise VerifyError(f"{ops[0].scope}: {share} MLP features on each of {attention_tp} of {tp} chips "
                          f"leave the others none of {features or 0}")
    first, last = run
    both, more = shard_unit(_retyped(rest, first, last, features, tp * share), tp, outer, split)
    partial = rest[last].results[0].name
    cut = next(i for i, op in enumerate(both) if op.opcode is Opcode.ALLREDUCE and op.operands[0].name == partial)
    width = (tp - attention_tp) * extra_width(features, tp, attention_tp, share)
    extra_ops = _renamed(_retyped(rest[first:last + 1], 0, last - first, features, width))
    extra, most = shard_unit(extra_ops, tp - attention_tp, outer | more, split)
    if extra[-1].opcode is Opcode.ALLREDUCE:  # the extra's sum joins the body's, not reduced apart
        extra = extra[:-1]
    own, theirs = both[cut].operands[0], extra[-1].results[0]
    add = Op(Opcode.ADD, (own, theirs), (Value(own.name + EXTRA, own.type),), (), ops[0].scope)
    return Subset(head, zeros, mix, both[:cut], [*extra, add], both[cut:], values | more | most)


def _mixed(head: list[Op], tp: int, scope: str) -> tuple[list[Op], list[Op], list[Op]]:
    """The attention part (sharded over its chips, ending in the all-reduce of the output projection's partial
    sums and the residual add) as the attention chips' ops up to that partial sum, the other chips' zero sum in
    its place (the residual row times ZEROS: exact, the row is finite), and every chip's all-reduce over all tp
    and residual add, which leaves the residual row whole on every chip."""
    add = head[-1]
    reduced = len(head) > 1 and head[-2].opcode is Opcode.ALLREDUCE  # (on one chip, nothing to reduce)
    made = head[-2].results[0].name if reduced else None
    if add.opcode is not Opcode.ADD or (reduced and add.operands[1].name != made):
        raise VerifyError(f"{scope}: its attention part does not end in the output projection's all-reduce and the "
                          "residual add")
    partial, row = head[-2].operands[0] if reduced else add.operands[1], add.operands[0]
    zero = Op(Opcode.MUL, (row, Value(f"{scope}{ZEROS}", row.type.with_shape(row.type.shape[-1]))),
              (Value(partial.name + ZEROS, partial.type),), (), scope)
    total = Value(f"{partial.name}.{Opcode.ALLREDUCE.value}", partial.type)
    mix = [Op(Opcode.ALLREDUCE, (partial,), (total,), (("group", tp),), scope),
           replace(add, operands=(row, total))]
    return head[:-2 if reduced else -1], [zero], mix


def _feature_run(rest: list[Op]) -> tuple[int, int] | None:
    """(first, last) indices of the column-split matmuls of one input, the elementwise ops on their
    outputs, and the row-split matmul that sums them."""
    first = next((i for i, op in enumerate(rest) if op.opcode is Opcode.MATMUL and op.attr.get("split") == "col"),
                 None)
    if first is None:
        return None
    x = rest[first].operands[0].name
    for i in range(first, len(rest)):
        op = rest[i]
        if op.opcode is Opcode.MATMUL and op.attr.get("split") == "row":
            return first, i
        col = op.opcode is Opcode.MATMUL and op.attr.get("split") == "col" and op.operands[0].name == x
        if not col and op.opcode not in _ELEMENTWISE:
            return None
    return None


def _retyped(ops: list[Op], first: int, last: int, features: int, width: int) -> list[Op]:
    """`ops` with the matmuls of ops[first..last] holding `width` of their `features` (the weights' and
    scales' feature axis: the column split's outputs, the row split's inputs)."""
    out = list(ops)
    for i in range(first, last + 1):
        op = ops[i]
        if op.opcode is not Opcode.MATMUL:
            continue
        col = op.attr.get("split") == "col"
        operands = list(op.operands)
        for index, v in enumerate(operands[1:], start=1):
            axis = _feature_axis(v.type, index, op.attr, col)
            if axis is not None and v.type.shape[axis] * width % features == 0 and v.type.shape[axis] > 1:
                shape = list(v.type.shape)
                shape[axis] = shape[axis] * width // features
                operands[index] = Value(v.name, v.type.with_shape(*shape))
        out[i] = replace(op, operands=tuple(operands))
    return out


def _renamed(ops: list[Op]) -> list[Op]:
    """The extra part's ops: their params and results named apart (EXTRA), their input as it was."""
    made = {r.name for op in ops for r in op.results}

    def name(v: Value, index: int, op: Op) -> Value:
        param = op.opcode is Opcode.MATMUL and index >= 1
        return Value(v.name + EXTRA, v.type) if param or v.name in made else v

    return [replace(op, operands=tuple(name(v, i, op) for i, v in enumerate(op.operands)),
                    results=tuple(Value(r.name + EXTRA, r.type) for r in op.results)) for op in ops]
