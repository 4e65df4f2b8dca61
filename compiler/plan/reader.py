"""Reading a plan back: `sramflow compile --plan plan.json` lowers the stages a plan file lays out.

A user edits a plan's stages (where one ends and the next begins, how many chips each takes and
where it starts; on a wafer, its region) and compiles exactly that layout. Only the layout is read:
every figure is computed again from the model and target, never taken from the file. The model,
target and options that shape the graphs and costs must be the ones the plan was made for; the
search controls (--chips, --max-chips, --objective, the solver's) do not apply to a layout given.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from compiler.frontend.options import CompileOptions
from ir.errors import ConfigError

SEARCH_OPTIONS = ("chips", "max_chips", "objective", "solver_seed", "solver_deterministic_time")
REGION_KEYS = ("wafer", "row", "col", "rows", "cols")


@dataclass(frozen=True, slots=True)
class PinnedStage:
    """One stage of a plan file: units first..last on `tp` devices, from `first_chip` (chips) or on
    `region` (a wafer's rectangle of cores: wafer, row, col, rows, cols); `split` the kv_layout it
    names (None: the faster, as the search would choose); `attention_tp` and `mlp_share` a subset stage's
    (passes.subset)."""

    first_unit: str
    last_unit: str
    tp: int
    first_chip: int | None = None
    region: tuple[int, ...] | None = None
    split: bool | None = None
    embedding: bool = False  # the embedding unit runs on this stage's chips (records.Stage.embedding)
    attention_tp: int | None = None  # its layers' attention on its first chips only (passes.subset)
    mlp_share: int | None = None  # with attention_tp: the MLP features each of those keeps (None: even)


@dataclass(frozen=True, slots=True)
class PlanFile:
    """The layout a plan file gives, and what it was made for."""

    path: str
    model: str
    target: str
    options: dict
    stages: tuple[PinnedStage, ...]
    placement: tuple[str, int | None] | None = None  # the KV tier and hot window the plan chose (kv_tiers)
    split_layers: bool = False  # its stages may end inside layers (planner.split_config: `layer_units.split`)

    @property
    def embedding(self) -> bool:
        """Whether some stage's chips run the first stage's embedding (records.Stage.embedding)."""
        return any(s.embedding for s in self.stages)

    def check_for(self, model: str, target: str, options: CompileOptions) -> None:
        """One line when the plan was made for another model, target, or graph-shaping option."""
        if (self.model, self.target) != (model, target):
            raise ConfigError(f"{self.path}: a plan of {self.model} on {self.target}, not {model} on {target}")
        given = asdict(options)
        for name, value in sorted(self.options.items()):
            placed = self.placement is not None and name in ("kv_tier", "kv_hot")  # the plan's placement is used
            if name not in SEARCH_OPTIONS and not placed and name in given and given[name] != value:
                raise ConfigError(f"{self.path}: options.{name} is {value!r}, the command line's {given[name]!r}: "
                                  f"give --{name.replace('_', '-')} {value} (or re-plan)")


def unit_ranges(plan: PlanFile, scopes: list[str]) -> list[tuple[int, int]]:
    """Each stage's units as [first, stop) indices of `scopes`: the stages must cover the model's units
    in order, each starting where the last ended."""
    index = {s: i for i, s in enumerate(scopes)}
    out, expected = [], 0
    for i, s in enumerate(plan.stages):
        at = f"{plan.path}: stages[{i}].units"
        for name in (s.first_unit, s.last_unit):
            if name not in index:
                hint = ("; a plan whose stages end inside layers says \"layer_units\": {\"split\": true}"
                        if not plan.split_layers and name.count(".") > 1 else "")
                raise ConfigError(f"{at}: the model has no unit {name!r} (its units run {scopes[0]} .. {scopes[-1]}"
                                  f"{hint})")
        first, last = index[s.first_unit], index[s.last_unit]
        if first != expected or last < first:
            want = scopes[expected] if expected < len(scopes) else "nothing (the model is covered)"
            raise ConfigError(f"{at}: starts at {s.first_unit}, the stage after the last must start at {want}")
        out.append((first, last + 1))
        expected = last + 1
    if expected != len(scopes):
        raise ConfigError(f"{plan.path}: the stages end at {scopes[expected - 1]}; units {scopes[expected]} .. "
                          f"{scopes[-1]} have no stage")
    return out


def read_plan(path: str | Path) -> PlanFile:
    """The stages of a `plan --json` file (or a build's plan.json), each field checked."""
    where = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"{where}: cannot read the plan ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), list) or not data["stages"]:
        raise ConfigError(f"{where}: not a plan (`sramflow plan --json` writes one): it needs a list of stages")
    for key in ("model", "target", "options"):
        if not isinstance(data.get(key), str if key != "options" else dict):
            raise ConfigError(f"{where}: {key}: missing or not a {'string' if key != 'options' else 'table'}")
    stages = tuple(_stage(where, i, s) for i, s in enumerate(data["stages"]))
    return PlanFile(where, data["model"], data["target"], data["options"], stages, _placement(where, data),
                    _split_layers(where, data))


def _split_layers(where: str, data: dict) -> bool:
    """`layer_units.split` of a plan whose stages may end between a layer's blocks (planner._layer_units)."""
    said = data.get("layer_units", {"split": False})
    split = said.get("split") if isinstance(said, dict) else None
    if not isinstance(split, bool):
        raise ConfigError(f"{where}: layer_units.split: must be true or false, got {split!r}")
    return split


def _placement(where: str, data: dict) -> tuple[str, int | None] | None:
    """`kv_tiers.placement` of a plan that placed its KV cache: (tier, hot window)."""
    placement = data.get("kv_tiers", {}).get("placement") if isinstance(data.get("kv_tiers"), dict) else None
    if placement is None:
        return None
    tier, hot = placement.get("tier"), placement.get("hot_tokens")
    if tier not in ("sram", "dram", "flash") or not isinstance(hot, int) or isinstance(hot, bool) or hot < 0:
        raise ConfigError(f"{where}: kv_tiers.placement: needs tier (sram, dram or flash) and hot_tokens (a count)")
    return tier, hot


def _stage(where: str, i: int, s: object) -> PinnedStage:
    at = f"{where}: stages[{i}]"
    if not isinstance(s, dict):
        raise ConfigError(f"{at}: not a table")
    units = s.get("units")
    if not (isinstance(units, list) and len(units) == 2 and all(isinstance(u, str) for u in units)):
        raise ConfigError(f"{at}.units: must be [first unit, last unit] (scope names, e.g. \"layers.0\")")
    tp = _count(at, "tp", s.get("tp"), 1)
    if "region" in s:
        region = s["region"]
        if not isinstance(region, dict):
            raise ConfigError(f"{at}.region: must be a table of {', '.join(REGION_KEYS)}")
        values = tuple(_count(f"{at}.region", k, region.get(k), 0 if k in ("wafer", "row", "col") else 1)
                       for k in REGION_KEYS)
        return PinnedStage(units[0], units[1], tp, region=values)
    chips = s.get("chip_range")
    if not (isinstance(chips, list) and len(chips) == 2):
        raise ConfigError(f"{at}.chip_range: must be [first chip, last chip]")
    first, last = (_count(at, "chip_range", c, 0) for c in chips)
    if last - first + 1 != tp:
        raise ConfigError(f"{at}: chip_range {first}..{last} holds {last - first + 1} chips, tp says {tp}")
    layout = s.get("kv_layout")
    if layout not in (None, "split", "whole"):
        raise ConfigError(f"{at}.kv_layout: must be \"split\" or \"whole\", got {layout!r}")
    embedding = s.get("embedding", False)
    if not isinstance(embedding, bool):
        raise ConfigError(f"{at}.embedding: must be true or false, got {embedding!r}")
    attention = _count(at, "attention_tp", s["attention_tp"], 1) if "attention_tp" in s else None
    share = _count(at, "mlp_share", s["mlp_share"], 1) if "mlp_share" in s else None
    if attention is not None and attention >= tp:
        raise ConfigError(f"{at}.attention_tp: {attention} is not fewer than the stage's {tp} chips")
    if share is not None and attention is None:
        raise ConfigError(f"{at}.mlp_share: only a stage with attention_tp gives its attention chips a share")
    return PinnedStage(units[0], units[1], tp, first_chip=first, split=None if layout is None else layout == "split",
                       embedding=embedding, attention_tp=attention, mlp_share=share)


def _count(at: str, key: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{at}.{key}: must be an integer of at least {least}, got {value!r}")
    return value
