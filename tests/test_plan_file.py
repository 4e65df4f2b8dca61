"""`sramflow compile --plan plan.json`: a plan's stages, maybe edited, compiled as given and costed afresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.cli import main
from ir.program_io import load_program
from targets import load_target
from targets.interpreter import execute

WAFER = 'base = "wse3"\nmesh_rows = 24\nmesh_cols = 20\n'


def _plan(capsys, *args: str) -> dict:
    assert main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _write(tmp: Path, plan: dict, name: str = "plan.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps(plan))
    return path


def _refusal(capsys, *args) -> str:
    assert main(list(map(str, args))) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_an_unedited_plan_compiles_to_the_searched_build(capsys, tmp_path):
    plan = _plan(capsys, "tiny-llama", "--target", "lpu-mini")
    assert main(["compile", "tiny-llama", "--target", "lpu-mini", "--plan", str(_write(tmp_path, plan)),
                 "-o", str(tmp_path / "pinned"), "--weights", "none"]) == 0
    assert main(["compile", "tiny-llama", "--target", "lpu-mini", "-o", str(tmp_path / "searched"),
                 "--weights", "none"]) == 0
    pinned, searched = (json.loads((tmp_path / b / "plan.json").read_text()) for b in ("pinned", "searched"))
    assert pinned["solver"]["status"] == "PINNED"
    assert {k: v for k, v in pinned.items() if k != "solver"} == {k: v for k, v in searched.items() if k != "solver"}
    for phase in ("decode", "prefill"):
        assert (tmp_path / "pinned" / f"{phase}.prog").read_bytes() == \
            (tmp_path / "searched" / f"{phase}.prog").read_bytes()


def test_an_edited_plan_is_compiled_as_given_and_costed_afresh(capsys, tmp_path):
    """Split tiny-llama's second stage in two and give the first twice its chips, the others from chip 8:
    the build runs exactly that layout, hazard-free, and its figures are the model's, not the file's."""
    plan = _plan(capsys, "tiny-llama", "--target", "lpu-mini")
    first, second = plan["stages"]
    first["tp"], first["chip_range"] = 4, [0, 3]
    third = dict(second, units=["head", "head"], tp=2, chip_range=[10, 11])
    second.update(units=["layers.1", "layers.1"], chip_range=[8, 9])
    plan["stages"].append(third)
    plan["decode"]["latency_us"] = 1.0  # a figure in the file is never read
    out = tmp_path / "edited"
    assert main(["compile", "tiny-llama", "--target", "lpu-mini", "--plan", str(_write(tmp_path, plan)),
                 "-o", str(out), "--weights", "none"]) == 0
    built = json.loads((out / "plan.json").read_text())
    assert [(s["units"], s["chip_range"]) for s in built["stages"]] == [
        (["embed", "layers.0"], [0, 3]), (["layers.1", "layers.1"], [8, 9]), (["head", "head"], [10, 11])]
    assert built["chips"] == 8 and built["decode"]["latency_us"] > 1.0
    decode = load_program(out / "decode.prog")
    assert decode.chips == 12 and execute(decode, load_target("lpu-mini")).hazards == []


def test_a_wafer_plan_round_trips(capsys, tmp_path):
    target = tmp_path / "wafer.toml"
    target.write_text(WAFER)
    plan = _plan(capsys, "tiny-llama", "--target", str(target))
    assert main(["compile", "tiny-llama", "--target", str(target), "--plan", str(_write(tmp_path, plan)),
                 "-o", str(tmp_path / "w")]) == 0
    capsys.readouterr()
    built = json.loads((tmp_path / "w" / "plan.json").read_text())
    assert [s["region"] for s in built["stages"]] == [s["region"] for s in plan["stages"]]
    plan["stages"][0]["region"]["rows"] -= 1
    assert "not cells of one grid" in _refusal(capsys, "compile", "tiny-llama", "--target", target, "--plan",
                                               _write(tmp_path, plan, "bad.json"), "-o", tmp_path / "w2")


def _head_apart(plan: dict, tp: int, first: int) -> None:
    """The head moved to a stage of its own, on `tp` chips from chip `first`."""
    plan["stages"].append(plan["stages"][1] | {"index": 2, "units": ["head", "head"], "tp": tp,
                                               "chip_range": [first, first + tp - 1]})
    plan["stages"][1]["units"] = ["layers.1", "layers.1"]


@pytest.mark.parametrize("edit, words", [
    (lambda p: p["stages"][1].update(units=["layers.0", "head"]), "starts at layers.0, the stage after the last must "
                                                                  "start at layers.1"),
    (lambda p: p["stages"][1].update(units=["layers.1", "layers.1"]), "units head .. head have no stage"),
    (lambda p: p["stages"][0].update(units=["embed", "layers.9"]), "the model has no unit 'layers.9'"),
    (lambda p: _head_apart(p, 40, 4),  # 7 ids a chip: the 40th chip's would start past the 256
     "40 chips do not split unit head (it splits 1, 2, 3, 4, 5, 6, 7, 8, 16, 24, 32, 64, 128, 256 ways)"),
    (lambda p: p["stages"][1].update(chip_range=[1, 2]), "stages[1].chip_range starts at chip 1, inside stages[0]"),
    (lambda p: p["stages"][0].update(chip_range=[0, 5]), "chip_range 0..5 holds 6 chips, tp says 2"),
    (lambda p: p["options"].update(precision="int8"), "options.precision is 'int8', the command line's 'fp16'"),
    (lambda p: p.update(model="tiny-mixtral"), "a plan of tiny-mixtral on lpu-mini, not tiny-llama on lpu-mini"),
    (lambda p: p.pop("stages"), "not a plan"),
    (lambda p: p["stages"][0].update(kv_layout="rows"), 'stages[0].kv_layout: must be "split" or "whole"'),
    (lambda p: p["stages"][1].update(kv_layout="split"), "stages[1].kv_layout: units layers.1 .. head on 2 chips take "
                                                         "only the whole layout here"),
])
def test_a_plan_the_machine_cannot_hold_as_given_is_one_line(capsys, tmp_path, edit, words):
    plan = _plan(capsys, "tiny-llama", "--target", "lpu-mini")
    edit(plan)
    err = _refusal(capsys, "compile", "tiny-llama", "--target", "lpu-mini", "--plan", _write(tmp_path, plan),
                   "-o", tmp_path / "b")
    assert words in err and "plan.json" in err
    assert not (tmp_path / "b").exists()


def test_a_plan_that_is_not_json_names_its_line(capsys, tmp_path):
    (tmp_path / "plan.json").write_text('{\n  "stages": [\n')
    err = _refusal(capsys, "compile", "tiny-llama", "--target", "lpu-mini", "--plan", tmp_path / "plan.json", "-o",
                   tmp_path / "b")
    assert "plan.json:3:1: not valid JSON" in err
