"""What plan accepts, compile compiles: random small models on 64 KiB-class chips either plan and then
compile, run hazard-free and match the reference, or plan refuses them.

The bases are the tiny presets (dense, mixture of experts, Mamba) with random hidden sizes, layers,
heads, experts and vocabularies, on targets of 64, 96 and 128 KiB per chip, at a random chip count or
the fewest that fit, every weight format and batch 1 or 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from compiler.build import compile_model
from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.planner import make_plan
from ir.errors import DoesNotFitError, SramflowError
from targets.runner import run_build

SHAPE = {"context": 64, "prompt": 32, "prefill_chunk": 16}


def target_file(root: Path, kib: int) -> Path:
    path = root / f"lpu-{kib}k.toml"
    path.write_text(f'base = "lpu-mini"\nname = "lpu-{kib}k"\n[chip]\nsram_bytes = "{kib} KiB"\n'
                    f'program_reserve_bytes = "{kib * 1489 // 64} B"\n')
    return path


@st.composite
def configs(draw) -> dict:
    base = draw(st.sampled_from(["tiny-llama", "tiny-mixtral", "tiny-mamba"]))
    cfg = json.loads(Path(f"examples/models/{base}.json").read_text())
    cfg["num_hidden_layers"] = draw(st.integers(1, 3))
    cfg["vocab_size"] = draw(st.sampled_from([96, 128, 200, 256, 300]))
    if base == "tiny-mamba":
        cfg["hidden_size"] = draw(st.sampled_from([32, 48, 64, 96]))
        cfg["intermediate_size"] = 2 * cfg["hidden_size"]
        return cfg
    heads = draw(st.sampled_from([2, 4, 8]))
    cfg["hidden_size"] = heads * draw(st.sampled_from([8, 16]))
    cfg["num_attention_heads"] = heads
    cfg["num_key_value_heads"] = draw(st.sampled_from([k for k in (1, 2, heads) if heads % k == 0]))
    cfg["intermediate_size"] = draw(st.sampled_from([48, 96, 128, 176]))
    if base == "tiny-mixtral":
        cfg["num_local_experts"] = draw(st.sampled_from([2, 4, 8]))
        cfg["num_experts_per_tok"] = draw(st.sampled_from([1, 2]))
    return cfg


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs(), kib=st.sampled_from([64, 96, 128]), chips=st.one_of(st.none(), st.integers(1, 40)),
       precision=st.sampled_from(["fp16", "int8", "fp8", "int4"]), batch=st.sampled_from([1, 2]))
def test_anything_plan_accepts_compiles_and_runs_hazard_free(tmp_path_factory, cfg, kib, chips, precision, batch):
    root = tmp_path_factory.mktemp("prop")
    model = root / "config.json"
    model.write_text(json.dumps(cfg))
    target = target_file(root, kib)
    options = CompileOptions(precision=precision, chips=chips, batch=batch, **SHAPE)
    try:
        make_plan(str(model), str(target), options)
    except SramflowError:
        event("plan refuses")
        return  # nothing to compile
    event("plan accepts")
    compile_model(str(model), str(target), options, root / "build", weights="random")
    figures = run_build(root / "build", 2, prompt=[[3, 1, 4][: 1 + b] for b in range(batch)], check_reference=True)
    assert figures["hazards"] == [] and figures["reference"]["passed"]


@pytest.mark.parametrize("chips", [48, 64])
def test_tiny_llama_on_48_and_64_lpu_mini_chips_plans_compiles_and_runs(tmp_path, chips, capsys):
    """These planned and then failed to compile: a 256-row vocabulary split 40 (56) ways left chips
    without rows. Now every chip of the split holds some."""
    args = ["tiny-llama", "--target", "lpu-mini", "--chips", str(chips)]
    assert main(["plan", *args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chips"] == chips
    assert main(["compile", *args, "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "b"), "--functional", "--check-reference", "--prompt", "1 2 3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []


def test_a_chip_count_no_layout_takes_is_refused_by_plan(capsys):
    assert main(["plan", "tiny-llama", "--target", "lpu-mini", "--chips", "128"]) == 1
    assert "no layout uses exactly 128 chips" in capsys.readouterr().err
    with pytest.raises(DoesNotFitError):
        make_plan("tiny-llama", "lpu-mini", CompileOptions(chips=128))
