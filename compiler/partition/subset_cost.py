"""What a layer costs on a stage whose attention runs on its first a chips (passes.subset), as it is lowered:
one piece after another (codegen.phase._subset_pieces), each on its own block of ranks, so the stage's time
is every part's in turn; a chip holds the parts its ranks run (the attention chips the attention's, the others
the zero sum's and the extra features', at the same addresses), so the fullest chip is the fuller of the two
blocks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from compiler.partition.shard_cost import ShardCost, Staging, align, chip_cost
from compiler.passes.shard import allowed_tp
from compiler.passes.subset import Subset, attention_split, shard_subset
from ir.errors import VerifyError
from ir.graph import Op, Value


@dataclass(frozen=True, slots=True)
class SubsetCost:
    """One layer's parts on their chips (passes.subset.Subset): the attention's (on a), the zero partial sum's and
    the extra features' (on the t - a others; the extra None when the MLP is even), the all-reduce's, body's and
    tail's (on t; the tail None when even); a unit whose attention is all of it has no body, one without
    attention only a body (passes.subset)."""

    head: ShardCost | None
    zeros: ShardCost | None
    mix: ShardCost | None
    body: ShardCost | None
    extra: ShardCost | None
    tail: ShardCost | None
    ports: int = 0  # the values one part leaves another (each its own buffer, live beside any part's activations)

    @property
    def parts(self) -> list[ShardCost]:
        """In the order they run."""
        return [c for c in (self.head, self.zeros, self.mix, self.body, self.extra, self.tail) if c is not None]

    def held(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(weights, caches) an attention chip holds, and an other chip."""
        common = [self.mix, self.body, self.tail]
        return tuple((sum(c.weight_bytes for c in cs if c), sum(c.state_bytes for c in cs if c))
                     for cs in ([self.head, *common], [self.zeros, *common, self.extra]))

    @property
    def act_bytes(self) -> int:
        return max(c.act_bytes for c in self.parts) + self.ports


def subset_cost(ops: Sequence[Op], tp: int, attention_tp: int, share: int | None, rows_scale: float,
                alignment: int, split: bool, tile: int, panel: int, staging: Staging | None) -> SubsetCost:
    """A layer's SubsetCost at `rows_scale` of its graph's rows. Raises VerifyError where the layer has no
    such parts or its attention does not split over `attention_tp` chips (passes.shard.allowed_tp)."""
    end = attention_split(ops)
    if end is not None and attention_tp not in allowed_tp(list(ops[:end]), attention_tp):
        raise VerifyError(f"{ops[0].scope}: {attention_tp} chips do not split its attention")
    sub = shard_subset(ops, tp, attention_tp, split=split, share=share)
    groups = {"head": attention_tp, "zeros": tp - attention_tp, "extra": tp - attention_tp}
    costs = (chip_cost(getattr(sub, part), groups.get(part, tp), rows_scale, alignment, tile, panel, staging)
             if getattr(sub, part) else None for part in sub.parts)
    return SubsetCost(*costs, ports=sum(align(math.ceil(v.type.nbytes * rows_scale), alignment) for v in _ports(sub)))


def _ports(sub: Subset) -> list[Value]:
    """The values one of the layer's parts makes and another reads (codegen.phase._subset_pieces' ports)."""
    made = {r.name: (part, r) for part in sub.parts for op in getattr(sub, part) for r in op.results}
    read = {(v.name, part) for part in sub.parts for op in getattr(sub, part) for v in op.operands if v.name in made}
    return list({name: made[name][1] for name, part in read if made[name][0] != part}.values())
