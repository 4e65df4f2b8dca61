"""Batches end to end: plan, compile and run at batch 2 and 8 (dense, MoE, SSM), one prompt per sequence.

Every sequence of a batch decodes as its own batch-1 run does (the same tokens, logits within the
format's tolerance), with prompts of different lengths, one shorter than a prefill chunk, and the
graph IR reference agrees (`--check-reference`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from targets.reference_check import Reference
from targets.runner import run_prompts

MODELS = ("tiny-llama", "tiny-mixtral", "tiny-mamba")
SHAPE = ["--context", "64", "--prompt", "32", "--prefill-chunk", "16"]
PROMPTS = [[5, 17, 3], list(range(40, 59)), [200], list(range(100, 116)), [9, 8, 7, 6, 5],
           [int(x) for x in np.arange(32) * 7 % 256], [1, 1, 2, 3, 5, 8, 13], [250, 3, 99] * 5 + [4, 4]]
TOKENS = 3


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[tuple[str, int], Path]:
    root = tmp_path_factory.mktemp("batches")
    out = {}
    for model in MODELS:
        for batch in (1, 2, 8):
            path = root / f"{model}-b{batch}"
            assert main(["compile", model, "--target", "lpu-mini", *SHAPE, "--batch", str(batch), "-o",
                         str(path)]) == 0
            out[model, batch] = path
    return out


@pytest.fixture(scope="module")
def alone(builds) -> dict[str, dict]:
    """Every prompt run on its own, on the batch-1 build."""
    return {model: run_prompts(builds[model, 1], PROMPTS, TOKENS) for model in MODELS}


@pytest.mark.parametrize("batch", [2, 8])
@pytest.mark.parametrize("model", MODELS)
def test_plan_takes_the_batch(model, batch, capsys):
    assert main(["plan", model, "--target", "lpu-mini", *SHAPE, "--batch", str(batch), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["options"]["batch"] == batch and plan["chips"] >= 1
    assert plan["decode"]["throughput_tokens_per_s"] == pytest.approx(batch * plan["decode"]["tokens_per_s"], rel=1e-3)


@pytest.mark.parametrize("batch", [2, 8])
@pytest.mark.parametrize("model", MODELS)
def test_every_sequence_decodes_as_its_own_batch_1_run(builds, alone, model, batch, capsys):
    path = builds[model, batch]
    prompts = PROMPTS[:batch]
    text = "; ".join(" ".join(map(str, p)) for p in prompts)
    assert main(["run", str(path), "--functional", "--check-reference", "--prompt", text, "--tokens", str(TOKENS),
                 "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["hazards"] == [] and f["reference"]["passed"] and f["reference"]["sequences"] == batch
    assert f["functional"]["sequences"] == alone[model]["tokens"][:batch] == f["functional"]["tokens"]
    got = run_prompts(path, prompts, TOKENS)
    tolerance = Reference.load(path).tolerance
    for mine, single in zip(got["logits"], alone[model]["logits"][:batch], strict=True):
        assert np.abs(mine - single).max() <= tolerance.of(single)


def test_prompts_must_match_the_batch_and_groups_run_in_turn(builds, alone, capsys):
    """A batch-2 build takes 2 prompts (or 4, two runs); 3 is a one-line error. A batch-1 build runs
    several prompts one after another, each from a fresh SRAM image."""
    path = builds["tiny-llama", 2]
    assert main(["run", str(path), "--functional", "--prompt", "1 2 3; 4 5; 6"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 prompts for a build of batch 2" in err
    four = "; ".join(" ".join(map(str, p)) for p in PROMPTS[:4])
    assert main(["run", str(path), "--functional", "--prompt", four, "--tokens", str(TOKENS), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["functional"]["tokens"] == alone["tiny-llama"]["tokens"][:4]
    assert main(["run", str(builds["tiny-llama", 1]), "--functional", "--prompt", "1 2; ; 3"]) == 1
    assert "--prompt" in capsys.readouterr().err


def test_run_prints_every_sequence(builds, capsys):
    assert main(["run", str(builds["tiny-mamba", 2]), "--functional", "--check-reference", "--prompt", "1 2 3; 9",
                 "--tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "prompt [1, 2, 3] -> tokens" in out and "prompt [9] -> tokens" in out
    assert "reference: 2 sequences, 4 steps agree" in out
