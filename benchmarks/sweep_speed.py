"""Points per second of `sramflow sweep` on the local default (Ray, every core) against the same points one by
one in one process; prints a table.

    python benchmarks/sweep_speed.py [SPEC.toml] [--stride K]

Default: examples/sweeps/llama.toml (192 plans); `--stride K` keeps every K-th point. The Ray figure is the
whole `sweep` call from a fresh directory (Ray's start-up and shut-down, validation, the table); the serial
one calls the same task function in a loop. Both must give the same record for every point.

Two more rows say what bounds the ratio: Ray's start-up and shut-down alone, and this machine's
ceiling for CPU-bound Python, the speed-up of one busy loop per CPU at once over one alone (shared
or hyper-threaded CPUs give well under the CPU count).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compiler.sweep import command, runner
from compiler.sweep.points import Point, expand
from compiler.sweep.runner import Cluster
from compiler.sweep.spec import load_spec
from compiler.sweep.store import Store
from compiler.sweep.task import run_job
from compiler.sweep.version import sramflow_version

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "examples" / "sweeps" / "llama.toml"))
    parser.add_argument("--stride", type=int, default=1, help="keep every K-th point")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweep-speed-") as tmp:
        spec = Path(args.spec)
        points = expand(load_spec(spec))[::args.stride]
        serial_s, serial = _serial(points)
        ray_s, ray = _ray(spec, points, Path(tmp) / "ray")
    _report(args.spec, args.stride, len(serial), serial_s, ray_s, _same(serial, ray))
    Console().print(f"Ray start-up and shut-down alone: {_ray_overhead_s():.1f} s; this machine's ceiling for "
                    f"CPU-bound Python on {os.cpu_count()} CPUs: {_ceiling():.2f}x")


def _ray_overhead_s() -> float:
    start = time.perf_counter()
    with runner._ray(Cluster()):
        pass
    return time.perf_counter() - start


def _busy(n: int) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - start


def _ceiling(n: int = 20_000_000) -> float:
    """Work per second of one busy loop per CPU at once, over one loop alone."""
    alone = _busy(n)
    cpus = os.cpu_count() or 1
    with multiprocessing.Pool(cpus) as pool:
        start = time.perf_counter()
        pool.map(_busy, [n] * cpus)
        together = time.perf_counter() - start
    return cpus * alone / together


def _serial(points: list[Point]) -> tuple[float, dict[str, dict]]:
    version = sramflow_version()
    start = time.perf_counter()
    records = {}
    for point in points:
        key = point.key(version)
        records[key] = run_job(command.job_of(point, key, version))
    return time.perf_counter() - start, records


def _ray(spec: Path, points: list[Point], out: Path) -> tuple[float, dict[str, dict]]:
    """The `sweep` command's own path, restricted to the timed points (the others are marked done)."""
    version = sramflow_version()
    wanted = {p.key(version) for p in points}
    store = Store.open(out)
    for point in expand(load_spec(spec)):
        key = point.key(version)
        if key not in wanted:  # a stand-in record, so the sweep skips the point
            store.save({"key": key, "status": "error", "error": "not timed", "wall_s": 0.0})
    start = time.perf_counter()
    command.sweep(spec, out, Cluster(), Console(stderr=True, quiet=True))
    return time.perf_counter() - start, {k: Store(out).load(k) for k in wanted}


def _same(a: dict[str, dict], b: dict[str, dict]) -> bool:
    def strip(record):
        return {k: v for k, v in record.items() if k != "wall_s"}

    return a.keys() == b.keys() and all(strip(a[k]) == strip(b[k]) for k in a)


def _report(spec: str, stride: int, points: int, serial_s: float, ray_s: float, same: bool) -> None:
    table = Table(title=f"sramflow sweep: {points} points of {Path(spec).name}"
                        f"{f' (every {stride}th)' if stride > 1 else ''} on {os.cpu_count()} cores")
    for column in ("runner", "wall s", "points/s", "speed-up"):
        table.add_column(column, justify="left" if column == "runner" else "right")
    table.add_row("one by one, one process", f"{serial_s:.1f}", f"{points / serial_s:.2f}", "1.00")
    table.add_row(f"local Ray ({os.cpu_count()} CPUs, start-up included)", f"{ray_s:.1f}", f"{points / ray_s:.2f}",
                  f"{serial_s / ray_s:.2f}")
    Console(width=120).print(table)
    Console().print(f"same record for every point: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
