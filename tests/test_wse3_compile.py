"""Compiling for a wafer: role-stream Programs, their timing rules, and the interpreter's checks on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from ir.contract import Route
from ir.isa import Op
from ir.program import Program
from ir.program_io import load_program
from targets import load_target
from targets.interpreter import execute
from targets.mesh import Roles, tree_positions
from targets.wafer_timing import WAFER_SEND

# A small wafer (one region holds tiny-llama) and one whose cores are so small that the model
# takes two regions on each of two wafers: hand-offs over the fabric and over the wafer link.
SMALL = 'base = "wse3"\nmesh_rows = 24\nmesh_cols = 20\n'
SPLIT = 'base = "wse3"\nmesh_rows = 16\nmesh_cols = 16\n[chip]\nsram_bytes = "12 KiB"\n'


def _compile(tmp: Path, name: str, text: str) -> tuple[Path, Path]:
    target = tmp / f"{name}.toml"
    target.write_text(text)
    out = tmp / name
    assert main(["compile", "tiny-llama", "--target", str(target), "-o", str(out)]) == 0
    return target, out


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    return _compile(tmp_path_factory.mktemp("wafer"), "small", SMALL)


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> tuple[Path, Path]:
    return _compile(tmp_path_factory.mktemp("wafer"), "split", SPLIT)


def _run(build: Path, capsys) -> dict:
    capsys.readouterr()
    code = main(["run", str(build), "--check-determinism", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert code == (0 if not figures["hazards"] else 2)
    return figures


@pytest.mark.parametrize("which", ["small", "split"])
def test_compile_and_run_is_hazard_free_and_near_the_plan(which, request, capsys):
    _, build = request.getfixturevalue(which)
    figures = _run(build, capsys)
    assert figures["hazards"] == [] and figures["determinism"]["passed"]
    plan = json.loads((build / "plan.json").read_text())["decode"]
    run = figures["decode"]["latency_us"]
    assert run > plan["latency_bound_us"]
    assert run == pytest.approx(plan["latency_us"], rel=0.08)  # the mesh model, instruction by instruction


def test_interpreter_cycles_equal_the_schedule_makespan(small, split):
    for target, build in (small, split):
        system = load_target(str(target))
        for phase in ("decode", "prefill"):
            program = load_program(build / f"{phase}.prog")
            run = execute(program, system)
            assert run.hazards == []
            assert run.makespan == program.makespan > 0
            assert np.array_equal(run.end - run.start, program.cols["cycles"])


def test_streams_are_roles_with_replicas_covering_every_core(small, split):
    for _, build in (small, split):
        plan = json.loads((build / "plan.json").read_text())
        program = load_program(build / "decode.prog")
        assert len(program.meta["replicas"]) == program.chips == len(program.meta["roles"])
        assert program.meta["cores"] == sum(s["cores"] for s in plan["stages"])
        assert program.meta["templates"] <= 3  # embed, a layer, the head: one schedule per distinct shape


def test_two_wafers_hand_off_over_the_wafer_link(split):
    target, build = split
    plan = json.loads((build / "plan.json").read_text())
    assert plan["chips"] == 2 and len(plan["stages"]) >= 2
    c = load_program(build / "decode.prog").cols
    assert ((c["op"] == Op.SEND) & (c["unit"] == WAFER_SEND)).sum() >= 1


def _mutated(program: Program, change) -> Program:
    cols = {n: a.copy() for n, a in program.cols.items()}
    cols = change(cols)
    return program.with_columns(cols)


def _kinds(program: Program, target: Path) -> set[str]:
    return {h.kind for h in execute(program, load_target(str(target))).hazards}


def test_a_dropped_send_is_flagged(split):
    target, build = split
    program = load_program(build / "decode.prog")
    send = int(np.flatnonzero(program.cols["op"] == Op.SEND)[len(program) % 7])
    keep = np.ones(len(program), dtype=bool)
    keep[send] = False
    assert "unmatched" in _kinds(_mutated(program, lambda c: {n: a[keep] for n, a in c.items()}), target)


def test_a_receive_moved_a_cycle_earlier_is_flagged(split):
    target, build = split
    program = load_program(build / "decode.prog")
    for unit in (1, 3):  # over the fabric, over the wafer link
        recv = int(np.flatnonzero((program.cols["op"] == Op.RECV) & (program.cols["unit"] == unit))[0])

        def earlier(c, i=recv):
            c["issue"][i] -= 1
            return c
        assert "recv-early" in _kinds(_mutated(program, earlier), target)


def test_core_sram_and_link_limits_are_checked(small):
    target, build = small
    program = load_program(build / "decode.prog")
    usable = load_target(str(target)).chip.usable_sram_bytes
    mxm = int(np.flatnonzero(program.cols["op"] == Op.MXM)[0])
    send = int(np.flatnonzero((program.cols["op"] == Op.SEND) & (program.cols["route"] == Route.ROWS))[0])

    def beyond(c):
        c["src"][mxm] = usable - 1
        c["imm"][send] = 10**6  # a level of the row tree far past its height
        return c
    assert {"sram-range", "link-range"} <= _kinds(_mutated(program, beyond), target)


def test_builds_are_byte_identical(small, tmp_path):
    target, build = small
    again = tmp_path / "again"
    assert main(["compile", "tiny-llama", "--target", str(target), "-o", str(again)]) == 0
    names = sorted(p.name for p in build.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (build / name).read_bytes() == (again / name).read_bytes(), name


def test_inspect_summarises_a_wafer_build(small, capsys):
    """The schedule's figures beside the wafer plan's, and each region's cores and streams."""
    _, build = small
    assert main(["inspect", str(build), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    plan = json.loads((build / "plan.json").read_text())
    decode = load_program(build / "decode.prog")
    assert figures["decode"]["makespan_cycles"] == decode.makespan
    assert figures["decode"]["estimate_us"] == plan["decode"]["latency_us"]
    assert figures["decode"]["bound_us"] <= figures["decode"]["latency_us"]
    assert figures["chip_ids"] == decode.chips  # role streams
    assert main(["inspect", str(build)]) == 0
    out = capsys.readouterr().out
    assert "wafers" in out and "regions" in out and "streams" in out
    assert main(["inspect", str(build), "--asm", "--chip", "0"]) == 0


def test_functional_run_of_a_wafer_build_is_a_clear_error(small, capsys):
    _, build = small
    assert main(["run", str(build), "--functional", "--prompt", "1 2"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no SRAM image" in err


def test_builds_are_identical_across_processes_and_hash_seeds(small, tmp_path):
    target, build = small
    for seed in ("1", "77"):
        subprocess.run([sys.executable, "-m", "compiler.cli", "compile", "tiny-llama", "--target", str(target),
                        "-o", str(tmp_path / seed)], check=True, capture_output=True,
                       env=os.environ | {"PYTHONHASHSEED": seed})
        assert (tmp_path / seed / "manifest.json").read_bytes() == (build / "manifest.json").read_bytes()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 20, 106, 188, 517])
def test_tree_positions_reduce_every_core_once_in_about_n_hops(n):
    keys, halves = tree_positions(n)
    assert sum(halves) <= n - 1 + len(halves)  # the model charges n - 1
    assert keys[0] == (len(halves), tuple(range(len(halves))))
    sent = sorted(i for i in range(1, n))
    received = sorted(i + halves[j] for i, (_, got) in enumerate(keys) for j in got)
    assert received == sent  # every core but the root sends once, and someone receives it
    for i in range(1, n):
        level = keys[i][0]
        assert level in keys[i - halves[level]][1]


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 7), (6, 1), (106, 188), (13, 9)])
def test_roles_cover_the_region(rows, cols):
    roles = Roles.of(rows, cols)
    assert sum(roles.replicas) == rows * cols
    assert len(roles) <= 2 * (rows.bit_length() + cols.bit_length()) + 2


# ---------------------------------------------------------------- --embed-on-host


def test_embedding_on_the_host_frees_cores_and_costs_the_host_link(tmp_path, capsys):
    target = tmp_path / "small.toml"
    target.write_text(SMALL)
    plans = []
    for extra in ([], ["--embed-on-host"]):
        assert main(["plan", "tiny-llama", "--target", str(target), "--json", *extra]) == 0
        plans.append(json.loads(capsys.readouterr().out))
    held, streamed = plans
    wafer = load_target(str(target))
    table = 256 * 64 * 2  # tiny-llama's embedding table, fp16 (its head is tied to no table)
    assert held["totals"]["weight_bytes"] - streamed["totals"]["weight_bytes"] == table
    assert streamed["mesh"]["cores_used"] <= held["mesh"]["cores_used"]
    per_core = [p["stages"][0]["memory_per_core_bytes"]["weights"] for p in plans]
    assert per_core[1] < per_core[0]
    row = 64 * 2  # one token's row, streamed in every step over the system I/O and across the mesh
    host_us = (wafer.global_link.latency_s + row / wafer.global_link.bw_bytes_per_s
               + (wafer.mesh_rows + wafer.mesh_cols) // 2 * wafer.local_link.latency_s) * 1e6
    assert streamed["stages"][0]["decode_bound_us"] >= host_us
    assert streamed["decode"]["latency_us"] > host_us


def test_an_embedding_streamed_from_the_host_compiles_hazard_free_and_is_checked(tmp_path, capsys):
    target = tmp_path / "small.toml"
    target.write_text(SMALL)
    out = tmp_path / "host"
    assert main(["compile", "tiny-llama", "--target", str(target), "--embed-on-host", "-o", str(out)]) == 0
    assert _run(out, capsys)["hazards"] == []
    program, wafer = load_program(out / "decode.prog"), load_target(str(target))
    c = program.cols
    host = np.flatnonzero((c["op"] == Op.RECV) & (c["peer"] == -2))
    assert len(host) and (c["unit"][host] == 3).all()
    early = {n: a.copy() for n, a in c.items()}
    early["issue"][host] = 0
    found = execute(program.with_columns(early), wafer).hazards
    assert any(h.kind == "recv-early" and "from the host" in h.detail for h in found)


def test_embedding_on_the_host_is_refused_on_chips(capsys):
    assert main(["plan", "tiny-llama", "--target", "lpu-mini", "--embed-on-host"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "only wafer targets" in err


# ---------------------------------------------------------------- hops the interpreter derives


def _receives_of(c: dict, send: int) -> np.ndarray:
    return np.flatnonzero((c["op"] == Op.RECV) & (c["peer"] == c["chip"][send]) & (c["tag"] == c["tag"][send]))


def test_sends_name_routes_and_the_interpreter_derives_their_hops(split):
    """A wafer SEND carries no distance: zeroing every multi-hop message's distance as before (imm = 0)
    and moving its receives up to its send is flagged, as is every route that cannot reach."""
    target, build = split
    program = load_program(build / "decode.prog")
    c = program.cols
    sends = np.flatnonzero(c["op"] == Op.SEND)
    assert set(np.unique(c["route"][sends]).tolist()) >= {Route.FEED, Route.ROWS, Route.COLS, Route.NEXT_WAFER}
    assert (c["route"][c["op"] != Op.SEND] == 0).all()

    def zero_hops(cols):
        for s in sends.tolist():
            cols["imm"][s] = 0
            for r in _receives_of(cols, s).tolist():
                cols["issue"][r] = cols["issue"][s] + 1  # as if the data were there a cycle after the send
        return cols
    kinds = _kinds(_mutated(program, zero_hops), target)
    assert {"recv-early", "link-range"} <= kinds  # imm is a tree level, and only on ROWS and COLS sends


def test_a_route_that_cannot_reach_its_receiver_is_flagged(split):
    target, build = split
    program = load_program(build / "decode.prog")
    c = program.cols
    for route, to in ((Route.FEED, Route.NEXT_REGION), (Route.NEXT_WAFER, Route.NEXT_REGION),
                      (Route.ROWS, Route.FEED)):
        send = int(np.flatnonzero((c["op"] == Op.SEND) & (c["route"] == route))[0])

        def rerouted(cols, s=send, new=to):
            cols["route"][s] = new
            return cols
        assert "link-range" in _kinds(_mutated(program, rerouted), target), route


def test_metadata_that_moves_a_region_or_renames_its_roles_is_flagged(split):
    """The interpreter re-derives every stage's roles from its region: a region made smaller (so its
    trees would be shorter), one off the mesh, two that overlap, or a role list edited, are hazards."""
    target, build = split
    program = load_program(build / "decode.prog")

    def with_meta(edit) -> set[str]:
        meta = json.loads(json.dumps(program.meta))
        edit(meta)
        return {h.kind for h in execute(program.with_meta(meta), load_target(str(target))).hazards}

    def smaller(meta):
        meta["stages"][0]["region"]["rows"] = 2

    def off_the_mesh(meta):
        meta["stages"][0]["region"]["col"] = 15

    def vast(meta):  # refused from its corner and size alone, before any role is derived
        meta["stages"][0]["region"]["rows"] = 10**9

    def overlapping(meta):
        meta["stages"][1]["region"] = dict(meta["stages"][0]["region"])

    def renamed(meta):
        meta["roles"][1][2] += 1
    for edit in (smaller, off_the_mesh, vast, overlapping, renamed):
        assert "roles" in with_meta(edit), edit.__name__
