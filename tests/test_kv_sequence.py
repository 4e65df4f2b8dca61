"""KV caches sharded by sequence past the kv heads: the s = t / kv_heads chips that share a kv head each
hold a run of context / s positions (and 1 / s of the kv projections' features), attend the kv head's
queries over their run and merge the partials (flash-decoding). Held to the graph IR reference in
functional mode on prompts whose positions cross the runs, and in what the plan counts."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.partition import candidates, dp
from compiler.partition.candidates import Candidate
from compiler.partition.cost import Breakdown
from compiler.passes.shard import kv_slice_width, seq_split, shard_unit
from compiler.plan import search
from ir.ops import Opcode
from ir.types import DType
from tests.capacity import fewest_chips

TINY = json.loads(Path("examples/models/tiny-llama.json").read_text())


@cache
def _layer(tmp: Path, kv: int, g: int, context: int) -> list:
    path = tmp / f"kv{kv}-g{g}.json"
    path.write_text(json.dumps(TINY | {"num_attention_heads": kv * g, "num_key_value_heads": kv, "head_dim": 16}))
    graph = build_graph(load_model_config(str(path)), "decode", context=context, prompt=min(16, context), layers=1)
    return list(graph.ops_in("layers.0"))


@settings(max_examples=25, deadline=None)
@given(kv=st.integers(1, 4), g=st.integers(1, 4), runs=st.integers(2, 4), context=st.integers(8, 70))
def test_every_position_of_a_kv_head_has_one_chip(tmp_path_factory, kv, g, runs, context):
    """On t = runs x kv chips each chip's cache holds ceil(context / runs) positions of one kv head, so the
    runs of its chips cover the context once; the k and v projections keep 1 / runs of the head's 16
    features where runs divides them, the whole head otherwise."""
    t = runs * kv
    if t > 2 * kv * g:  # past twice the query heads no group is offered
        return
    ops, _ = shard_unit(_layer(tmp_path_factory.getbasetemp(), kv, g, context), t)
    att = next(op for op in ops if op.opcode is Opcode.ATTENTION)
    assert seq_split(kv * g, kv, t) == runs == att.attr["seq_shards"]
    held = att.operands[3].type.shape[1]
    assert held * (runs - 1) < context <= held * runs
    proj = {op.results[0].name: op for op in ops if op.opcode is Opcode.MATMUL}
    k_width = proj[next(op for op in ops if op.opcode is Opcode.ROPE and op.results[0].name == att.operands[1].name)
                   .operands[0].name.removesuffix(".slice").removesuffix(".allgather")].operands[1].type.shape[-1]
    assert k_width == kv_slice_width(16, runs)  # ceil(16 / runs), the last chips padded with zero features


@given(head_dim=st.integers(1, 256), runs=st.integers(2, 40), packed=st.booleans())
def test_a_kv_head_sliced_unevenly_puts_every_feature_on_one_chip(head_dim, runs, packed):
    """kv_slice_width: runs x width covers the head, every chip holds a real feature, and the padding is
    under one feature a chip (two for packed int4, whose columns stay even)."""
    w = kv_slice_width(head_dim, runs, DType.I4 if packed else DType.F16)
    if w is None:
        assert -(-head_dim // runs) * (runs - 1) >= head_dim or packed
        return
    assert w * (runs - 1) < head_dim <= w * runs and w * runs - head_dim < runs * (2 if packed else 1)
    assert not packed or w % 2 == 0


@pytest.mark.parametrize(("model", "goal"), [("llama-3.1-8b", 1.05), ("mixtral-8x7b", 1.05)])
def test_uneven_kv_slices_bring_shipped_models_to_their_capacity_bound(capsys, model, goal):
    """Issue 16's figure for the models the uneven slices bring under it (lpu, default options): some split
    stage's kv head is sliced unevenly (s = tp / 8 chips not dividing its 128 features) or its 4 queries
    sliced by feature (s not dividing them: passes.shard.query_slice)."""
    assert main(["plan", model, "--target", "lpu", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    chips, spanned = fewest_chips(model)
    assert chips <= goal * plan["chips_lower_bound"]
    assert plan["footprint_chips"] <= spanned  # the plan then spans no more than those stages would
    assert any(s.get("kv_layout") == "split" and s["tp"] % 8 == 0 and (128 % (s["tp"] // 8) or 4 % (s["tp"] // 8))
               for s in plan["stages"])


def _build(capsys, tmp: Path, fields: dict, tp: int, *extra: str, layout: str = "split") -> Path:
    """tiny-llama with `fields`, its layers (and embedding) pinned on `tp` chips in kv `layout`, the head on
    one more; a 24-token context, so prompts of 14 tokens and a few more cross every chip's run of positions."""
    (tmp / "config.json").write_text(json.dumps(TINY | fields))
    args = [str(tmp / "config.json"), "--target", "lpu-mini", "--context", "24", "--prompt", "16",
            "--prefill-chunk", "8", *extra]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = plan["stages"][0]
    plan["stages"] = [dict(first, units=["embed", "layers.1"], tp=tp, chip_range=[0, tp - 1], kv_layout=layout),
                      dict(first, units=["head", "head"], tp=1, chip_range=[tp, tp])]
    plan["stages"][1].pop("kv_layout", None)
    (tmp / "plan.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp / "plan.json"), "-o", str(tmp / "b")]) == 0
    capsys.readouterr()
    return tmp / "b"


@pytest.mark.parametrize(("fields", "tp", "extra", "prompts", "row_bytes"), [
    ({"num_key_value_heads": 1}, 4, (), "1 7 42 99 3 250 17 8 200 5 9 9 4 3", 32),  # one kv head, 4 runs of 6
    ({}, 4, ("--batch", "2", "--kv-precision", "int8"), "1 7 42 99 3 250 17 8 200 5 9 9 4 3; 5 6 7", 16),
    ({}, 6, (), "9 9 9 1 2 3 4 5 6 7", 32),  # 3 chips a kv head: runs of 8; 6 of its 16 features each, padded
    ({}, 6, ("--precision", "int8"), "9 9 9 1 2 3 4 5 6 7", 32),  # the padded slices' scales too
    # 6 chips a kv head on 24 (three nodes of 8): every other block of 6 straddles two nodes
    ({"num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 16, "intermediate_size": 192}, 24, (),
     "1 7 42 99 3 250 17 8 200 5 9 9 4 3", 32),
])
def test_sequence_shards_run_as_the_reference(tmp_path, capsys, fields, tp, extra, prompts, row_bytes):
    build = _build(capsys, tmp_path, fields, tp, *extra)
    memory = json.loads((build / "memory.json").read_text())
    caches = [r for r in memory["stages"][0]["regions"] if r["name"] == "layers.0.k_cache"]
    kv = (TINY | fields)["num_key_value_heads"]
    batch = 2 if "--batch" in extra else 1
    assert caches[0]["bytes"] == batch * -(-24 // (tp // kv)) * row_bytes  # a run of the positions, one head
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", prompts, "--tokens", "8",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []


def test_blocks_straddling_nodes_send_in_rounds_over_the_global_links(tmp_path, capsys):
    """8 kv heads on 56 chips (7 a head, as mixtral-8x7b's 56-chip stages): a block's first chip has 6 peers
    across the node boundary and 4 global links, so its gathers go in rounds; hazard-free and equal to the
    reference (with a link a peer it ran with unit-busy hazards)."""
    fields = {"num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 16, "intermediate_size": 224}
    (tmp_path / "config.json").write_text(json.dumps(TINY | fields))
    args = [str(tmp_path / "config.json"), "--target", "lpu-mini", "--context", "24", "--prompt", "16",
            "--prefill-chunk", "8"]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = {k: v for k, v in plan["stages"][0].items() if k != "kv_layout"}
    plan["stages"] = [dict(first, units=["embed", "embed"], tp=1, chip_range=[0, 0]),
                      dict(first, units=["layers.0", "layers.1"], tp=56, chip_range=[8, 63], kv_layout="split"),
                      dict(first, units=["head", "head"], tp=1, chip_range=[64, 64])]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp_path / "plan.json"), "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "b"), "--functional", "--check-reference", "--prompt",
                 "1 7 42 99 3 250 17 8 200 5 9 9 4 3", "--tokens", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []


def test_a_kv_head_wider_than_a_node_but_not_whole_nodes_stays_whole(tmp_path, capsys):
    """12 chips a kv head on 24 (nodes of 8): the split layout is not offered (passes.shard.lowers_split), and a
    plan file asking for it is one line naming the stage's kv_layout."""
    fields = {"num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 192}
    with pytest.raises(AssertionError):
        _build(capsys, tmp_path, fields, 24)
    assert "stages[0].kv_layout" in capsys.readouterr().err
    build = _build(capsys, tmp_path, fields, 24, layout="whole")
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", "1 7 42 99 3 250 17 8 200 5",
                 "--tokens", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []


@pytest.mark.parametrize("layout", ["split", "whole"])
def test_a_stage_runs_the_kv_layout_its_plan_names(tmp_path, capsys, layout):
    """A plan file's kv_layout is the one compiled: the cache split by sequence (a run of the positions) or
    whole (every position, repeated past the kv heads), either one equal to the reference."""
    build = _build(capsys, tmp_path, {"num_key_value_heads": 1}, 4, layout=layout)
    plan = json.loads((build / "plan.json").read_text())
    assert plan["stages"][0]["kv_layout"] == layout and "kv_layout" not in plan["stages"][1]
    memory = json.loads((build / "memory.json").read_text())
    cache = next(r for r in memory["stages"][0]["regions"] if r["name"] == "layers.0.k_cache")
    assert cache["bytes"] == (6 if layout == "split" else 24) * 32
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", "1 7 42 99 3 250 17 8 200 5",
                 "--tokens", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []


def test_llama_70b_at_128k_plans_near_its_capacity_bound(capsys):
    """The issue's figure: the cache, not replicated copies of it, sets the chips at long context."""
    assert main(["plan", "llama-3.1-70b", "--target", "lpu", "--precision", "int8", "--context", "131072",
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["chips"] <= 1.1 * plan["chips_lower_bound"]


def _plan(capsys, *args: str) -> dict:
    assert main(["plan", "examples/models/tiny-llama.json", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_stage_takes_the_split_layout_only_where_it_is_the_better_one(tmp_path, capsys):
    """Per stage: where both layouts fit a group the faster is taken (tiny-llama's 4-chip stages on 64 KiB
    chips: the whole cache, no gathers), and where only the split fits, the split saves chips (an 8K
    context on lpu-mini: one 8-chip stage); the plan's JSON and stage table name the layout."""
    target = tmp_path / "lpu-64k.toml"
    target.write_text('base = "lpu-mini"\nname = "lpu-64k"\n[chip]\nsram_bytes = "64 KiB"\n'
                      'program_reserve_bytes = "1489 B"\n')
    fast = _plan(capsys, "--target", str(target), "--context", "256", "--prompt", "64")
    assert {(s["tp"], s.get("kv_layout")) for s in fast["stages"]} == {(4, "whole")}
    room = _plan(capsys, "--target", "lpu-mini", "--context", "8192")
    assert [(s["tp"], s.get("kv_layout")) for s in room["stages"]] == [(8, "split")]
    assert main(["plan", "examples/models/tiny-llama.json", "--target", "lpu-mini", "--context", "8192"]) == 0
    table = capsys.readouterr().out
    assert "kv" in table.split("pipeline stages")[1].splitlines()[2] and "split" in table


def _cand(first: int, stop: int, tp: int, room: bool = False) -> Candidate:
    return Candidate(first, stop, tp, 0, 0, Breakdown(compute_s=1e-6), split=room, room=room)


@pytest.mark.parametrize(("split_tp", "taken"), [(49, False), (48, False), (47, True)])
def test_splits_that_only_save_room_must_save_more_than_the_threshold(split_tp, taken):
    """--objective chips: a path through room-only split stages is taken only when it needs more than
    SEQUENCE_SAVING fewer chips than the whole layouts (two 50-chip stages: 99 or 98 chips are not, 97 is)."""
    assert search.SEQUENCE_SAVING == 0.02
    whole = [_cand(0, 1, 50), _cand(1, 2, 50)]
    cands = [*whole, _cand(1, 2, split_tp, room=True)]
    kept, path = search._split_where_it_pays(cands, 2, dp.fewest_chips(cands, 2), budget=1000)
    assert (kept == cands) is taken
    assert sum(c.tp for c in path) == (50 + split_tp if taken else 100)
    # a budget the whole layouts do not fit leaves the split in
    kept, path = search._split_where_it_pays(cands, 2, dp.fewest_chips(cands, 2), budget=99)
    assert kept == cands and sum(c.tp for c in path) == 50 + split_tp


@pytest.mark.parametrize(("split_us", "split_prefill", "kept"), [(0.9, 1.0, True), (0.9, 1.1, False),
                                                                  (1.0, 0.5, False)])
def test_at_equal_chips_the_split_must_be_faster_in_decode_and_no_slower_in_prefill(split_us, split_prefill, kept):
    """Of one group size's two layouts the whole one stays unless the split's decode is strictly faster and
    its prefill chunk no slower (the gathers of a chunk's queries and partials can outweigh the shorter cache)."""
    whole = Candidate(0, 1, 8, 0, 0, Breakdown(compute_s=1e-6))
    split = Candidate(0, 1, 8, 0, 0, Breakdown(compute_s=split_us * 1e-6), split=True)
    (chosen,) = candidates._undominated([whole, split], {(8, False): 1.0, (8, True): split_prefill})
    assert chosen is (split if kept else whole)
