"""The machines: hardware parameters as data, topologies, timing rules, the interpreter."""

from targets.loader import PRESETS, list_targets, load_target
from targets.spec import PRECISIONS, TOPOLOGIES, ChipSpec, LinkSpec, SystemSpec
from targets.topology import Route, build_topology, chip_hops, hops, route
from targets.units import format_size, parse_quantity

__all__ = [
    "PRECISIONS",
    "PRESETS",
    "TOPOLOGIES",
    "ChipSpec",
    "LinkSpec",
    "Route",
    "SystemSpec",
    "build_topology",
    "chip_hops",
    "format_size",
    "hops",
    "list_targets",
    "load_target",
    "parse_quantity",
    "route",
]
