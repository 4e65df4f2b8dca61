"""A prefill hand-off that does not trail holds its sending stage for its SENDs (codegen.phase.timeline's send
piece), and a stage-wide team's gather over the nodes of a receiving stage across two groups takes turns on the
groups' links (codegen.stage's levels over NodeWires.of_span): the plan's recurrence (reach.pipelined holds_s,
cost.hop_send_s) and hand-off time (cost.hop_s `across`) follow both."""

import json

import pytest

from compiler.backends.chips import planner as chip_planner
from compiler.cli import main
from compiler.codegen.collectives import levels
from compiler.partition import cost
from compiler.partition.mesh import clique_rounds
from compiler.plan.reach import pipelined
from targets import load_target
from targets.topology import node_wires

ARGS = ["tiny-deepseek-v3", "--target", "lpu-mini", "--context", "72", "--prompt", "64", "--prefill-chunk", "8"]


def test_a_held_sender_starts_its_next_chunk_after_its_sends():
    """Stages of 2 s and 1 s a chunk, the hand-off into the second holding the first 0.5 s: the first does chunk i
    at 2.5i .. 2.5i + 2, the second ends chunk 2 at 5 + 2 + 1 = 8 s; unheld, 4 + 2 + 1 = 7 s."""
    times = [[2.0, 1.0]]
    assert pipelined(times, [0, 0, 0], None, [[0.0, 0.5]]) == pytest.approx(8.0)
    assert pipelined(times, [0, 0, 0]) == pytest.approx(7.0)


def test_a_stage_wide_gather_across_groups_takes_the_lowerings_slots():
    """64 chips from chip 0 lie in one group of lpu, from chip 64 across two: the plan's slots are the levels'."""
    lpu = load_target("lpu")
    h = cost.handoff(64, 64, 3, lpu)
    assert h.team == 64  # the whole stage's team, gathered over its nodes
    fabric = cost._Fabric.of(lpu)
    for first in (0, 64):
        outer = levels(64, 8, lpu.global_links_per_chip, lambda q: 3,
                       pair_links=node_wires(lpu).of_span(lpu, first, 64))[1]
        lowered = clique_rounds(outer.group, outer.links, outer.crowd, outer.pair_links)
        assert fabric.gather_nodes(h, first // 72 != (first + 63) // 72)[2] == lowered
    assert cost.hop_s(229376, 3, h, lpu, True) > cost.hop_s(229376, 3, h, lpu)


def _pinned(capsys, tmp_path, tp: int) -> dict:
    """tiny-deepseek-v3 on two stages of `tp` chips in one node, every layer on the first (the bottleneck, its
    hand-off into the head held in its span): the plan's figures."""
    assert main(["plan", *ARGS, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = {k: v for k, v in plan["stages"][0].items() if k != "kv_layout"}
    plan["stages"] = [dict(first, units=["embed", "layers.2.moe_shared"], tp=tp, chip_range=[0, tp - 1]),
                      dict(first, units=["head", "head"], tp=tp, chip_range=[tp, 2 * tp - 1])]
    path = tmp_path / "pinned.json"
    path.write_text(json.dumps(plan))
    return plan | {"path": str(path)}


def test_the_plans_ttft_follows_the_held_sender(capsys, tmp_path, monkeypatch):
    pinned = _pinned(capsys, tmp_path, 2)
    out = tmp_path / "build"
    assert main(["compile", *ARGS, "--plan", pinned["path"], "-o", str(out)]) == 0
    capsys.readouterr()
    estimate = json.loads((out / "plan.json").read_text())["prefill"]["ttft_ms"]
    assert main(["run", str(out), "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["hazards"] == []
    scheduled = run["prefill"]["ttft_ms"]
    monkeypatch.setattr(chip_planner, "hop_send_s", lambda *a: 0.0)
    assert main(["compile", *ARGS, "--plan", pinned["path"], "-o", str(tmp_path / "unheld")]) == 0
    unheld = json.loads((tmp_path / "unheld" / "plan.json").read_text())["prefill"]["ttft_ms"]
    assert unheld < estimate <= scheduled  # the hold brings the estimate toward the schedule
    assert estimate == pytest.approx(scheduled, rel=0.1)
