"""Float weights for a graph's params: seeded random ones, shared by the compiler (the SRAM image)
and the interpreter's reference check, which regenerates them from the build's record of their source.

Pure numpy, so targets/ can regenerate exactly what compiler/ laid out without importing it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ir.graph import Graph, Value


def random_weights(graph: Graph | Iterable[Value], seed: int = 0) -> dict[str, np.ndarray]:
    """f16-representable weights with unit-scale activations: norms and biases near 1,
    matrices ~ N(0, 1/fan_in), the embedding table ~ N(0, 1). Drawn param by param in order."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in graph.params if isinstance(graph, Graph) else graph:
        if len(p.type.shape) == 1:
            w = 1 + 0.1 * rng.standard_normal(p.type.shape)
        else:  # [in, out] or, for stacked experts, [E, in, out]
            scale = 1 if p.name.startswith("embed") else 1 / math.sqrt(p.type.shape[-2])
            w = rng.standard_normal(p.type.shape) * scale
        out[p.name] = w.astype(np.float16)
    return out


def float_params(graph: Graph) -> list[Value]:
    """The params a model had before weight quantization: a quantized graph keeps every param in
    order (codes in the weight's shape) and adds `<weight>.scale` (and NVFP4's `<weight>.tensor_scale`)
    right after each quantized one."""
    names = {p.name for p in graph.params}

    def added(name: str) -> bool:
        return any(name.endswith(s) and name[: -len(s)] in names for s in (".scale", ".tensor_scale"))
    return [p for p in graph.params if not added(p.name)]
