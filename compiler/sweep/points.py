"""The points of a sweep (the cross product of its axes, in a fixed order) and each point's content key."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from typing import Any

from compiler.frontend.options import CompileOptions
from compiler.sweep.spec import ModelRef, SweepSpec, TargetRef, field_combinations
from targets.overrides import override
from targets.spec import SystemSpec


@dataclass(frozen=True, slots=True)
class Point:
    """The inputs of one plan (or compile and run): a model, a target with its field overrides
    (`fields`, as the spec wrote them; `system` is the target after them) and every option."""

    index: int
    model: ModelRef
    target: TargetRef
    fields: tuple[tuple[str, Any], ...]
    system: SystemSpec
    options: tuple[tuple[str, Any], ...]
    run: str
    tokens: int

    @property
    def machine(self) -> str:
        """The target and its overrides, e.g. 'lpu [chip.sram_bytes=500 MiB]' (the target's name, see
        TargetRef): one colour in a plot."""
        if not self.fields:
            return self.target.name
        return f"{self.target.name} [{', '.join(f'{k}={v}' for k, v in self.fields)}]"

    def key_inputs(self, version: dict[str, str]) -> dict[str, Any]:
        """What the result depends on: the model config's contents, the target's every field after
        overrides, the options, what is run, and which sramflow runs it."""
        inputs = {"model": {"name": self.model.name, "contents": self.model.contents},
                  "target": asdict(self.system), "options": dict(self.options), "run": self.run,
                  "sramflow": version}
        if self.run == "compile+run":
            inputs["tokens"] = self.tokens
        return inputs

    def key(self, version: dict[str, str]) -> str:
        """sha256 of the canonical JSON of `key_inputs`."""
        return hashlib.sha256(canonical_json(self.key_inputs(version)).encode()).hexdigest()


def expand(spec: SweepSpec) -> list[Point]:
    """The cross product model x target x target fields (spec order) x options (CompileOptions
    order), the last axis varying fastest; axes a spec leaves out take CompileOptions' defaults."""
    # The prompt is left to CompileOptions (1024 tokens, or the context if shorter), not pinned at 1024.
    defaults = asdict(CompileOptions()) | {"prompt": None}
    names = [a.name for a in spec.options]
    systems: dict[tuple[int, tuple], SystemSpec] = {}
    combos = field_combinations(spec.target_fields)
    points = []
    product = itertools.product(spec.models, enumerate(spec.targets), combos,
                                itertools.product(*(a.values for a in spec.options)))
    for model, (t, target), combo, values in product:
        if (t, combo) not in systems:
            systems[t, combo] = override(target.system, dict(combo)) if combo else target.system
        options = defaults | dict(zip(names, values, strict=True))
        points.append(Point(len(points), model, target, combo, systems[t, combo], tuple(options.items()), spec.run,
                            spec.tokens))
    return points


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, every number as a float: 320 and 320.0 (a preset's int, a file's
    parsed quantity) are one value and must give one key."""
    return json.dumps(_numbers_as_floats(value), sort_keys=True, separators=(",", ":"))


def _numbers_as_floats(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_numbers_as_floats(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value
