"""`run --functional --check-reference`: the graph IR reference on weights regenerated from the build's
record of their source, compared step by step within each format's tolerance.

benchmarks/reference_matrix.py runs every tiny model at every weight and KV format, batch 1 and 2;
here each model runs at a quantized format beside an 8-bit cache (where the model has one), and the
block formats once each, batch 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from ir.weights import random_weights
from targets.reference_check import TOLERANCE, Reference, tolerance_for

SHAPE = ["--context", "64", "--prompt", "48", "--prefill-chunk", "16"]
PROMPTS = "5 17 3; 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72"


def compile_(tmp: Path, model: str, *extra: str) -> Path:
    out = tmp / model
    assert main(["compile", model, "--target", "lpu-mini", *SHAPE, *extra, "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize(("model", "precision", "kv"), [
    ("tiny-llama", "int4", "fp8"), ("tiny-mixtral", "int8", "int8"), ("tiny-mamba", "fp8", "fp16"),
    ("tiny-jamba", "int8", "fp8"), ("tiny-deepseek-v3", "fp8", "fp16"), ("tiny-llama", "nvfp4", "nvfp4"),
    ("tiny-mixtral", "mxfp4", "fp16"), ("tiny-mamba", "mxfp8", "fp16")])
def test_every_tiny_model_agrees_with_the_reference_at_batch_2(tmp_path, capsys, model, precision, kv):
    build = compile_(tmp_path, model, "--precision", precision, "--kv-precision", kv, "--batch", "2")
    capsys.readouterr()
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", PROMPTS, "--tokens", "4",
                 "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)["reference"]
    assert ref["passed"] and ref["sequences"] == 2 and ref["steps"] == 8
    assert ref["tolerance"] == {"absolute": tolerance_for(precision, kv).absolute,
                                "relative": tolerance_for(precision, kv).relative}
    assert 0 <= ref["max_abs_diff"] < tolerance_for(precision, kv).absolute


def test_the_reference_regenerates_the_random_weights_the_image_holds(tmp_path):
    """The judge's weights come from the recorded source (random, seed 0), quantized by the judge."""
    build = compile_(tmp_path, "tiny-llama", "--precision", "int8")
    reference = Reference.load(build)
    weights = random_weights(build_graph(load_model_config("tiny-llama"), "decode", context=64))
    assert np.array_equal(reference.params["layers.0.input_layernorm.weight"],
                          weights["layers.0.input_layernorm.weight"])
    assert reference.params["lm_head.weight"].dtype == np.int8 and "lm_head.weight.scale" in reference.params
    assert reference.tolerance == TOLERANCE["int8"]


def test_a_checkpoint_build_needs_its_checkpoint(tmp_path, capsys):
    weights = random_weights(build_graph(load_model_config("tiny-llama"), "decode", context=64), seed=3)
    ckpt = tmp_path / "w.npz"
    np.savez(ckpt, **weights)
    build = compile_(tmp_path, "tiny-llama", "--weights", str(ckpt))
    run = ["run", str(build), "--functional", "--check-reference", "--prompt", "1 2 3"]
    assert main(run) == 0
    ckpt.unlink()
    capsys.readouterr()
    assert main(run) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--check-reference needs the weights the build was made from" in err


def test_check_reference_needs_the_functional_run(tmp_path, capsys):
    build = compile_(tmp_path, "tiny-llama")
    assert main(["run", str(build), "--check-reference"]) == 1
    assert "add --functional" in capsys.readouterr().err


def test_a_router_near_tie_is_not_compared_but_counted(tmp_path, capsys):
    """tiny-deepseek-v3 at int8: on this prompt one decode step's router has two experts within 5e-5;
    16-bit rounding may pick either, so that step is counted as a tie rather than compared."""
    build = compile_(tmp_path, "tiny-deepseek-v3", "--precision", "int8")
    capsys.readouterr()
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", " ".join(["9"] * 33),
                 "--tokens", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reference"]["ties"] >= 1
