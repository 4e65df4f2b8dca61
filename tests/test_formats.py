"""Number formats end to end: block-scaled weights (nvfp4, mxfp4, mxfp8) and caches (nvfp4) beside
the 8- and 4-bit ones, as a user sees them: exact byte counts, plans on current targets, tiny
models compiled and run functionally against the reference, and one-line refusals.

Functional builds are tiny-llama and tiny-mixtral on a 128 KiB-per-chip LPU pinned to 6 chips
(one build per format, module-scoped), and on 64 KiB chips whose layers split over groups.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.frontend.options import CompileOptions
from compiler.image import random_weights
from compiler.passes.quantize import Quantize, quantize_weights
from compiler.planner import lower_one
from ir.graph import Builder
from ir.isa import Fmt
from ir.numerics import decode, encode
from ir.ops import Opcode
from ir.parser import parse_graph
from ir.printer import print_graph
from ir.program import Flag
from ir.reference import stored_weight
from ir.types import DType, TensorType
from ir.verify import verify_graph
from targets import load_target
from targets.functional import _scaled_tile
from targets.runner import run_build, run_functional
from targets.timing import Timing
from tests.test_compile import TINY_TARGET
from tests.test_reference import generate

CONTEXT = 64
PROMPT = [1, 7, 42, 99, 3, 250, 17, 8, 200, 5, 66, 13, 90, 121, 31, 2, 44, 187, 9]  # 19: two prefill chunks
NEW = 6
TARGET = 'base = "lpu-mini"\nname = "lpu-128k"\n[chip]\nsram_bytes = "128 KiB"\nprogram_reserve_bytes = "1489 B"\n'
PANELS_16 = TARGET + "matrix_dim = 16\nmatrix_planes = 1\n"  # every MXM covers 16 inputs
BUILDS = [("tiny-llama", p, "fp16") for p in ("fp8", "int8", "int4", "nvfp4", "mxfp4", "mxfp8")] + [
    ("tiny-llama", "fp16", kv) for kv in ("fp8", "int8", "nvfp4")] + [
    ("tiny-mixtral", p, "fp16") for p in ("nvfp4", "mxfp4", "mxfp8")] + [("tiny-mixtral", "nvfp4", "nvfp4")]


def plan_json(capsys, *args: str) -> dict:
    assert main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def one_line_error(capsys, *args: str) -> str:
    assert main(list(args)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sramflow: error:")
    return err


# ---------------------------------------------------------------- bytes


@pytest.mark.parametrize(("precision", "block", "scale_bytes"), [("nvfp4", 16, 1), ("mxfp4", 32, 1),
                                                                 ("mxfp8", 32, 1)])
def test_block_scaled_weights_count_every_scale_byte(precision, block, scale_bytes):
    """tiny-llama by hand: each matrix [K, N] stores K*N codes of 4 or 8 bits, ceil(K / block) * N
    scales (tiny-llama's down_proj has K = 176: 11 blocks of 16, 5.5 of 32 -> 6), and for NVFP4
    one f32 tensor scale; norms stay 2 bytes a weight."""
    config = load_model_config("tiny-llama")
    graph = build_graph(config, "decode", context=CONTEXT)
    bits = 8 if precision == "mxfp8" else 4
    h, i, v, layers = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_layers
    kv = config.num_kv_heads * config.head_dim
    matrices = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)] * layers + [(h, v)]  # [K, N]
    codes = sum(k * n for k, n in matrices) + v * h  # + the embedding table [V, H], blocks along H
    scales = sum(math.ceil(k / block) * n for k, n in matrices) + v * math.ceil(h / block)
    tensor = 4 * (len(matrices) + 1) if precision == "nvfp4" else 0
    norms = 2 * h * (2 * layers + 1)
    assert Quantize(precision)(graph).param_bytes() == codes * bits // 8 + scales * scale_bytes + tensor + norms


@pytest.mark.parametrize(("model", "precision", "kv"), [
    ("tiny-mixtral", "nvfp4", "nvfp4"), ("tiny-llama", "mxfp4", "fp8"), ("tiny-mamba", "mxfp8", "fp16")])
def test_block_scaled_graphs_print_and_parse_back(model, precision, kv):
    """The new types spell nvfp4, mxfp4, mxfp8, e8m0 (and f32[] tensor scales) in IR text."""
    graph = lower_one(model, "decode", CompileOptions(precision=precision, kv_precision=kv, context=64))
    text = print_graph(graph)
    assert f"{precision}[" in text and ("e8m0[" in text or "fp8[" in text)
    again = parse_graph(text)
    verify_graph(again)
    assert print_graph(again) == text


def test_an_nvfp4_cache_counts_its_e4m3_scales(capsys):
    plan = plan_json(capsys, "llama-3.1-8b", "--target", "h100", "--kv-precision", "nvfp4", "--context", "8192")
    # 32 layers x k and v x 8192 tokens x 1024 values: half a byte each, plus an e4m3 per 16
    assert plan["totals"]["kv_cache_bytes"] == 32 * 2 * 8192 * (1024 // 2 + 1024 // 16)


def test_70b_nvfp4_on_b200_is_the_hand_count_and_decodes_at_the_fp4_rate(capsys):
    """4.5 bits a weight, scales included: 0.5 + 1/16 bytes a matrix weight, 4 bytes a matrix,
    norms 2 bytes a weight; the products run at B200's native fp4 peak."""
    config = load_model_config("llama-3.1-70b")
    plan = plan_json(capsys, "llama-3.1-70b", "--target", "b200", "--precision", "nvfp4")
    h, i, v, layers = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_layers
    kv = config.num_kv_heads * config.head_dim
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i
    matrix_weights = layers * per_layer + 2 * v * h  # + embedding table and LM head
    matrices = 7 * layers + 2
    norms = (2 * layers + 1) * h
    assert matrix_weights * 4.5 / 8 + 4 * matrices + 2 * norms == plan["totals"]["weight_bytes"]
    assert plan["totals"]["params"] == matrix_weights + norms
    weights = next(f for f in plan["decode"]["formats"] if f["tensor"] == "weights")
    assert weights == {"tensor": "weights", "format": "nvfp4", "mxm_rate": "fp4", "peak_ops_per_s": 9e15,
                       "rule": "native"}
    # Prefill is compute-bound at this prompt, so the native fp4 peak shows: mxfp8 at fp8's is slower.
    fp8 = plan_json(capsys, "llama-3.1-70b", "--target", "b200", "--precision", "mxfp8")
    assert plan["prefill"]["ttft_bound_ms"] < fp8["prefill"]["ttft_bound_ms"]


@pytest.mark.parametrize(("target", "rate", "rule"), [("b200", "fp4", "native"), ("rubin", "fp4", "native"),
                                                      ("lpu3", "fp8", "dequantised"), ("lpu", "fp8", "dequantised"),
                                                      ("h100", "fp8", "dequantised")])
def test_fp4_runs_natively_only_where_the_peak_table_says_so(capsys, target, rate, rule):
    plan = plan_json(capsys, "llama-3.1-8b", "--target", target, "--precision", "mxfp4", "--kv-precision", "nvfp4")
    assert [(f["mxm_rate"], f["rule"]) for f in plan["decode"]["formats"]] == [(rate, rule), (rate, rule)]
    chip = load_target(target).chip
    timing = Timing.of(load_target(target))
    assert timing.mxm_macs_per_cycle(Fmt.MXFP4) == pytest.approx(chip.peak_ops_per_s[rate] / 2 / chip.clock_hz)


def test_an_mxm_installs_block_scales_unless_it_widens_the_codes():
    """B200 installs e2m1 codes as stored with their scales (HBM bytes); the lpu widens them to its
    fp8 path (a pair of fp16 planes), where the scales are applied on the way in."""
    b200, lpu = Timing.of(load_target("b200")), Timing.of(load_target("lpu"))
    assert b200.install_bytes(Fmt.NVFP4) == 0.5 + 1 / 16 and b200.install_bytes(Fmt.MXFP4) == 0.5 + 1 / 32
    assert b200.install_bytes(Fmt.MXFP8) == 1 + 1 / 32
    assert lpu.install_bytes(Fmt.NVFP4) == lpu.install_bytes(Fmt.FP8) == 2.0
    assert b200.install(1280, 1280, Fmt.NVFP4) == math.ceil(1280 * 1280 * 0.5625 / b200.install_bytes_per_cycle)


# ---------------------------------------------------------------- refusals


def test_a_wafer_cannot_store_block_scaled_formats(capsys):
    err = one_line_error(capsys, "plan", "llama-3.1-8b", "--target", "wse3", "--precision", "nvfp4")
    assert "wse3 cannot store" in err and "--precision nvfp4" in err


def test_a_panel_that_splits_a_scale_block_is_refused(tmp_path, capsys):
    target = tmp_path / "panels16.toml"
    target.write_text(PANELS_16)
    err = one_line_error(capsys, "plan", "tiny-llama", "--target", str(target), "--precision", "mxfp4")
    assert "panel of 16 inputs" in err and "32-element" in err
    # 16-element NVFP4 blocks fit the same panel
    assert main(["plan", "tiny-llama", "--target", str(target), "--precision", "nvfp4", "--context", "64"]) == 0
    capsys.readouterr()


def test_latent_attention_with_block_scales_plans_but_does_not_compile(tmp_path, capsys):
    assert main(["plan", "tiny-deepseek-v3", "--target", "lpu-mini", "--precision", "nvfp4"]) == 0
    capsys.readouterr()
    err = one_line_error(capsys, "compile", "tiny-deepseek-v3", "--target", "lpu-mini", "--precision", "nvfp4",
                         "-o", str(tmp_path / "b"))
    assert "kv_b" in err and "nvfp4" in err
    assert not (tmp_path / "b").exists()


def test_an_nvfp4_cache_needs_heads_of_whole_blocks(tmp_path, capsys):
    cfg = json.loads(Path("examples/models/tiny-llama.json").read_text()) | {"num_attention_heads": 8,
                                                                             "num_key_value_heads": 8}
    path = tmp_path / "narrow-heads.json"  # head_dim 8
    path.write_text(json.dumps(cfg))
    err = one_line_error(capsys, "plan", str(path), "--target", "lpu", "--kv-precision", "nvfp4")
    assert "16 values" in err and "8 wide" in err


# ---------------------------------------------------------------- functional runs


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for model in ("tiny-llama", "tiny-mixtral"):
        weights = random_weights(build_graph(load_model_config(model), "decode", context=CONTEXT), seed=5)
        np.savez(root / f"{model}.npz", **weights)
        out[model] = (root / f"{model}.npz", weights)
    return out


def _compile(root: Path, target_text: str, checkpoint: Path, model: str, precision: str, kv: str, *extra: str
             ) -> Path:
    target = root / "target.toml"
    target.write_text(target_text)
    out = root / "build"
    assert main(["compile", model, "--target", str(target), "--context", str(CONTEXT), "--prompt", "32",
                 "--prefill-chunk", "16", "--weights", str(checkpoint), "--precision", precision,
                 "--kv-precision", kv, *extra, "-o", str(out)]) == 0
    return out


def _reference(model: str, weights: dict, precision: str, kv: str) -> tuple[np.ndarray, list[int]]:
    logits, new = generate(load_model_config(model), weights, PROMPT, NEW, precision, context=CONTEXT, kv=kv)
    return np.stack([logits[len(PROMPT) - 1], *logits[len(PROMPT):]]), new


@pytest.fixture(scope="module", params=BUILDS, ids=[f"{m}-{p}-kv{kv}" for m, p, kv in BUILDS])
def build(request, tmp_path_factory, checkpoints):
    model, precision, kv = request.param
    root = tmp_path_factory.mktemp(f"{model}-{precision}-{kv}")
    return request.param, _compile(root, TARGET, checkpoints[model][0], model, precision, kv, "--chips", "6")


def test_every_format_runs_functionally_bit_for_bit_as_the_reference(build, checkpoints):
    """Six chips: the vocabulary-sharded embedding on a group, the layers and head in pipeline
    stages of one chip each (tiny-llama's 176-wide MLP cannot split into whole 16- or 32-input
    blocks). Reference and interpreter share the library's rounding and sum every product exactly
    before one rounding, so tokens and every logit are equal, bit for bit."""
    (model, precision, kv), out = build
    plan = json.loads((out / "plan.json").read_text())
    assert plan["chips"] == 6 and len(plan["stages"]) > 1 and max(s["tp"] for s in plan["stages"]) > 1
    assert all(s["tp"] == 1 for s in plan["stages"] if s["layers"]), "layers split over a group sum partials"
    assert run_build(out)["hazards"] == []
    run = run_functional(out, PROMPT, NEW)
    logits, new = _reference(model, checkpoints[model][1], precision, kv)
    assert run["tokens"] == new
    np.testing.assert_array_equal(run["logits"], logits)


@pytest.mark.parametrize(("model", "precision", "kv"), [("tiny-mixtral", "nvfp4", "fp16"),
                                                        ("tiny-mixtral", "mxfp4", "fp16"),
                                                        ("tiny-llama", "fp16", "nvfp4")])
def test_block_formats_over_tensor_parallel_layers(tmp_path, checkpoints, model, precision, kv):
    """64 KiB chips split the layers over groups of two: each chip's partial sums are rounded to
    16 bits before the all-reduce adds them, so logits agree within that rounding (an NVFP4
    cache's codes, rounded from k and v that differ by it, within one e2m1 step of a few)."""
    out = _compile(tmp_path, TINY_TARGET, checkpoints[model][0], model, precision, kv)
    plan = json.loads((out / "plan.json").read_text())
    assert any(s["tp"] > 1 for s in plan["stages"] if s["layers"])
    run = run_functional(out, PROMPT, NEW)
    logits, new = _reference(model, checkpoints[model][1], precision, kv)
    assert run["tokens"] == new
    assert np.abs(run["logits"] - logits).max() < (0.1 if kv == "nvfp4" else 1e-2)


# ---------------------------------------------------------------- tiles, bit for bit


@pytest.mark.parametrize("precision", ["nvfp4", "mxfp4", "mxfp8"])
@pytest.mark.parametrize("flags", [0, Flag.TRANSPOSE])
def test_a_tile_the_mxm_decodes_is_the_reference_weight_bit_for_bit(precision, flags):
    """A panel [k0:k0+kb, n0:n0+nb] of a block-scaled weight, as the lowering streams it (codes on
    s_a, the panel's block-scale rows on s_d), decoded by the functional MXM, equals the
    reference's weight matrix (codes times block scales) exactly."""
    rng = np.random.default_rng(7)
    transpose = bool(flags & Flag.TRANSPOSE)
    k_all, n_all, k0, kb, n0, nb = 96, 40, 32, 64, 8, 24
    w = rng.standard_normal((n_all, k_all) if transpose else (k_all, n_all)).astype(np.float32)
    dtype = DType(precision)
    stored = quantize_weights({"w": w}, _graph_of(w, dtype, transpose), precision)
    scales = stored["w.scale"]
    full, _ = stored_weight(dtype, stored["w"], [scales], 1 if transpose else 0)
    b = dtype.block.size
    if transpose:
        codes, tile_scales = stored["w"][n0:n0 + nb, k0:k0 + kb], scales[n0:n0 + nb, k0 // b:(k0 + kb) // b]
    else:
        codes, tile_scales = stored["w"][k0:k0 + kb, n0:n0 + nb], scales[k0 // b:(k0 + kb) // b, n0:n0 + nb]
    ins = {"k": kb, "n": nb, "flags": int(flags), "dtype": int(Fmt[precision.upper()]), "chip": 0}
    tile = _scaled_tile(ins, decode(encode(codes, dtype), dtype),
                        decode(encode(tile_scales, dtype.block.scale), dtype.block.scale))
    want = full[n0:n0 + nb, k0:k0 + kb] if transpose else full[k0:k0 + kb, n0:n0 + nb]
    np.testing.assert_array_equal(tile, want.reshape(-1))


def _graph_of(w: np.ndarray, dtype: DType, transpose: bool):
    """A one-matmul graph whose weight is `w` ([K, N], or [N, K] with transpose_b), quantized."""
    b = Builder("one")
    k = w.shape[1] if transpose else w.shape[0]
    x = b.input("x", TensorType(DType.F16, (1, k)))
    weight = b.param("w", DType.F16, *w.shape)
    y = b.op(Opcode.MATMUL, x, weight, **({"transpose_b": True} if transpose else {}))
    return Quantize(dtype.value)(b.finish(y))
