"""`sramflow plan` as a user runs it: figures, objectives, determinism, and one-line errors."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.cli import main


def plan_json(capsys, *args):
    assert main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def l70(request):
    out = subprocess.run([sys.executable, "-m", "compiler.cli", "plan", "llama-3.1-70b", "--target", "lpu",
                          "--precision", "int8", "--json"], capture_output=True, text=True, check=True)
    return out.stdout


def test_70b_int8_within_ten_percent_of_capacity_bound(l70):
    plan = json.loads(l70)
    assert plan["chips"] <= 1.10 * plan["chips_lower_bound"]
    assert plan["solver"]["status"] in ("OPTIMAL", "FEASIBLE")
    assert sum(s["chips"] for s in plan["stages"]) == plan["chips"]
    layers = [s["layers"] for s in plan["stages"] if s["layers"]]
    assert layers[0][0] == 0 and layers[-1][1] == 79
    assert all(b[0] == a[1] + 1 for a, b in zip(layers, layers[1:], strict=False))
    for s in plan["stages"]:
        assert s["memory_per_chip_bytes"]["headroom"] >= 0


def test_default_plan_owns_no_idle_chips(capsys):
    """Stage sizes and places are chosen together: llama-3.1-8b fp16 on lpu spans the chips it uses (it was
    5 + 40 chips in one 72-chip group and 32 in the next: 77 chips with work on a footprint of 104)."""
    plan = plan_json(capsys, "llama-3.1-8b", "--target", "lpu")
    assert plan["footprint_chips"] == plan["chips"] <= 1.06 * plan["chips_lower_bound"]
    g = 72
    assert all(s["chip_range"][0] // g == s["chip_range"][1] // g for s in plan["stages"])


def test_json_has_the_documented_keys(l70):
    plan = json.loads(l70)
    for key in ("chips", "chips_lower_bound", "stages", "memory_per_chip_bytes"):
        assert key in plan
    assert {"tokens_per_s", "latency_us", "latency_bound_us"} <= plan["decode"].keys()
    assert "ttft_ms" in plan["prefill"]
    assert {"status", "wall_s"} <= plan["solver"].keys()
    assert plan["decode"]["latency_bound_us"] <= plan["decode"]["latency_us"]
    assert plan["prefill"]["ttft_bound_ms"] <= plan["prefill"]["ttft_ms"]


def test_latency_objective_is_faster_within_budget(capsys, l70):
    fewest = json.loads(l70)
    fast = plan_json(capsys, "llama-3.1-70b", "--precision", "int8", "--objective", "latency", "--max-chips", "1000")
    assert fast["chips"] <= 1000
    assert fast["decode"]["latency_us"] < fewest["decode"]["latency_us"]


def test_exact_chip_count(capsys):
    plan = plan_json(capsys, "llama-3.1-8b", "--precision", "int8", "--chips", "64")
    assert plan["chips"] == 64


def test_same_command_gives_byte_identical_json_across_processes(l70):
    env = dict(os.environ, PYTHONHASHSEED="12345")
    again = subprocess.run([sys.executable, "-m", "compiler.cli", "plan", "llama-3.1-70b", "--target", "lpu",
                            "--precision", "int8", "--json"], capture_output=True, text=True, check=True, env=env)
    assert hashlib.sha256(again.stdout.encode()).hexdigest() == hashlib.sha256(l70.encode()).hexdigest()


def test_table_output_names_the_figures(capsys):
    assert main(["plan", "llama-3.1-8b", "--precision", "int8"]) == 0
    out = capsys.readouterr().out
    for word in ("chips", "decode latency", "time to first token", "pipeline stages", "memory per chip"):
        assert word in out


def test_h100_plans(capsys):
    plan = plan_json(capsys, "llama-3.1-70b", "--target", "h100")
    assert 2 <= plan["chips"] <= 8


def _error(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("sramflow: error:")
    return err


def test_missing_model_file(capsys, tmp_path):
    assert str(tmp_path / "nope.json") in _error(capsys, "plan", str(tmp_path / "nope.json"))


def test_malformed_json(capsys, tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": 4096,\n  oops}')
    err = _error(capsys, "plan", str(bad))
    assert f"{bad}:2:" in err and "malformed JSON" in err


def test_unknown_architecture(capsys, tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    err = _error(capsys, "plan", str(bad))
    assert "GPT2LMHeadModel" in err and "architectures" in err


def test_negative_context(capsys):
    assert "--context" in _error(capsys, "plan", "llama-3.1-8b", "--context", "-5")


def test_unknown_target_field(capsys, tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text('base = "lpu"\n[chip]\nsram_byts = "100 MB"\n')
    err = _error(capsys, "plan", "llama-3.1-8b", "--target", str(bad))
    assert "sram_byts" in err and str(bad) in err


def test_model_that_cannot_fit_says_how_many_chips(capsys):
    err = _error(capsys, "plan", "llama-3.1-70b", "--precision", "int8", "--chips", "10")
    assert "needs at least" in err
    needed = int(err.split("needs at least ")[1].split()[0])
    assert needed > 10


def test_context_sweep_grows_the_kv_cache_as_the_formula_says(capsys):
    """Llama-3.1-70B: 80 layers x (k, v) x 8 kv heads x 128 x 2 bytes = 327,680 bytes per token."""
    contexts = [1024, 8192, 32768, 131072, 262144]
    assert main(["plan", "llama-3.1-70b", "--precision", "int8", "--context", ",".join(map(str, contexts)),
                 "--json"]) == 0
    sweep = json.loads(capsys.readouterr().out)["sweep"]
    assert [p["options"]["context"] for p in sweep] == contexts
    for p in sweep:
        assert p["totals"]["kv_cache_bytes"] == p["options"]["context"] * 80 * 2 * 8 * 128 * 2
    chips = [p["chips_lower_bound"] for p in sweep]
    assert chips == sorted(chips) and chips[-1] > chips[0]
    assert main(["plan", "llama-3.1-8b", "--context", "1024,8192"]) == 0
    assert "KV GB" in capsys.readouterr().out
    assert main(["plan", "llama-3.1-8b", "--context", "1k"]) == 1
    assert "--context" in capsys.readouterr().err


def test_kv_precision_halves_the_cache_and_counts_its_scales(capsys):
    """Llama-3.1-8B at 4096 tokens: 32 layers x (k, v) x 4096 x 1024 values; int8 adds a
    2-byte scale per token, layer, k/v and kv head (8)."""
    sizes = {}
    for kv in ("fp16", "int8", "fp8"):
        assert main(["plan", "llama-3.1-8b", "--kv-precision", kv, "--json"]) == 0
        sizes[kv] = json.loads(capsys.readouterr().out)["totals"]["kv_cache_bytes"]
    values = 32 * 2 * 4096 * 1024
    assert sizes["fp16"] == 2 * values
    assert sizes["int8"] == sizes["fp8"] == values + 32 * 2 * 4096 * 8 * 2


SHIPPED = sorted(p.stem for p in Path("examples/models").glob("*.json"))


@pytest.mark.parametrize("target", ["lpu", "h100"])
def test_every_shipped_config_plans(target, capsys):
    """Every model in examples/models plans on the LPU and on the H100 reference."""
    for model in SHIPPED:
        assert main(["plan", model, "--target", target, "--json"]) == 0, model
        plan = json.loads(capsys.readouterr().out)
        assert plan["chips"] >= plan["chips_lower_bound"] >= 1, model
        assert plan["decode"]["latency_us"] >= plan["decode"]["latency_bound_us"] > 0, model


def test_chips_objective_weighs_ttft_among_the_fewest_chips_spanned(l70):
    """70B int8: the plan is the front point of the smallest footprint with the shortest TTFT whose decode
    is within DECODE_SLACK of the fastest; the front says what it chose among, each point as planned."""
    plan = json.loads(l70)
    front = plan["solver"]["front"]
    chosen = [r for r in front if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["footprint_chips"] == plan["footprint_chips"]
    assert chosen[0]["ttft_ms"] == plan["prefill"]["ttft_ms"]
    least = [r for r in front if r["footprint_chips"] == plan["footprint_chips"]]
    fastest = min(r["decode_us"] for r in least)
    within = [r for r in least if r["decode_us"] <= 1.05 * fastest]
    assert chosen[0]["ttft_ms"] == min(r["ttft_ms"] for r in within)
    assert plan["prefill"]["ttft_ms"] < 0.6 * max(r["ttft_ms"] for r in least)  # the decode-fastest: 13.9 ms


def test_max_chips_counts_the_span(capsys):
    """mistral-7b's whole layers span at least 70 chips (69 with work): --max-chips 69 is not placed wider but on
    the 68 chips whose stages end inside a layer (only they fit); 67 is refused, naming those 68."""
    assert main(["plan", "mistral-7b", "--max-chips", "69", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["footprint_chips"] == 68 and plan["layer_units"]["why"] == "only it fits"
    assert "at least 68 chips" in _error(capsys, "plan", "mistral-7b", "--max-chips", "67")
