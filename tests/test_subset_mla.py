"""A subset stage (passes.subset) over DeepSeek's layers, whose MLA attention (`layers.N`) and experts plus shared
expert (`layers.N.moe_shared`) are units of their own: tiny-deepseek-v3's layers 1 and 2 on 4 chips, the attention
on the first 2 (split layout: the latent projections by column) or 1, the experts on all 4 as a 4-chip stage lays
them out, pinned by a plan file, hazard-free and decoding the reference's tokens; what cannot lower is one line."""

import json
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.passes.subset import attention_split, shard_subset
from compiler.planner import lower as lower_graphs
from ir.errors import VerifyError
from ir.ops import Opcode
from tests.pinned_plans import pinned_plan, with_stage_fields

MODEL = "examples/models/tiny-deepseek-v3.json"
ARGS = ["--target", "lpu-mini", "--context", "24", "--prompt", "16", "--prefill-chunk", "8"]
OPTIONS = CompileOptions(context=24, prompt=16, prefill_chunk=8)
PROMPT = "1 7 42 99 3 250 17 8 200 5 9 9 4 3"


@pytest.fixture(scope="module")
def pinned(tmp_path_factory) -> Path:
    """The embedding and the dense layer 0 on chip 0, MoE layers 1 and 2 on chips 1..4, the head on chip 5."""
    stages = [("embed", "layers.0.mlp", 1, 0), ("layers.1", "layers.2.moe_shared", 4, 1), ("head", "head", 1, 5)]
    return pinned_plan(MODEL, "lpu-mini", OPTIONS, stages, tmp_path_factory.mktemp("subset_mla") / "plan.json")


def _subset(pinned: Path, tmp: Path, **fields) -> Path:
    """The pinned plan with the layers' stage's `fields` set."""
    return with_stage_fields(pinned, tmp, 1, **fields)


@pytest.mark.parametrize(("attention_tp", "kv_layout"), [(2, "split"), (1, "whole")])
def test_mla_attention_on_some_chips_and_experts_on_all_decode_the_reference(pinned, tmp_path, capsys,
                                                                            attention_tp, kv_layout):
    plan = _subset(pinned, tmp_path, attention_tp=attention_tp, kv_layout=kv_layout)
    out = tmp_path / "b"
    assert main(["compile", MODEL, *ARGS, "--plan", str(plan), "-o", str(out)]) == 0
    stage = json.loads((out / "plan.json").read_text())["stages"][1]
    assert (stage["attention_tp"], stage["kv_layout"], stage["experts"]) == (attention_tp, kv_layout, "parallel")
    capsys.readouterr()
    assert main(["run", str(out), "--functional", "--check-reference", "--prompt", PROMPT, "--tokens", "4",
                 "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["reference"]["passed"] and run["hazards"] == []
    mxm = [chip["mxm"] for chip in run["decode"]["busy_by_chip"]][1:5]
    assert min(mxm[:attention_tp]) > max(mxm[attention_tp:]) > 0  # the attention's projections on its ranks only
    regions = {r["name"]: r for r in json.loads((out / "memory.json").read_text())["stages"][1]["regions"]
               if r["phase"] == "both"}
    for layer in (1, 2):  # the latent cache on the attention's chips, the experts on every chip
        assert regions[f"layers.{layer}.latent_cache"]["ranks"] == [0, attention_tp]
        assert "ranks" not in regions[f"layers.{layer}.mlp.experts.gate"]
        assert regions[f"layers.{layer}@zeros"]["ranks"] == [attention_tp, 4]
    if attention_tp == 2:
        again = tmp_path / "again"
        assert main(["compile", MODEL, *ARGS, "--plan", str(out / "plan.json"), "-o", str(again)]) == 0
        assert all((out / f).read_bytes() == (again / f).read_bytes()
                   for f in ("decode.prog", "prefill.prog", "sram.img"))


def test_an_attention_unit_ends_at_its_mix_and_a_moe_unit_is_its_body():
    _, graphs = lower_graphs(MODEL, OPTIONS)
    attention, moe = (list(graphs.decode.ops_in(sc)) for sc in ("layers.1", "layers.1.moe_shared"))
    assert attention_split(attention) == len(attention)
    sub = shard_subset(attention, 4, 2)
    assert not sub.body and [op.opcode for op in sub.mix] == [Opcode.ALLREDUCE, Opcode.ADD]
    assert [op.opcode for op in sub.head if op.opcode is Opcode.MLA_ATTENTION]
    rest = shard_subset(moe, 4, 2)
    assert not (rest.head or rest.zeros or rest.mix) and [op for op in rest.body if op.opcode is Opcode.EXPERTS]
    with pytest.raises(VerifyError, match="need the MLP in its attention's unit"):
        shard_subset(moe, 4, 2, share=16)


@pytest.mark.parametrize(("fields", "units", "error"), [
    ({"attention_tp": 3}, None, "stages[1].attention_tp: layers.1: 3 chips do not split its attention"),
    ({"attention_tp": 2, "mlp_share": 16}, None, "stages[1].attention_tp: layers.1: 16 MLP features on each"),
    ({"attention_tp": 2}, ["layers.1.moe_shared", "layers.1.moe_shared"], "have no attention to run on some"),
])
def test_a_subset_of_deepseek_the_lowering_cannot_run_is_one_line(pinned, tmp_path, capsys, fields, units, error):
    plan = json.loads(_subset(pinned, tmp_path, **fields).read_text())
    if units:  # the MoE unit alone between layer 1's attention and layer 2
        plan["stages"][0]["units"][1] = "layers.1"
        plan["stages"][1]["units"] = units
        plan["stages"].insert(2, {"units": ["layers.2", "layers.2.moe_shared"], "tp": 1, "chip_range": [5, 5]})
        plan["stages"][3]["chip_range"] = [6, 6]
    path = tmp_path / "refused.json"
    path.write_text(json.dumps(plan))
    assert main(["compile", MODEL, *ARGS, "--plan", str(path), "-o", str(tmp_path / "b")]) != 0
    err = capsys.readouterr().err
    assert error in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "b").exists()
