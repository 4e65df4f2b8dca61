"""ExpertPlacement: the user's --experts on every experts op, so each stage's split is the one asked for."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ir.errors import ConfigError
from ir.graph import Graph, Op
from ir.ops import Opcode


@dataclass(frozen=True, slots=True)
class ExpertPlacement:
    """Set `placement` ("parallel", "sliced" or a number of expert groups) on every experts op:
    passes.shard.expert_splits then offers a stage only that kind of split, and the partitioner only the
    chip counts that have one. "auto" leaves the graph unchanged (expert_split's static timing rule)."""

    choice: str = "auto"

    def __call__(self, graph: Graph) -> Graph:
        if self.choice == "auto":
            return graph
        if not any(op.opcode is Opcode.EXPERTS for op in graph.ops):
            raise ConfigError(f"--experts {self.choice}: {graph.name} has no experts to place")
        return replace(graph, ops=tuple(self._placed(op) if op.opcode is Opcode.EXPERTS else op for op in graph.ops))

    def _placed(self, op: Op) -> Op:
        experts = op.operands[3].type.shape[0]
        if self.choice.isdigit() and experts % int(self.choice):
            raise ConfigError(f"--experts {self.choice}: {op.scope}'s {experts} experts do not make {self.choice} "
                              "equal groups")
        return replace(op, attrs=tuple(sorted({**op.attr, "placement": self.choice}.items())))
