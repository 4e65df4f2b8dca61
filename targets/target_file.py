"""A target written out in full as a TOML file that `loads_target` reads back to an equal spec.

Walks the loader's SCHEMA beside the spec's fields, so a field added to both
is written with no change here. Quantities are written in base units with repr() of the number
("56000000000000.0 B/s", "2.4e-07 s"), so every float comes back bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from typing import Any

from targets.loader import SCHEMA, Leaf, quantity_kind
from targets.spec import SystemSpec
from targets.units import format_quantity

HEADER = "# Written by sramflow: the build's target, every field in base units.\n"


def dumps_target(spec: SystemSpec) -> str:
    """The TOML text of `spec`, every field given (no `base`)."""
    schema = SCHEMA
    lines = [HEADER.rstrip("\n")]
    _table(_tree(spec), schema, "", lines)
    return "\n".join(lines) + "\n"


def _tree(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _tree(getattr(value, f.name)) for f in fields(value)}
    return dict(value) if isinstance(value, dict) else value


def _table(tree: dict[str, Any], schema: dict[str, Any], prefix: str, lines: list[str]) -> None:
    """Leaves first (TOML puts a table's keys before its sub-tables), then each sub-table."""
    unknown = sorted(set(tree) - set(schema))
    if unknown:  # a spec field the loader cannot read: writing it would lose it
        raise ValueError(f"target field '{prefix}{unknown[0]}' has no entry in the loader's schema")
    for key, rule in schema.items():
        if isinstance(rule, Leaf) and key in tree:
            lines.append(f"{key} = {_value(rule, tree[key])}")
    for key, rule in schema.items():
        if isinstance(rule, dict) and tree.get(key) is not None:
            lines.append(f"\n[{prefix}{key}]")
            _table(tree[key], rule, f"{prefix}{key}.", lines)


def _value(rule: Leaf, value: Any) -> str:
    kind = quantity_kind(rule)
    if kind is not None:
        return json.dumps(format_quantity(value, kind))
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"cannot write {value!r} as a target count")
    return str(value)
