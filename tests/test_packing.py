"""Stages below a node fill an earlier node's free tail (dp.Packing) where that spans fewer chips than every
layout in pipeline order: the DP's layout and price, and a tiny model so packed compiled, hazard-free and
decoding the reference's tokens."""

import json
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.partition import dp
from compiler.partition.candidates import Candidate
from compiler.partition.cost import Breakdown
from compiler.partition.placement import next_start
from compiler.planner import make_plan
from targets import load_target

LPU = load_target("lpu")
ARGS = ["--target", "lpu-mini", "--context", "24", "--prompt", "16", "--prefill-chunk", "8"]


def _start_at(cursor, tp):
    return next_start(cursor, tp, LPU)


def test_a_small_last_stage_takes_the_tail_its_first_left_and_pays_its_hops():
    """3 + 16 + 3 chips (an embedding, layers, a head): in order 0..2, 8..23, 24..26 span 27; the head in
    node 0's tail (3..5) spans 24, its hand-off in priced by extra_ps (none out: it is last)."""
    cands = [Candidate(0, 1, 3, 0, 0, Breakdown(memory_s=1e-6)), Candidate(1, 2, 16, 0, 0, Breakdown(memory_s=1e-6)),
             Candidate(2, 3, 3, 0, 0, Breakdown(memory_s=1e-6))]
    in_order = dp.footprint_states(cands, 3, _start_at, 1000)
    assert list(in_order) == [27]
    hops = []
    pack = dp.Packing(LPU.chips_per_node, lambda a, b: hops.append((a, b)) or 7)
    packed = dp.footprint_states(cands, 3, _start_at, 1000, pack=pack)
    lat, devices, path, starts = packed[24]
    assert starts == [0, 8, 3] and devices == 22 and lat == 3 * 10**6 + 7
    assert (23, 3) in hops  # from the layers' last chip into the tail
    assert dp.FrontPoint(24, lat, devices, 0.0, tuple(path), tuple(starts)).packed
    assert not dp.FrontPoint(27, lat, devices, 0.0, tuple(path), (0, 8, 24)).packed


def test_consecutive_small_stages_share_one_node():
    """Attention (2 chips) and experts (16) a layer, four layers: each attention in order opens a node of
    its own (4 x 24 = 96 chips); packed, the four share node 0 (8 + 4 x 16 = 72)."""
    cands = [Candidate(u, u + 1, 2 if u % 2 == 0 else 16, 0, 0, Breakdown(memory_s=1e-6)) for u in range(8)]
    assert min(dp.footprint_states(cands, 8, _start_at, 1000)) == 96
    packed = dp.footprint_states(cands, 8, _start_at, 1000, pack=dp.Packing(LPU.chips_per_node, lambda a, b: 0))
    assert min(packed) == 72
    assert packed[72][3] == [0, 8, 2, 24, 4, 40, 6, 56]


def test_the_packed_front_reusing_the_span_pass_is_the_front_computed_afresh():
    """footprint_front's first round taken from the packed-span pass (a larger limit, as plan.search does) gives
    the same front, stages and starts as the rounds all run; and Breakdown.sum_of adds as sum() does."""
    cands = [Candidate(u, u + 1, 2 if u % 2 == 0 else 16, 0, 0, Breakdown(memory_s=(1 + u % 3) * 1e-6))
             for u in range(8)] + [Candidate(u, u + 2, 16, 0, 0, Breakdown(memory_s=2.5e-6)) for u in range(0, 8, 2)]
    pack = dp.Packing(LPU.chips_per_node, lambda a, b: abs(a - b))
    chunk = {c: (c.stop - c.first) * 1e-3 + c.tp * 1e-6 for c in cands}.__getitem__
    ends = dp.footprint_states(cands, 8, _start_at, 95, pack=pack)
    afresh = dp.footprint_front(cands, 8, _start_at, 80, chunk, pack=pack)
    reused = dp.footprint_front(cands, 8, _start_at, 80, chunk, pack=pack,
                                first_round={end: v for end, v in ends.items() if end <= 80})
    assert reused == afresh and [p.starts for p in reused] == [p.starts for p in afresh]
    assert len({p.end for p in afresh}) > 1 and any(p.packed for p in afresh)
    parts = [Breakdown(0.1 * i, 1e-7 / (i + 1), 3e-9 * i, 0.3, 1e-12 * i, 0.0, 0.7 ** i) for i in range(40)]
    assert Breakdown.sum_of(parts) == sum(parts, Breakdown())


@pytest.fixture(scope="module")
def packed_model(tmp_path_factory) -> Path:
    """tiny-llama widened to 4 layers of 16 heads and a 1,024-token vocabulary: on lpu-mini its stages of 7
    and 2 chips leave chip 7 free, which the 1-chip head takes."""
    fields = {"hidden_size": 128, "intermediate_size": 704, "num_attention_heads": 16, "num_key_value_heads": 16,
              "head_dim": 8, "vocab_size": 1024, "num_hidden_layers": 4}
    path = tmp_path_factory.mktemp("packed") / "config.json"
    path.write_text(json.dumps(json.loads(Path("examples/models/tiny-llama.json").read_text()) | fields))
    return path


def test_a_packed_plan_compiles_hazard_free_and_decodes_the_reference(packed_model, capsys, tmp_path):
    plan = make_plan(str(packed_model), "lpu-mini", CompileOptions(context=24, prompt=16, prefill_chunk=8))
    assert [(s.first_chip, s.tp) for s in plan.stages] == [(0, 7), (8, 2), (7, 1)]
    assert plan.footprint_chips == plan.chips == 10  # in order the head would take chip 10
    assert plan.stages[2].hops_in > 1
    assert main(["compile", str(packed_model), *ARGS, "-o", str(tmp_path / "b")]) == 0
    assert main(["run", str(tmp_path / "b"), "--json"]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "b"), "--functional", "--check-reference", "--prompt",
                 "1 7 42 99 3 250 17 8 200 5 9 9 4 3", "--tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []


def test_llama_2_70b_packs_its_head_beside_its_embedding_within_5_percent_of_its_bound(capsys):
    """In order 651 chips (the embedding's 3 chips leave a node's 5 idle, the head's 3 open another); packed
    648, within 1.05x of the 618-chip bound, and --max-chips 648 is met, not refused."""
    assert main(["plan", "llama-2-70b", "--target", "lpu", "--max-chips", "648", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["footprint_chips"] == 648 <= 1.05 * plan["chips_lower_bound"]
    first, head = plan["stages"][0], plan["stages"][-1]
    assert first["units"] == ["embed", "embed"] and head["units"] == ["head", "head"]
    assert first["chip_range"][1] < head["chip_range"][0] <= head["chip_range"][1] < 8  # both in node 0
