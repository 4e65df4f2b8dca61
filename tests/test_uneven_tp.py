"""Tensor-parallel groups that do not divide the heads or the features: uneven shards, padded with
zero heads and features that the plan counts, each chip's attention a uniform grouped-query shape;
compiled from pinned plans and held to the graph IR reference in functional mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.image import pad_heads, shard_of
from compiler.passes.shard import allowed_tp, feature_width, head_case, head_split, splits_vocab, vocab_share
from ir.weights import random_weights
from tests.capacity import fewest_chips
from tests.cli_errors import layers_then_head


@settings(max_examples=300, deadline=None)
@given(kv=st.integers(1, 12), g=st.integers(1, 8), t=st.integers(1, 120))
def test_every_query_head_lands_once_beside_its_own_kv_head(kv, g, t):
    """Lay head ids out as the image does (pad_heads, then shard_of) and read each chip's local
    heads back: every real query head is on exactly one chip, whose local kv head is its own."""
    heads = kv * g
    q_here, kv_here = head_split(heads, kv, t)
    assert q_here % kv_here == 0 and q_here * t >= heads
    case = head_case(heads, kv, t)
    q_ids, kv_ids = np.arange(heads, dtype=float) + 1, np.arange(kv, dtype=float) + 1  # 0 is padding
    if case == "groups":
        q_ids = pad_heads(q_ids, 0, kv, g, t * q_here // kv, 1)
    elif case in ("kv-padded", "expanded"):
        q_ids = pad_heads(q_ids, 0, 1, heads, t * q_here, 1)
        kv_ids = pad_heads(kv_ids, 0, 1, kv, t * kv_here, 1, g if case == "expanded" else 1)
    seen = []
    for rank in range(t):
        q = shard_of(q_ids, (q_here,), rank, t, "q")
        k = shard_of(kv_ids, (kv_here,), rank, t, "k")
        for j, head in enumerate(q):
            if head:
                seen.append(head)
                assert k[j // (q_here // kv_here)] == (head - 1) // g + 1
    assert sorted(seen) == list(q_ids[q_ids > 0]) and len(seen) == heads


@given(n=st.integers(1, 20000), t=st.integers(1, 64))
def test_an_uneven_feature_share_leaves_no_chip_empty(n, t):
    w = feature_width(n, t)
    if w is not None:  # every chip holds some features, and the padding is under one aligned run each
        assert w * (t - 1) < n <= w * t and w < n / t + 32 and (n % t or w == n // t)


def _pinned(capsys, tmp: Path, fields: dict, tp: int, *extra: str) -> Path:
    """tiny-llama with `fields`, its layers (and embedding) on `tp` chips, the head on one more."""
    cfg = json.loads(Path("examples/models/tiny-llama.json").read_text()) | fields
    (tmp / "config.json").write_text(json.dumps(cfg))
    args = [str(tmp / "config.json"), "--target", "lpu-mini", "--context", "64", "--prompt", "16",
            "--prefill-chunk", "8", *extra]
    assert main(["plan", *args, "--json"]) == 0
    plan = layers_then_head(json.loads(capsys.readouterr().out), tp)
    (tmp / "plan.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp / "plan.json"), "-o", str(tmp / "b")]) == 0
    capsys.readouterr()
    return tmp / "b"


@pytest.mark.parametrize(("fields", "tp", "extra", "case"), [
    ({}, 3, (), "expanded"),  # 4 heads, 2 kv heads on 3 chips; the MLP's 176 features as 64 + 64 + 48
    ({}, 3, ("--precision", "int8"), "expanded"),
    ({"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 16}, 3, (), "kv-padded"),
    ({"num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 16, "attention_bias": True}, 4, (), "groups"),
    ({}, 6, (), "groups"),  # past the 4 heads: 2 of the 6 chips hold none; features 32 each
    ({}, 5, (), "expanded"),  # past the heads, 5 not a multiple of the kv heads; features 36 each
])
def test_uneven_groups_run_as_the_reference(tmp_path, capsys, fields, tp, extra, case):
    cfg = json.loads(Path("examples/models/tiny-llama.json").read_text()) | fields
    assert head_case(cfg["num_attention_heads"], cfg["num_key_value_heads"], tp) == case
    build = _pinned(capsys, tmp_path, fields, tp, *extra)
    assert json.loads((build / "plan.json").read_text())["stages"][0]["tp"] == tp
    for prompt in ("1 7 42 99 3 250 17 8 200 5", "9 9 9 1"):
        assert main(["run", str(build), "--functional", "--check-reference", "--prompt", prompt, "--tokens", "3",
                     "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["hazards"] == []


@pytest.mark.parametrize(("model", "layers", "tp"), [("tiny-mamba", 2, 3), ("tiny-jamba", 4, 3), ("tiny-jamba", 4, 6)])
def test_mamba_channels_split_unevenly_run_as_the_reference(tmp_path, capsys, model, layers, tp):
    """128 inner channels on 3 or 6 chips: 43 or 22 each, the last chip's padded with zero channels (a zero
    channel's conv, scan and gate give zero, and out_proj's padded rows add nothing)."""
    args = [model, "--target", "lpu-mini", "--context", "64", "--prompt", "16", "--prefill-chunk", "8"]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = {k: v for k, v in plan["stages"][0].items() if k not in ("kv_layout", "experts")}
    plan["stages"] = [dict(first, units=["embed", f"layers.{layers - 1}"], tp=tp, chip_range=[0, tp - 1]),
                      dict(first, units=["head", "head"], tp=1, chip_range=[tp, tp])]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp_path / "plan.json"), "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    memory = json.loads((tmp_path / "b" / "memory.json").read_text())
    conv = next(r for r in memory["stages"][0]["regions"] if r["name"].endswith("conv1d.bias"))
    assert conv["bytes"] >= feature_width(128, tp) * 2 and 128 % tp
    assert main(["run", str(tmp_path / "b"), "--functional", "--check-reference", "--prompt",
                 "1 7 42 99 3 250 17 8 200 5", "--tokens", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []


def test_jamba_plans_near_its_capacity_bound_on_groups_not_powers_of_two(capsys):
    """Issue 16's figure for jamba-v0.1 (lpu, default options): its 8192 inner channels no longer force
    stages of 64 chips (512 against a bound of 458)."""
    assert main(["plan", "jamba-v0.1", "--target", "lpu", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    chips, spanned = fewest_chips("jamba-v0.1")
    assert chips <= 1.05 * plan["chips_lower_bound"]
    assert plan["footprint_chips"] <= spanned  # the plan then spans no more than those stages would
    assert any(8192 % s["tp"] for s in plan["stages"])


# ---------------------------------------------------------------- the LM head on any group: vocabulary shards


@given(vocab=st.integers(1, 200_000), t=st.integers(1, 128))
def test_a_vocabulary_share_leaves_no_chip_without_a_real_id(vocab, t):
    """vocab_share's t rule (the embedding's rows, the head's columns, the argmax): allowed exactly when
    every chip's run of ids [r w, (r + 1) w) starts below the vocabulary, and then the padding is under
    one id a chip."""
    w = vocab_share(vocab, t)
    assert splits_vocab(vocab, t) == all(rank * w < vocab for rank in range(t))
    if splits_vocab(vocab, t):
        assert w * t >= vocab and w * t - vocab < t


def test_the_head_takes_every_group_its_vocabulary_splits_over(tmp_path):
    """A head of 1000 ids (norm, matmul, argmax): 3 and 7 chips qualify (no divisors), as any t whose share
    leaves every chip a real id; 41 do not (25 a chip: the 41st would start at id 1000)."""
    cfg = json.loads(Path("examples/models/tiny-llama.json").read_text()) | {"vocab_size": 1000}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    graph = build_graph(load_model_config(str(tmp_path / "config.json")), "decode", context=64)
    head = list(graph.ops_in("head"))
    assert allowed_tp(head, 200) == [t for t in range(1, 201) if splits_vocab(1000, t)]
    assert {3, 7} <= set(allowed_tp(head, 200)) and 41 not in allowed_tp(head, 200)


def _negative_logits(graph_config: Path, out: Path) -> Path:
    """Random weights whose every logit is negative (attention and MLP outputs zero, so the residual is
    the token's own positive embedding row, and the head's columns all negative): a padded logit column
    (zero) would beat every real one, were it not kept out (ARGBEST's limit, the host's slice)."""
    graph = build_graph(load_model_config(str(graph_config)), "decode", context=64, prompt=16)
    w = random_weights(graph)
    for name in w:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            w[name][:] = 0
    w["embed_tokens.weight"] = np.abs(w["embed_tokens.weight"])
    w["lm_head.weight"] = -np.abs(w["lm_head.weight"])
    np.savez(out, **w)
    return out


@pytest.mark.parametrize(("tied", "head_tp"), [(False, 3), (True, 7)])
def test_a_head_whose_vocabulary_its_group_does_not_divide_runs_as_the_reference(tmp_path, capsys, tied, head_tp):
    """tiny-llama with 1000 ids. Untied: embedding and layers on 2 chips, the head on 3 (334 ids a chip, the
    last 332 real), on weights whose every logit is negative, so the padding would win. Tied: the whole
    model on 7 chips (143 a chip, the last 142), the embedding's rows and the head's columns one shard."""
    cfg = json.loads(Path("examples/models/tiny-llama.json").read_text()) | {"vocab_size": 1000,
                                                                            "tie_word_embeddings": tied}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    args = [str(tmp_path / "config.json"), "--target", "lpu-mini", "--context", "64", "--prompt", "16",
            "--prefill-chunk", "8"]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = plan["stages"][0]
    if tied:
        stages = [dict(first, units=["embed", "head"], tp=head_tp, chip_range=[0, head_tp - 1])]
    else:
        head = {k: v for k, v in first.items() if k != "kv_layout"}
        stages = [dict(first, units=["embed", "layers.1"], tp=2, chip_range=[0, 1]),
                  dict(head, units=["head", "head"], tp=head_tp, chip_range=[2, 1 + head_tp])]
    (tmp_path / "plan.json").write_text(json.dumps(plan | {"stages": stages}))
    weights = ["--weights", str(_negative_logits(tmp_path / "config.json", tmp_path / "w.npz"))] if not tied else []
    assert main(["compile", *args, "--plan", str(tmp_path / "plan.json"), "-o", str(tmp_path / "b"), *weights]) == 0
    capsys.readouterr()
    memory = json.loads((tmp_path / "b" / "memory.json").read_text())
    for phase in ("decode", "prefill"):
        assert {k: memory["outputs"][phase]["logits"][k] for k in ("shards", "cols")} == {"shards": head_tp,
                                                                                         "cols": 1000}
    table = "embed_tokens.weight" if tied else "lm_head.weight"
    held = next(r["bytes"] for r in memory["stages"][-1]["regions"] if r["name"] == table)
    assert held >= vocab_share(1000, head_tp) * 64 * 2 and 1000 % head_tp  # the padded share is held
    for prompt in ("1 7 42 99 3 250 17 8 200 5", "999 998 4"):
        assert main(["run", str(tmp_path / "b"), "--functional", "--check-reference", "--prompt", prompt,
                     "--tokens", "3", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["reference"]["passed"] and out["hazards"] == []
        assert all(t < 1000 for t in out["tokens"]["generated"])
