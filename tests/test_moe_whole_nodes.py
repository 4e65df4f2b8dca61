"""MoE stages on any number of whole nodes (issue 16): the experts spread over a group whose size is not a
power of two (passes.shard.expert_width), the shared expert's features leaving spare chips where they cannot
give every chip a share (feature_width's `spare`), each held to the graph IR reference in functional mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.frontend.options import CompileOptions
from compiler.image import shard_of
from compiler.passes.shard import feature_width
from compiler.planner import make_plan
from ir.ops import Opcode
from tests.capacity import fewest_chips

PROMPT = "1 7 42 99 3 250 17 8 200 5"
ARGS = ["--context", "64", "--prompt", "16", "--prefill-chunk", "8"]


def _target(tmp: Path, node: int) -> Path:
    """lpu-mini with `node` chips a node and 16 x 16 matrix tiles (a tiny expert's slices are then whole tiles)."""
    path = tmp / "t.toml"
    path.write_text(f'base = "lpu-mini"\nname = "lpu-mini-node{node}"\nchips_per_node = {node}\n'
                    "[chip]\nmatrix_dim = 16\n")
    return path


def _moe_stages(capsys, tmp: Path, model: str, target: Path, node: int, moe_tp: int) -> Path:
    """The model's plan laid out again: every unit with experts a stage of `moe_tp` chips, the units between
    them stages of 2, each from a node's first chip; compiled."""
    args = [model, "--target", str(target), *ARGS]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    graph = build_graph(load_model_config(model), "decode", context=64, prompt=16)
    moe = {op.scope for op in graph.ops if op.opcode is Opcode.EXPERTS}
    runs: list[list[str]] = []
    for scope in graph.scopes():
        if scope in moe or not runs or runs[-1][0] in moe:
            runs.append([scope])
        else:
            runs[-1].append(scope)
    stages, chip = [], 0
    for run in runs:
        tp = moe_tp if run[0] in moe else 2
        stages.append({"units": [run[0], run[-1]], "tp": tp, "chip_range": [chip, chip + tp - 1]})
        chip += -(-tp // node) * node
    plan["stages"] = stages
    path = tmp / "plan.json"
    path.write_text(json.dumps(plan))
    out = tmp / "build"
    assert main(["compile", *args, "--plan", str(path), "-o", str(out)]) == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize(("model", "node", "moe_tp", "placement"), [
    ("tiny-deepseek-v3", 4, 12, "mixed 4x3"),  # the shared expert's 32 features: 3 on each of 11 chips, 1 spare
    ("tiny-mixtral", 2, 6, "sliced"),  # 96 features 16 a chip over 3 nodes
])
def test_moe_on_whole_nodes_runs_as_the_reference(tmp_path, capsys, model, node, moe_tp, placement):
    build = _moe_stages(capsys, tmp_path, model, _target(tmp_path, node), node, moe_tp)
    stages = json.loads((build / "plan.json").read_text())["stages"]
    assert {s["experts"] for s in stages if s["tp"] == moe_tp} == {placement}
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", PROMPT, "--tokens", "3",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []


def test_deepseek_v3_plans_within_5_percent_of_its_capacity_bound():
    """fp16 on lpu at default options: each MoE layer on 13 nodes (its 22.5 GB of experts), its attention
    on 2 chips beside it. Packing four layers' attention into a node would span 6,184 chips (1.038x) but
    decode 68% slower, so the plan keeps its stages in order (search.PACKED_SLACK). The plan spans what those
    stages would, each layer's experts and the next one's attention in one subset stage of 14 nodes (the
    attention on 64 of them, passes.subset), one hand-off a layer fewer."""
    plan = make_plan("deepseek-v3", "lpu", CompileOptions())
    chips, spanned = fewest_chips("deepseek-v3")
    assert chips <= 1.05 * plan.chips_lower_bound
    assert plan.footprint_chips <= spanned  # the plan then spans no more than those stages would
    firsts = [s.first_chip for s in plan.stages]
    assert firsts == sorted(firsts)
    moe = [s for s in plan.stages if s.experts]
    assert moe and all(s.tp % 8 == 0 for s in moe) and any(s.tp & (s.tp - 1) for s in moe)
    subset = [s for s in plan.stages if s.attention_tp]
    assert len(subset) > 50 and {(s.tp, s.attention_tp, s.experts) for s in subset} == {(112, 64, "mixed 16x7")}


def test_spare_chips_hold_zeros_and_the_rest_hold_every_feature():
    """feature_width's spare shares: the chips with features cover them all, in order, and never divide the
    group (which shard_of would read as whole shares repeated); the spare chips hold zeros."""
    for n, t in ((32, 12), (2048, 104), (2048, 72)):
        w = feature_width(n, t, spare=True)
        real = -(-n // w)
        assert feature_width(n, t) is None and real < t and t % real
        full = np.arange(n * 2).reshape(2, n)
        shards = [shard_of(full, (2, w), rank, t, "w") for rank in range(t)]
        assert np.concatenate(shards, axis=1)[:, :n].tolist() == full.tolist()
        assert not any(s.any() for s in shards[real:])
