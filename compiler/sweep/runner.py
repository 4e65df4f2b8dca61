"""Running a sweep's pending points on Ray (a local instance, or a cluster), recording each as it finishes."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from compiler.sweep.store import Store
from compiler.sweep.task import ERROR, INTERNAL, OK, Job, one_line, run_job
from ir.errors import ConfigError

INSTALL = "sweep needs Ray: pip install -e '.[sweep]'"
# The local instance's object store: results are a few KiB each, and the machine is shared.
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20
# Tasks kept queued per CPU: enough to keep every worker busy, few enough that an interrupted
# sweep has little in flight.
TASKS_PER_CPU = 2


def require_extras() -> None:
    """Ray and pyarrow come with the `sweep` extra; without them, one line says how to install it."""
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL) from None


@dataclass(frozen=True, slots=True)
class Cluster:
    """Where the points run: `address` (None: a local Ray instance started in-process with `cpus`
    CPUs; 'auto', 'HOST:PORT' or 'ray://HOST:PORT': an existing cluster)."""

    address: str | None = None
    cpus: int | None = None


def run_jobs(jobs: list[Job], store: Store, cluster: Cluster, console: Console) -> dict[str, int]:
    """Run every job on Ray, saving each record the moment it arrives; returns the counts by status."""
    counts = {OK: 0, ERROR: 0, INTERNAL: 0}
    with _ray(cluster) as ray, _progress(console, len(jobs)) as (bar, task):
        remote = ray.remote(num_cpus=1, max_retries=0)(run_job)
        window = max(1, int(ray.cluster_resources().get("CPU", 1))) * TASKS_PER_CPU
        for record in _results(ray, remote, jobs, window):
            store.save(record)
            counts[record["status"]] += 1
            failed = counts[ERROR] + counts[INTERNAL]
            bar.update(task, advance=1, ok=counts[OK], failed=failed, remaining=len(jobs) - counts[OK] - failed)
    return counts


def _results(ray: Any, remote: Any, jobs: list[Job], window: int) -> Iterator[dict[str, Any]]:
    """Records in the order they finish, at most `window` tasks submitted at a time."""
    queue = iter(jobs)
    in_flight: dict[Any, Job] = {}
    while True:
        for job in queue:
            in_flight[remote.remote(job)] = job
            if len(in_flight) >= window:
                break
        if not in_flight:
            return
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        job = in_flight.pop(ready[0])
        yield _get(ray, ready[0], job)


def _get(ray: Any, ref: Any, job: Job) -> dict[str, Any]:
    """The task's record; a task Ray could not finish (a worker died) is an internal error of its point."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        return {"key": job.key, "status": INTERNAL, "error": one_line(f"{type(err).__name__}: {err}"),
                "wall_s": 0.0}


@contextmanager
def _ray(cluster: Cluster) -> Iterator[Any]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a compiler does not report its use
    import ray

    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if cluster.address:
        _check_reachable(cluster.address)
    try:
        if cluster.address:
            ray.init(address=cluster.address, **quiet)
        else:
            # "local": a new instance even when another runs on this machine (or a stale one left its address).
            ray.init(address="local", num_cpus=cluster.cpus or os.cpu_count(), include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"--address {cluster.address}" if cluster.address else "local Ray instance"
        raise ConfigError(f"{where}: cannot start Ray: {one_line(str(err))}{_auth_hint(cluster)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens at HOST:PORT."""
    host_port = address.removeprefix("ray://")
    if address == "auto" or ":" not in host_port:
        return
    host, _, port = host_port.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT, got port {port!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(f"--address {address}: nothing answers at {host_port} ({one_line(str(err))})") from None


def _auth_hint(cluster: Cluster) -> str:
    # Ray clusters use token authentication by default, and an explicit address only uses the token
    # when the environment asks for it (Ray's rule, not ours).
    if cluster.address and cluster.address != "auto" and os.environ.get("RAY_AUTH_MODE") is None:
        return " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token, see Ray's docs)"
    return ""


@contextmanager
def _progress(console: Console, total: int) -> Iterator[tuple[Progress, Any]]:
    columns = (TextColumn("sweep"), BarColumn(),
               TextColumn("{task.fields[ok]} done, {task.fields[failed]} failed, {task.fields[remaining]} remaining"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        yield bar, bar.add_task("sweep", total=total, ok=0, failed=0, remaining=total)
