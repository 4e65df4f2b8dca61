"""ShardTensorParallel: one chip's share of a unit on a tensor-parallel group of t chips.

Contract. Requires: a verified graph whose matmuls carry `split` ("col"/"row",
Megatron style) and, where the output is attention heads, `heads`. Produces the
ops every chip of the group runs (SPMD: the chip's rank picks its slices):
params, caches and activations take their per-chip shapes; an `allreduce` is
inserted where a partial sum is consumed or leaves the unit, an `allgather`
where an op needs a whole value it holds only a shard of. When t is a multiple
of a layer's kv heads past them, the s = t / kv_heads chips that share a kv head
split its cache by sequence (seq_shards): each holds a run of context / s
positions, attends all the kv head's queries over them and the partials are
merged across the s chips (flash-decoding), and each computes 1 / s of the kv
head's k and v features, gathered among them (_kv_slices); latent attention's down projections split
by column likewise (_latent_splits). That split layout is a choice per stage (`split`, the planner's,
costed against the whole layout: caches repeated past the kv heads, down projections whole on every
chip); `splits_kv` says where the two differ. The result is the input of both the partitioner's
cost model and the lowering, so the two cannot disagree on what a chip holds.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from ir.errors import VerifyError
from ir.graph import Graph, Op, Value, sorted_attrs
from ir.ops import OPDEFS, Opcode, expert_passes
from ir.types import DType, TensorType


class Layout(enum.Enum):
    REPL = "repl"  # every chip holds all of it
    SHARD = "shard"  # split t ways along the last axis
    PARTIAL = "partial"  # every chip holds a partial sum


@dataclass(frozen=True, slots=True)
class ShardTensorParallel:
    """Rewrite one unit's ops (`ops`) for a group of `tp` chips, in the split layout or the whole one
    (`split`); see the module docstring."""

    tp: int
    split: bool = True

    def __call__(self, ops: Sequence[Op]) -> list[Op]:
        return shard_unit(ops, self.tp, split=self.split)[0]


def shard_unit(ops: Sequence[Op], tp: int, outer: dict[str, Value] | None = None, split: bool = True
               ) -> tuple[list[Op], dict[str, Value]]:
    """The per-chip ops, and the per-chip value that stands for each original name.
    `outer` gives the per-chip values of names defined by earlier units; `split`: caches by sequence
    and latent down projections by column where the group allows (else whole on every chip)."""
    sharder = _Sharder(tp, ops, outer or {}, split)
    return sharder.run(), sharder.value


def splits_kv(ops: Sequence[Op], tp: int) -> bool:
    """Whether the split layout of `ops` on `tp` chips differs from the whole one: an attention's cache
    shared by sequence, or a latent down projection split by column."""
    seq = any(seq_split(op.attr["heads"], op.attr["kv_heads"], tp, "tier" in op.attr) > 1
              for op in ops if op.opcode is Opcode.ATTENTION)
    return seq or bool(_latent_splits(ops, tp))


def lowers_split(ops: Sequence[Op], tp: int, node: int) -> bool:
    """Whether the chips sharing each kv head by sequence (seq_split) form groups the lowering runs:
    at most a node (a block of consecutive ranks may straddle two nodes) or whole nodes. A wider block
    would be one clique of s - 1 messages a chip over many nodes' links (programs s times larger)."""
    return all(s <= node or s % node == 0 for s in (seq_split(op.attr["heads"], op.attr["kv_heads"], tp,
                                                               "tier" in op.attr)
                                                     for op in ops if op.opcode is Opcode.ATTENTION))


def allowed_tp(ops: Sequence[Op], limit: int) -> list[int]:
    """Group sizes t <= limit that can split the unit's work, padded where t does not divide it
    (head_case, feature_width, expert_splits), up to twice a grouped-query attention's heads.
    Any integer qualifies, not only powers of two. A unit with experts may leave chips without a share of its
    dense matmuls' features (spare_units): its group is sized by the experts, not by the shared expert."""
    gqa = _gqa(ops)
    spare = spare_units(ops)
    if gqa:  # past the query heads the attention stops shrinking: twice them is as far as a group goes
        limit = min(limit, 2 * gqa[0])
    heads_out = {r.name: op.attr["head_dim"] for op in ops if op.opcode is Opcode.ATTENTION for r in op.results}

    def splits(op: Op, t: int) -> bool:
        if op.operands[0].name in heads_out:  # the output projection: the chip's (maybe padded) heads' rows
            w, head = op.operands[1].type, heads_out[op.operands[0].name]
            # padded heads move each head's rows (image.pad_heads): a block-scaled weight's blocks must not
            # straddle two heads (tiny-mixtral's 16-row heads under 32-row mxfp4 blocks at t = 3)
            moved = head_case(*gqa, t) != "even"
            return t == 1 or (_whole_blocks(w, head_split(*gqa, t)[0] * head) and (not moved or _whole_blocks(w, head)))
        return _divides(op, t, gqa, spare)

    return [t for t in range(1, limit + 1) if all(splits(op, t) and _packs(op, t, spare) for op in ops)]


def spare_units(ops: Sequence[Op]) -> bool:
    """Whether the unit's dense matmuls may leave chips of the group without features (feature_width's
    `spare`): a unit with experts, whose group the experts size (DeepSeek-V3's 256 routed experts on 13
    nodes, where the shared expert's 2,048 features cannot give each of 104 chips a share)."""
    return any(op.opcode is Opcode.EXPERTS for op in ops)


def head_split(heads: int, kv_heads: int, t: int) -> tuple[int, int]:
    """(query heads, kv heads) one chip of t keeps (head_case says how)."""
    case = head_case(heads, kv_heads, t)
    g = heads // kv_heads
    if case == "even":
        return heads // t, max(1, kv_heads // t)
    if case == "groups":
        return -(-g // (t // kv_heads)), 1
    if case == "kv-padded":
        return -(-kv_heads // t) * g, -(-kv_heads // t)
    return (-(-heads // t),) * 2


def seq_split(heads: int, kv_heads: int, t: int, tiered: bool = False) -> int:
    """Chips that share one kv head's cache by sequence on t chips: t / kv_heads when t is a multiple of
    the kv heads past them (head_case "even" or "groups": a kv head's chips are consecutive ranks), else
    1 (each chip holds its kv heads' whole cache). A cache split over tiers stays whole on each chip."""
    return t // kv_heads if t > kv_heads and t % kv_heads == 0 and not tiered else 1


def head_case(heads: int, kv_heads: int, t: int) -> str:
    """How t chips share a grouped-query attention's heads, keeping a chip's shape uniform (each
    chip's query heads are whole runs of one kv head's queries), padded with zero heads that the
    plan counts:
    - "even": t divides the heads and the kv heads, or is a multiple of the kv heads dividing the
      heads (a kv head kept whole by t / kv_heads chips);
    - "groups": t a multiple of the kv heads: a kv head's g = heads / kv_heads queries over its
      s = t / kv_heads chips, ceil(g / s) each (each group padded to s x ceil(g / s) heads);
    - "kv-padded": t below the kv heads: ceil(kv_heads / t) kv heads each, with their queries
      (kv heads padded past the end);
    - "expanded": any other t: ceil(heads / t) query heads each, every one with its own copy of its
      kv head (the kv projection and cache repeated per query head).
    Past the query heads a chip keeps one head, the extra chips zero heads: the attention no longer
    shrinks, but the rest of the unit (its MLP or experts) does."""
    if heads % t == 0 and (kv_heads % t == 0 or t % kv_heads == 0):
        return "even"
    if t % kv_heads == 0:
        return "groups"
    return "kv-padded" if t < kv_heads else "expanded"


def head_pads(ops: Sequence[Op], t: int, split: bool = True) -> dict[str, tuple[int, ...]]:
    """Params whose full layout must be rearranged before it splits evenly over t chips (head_case):
    name -> (axis, groups, members, slots, size, repeat): along `axis`, `groups` runs of `members`
    heads of `size` elements, each head repeated `repeat` times, each run padded with zero heads to
    `slots`. The query projection's columns (its scales and bias) and the output projection's rows,
    and the kv projections' columns when kv heads are padded or repeated, or (in the `split` layout)
    sliced unevenly by the chips sharing a head by sequence (_kv_slice_pads)."""
    gqa = _gqa(ops)
    case = head_case(*gqa, t) if gqa else None
    sliced = _kv_slice_pads(ops, t) if split else {}
    if case in (None, "even"):
        return sliced
    if split and query_slice(ops, t) is not None:
        return sliced | _query_slice_pads(ops, t)
    heads, kv = gqa
    g, (q_here, kv_here) = heads // kv, head_split(heads, kv, t)
    q_pad = (kv, g, t * q_here // kv, 1) if case == "groups" else (1, heads, t * q_here, 1)
    kv_pad = {"groups": None, "kv-padded": (1, kv, t * kv_here, 1), "expanded": (1, kv, t * kv_here, g)}[case]
    att = next(op for op in ops if op.opcode is Opcode.ATTENTION)
    made = {r.name: op for op in ops for r in op.results}
    o = next((op for op in ops if op.opcode is Opcode.MATMUL and op.operands[0].name == att.results[0].name), None)
    pads: dict[str, tuple[int, ...]] = {}
    for index, pad, n in ((0, q_pad, heads), (1, kv_pad, kv), (2, kv_pad, kv)):
        if pad is not None:
            _pad_chain(made, att.operands[index].name, pad, n, pads)
    if o is not None:
        _pad_operands(o, q_pad, heads, False, pads)
    return pads | sliced


def _kv_slices(ops: Sequence[Op], t: int) -> dict[str, int]:
    """The k and v projections (by result name) whose kv head s chips share by sequence (seq_split),
    each chip computing kv_slice_width of the head's features (1 / s, padded with zero features where s
    does not divide the head), gathered whole before rope and the cache (the padding sliced off). The
    projections' weights are then split, not repeated s times."""
    return {name: runs for name, (runs, _) in _kv_projections(ops, t).items()}


def _kv_projections(ops: Sequence[Op], t: int) -> dict[str, tuple[int, Op]]:
    """_kv_slices' projections, with their chips a head and the matmul op."""
    att = next((op for op in ops if op.opcode is Opcode.ATTENTION), None)
    if att is None:
        return {}
    a = att.attr
    runs = seq_split(a["heads"], a["kv_heads"], t, "tier" in a)
    if runs == 1:
        return {}
    made = {r.name: op for op in ops for r in op.results}
    out = {}
    for index in (1, 2):
        op = made.get(att.operands[index].name)
        while op is not None and op.opcode is not Opcode.MATMUL:
            op = made.get(op.operands[0].name)
        if op is not None and op.attr.get("split") == "col" and kv_slice_width(
                a["head_dim"], runs, op.operands[1].type.dtype) is not None:
            out[op.results[0].name] = runs, op
    return out


def kv_slice_width(head_dim: int, runs: int, dtype: DType = DType.F16) -> int | None:
    """Features of a kv head each of its `runs` chips computes: ceil(head_dim / runs) (even for packed
    int4 columns), the last chips' shares padded with zero features the plan counts; None where that
    would leave a chip without a real feature (the head's projections are then repeated whole)."""
    w = -(-head_dim // runs)
    if dtype.bits == 4:  # int4, nvfp4, mxfp4: two values a byte along each row
        w += w % 2
    return w if w * (runs - 1) < head_dim else None


def _kv_slice_pads(ops: Sequence[Op], t: int) -> dict[str, tuple[int, ...]]:
    """head_pads' entries for kv projections sliced unevenly (kv_slice_width): each kv head's columns
    padded with zero features to runs x width, so that a chip's block of them is its slice."""
    att = next((op for op in ops if op.opcode is Opcode.ATTENTION), None)
    pads: dict[str, tuple[int, ...]] = {}
    for runs, op in _kv_projections(ops, t).values():
        hd, kv = att.attr["head_dim"], att.attr["kv_heads"]
        w = kv_slice_width(hd, runs, op.operands[1].type.dtype)
        if w * runs != hd:  # a head's features are `hd` heads of one element, padded to runs x w
            _pad_operands(op, (kv, hd, runs * w, 1), kv * hd, True, pads)
    return pads


def query_slice(ops: Sequence[Op], t: int) -> tuple[int, int, Op, Op] | None:
    """Where the s = seq_split chips sharing a kv head would pad its g queries to whole heads each
    (head_case "groups": s does not divide g), they slice them by feature instead: each computes w =
    query_slice_width of the g x head_dim query features (the last chips' padded with zero features the
    plan counts), gathered whole before the bias and rope (every chip of a sequence shard attends all g
    queries anyway), and keeps w features of the merged context, the output projection's rows likewise.
    Not at twice the query heads (half a head's features a chip): there the 2g chips' gathers of every
    query and partial cost more than the slices save (llama-3.1-405b int8 would take 256-chip stages:
    2,048 -> 1,920 chips, TTFT 15.8 -> 84.4 ms). (s, w, the query projection, the output projection);
    None where no such w exists or is not offered (whole heads)."""
    att = next((op for op in ops if op.opcode is Opcode.ATTENTION), None)
    if att is None:
        return None
    a = att.attr
    runs = seq_split(a["heads"], a["kv_heads"], t, "tier" in a)
    if runs == 1 or t >= 2 * a["heads"] or head_case(a["heads"], a["kv_heads"], t) != "groups":
        return None
    made = {r.name: op for op in ops for r in op.results}
    q = made.get(att.operands[0].name)
    while q is not None and q.opcode is not Opcode.MATMUL:
        q = made.get(q.operands[0].name)
    o = next((op for op in ops if op.opcode is Opcode.MATMUL and op.operands[0].name == att.results[0].name), None)
    if q is None or o is None or q.attr.get("split") != "col" or o.attr.get("split") != "row":
        return None
    align = _slice_align(q.operands[1].type, o.operands[1].type)
    features = a["heads"] // a["kv_heads"] * a["head_dim"]
    w = query_slice_width(features, runs, align)
    return None if w is None or features % align else (runs, w, q, o)


def query_slice_width(features: int, runs: int, align: int = 1) -> int | None:
    """Query features of a kv head each of its `runs` chips computes: ceil(features / runs) rounded up
    to `align`; None where that would leave a chip without a real feature."""
    w = -(-features // runs)
    w = -(-w // align) * align
    return w if w * (runs - 1) < features else None


def _slice_align(q: TensorType, o: TensorType) -> int:
    """A query slice's multiple: even for packed int4 columns and rows, whole blocks of a block-scaled
    output projection's rows (a block's one scale serves its inputs together)."""
    align = o.dtype.block.size if o.dtype.block is not None else 1
    return max(align, 2) if 4 in (q.dtype.bits, o.dtype.bits) else align


def _query_slice_pads(ops: Sequence[Op], t: int) -> dict[str, tuple[int, ...]]:
    """head_pads' entries for queries sliced by feature (query_slice): each kv head's g x head_dim columns
    of the query projection, and rows of the output projection, padded with zeros to s x w, so that a
    chip's block is its slice (a block-scaled projection's scales by whole blocks of rows)."""
    runs, w, q, o = query_slice(ops, t)
    att = next(op for op in ops if op.opcode is Opcode.ATTENTION)
    kv = att.attr["kv_heads"]
    features = att.attr["heads"] // kv * att.attr["head_dim"]
    pads: dict[str, tuple[int, ...]] = {}
    _pad_operands(q, (kv, features, runs * w, 1), kv * features, True, pads)
    unit = o.operands[1].type.dtype.block.size if o.operands[1].type.dtype.block is not None else 1
    _pad_operands(o, (kv, features // unit, runs * w // unit, 1), kv * features // unit, False, pads)
    return pads


def _latent_splits(ops: Sequence[Op], t: int) -> set[str]:
    """Latent attention's down projections (q_a, kv_a's latent: matmuls with no split whose result only
    a norm reads) split by column over t chips when t divides their features, gathered whole for the
    norm: every chip would otherwise hold the whole matrix (DeepSeek-V3's 7168 x 2048 on each of 128)."""
    if t == 1 or not any(op.opcode is Opcode.MLA_ATTENTION for op in ops):
        return set()
    readers: dict[str, list[Op]] = {}
    for op in ops:
        for v in op.operands:
            readers.setdefault(v.name, []).append(op)
    out = set()
    for op in ops:
        if op.opcode is not Opcode.MATMUL or "split" in op.attr or op.operands[1].type.dtype is DType.I4:
            continue
        n = _weight_kn(op)[1]
        if n % t == 0 and all(r.opcode is Opcode.RMSNORM for r in readers.get(op.results[0].name, [None])):
            out.add(op.results[0].name)
    return out


def _pad_chain(made: dict[str, Op], name: str, pad: tuple[int, ...], heads: int, pads: dict) -> None:
    """Back from an attention operand through rope and a bias add to its projection: pad them all."""
    op = made.get(name)
    while op is not None and op.opcode is not Opcode.MATMUL:
        if op.opcode is Opcode.ADD and len(op.operands[1].type.shape) == 1:
            b = op.operands[1]
            pads[b.name] = (0, *pad[:3], b.type.shape[0] // heads, pad[3])
        op = made.get(op.operands[0].name)
    if op is not None:
        _pad_operands(op, pad, heads, True, pads)


def _pad_operands(mm: Op, pad: tuple[int, ...], heads: int, out: bool, pads: dict) -> None:
    for index, v in enumerate(mm.operands[1:], start=1):
        axis = _feature_axis(v.type, index, mm.attr, out)
        if axis is not None:
            pads[v.name] = (axis, *pad[:3], v.type.shape[axis] // heads, pad[3])


def _feature_axis(t_in: TensorType, index: int, a: dict, out: bool) -> int | None:
    """The axis of a matmul operand (weight or scale) holding its out (or in) features, if it has one."""
    shape = t_in.shape
    if not shape or (not out and index >= 2 and len(shape) < 2):
        return None  # a tensor scale, or a row split's per-output-channel scale
    like_weight = index == 1 or len(shape) == 2
    out_axis = 0 if like_weight and a.get("transpose_b") else len(shape) - 1
    return out_axis if out else 1 - out_axis


def _gqa(ops: Sequence[Op]) -> tuple[int, int] | None:
    """The unit's (query heads, kv heads), when it has grouped-query attention."""
    att = next((op for op in ops if op.opcode is Opcode.ATTENTION), None)
    return (att.attr["heads"], att.attr["kv_heads"]) if att is not None else None


def _heads_here(heads: int, t: int, gqa: tuple[int, int] | None) -> int:
    """Heads of a projection one chip keeps: the attention's split for its query or kv heads,
    else its share (or one whole head when the group is wider)."""
    split = head_split(*gqa, t) if gqa else None
    if split is not None and heads in gqa:
        return split[0] if heads == gqa[0] else split[1]
    return max(1, heads // t)


def _packs(op: Op, t: int, spare: bool = False) -> bool:
    """Packed int4 weights hold two per byte along each row: a chip's rows must stay even (its share as
    the unit splits it: with spare chips where the unit allows them)."""
    if op.opcode is Opcode.MATMUL and "split" in op.attr and op.operands[1].type.dtype is DType.I4:
        return _matmul_operand_type(op.operands[1].type, 1, op.attr, t, spare=spare).shape[-1] % 2 == 0
    if op.opcode is Opcode.EXPERTS and _divides(op, t):
        return all(_expert_operand_type(v.type, i, op, t).shape[-1] % 2 == 0
                   for i, v in enumerate(op.operands) if i in (3, 4, 5) and v.type.dtype is DType.I4)
    return True


def _divides(op: Op, t: int, gqa: tuple[int, int] | None = None, spare: bool = False) -> bool:
    a = op.attr
    if op.opcode is Opcode.ATTENTION:
        return True  # any group: head_case pads what does not divide
    if op.opcode is Opcode.EXPERTS:
        return bool(expert_splits(op, t))
    if op.opcode is Opcode.EMBED:  # vocabulary rows by vocab_share
        return splits_vocab(op.operands[1].type.shape[0], t)
    if op.opcode is Opcode.ARGMAX:  # the logits' shards: ARGBEST's limit keeps their padded columns out
        return splits_vocab(op.operands[0].type.shape[-1], t)
    if op.opcode is Opcode.MLA_ATTENTION:  # whole heads per chip; no replication past the head count
        return a["heads"] % t == 0
    if op.opcode in _CHANNEL_OPERANDS:  # Mamba's conv and scan: whole channels, padded (feature_width)
        return feature_width(op.operands[0].type.shape[1], t) is not None
    if op.opcode is Opcode.MATMUL and "split" in a:
        k, n = _weight_kn(op)
        width = n if a["split"] == "col" else k
        heads = a.get("heads")
        if a.get("vocab"):  # the LM head's columns, split as the embedding's rows
            return a["split"] == "col" and splits_vocab(n, t)
        if heads and gqa and heads in gqa:  # the attention's projections: head_case pads any group
            return True
        if heads:
            return heads % t == 0 or t % heads == 0
        inputs = feature_width(width, t, spare)
        return inputs is not None and (a["split"] == "col" or t == 1 or _whole_blocks(op.operands[1].type, inputs))
    return True


def _whole_blocks(weight: TensorType, inputs: int) -> bool:
    """Whether a chip's `inputs` of a block-scaled weight's contraction axis are whole blocks
    (a shard must not split a block: its one scale serves the block's inputs together)."""
    block = weight.dtype.block
    return block is None or inputs % block.size == 0


class _Sharder:
    def __init__(self, tp: int, ops: Sequence[Op], outer: dict[str, Value], split: bool = True):
        self.tp, self.ops, self.outer, self.split = tp, ops, outer, split
        self.defined = {r.name for op in ops for r in op.results}
        self.used = {v.name for op in ops for v in op.operands}
        self.value: dict[str, Value] = {}
        self.layout: dict[str, Layout] = {}
        self.out: list[Op] = []
        self.gqa = _gqa(ops)
        self.kv_slices = _kv_slices(ops, tp) if split else {}
        self.latent = _latent_splits(ops, tp) if split else set()
        self.q_slice = query_slice(ops, tp) if split else None
        # sliced projections (by result name): (chips sharing the head, a chip's columns, the whole width)
        self.slices = self._slice_widths()
        self.spare = spare_units(ops)

    def _slice_widths(self) -> dict[str, tuple[int, int, int]]:
        out = {}
        att = next((op for op in self.ops if op.opcode is Opcode.ATTENTION), None)
        made = {r.name: op for op in self.ops for r in op.results}
        for name, runs in self.kv_slices.items():
            hd = att.attr["head_dim"]
            out[name] = runs, kv_slice_width(hd, runs, made[name].operands[1].type.dtype), hd
        if self.q_slice is not None:
            runs, w, q, _ = self.q_slice
            out[q.results[0].name] = runs, w, att.attr["heads"] // att.attr["kv_heads"] * att.attr["head_dim"]
        return out

    def runs(self, a: dict) -> int:
        """Chips sharing one kv head's cache by sequence (seq_split; 1 in the whole layout)."""
        return seq_split(a["heads"], a["kv_heads"], self.tp, "tier" in a) if self.split else 1

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
        sliced = self.slices.get(op.results[0].name) if op.results else None
        if sliced:  # a projection's slice of the chip's kv head: gathered whole from the chips sharing it
            self._gather_slices(op.results[0].name, op.scope, sliced[0], sliced[2])

    def _gather_slices(self, name: str, scope: str, slices: int, whole_width: int) -> None:
        v = self.value[name]
        (t,) = OPDEFS[Opcode.ALLGATHER].type_rule((v.type,), {"group": slices})
        done = Value(f"{name}.{Opcode.ALLGATHER.value}", t)
        self.out.append(Op(Opcode.ALLGATHER, (v,), (done,), (("group", slices),), scope))
        if t.shape[-1] > whole_width:  # the zero features padding the last slices (kv_slice_width, query_slice)
            whole = Value(f"{name}.{Opcode.SLICE.value}", t.with_shape(*t.shape[:-1], whole_width))
            self.out.append(Op(Opcode.SLICE, (done,), (whole,), (("start", 0), ("stop", whole_width)), scope))
            done = whole
        self.value[name] = done  # still the chip's kv head, a shard over the group's heads

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
        a = a | ({"split": "col"} if op.results[0].name in s.latent else {})
        heads = a.get("heads")
        share = (s.value[op.operands[0].name].type.shape[-1], _weight_kn(op)[0]) if a.get("split") == "row" else None
        sliced = s.slices.get(op.results[0].name)
        return _matmul_operand_type(v.type, index, a, t, _heads_here(heads, t, s.gqa) if heads else None, share,
                                    sliced[1] if sliced else None, s.spare)
    if op.opcode is Opcode.EMBED and index >= 1:  # the table and its scales, by vocabulary rows
        return v.type.with_shape(vocab_share(shape[0], t), *shape[1:])
    if op.opcode is Opcode.RMSNORM and index == 1:
        return v.type
    if op.opcode is Opcode.EXPERTS and index >= 3:
        return _expert_operand_type(v.type, index, op, t)
    if op.opcode is Opcode.MLA_ATTENTION and index >= 4:
        return _mla_operand_type(v.type, index, a, t)
    if op.opcode is Opcode.TOPK and index == 1:  # the router's bias, beside the replicated router
        return v.type
    if index in _CHANNEL_OPERANDS.get(op.opcode, ()):
        return _channel_operand_type(v.type, t)
    if op.opcode is Opcode.ATTENTION and index >= 3 and index != 5:  # caches (hot, cold), their per-head scales
        kv = a["kv_heads"]
        runs = s.runs(a)  # a chip's run of positions: ceil(context / runs)
        return v.type.with_shape(shape[0], -(-shape[1] // runs), shape[2] // kv * head_split(a["heads"], kv, t)[1])
    if op.opcode in (Opcode.ADD, Opcode.MUL) and len(shape) == 1 and index == 1:
        return v.type.with_shape(s.value[op.operands[0].name].type.shape[-1])  # a bias follows its input
    return None


_WEIGHT_OPS = (Opcode.MATMUL, Opcode.EMBED, Opcode.MLA_ATTENTION)


def _weight_kn(op: Op) -> tuple[int, int]:
    """A matmul weight's (in, out) features, whichever way it is stored."""
    rows, cols = op.operands[1].type.shape
    return (cols, rows) if op.attr.get("transpose_b") else (rows, cols)


def _matmul_operand_type(t_in: TensorType, index: int, a: dict, t: int, heads_here: int | None = None,
                         in_share: tuple[int, int] | None = None, sliced: int | None = None,
                         spare: bool = False) -> TensorType:
    """Per-chip weight (index 1), or scale/bias (2), of a split matmul. The out-feature
    axis is the last one, or the first of a `transpose_b` weight. Block scales (a 2-D scale)
    are laid out like their weight, one row per block of inputs, and split like it. A column
    split by heads keeps `heads_here` heads (head_split: maybe padded), or `sliced` columns of its
    kv head's (a head shared by sequence: _kv_slices, query_slice); a row split keeps the inputs its
    sharded input holds, `in_share` = (the chip's, all of them)."""
    split, shape = a.get("split"), t_in.shape
    like_weight = index == 1 or len(shape) == 2
    out_axis = 0 if like_weight and a.get("transpose_b") else len(shape) - 1
    if split == "col":
        heads = a.get("heads")
        width = (lambda d: sliced) if sliced else (lambda d: d // heads * heads_here) if heads and heads_here else (
            lambda d: vocab_share(d, t)) if a.get("vocab") else (lambda d: _col_width(d, heads, t, spare))
        return t_in.with_shape(*(width(d) if i == out_axis else d for i, d in enumerate(shape)))
    if split == "row" and like_weight:
        in_axis = 1 - out_axis
        here, total = in_share or (1, t)
        return t_in.with_shape(*(d * here // total if i == in_axis else d for i, d in enumerate(shape)))
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
    """The chip's feature_width(C, t) channels of a param [C, ...] or a state [B, C, ...] (the last chips'
    padded with zero channels, as in_proj's columns are: a zero channel's scan output is zero)."""
    axis = 1 if len(t_in.shape) == 3 else 0
    return t_in.with_shape(*(feature_width(d, t) if i == axis else d for i, d in enumerate(t_in.shape)))


def expert_splits(op: Op, t: int) -> list[tuple[int, int]]:
    """The ways an experts op spreads over t chips, as (expert groups a, feature slices b), a x b = t:
    each chip holds E / a whole experts' rows, each cut to 1 / b of its intermediate features (gate
    and up by column, down by row). a = t is expert-parallel, a = 1 feature-sliced, between a mix.
    A chip's feature slice is expert_width's. A chip may hold
    any number of experts: decode makes min(k, experts here) passes, and prefill's grouped matmul
    streams every local expert's panel on one stream (codegen.experts.lower_grouped).
    The op's `placement` (passes.expert_placement: --experts) keeps only the splits of that kind."""
    experts = op.operands[3].type.shape[0]
    return [(a, t // a) for a in range(1, t + 1)
            if t % a == 0 and experts % a == 0 and expert_width(op, t // a) is not None
            and _placement_allows(op.attr.get("placement", "auto"), a, t)]


def _placement_allows(placement: str, a: int, t: int) -> bool:
    """Whether --experts `placement` takes a groups of experts over t chips (one chip is every kind)."""
    if placement == "auto" or t == 1:
        return True
    if placement == "parallel":
        return a == t
    return a == (1 if placement == "sliced" else int(placement))


def expert_width(op: Op, b: int) -> int | None:
    """Intermediate features of each expert one of its b slices keeps: ceil(inter / b) rounded up only as
    the format needs (whole blocks of a block-scaled down projection, even columns of packed int4), the
    last slice padded with zeros; None where that would leave a slice without a feature. Not rounded to
    FEATURE_ALIGN as dense features are: the experts are most of a MoE chip's SRAM, and DeepSeek-V3's 13
    slices of 158 features fit a chip where 160 do not."""
    gate, down = op.operands[3].type, op.operands[5].type
    inter = gate.shape[2]
    unit = down.dtype.block.size if down.dtype.block else 2 if gate.dtype is DType.I4 else 1
    share = -(-inter // b)
    width = -(-share // unit) * unit
    return width if -(-inter // width) == b else None


def expert_split(op: Op, t: int) -> tuple[int, int]:
    """The split the static timing rule prefers: fewest expert tiles a chip streams per decode step
    (min(k, experts here) passes of one slice each: ir.ops.expert_passes), then fewest a prefill chunk
    installs (every local expert's slice once: codegen.experts.lower_grouped), then fewest feature cuts.
    Tiles are the matrix unit's (the op's `tile` attribute: passes.expert_tiles; 1 counts features):
    every split holds the same bytes per chip, but a slice narrower than a tile installs all of it, so
    on the lpu DeepSeek-V3 at t = 64 is 8 groups of 32 experts each cut 8 ways (256 of 2,048 features,
    one tile wide), not 256 experts cut 64 ways (32 features: the same decode tiles, 8x the prefill ones)."""
    experts, hidden, _ = op.operands[3].type.shape
    k, dim = op.attr["top_k"], op.attr.get("tile", 1)

    def tiles(ab: tuple[int, int]) -> int:  # one expert's slice in whole tiles: gate, up and down
        return 3 * -(-hidden // dim) * -(-expert_width(op, ab[1]) // dim)

    return min(expert_splits(op, t), key=lambda ab: (expert_passes(1, k, experts // ab[0]) * tiles(ab),
                                                    experts // ab[0] * tiles(ab), -ab[0]))


def expert_placement(op: Op, t: int) -> str:
    """How a plan names a split: 'parallel' (whole experts), 'sliced' (every expert's features), or
    'mixed AxB' (A groups of experts, each sliced B ways)."""
    a, b = expert_split(op, t)
    return "parallel" if b == 1 else "sliced" if a == 1 else f"mixed {a}x{b}"


def _expert_operand_type(t_in: TensorType, index: int, op: Op, t: int) -> TensorType:
    """A chip's E / a experts, each with its share of b ways of its intermediate features
    (expert_width: uneven shares padded; expert_split)."""
    a, b = expert_split(op, t)
    experts, *rest = t_in.shape
    inter = op.operands[3].type.shape[2]
    here = expert_width(op, b)
    # Operands 3-5 are gate, up, down [E, in, out]; 6-8 their scales, per channel [E, out] or
    # in blocks [E, in / block, out]; 9-11 NVFP4's tensor scales [E].
    blocks = len(rest) == 2
    inter_axis = {3: 2, 4: 2, 5: 1, 6: 2 if blocks else 1, 7: 2 if blocks else 1, 8: 1 if blocks else None}.get(index)
    return t_in.with_shape(experts // a, *(d * here // inter if i + 1 == inter_axis else d for i, d in enumerate(rest)))


def _col_width(n: int, heads: int | None, t: int, spare: bool = False) -> int:
    if heads is None:
        return feature_width(n, t, spare)
    return n // heads * _per_chip(heads, t)


def vocab_share(vocab: int, t: int) -> int:
    """Vocabulary ids one chip of t holds: the embedding's table rows and the LM head's columns (a `vocab`
    matmul), ceil(V / t), so that a tied table's two readers hold one shard. The last chip's share is
    padded with zeros the plan counts as held: rows no id reaches, logit columns past the vocabulary that
    ARGBEST's limit keeps out of the best and the host drops."""
    return -(-vocab // t)


def splits_vocab(vocab: int, t: int) -> bool:
    """Whether vocab_share leaves every chip of t some real id."""
    return vocab_share(vocab, t) * (t - 1) < vocab


FEATURE_ALIGN = 32  # an uneven share is whole 32-feature runs: whole blocks of every block-scaled format


def feature_width(n: int, t: int, spare: bool = False) -> int | None:
    """Features one chip of t keeps of n split ones: n / t, or where t does not divide n, ceil(n / t)
    rounded up to FEATURE_ALIGN, else ceil(n / t) itself (the last chip's share padded with zeros,
    counted as held), whichever first leaves no chip without a feature of its own; else None.
    `spare`: else the narrower of the two (the fewest zeros held) that leaves the last chips spare (all
    zeros, counted as held), provided the chips with features do not divide t (compiler.image.shard_of
    would read whole shares repeated over t / those chips)."""
    if n % t == 0:
        return n // t
    share = -(-n // t)
    widths = (-(-share // FEATURE_ALIGN) * FEATURE_ALIGN, share)
    for w in widths:  # whole runs if they leave no chip empty
        if -(-n // w) == t:
            return w
    if spare:
        for w in reversed(widths):
            if t % -(-n // w):
                return w
    return None


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
    if op.results[0].name in s.latent:
        operands[0] = s.gather(operands[0], op.scope)
        return op.attr | {"split": "col"}, Layout.SHARD
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
    heads, kv = head_split(a["heads"], a["kv_heads"], s.tp)
    runs = s.runs(a)
    out = a | {"heads": heads, "kv_heads": kv}
    if s.q_slice is not None:  # every query of the chip's kv head, whole; it keeps its slice of the context
        out |= {"heads": a["heads"] // a["kv_heads"], "q_slice": s.q_slice[1]}
    if runs > 1:  # a causal chunk reaching r positions: the first chip's run holds the most of them
        held = operands[3].type.shape[1]
        out = {k: v for k, v in out.items() if k != "reach" or v < held} | {"seq_shards": runs}
    return out, Layout.SHARD


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
    """A sharded argmax knows the vocabulary: a shard's ids from it on are padding (vocab_share)."""
    sharded = s.layout_of(operands[0]) is Layout.SHARD and s.tp > 1
    return (op.attr | {"shards": s.tp, "vocab": op.operands[0].type.shape[-1]} if sharded else op.attr), Layout.REPL


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

