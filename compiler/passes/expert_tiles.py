"""ExpertTiles: tell each experts op the target's matrix-unit tile, so its placement counts whole tiles."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ir.graph import Graph
from ir.ops import Opcode


@dataclass(frozen=True, slots=True)
class ExpertTiles:
    """Set `tile` (the matrix unit's dim x dim tile, targets.spec.ChipSpec.matrix_dim) on every experts op.

    passes.shard.expert_split weighs each placement in whole tiles: an expert's feature slice narrower
    than a tile installs and streams the whole tile (DeepSeek-V3's 2,048 features over 64 chips are 32
    a chip: a tenth of a 320-wide tile), so the split the MXM favours is not the one that splits finest.
    `dim` 1 (a target without tiles, or none given) leaves the graph unchanged."""

    dim: int = 1

    def __call__(self, graph: Graph) -> Graph:
        if self.dim <= 1:
            return graph
        ops = tuple(replace(op, attrs=tuple(sorted({**op.attr, "tile": self.dim}.items())))
                    if op.opcode is Opcode.EXPERTS else op for op in graph.ops)
        return replace(graph, ops=ops)
