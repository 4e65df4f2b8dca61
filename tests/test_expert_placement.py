"""Expert placement per stage (passes.shard.expert_split): feature-sliced, expert-parallel or a mix,
each compiled from a pinned plan and held to the graph IR reference in functional mode, with timing
that does not depend on the routing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.cli import main

PROMPTS = ("1 7 42 99 3 250 17 8 200 5", "240 3 3 77 128 16 9 1 64 33")


def _config(tmp: Path, model: str, **fields) -> str:
    if not fields:
        return model
    cfg = json.loads(Path(f"examples/models/{model}.json").read_text()) | fields
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _pinned(capsys, tmp: Path, model: str, tp: int, dim: int = 320, experts: str = "auto") -> Path:
    """The model's plan on lpu-mini with `dim` x `dim` matrix tiles (the placement counts whole tiles:
    passes.expert_tiles; a tiny model's experts fit one lpu tile whatever the split), laid out again as
    one stage of `tp` chips, its experts spread as --experts `experts` asks."""
    target = tmp / "t.toml"
    target.write_text(f'base = "lpu-mini"\nname = "lpu-mini-{dim}"\n[chip]\nmatrix_dim = {dim}\n')
    args = [model, "--target", str(target), "--context", "64", "--prompt", "16", "--prefill-chunk", "8",
            "--experts", experts]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first, last = plan["stages"][0], plan["stages"][-1]
    plan["stages"] = [dict(first, units=[first["units"][0], last["units"][1]], tp=tp, chip_range=[0, tp - 1])]
    path = tmp / "plan.json"
    path.write_text(json.dumps(plan))
    out = tmp / f"b{tp}"
    assert main(["compile", *args, "--plan", str(path), "-o", str(out)]) == 0
    capsys.readouterr()
    return out


def _runs_as_the_reference(capsys, build: Path) -> set:
    cycles = set()
    for prompt in PROMPTS:
        assert main(["run", str(build), "--functional", "--check-reference", "--prompt", prompt, "--tokens", "3",
                     "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["hazards"] == []
        cycles.add((got["decode"]["latency_cycles"], got["prefill"]["latency_cycles"]))
    return cycles


@pytest.mark.parametrize(("model", "fields", "tp", "dim", "placement"), [
    ("tiny-mixtral", {}, 2, 16, "sliced"),
    ("tiny-mixtral", {}, 4, 16, "sliced"),
    ("tiny-mixtral", {}, 2, 320, "parallel"),  # one tile whatever the split: the fewest experts a chip
    ("tiny-mixtral", {"intermediate_size": 90}, 4, 16, "sliced"),  # 23 + 23 + 23 + 21 features
    ("tiny-mixtral", {"intermediate_size": 9}, 4, 16, "parallel"),  # 9 features do not go 4 ways
    ("tiny-mixtral", {"intermediate_size": 9, "num_experts_per_tok": 1}, 4, 4, "mixed 2x2"),
    ("tiny-deepseek-v3", {}, 2, 16, "sliced"),
    ("tiny-deepseek-v3", {}, 4, 16, "mixed 2x2"),  # sliced ties on decode tiles, installs twice the experts
    ("tiny-jamba", {}, 2, 16, "sliced"),
    ("tiny-jamba", {}, 4, 16, "sliced"),
])
def test_each_placement_runs_as_the_reference_under_one_schedule(tmp_path, capsys, model, fields, tp, dim, placement):
    build = _pinned(capsys, tmp_path, _config(tmp_path, model, **fields), tp, dim)
    stage = json.loads((build / "plan.json").read_text())["stages"][0]
    assert stage["experts"] == placement and stage["tp"] == tp
    assert len(_runs_as_the_reference(capsys, build)) == 1  # two routings, one cycle count


@pytest.mark.parametrize(("tp", "experts", "placement"), [
    (4, "sliced", "sliced"),  # the rule's choice here is mixed 2x2
    (4, "parallel", "parallel"),
    (4, "2", "mixed 2x2"),  # the number of expert groups: here also the rule's choice
])
def test_experts_option_places_tiny_deepseek_as_asked_and_it_runs_as_the_reference(tmp_path, capsys, tp, experts,
                                                                                    placement):
    build = _pinned(capsys, tmp_path, "tiny-deepseek-v3", tp, 16, experts)
    stage = json.loads((build / "plan.json").read_text())["stages"][0]
    assert stage["experts"] == placement and stage["tp"] == tp
    assert len(_runs_as_the_reference(capsys, build)) == 1  # two routings, one cycle count


@pytest.mark.parametrize(("model", "target", "experts", "says"), [
    ("tiny-deepseek-v3", "lpu-mini", "wide",
     "--experts must be one of auto, parallel, sliced or a positive number of expert groups, got 'wide'"),
    ("tiny-deepseek-v3", "lpu-mini", "0", "--experts must be one of"),
    ("tiny-deepseek-v3", "lpu-mini", "3", "--experts 3: layers.1.moe_shared's 8 experts do not make 3 equal groups"),
    ("tiny-llama", "lpu-mini", "sliced", "--experts sliced: tiny_llama_decode has no experts to place"),
    ("tiny-mixtral", "wse3", "parallel", "--experts parallel: wse3 is a wafer"),
])
def test_experts_option_refuses_what_it_cannot_place_in_one_line(capsys, model, target, experts, says):
    assert main(["plan", model, "--target", target, "--experts", experts]) != 0
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(("experts", "says"), [
    ("auto", "(the static timing rule: fewest expert tiles a decode step streams, then a prefill chunk installs; "),
    ("parallel", "experts: parallel on 2 chips (as --experts parallel asks)"),
])
def test_the_plan_report_says_how_the_experts_are_placed_and_why(capsys, experts, says):
    assert main(["plan", "tiny-mixtral", "--target", "lpu-mini", "--objective", "latency", "--experts", experts]) == 0
    assert says in capsys.readouterr().out.replace("\n", " ")
