"""DeepSeek-V3 lowered: mla_attention compiles to MXM products over the latent cache (kv_b
absorbed per head, MXM HEADS), and the whole of tiny-deepseek-v3 (latent attention, grouped
biased routing, routed and shared experts) schedules, runs hazard-free, and computes what the
graph IR's reference and Hugging Face transformers compute.

tiny-deepseek-v3 is compiled onto 40 KiB chips (attention split 4 and 2 ways by head, the
experts 8 ways, eight pipeline stages) with a 19-token prompt in prefill chunks of 16, and
once more with 16x16 matrix planes and fp8 weights, which cuts kv_b into several blocks of
latent features and the cache into several token blocks. Logits must match the reference's
within LOGIT_TOL of their largest magnitude (summation order and 16-bit rounding of what the
chips write; measured 1.7e-3 fp16, 1.3e-3 fp8), and transformers' within HF_TOL (as
tests/test_deepseek.py: 16-bit activations against HF's f32; measured 6.6e-3 absolute).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from compiler.codegen.instantiate import freeze
from compiler.codegen.unit import unit_code
from compiler.frontend import build_graph, load_model_config
from compiler.frontend.options import CompileOptions
from compiler.partition.cost import op_time
from compiler.partition.shard_cost import chip_cost
from compiler.passes.shard import shard_unit
from compiler.planner import graph_passes
from ir.isa import Op
from ir.ops import Opcode
from ir.program import Flag
from ir.program_io import load_program
from targets import load_target
from targets.functional import _head_product
from targets.runner import run_build, run_functional
from targets.timing import Timing
from tests.test_compile import inspect_json
from tests.test_deepseek import TINY, deepseek_weights, hf_model
from tests.test_reference import generate

PROMPT = [1, 7, 42, 99, 3, 250, 17, 8, 200, 5, 66, 13, 90, 121, 31, 2, 44, 187, 9]  # 19: two chunks of 16
NEW = 6
CONTEXT = 64
LOGIT_TOL = 3e-3  # of the largest |logit|
HF_TOL = 3e-2
SMALL = 'base = "lpu-mini"\nname = "lpu-small"\n[chip]\nsram_bytes = "40 KiB"\nprogram_reserve_bytes = "1489 B"\n'
PANELS_16 = SMALL + "matrix_dim = 16\nmatrix_planes = 1\n"


@pytest.fixture(scope="module")
def weights():
    return deepseek_weights(load_model_config("tiny-deepseek-v3"))


def _compile(root, weights, target_text: str, precision: str = "fp16"):
    np.savez(root / "w.npz", **weights)
    (root / "target.toml").write_text(target_text)
    out = root / "build"
    assert main(["compile", "tiny-deepseek-v3", "--target", str(root / "target.toml"), "--context", str(CONTEXT),
                 "--prompt", str(len(PROMPT)), "--prefill-chunk", "16", "--weights", str(root / "w.npz"),
                 "--precision", precision, "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def build(tmp_path_factory, weights):
    return _compile(tmp_path_factory.mktemp("ds"), weights, SMALL)


def _reference(weights, precision: str = "fp16"):
    logits, new = generate(load_model_config("tiny-deepseek-v3"), weights, PROMPT, NEW, precision, context=CONTEXT)
    return np.stack([logits[len(PROMPT) - 1], *logits[len(PROMPT):]]), new


def test_the_build_splits_heads_and_experts_over_stages(build):
    plan = json.loads((build / "plan.json").read_text())
    tp = {s["units"][0]: s["tp"] for s in plan["stages"]}
    assert len(plan["stages"]) > 2 and plan["prefill"]["chunks"] == 2
    assert max(t for u, t in tp.items() if u.startswith("layers.") and "." not in u[7:]) > 1  # heads split
    assert max(t for u, t in tp.items() if u.endswith("moe_shared")) > 1


def test_timing_mode_is_hazard_free_and_agrees_with_schedule_plan_and_bound(build, capsys):
    f = run_build(build, tokens=2, check_determinism=True)
    assert f["hazards"] == [] and f["determinism"]["passed"]
    for phase in ("decode", "prefill"):
        assert f[phase]["latency_cycles"] == load_program(build / f"{phase}.prog").makespan
    assert main(["inspect", str(build), "--json"]) == 0
    decode = json.loads(capsys.readouterr().out)["decode"]
    assert decode["bound_us"] <= decode["latency_us"] <= 1.1 * decode["estimate_us"]


def test_functional_tokens_and_logits_match_the_reference_and_transformers(build, weights):
    import torch

    got = run_functional(build, PROMPT, NEW)
    want, new = _reference(weights)
    assert got["tokens"] == new
    assert np.abs(got["logits"] - want).max() < LOGIT_TOL * np.abs(want).max()
    model = hf_model(json.loads(TINY.read_text()), weights)
    with torch.no_grad():
        hf = model(torch.tensor([PROMPT + new[:-1]])).logits[0].numpy()
    assert np.abs(got["logits"] - hf[len(PROMPT) - 1:]).max() < HF_TOL
    assert [int(t) for t in hf[len(PROMPT) - 1:].argmax(-1)] == got["tokens"]


def test_many_feature_and_token_blocks_with_fp8_weights(tmp_path, weights):
    out = _compile(tmp_path, weights, PANELS_16, "fp8")
    both = Flag.HEADS | Flag.ACCUMULATE  # W_uv's products accumulate over blocks of latent features
    assert ((load_program(out / "decode.prog").cols["flags"] & both) == both).any()
    got = run_functional(out, PROMPT, NEW)
    want, new = _reference(weights, "fp8")
    # Here the reference's two best logits tie exactly at step 1 (121 and 192, 2.8945 each), so
    # which one greedy takes rests on one 16-bit step the all-reduce's rounding may give either
    # way: the tokens must agree up to and including that step's tie, the logits within tolerance.
    tied = _first_tie(want, LOGIT_TOL * np.abs(want).max())
    assert got["tokens"][:tied] == new[:tied]
    assert np.abs(got["logits"][: tied + 1] - want[: tied + 1]).max() < LOGIT_TOL * np.abs(want).max()


def _first_tie(logits: np.ndarray, tol: float) -> int:
    """The first step whose two best logits are within `tol` (the number of steps if none)."""
    best = -np.sort(-logits, axis=-1)
    ties = np.flatnonzero(best[:, 0] - best[:, 1] <= tol)
    return int(ties[0]) if len(ties) else len(logits)


def test_functional_run_through_the_cli_is_deterministic(build, capsys):
    assert main(["run", str(build), "--functional", "--prompt", " ".join(map(str, PROMPT)), "--tokens", "3",
                 "--check-determinism", "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["hazards"] == [] and f["determinism"]["passed"]
    assert f["functional"]["tokens"] == run_functional(build, PROMPT, 3)["tokens"]


# ---------------------------------------------------------------- the lowering's rule alone


@pytest.mark.parametrize(("phase", "tp"), [("decode", 1), ("prefill", 2)])
def test_matrix_products_do_the_flops_rule_and_stream_kv_b_once(tmp_path, phase, tp):
    """The MXM instructions of one mla_attention do exactly the op's flops (the absorbed form
    the plan counts) and read kv_b once; the cache's c_kv columns stream twice (scores, then
    values), its k_pe columns once."""
    graph = build_graph(load_model_config("tiny-deepseek-v3"), phase, context=CONTEXT, prompt=16, layers=1)
    ops, _ = shard_unit(list(graph.ops_in("layers.0")), tp, {})
    mla = next(op for op in ops if op.opcode is Opcode.MLA_ATTENTION)
    (tmp_path / "t.toml").write_text(PANELS_16)
    timing = Timing.of(load_target(str(tmp_path / "t.toml")))  # several feature and token blocks
    code = unit_code("mla", [mla], timing, [v.name for v in graph.inputs], {mla.results[0].name}, [])
    instrs = code.template.instrs
    assert sum(2 * i.m * i.k * i.n for i in instrs if i.op is Op.MXM) == mla.cost.flops
    params = {v.name: n for n, v in enumerate(code.params)}
    read = {name: sum(i.src_bytes for i in instrs if i.op is Op.READ and i.src.slot == slot
                      and i.src.space.name == "PARAM") for name, slot in params.items()}
    cache, kv_b = mla.operands[4], mla.operands[6]
    rank = mla.operands[2].type.shape[1]
    assert read[kv_b.name] == kv_b.type.nbytes
    assert read[cache.name] == cache.type.nbytes * (2 * rank + mla.attr["rope_dim"]) // cache.type.shape[2]


@pytest.mark.parametrize(("precision", "phase", "tp"), [("fp8", "decode", 1), ("fp16", "decode", 2),
                                                    ("fp8", "prefill", 8)])
def test_the_plan_times_mla_as_its_matrix_instructions_run(precision, phase, tp):
    """DeepSeek-V3's mla_attention on lpu: the plan's op time is the MXM's instructions one after
    another (each its install or its passes), W_uk, the c_kv scores and W_uv cut into the lowering's
    feature blocks (shard_cost.feature_blocks): fp8 decode on one chip was planned at 1/3 of it."""
    options = CompileOptions(precision=precision)
    graph = graph_passes(options)(build_graph(load_model_config("deepseek-v3"), phase, context=4096, prompt=16,
                                              layers=1))
    ops, _ = shard_unit(list(graph.ops_in("layers.0")), tp, {})
    mla = next(op for op in ops if op.opcode is Opcode.MLA_ATTENTION)
    system = load_target("lpu")
    timing = Timing.of(system)
    code = unit_code("mla", [mla], timing, [v.name for v in graph.inputs], {mla.results[0].name}, [])
    mxm = [i.cycles for i in code.template.instrs if i.op is Op.MXM]
    planned = op_time(chip_cost([mla], tp).work[0], system, precision).total_s * timing.clock_hz
    assert abs(planned - sum(mxm)) <= len(mxm)  # each instruction's cycles round up


def test_a_one_chip_latent_attention_stage_runs_as_planned(tmp_path, capsys):
    """Two layers of DeepSeek-V3 at its own widths (16 experts, a 2,048-token vocabulary), fp8 on lpu:
    each layer's attention on one chip, where the plan once counted W_uk, the scores and W_uv as if
    their installs hid under each other's passes (168 us planned, 207 scheduled). Every stage's
    scheduled share of the token (inspect's decode.stages) is within 5% of its estimate."""
    config = json.loads(Path("examples/models/deepseek-v3.json").read_text())
    config.update(num_hidden_layers=2, first_k_dense_replace=1, n_routed_experts=16, num_experts_per_tok=4,
                  vocab_size=2048, num_nextn_predict_layers=0)
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = tmp_path / "build"
    assert main(["compile", str(tmp_path / "config.json"), "--target", "lpu", "--precision", "fp8", "--context",
                 "4096", "--prompt", "16", "--weights", "none", "-o", str(out)]) == 0
    capsys.readouterr()
    plan = json.loads((out / "plan.json").read_text())
    assert [s["tp"] for s in plan["stages"] if s["units"][0] in ("layers.1", "embed")] == [1, 1]
    decode = inspect_json(capsys, str(out))["decode"]
    for stage in decode["stages"]:
        assert stage["scheduled_us"] == pytest.approx(stage["estimate_us"], rel=0.05)
    assert decode["latency_us"] == pytest.approx(decode["estimate_us"], rel=0.03)


def test_quantized_experts_of_the_real_model_fit_the_chips_streams():
    """DeepSeek-V3's MoE unit in prefill at tp=64 (4 experts of 7168 x 2048 per chip, 16 rows,
    fp8): each panel's scales are read when its MXM starts, not held from the unit's start
    (which needed 83 streams), so the template fits the chip's 64 (freeze raises otherwise)."""
    config = load_model_config("deepseek-v3")
    graph = graph_passes(CompileOptions(precision="fp8"))(build_graph(config, "prefill", context=64, prompt=16,
                                                                      layers=4))
    ops, _ = shard_unit(list(graph.ops_in("layers.3.moe_shared")), 64, {})
    ops = [op for op in ops if op.opcode not in (Opcode.ALLREDUCE, Opcode.ALLGATHER)]
    code = unit_code("moe", ops, Timing.of(load_target("lpu")), [v.name for v in graph.inputs], set(), [])
    freeze(code.template)


def test_head_product_applies_each_heads_tile_to_its_own_columns():
    """MXM HEADS (ir/program.py): tiles stored row-interleaved [k, g, n/g] (TRANSPOSE:
    [n/g, g, k]), tile h times columns [offset, offset + k) of part h of each row."""
    rng = np.random.default_rng(0)
    rows, heads, part, k, per, offset = 3, 2, 7, 4, 5, 2
    acts = rng.standard_normal((rows, heads, part)).astype(np.float32)
    tiles = rng.standard_normal((heads, k, per)).astype(np.float32)
    want = np.stack([acts[:, h, offset: offset + k] @ tiles[h] for h in range(heads)], axis=1)
    for transpose, stored in ((False, tiles.transpose(1, 0, 2)), (True, tiles.transpose(2, 0, 1))):
        ins = {"m": rows, "k": k, "n": heads * per, "offset": offset, "flags": int(Flag.TRANSPOSE) * transpose}
        got = _head_product(ins, stored.reshape(-1), acts.reshape(-1), heads)
        np.testing.assert_allclose(got.reshape(rows, heads, per), want, rtol=1e-5, atol=1e-5)
