"""Graph passes, and the Pipeline that runs them in order and verifies the IR after each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ir.errors import VerifyError
from ir.graph import Graph
from ir.verify import verify_graph

Pass = Callable[[Graph], Graph]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Runs `passes` in order. Unless `verify` is off, the input and every pass's output
    are checked by `ir.verify.verify_graph`; a failure names the pass that broke the IR.
    `after_each(pass, graph)` sees each result (the hook behind --print-after-all)."""

    passes: tuple[Pass, ...]
    verify: bool = True
    after_each: Callable[[Pass, Graph], None] | None = None

    def __call__(self, graph: Graph) -> Graph:
        self._check(graph, "the pipeline's input")
        for p in self.passes:
            graph = p(graph)
            self._check(graph, f"after {p!r}")
            if self.after_each is not None:
                self.after_each(p, graph)
        return graph

    def _check(self, graph: Graph, where: str) -> None:
        if not self.verify:
            return
        try:
            verify_graph(graph)
        except VerifyError as e:
            raise VerifyError(f"{where}: {e}") from e
