"""DeepSeek-V3: multi-head latent attention over a compressed cache, group-limited sigmoid
routing with shared experts. Numerics of tiny-deepseek-v3 against transformers'
DeepseekV3ForCausalLM; the real model's size, cache and plans; sharding; IR text."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.frontend.options import CompileOptions
from compiler.passes.shard import ShardTensorParallel, allowed_tp
from compiler.planner import lower_one
from ir.ops import Opcode
from ir.parser import parse_graph
from ir.printer import print_graph
from ir.reference import EVAL, inverse_frequencies, rope_amplitude
from ir.verify import verify_graph
from tests.test_reference import PROMPT, generate, random_weights

TINY = Path("examples/models/tiny-deepseek-v3.json")
CONTEXT = 32
NEW_TOKENS = 6
# The reference rounds every op's result to 16 bits, transformers runs in float32 (as test_reference.py).
LOGIT_TOL = 3e-2


def deepseek_weights(config, seed: int = 2) -> dict[str, np.ndarray]:
    """Random weights; the router's correction bias spread wide enough that it, and the group
    limit, change which experts are chosen."""
    weights = random_weights(build_graph(config, "decode", context=CONTEXT), seed=seed)
    rng = np.random.default_rng(seed + 100)
    for name in weights:
        if name.endswith("e_score_correction_bias"):
            weights[name] = (0.5 * rng.standard_normal(weights[name].shape)).astype(np.float16)
    return weights


def hf_state(weights: dict[str, np.ndarray], cfg: dict) -> dict:
    """Our weights under Hugging Face's names and [out, in] layouts: the split q_b / kv_a
    parts are re-joined per head, the stacked experts fused as gate_up_proj [E, 2I, H]."""
    import torch

    heads, nope, rope = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"]
    state: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        base, _, leaf = name.rpartition(".")
        if name.endswith("q_b_proj.nope.weight"):
            q_rope = weights[name.replace(".nope.", ".rope.")]
            per_head = np.concatenate([w.reshape(len(w), heads, nope), q_rope.reshape(len(w), heads, rope)], axis=2)
            state[name.replace(".nope.weight", ".weight")] = per_head.reshape(len(w), -1).T
        elif name.endswith("kv_a_proj_with_mqa.latent.weight"):
            state[name.replace(".latent.", ".")] = np.concatenate([w, weights[name.replace("latent", "rope")]], 1).T
        elif name.endswith("mlp.experts.gate"):
            state[f"{base}.gate_up_proj"] = np.concatenate([w, weights[f"{base}.up"]], axis=2).transpose(0, 2, 1)
            state[f"{base}.down_proj"] = weights[f"{base}.down"].transpose(0, 2, 1)
        elif leaf in ("up", "down") and base.endswith("mlp.experts") or ".rope.weight" in name:
            continue  # joined above
        else:
            state[name] = w.T if w.ndim == 2 and not name.startswith("embed") else w
    return {("" if k == "lm_head.weight" else "model.") + k: torch.from_numpy(np.ascontiguousarray(v, np.float32))
            for k, v in state.items()}


def hf_model(cfg: dict, weights):
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**cfg)).eval().float()
    missing, unexpected = model.load_state_dict(hf_state(weights, cfg), strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model


@pytest.fixture(scope="module")
def tiny():
    config = load_model_config("tiny-deepseek-v3")
    weights = deepseek_weights(config)
    logits, new = generate(config, weights, PROMPT, NEW_TOKENS, context=CONTEXT)
    return config, weights, logits, new


def test_tiny_deepseek_matches_hugging_face(tiny):
    """Prefill then greedy decode through the latent cache against HF, which expands keys and
    values from the latent: same tokens, logits within LOGIT_TOL."""
    import torch

    _, weights, logits, new = tiny
    model = hf_model(json.loads(TINY.read_text()), weights)
    with torch.no_grad():
        hf = model(torch.tensor([PROMPT + new[:-1]])).logits[0].numpy()
        greedy = model.generate(torch.tensor([PROMPT]), max_new_tokens=len(new), do_sample=False)
    assert np.abs(logits - hf).max() < LOGIT_TOL
    assert greedy[0, len(PROMPT):].tolist() == new


@pytest.mark.parametrize(("precision", "tol"), [("int8", 0.05), ("fp8", 0.15)])
def test_quantized_weights_stay_close_to_fp16(tiny, precision, tol):
    """Relative RMS error of the prompt's logits with every matmul weight, the experts and
    kv_b (inside mla_attention) quantized per output channel. Measured: 2.3% and 9.1%."""
    config, weights, logits, _ = tiny
    q_logits, _ = generate(config, weights, PROMPT, 1, precision, context=CONTEXT)
    ref = logits[: len(PROMPT)]
    assert np.sqrt(np.mean((q_logits - ref) ** 2) / np.mean(ref**2)) < tol


def test_router_groups_and_bias_match_hugging_face():
    """topk with a correction bias and expert groups against HF's DeepseekV3TopkRouter, on
    rows where the bias and the group limit change the choice (asserted, so they matter)."""
    import torch
    import transformers

    cfg = json.loads(TINY.read_text())
    router = transformers.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3TopkRouter(
        transformers.DeepseekV3Config(**cfg))
    graph = build_graph(load_model_config("tiny-deepseek-v3"), "decode", context=CONTEXT, layers=2)
    topk = next(op for op in graph.ops if op.opcode is Opcode.TOPK)
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((64, 8)).astype(np.float32)
    bias = (0.5 * rng.standard_normal(8)).astype(np.float32)
    router.e_score_correction_bias.copy_(torch.from_numpy(bias))
    with torch.no_grad():  # identity weight: the router's logits are its inputs
        router.weight.copy_(torch.eye(8, 64))
        _, hf_weights, hf_ids = router(torch.from_numpy(np.pad(logits, ((0, 0), (0, 56)))))
    weights, ids = EVAL[Opcode.TOPK](topk, [logits, bias])
    order = np.argsort(ids, axis=1)
    hf_order = np.argsort(hf_ids.numpy(), axis=1)
    assert (np.take_along_axis(ids, order, 1) == np.take_along_axis(hf_ids.numpy(), hf_order, 1)).all()
    np.testing.assert_allclose(np.take_along_axis(weights, order, 1),
                               np.take_along_axis(hf_weights.numpy(), hf_order, 1), rtol=1e-5)
    plain = np.sort(np.argsort(-logits, axis=1)[:, :2], axis=1)
    biased = np.sort(np.argsort(-(1 / (1 + np.exp(-logits)) + bias), axis=1)[:, :2], axis=1)
    assert (plain != np.sort(ids, axis=1)).any(axis=1).sum() > 8
    assert (biased != np.sort(ids, axis=1)).any(axis=1).sum() > 0  # the group limit alone changes some


def test_yarn_frequencies_and_softmax_scale_match_hugging_face():
    """The real config's YaRN: rope frequencies and cos/sin amplitude, and the softmax scale
    1/sqrt(192) x mscale(40, mscale_all_dim=1)^2."""
    import transformers
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf

    cfg = json.loads(Path("examples/models/deepseek-v3.json").read_text())
    hf_cfg = transformers.DeepseekV3Config(**cfg)
    hf_inv, hf_amplitude = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["yarn"](hf_cfg, "cpu")
    config = load_model_config("deepseek-v3")
    graph = build_graph(config, "decode", context=8, layers=1)
    rope = next(op for op in graph.ops if op.opcode is Opcode.ROPE)
    assert rope.attr["interleave"] and rope.attr["head_dim"] == 64
    np.testing.assert_allclose(inverse_frequencies(rope.attr, 64), hf_inv.numpy(), rtol=1e-6)
    assert rope_amplitude(rope.attr) == pytest.approx(hf_amplitude)
    mla = next(op for op in graph.ops if op.opcode is Opcode.MLA_ATTENTION)
    assert mla.attr["scale"] == pytest.approx(hf.yarn_apply_mscale(hf_cfg.rope_parameters, 192**-0.5))
    assert mla.attr["scale"] == pytest.approx((0.1 * math.log(40) + 1) ** 2 / math.sqrt(192))


def test_deepseek_v3_size_and_latent_cache_by_hand():
    """671B parameters without the multi-token-prediction layer (DeepSeek's own count for the
    main model); the cache is 61 layers x (512 latent + 64 rope) x 2 bytes = 70,272 bytes a
    token, where the expanded keys and values of 128 heads would take 61 x 128 x (192 + 128) x 2 (71 times more)."""
    config = load_model_config("deepseek-v3")
    graph = build_graph(config, "decode", context=1000)
    assert sum(p.type.numel for p in graph.params) == pytest.approx(671e9, rel=1e-3)
    assert graph.state_bytes() == 1000 * 61 * (512 + 64) * 2 == 1000 * 70_272
    assert config.layer_plan[2:4] == (("mla", "mlp"), ("mla", "moe_shared"))
    assert (config.num_experts, config.experts_per_token, config.router.shared_intermediate_size) == (256, 8, 2048)


def test_heads_split_latent_cache_whole_and_down_projections_by_column():
    graph = build_graph(load_model_config("deepseek-v3"), "decode", context=4096, layers=4)
    attention, moe = list(graph.ops_in("layers.3")), list(graph.ops_in("layers.3.moe_shared"))
    assert allowed_tp(attention, 512) == [1, 2, 4, 8, 16, 32, 64, 128]  # whole heads only
    chip = ShardTensorParallel(8)(attention)
    mla = next(op for op in chip if op.opcode is Opcode.MLA_ATTENTION)
    assert mla.attr["heads"] == 16
    assert mla.operands[4].type.shape == (1, 4096, 576)  # the whole latent cache on every chip
    assert mla.operands[6].type.shape == (512, 16 * 256)  # kv_b: this chip's heads
    by_param = {op.operands[1].name.split(".")[-2]: op for op in chip
                if len(op.operands) > 1 and op.operands[1].name.endswith(".weight")}
    assert by_param["q_a_proj"].operands[1].type.shape == (7168, 1536 // 8)  # a column shard ...
    assert by_param["q_a_layernorm"].operands[0].type.shape == (1, 1536)  # ... gathered whole for its norm
    assert by_param["latent"].operands[1].type.shape == (7168, 512 // 8)
    assert by_param["rope"].operands[1].type.shape == (7168, 64)  # k_pe goes to rope, not a norm: whole
    chip = ShardTensorParallel(8)(moe)
    experts = next(op for op in chip if op.opcode is Opcode.EXPERTS)
    # every expert's features cut 8 ways: 256 of 2,048, one 320-wide lpu tile (passes.shard.expert_split)
    assert experts.operands[3].type.shape == (256, 7168, 256)
    # routed and shared experts are partial sums, added before the unit's one allreduce
    assert [op.opcode for op in chip].count(Opcode.ALLREDUCE) == 1


def test_each_chip_attends_with_its_heads_over_its_own_cache_copy():
    """mla_attention split by head (tp=2): each chip, with its heads' q and kv_b columns and a
    whole copy of the latent cache, computes exactly its heads' slice of the output."""
    graph = build_graph(load_model_config("tiny-deepseek-v3"), "decode", context=CONTEXT, layers=1)
    whole = next(op for op in graph.ops if op.opcode is Opcode.MLA_ATTENTION)
    chip = next(op for op in ShardTensorParallel(2)(list(graph.ops_in("layers.0")))
                if op.opcode is Opcode.MLA_ATTENTION)
    rng = np.random.default_rng(3)
    args = [rng.standard_normal(v.type.shape).astype(np.float32) for v in whole.operands]
    args[5] = np.array([7], np.int32)
    args[4][:] = 0
    args[4][0, :7] = rng.standard_normal((7, 24))
    expected = EVAL[Opcode.MLA_ATTENTION](whole, [a.copy() for a in args])[0]
    halves = []
    for rank in range(2):
        mine = [a.copy() for a in args]
        for i in (0, 1, 6):  # q_nope, q_pe and kv_b: this chip's half of the heads' columns
            width = args[i].shape[1] // 2
            mine[i] = args[i][:, rank * width:(rank + 1) * width]
        assert [m.shape for m in mine] == [v.type.shape for v in chip.operands]
        halves.append(EVAL[Opcode.MLA_ATTENTION](chip, mine)[0])
    np.testing.assert_allclose(np.concatenate(halves, axis=1), expected, rtol=1e-5, atol=1e-5)


def test_sweep_on_lpu_counts_the_latent_cache(capsys):
    """`plan deepseek-v3 --target lpu --precision fp8 --context 32768,131072`: one row per
    context, KV bytes exactly 70,272 a token, figures beside their bounds. (At 131072 a whole
    layer does not fit one chip: its latent cache alone is 151 MB on every chip of its group;
    attention and experts are separate units, so it plans.) Context 4096 is left out only
    for time: its many fitting stages keep CP-SAT searching to its limit (see the README)."""
    args = ["plan", "deepseek-v3", "--target", "lpu", "--precision", "fp8", "--context", "32768,131072"]
    assert main([*args, "--json"]) == 0
    plans = json.loads(capsys.readouterr().out)["sweep"]
    assert [p["totals"]["kv_cache_bytes"] for p in plans] == [c * 70_272 for c in (32768, 131072)]
    for plan in plans:
        assert plan["totals"]["params"] == pytest.approx(671e9, rel=1e-3)
        assert plan["chips_lower_bound"] <= plan["chips"] <= 1.5 * plan["chips_lower_bound"]
        assert plan["decode"]["latency_bound_us"] <= plan["decode"]["latency_us"]
        assert sum(s["chips"] for s in plan["stages"]) == plan["chips"]
        assert plan["chips"] * 230e6 > plan["totals"]["weight_bytes"]
    assert plans[0]["chips"] <= plans[1]["chips"]


def test_h100_plan_fits_its_chip_limit(capsys):
    """671 GB of fp8 weights over 80 GB GPUs: at least 9, well within h100's 256."""
    assert main(["plan", "deepseek-v3", "--target", "h100", "--precision", "fp8", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert 9 <= plan["chips"] <= 256
    assert plan["chips"] * 80e9 > plan["totals"]["weight_bytes"]


@pytest.mark.parametrize("precision", ["fp16", "fp8"])
def test_tiny_decode_graph_text_round_trips(precision):
    graph = lower_one("tiny-deepseek-v3", "decode", CompileOptions(precision=precision, context=CONTEXT))
    verify_graph(graph)
    text = print_graph(graph)
    back = parse_graph(text, "tiny-deepseek-v3.ir")
    assert back == graph and print_graph(back) == text
    assert "mla_attention" in text and "topk_groups = 2" in text


def _error(capsys, *args) -> str:
    assert main(list(args)) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sramflow: error:")
    return err


def test_compile_names_the_op_it_cannot_lower(capsys, tmp_path, monkeypatch):
    """Every opcode has a lowering now (tests/test_deepseek_lowering.py); without one, compile
    refuses before planning and names the op."""
    from compiler.codegen.rules import EMIT

    monkeypatch.delitem(EMIT, Opcode.MLA_ATTENTION)
    err = _error(capsys, "compile", "tiny-deepseek-v3", "--target", "lpu-mini", "-o", str(tmp_path / "x"))
    assert "mla_attention" in err


def test_latent_cache_refuses_8_bit_kv(capsys):
    assert "latent" in _error(capsys, "plan", "tiny-deepseek-v3", "--target", "lpu-mini", "--kv-precision", "fp8")


@pytest.mark.parametrize(("field", "value", "says"), [
    ("n_group", 3, "n_group"), ("topk_group", 5, "topk_group"), ("scoring_func", "softmax", "scoring_func"),
    ("kv_lora_rank", 0, "kv_lora_rank"), ("num_experts_per_tok", 7, "num_experts_per_tok"),
])
def test_bad_configs_name_file_and_field(tmp_path, field, value, says):
    from ir.errors import ConfigError

    bad = tmp_path / "config.json"
    bad.write_text(json.dumps(json.loads(TINY.read_text()) | {field: value}))
    with pytest.raises(ConfigError, match=f"{bad}: field '{says}'"):
        load_model_config(str(bad))
