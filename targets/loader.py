"""Load a target by preset name or from a user's TOML file, with errors naming the file, line and field."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from ir.errors import ConfigError
from targets.b200 import B200
from targets.h100 import H100
from targets.lpu import LPU
from targets.lpu3 import LPU3
from targets.lpu_mini import LPU_MINI
from targets.rubin import RUBIN
from targets.spec import (
    INSTALL_KEYS,
    ISAS,
    LOCAL_FABRICS,
    MEMORY_KINDS,
    OPTIONAL_PRECISIONS,
    PRECISIONS,
    TIER_NAMES,
    TIER_SHARING,
    TOPOLOGIES,
    ChipSpec,
    LinkSpec,
    MemoryTier,
    SystemSpec,
)
from targets.units import FREQUENCY, OPS, PER_CYCLE, PER_WEIGHT, RATE, SIZE, TIME, Kind, parse_quantity
from targets.wse3 import WSE3

PRESETS: dict[str, SystemSpec] = {
    "lpu": LPU, "lpu-mini": LPU_MINI, "lpu3": LPU3, "h100": H100, "b200": B200, "rubin": RUBIN, "wse3": WSE3}


def list_targets() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(PRESETS)


def load_target(name_or_path: str) -> SystemSpec:
    """A preset by name (`lpu`, `lpu-mini`, `lpu3`, `h100`, `b200`, `rubin`, `wse3`) or a system read from a
    TOML target file.

    A file mirrors SystemSpec: top-level system fields, `[chip]` (with `[chip.peak_ops_per_s]`),
    `[local_link]` and `[global_link]`; a wafer is the same with `topology = "mesh"`, its chip one
    core. `base = "lpu"` (a preset, or a .toml path relative to the file) supplies every field the file
    leaves out; without a base every field is required except the names, which default to the
    file's stem. A mesh file that sets `mesh_rows`/`mesh_cols` but not `chips_per_node` gets
    chips_per_node = mesh_rows x mesh_cols and keeps its base's number of wafers.
    """
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        raise ConfigError(
            f"unknown target '{name_or_path}' (presets: {', '.join(list_targets())}; "
            f"or the path of a .toml file){_hint(name_or_path, PRESETS)}"
        )
    return _load_file(path, seen=())


# ---------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class Leaf:
    """How to read one field: a parser of (value, where) and the smallest value allowed."""

    parse: Callable[[Any, str], Any]
    minimum: int | None = None


@dataclass(frozen=True, slots=True)
class _Quantity:
    """A Leaf parser for a quantity with a unit; it keeps its Kind so a spec can be written back."""

    kind: Kind

    def __call__(self, value: Any, where: str) -> float | int:
        return parse_quantity(value, self.kind, where)


def _quantity(kind: Kind) -> Callable[[Any, str], Any]:
    return _Quantity(kind)


def quantity_kind(leaf: Leaf) -> Kind | None:
    """The Kind of a quantity field, None for counts, names and choices."""
    return leaf.parse.kind if isinstance(leaf.parse, _Quantity) else None


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected a whole number like 8, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any, str], str]:
    def parse(value: Any, where: str) -> str:
        if value not in options:
            raise ConfigError(
                f"{where}: must be one of {', '.join(options)}, got {value!r}{_hint(str(value), options)}"
            )
        return value

    return parse


POSITIVE, NON_NEGATIVE = 1, 0
_LINK = {"bw_bytes_per_s": Leaf(_quantity(RATE), POSITIVE), "latency_s": Leaf(_quantity(TIME), NON_NEGATIVE)}
_TIER = {"capacity_bytes": Leaf(_quantity(SIZE), POSITIVE), "bw_bytes_per_s": Leaf(_quantity(RATE), POSITIVE),
         "latency_s": Leaf(_quantity(TIME), NON_NEGATIVE), "per": Leaf(_choice(TIER_SHARING))}
_CHIP = {
    "name": Leaf(_text),
    "memory_kind": Leaf(_choice(MEMORY_KINDS)),
    "sram_bytes": Leaf(_quantity(SIZE), POSITIVE),
    "mem_bytes_per_cycle": Leaf(_quantity(PER_CYCLE), POSITIVE),
    # Alternative spelling for memory on its own clock (HBM): converted at the chip's clock.
    "mem_bw_bytes_per_s": Leaf(_quantity(RATE), POSITIVE),
    "clock_hz": Leaf(_quantity(FREQUENCY), POSITIVE),
    "peak_ops_per_s": {p: Leaf(_quantity(OPS), POSITIVE) for p in PRECISIONS + OPTIONAL_PRECISIONS},
    "vector_bytes": Leaf(_quantity(SIZE), POSITIVE),
    "matrix_dim": Leaf(_count, POSITIVE),
    "matrix_planes": Leaf(_count, POSITIVE),
    "program_reserve_bytes": Leaf(_quantity(SIZE), NON_NEGATIVE),
    "op_latency_cycles": Leaf(_count, NON_NEGATIVE),
    "stream_bytes_per_cycle": Leaf(_quantity(PER_CYCLE), POSITIVE),
    "stream_port_bytes_per_cycle": Leaf(_quantity(PER_CYCLE), POSITIVE),
    "mxm_install_bytes_per_cycle": Leaf(_quantity(PER_CYCLE), POSITIVE),
    "install_bytes_per_weight": {p: Leaf(_quantity(PER_WEIGHT), POSITIVE) for p in INSTALL_KEYS},
    "isa": Leaf(_choice(ISAS)),
    "vector_alus": Leaf(_count, POSITIVE),
    "streams": Leaf(_count, POSITIVE),
}
SCHEMA: dict[str, Any] = {
    "base": Leaf(_text),
    "name": Leaf(_text),
    "chip": _CHIP,
    "chips_per_node": Leaf(_count, POSITIVE),
    "nodes_per_group": Leaf(_count, POSITIVE),
    "max_chips": Leaf(_count, POSITIVE),
    "c2c_links_per_chip": Leaf(_count, POSITIVE),
    "local_links_per_chip": Leaf(_count, POSITIVE),
    "global_links_per_chip": Leaf(_count, NON_NEGATIVE),
    "local_link": _LINK,
    "global_link": _LINK,
    "topology": Leaf(_choice(TOPOLOGIES)),
    "sync_cycles": Leaf(_count, NON_NEGATIVE),
    "mesh_rows": Leaf(_count, NON_NEGATIVE),
    "mesh_cols": Leaf(_count, NON_NEGATIVE),
    "pool_link": _LINK,  # optional: one chip's link to another serving pool (default: global_link)
    "step_cycles": Leaf(_count, NON_NEGATIVE),
    # optional: memory below SRAM for KV blocks (host DRAM, flash), per node or per chip
    **dict.fromkeys(TIER_NAMES, _TIER),
    "local_fabric": Leaf(_choice(LOCAL_FABRICS)),  # optional: "direct" (default) or "switch"
}
_OPTIONAL = {"base", "name", "chip.name", "chip.mem_bw_bytes_per_s", "mesh_rows", "mesh_cols", "step_cycles",
             "local_fabric",
             "pool_link.bw_bytes_per_s", "pool_link.latency_s"} | {
    f"{tier}.{key}" for tier in TIER_NAMES for key in _TIER} | {
    f"chip.{table}.{key}" for table, keys in (("peak_ops_per_s", OPTIONAL_PRECISIONS),
                                              ("install_bytes_per_weight", INSTALL_KEYS[len(PRECISIONS):]))
    for key in keys}
_MEM_SPELLINGS = ("mem_bytes_per_cycle", "mem_bw_bytes_per_s")


def _leaf_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, sub in schema.items():
        paths += _leaf_paths(sub, f"{prefix}{key}.") if isinstance(sub, dict) else [prefix + key]
    return paths


# ---------------------------------------------------------------- reading a file


@dataclass(frozen=True, slots=True)
class _Source:
    """A target file being read: its path and text, to name lines in errors."""

    path: Path
    text: str

    def at(self, dotted: str) -> str:
        """'file:line: field' for errors (the line only when the key can be found)."""
        line = _line_of(self.text, dotted)
        return f"{self.path}:{line}: {dotted}" if line else f"{self.path}: {dotted}"


def loads_target(text: str, path: str | Path) -> SystemSpec:
    """A system from the text of a target file; `path` names it in errors (and its folder anchors
    a relative `base`)."""
    return _load_source(_Source(Path(path), text), seen=())


def _load_file(path: Path, seen: tuple[Path, ...]) -> SystemSpec:
    return _load_source(_Source(path, _read(path)), seen)


def _load_source(source: _Source, seen: tuple[Path, ...]) -> SystemSpec:
    path = source.path
    data = _parse_toml(source)
    base = data.get("base")
    base_spec = _base_spec(_text(base, source.at("base")), source, seen) if base is not None else None
    values = _parse_table(data, SCHEMA, "", source)
    values.pop("base", None)
    tree = _without_name(_as_tree(base_spec)) if base_spec is not None else {}
    _memory_spelling(tree, values, source)
    _mesh_geometry(tree, values)
    _overlay(tree, values)
    _fill_names(tree, path)
    _check_complete(tree, source)
    return _build(tree, source)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such target file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read target file: {err}") from None


def _parse_toml(source: _Source) -> dict[str, Any]:
    try:
        return tomllib.loads(source.text)
    except tomllib.TOMLDecodeError as err:
        match = re.search(r"\(at line (\d+), column \d+\)", str(err))
        where = f"{source.path}:{match.group(1)}" if match else str(source.path)
        raise ConfigError(f"{where}: invalid TOML: {err}") from None


def _parse_table(data: dict[str, Any], schema: dict[str, Any], prefix: str, source: _Source,
                 root: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = prefix + key
        if key not in schema:
            raise ConfigError(f"{source.at(dotted)}: unknown field{_field_hint(dotted, root or schema)}")
        rule = schema[key]
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source.at(dotted)}: expected a table ([{dotted}]), got {value!r}")
            out[key] = _parse_table(value, rule, dotted + ".", source, root or schema)
        else:
            out[key] = _parse_leaf(rule, value, source.at(dotted))
    return out


def _parse_leaf(rule: Leaf, value: Any, where: str) -> Any:
    parsed = rule.parse(value, where)
    if rule.minimum == POSITIVE and parsed <= 0:
        raise ConfigError(f"{where}: must be positive, got {value!r}")
    if rule.minimum == NON_NEGATIVE and parsed < 0:
        raise ConfigError(f"{where}: must not be negative, got {value!r}")
    return parsed


def _base_spec(base: str, source: _Source, seen: tuple[Path, ...]) -> SystemSpec:
    """The system a file's `base` names: a preset, or another target file relative to this one."""
    if base in PRESETS:
        return PRESETS[base]
    if not base.endswith(".toml"):
        raise ConfigError(
            f"{source.at('base')}: unknown preset '{base}'{_hint(base, PRESETS)} "
            f"(presets: {', '.join(list_targets())}; or a .toml path)"
        )
    path = (source.path.parent / base).resolve()
    if path in seen or path == source.path.resolve():
        raise ConfigError(f"{source.at('base')}: '{base}' is based on itself")
    return _load_file(path, seen + (source.path.resolve(),))


def _without_name(tree: dict[str, Any]) -> dict[str, Any]:
    # A derived file is a new system: it takes its own name (default: the file stem), not the base's.
    tree.pop("name")
    return tree


def _as_tree(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _as_tree(getattr(value, f.name)) for f in fields(value)}
    return dict(value) if isinstance(value, dict) else value


def _overlay(tree: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            if tree.get(key) is None:  # a table the base leaves out (a tier it has not)
                tree[key] = {}
            _overlay(tree[key], value)
        else:
            tree[key] = value


def _memory_spelling(tree: dict[str, Any], values: dict[str, Any], source: _Source) -> None:
    """A file gives the memory's bandwidth per cycle or per second, not both; either replaces the base's."""
    given = [k for k in _MEM_SPELLINGS if k in values.get("chip", {})]
    if len(given) > 1:
        raise ConfigError(f"{source.at('chip.mem_bw_bytes_per_s')}: give chip.mem_bytes_per_cycle or "
                          "chip.mem_bw_bytes_per_s, not both")
    if given:
        for key in _MEM_SPELLINGS:
            tree.get("chip", {}).pop(key, None)


def _per_cycle_memory(chip: dict[str, Any]) -> dict[str, Any]:
    """The chip's fields with a per-second memory bandwidth stated per cycle of its clock."""
    chip = dict(chip)
    if "mem_bw_bytes_per_s" in chip:
        chip["mem_bytes_per_cycle"] = chip.pop("mem_bw_bytes_per_s") / chip["clock_hz"]
    return chip


def _mesh_geometry(tree: dict[str, Any], values: dict[str, Any]) -> None:
    """A mesh file resizing its wafers keeps chips_per_node and max_chips consistent: a node is
    mesh_rows x mesh_cols devices, and the base's number of wafers stays."""
    resized = {"mesh_rows", "mesh_cols"} & set(values)
    if not resized or "chips_per_node" in values or tree.get("topology", values.get("topology")) != "mesh":
        return
    rows, cols = values.get("mesh_rows", tree.get("mesh_rows", 0)), values.get("mesh_cols", tree.get("mesh_cols", 0))
    wafers = tree["max_chips"] // tree["chips_per_node"] if tree.get("chips_per_node") else 1
    tree["chips_per_node"] = rows * cols
    if "max_chips" not in values:
        tree["max_chips"] = wafers * rows * cols


def _fill_names(tree: dict[str, Any], path: Path) -> None:
    tree.setdefault("name", path.stem)
    tree.setdefault("chip", {}).setdefault("name", tree["name"])


def _check_complete(tree: dict[str, Any], source: _Source) -> None:
    preset = "wse3" if tree.get("topology") == "mesh" else "lpu"
    for dotted in _leaf_paths(SCHEMA):
        node: Any = tree
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if dotted == "chip.mem_bytes_per_cycle" and isinstance(tree.get("chip"), dict) \
                and "mem_bw_bytes_per_s" in tree["chip"]:
            continue
        if node is None and dotted not in _OPTIONAL:
            raise ConfigError(
                f"{source.path}: missing required field '{dotted}' (give it, or set base = \"{preset}\" to inherit "
                "the rest)"
            )


def _build(tree: dict[str, Any], source: _Source) -> SystemSpec:
    try:
        chip = ChipSpec(**_per_cycle_memory(tree["chip"]))
        _pool_link_whole(tree)
        names = ("local_link", "global_link", "pool_link")
        links = {k: LinkSpec(**tree[k]) for k in names if k in tree}
        tiers = {k: _tier(k, tree[k]) for k in TIER_NAMES if tree.get(k) is not None}
        rest = {k: v for k, v in tree.items() if k not in ("chip", *names, *TIER_NAMES)}
        return SystemSpec(chip=chip, **links, **tiers, **rest)
    except ConfigError as err:
        # The spec names the field ("chip.program_reserve_bytes: ..."); add the file and line.
        dotted = str(err).split(":", 1)[0]
        raise ConfigError(f"{source.at(dotted)}:{str(err).split(':', 1)[1]}") from None


def _tier(name: str, fields_: dict[str, Any]) -> MemoryTier:
    """A `[dram]` or `[flash]` table: capacity, bandwidth and latency are required, `per` defaults to node."""
    missing = sorted(set(_TIER) - set(fields_) - {"per"})
    if missing:
        raise ConfigError(f"{name}: {missing[0]} is missing; [{name}] needs capacity_bytes, bw_bytes_per_s and "
                          "latency_s (per = \"node\" or \"chip\" is optional: node)")
    try:
        return MemoryTier(**fields_)
    except ConfigError as err:
        raise ConfigError(f"{name}.{err}") from None


def _pool_link_whole(tree: dict[str, Any]) -> None:
    """`[pool_link]` is optional, but when a file without a base gives it, it gives both fields."""
    given = tree.get("pool_link")
    if given is not None and set(given) != set(_LINK):
        missing = sorted(set(_LINK) - set(given))[0]
        raise ConfigError(f"pool_link: {missing} is missing; [pool_link] needs bw_bytes_per_s and latency_s "
                          "(or leave the table out: the pool link is then global_link)")


# ---------------------------------------------------------------- messages


def _hint(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _field_hint(dotted: str, schema: dict[str, Any]) -> str:
    paths = _leaf_paths(schema)
    close = difflib.get_close_matches(dotted, paths, n=1, cutoff=0.6)
    if not close:  # the right name in the wrong table: `sram_bytes` at top level
        last = dotted.rsplit(".", 1)[-1]
        close = [p for p in paths if difflib.get_close_matches(last, [p.rsplit(".", 1)[-1]], cutoff=0.8)][:1]
    return f"; did you mean '{close[0]}'?" if close else ""


_HEADER = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")


def _line_of(text: str, dotted: str) -> int | None:
    """The 1-based line that sets `dotted` (a table header counts for a table), if it can be found."""
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _clean(header.group(1))
            if table == dotted:
                return number
            continue
        assign = _ASSIGN.match(line)
        if assign and ".".join(filter(None, (table, _clean(assign.group(1))))) == dotted:
            return number
    return None


def _clean(key: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in key.split("."))
