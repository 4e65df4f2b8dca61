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
from compiler.passes.shard import seq_split, shard_unit
from ir.ops import Opcode

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
                   .operands[0].name.removesuffix(".allgather")].operands[1].type.shape[-1]
    assert k_width == (16 // runs if 16 % runs == 0 else 16)


def _build(capsys, tmp: Path, fields: dict, tp: int, *extra: str) -> Path:
    """tiny-llama with `fields`, its layers (and embedding) pinned on `tp` chips, the head on one more;
    a 24-token context, so prompts of 14 tokens and a few more cross every chip's run of positions."""
    (tmp / "config.json").write_text(json.dumps(TINY | fields))
    args = [str(tmp / "config.json"), "--target", "lpu-mini", "--context", "24", "--prompt", "16",
            "--prefill-chunk", "8", *extra]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = plan["stages"][0]
    plan["stages"] = [dict(first, units=["embed", "layers.1"], tp=tp, chip_range=[0, tp - 1]),
                      dict(first, units=["head", "head"], tp=1, chip_range=[tp, tp])]
    (tmp / "plan.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp / "plan.json"), "-o", str(tmp / "b")]) == 0
    capsys.readouterr()
    return tmp / "b"


@pytest.mark.parametrize(("fields", "tp", "extra", "prompts", "row_bytes"), [
    ({"num_key_value_heads": 1}, 4, (), "1 7 42 99 3 250 17 8 200 5 9 9 4 3", 32),  # one kv head, 4 runs of 6
    ({}, 4, ("--batch", "2", "--kv-precision", "int8"), "1 7 42 99 3 250 17 8 200 5 9 9 4 3; 5 6 7", 16),
    ({}, 6, (), "9 9 9 1 2 3 4 5 6 7", 32),  # 3 chips a kv head: runs of 8; its 16 features whole on each
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


def test_llama_70b_at_128k_plans_near_its_capacity_bound(capsys):
    """The issue's figure: the cache, not replicated copies of it, sets the chips at long context."""
    assert main(["plan", "llama-3.1-70b", "--target", "lpu", "--precision", "int8", "--context", "131072",
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["chips"] <= 1.1 * plan["chips_lower_bound"]
