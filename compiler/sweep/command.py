"""`sramflow sweep SPEC.toml`: validate, run the pending points on Ray, write the table, plots and front."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from compiler.sweep.points import Point, expand
from compiler.sweep.runner import Cluster, require_extras, run_jobs
from compiler.sweep.spec import load_spec
from compiler.sweep.store import Store
from compiler.sweep.table import rows, write_tables
from compiler.sweep.task import INTERNAL, Job
from compiler.sweep.version import sramflow_version
from ir.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished sweep: its directory, the table's rows (point order) and the files written."""

    out: Path
    table: list[dict[str, Any]]
    files: list[Path]
    ran: int

    @property
    def internal_errors(self) -> int:
        return sum(r["status"] == INTERNAL for r in self.table)


def default_out(spec_path: str | Path) -> Path:
    """Next to the spec: `<spec stem>.sweep/`."""
    path = Path(spec_path)
    return path.with_name(f"{path.stem}.sweep")


def sweep(spec_path: str | Path, out: str | Path | None, cluster: Cluster, console: Console) -> Outcome:
    """Run every point of the spec not yet recorded in `out`, then write `table.parquet` and
    `table.csv` there. Nothing is started (not even Ray) when every point is already recorded."""
    require_extras()
    spec = load_spec(spec_path)
    points = expand(spec)
    version = sramflow_version()
    keys = [p.key(version) for p in points]
    root = Path(out if out is not None else default_out(spec_path))
    fresh = not root.exists()
    store = Store.open(root)
    jobs = _pending(points, keys, store, version)
    console.print(f"{len(points)} points, {len(points) - _covered(keys, jobs)} already recorded in {store.root}; "
                  f"running {len(jobs)} on {_where(cluster)}", soft_wrap=True)
    if jobs:
        try:
            run_jobs(jobs, store, cluster, console)
        except ConfigError:  # Ray could not start or be reached: a directory this run made stays unmade
            if fresh and not any(store.points.iterdir()):
                shutil.rmtree(store.root, ignore_errors=True)
            raise
        except KeyboardInterrupt:
            done = sum(store.done(k) is not None for k in dict.fromkeys(keys))
            console.print(f"interrupted: {done} of {len(set(keys))} distinct points recorded in {store.root}; "
                          "run the same command to resume", soft_wrap=True)
            raise
    records = {k: store.load(k) for k in dict.fromkeys(keys)}
    table = rows(points, records, keys)
    return Outcome(store.root, table, write_tables(table, store.root), len(jobs))


def _pending(points: list[Point], keys: list[str], store: Store, version: dict[str, str]) -> list[Job]:
    """A job per distinct key with no finished record, in point order."""
    jobs: dict[str, Job] = {}
    for point, key in zip(points, keys, strict=True):
        if key not in jobs and store.done(key) is None:
            jobs[key] = job_of(point, key, version)
    return list(jobs.values())


def _covered(keys: list[str], jobs: list[Job]) -> int:
    pending = {j.key for j in jobs}
    return sum(k in pending for k in keys)


def _where(cluster: Cluster) -> str:
    if cluster.address:
        return f"the Ray cluster at {cluster.address}"
    return "a local Ray instance" + (f" ({cluster.cpus} CPUs)" if cluster.cpus else "")


def job_of(point: Point, key: str, version: dict[str, str]) -> Job:
    """What a worker runs for one point (also for callers that run points themselves)."""
    return Job(key, point.model.name, point.model.text, point.model.suffix, point.system, dict(point.options),
               point.run, point.tokens, version)

