"""`sramflow compile` and `sramflow inspect` as a user runs them, and what every Program must satisfy.

The small case is tiny-llama on a 64 KiB-per-chip LPU (a target file the test writes):
two pipeline stages of four chips, so tensor-parallel collectives and a hand-off appear
in a program small enough to read.
"""

import hashlib
import json
import os
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from ir.asm import parse_asm
from ir.isa import Op, UnitKind
from ir.program_io import load_program
from targets import load_target

GOLDENS = Path(__file__).parent / "goldens"
TINY_TARGET = 'base = "lpu-mini"\nname = "lpu-64k"\n[chip]\nsram_bytes = "64 KiB"\nprogram_reserve_bytes = "1489 B"\n'
TINY_ARGS = ["tiny-llama", "--context", "256", "--prompt", "64"]


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("target") / "lpu-64k.toml"
    path.write_text(TINY_TARGET)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_target) -> Path:
    out = tmp_path_factory.mktemp("builds") / "tiny"
    assert main(["compile", *TINY_ARGS, "--target", tiny_target, "-o", str(out)]) == 0
    return out


def inspect_json(capsys, *args) -> dict:
    assert main(["inspect", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_build_directory_holds_every_artifact_with_its_hash(tiny):
    manifest = json.loads((tiny / "manifest.json").read_text())
    names = {"plan.json", "decode.ir", "prefill.ir", "decode.prog", "prefill.prog", "memory.json", "sram.img",
             "target.toml"}
    assert set(manifest["files"]) == names
    assert manifest["tool"] == "sramflow" and manifest["target"] == "lpu-64k"
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((tiny / name).read_bytes()).hexdigest() == digest
    assert (tiny / "decode.ir").read_text().startswith("graph ")


def test_inspect_summary_is_measured_from_the_programs(capsys, tiny):
    figures = inspect_json(capsys, str(tiny))
    decode = load_program(tiny / "decode.prog")
    plan = json.loads((tiny / "plan.json").read_text())
    span = int((decode.cols["issue"] + decode.cols["cycles"]).max())
    assert figures["chips"] == plan["chips"] == 8
    assert figures["decode"]["makespan_cycles"] == span
    assert figures["decode"]["latency_us"] == pytest.approx(span / decode.clock_hz * 1e6, abs=1e-3)
    assert figures["decode"]["tokens_per_s"] == pytest.approx(1e6 / figures["decode"]["latency_us"], rel=1e-3)
    assert figures["decode"]["estimate_us"] == plan["decode"]["latency_us"]
    assert figures["decode"]["bound_us"] <= figures["decode"]["latency_us"]
    assert figures["instructions"] == len(decode) + len(load_program(tiny / "prefill.prog"))
    assert figures["prefill"]["makespan_cycles"] > figures["decode"]["makespan_cycles"]
    stages = figures["decode"]["stages"]
    assert [s["estimate_us"] for s in stages] == [s["decode_us"] for s in plan["stages"]]
    first = decode.meta["chunk_starts"][0][0] / decode.clock_hz * 1e6
    assert sum(s["scheduled_us"] for s in stages) == pytest.approx(figures["decode"]["latency_us"] - first, abs=1e-2)


def test_inspect_prints_a_readable_summary_with_the_memory_map(capsys, tiny):
    assert main(["inspect", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "8 chips" in out and "SRAM map per chip" in out and "decode latency / token" in out


def test_asm_of_one_chip_parses_back_to_its_instructions(capsys, tiny):
    assert main(["inspect", str(tiny), "--chip", "5", "--asm"]) == 0
    text = capsys.readouterr().out
    decode = load_program(tiny / "decode.prog")
    assert parse_asm(text) == decode.window([5])
    assert "chip 5 {" in text and "chip 4 {" not in text


def test_golden_assembly_of_the_first_chip(capsys, tiny, request):
    assert main(["inspect", str(tiny), "--chip", "0", "--asm"]) == 0
    text = capsys.readouterr().out
    golden = GOLDENS / "tiny-llama.lpu-64k.decode.chip0.s"
    if request.config.getoption("--update-goldens"):
        golden.write_text(text)
    assert text == golden.read_text(), "schedule changed; rerun with --update-goldens if that is intended"


def test_gantt_and_trace_files(tmp_path, tiny):
    png, trace = tmp_path / "t.png", tmp_path / "t.json"
    assert main(["inspect", str(tiny), "--chip", "0-7", "--cycles", "0:3000", "--gantt", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["inspect", str(tiny), "--trace", str(trace)]) == 0
    events = json.loads(trace.read_text())["traceEvents"]
    decode = load_program(tiny / "decode.prog")
    assert sum(e["ph"] == "X" for e in events) == len(decode)
    assert {e["args"]["name"] for e in events if e["name"] == "process_name"} == {f"chip {c}" for c in range(8)}


def test_trace_slices_sit_on_whole_nanoseconds_and_never_overlap_on_a_thread(tmp_path, tiny):
    """ts and dur are read exactly (Decimal): every slice starts and ends on a whole nanosecond of a
    cycle boundary, and the next slice of its thread starts no earlier than it ends."""
    trace = tmp_path / "t.json"
    assert main(["inspect", str(tiny), "--phase", "prefill", "--trace", str(trace)]) == 0
    doc = json.loads(trace.read_text(), parse_float=Decimal)
    clock = Fraction(doc["otherData"]["clock_hz"])
    slices: dict[tuple[int, int], list[tuple[Decimal, Decimal]]] = {}
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            start, end = e["ts"] * 1000, (e["ts"] + e["dur"]) * 1000
            assert start == int(start) and end == int(end)
            assert int(start) == e["args"]["issue"] * 10**9 * clock.denominator // clock.numerator
            slices.setdefault((e["pid"], e["tid"]), []).append((start, end))
    assert doc["displayTimeUnit"] == "ns" and len(slices) > 8
    for spans in slices.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_compiling_twice_in_fresh_processes_is_byte_identical(tmp_path, tiny_target):
    digests = []
    for seed in ("1", "2"):
        out = tmp_path / f"b{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-m", "compiler.cli", "compile", *TINY_ARGS, "--target", tiny_target,
                        "--precision", "int8", "-o", str(out)], check=True, env=env, capture_output=True)
        digests.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert digests[0] == digests[1]


# ---------------------------------------------------------------- what every program must satisfy


def test_units_never_overlap_and_sends_meet_their_receives(tiny):
    for name in ("decode.prog", "prefill.prog"):
        p = load_program(tiny / name)
        c = p.cols
        for _, kind, _, rows in p.queues():
            start, end = c["issue"][rows], c["issue"][rows] + c["cycles"][rows]
            assert (start[1:] >= end[:-1]).all(), f"{name}: a {UnitKind(kind).name} queue overlaps itself"
        sends = {(int(a), int(b), int(t)): int(i) for a, b, t, i, o in
                 zip(c["chip"], c["peer"], c["tag"], c["issue"], c["op"], strict=True) if o == Op.SEND}
        recvs = {(int(b), int(a), int(t)): int(i) for a, b, t, i, o in
                 zip(c["chip"], c["peer"], c["tag"], c["issue"], c["op"], strict=True) if o == Op.RECV}
        assert sends.keys() == recvs.keys() and sends, f"{name}: unmatched sends or receives"
        assert all(recvs[k] > sends[k] for k in sends), f"{name}: a receive before its send"


def test_each_chip_streams_its_weights_once_per_token(tiny):
    """Hand check: the decode MXM passes on a chip read every weight byte of its stage once."""
    memory = json.loads((tiny / "memory.json").read_text())
    p = load_program(tiny / "decode.prog")
    c = p.cols
    for stage in memory["stages"]:
        weights = [r for r in stage["regions"] if r["kind"] == "param" and not r["name"].endswith(".scale")
                   and "norm" not in r["name"] and "embed" not in r["name"]]
        chip = stage["first_chip"]
        rows = (c["chip"] == chip) & (c["op"] == Op.READ)
        for r in weights:
            inside = rows & (c["src"] >= r["addr"]) & (c["src"] < r["addr"] + r["bytes"])
            assert int(c["src_bytes"][inside].sum()) == r["bytes"], r["name"]


def test_memory_regions_are_disjoint_and_fit(tiny, tiny_target):
    usable = load_target(tiny_target).chip.usable_sram_bytes
    for stage in json.loads((tiny / "memory.json").read_text())["stages"]:
        for phase in ("decode", "prefill"):
            regions = sorted((r["addr"], r["addr"] + r["bytes"]) for r in stage["regions"]
                             if r["phase"] in (phase, "both") and r["kind"] != "port")
            assert all(a[1] <= b[0] for a, b in zip(regions, regions[1:], strict=False))
            assert regions[-1][1] <= usable
    assert np.all(load_program(tiny / "decode.prog").cols["src"] < usable)


# ---------------------------------------------------------------- user errors


def test_inspect_errors_are_one_line(capsys, tmp_path, tiny):
    assert main(["inspect", str(tmp_path)]) == 1
    assert "not a build directory" in capsys.readouterr().err
    assert main(["inspect", str(tiny), "--chip", "99", "--asm"]) == 1
    assert "chip 99 is not in the program" in capsys.readouterr().err
    assert main(["inspect", str(tiny), "--cycles", "9:3", "--asm"]) == 1
    assert "empty window" in capsys.readouterr().err


def test_a_failed_compile_leaves_nothing_behind(capsys, tmp_path):
    out = tmp_path / "never"
    assert main(["compile", "llama-3.1-70b", "--target", "lpu", "--chips", "8", "-o", str(out)]) == 1
    assert "chips" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_8_bit_kv_cache_compiles_and_runs_hazard_free(tmp_path, tiny_target, capsys):
    out = tmp_path / "kv8"
    assert main(["compile", *TINY_ARGS, "--target", tiny_target, "--kv-precision", "int8", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["run", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []
    memory = json.loads((out / "memory.json").read_text())
    assert any(r["name"].endswith("k_cache.scale") for s in memory["stages"] for r in s["regions"])
