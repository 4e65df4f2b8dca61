"""What one chip of a tensor-parallel group holds and does for one unit (scope).

A walk over the unit's ops tracks how each value is laid out across the t chips:
REPL (every chip has all of it), SHARD (split t ways), PARTIAL (every chip has a
partial sum). Matmul `split` attributes say where layouts change (Megatron style);
an op that needs a whole value from a PARTIAL one pays an allreduce, from a SHARD
one an allgather. Costs are per chip, so a plan and a schedule can share them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ir.graph import Op, Value
from ir.ops import OPDEFS, Opcode


class Layout(enum.Enum):
    REPL = "repl"
    SHARD = "shard"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class Collective:
    """A collective on the critical path: `bytes` is the whole tensor's size."""

    kind: str  # "allreduce" | "allgather"
    bytes: int
    group: int


@dataclass(frozen=True, slots=True)
class OpWork:
    """One op on one chip: SRAM bytes it streams and arithmetic it does."""

    opcode: Opcode
    read_bytes: int
    flops: int


@dataclass(frozen=True, slots=True)
class ShardCost:
    """One unit on one chip of a group of `tp` chips."""

    tp: int
    weight_bytes: int
    state_bytes: int
    act_bytes: int  # peak live activations
    work: tuple[OpWork, ...]
    collectives: tuple[Collective, ...]

    @property
    def resident_bytes(self) -> int:
        return self.weight_bytes + self.state_bytes


_ELEMENTWISE = {Opcode.ADD, Opcode.MUL, Opcode.SILU, Opcode.GELU, Opcode.SOFTMAX, Opcode.ROPE}


def allowed_tp(ops: Sequence[Op], limit: int) -> list[int]:
    """Group sizes t <= limit that divide the unit's work evenly: heads for attention
    (kv heads either split or are shared by t/kv_heads chips), features for split
    matmuls. Any integer qualifies, not only powers of two."""
    return [t for t in range(1, limit + 1) if all(_divides(op, t) for op in ops)]


def _divides(op: Op, t: int) -> bool:
    a = op.attr
    if op.opcode is Opcode.ATTENTION:
        kv = a["kv_heads"]
        return a["heads"] % t == 0 and (kv % t == 0 or t % kv == 0)
    if op.opcode is Opcode.MATMUL and "split" in a:
        w = op.operands[1].type.shape
        return (w[1] if a["split"] == "col" else w[0]) % t == 0
    return True


def shard_cost(ops: Sequence[Op], tp: int, rows_scale: float = 1.0) -> ShardCost:
    """Per-chip cost of `ops` (one unit) on a tensor-parallel group of `tp` chips.

    `rows_scale` shrinks activation sizes, e.g. to one prefill chunk of the rows
    the graph was built for."""
    last_use = {v.name: i for i, op in enumerate(ops) for v in op.operands}
    walk = _Walk(tp, rows_scale, _params_and_state(ops), last_use)
    for index, op in enumerate(ops):
        walk.visit(index, op)
    return walk.result()


def _params_and_state(ops: Sequence[Op]) -> set[str]:
    """Names the unit does not compute: params and state (anything never defined)."""
    defined = {r.name for op in ops for r in op.results}
    return {v.name for op in ops for v in op.operands if v.name not in defined and _is_resident(op, v)}


def _is_resident(op: Op, v: Value) -> bool:
    """Weights, scales, biases, norm weights, tables and caches (not the activation inputs)."""
    index = op.operands.index(v)
    if op.opcode is Opcode.MATMUL:
        return index >= 1
    if op.opcode in (Opcode.EMBED, Opcode.RMSNORM):
        return index == 1
    if op.opcode is Opcode.ATTENTION:
        return index in (3, 4)
    if op.opcode in (Opcode.ADD, Opcode.MUL):
        return len(v.type.shape) == 1  # a bias or scale vector
    return False


class _Walk:
    """Layout propagation and cost accumulation over one unit's ops."""

    def __init__(self, tp: int, rows_scale: float, resident: set[str], last_use: dict[str, int]):
        self.tp, self.rows_scale, self.resident, self.last_use = tp, rows_scale, resident, last_use
        self.layout: dict[str, Layout] = {}
        self.weights: dict[str, int] = {}
        self.state: dict[str, int] = {}
        self.work: list[OpWork] = []
        self.collectives: list[Collective] = []
        self.live: dict[str, int] = {}
        self.peak = 0

    def result(self) -> ShardCost:
        return ShardCost(self.tp, sum(self.weights.values()), sum(self.state.values()), self.peak,
                         tuple(self.work), tuple(self.collectives))

    def visit(self, index: int, op: Op) -> None:
        ins = [self._operand(op, i, v) for i, v in enumerate(op.operands)]
        out = _RULES.get(op.opcode, _rule_same)(self, op, ins)
        for r in op.results:
            self.layout[r.name] = out
        self._account(op, out)
        self._track_live(index, op)

    def _operand(self, op: Op, index: int, v: Value) -> Layout:
        if v.name in self.resident:
            return self._resident_layout(op, index, v)
        layout = self.layout.get(v.name, Layout.REPL)  # unit inputs arrive whole
        if layout is Layout.PARTIAL:
            self._collective("allreduce", v)
            self.layout[v.name] = Layout.REPL
            return Layout.REPL
        return layout

    def _resident_layout(self, op: Op, index: int, v: Value) -> Layout:
        a = op.attr
        split = op.opcode is Opcode.EMBED or op.opcode is Opcode.ATTENTION
        if op.opcode is Opcode.MATMUL:
            split = a.get("split") == "col" or (a.get("split") == "row" and index == 1)
        elif op.opcode in (Opcode.ADD, Opcode.MUL):
            split = self.layout.get(op.operands[0].name) is Layout.SHARD
        store = self.state if op.opcode is Opcode.ATTENTION else self.weights
        store[v.name] = self._share(v.type.nbytes, split)
        return Layout.SHARD if split else Layout.REPL

    def _share(self, nbytes: int, split: bool) -> int:
        return math.ceil(nbytes / self.tp) if split else nbytes

    def _act_bytes(self, v: Value) -> int:
        """Per-chip bytes of an activation, in its current layout."""
        return self._share(math.ceil(v.type.nbytes * self.rows_scale), self.layout.get(v.name) is Layout.SHARD)

    def _collective(self, kind: str, v: Value) -> None:
        if self.tp > 1:
            self.collectives.append(Collective(kind, math.ceil(v.type.nbytes * self.rows_scale), self.tp))

    def _gather(self, v: Value, layout: Layout) -> Layout:
        if layout is Layout.SHARD:
            self._collective("allgather", v)
            self.layout[v.name] = Layout.REPL
        return Layout.REPL

    def _account(self, op: Op, out: Layout) -> None:
        resident = self.weights | self.state
        if op.opcode is Opcode.EMBED:
            resident = {}  # a lookup reads one row per token, which the result's size counts
        read = sum(resident.get(v.name, 0) if v.name in self.resident else self._act_bytes(v) for v in op.operands)
        read += sum(self._act_bytes(r) for r in op.results)
        parallel = out is not Layout.REPL or op.opcode is Opcode.ATTENTION
        flops = op.cost.flops * self.rows_scale / (self.tp if parallel else 1)
        self.work.append(OpWork(op.opcode, read, math.ceil(flops)))

    def _track_live(self, index: int, op: Op) -> None:
        for v in op.operands:  # inputs from earlier units are live from the start
            if v.name not in self.resident and v.name not in self.layout:
                self.layout[v.name] = Layout.REPL
                self.live[v.name] = self._act_bytes(v)
        for r in op.results:
            self.live[r.name] = self._act_bytes(r)
        self.peak = max(self.peak, sum(self.live.values()))
        for v in op.operands:
            if self.last_use.get(v.name) == index:
                self.live.pop(v.name, None)


def _rule_same(walk: _Walk, op: Op, ins: list[Layout]) -> Layout:
    return Layout.SHARD if Layout.SHARD in ins else Layout.REPL


def _rule_matmul(walk: _Walk, op: Op, ins: list[Layout]) -> Layout:
    split = op.attr.get("split")
    if split == "row":
        return Layout.PARTIAL if walk.tp > 1 else Layout.REPL
    walk._gather(op.operands[0], ins[0])
    return Layout.SHARD if split == "col" and walk.tp > 1 else Layout.REPL


def _rule_embed(walk: _Walk, op: Op, ins: list[Layout]) -> Layout:
    # Vocab-parallel table: the owner of each row contributes it, the rest zeros.
    return Layout.PARTIAL if walk.tp > 1 else Layout.REPL


def _rule_attention(walk: _Walk, op: Op, ins: list[Layout]) -> Layout:
    a = op.attr
    if walk.tp > a["kv_heads"]:
        # kv heads shared by t/kv chips: each holds a slice of the context and the
        # slices' partial softmax results (max, sum, weighted values) are combined.
        walk.collectives.append(Collective("allgather", op.operands[1].type.nbytes * 2, walk.tp // a["kv_heads"]))
        combine = op.results[0].type.nbytes * 2 + op.results[0].type.shape[0] * a["heads"] * 8
        walk.collectives.append(Collective("allreduce", math.ceil(combine * walk.rows_scale / walk.tp),
                                           walk.tp // a["kv_heads"]))
    return Layout.SHARD if walk.tp > 1 else Layout.REPL


def _rule_argmax(walk: _Walk, op: Op, ins: list[Layout]) -> Layout:
    if ins[0] is Layout.SHARD:  # each chip offers its best (value, index); one small reduction
        walk.collectives.append(Collective("allreduce", op.results[0].type.numel * 8, walk.tp))
    return Layout.REPL


def _rule_norm(walk: _Walk, op: Op, ins: list[Layout]) -> Layout:
    walk._gather(op.operands[0], ins[0])
    return Layout.REPL


_RULES = {
    Opcode.MATMUL: _rule_matmul,
    Opcode.EMBED: _rule_embed,
    Opcode.ATTENTION: _rule_attention,
    Opcode.ARGMAX: _rule_argmax,
    Opcode.RMSNORM: _rule_norm,
}
assert set(_RULES) | _ELEMENTWISE <= set(OPDEFS)
