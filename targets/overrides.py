"""Derived targets: a loaded target with some fields replaced (re-validated whole), and its TOML text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ir.errors import ConfigError
from targets.loader import (
    SCHEMA,
    Leaf,
    _as_tree,
    _build,
    _field_hint,
    _leaf_paths,
    _memory_spelling,
    _overlay,
    _parse_leaf,
    load_target,
)
from targets.spec import SystemSpec

# Fields that name where a target comes from rather than what it is.
_NOT_OVERRIDABLE = ("base",)


def schema_of(spec: SystemSpec) -> dict[str, Any]:
    """The loader's schema for this kind of target (chip system or wafer)."""
    return SCHEMA


def field_paths(spec: SystemSpec) -> list[str]:
    """Every dotted field a target file of this kind can set, e.g. 'chip.sram_bytes'."""
    return [p for p in _leaf_paths(schema_of(spec)) if p not in _NOT_OVERRIDABLE]


def override(spec_or_name: SystemSpec | str, values: dict[str, Any], where: str = "override"
             ) -> SystemSpec:
    """`spec_or_name` (a loaded target, a preset name or a target file) with the dotted fields of
    `values` replaced, each parsed as a target file would parse it ('500 MiB', '14 GB/s').

    The whole target is validated again, so a field that makes another one wrong (an SRAM smaller
    than the program reserve) is refused. Errors are one line, starting with `where`
    (e.g. 'sweep.toml:12: axes.target_fields.chip.sram_bytes').
    """
    spec = load_target(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
    schema = schema_of(spec)
    tree = _as_tree(spec)
    nested: dict[str, Any] = {}
    for dotted, raw in values.items():
        rule = _rule(schema, dotted, spec, where)
        _assign(nested, dotted, _parse_leaf(rule, raw, f"{where}: on {spec.name}"))
    located = _Where(f"{where}: on {spec.name}")
    _memory_spelling(tree, nested, located)  # memory per cycle or per second: the one given replaces the other
    _overlay(tree, nested)
    return _build(tree, located)


def _rule(schema: dict[str, Any], dotted: str, spec: SystemSpec, where: str) -> Leaf:
    node: Any = schema
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if dotted in _NOT_OVERRIDABLE:
        raise ConfigError(f"{where}: '{dotted}' names where a target file comes from; it cannot be overridden")
    if not isinstance(node, Leaf):
        kind = "a wafer target" if spec.is_mesh else "a chip target"
        raise ConfigError(f"{where}: {spec.name} ({kind}) has no field '{dotted}'{_field_hint(dotted, schema)}")
    return node


def _assign(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *tables, last = dotted.split(".")
    for key in tables:
        tree = tree.setdefault(key, {})
    tree[last] = value


@dataclass(frozen=True, slots=True)
class _Where:
    """Stands in for the loader's file source: names the override, not a file line, in errors."""

    prefix: str

    def at(self, dotted: str) -> str:
        return f"{self.prefix}: {dotted}"


# ---------------------------------------------------------------- TOML text


def dump_toml(spec: SystemSpec) -> str:
    """A target file that `load_target` reads back to a spec equal to `spec`: every field,
    quantities with their units (exact: floats in their shortest round-trip spelling)."""
    tree = _as_tree(spec)
    lines = [f"{key} = {_value(key, value, '')}" for key, value in tree.items()
             if not isinstance(value, dict) and value is not None]
    for table, values in tree.items():
        if isinstance(values, dict):
            lines += _table(table, values)
    return "\n".join(lines) + "\n"


def _table(name: str, values: dict[str, Any]) -> list[str]:
    lines = ["", f"[{name}]"]
    lines += [f"{key} = {_value(key, value, name)}" for key, value in values.items() if not isinstance(value, dict)]
    for sub, inner in values.items():
        if isinstance(inner, dict):
            lines += _table(f"{name}.{sub}", inner)
    return lines


def _value(key: str, value: Any, table: str) -> str:
    """A TOML value with the unit the field's name implies (STYLE: units in names)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    for suffix, unit in _TABLE_UNITS:
        if table.endswith(suffix):
            return f'"{value!r} {unit}"'
    for suffix, unit in _UNITS:
        if key.endswith(suffix):
            return f'"{value!r} {unit}"'
    return repr(value)


# Tables of one quantity per precision.
_TABLE_UNITS = (("peak_ops_per_s", "OPS"), ("_bytes_per_weight", "B"))
# Longest suffix first: `_bytes_per_s` is a rate, not a size or a time.
_UNITS = (("_bytes_per_s", "B/s"), ("_bytes_per_cycle", "B/cycle"), ("_bytes", "B"), ("_hz", "Hz"), ("_s", "s"))
