"""Stages that end inside a layer (planner._layer_choice): where a whole-layer layout spans more than SPLIT_GAP
over its capacity bound, the planner also plans each layer's attention and MLP as units of their own and takes
that layout where it spans fewer chips and decodes about as fast; compile lowers its graphs so, the functional
run matches the reference, and the plan file round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.cli import main

# tiny-llama's two layers on 130 KiB chips: whole layers take 4 chips, the bound is 3, split layers fit 3
TARGET = 'base = "lpu-mini"\nname = "lpu-130k"\n[chip]\nsram_bytes = "130 KiB"\n'
ARGS = ["--context", "64", "--prompt", "16"]


@pytest.fixture(scope="module")
def split_build(tmp_path_factory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("split")
    (tmp / "t.toml").write_text(TARGET)
    args = ["tiny-llama", "--target", str(tmp / "t.toml"), *ARGS]
    assert main(["compile", *args, "-o", str(tmp / "b")]) == 0
    return tmp / "b", args


def _plan(build: Path) -> dict:
    return json.loads((build / "plan.json").read_text())


def test_the_planner_ends_a_stage_inside_a_layer_where_that_spans_fewer_chips(split_build):
    plan = _plan(split_build[0])
    said = plan["layer_units"]
    assert said["split"] and said["layouts"]["blocks"]["footprint_chips"] < said["layouts"]["layers"]["footprint_chips"]
    assert plan["footprint_chips"] == said["layouts"]["blocks"]["footprint_chips"] == plan["chips_lower_bound"]
    assert plan["decode"]["latency_us"] <= 1.05 * said["layouts"]["layers"]["decode_us"]
    assert any(s["units"][0] == "layers.0.mlp" for s in plan["stages"])  # a stage starts with a layer's MLP


def test_a_split_build_runs_as_the_reference(split_build, capsys):
    assert main(["run", str(split_build[0]), "--functional", "--check-reference", "--prompt", "1 7 42 99 3 25 17 8 200",
                 "--tokens", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []


def test_its_plan_file_compiles_the_same_build(split_build, tmp_path):
    build, args = split_build
    assert main(["compile", *args, "--plan", str(build / "plan.json"), "-o", str(tmp_path / "b")]) == 0
    for name in ("decode.prog", "prefill.prog", "memory.json"):
        assert (tmp_path / "b" / name).read_bytes() == (build / name).read_bytes(), name
    assert _plan(tmp_path / "b")["layer_units"] == {"split": True, "why": "as the plan file gives"}


def test_a_plan_file_naming_a_block_without_the_split_is_one_line(split_build, tmp_path, capsys):
    build, args = split_build
    plan = _plan(build)
    del plan["layer_units"]
    (tmp_path / "p.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp_path / "p.json"), "-o", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip()
    assert "no unit 'layers.0.mlp'" in err and '"layer_units": {"split": true}' in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_pinned_counts_and_the_latency_objective_keep_whole_layers(split_build, capsys):
    _, args = split_build
    for extra in (["--chips", "4"], ["--objective", "latency"]):
        assert main(["plan", *args, *extra, "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert "layer_units" not in plan and all(s["units"][0].count(".") < 2 for s in plan["stages"])


def test_a_max_chips_only_split_layers_meet_is_planned_so(split_build, capsys):
    _, args = split_build
    assert main(["plan", *args, "--max-chips", "3", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["footprint_chips"] == 3 and plan["layer_units"]["split"]
    assert plan["layer_units"]["why"] == "only it fits"


def test_llama_3_2_1b_spans_its_capacity_bound(capsys):
    """Issue 16: 13 chips against a bound of 12 with whole layers (12 would need every chip 99% full); a stage
    ending between layer 13's attention and its MLP fits 12."""
    assert main(["plan", "llama-3.2-1b", "--target", "lpu", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["footprint_chips"] == plan["chips_lower_bound"] == 12
    assert plan["layer_units"]["layouts"]["layers"]["footprint_chips"] == 13
