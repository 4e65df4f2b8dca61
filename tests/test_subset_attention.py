"""A stage whose layers' attention runs on its first attention_tp ranks and the rest of each layer on all of
them (passes.subset; codegen.phase._subset_pieces): tiny-llama's two layers on 4 chips with the attention on
1, 2 or 3 (padded heads), the others' zero partial sums in the attention's all-reduce, compiled hazard-free and
decoding the reference's tokens, pinned by a plan file's attention_tp and mlp_share; a subset the lowering cannot
run is one line; the search takes such stages for llama-3.1-405b fp16."""

import json
from pathlib import Path

import pytest

from compiler.build import compile_model
from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.passes.subset import attention_split, shard_subset
from compiler.plan.search import SUBSET_SLACK
from compiler.planner import lower as lower_graphs
from compiler.planner import make_plan
from compiler.serving import build as serving_build
from compiler.speculation import Speculation
from ir.errors import ParseError, VerifyError
from ir.memory_map import MemoryMap
from ir.ops import Opcode
from tests.pinned_plans import pinned_plan, with_stage_fields

MODEL = "examples/models/tiny-llama.json"
ARGS = ["--target", "lpu-mini", "--context", "24", "--prompt", "16", "--prefill-chunk", "8"]
OPTIONS = CompileOptions(context=24, prompt=16, prefill_chunk=8)


@pytest.fixture(scope="module")
def pinned(tmp_path_factory) -> Path:
    """The embedding on chip 0, both layers on chips 1..4, the head on chip 5."""
    stages = [("embed", "embed", 1, 0), ("layers.0", "layers.1", 4, 1), ("head", "head", 1, 5)]
    return pinned_plan(MODEL, "lpu-mini", OPTIONS, stages, tmp_path_factory.mktemp("subset") / "plan.json")


def _subset(pinned: Path, tmp: Path, **fields) -> Path:
    """The pinned plan with the layers' stage's `fields` set."""
    return with_stage_fields(pinned, tmp, 1, **fields)


@pytest.mark.parametrize(("attention_tp", "share"), [(1, None), (2, 32), (3, 40)])
def test_a_subset_stage_decodes_the_reference_hazard_free(pinned, tmp_path, capsys, attention_tp, share):
    """Even MLP shares (44 of 176 features a chip), or uneven: 32 on each of 2 attention chips and 56 on the
    others, 40 on 3 and 56 on the last; the others' extra features sit where the attention's weights do on
    the attention chips."""
    plan = _subset(pinned, tmp_path, attention_tp=attention_tp, mlp_share=share)
    out = tmp_path / "b"
    assert main(["compile", MODEL, *ARGS, "--plan", str(plan), "-o", str(out)]) == 0
    stage = json.loads((out / "plan.json").read_text())["stages"][1]
    assert (stage["attention_tp"], stage.get("mlp_share")) == (attention_tp, share)
    capsys.readouterr()
    assert main(["run", str(out), "--functional", "--check-reference", "--prompt",
                 "1 7 42 99 3 250 17 8 200 5 9 9 4 3", "--tokens", "4", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["reference"]["passed"] and run["hazards"] == []
    mxm = [chip["mxm"] for chip in run["decode"]["busy_by_chip"]][1:5]
    # the attention's projections run only on its ranks
    assert min(mxm[:attention_tp]) > max(mxm[attention_tp:]) > 0
    regions = [r for r in json.loads((out / "memory.json").read_text())["stages"][1]["regions"]
               if r["phase"] == "both"]
    extra = [r for r in regions if "@extra" in r["name"]]
    assert bool(extra) == (share is not None)
    attention = [r for r in regions if "mlp" not in r["name"] and "post_attention" not in r["name"]]
    assert all(min(a["addr"] for a in attention) <= r["addr"] < max(a["addr"] + a["bytes"] for a in attention)
               for r in extra)
    # memory.json says which ranks hold a block of their own; the SRAM map shows the fullest chip's weights
    a, t = attention_tp, 4
    assert all(r["ranks"] == [0, a] for r in attention if "input_layernorm" not in r["name"]
               and not r["name"].endswith("@zeros"))
    assert all(r["ranks"] == [a, t] for r in extra)
    memory = MemoryMap.loads((out / "memory.json").read_text()).stages[1]
    per_chip = [sum(b.bytes for b in memory.blocks("decode", ("param",), rank)) for rank in range(t)]
    assert len(set(per_chip)) == len(memory.rank_classes()) and max(per_chip) < sum(
        b.bytes for b in memory.blocks("decode", ("param",)))
    assert main(["inspect", str(out)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "1–4" in line and "│" in line)
    assert f"{max(per_chip) / 1e3:,.2f}" in row
    again = tmp_path / "again"
    assert main(["compile", MODEL, *ARGS, "--plan", str(out / "plan.json"), "-o", str(again)]) == 0
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in ("decode.prog", "prefill.prog", "sram.img"))


def test_the_attention_part_ends_at_the_residual_add_and_a_group_of_all_chips_is_refused():
    _, graphs = lower_graphs(MODEL, OPTIONS)
    ops = list(graphs.decode.ops_in("layers.0"))
    end = attention_split(ops)
    assert ops[end - 1].opcode is Opcode.ADD and ops[end].opcode is Opcode.RMSNORM
    sub = shard_subset(ops, 4, 2)
    assert not [op for op in sub.head if op.opcode is Opcode.ALLREDUCE]  # its partial sums join the others' zeros
    assert [op.opcode for op in sub.zeros] == [Opcode.MUL] and sub.zeros[0].results[0].type == sub.head[-1].results[
        0].type
    assert [op.attr.get("group") for op in sub.mix] == [4, None]
    assert [op.attr["group"] for op in sub.body if op.opcode is Opcode.ALLREDUCE] == [4]
    assert attention_split(list(graphs.decode.ops_in("head"))) is None
    with pytest.raises(VerifyError, match="4 of 4 chips"):
        shard_subset(ops, 4, 4)
    uneven = shard_subset(ops, 4, 2, share=32)
    widths = [op.results[0].type.shape[-1] for part in (uneven.body, uneven.extra) for op in part
              if op.opcode is Opcode.MATMUL and op.attr.get("split") == "col"]
    assert widths == [32, 32, 24, 24]  # 4 x 32 + 2 x 24 = 176
    assert uneven.extra[-1].opcode is Opcode.ADD and [op.opcode for op in uneven.tail] == [Opcode.ALLREDUCE, Opcode.ADD]
    with pytest.raises(VerifyError, match="leave the others none"):
        shard_subset(ops, 4, 2, share=44)


@pytest.mark.parametrize(("fields", "error"), [
    ({"attention_tp": 4}, "stages[1].attention_tp: 4 is not fewer than the stage's 4 chips"),
    ({"mlp_share": 32}, "stages[1].mlp_share: only a stage with attention_tp"),
    ({"attention_tp": 2, "mlp_share": 44}, "stages[1].attention_tp: layers.0: 44 MLP features on each of 2 of 4"),
])
def test_a_subset_the_lowering_cannot_run_is_one_line(pinned, tmp_path, capsys, fields, error):
    plan = _subset(pinned, tmp_path, **fields)
    assert main(["compile", MODEL, *ARGS, "--plan", str(plan), "-o", str(tmp_path / "b")]) != 0
    err = capsys.readouterr().err
    assert error in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_llama_405b_takes_subset_stages_within_5_percent_of_its_bound(capsys):
    """fp16 on lpu: no whole-layout stage holds 3 layers on fewer than 128 chips (2 on 64); with the attention on
    64 chips (each kv head's cache by sequence over 8, a node) and fewer MLP features on those than on the
    others, stages of 6 and 8 layers fit 176 and 232 chips, within 1.05x the bound."""
    assert main(["plan", "llama-3.1-405b", "--target", "lpu", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["footprint_chips"] <= 1.05 * plan["chips_lower_bound"]
    subset = [s for s in plan["stages"] if "attention_tp" in s]
    assert {(s["attention_tp"], s["kv_layout"]) for s in subset} == {(64, "split")}  # as costed: read back
    assert all(s["memory_per_chip_bytes"]["headroom"] >= 0 and s["mlp_share"] * s["tp"] < 53248 for s in subset)
    assert sum(s["layers"][1] - s["layers"][0] + 1 for s in subset) == 126


def test_a_subset_stage_over_nodes_in_the_split_layout_decodes_the_reference(tmp_path, capsys):
    """tiny-llama widened to 16 heads on 4 kv heads and 4 layers, on 24 chips (3 nodes of lpu-mini) with the
    attention on 16 (two nodes, each kv head's cache by sequence over 4 chips) and 24 of 704 MLP features on
    each of those, 40 on the 8 others (the attention's all-reduce over all three nodes)."""
    fields = {"hidden_size": 128, "intermediate_size": 704, "num_attention_heads": 16, "num_key_value_heads": 4,
              "head_dim": 8, "vocab_size": 1024, "num_hidden_layers": 4}
    model = tmp_path / "wide.json"
    model.write_text(json.dumps(json.loads(Path(MODEL).read_text()) | fields))
    plan = json.loads(make_plan(str(model), "lpu-mini", OPTIONS).to_json())
    plan["stages"] = [{"units": ["embed", "embed"], "tp": 1, "chip_range": [0, 0]},
                      {"units": ["layers.0", "layers.3"], "tp": 24, "chip_range": [8, 31], "attention_tp": 16,
                       "mlp_share": 24, "kv_layout": "split"},
                      {"units": ["head", "head"], "tp": 1, "chip_range": [32, 32]}]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = tmp_path / "b"
    assert main(["compile", str(model), *ARGS, "--plan", str(tmp_path / "plan.json"), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["run", str(out), "--functional", "--check-reference", "--prompt", "1 7 42 99 3 250 17 8 200",
                 "--tokens", "2", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["reference"]["passed"] and run["hazards"] == []


def test_subset_stages_that_slow_decode_are_taken_only_under_max_chips(capsys):
    """llama-3.1-70b fp16 at 128K context: subset stages span 848 chips against 872 without them, but decode
    about a fifth slower, past search.SUBSET_SLACK: the default keeps the layout without them, --max-chips asks."""
    args = ["plan", "llama-3.1-70b", "--target", "lpu", "--context", "131072", "--json"]
    plans = []
    for more in ([], ["--max-chips", "848"]):
        assert main([*args, *more]) == 0
        plans.append(json.loads(capsys.readouterr().out))
    default, capped = plans
    assert not any("attention_tp" in s for s in default["stages"])
    assert any("attention_tp" in s for s in capped["stages"])
    assert capped["footprint_chips"] < default["footprint_chips"] <= 1.1 * default["chips_lower_bound"]
    assert capped["decode"]["latency_us"] > (1 + SUBSET_SLACK) * default["decode"]["latency_us"]


@pytest.mark.parametrize("ranks", [[0, 5], [2, 2], [1], "all"])
def test_a_block_held_by_ranks_outside_its_stage_is_refused_by_name(ranks):
    stage = {"index": 0, "first_chip": 0, "tp": 4, "regions": [
        {"kind": "param", "name": "w", "addr": 0, "bytes": 64, "phase": "both", "ranks": ranks}]}
    with pytest.raises(ParseError, match=r"stages\[0\]\.regions\[0\]\.ranks"):
        MemoryMap.from_dict({"stages": [stage]})


def test_a_disaggregated_build_hands_a_subset_stages_caches_over(pinned, tmp_path, monkeypatch, capsys):
    """The decode pool pinned to a subset stage (the attention on 2 of 4 chips): its caches are those chips'
    (memory.json's ranks), the hand-off fills them, and the request decodes the co-located build's tokens."""
    plan = _subset(pinned, tmp_path, attention_tp=2, mlp_share=32)
    real = serving_build.compile_model

    def decode_pinned(model, target, options, out, *args, **kwargs):
        return real(model, target, options, out, *args, **kwargs | ({"plan_file": plan} if Path(out).name == "decode"
                                                                     else {}))

    monkeypatch.setattr(serving_build, "compile_model", decode_pinned)
    shape = ARGS[2:]  # without --target
    pair, one = tmp_path / "pair", tmp_path / "one"
    assert main(["compile", MODEL, *shape, "--prefill-target", "lpu-mini", "--decode-target", "lpu-mini",
                 "-o", str(pair)]) == 0
    assert main(["compile", MODEL, *ARGS, "--plan", str(plan), "-o", str(one)]) == 0
    caches = json.loads((pair / "memory.json").read_text())["decode"]["caches"]
    assert {c["chip"] for cache in caches for c in cache["chips"]} == {1, 2}
    capsys.readouterr()
    tokens = []
    for build in (pair, one):
        assert main(["run", str(build), "--functional", "--prompt", "1 7 42 99 3 250 17 8 200 5", "--tokens", "4",
                     "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["hazards"] == []
        tokens.append(out["functional"]["tokens"])
        if build == pair:
            assert out["functional"]["copied_bytes"] > 0
    assert tokens[0] == tokens[1]


def test_a_speculative_build_verifies_on_a_subset_stage(pinned, tmp_path, capsys):
    """The verify step is lowered on the target's stages as planned, a subset stage's parts too: the speculative
    decode of a target pinned to one (through the API: the CLI plans a speculative build itself) is the reference's."""
    plan = _subset(pinned, tmp_path, attention_tp=2, mlp_share=32)
    out = tmp_path / "spec"
    compile_model(MODEL, "lpu-mini", OPTIONS, out, plan_file=plan,
                  speculation=Speculation("tiny-llama-draft", False, 2, 0.7, "own"))
    stages = json.loads((out / "plan.json").read_text())["stages"]
    assert [s.get("attention_tp") for s in stages] == [None, 2, None] and (out / "verify.prog").exists()
    assert main(["run", str(out), "--functional", "--check-reference", "--prompt", "1 7 42 99 3 250 17 8 200 5",
                 "--tokens", "6", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["reference"]["passed"] and run["hazards"] == [] and run["functional"]["steps"] > 0
