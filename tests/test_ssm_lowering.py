"""Mamba's ops lowered: conv1d, selective_scan and slice compile to VXM programs that schedule,
run hazard-free, and compute what the graph IR's reference computes.

tiny-mamba (14 chips on a 32 KiB-per-chip LPU: three stages, its head pinned apart from the last
layer (_head_apart), the mixer's 128 inner channels split 8 ways) and tiny-jamba (12 chips on 96 KiB:
Mamba, attention and MoE layers over four stages) are compiled with Mamba-initialised random weights
(tests/test_ssm.py) and a 16-token prompt in two chunks of 8. Their functional runs must give the
reference's greedy tokens, and its logits within LOGIT_TOL of their largest magnitude: the reference
sums whole matrix products in f32, the chips sum panels and round partial sums to 16 bits on the links
(measured 1.1e-3 for tiny-mamba, 1.5e-3 for tiny-jamba).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from compiler.codegen.rules import EMIT
from compiler.frontend import build_graph, load_model_config
from compiler.frontend.options import CompileOptions
from compiler.partition.cost import op_time, vector_ops_per_s
from compiler.partition.shard_cost import shard_cost
from compiler.planner import make_plan
from ir.isa import Fn
from ir.numerics import encode
from ir.ops import Opcode
from ir.program_io import load_program
from ir.reference import causal_conv, selective_scan
from ir.types import DType
from targets import load_target
from targets.functional import VECTOR
from targets.runner import run_build, run_functional
from tests.test_ssm import generate, ssm_weights

PROMPT = [1, 7, 42, 99, 3, 250, 17, 8, 200, 5, 66, 13, 90, 121, 31, 2]  # two whole chunks of 8
NEW = 6
LOGIT_TOL = 3e-3  # of the largest |logit|
TARGETS = {"tiny-mamba": "32 KiB", "tiny-jamba": "64 KiB"}
HEAD_APART = {"tiny-mamba": (4, 2)}  # its last layer on 4 chips and the head on 2 (_head_apart)


def _target(root, sram: str) -> str:
    path = root / "target.toml"
    path.write_text(f'base = "lpu-mini"\nname = "lpu-small"\n[chip]\nsram_bytes = "{sram}"\n'
                    'program_reserve_bytes = "1489 B"\n')
    return str(path)


@pytest.fixture(scope="module", params=sorted(TARGETS))
def model(request, tmp_path_factory):
    """(name, weights, build directory) of a model compiled onto its small target."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    weights = ssm_weights(build_graph(load_model_config(name), "decode", context=64), seed=3)
    np.savez(root / "w.npz", **weights)
    out, target = root / "build", _target(root, TARGETS[name])
    args = [name, "--target", target, "--context", "64", "--prompt", str(len(PROMPT)), "--prefill-chunk", "8"]
    pinned = ["--plan", str(_head_apart(root, name, target))] if name in HEAD_APART else []
    assert main(["compile", *args, *pinned, "--weights", str(root / "w.npz"), "-o", str(out)]) == 0
    return name, weights, out


def _head_apart(root: Path, name: str, target: str) -> Path:
    """The searched plan as three stages: its first stage's group holding every layer but the last, the last
    layer on tp chips after it and the head on `head` chips of its own (HEAD_APART), the head's chips looking
    up the tied table's rows (as the searched plan does: the table held once), so this build crosses two
    hand-offs forward and the embedding's back to the first stage."""
    options = CompileOptions(context=64, prompt=len(PROMPT), prefill_chunk=8)
    plan = make_plan(name, target, options).to_dict()
    assert plan["embedding"]["on"] == "head"
    first = {k: v for k, v in plan["stages"][0].items() if k != "embedding"}
    tp, head = HEAD_APART[name]
    last = load_model_config(name).num_layers - 1
    width = first["tp"]
    plan["stages"] = [dict(first, units=["embed", f"layers.{last - 1}"], tp=width, chip_range=[0, width - 1]),
                      dict(first, index=1, units=[f"layers.{last}"] * 2, tp=tp, chip_range=[width, width + tp - 1]),
                      dict(first, index=2, units=["head", "head"], tp=head, embedding=True,
                           chip_range=[width + tp, width + tp + head - 1])]
    path = root / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def test_the_build_spreads_over_stages_and_splits_the_channels(model):
    _, _, out = model
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["stages"]) > 2 and max(s["tp"] for s in plan["stages"]) >= 4
    assert plan["prefill"]["chunks"] == 2 and plan["totals"]["ssm_state_bytes"] > 0


def test_timing_mode_is_hazard_free_and_agrees_with_schedule_plan_and_bound(model, capsys):
    _, _, out = model
    f = run_build(out, tokens=2, check_determinism=True)
    assert f["hazards"] == [] and f["determinism"]["passed"]
    for phase, key in (("decode", "latency_cycles"), ("prefill", "latency_cycles")):
        assert f[phase][key] == load_program(out / f"{phase}.prog").makespan
    assert main(["inspect", str(out), "--json"]) == 0
    decode = json.loads(capsys.readouterr().out)["decode"]
    assert decode["bound_us"] <= decode["latency_us"] <= 1.1 * decode["estimate_us"]


@pytest.mark.parametrize("prompt", [PROMPT, PROMPT[:11]], ids=["two-chunks", "chunk-and-tail"])
def test_functional_tokens_and_logits_match_the_reference(model, prompt):
    """A prompt filling the chunks runs through prefill; a shorter one prefills its whole chunks
    and steps its tail through decode (a recurrent state must not run on through padding)."""
    name, weights, out = model
    got = run_functional(out, prompt, NEW)
    logits, new = generate(load_model_config(name), weights, prompt, NEW)
    want = np.stack([logits[len(prompt) - 1], *logits[len(prompt):]])
    assert got["tokens"] == new
    assert np.abs(got["logits"] - want).max() < LOGIT_TOL * np.abs(want).max()


def test_functional_run_through_the_cli_is_deterministic(model, capsys):
    _, _, out = model
    assert main(["run", str(out), "--functional", "--prompt", " ".join(map(str, PROMPT)), "--tokens", "3",
                 "--check-determinism", "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["hazards"] == [] and f["determinism"]["passed"]
    assert f["functional"]["tokens"] == run_functional(out, PROMPT, 3)["tokens"]


# ---------------------------------------------------------------- the vector functions alone


def _stream(values: np.ndarray, dtype: DType = DType.F16) -> np.ndarray:
    """Values as a READ leaves them on a stream: their stored bytes."""
    return encode(values, dtype)


def test_scan_round_trips_the_f32_state_exactly():
    """Two rows of two sequences: the new state's bytes are the reference's f32 state, bit for
    bit, and y follows as the 16-bit values the reference rounds its result to."""
    rng = np.random.default_rng(0)
    batch, ch, n, rows = 2, 3, 4, 4
    x, dt = (rng.standard_normal((rows, ch)).astype(np.float16) for _ in range(2))
    a_log, b, c = (rng.standard_normal(s).astype(np.float16) for s in ((ch, n), (rows, n), (rows, n)))
    d = rng.standard_normal(ch).astype(np.float16)
    state = rng.standard_normal((batch, ch, n)).astype(np.float32)
    f32 = [v.astype(np.float32) for v in (x, dt, a_log, b, c, d)]
    params = np.concatenate([f32[2].ravel(), f32[5]])
    per_row = np.concatenate([v.ravel() for v in (f32[0], f32[1], f32[3], f32[4])])
    out = VECTOR[Fn.SCAN]({"act": DType.F16}, _stream(state, DType.F32), (params, per_row),
                          {"batch": batch, "channels": ch, "state": n, "rows": rows})
    want_state = state.copy()
    want_y = selective_scan(*f32, want_state).astype(np.float16)
    assert out[: state.nbytes].tobytes() == want_state.tobytes()
    assert out[state.nbytes:].tobytes() == want_y.tobytes()


def test_conv_and_its_state_shift_match_the_reference():
    rng = np.random.default_rng(1)
    batch, ch, k, rows = 2, 3, 4, 6
    x = rng.standard_normal((rows, ch)).astype(np.float16)
    w = rng.standard_normal((ch, k)).astype(np.float16)
    state = rng.standard_normal((batch, ch, k - 1)).astype(np.float16)
    shape = {"batch": batch, "channels": ch, "taps": k, "rows": rows}
    y = VECTOR[Fn.CONV1D]({"act": DType.F16}, _stream(x), (_stream(state), _stream(w)), shape)
    held = VECTOR[Fn.CONVSTATE]({"act": DType.F16}, _stream(x), _stream(state), shape)
    want_state = state.copy()
    assert np.array_equal(y, causal_conv(x.astype(np.float32), w.astype(np.float32), want_state).ravel())
    assert np.array_equal(held.astype(np.float16), want_state.ravel())


def test_the_plan_times_the_scan_on_the_vector_alus():
    """The lowering runs the recurrence on the VXM, so the plan's estimate must too."""
    system = load_target("lpu")
    ops = list(build_graph(load_model_config("mamba-2.8b"), "prefill", context=4096, prompt=256, layers=1)
               .ops_in("layers.0"))
    scan = next(w for w in shard_cost(ops, 8).work if w.opcode is Opcode.SELECTIVE_SCAN)
    assert op_time(scan, system, "fp16").compute_s == pytest.approx(scan.flops / vector_ops_per_s(system.chip))
    assert vector_ops_per_s(system.chip) == 320 * 16 * 900e6


def test_every_mamba_op_has_a_lowering_rule():
    assert {Opcode.CONV1D, Opcode.SELECTIVE_SCAN, Opcode.SLICE} <= set(EMIT)


def test_functional_tokens_match_hugging_face(model):
    """The interpreter's greedy tokens against transformers' own MambaForCausalLM / JambaForCausalLM."""
    import transformers

    from tests.test_ssm import hf_run, jamba_hf_state, mamba_hf_state

    name, weights, out = model
    got = run_functional(out, PROMPT, NEW)
    config = load_model_config(name)
    family, state = ("Mamba", mamba_hf_state) if config.family == "mamba" else ("Jamba", jamba_hf_state)
    cfg = json.loads(Path(f"examples/models/{name}.json").read_text())
    _, greedy = hf_run(getattr(transformers, f"{family}ForCausalLM"), getattr(transformers, f"{family}Config"),
                       cfg, state(weights, config.num_layers), PROMPT, got["tokens"])
    assert greedy == got["tokens"]
