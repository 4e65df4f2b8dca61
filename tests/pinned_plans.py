"""Plan files for tests that pin a layout (`compile --plan`): a model's plan with its stages replaced, and a
copy of such a file with one stage's fields set."""

from __future__ import annotations

import json
from pathlib import Path

from compiler.frontend.options import CompileOptions
from compiler.planner import make_plan


def pinned_plan(model: str, target: str, options: CompileOptions, stages: list[tuple[str, str, int, int]],
                path: Path) -> Path:
    """`model`'s plan on `target` with `stages` (first unit, last unit, tp, first chip), written to `path`."""
    plan = json.loads(make_plan(model, target, options).to_json())
    plan["stages"] = [{"units": [a, b], "tp": tp, "chip_range": [c, c + tp - 1]} for a, b, tp, c in stages]
    path.write_text(json.dumps(plan))
    return path


def with_stage_fields(pinned: Path, tmp: Path, index: int, **fields) -> Path:
    """The pinned plan with stage `index`'s `fields` set (None: left out), written under `tmp`."""
    plan = json.loads(pinned.read_text())
    plan["stages"][index] |= {k: v for k, v in fields.items() if v is not None}
    path = tmp / "subset.json"
    path.write_text(json.dumps(plan))
    return path
