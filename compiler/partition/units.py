"""The units a plan cuts along (embed, each layer, head) and their costs per group size.

Identical layers share one signature, so their shard costs are computed once:
the work grows with distinct layer shapes, not with layer or chip count. Costs are keyed by group:
(chips, split), `split` the layout whose caches are shared by sequence and latent down projections
split by column (passes.shard.splits_kv), costed only at the group sizes where it differs from the
whole layout; a stage is costed in either (Unit.group).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from compiler.frontend.options import CompileOptions
from compiler.partition.shard_cost import ShardCost, Staging, align, chip_cost, is_resident, shard_cost
from compiler.passes.shard import ShardTensorParallel, allowed_tp, lowers_split, splits_kv
from ir.graph import Graph, Op, sorted_attrs
from ir.ops import OPDEFS, Opcode

Group = tuple[int, bool]  # (chips, split layout)


@dataclass(frozen=True, slots=True)
class Unit:
    """One scope, with its decode and largest-prefill-chunk costs for every allowed group (chips,
    split), and the activation bytes of the smallest prefill chunk (the space a plan reserves)."""

    scope: str
    kind: int  # index of its distinct signature
    decode: dict[Group, ShardCost]
    prefill: dict[Group, ShardCost]
    prefill_min_act: dict[Group, int]

    @property
    def sizes(self) -> list[int]:
        return sorted({t for t, _ in self.decode})

    def group(self, tp: int, split: bool) -> Group:
        """The costs' key of this unit in a stage of `tp` chips in the split layout or not: the whole one
        where the unit has no split layout at that size (the two are the same)."""
        return tp, split and (tp, True) in self.decode

    def splits(self, tp: int) -> bool:
        """Whether the unit's split layout on `tp` chips differs from its whole one."""
        return (tp, True) in self.decode


def signature(ops: list[Op]) -> tuple:
    """Everything that decides a unit's cost, without its names."""
    return tuple((op.opcode, tuple(v.type for v in op.operands), op.attrs) for op in ops)


def unit_kinds(graph: Graph) -> tuple[list[str], list[int], list[list[Op]]]:
    """The graph's scopes, each one's kind (the index of its distinct signature), and each kind's ops
    (its first unit's): what a backend costs once per kind."""
    seen: dict[tuple, int] = {}
    scopes, kinds, ops = graph.scopes(), [], []
    for scope in scopes:
        unit = list(graph.ops_in(scope))
        kinds.append(seen.setdefault(signature(unit), len(seen)))
        if kinds[-1] == len(ops):
            ops.append(unit)
    return scopes, kinds, ops


def build_units(decode: Graph, prefill: Graph, options: CompileOptions, limit: int, node: int,
                alignment: int, tile: int, panel: int = 0, staging: Staging | None = None) -> list[Unit]:
    """Units in model order. `limit` caps the group sizes considered; a group wider than a
    node of `node` chips is whole nodes (its collectives pair chips of equal local rank
    across nodes, so every node needs every local rank). `staging`: the target's rule for the collectives'
    staging buffers (shard_cost.chip_cost)."""
    costs: dict[int, tuple[dict[Group, ShardCost], dict[Group, ShardCost], dict[Group, int]]] = {}
    rows = options.chunk_rows / (options.batch * options.prompt)
    least = options.min_chunk_rows / (options.batch * options.prompt)
    scopes, kinds, by_kind = unit_kinds(decode)
    for scope, kind in zip(scopes, kinds, strict=True):
        if kind not in costs:
            ops, pre = by_kind[kind], list(prefill.ops_in(scope))
            sizes = [t for t in allowed_tp(ops, limit) if t <= node or t % node == 0]
            groups = [(t, split) for t in sizes
                      for split in ((False, True) if splits_kv(ops, t) and lowers_split(ops, t, node) else (False,))]
            # one sharding for both chunk sizes
            chip_pre = {g: ShardTensorParallel(*g)(pre) for g in groups}
            costs[kind] = ({g: shard_cost(ops, g[0], 1.0, alignment, g[1], tile, panel, staging) for g in groups},
                           {g: chip_cost(chip_pre[g], g[0], rows, alignment, tile, panel, staging) for g in groups},
                           {g: chip_cost(chip_pre[g], g[0], least, alignment, tile, panel, staging).act_bytes
                            for g in groups})
    return [Unit(scope, kind, *costs[kind]) for scope, kind in zip(scopes, kinds, strict=True)]


def repeated_params(graph: Graph, alignment: int) -> int:
    """Bytes a sum of the units' resident bytes counts more than once: a param ops of several units read (a
    tied table, the embedding's and the head's), once per reader past the first, as one chip holds it (each
    buffer from an `alignment`-byte boundary). A capacity bound subtracts them: one copy must be resident."""
    params = {p.name: p.type.nbytes for p in graph.params}
    readers: dict[str, set[str]] = {}
    for op in graph.ops:
        for i, v in enumerate(op.operands):
            if v.name in params and is_resident(op, i):
                readers.setdefault(v.name, set()).add(op.scope)
    return sum((len(scopes) - 1) * align(params[name], alignment) for name, scopes in readers.items())


def prefill_costs(prefill: Graph, units: list[Unit], needed: set[tuple[int, int, bool]], rows_scale: float,
                  alignment: int, reach: int | None = None, sharded: dict | None = None, tile: int = 0,
                  panel: int = 0, staging: Staging | None = None) -> dict[tuple[int, int, bool], ShardCost]:
    """Prefill costs by (unit kind, group size, split) for the triples a plan uses, at a chunk of
    `rows_scale` of the prompt whose attention reads `reach` cache positions (None: all). `sharded`
    keeps each (kind, group size, split, reach)'s per-chip ops for the next chunk size."""
    first = {}
    for u in units:
        first.setdefault(u.kind, u.scope)
    sharded = {} if sharded is None else sharded
    for kind, t, split in sorted(needed):
        if (kind, t, split, reach) not in sharded:
            ops = at_reach(list(prefill.ops_in(first[kind])), reach)
            sharded[kind, t, split, reach] = ShardTensorParallel(t, split)(ops)
    return {(kind, t, split): chip_cost(sharded[kind, t, split, reach], t, rows_scale, alignment, tile, panel, staging)
            for kind, t, split in sorted(needed)}


def at_reach(ops: list[Op], reach: int | None) -> list[Op]:
    """`ops` with every attention reading its cache only below `reach` (None, or past the cache: all)."""
    if reach is None:
        return ops
    return [replace(op, attrs=sorted_attrs(op.attr | {"reach": reach}))
            if op.opcode in _ATTENTION and reach < op.operands[OPDEFS[op.opcode].writes[0]].type.shape[1] else op
            for op in ops]


def with_reach(graph: Graph, reach: int | None) -> Graph:
    """The graph with its attention reading only below `reach` (what build_graph(..., reach=) builds)."""
    return replace(graph, ops=tuple(at_reach(list(graph.ops), reach)))


_ATTENTION = (Opcode.ATTENTION, Opcode.MLA_ATTENTION)


def boundary_bytes(graph: Graph) -> list[int]:
    """Bytes that cross each cut between consecutive units (index k: before unit k)."""
    scopes = graph.scopes()
    order = {s: i for i, s in enumerate(scopes)}
    born = {r.name: order[op.scope] for op in graph.ops for r in op.results}
    crossing = [0] * (len(scopes) + 1)
    seen: set[tuple[str, int]] = set()
    for op in graph.ops:
        for v in op.operands:
            if v.name in born:
                for k in range(born[v.name] + 1, order[op.scope] + 1):
                    if (v.name, k) not in seen:
                        seen.add((v.name, k))
                        crossing[k] += v.type.nbytes
    return crossing
