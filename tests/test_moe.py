"""Mixture-of-experts (Mixtral): config, graph, expert sharding, the plan's figures, and a
compiled program that runs hazard-free. Numerics against transformers: test_reference.py."""

import json
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.partition.shard_cost import shard_cost
from compiler.passes.shard import ShardTensorParallel, allowed_tp, expert_placement, expert_split
from ir.ops import Opcode, expert_passes

TINY_128K = 'base = "lpu-mini"\nname = "lpu-128k"\n[chip]\nsram_bytes = "128 KiB"\nprogram_reserve_bytes = "2979 B"\n'


def mixtral_layer(context: int = 4096):
    graph = build_graph(load_model_config("mixtral-8x7b"), "decode", context=context, layers=1)
    return list(graph.ops_in("layers.0"))


def test_mixtral_has_its_published_size_and_kv_cache():
    config = load_model_config("mixtral-8x7b")
    graph = build_graph(config, "decode", context=1)
    assert sum(p.type.numel for p in graph.params) == pytest.approx(46.70e9, rel=1e-3)  # "46.7B total"
    # KV per token: 32 layers x (k and v) x 8 kv heads x 128 x 2 bytes = 131,072 bytes.
    assert graph.state_bytes() == 32 * 2 * 8 * 128 * 2
    assert (config.num_experts, config.experts_per_token, config.moe_intermediate_size) == (8, 2, 14336)


def test_experts_are_sliced_by_their_features_when_that_streams_least():
    """Mixtral on t chips: every chip holds 1/t of every expert's features (feature-sliced), so a
    decode step streams k slices of 1/t, not min(k, 8/t) whole experts; where the features do not
    divide, whole experts (or groups of them, sliced) are spread instead."""
    ops = mixtral_layer()
    assert 4 in allowed_tp(ops, 32) and 16 in allowed_tp(ops, 32)
    for tp in (2, 4, 8, 16):
        chip = ShardTensorParallel(tp)(ops)
        moe = next(op for op in chip if op.opcode is Opcode.EXPERTS)
        assert expert_placement(next(op for op in ops if op.opcode is Opcode.EXPERTS), tp) == "sliced"
        assert moe.operands[3].type.shape == (8, 4096, 14336 // tp)
        assert moe.operands[5].type.shape == (8, 14336 // tp, 4096)
        after = chip[chip.index(moe) + 1]
        assert after.opcode is Opcode.ALLREDUCE  # each chip holds a partial sum of the experts' outputs


@pytest.mark.parametrize(("inter", "top_k", "split", "name"), [
    (96, 2, (1, 4), "sliced"), (90, 2, (1, 4), "sliced"), (9, 2, (4, 1), "parallel"), (9, 1, (2, 2), "mixed 2x2")])
def test_a_split_the_features_do_not_allow_falls_back_to_whole_experts(tmp_path, inter, top_k, split, name):
    cfg = json.loads(Path("examples/models/tiny-mixtral.json").read_text())
    cfg.update(intermediate_size=inter, num_experts_per_tok=top_k)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    graph = build_graph(load_model_config(str(tmp_path / "config.json")), "decode", context=64)
    moe = next(op for op in graph.ops if op.opcode is Opcode.EXPERTS)
    assert expert_split(moe, 4) == split and expert_placement(moe, 4) == name


def test_decode_streams_only_the_experts_a_token_can_use():
    """One token, top-2: a chip with 8 experts streams 2 of them; with 2 it streams both."""
    assert expert_passes(1, 2, 8) == 2 and expert_passes(1, 2, 1) == 1 and expert_passes(64, 2, 8) == 8
    ops = mixtral_layer()
    expert_bytes = 3 * 4096 * 14336 * 2
    one = shard_cost(ops, 1)
    moe = [w for w in one.work if w.opcode is Opcode.EXPERTS][0]
    assert moe.read_bytes >= 2 * expert_bytes and moe.read_bytes < 3 * expert_bytes
    assert one.weight_bytes > 8 * expert_bytes  # all eight stay resident


def test_mixtral_plans_near_its_capacity_bound(capsys):
    assert main(["plan", "mixtral-8x7b", "--target", "lpu", "--precision", "int8", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["chips"] <= 1.3 * plan["chips_lower_bound"]
    assert plan["decode"]["latency_bound_us"] <= plan["decode"]["latency_us"]
    assert main(["plan", "mixtral-8x7b", "--target", "h100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chips"] >= 2  # 93 GB of fp16 weights


def test_tiny_mixtral_compiles_and_runs_hazard_free(tmp_path, capsys):
    target = tmp_path / "lpu-128k.toml"
    target.write_text(TINY_128K)
    out = tmp_path / "mix"
    args = ["tiny-mixtral", "--target", str(target), "--context", "256", "--prompt", "64", "--precision", "int8"]
    assert main(["compile", *args, "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["run", str(out), "--json", "--check-determinism"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["hazards"] == [] and figures["determinism"]["passed"]
