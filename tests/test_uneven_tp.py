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
from compiler.image import pad_heads, shard_of
from compiler.passes.shard import feature_width, head_case, head_split
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
