"""A trailing hand-off (cost.handoff_trails): a stage inside one node sends each prefill chunk to a stage in
another node over global links while it goes on with the next chunk. The plan's recurrence (reach.pipelined)
and the compiled timeline (codegen.phase.timeline) both take it; the build stays hazard-free and matches the
reference, and both TTFTs fall against the hand-off held in the sender's span."""

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.backends.chips import planner as chip_planner
from compiler.cli import main
from compiler.codegen import phase
from compiler.plan.reach import pipelined
from ir.program import INSTANCE_NAMES
from targets import load_target

ARGS = ["tiny-llama", "--target", "lpu-mini", "--context", "72", "--prompt", "64", "--prefill-chunk", "8"]
PROMPT = " ".join(str(7 * i % 250 + 1) for i in range(64))


def test_a_trailing_hand_off_waits_only_for_the_wires_it_shares():
    """Two stages: 1 s a chunk, then 3 s a chunk of which 2 s are the hand-off into it on the wires alone.
    The wires take a chunk every 2 s from the first's end, so the second gets chunk i at 3 + 2i s and ends
    the third at 7 + 1 = 8 s; the hand-off held in the stage's time, 1 + 3 x 3 = 10 s."""
    times, trailing = [[1.0, 3.0]], [[0.0, 2.0]]
    assert pipelined(times, [0, 0, 0], trailing) == pytest.approx(8.0)
    assert pipelined(times, [0, 0, 0]) == pytest.approx(10.0)


def test_the_rule_needs_the_sender_inside_one_node_and_no_receiver_in_it():
    lpu = load_target("lpu")
    trails = chip_planner.handoff_trails
    assert trails((8, 8), (16, 8), lpu) and trails((0, 4), (8, 8), lpu)
    assert not trails((0, 4), (4, 4), lpu)  # one node: local links, which the stage's collectives use
    assert not trails((0, 16), (16, 8), lpu)  # a sender over two nodes reduces over global links


def _build(capsys, tmp_path: Path, name: str, *weights: str) -> tuple[float, dict]:
    """tiny-llama pinned to two stages of two chips in different nodes; its plan's TTFT and the build's run
    (none with `weights`, extra compile options: compiled only)."""
    assert main(["plan", *ARGS, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = {k: v for k, v in plan["stages"][0].items() if k != "kv_layout"}
    plan["stages"] = [dict(first, units=["embed", "layers.0"], tp=2, chip_range=[0, 1]),
                      dict(first, units=["layers.1", "head"], tp=2, chip_range=[8, 9])]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(plan))
    out = tmp_path / name
    assert main(["compile", *ARGS, "--plan", str(path), "-o", str(out), *weights]) == 0
    capsys.readouterr()
    estimate = json.loads((out / "plan.json").read_text())["prefill"]["ttft_ms"]
    if weights:
        return estimate, {}
    assert main(["run", str(out), "--functional", "--check-reference", "--prompt", PROMPT, "--tokens", "2",
                 "--json"]) == 0
    return estimate, json.loads(capsys.readouterr().out)


def test_a_trailing_hand_off_is_hazard_free_matches_the_reference_and_shortens_ttft(capsys, tmp_path, monkeypatch):
    estimate, run = _build(capsys, tmp_path, "trailing")
    assert run["reference"]["passed"] and run["hazards"] == []
    scheduled = run["prefill"]["ttft_ms"]
    assert scheduled == pytest.approx(estimate, rel=0.05)
    for module in (phase, chip_planner):  # the hand-off held in the sender's span, as before the rule
        monkeypatch.setattr(module, "handoff_trails", lambda *_: False)
    held_estimate, held = _build(capsys, tmp_path, "held")
    assert held["hazards"] == []
    assert estimate < held_estimate and scheduled < held["prefill"]["ttft_ms"]


def test_a_fault_inside_two_overlapping_instances_is_flagged_as_unrolled(capsys, tmp_path, monkeypatch):
    """On the trailing build the sending chips' instances overlap; an instance doubled one cycle later inside
    such an overlap is flagged, with the verdict of the unrolled rows, however the chips are batched."""
    from targets import block_checks
    from targets.build_dir import load_build
    from targets.interpreter import execute
    from targets.timing import Timing, durations
    from tests.test_instances import kinds, unrolled

    _build(capsys, tmp_path, "b", "--weights", "none")
    build = load_build(tmp_path / "b")
    prefill = build.programs["prefill"]
    dense = block_checks.overlapping_chips(prefill, durations(Timing.of(build.system), prefill.body))
    assert len(dense) and kinds(prefill, build.system) == {}
    first, last = prefill.spans(durations(Timing.of(build.system), prefill.body))
    inst = prefill.inst
    mine = np.flatnonzero(inst["chip"] == dense[0])
    mine = mine[np.argsort(inst["issue"][mine] + first[inst["block"][mine]], kind="stable")]
    start = inst["issue"][mine] + first[inst["block"][mine]]
    end = inst["issue"][mine] + last[inst["block"][mine]]
    j = mine[1 + int(np.flatnonzero(start[1:] < np.maximum.accumulate(end)[:-1])[0])]  # starts inside another
    doubled = {n: np.r_[inst[n], inst[n][j] + (1 if n == "issue" else 0)] for n in INSTANCE_NAMES}
    broken = prefill.with_instances(doubled)
    found = kinds(broken, build.system)
    assert "unit-busy" in found and "stream-raw" in found
    assert found == kinds(unrolled(broken), build.system)
    monkeypatch.setattr(block_checks, "DENSE_BATCH_ROWS", 1)  # every overlapping chip a batch of its own
    assert kinds(broken, build.system) == found
    # the broken chip's instances copied onto a chip that runs nothing: two alike overlapping chips, checked once
    # and counted twice, as their unrolled rows are
    spare = min(set(range(prefill.chips)) - set(inst["chip"].tolist()))
    on = np.flatnonzero(doubled["chip"] == dense[0])
    twice = broken.with_instances({n: np.r_[doubled[n], np.full(len(on), spare) if n == "chip" else doubled[n][on]]
                                   for n in INSTANCE_NAMES})
    found = kinds(twice, build.system)
    assert found["unit-busy"] >= 2 and found == kinds(unrolled(twice), build.system)
    assert execute(broken, build.system).digest() == execute(broken, build.system).digest()
