"""`sramflow sweep`: a spec's points on a local 2-CPU Ray, killed and resumed, with the table, plots and front."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.planner import make_plan, make_plan_on
from compiler.sweep.points import expand
from compiler.sweep.spec import load_spec
from compiler.sweep.version import sramflow_version
from ir.errors import DoesNotFitError

ROOT = Path(__file__).resolve().parents[1]
SMALL_TARGET = 'base = "lpu-mini"\nname = "lpu-256k"\n[chip]\nsram_bytes = "256 KiB"\nprogram_reserve_bytes = "4 KiB"\n'
# 2 targets x 2 max_chips x 2 precisions x 4 contexts = 32 plans of tiny-llama; max_chips = 2 does not
# fit the longer contexts, so some points fail and are recorded as such.
TINY_SPEC = """\
[sweep]
run = "plan"

[axes]
model = ["tiny-llama"]
target = ["lpu-mini", "small.toml"]
precision = ["fp16", "int8"]
context = { from = 512, to = 4096, times = 2 }

[axes.target_fields]
max_chips = [2, 256]
"""


def _sweep(spec: Path, out: Path, *extra: str, address: str | None = None) -> subprocess.Popen:
    """The CLI in a process of its own (and its own process group, so every Ray process it starts
    can be reaped), on a local Ray instance of 2 CPUs or on the cluster at `address`."""
    where = ["--address", address] if address else ["--cpus", "2"]
    command = [sys.executable, "-m", "compiler.cli", "sweep", str(spec), "--out", str(out), *where, *extra]
    env = os.environ | {"PYTHONPATH": str(ROOT)} | ({"RAY_AUTH_MODE": "token"} if address else {})
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray cluster of one head node (2 CPUs) started like a user would, in a process group of its own."""
    log = tmp_path_factory.mktemp("cluster") / "head.log"
    port = _free_port()
    env = os.environ | {"PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "token"}
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--port", str(port),
               "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
               "--ray-client-server-port", str(_free_port())]
    with open(log, "w") as out:
        head = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(600):
            if "Ray runtime started" in log.read_text() or head.poll() is not None:
                break
            time.sleep(0.1)
        assert head.poll() is None, log.read_text()
        yield f"127.0.0.1:{port}"
    finally:
        _reap(head)


def _finish(proc: subprocess.Popen, timeout_s: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        _reap(proc)
    return proc.returncode, out, err


def _reap(proc: subprocess.Popen) -> None:
    """No stray raylet: end whatever is left of the process group the sweep started."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
    for _ in range(100):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of group {proc.pid} outlived the sweep")


def _interrupt(spec: Path, out: Path, sig: signal.Signals) -> tuple[int, int]:
    """Start a sweep, send `sig` once a few more points are recorded; the exit code and the records before it."""
    before = len(list((out / "points").glob("*.json"))) if (out / "points").exists() else 0
    proc = _sweep(spec, out)
    try:
        while len(list((out / "points").glob("*.json"))) < before + 3 and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(sig)
        code, _, _ = _finish(proc)
    finally:
        _reap(proc)
    return code, len(list((out / "points").glob("*.json")))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    (root / "small.toml").write_text(SMALL_TARGET)
    (root / "tiny.toml").write_text(TINY_SPEC)
    return root


@pytest.fixture(scope="module")
def whole(tiny) -> dict:
    """An uninterrupted run, with --plot and --best."""
    code, out, err = _finish(_sweep(tiny / "tiny.toml", tiny / "whole", "--plot", str(tiny / "plots"), "--best"))
    assert code == 0, err
    return {"stdout": out, "stderr": err, "dir": tiny / "whole"}


@pytest.fixture(scope="module")
def resumed(tiny, whole) -> dict:
    """The same spec interrupted by SIGINT, then killed by SIGKILL, then run to the end."""
    out = tiny / "resumed"
    total = len(expand(load_spec(tiny / "tiny.toml")))
    code, recorded = _interrupt(tiny / "tiny.toml", out, signal.SIGINT)
    assert code == 130 and 0 < recorded < total and not (out / "table.parquet").exists()
    code, recorded_after_kill = _interrupt(tiny / "tiny.toml", out, signal.SIGKILL)
    assert code == -signal.SIGKILL and recorded < recorded_after_kill < total
    code, _, err = _finish(_sweep(tiny / "tiny.toml", out))
    assert code == 0, err
    return {"stderr": err, "dir": out, "recorded_before": recorded_after_kill, "total": total}


def _table(path: Path) -> list[dict[str, str]]:
    with open(path / "table.csv", newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- running, resuming


def test_killed_and_resumed_sweep_gives_the_uninterrupted_table(whole, resumed):
    for name in ("table.parquet", "table.csv"):
        assert (resumed["dir"] / name).read_bytes() == (whole["dir"] / name).read_bytes()
    ran = resumed["total"] - resumed["recorded_before"]
    assert f"{resumed['recorded_before']} already recorded" in resumed["stderr"]
    assert f"running {ran} on a local Ray instance (2 CPUs)" in resumed["stderr"]


def test_a_sweep_on_an_existing_cluster_gives_the_local_table(tiny, whole, cluster):
    code, _, err = _finish(_sweep(tiny / "tiny.toml", tiny / "on-cluster", address=cluster))
    assert code == 0, err
    assert f"running 32 on the Ray cluster at {cluster}" in err
    for name in ("table.parquet", "table.csv"):
        assert (tiny / "on-cluster" / name).read_bytes() == (whole["dir"] / name).read_bytes()


def test_a_finished_sweep_runs_nothing_again_and_rewrites_the_same_bytes(tiny, whole):
    before = {n: (whole["dir"] / n).read_bytes() for n in ("table.parquet", "table.csv")}
    code, _, err = _finish(_sweep(tiny / "tiny.toml", whole["dir"]))
    assert code == 0 and "running 0 on" in err
    assert {n: (whole["dir"] / n).read_bytes() for n in before} == before


def test_table_has_one_row_per_point_in_order_with_every_plan_figure(tiny, whole):
    rows = _table(whole["dir"])
    points = expand(load_spec(tiny / "tiny.toml"))
    assert [int(r["point"]) for r in rows] == [p.index for p in points]
    assert [(r["target"], r["target.max_chips"], r["precision"], r["context"]) for r in rows] == [
        (p.target.label, str(dict(p.fields)["max_chips"]), dict(p.options)["precision"],
         str(dict(p.options)["context"])) for p in points]
    row = next(r for r in rows if r["target"] == "lpu-mini" and r["target.max_chips"] == "256")
    options = CompileOptions(precision=row["precision"], context=int(row["context"]))
    plan = json.loads(make_plan("tiny-llama", "lpu-mini", options).to_json())
    for column, value in _flat(plan, "plan.").items():
        assert row[column] == (json.dumps(value, separators=(",", ":"), sort_keys=True) if isinstance(value, list)
                               else "" if value is None else str(value)), column
    # No wall-clock figure in the table (the solver's wall_s is its deterministic clock).
    assert [c for c in rows[0] if c.endswith("wall_s")] == ["plan.solver.wall_s"]


def _flat(value: dict, prefix: str) -> dict:
    out = {}
    for key, item in value.items():
        if isinstance(item, dict):
            out |= {} if prefix + key == "plan.options" else _flat(item, f"{prefix}{key}.")
        else:
            out[prefix + key] = item
    return out


def test_failed_points_record_their_one_line_error_and_the_sweep_goes_on(tiny, whole):
    rows = _table(whole["dir"])
    points = expand(load_spec(tiny / "tiny.toml"))
    failed = [r for r in rows if r["status"] != "ok"]
    assert failed and len(failed) < len(rows)
    for r in failed:
        point = points[int(r["point"])]
        with pytest.raises(DoesNotFitError) as err:  # the error `sramflow plan` gives for the same inputs
            make_plan_on("tiny-llama", point.system, CompileOptions(**dict(point.options)))
        assert r["status"] == "error" and r["plan.chips"] == ""
        assert r["error"] == str(err.value) and "\n" not in r["error"]
    assert f"{len(rows) - len(failed)} planned, {len(failed)} failed" in whole["stderr"]


def test_best_prints_each_models_pareto_front(whole):
    rows = [r for r in _table(whole["dir"]) if r["status"] == "ok"]
    # Independently of compiler.sweep.pareto: no other row has at most the chips and more tokens/s.
    def beaten(r):
        return any(int(o["plan.chips"]) <= int(r["plan.chips"]) and
                   float(o["plan.decode.tokens_per_s"]) >= float(r["plan.decode.tokens_per_s"]) and
                   (o["plan.chips"], o["plan.decode.tokens_per_s"]) != (r["plan.chips"], r["plan.decode.tokens_per_s"])
                   for o in rows)
    expected = sorted(int(r["point"]) for r in rows if not beaten(r))
    lines = [line for line in whole["stdout"].splitlines() if line.startswith("│")]
    assert "tiny-llama: Pareto front" in whole["stdout"]
    assert sorted(int(line.split("│")[1]) for line in lines) == expected


def test_plot_draws_each_picture_of_each_model(tiny, whole):
    names = sorted(p.name for p in (tiny / "plots").iterdir())
    assert names == ["tiny-llama-tokens-per-device-vs-batch.png", "tiny-llama-tokens-vs-devices.png",
                     "tiny-llama-ttft-vs-context.png"]
    for name in names:
        data = (tiny / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000
    assert "wrote 3 plots" in whole["stderr"]


def test_compile_and_run_points_carry_the_run_figures(tmp_path):
    spec = tmp_path / "run.toml"
    spec.write_text('[sweep]\nrun = "compile+run"\ntokens = 2\n[axes]\nmodel = "tiny-llama"\ntarget = "lpu-mini"\n'
                    "context = [256, 4096]\nprompt = [64, 1024]\n")
    code, _, err = _finish(_sweep(spec, tmp_path / "out"))
    assert code == 0, err
    rows = _table(tmp_path / "out")
    assert [(r["context"], r["prompt"], r["status"]) for r in rows] == [
        ("256", "64", "ok"), ("256", "1024", "error"), ("4096", "64", "ok"), ("4096", "1024", "ok")]
    # A 1024-token prompt cannot sit in a 256-token context (plan and compile refuse it alike): the
    # point records the error, and the sweep goes on.
    assert "--prompt 1024 is longer than --context 256" in rows[1]["error"]
    full = rows[2]
    build = tmp_path / "build"
    assert main(["compile", "tiny-llama", "--target", "lpu-mini", "--prompt", "64", "-o", str(build),
                 "--weights", "none"]) == 0
    from targets.runner import run_build

    run = run_build(build, 2)
    assert full["status"] == "ok" and full["tokens"] == "2"
    assert int(full["run.decode.latency_cycles"]) == run["decode"]["latency_cycles"]
    assert float(full["run.prefill.ttft_ms"]) == run["prefill"]["ttft_ms"]
    plan = json.loads((build / "plan.json").read_text())
    assert float(full["plan.decode.latency_us"]) == plan["decode"]["latency_us"]
    assert "run.wall_s" not in full


# ---------------------------------------------------------------- output directory, extras


def test_sweep_refuses_a_directory_that_is_not_its_own(tiny, capsys):
    foreign = tiny / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["sweep", str(tiny / "tiny.toml"), "--out", str(foreign)]) == 1
    err = capsys.readouterr().err
    assert err == (f"sramflow: error: {foreign}: exists and is not a sweep directory (no sweep.json); "
                   "choose another --out\n")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_an_address_where_nothing_listens_fails_in_one_line(tiny, capsys):
    address = f"127.0.0.1:{_free_port()}"
    assert main(["sweep", str(tiny / "tiny.toml"), "--out", str(tiny / "nowhere"), "--address", address]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"sramflow: error: --address {address}: nothing answers at {address}")
    assert not (tiny / "nowhere").exists()  # the directory this run would have made is not left behind


def test_without_ray_sweep_says_how_to_install_it(tiny, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["sweep", str(tiny / "tiny.toml")]) == 1
    assert capsys.readouterr().err == "sramflow: error: sweep needs Ray: pip install -e '.[sweep]'\n"


# ---------------------------------------------------------------- keys


def test_point_keys_hash_contents_not_names(tmp_path):
    (tmp_path / "lpu.toml").write_text((ROOT / "examples" / "targets" / "lpu.toml").read_text())
    spec = tmp_path / "s.toml"
    spec.write_text('[axes]\nmodel = "tiny-llama"\ntarget = ["lpu", "lpu.toml"]\ncontext = [1024, 2048]\n')
    version = sramflow_version()
    keys = [p.key(version) for p in expand(load_spec(spec))]
    # The file is the preset written out: the same machine, so the same keys; other contexts differ.
    assert keys[:2] == keys[2:] and keys[0] != keys[1]
    other = version | {"source": "0" * 64}
    assert expand(load_spec(spec))[0].key(other) != keys[0]
