"""Reading a sweep spec (TOML): its axes and what to run per point, every key validated with file:line: field."""

from __future__ import annotations

import difflib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from compiler.frontend import load_model_config
from compiler.frontend.config import PRESETS_DIR
from compiler.frontend.options import CompileOptions
from compiler.planner import is_graph_file, read_graph_file
from ir.errors import ConfigError
from targets.loader import PRESETS, _line_of, list_targets, load_target
from targets.overrides import override
from targets.spec import SystemSpec

RUN_KINDS = ("plan", "compile+run")
SWEEP_KEYS = ("run", "tokens")
FIELDS_TABLE = "target_fields"
# Option axes in CompileOptions' field order: the order points vary in (after model, target, target fields).
OPTION_AXES = tuple(f.name for f in fields(CompileOptions))
_DEFAULTS = CompileOptions()
_RANGE_KEYS = ("from", "to", "times", "step")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model as the spec names it (`label`), its name, and its file's text and suffix: a config
    (`.json`) or a graph IR file (`.ir`, planned as `sramflow plan FILE.ir` plans it)."""

    label: str
    name: str
    text: str
    suffix: str = ".json"

    @property
    def contents(self) -> dict | str:
        """What the model is, whatever its file's spacing: the parsed config, or the IR text."""
        return json.loads(self.text) if self.suffix == ".json" else self.text


@dataclass(frozen=True, slots=True)
class TargetRef:
    """A target as the spec names it (`label`: a preset or the path as written), the loaded system,
    and the `name` tables and plots show (the system's name, or the label when two share a name)."""

    label: str
    system: SystemSpec
    name: str = ""


@dataclass(frozen=True, slots=True)
class Axis:
    """One axis of the sweep: an option or a target field, its values in the spec's order, where it was set."""

    name: str
    values: tuple[Any, ...]
    where: str


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """A validated sweep spec. Points are the cross product of models x targets x target-field axes
    (in the spec's order) x option axes (in OPTION_AXES order), the last axis varying fastest."""

    path: Path
    run: str
    tokens: int
    models: tuple[ModelRef, ...]
    targets: tuple[TargetRef, ...]
    target_fields: tuple[Axis, ...]
    options: tuple[Axis, ...]


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec; a mistake is a ConfigError naming the file, line and field."""
    source = _Source(Path(path), _read(Path(path)))
    data = _parse_toml(source)
    _known_keys(data, ("sweep", "axes"), "", source)
    sweep = _table(data, "sweep", source, required=False)
    axes = _table(data, "axes", source, required=True)
    run, tokens = _run_settings(sweep, source)
    _known_keys(axes, ("model", "target", FIELDS_TABLE, *OPTION_AXES), "axes.", source)
    for name in ("model", "target"):
        if name not in axes:
            raise ConfigError(f"{source.at('axes')}: missing axis '{name}' (a list, e.g. {name} = [...])")
    models = tuple(_model(v, source, f"{source.at('axes.model')}[{i}]")
                   for i, v in enumerate(_strings(axes["model"], source, "axes.model")))
    targets = tuple(_target(v, source, f"{source.at('axes.target')}[{i}]")
                    for i, v in enumerate(_strings(axes["target"], source, "axes.target")))
    targets = _named(targets)
    target_fields = _field_axes(axes.get(FIELDS_TABLE, {}), targets, source)
    options = tuple(_option_axis(name, axes[name], source) for name in OPTION_AXES if name in axes)
    return SweepSpec(source.path, run, tokens, models, targets, target_fields, options)


# ---------------------------------------------------------------- the file


@dataclass(frozen=True, slots=True)
class _Source:
    """The spec being read: its path and text, to name lines in errors."""

    path: Path
    text: str

    def at(self, dotted: str) -> str:
        line = _line_of(self.text, dotted)
        return f"{self.path}:{line}: {dotted}" if line else f"{self.path}: {dotted}"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep spec") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read sweep spec: {err}") from None


def _parse_toml(source: _Source) -> dict[str, Any]:
    try:
        return tomllib.loads(source.text)
    except tomllib.TOMLDecodeError as err:
        match = re.search(r"\(at line (\d+), column \d+\)", str(err))
        where = f"{source.path}:{match.group(1)}" if match else str(source.path)
        raise ConfigError(f"{where}: invalid TOML: {err}") from None


def _known_keys(table: dict[str, Any], allowed: tuple[str, ...], prefix: str, source: _Source) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f" (known: {', '.join(allowed)})"
            raise ConfigError(f"{source.at(prefix + key)}: unknown key{hint}")


def _table(data: dict[str, Any], key: str, source: _Source, required: bool) -> dict[str, Any]:
    if key not in data:
        if required:
            raise ConfigError(f"{source.path}: missing table [{key}]")
        return {}
    if not isinstance(data[key], dict):
        raise ConfigError(f"{source.at(key)}: expected a table [{key}], got {data[key]!r}")
    return data[key]


def _run_settings(sweep: dict[str, Any], source: _Source) -> tuple[str, int]:
    _known_keys(sweep, SWEEP_KEYS, "sweep.", source)
    run = sweep.get("run", "plan")
    if run not in RUN_KINDS:
        raise ConfigError(f"{source.at('sweep.run')}: must be one of {', '.join(map(repr, RUN_KINDS))}, "
                          f"got {run!r}{_hint(str(run), RUN_KINDS)}")
    tokens = sweep.get("tokens", 1)
    if "tokens" in sweep and run != "compile+run":
        raise ConfigError(f"{source.at('sweep.tokens')}: applies to run = \"compile+run\" only")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ConfigError(f"{source.at('sweep.tokens')}: expected a positive whole number, got {tokens!r}")
    return run, tokens


# ---------------------------------------------------------------- values of an axis


def _listed(value: Any, source: _Source, dotted: str) -> list[Any]:
    """An axis' values: a list, or one value alone; never empty, never the same value twice."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{source.at(dotted)}: needs at least one value")
    for i, v in enumerate(values):
        if v in values[:i]:
            raise ConfigError(f"{source.at(dotted)}[{i}]: {v!r} is listed twice")
    return values


def _strings(value: Any, source: _Source, dotted: str) -> list[str]:
    values = _listed(value, source, dotted)
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"{source.at(dotted)}[{i}]: expected a non-empty string, got {v!r}")
    return values


def _model(label: str, source: _Source, where: str) -> ModelRef:
    """A preset name, or a config.json (or graph IR file) path relative to the spec."""
    if is_graph_file(label):
        try:
            return ModelRef(label, read_graph_file(str(source.path.parent / label)).name,
                            (source.path.parent / label).read_text(encoding="utf-8"), ".ir")
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    path = source.path.parent / label if ("/" in label or label.endswith(".json")) else PRESETS_DIR / f"{label}.json"
    if not path.exists() and "/" not in label and not label.endswith(".json"):
        names = sorted(p.stem for p in PRESETS_DIR.glob("*.json"))
        raise ConfigError(f"{where}: unknown model preset '{label}'{_hint(label, names)} (presets: {', '.join(names)}; "
                          "or a config.json path relative to the spec)")
    if path.is_dir():
        path = path / "config.json"
    try:
        config = load_model_config(str(path))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return ModelRef(label, config.name, path.read_text(encoding="utf-8"))


def _target(label: str, source: _Source, where: str) -> TargetRef:
    """A preset name, or a target TOML path relative to the spec."""
    if label in PRESETS:
        return TargetRef(label, PRESETS[label])
    if "/" not in label and not label.endswith(".toml"):
        raise ConfigError(f"{where}: unknown target preset '{label}'{_hint(label, list_targets())} "
                          f"(presets: {', '.join(list_targets())}; or a .toml path relative to the spec)")
    try:
        return TargetRef(label, load_target(str(source.path.parent / label)))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _named(targets: tuple[TargetRef, ...]) -> tuple[TargetRef, ...]:
    names = [t.system.name for t in targets]
    return tuple(TargetRef(t.label, t.system, t.system.name if names.count(t.system.name) == 1 else t.label)
                 for t in targets)


def _field_axes(table: Any, targets: tuple[TargetRef, ...], source: _Source) -> tuple[Axis, ...]:
    """`[axes.target_fields]`: one axis per dotted target field. Every value must apply to, and
    parse on, every target of the sweep; so must every combination of them (a spec error, not a
    per-point one). A `chip.` field is refused in a spec of wafers and chips alike: a wafer's chip is one
    core, so the same value would mean two things."""
    prefix = f"axes.{FIELDS_TABLE}"
    if not isinstance(table, dict):
        raise ConfigError(f"{source.at(prefix)}: expected a table [{prefix}], got {table!r}")
    axes = []
    mixed = len({t.system.is_mesh for t in targets}) > 1
    for dotted, value in _flatten(table):
        where = source.at(f"{prefix}.{dotted}")
        if mixed and dotted.startswith("chip."):
            raise ConfigError(f"{where}: a wafer's chip is one core and a chip target's is a whole chip, so "
                              f"{dotted} means two things in this spec; sweep wafers in a spec of their own")
        values = _listed(value, source, f"{prefix}.{dotted}")
        for i, v in enumerate(values):
            for t in targets:
                override(t.system, {dotted: v}, f"{where}[{i}]" if len(values) > 1 else where)
        axes.append(Axis(dotted, tuple(values), where))
    if len(axes) > 1:
        for t in targets:
            for combo in field_combinations(axes):
                override(t.system, dict(combo), f"{source.at(prefix)} {dict(combo)}")
    return tuple(axes)


def field_combinations(axes: tuple[Axis, ...] | list[Axis]) -> list[tuple[tuple[str, Any], ...]]:
    """Every combination of the target-field axes' values, as (field, value) pairs, the last axis fastest."""
    return [tuple(zip((a.name for a in axes), combo, strict=True))
            for combo in itertools.product(*(a.values for a in axes))]


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted keys: `"chip.sram_bytes" = [...]` and `chip.sram_bytes = [...]` (a nested table) alike."""
    out = []
    for key, value in table.items():
        out += _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [(prefix + key, value)]
    return out


def _option_axis(name: str, value: Any, source: _Source) -> Axis:
    dotted = f"axes.{name}"
    default = getattr(_DEFAULTS, name)
    kind = str if isinstance(default, str) else float if isinstance(default, float) else int
    values = _range(value, source, dotted) if isinstance(value, dict) else _listed(value, source, dotted)
    for i, v in enumerate(values):
        where = f"{source.at(dotted)}[{i}]" if len(values) > 1 else source.at(dotted)
        _check_type(v, kind, where)
        try:  # each value alone must make valid options (combinations are checked per point)
            CompileOptions(**{name: v})
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    return Axis(name, tuple(values), source.at(dotted))


def _check_type(value: Any, kind: type, where: str) -> None:
    ok = (isinstance(value, str) if kind is str else
          not isinstance(value, bool) and isinstance(value, int | float if kind is float else int))
    if not ok:
        expected = {str: "a string", int: "a whole number", float: "a number"}[kind]
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")


def _range(table: dict[str, Any], source: _Source, dotted: str) -> list[int]:
    """`{ from = 4096, to = 131072, times = 2 }` (geometric) or `{ from = 1, to = 8, step = 1 }`:
    whole numbers from `from` up to `to` inclusive (when a step lands on it)."""
    where = source.at(dotted)
    for key in table:
        if key not in _RANGE_KEYS:
            raise ConfigError(f"{where}: unknown range key '{key}'{_hint(key, _RANGE_KEYS)} (a range has from, to "
                              "and one of times or step)")
    if "from" not in table or "to" not in table or ("times" in table) == ("step" in table):
        raise ConfigError(f"{where}: a range needs from, to and exactly one of times or step, got {table!r}")
    numbers = {key: table[key] for key in table}
    for key, v in numbers.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}: range '{key}' must be a positive whole number, got {v!r}")
    start, stop = numbers["from"], numbers["to"]
    if start > stop:
        raise ConfigError(f"{where}: range 'from' ({start}) is above 'to' ({stop})")
    if numbers.get("times", 2) < 2:
        raise ConfigError(f"{where}: range 'times' must be at least 2, got {numbers['times']}")
    return _steps(start, stop, numbers.get("times"), numbers.get("step"))


def _steps(start: int, stop: int, times: int | None, step: int | None) -> list[int]:
    values = [start]
    while True:
        nxt = values[-1] * times if times else values[-1] + step
        if nxt > stop:
            return values
        values.append(nxt)


def _hint(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
