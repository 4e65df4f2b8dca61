"""Refusing a config no shipped target (or the target planned for) could hold, before its graphs are built.

A config with 10 million layers would otherwise spend minutes building graphs only to be told it
does not fit, and one too large for the target planned for minutes of partitioning. The first few
layers are built (cheap), and the model's bytes are bounded from below: every layer at least as
small as the smallest of those, weights at the smallest format (int4) and caches at one byte per
element. Above the largest memory any shipped preset reaches (its most chips or wafers, all their
usable memory), or the planned target's, the config is refused with both figures.
"""

from __future__ import annotations

import re

from compiler.frontend.config import ModelConfig
from ir.errors import ConfigError, DoesNotFitError
from ir.graph import Graph
from targets import PRESETS
from targets.spec import SystemSpec

SAMPLE_LAYERS = 8  # a whole period of every shipped family's layer pattern (Jamba's is 8)
WEIGHT_FLOOR_BYTES = 0.5  # int4, the smallest weight format
STATE_FLOOR_BYTES = 1  # an 8-bit cache element
_LAYER = re.compile(r"^layers\.(\d+)\.")


def check_size(config: ModelConfig, sample: Graph, system: SystemSpec | None = None) -> None:
    """`sample` is the decode graph of the config's first layers (all of them if few); against `system`'s
    memory when planning for one (its most chips or wafers), else the largest shipped target's."""
    per_layer: dict[int, float] = {}
    outside = 0.0
    for value, floor in [(p, WEIGHT_FLOOR_BYTES) for p in sample.params] + [(s, STATE_FLOOR_BYTES)
                                                                           for s in sample.state]:
        match = _LAYER.match(value.name)
        if match:
            layer = int(match.group(1))
            per_layer[layer] = per_layer.get(layer, 0.0) + value.type.numel * floor
        else:
            outside += value.type.numel * floor
    smallest = min(per_layer.values(), default=0.0)
    need = outside + config.num_layers * smallest
    name, capacity, how = largest_system() if system is None else _capacity(system.name, system)
    if need > capacity:
        which = "the largest shipped target holds" if system is None else "the target holds"
        error = ConfigError if system is None else DoesNotFitError  # for a target: it does not fit, a plan's answer
        where = config.source if system is None else config.name  # a plan's answer names the model, not a path
        raise error(f"{where}: {config.num_layers:,} layers of at least {_bytes(smallest)} each (int4 "
                          f"weights, 8-bit caches) need at least {_bytes(need)}, more than {which} "
                          f"({name}: {how} = {_bytes(capacity)})")


def largest_system() -> tuple[str, int, str]:
    """(preset, usable bytes, how they add up) of the preset that holds the most."""
    return max((_capacity(name, spec) for name, spec in sorted(PRESETS.items())), key=lambda c: (c[1], c[0]))


def _capacity(name: str, spec: SystemSpec) -> tuple[str, int, str]:
    if spec.is_mesh:
        per = spec.chips_per_node * spec.chip.usable_sram_bytes
        return name, spec.max_nodes * per, f"{spec.max_nodes:,} wafers x {_bytes(per)}"
    per = spec.chip.usable_sram_bytes
    return name, spec.max_chips * per, f"{spec.max_chips:,} chips x {_bytes(per)}"


def _bytes(n: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"
