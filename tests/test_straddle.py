"""A stage that fits one 72-chip group laid out across two (what --objective chips does where that spans
fewer chips, placement.straddle_start): the plan prices its collectives over the one link joining the
groups, the build is hazard-free and decodes the reference's tokens, and the table names idle chips."""

import json
from pathlib import Path

from rich.console import Console

from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.plan.reader import read_plan
from compiler.plan.report import render_plan
from compiler.planner import plan_placed
from targets import load_target

ARGS = ["--target", "lpu-mini", "--context", "24", "--prompt", "16", "--prefill-chunk", "8"]


def _pinned(capsys, tmp_path: Path, first_chip: int, tp: int = 16) -> tuple[list[str], dict]:
    """tiny-llama (16 heads) planned, then pinned to its layers on chips first_chip .. first_chip + tp - 1
    and its head on the next chip."""
    fields = {"num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 16, "intermediate_size": 192}
    model = json.loads(Path("examples/models/tiny-llama.json").read_text()) | fields
    (tmp_path / "config.json").write_text(json.dumps(model))
    args = [str(tmp_path / "config.json"), *ARGS]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = {k: v for k, v in plan["stages"][0].items() if k != "kv_layout"}
    end = first_chip + tp
    plan["stages"] = [dict(first, units=["embed", "layers.1"], tp=tp, chip_range=[first_chip, end - 1]),
                      dict(first, units=["head", "head"], tp=1, chip_range=[end, end])]
    path = tmp_path / f"plan{first_chip}.json"
    path.write_text(json.dumps(plan))
    options = CompileOptions(context=24, prompt=16, prefill_chunk=8)
    pinned, _ = plan_placed(args[0], load_target("lpu-mini"), options, pinned=read_plan(path))
    return [*args, "--plan", str(path)], pinned


def test_a_stage_across_two_groups_pays_their_link_and_decodes_the_reference(capsys, tmp_path):
    _, inside = _pinned(capsys, tmp_path, 0)
    args, across = _pinned(capsys, tmp_path, 64)  # chips 64..79: groups 0 and 1
    slower = across.stages[0].decode_us - inside.stages[0].decode_us
    wire = across.stages[0].bound_terms["wire_us"] - inside.stages[0].bound_terms["wire_us"]
    assert slower > 0 and wire > 0  # 7 hops to the farthest node, not 3, and one link between the groups
    assert main(["compile", *args, "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "b"), "--functional", "--check-reference", "--prompt",
                 "1 7 42 99 3 250 17 8 200 5 9 9 4 3", "--tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []


def test_table_says_which_chips_of_the_footprint_are_idle(capsys, tmp_path):
    """(No default plan leaves chips idle since stages may straddle groups: a pinned one does.)"""
    _, plan = _pinned(capsys, tmp_path, 64)
    assert plan.footprint_chips - plan.chips == 64
    console = Console(width=400, record=True)
    render_plan(plan, console)
    assert "footprint 81 chips, 64 of them idle (chips 0..63 hold no stage)" in console.export_text()
