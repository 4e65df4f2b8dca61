"""Queries sliced by feature in the split-KV layout (passes.shard.query_slice): where the s chips sharing a kv
head do not divide its g queries, each computes 1 / s of the g x head_dim query features (padded with zero
features) instead of ceil(g / s) whole heads, and keeps its slice of the merged context for the output
projection's rows. Held to the graph IR reference in functional mode, and in what the plan counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.passes.fuse import parts
from compiler.passes.shard import head_case, head_split, kv_slice_width, query_slice, query_slice_width, shard_unit
from ir.ops import Opcode
from ir.parser import parse_graph
from ir.types import DType

TINY = json.loads(Path("examples/models/tiny-llama.json").read_text())


@given(features=st.integers(1, 4096), runs=st.integers(2, 64), align=st.sampled_from([1, 2, 32]))
def test_a_query_slice_puts_every_feature_on_one_chip(features, runs, align):
    """runs x width covers the kv head's query features, every chip holds a real one, and the padding is
    under one aligned run a chip."""
    w = query_slice_width(features, runs, align)
    if w is None:
        share = -(-features // runs)
        assert -(-share // align) * align * (runs - 1) >= features
        return
    assert w % align == 0 and w * (runs - 1) < features <= w * runs and w * runs - features < runs * align


def _layer(tmp: Path, fields: dict) -> list:
    path = tmp / "config.json"
    path.write_text(json.dumps(TINY | fields))
    graph = build_graph(load_model_config(str(path)), "decode", context=24, prompt=16, layers=1)
    return list(graph.ops_in("layers.0"))


@pytest.mark.parametrize(("kv", "g", "t"), [(2, 2, 6), (2, 7, 16), (4, 7, 32), (1, 3, 2)])
def test_a_chip_holds_its_slice_of_the_queries_not_padded_heads(tmp_path, kv, g, t):
    """On t chips (a multiple of the kv heads whose s = t / kv chips do not divide g) the query projection keeps
    ceil(g x 16 / s) columns, the output projection as many rows, and the attention every query of its kv head,
    whole: fewer bytes than ceil(g / s) padded heads wherever s does not divide g."""
    ops = _layer(tmp_path, {"num_attention_heads": kv * g, "num_key_value_heads": kv, "head_dim": 16,
                            "intermediate_size": 192})
    assert head_case(kv * g, kv, t) == "groups"
    runs, w, q, o = query_slice(ops, t)
    assert (runs, w) == (t // kv, -(-g * 16 // (t // kv)))
    chip, _ = shard_unit(ops, t)
    mm = {op.results[0].name: op for op in chip if op.opcode is Opcode.MATMUL}
    assert mm[q.results[0].name].operands[1].type.shape[-1] == w
    assert mm[o.results[0].name].operands[1].type.shape[0] == w
    assert w < head_split(kv * g, kv, t)[0] * 16
    att = next(op for op in chip if op.opcode is Opcode.ATTENTION)
    assert (att.attr["heads"], att.attr["q_slice"], att.operands[0].type.shape[-1]) == (g, w, g * 16)
    whole, _ = shard_unit(ops, t, split=False)  # the whole layout keeps whole (padded) heads
    assert not any("q_slice" in op.attr for op in whole)


def test_an_even_group_or_twice_the_heads_keeps_whole_heads(tmp_path):
    """Where s divides the kv head's queries no slice is taken: each chip keeps g / s whole heads; nor at
    twice the query heads, where each chip keeps one (padded) head of its kv head's."""
    ops = _layer(tmp_path, {"num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 16})
    assert query_slice(ops, 4) is None and query_slice(ops, 8) is None
    assert head_case(8, 2, 16) == "groups" and query_slice(ops, 16) is None
    assert query_slice(ops, 6) is not None  # 3 chips a kv head of 4 queries: sliced


def _build(capsys, tmp: Path, fields: dict, tp: int, *extra: str) -> Path:
    """tiny-llama with `fields`, its layers (and embedding) pinned on `tp` chips in the split layout, the head
    on one more; a 24-token context, so prompts of 14 tokens cross every chip's run of positions."""
    (tmp / "config.json").write_text(json.dumps(TINY | fields))
    args = [str(tmp / "config.json"), "--target", "lpu-mini", "--context", "24", "--prompt", "16",
            "--prefill-chunk", "8", *extra]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = {k: v for k, v in plan["stages"][0].items() if k != "kv_layout"}
    plan["stages"] = [dict(first, units=["embed", "layers.1"], tp=tp, chip_range=[0, tp - 1], kv_layout="split"),
                      dict(first, units=["head", "head"], tp=1, chip_range=[tp, tp])]
    (tmp / "plan.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp / "plan.json"), "-o", str(tmp / "b")]) == 0
    capsys.readouterr()
    return tmp / "b"


@pytest.mark.parametrize(("fields", "tp", "extra"), [
    # qwen2's shape in small: 7 queries a kv head on 8 chips each (14 of its 112 features a chip), q/k/v biases
    ({"num_attention_heads": 14, "num_key_value_heads": 2, "head_dim": 16, "attention_bias": True}, 16, ()),
    # 2 queries a kv head on 3 chips: 11 of 32 features, the last chip's padded (33)
    ({}, 6, ("--batch", "2")),
    ({}, 6, ("--precision", "int8", "--kv-precision", "int8")),
    ({}, 6, ("--precision", "int4")),  # packed columns: even slices (12 of 32)
])
def test_sliced_queries_run_as_the_reference(tmp_path, capsys, fields, tp, extra):
    build = _build(capsys, tmp_path, fields, tp, *extra)
    memory = json.loads((build / "memory.json").read_text())
    names = [parts(r["name"]) for r in memory["stages"][0]["regions"]]
    assert [f"layers.0.self_attn.{p}_proj.weight" for p in "qkv"] in names  # one weight block (passes.fuse)
    heads, kv = (TINY | fields)["num_attention_heads"], (TINY | fields)["num_key_value_heads"]
    align = 2 if "int4" in extra else 1
    w = query_slice_width(heads // kv * 16, tp // kv, align)
    graph = parse_graph((build / "decode.ir").read_text())
    chip = {v.name: v for op in shard_unit(list(graph.ops_in("layers.0")), tp)[0] for v in op.operands}
    q = chip["layers.0.self_attn.q_proj.weight"].type.shape[1]  # the chip's query features
    assert w <= q < head_split(heads, kv, tp)[0] * 16
    prompts = "1 7 42 99 3 250 17 8 200 5 9 9 4 3" + ("; 5 6 7" if "--batch" in extra else "")
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", prompts, "--tokens", "6",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []


def test_qwen2_7b_plans_within_its_capacity_bound(capsys):
    """Issue 16's figure: 28 queries over 4 kv heads on 32-chip groups, sliced, not padded to 32 heads."""
    assert main(["plan", "qwen2-7b", "--target", "lpu", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["chips"] <= 1.05 * plan["chips_lower_bound"]



@pytest.mark.parametrize("dtype", [DType.I4, DType.MXFP4, DType.NVFP4])
def test_a_packed_kv_slice_stays_even(dtype):
    """Every 4-bit format packs two values a byte along a row: a kv head's 32 features on 3 chips are 12 each
    (11 would leave half a byte; mxfp4 compiles used to stop on it)."""
    assert kv_slice_width(32, 3, dtype) == 12 and kv_slice_width(32, 3) == 11
