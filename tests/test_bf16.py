"""bf16 as bf16: a bfloat16 config's weights, caches and activations are bf16 in the graph, the
SRAM image, the reference executor and functional mode, so a value above f16's 65,504 survives.

The model is tiny-llama with `torch_dtype: bfloat16`, its final norm scaled by 70,000: every
logit is then far beyond f16's range (f16 storage would make them infinite; the f16 config is
refused with one line instead).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.image import random_weights
from ir.image_io import load_image
from ir.numerics import decode
from ir.types import DType
from targets.runner import run_functional
from tests.test_compile import TINY_TARGET
from tests.test_reference import generate

CONTEXT = 64
PROMPT = [1, 7, 42, 99, 3, 250, 17, 8, 200, 5, 66, 13, 90, 121, 31, 2, 44, 187, 9]
NEW = 4
BIG = 70_000.0


def _config(root: Path, torch_dtype: str) -> Path:
    cfg = json.loads(Path("examples/models/tiny-llama.json").read_text()) | {"torch_dtype": torch_dtype}
    path = root / f"tiny-llama-{torch_dtype}.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    config = _config(root, "bfloat16")
    weights = random_weights(build_graph(load_model_config(str(config)), "decode", context=CONTEXT), seed=3)
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    weights["norm.weight"] = weights["norm.weight"] * BIG
    checkpoint = root / "big.npz"
    np.savez(checkpoint, **weights)
    target = root / "target.toml"
    target.write_text(TINY_TARGET)
    out = root / "build"
    assert main(["compile", str(config), "--target", str(target), "--context", str(CONTEXT), "--prompt", "32",
                 "--prefill-chunk", "16", "--weights", str(checkpoint), "-o", str(out)]) == 0
    return root, config, weights, checkpoint, target, out


def test_a_bfloat16_config_declares_bf16_everywhere(setup):
    _, config, *_ = setup
    graph = build_graph(load_model_config(str(config)), "decode", context=CONTEXT)
    assert {p.type.dtype for p in graph.params} == {DType.BF16}
    assert {s.type.dtype for s in graph.state} == {DType.BF16}
    assert graph.outputs[0].type.dtype is DType.BF16


def test_a_value_above_65504_survives_the_image(setup):
    _, _, weights, _, _, out = setup
    memory = json.loads((out / "memory.json").read_text())
    image, _ = load_image(out / "sram.img")
    stage = memory["stages"][-1]
    region = next(r for r in stage["regions"] if r["name"] == "norm.weight")
    stored = decode(image[stage["first_chip"]][region["addr"]: region["addr"] + region["bytes"]], DType.BF16)
    assert stored.max() > 65_504
    np.testing.assert_allclose(stored, weights["norm.weight"], rtol=2**-8)


def test_functional_bf16_matches_the_reference_beyond_f16s_range(setup):
    _, config, weights, _, _, out = setup
    run = run_functional(out, PROMPT, NEW)
    logits, new = generate(load_model_config(str(config)), weights, PROMPT, NEW, context=CONTEXT)
    expected = np.stack([logits[len(PROMPT) - 1], *logits[len(PROMPT):]])
    assert run["tokens"] == new
    assert np.isfinite(run["logits"]).all() and np.abs(run["logits"]).max() > 65_504
    # bf16 keeps 8 significant bits: activations differ by a few of its steps where the two
    # sum in different orders.
    assert np.abs(run["logits"] - expected).max() < 0.03 * np.abs(expected).max()


def test_the_same_checkpoint_under_an_f16_config_is_one_line(setup, capsys):
    root, _, _, checkpoint, target, _ = setup
    config = _config(root, "float16")
    assert main(["compile", str(config), "--target", str(target), "--context", str(CONTEXT), "--prompt", "32",
                 "--weights", str(checkpoint), "-o", str(root / "f16")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "norm.weight" in err and "f16" in err
    assert not (root / "f16").exists()


def test_an_unknown_torch_dtype_is_one_line(tmp_path, capsys):
    config = _config(tmp_path, "float8")
    assert main(["plan", str(config), "--target", "lpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torch_dtype" in err and str(config) in err and "bfloat16" in err
