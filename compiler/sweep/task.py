"""One point's work, as a Ray task runs it (or a plain loop): plan, or compile and run; never raises."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.frontend.options import CompileOptions
from compiler.sweep.version import sramflow_version
from ir.errors import SramflowError
from targets.overrides import dump_toml
from targets.spec import SystemSpec

OK, ERROR, INTERNAL = "ok", "error", "internal-error"


@dataclass(frozen=True, slots=True)
class Job:
    """What a worker needs for one point, self-contained (no paths of the driver's machine):
    the model file's text (a config or graph IR), the target after overrides, the options, and the
    driver's sramflow."""

    key: str
    model_name: str
    model_text: str
    model_suffix: str
    system: SystemSpec
    options: dict[str, Any]
    run: str
    tokens: int
    version: dict[str, str]


def run_job(job: Job) -> dict[str, Any]:
    """The point's record: `status` (ok; error: a SramflowError, e.g. does not fit; internal-error:
    anything else, with its type), its one-line `error`, the `plan` JSON and, for compile+run, the
    `run` JSON (without its measured `wall_s`); `wall_s` of the whole task, for people only."""
    started = time.perf_counter()
    try:
        _same_code(job.version)
        record = {"status": OK, "error": None, **_figures(job)}
    except SramflowError as err:
        record = {"status": ERROR, "error": one_line(str(err))}
    except Exception as err:  # noqa: BLE001 - a bug must not stop the sweep; it is recorded with its type
        record = {"status": INTERNAL, "error": one_line(f"{type(err).__name__}: {err}")}
    return {"key": job.key, **record, "wall_s": round(time.perf_counter() - started, 3)}


def one_line(text: str) -> str:
    return " ".join(text.split())


def _same_code(driver: dict[str, str]) -> None:
    """A worker of a cluster runs its own install: refuse to compute with code other than the driver's."""
    here = sramflow_version()
    if here != driver:
        raise RuntimeError(f"this worker runs sramflow {here['version']} (source {here['source'][:12]}), the driver "
                           f"{driver['version']} (source {driver['source'][:12]}): install the same sramflow on "
                           "every node")


def _figures(job: Job) -> dict[str, Any]:
    options = CompileOptions(**job.options)
    with tempfile.TemporaryDirectory(prefix="sramflow-sweep-") as tmp:
        model = Path(tmp) / f"{job.model_name}{job.model_suffix}"  # a config's name is its file's stem
        model.write_text(job.model_text, encoding="utf-8")
        if job.run == "plan":
            return {"plan": _plan(str(model), job.system, options)}
        return _compile_and_run(str(model), job, options, Path(tmp))


def _plan(model: str, system: SystemSpec, options: CompileOptions) -> dict:
    from compiler.planner import make_plan_on

    return json.loads(make_plan_on(model, system, options).to_json())


def _compile_and_run(model: str, job: Job, options: CompileOptions, tmp: Path) -> dict:
    """A timing-mode build without an SRAM image (weights "none"), run for `tokens` decode steps."""
    from compiler.build import compile_model
    from targets.runner import run_build

    target = tmp / "target.toml"
    target.write_text(dump_toml(job.system), encoding="utf-8")
    build = tmp / "build"
    compile_model(model, str(target), options, build, weights="none")
    run = run_build(build, job.tokens)
    run.pop("wall_s")
    return {"plan": json.loads((build / "plan.json").read_text()), "run": run}
