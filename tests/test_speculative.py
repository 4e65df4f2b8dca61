"""Speculative decoding end to end: plan figures, speculative builds, and the defining invariant.

Greedy speculative decoding must emit exactly the target's plain greedy tokens, whatever the draft
proposes: tiny-llama with a random tiny draft (drafts nearly always rejected; on the target's chip, or
on its own), with a "near" draft (the same shapes and seeded weights, other norm epsilon and rope base:
drafts often accepted, sometimes not) and with itself (every draft accepted), at several K, prompts,
fp16 and int8. Every step takes the same cycles and executes the same instructions whatever is accepted.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from ir.reference import run_graph
from targets.build_dir import load_build
from targets.functional import Machine
from targets.reference_check import Reference
from targets.runner import run_prompts
from targets.speculative import mtp_step, run_speculative, run_speculative_build, shared_sram_hazards, sram_extent
from tests.cli_errors import TINY, ok, refused

SHAPE = ["--context", "64", "--prompt", "32", "--prefill-chunk", "16"]
PROMPTS = [[1, 2, 3], [174, 174, 174, 174], [9, 8, 7, 6, 5], list(range(40, 59))]
TOKENS = 10
# name: (draft, K, precision, --draft-placement); the tiny draft fits in the SRAM tiny-llama's chip leaves
# free (auto shares it), tiny-llama's shapes do not.
CASES = {"random-k1": ("tiny-llama-draft", 1, "fp16", "auto"), "random-k4": ("tiny-llama-draft", 4, "fp16", "own"),
         "random-k2-int8": ("tiny-llama-draft", 2, "int8", "auto"), "near-k3": ("near", 3, "fp16", "auto"),
         "near-k2-int8": ("near", 2, "int8", "auto"), "self-k3": ("tiny-llama", 3, "fp16", "auto")}
SHARED = {"random-k1", "random-k2-int8"}


@pytest.fixture(scope="module")
def near(tmp_path_factory) -> Path:
    """tiny-llama's shapes (so the same seeded weights) with other numerics: a draft that mostly agrees."""
    config = json.loads((Path(__file__).parents[1] / "examples/models/tiny-llama.json").read_text())
    folder = tmp_path_factory.mktemp("near")
    (folder / "config.json").write_text(json.dumps(config | {"rope_theta": 300.0, "rms_norm_eps": 0.3}))
    return folder


@pytest.fixture(scope="module")
def builds(tmp_path_factory, near) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("speculative")
    out = {}
    for name, (draft, k, precision, placement) in CASES.items():
        path = root / name
        draft = str(near) if draft == "near" else draft
        assert main(["compile", *TINY, *SHAPE, "--precision", precision, "--draft", draft, "--speculate", str(k),
                     "--draft-placement", placement, "-o", str(path)]) == 0
        out[name] = path
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_speculative_greedy_equals_plain_greedy(builds, case):
    build = load_build(builds[case])
    plain = run_prompts(build, PROMPTS, TOKENS)["tokens"]
    speculative = run_speculative(build, PROMPTS, TOKENS)
    assert speculative["tokens"] == plain
    accepted = [n for seq in speculative["accepted"] for n in seq]
    if case.startswith("self"):
        assert set(accepted) == {CASES[case][1]}  # the target as its own draft: every draft accepted
    if case.startswith("near"):
        assert 0 < sum(accepted) < len(accepted) * CASES[case][1]  # some accepted, some not


@settings(max_examples=4, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=20), st.integers(1, 8))
def test_any_prompt_gives_the_plain_tokens(builds, prompt, tokens):
    build = load_build(builds["near-k3"])
    assert run_speculative(build, [prompt], tokens)["tokens"] == run_prompts(build, [prompt], tokens)["tokens"]


def test_acceptance_patterns_take_identical_cycles_per_step(builds):
    runs = [run_speculative_build(builds["near-k3"], TOKENS, prompt=p) for p in ([1, 2, 3], [9, 8, 7, 6, 5])]
    patterns = [r["functional"]["accepted"] for r in runs]
    assert patterns[0] != patterns[1]
    assert runs[0]["speculative"] == runs[1]["speculative"]
    assert runs[0]["functional"]["cycles_per_step"] == runs[1]["functional"]["cycles_per_step"]
    per_step = [r["functional"]["instructions_per_step"] for r in runs]
    assert per_step[0] == per_step[1] and len(per_step[0]) == 1  # every step executes the same instructions


def test_a_batch_speculates_each_sequence_at_its_own_pace(tmp_path, near, capsys):
    """Batch 2: each sequence accepts its own drafts (positions diverge), and still gets its plain tokens;
    every emitted token's logits pass the graph IR reference."""
    path = tmp_path / "b2"
    assert main(["compile", *TINY, *SHAPE, "--batch", "2", "--draft", str(near), "--speculate", "3", "-o",
                 str(path)]) == 0
    build = load_build(path)
    out = run_speculative(build, PROMPTS, 8)
    assert out["tokens"] == run_prompts(build, PROMPTS, 8)["tokens"]
    assert len({tuple(a) for a in out["accepted"]}) > 1
    assert main(["run", str(path), "--functional", "--check-reference", "--prompt", "1 2 3; 9 8 7 6 5", "--tokens",
                 "8", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["reference"]["passed"] and figures["reference"]["steps"] == 16


@pytest.mark.parametrize("model", ["tiny-mixtral", "tiny-deepseek-v3"])
def test_experts_and_latent_attention_verify_as_they_decode(tmp_path, model):
    """A mixture of experts (its verify rows take every local expert, decode the routed ones) and latent
    attention: the target as its own draft accepts every draft, and emits its plain tokens."""
    assert main(["compile", model, "--target", "lpu-mini", *SHAPE, "--draft", model, "--speculate", "3", "-o",
                 str(tmp_path / "b")]) == 0
    build = load_build(tmp_path / "b")
    out = run_speculative(build, PROMPTS, 8)
    assert out["tokens"] == run_prompts(build, PROMPTS, 8)["tokens"]
    assert {n for seq in out["accepted"] for n in seq} == {3}


@pytest.mark.parametrize("case", ["random-k4", "random-k1"])
def test_run_reports_the_step_and_is_hazard_free(builds, capsys, case):
    """On chips of its own the draft's extra step hides behind the verify step; on the target's chips
    every draft step and the verify step take turns."""
    assert main(["run", str(builds[case]), "--check-determinism", "--json", "--functional", "--prompt", "5 6 7"]) == 0
    figures = json.loads(capsys.readouterr().out)
    s, k = figures["speculative"], CASES[case][1]
    assert figures["hazards"] == [] and figures["determinism"]["passed"]
    plan = json.loads((builds[case] / "plan.json").read_text())["speculative"]
    assert s["steps"] == plan["steps"] == k and s["placement"] == plan["placement"]
    if case in SHARED:
        assert s["placement"] == "target's stages" and plan["chips"] == plan["target_chips"]
        assert s["cycles_per_step"] == (k + 1) * s["proposer_cycles"] + s["verify_cycles"] + s["handoff_cycles"]
    else:
        assert s["placement"] == "own chips" and plan["chips"] == plan["target_chips"] + plan["proposer_chips"]
        assert s["cycles_per_step"] == k * s["proposer_cycles"] + max(s["verify_cycles"], s["proposer_cycles"]) + \
            s["handoff_cycles"]
    assert s["expected_tokens_per_step"] == pytest.approx((1 - 0.7 ** (k + 1)) / 0.3, rel=1e-3)
    assert plan["proposer_chips"] == s["proposer_chips"]


def test_a_shared_draft_lives_above_the_target(builds):
    """The shared draft's Programs and memory map stay above every byte the target's use on the chip;
    the same draft laid out from address 0 (its own-chips build) is reported as meeting the target."""
    build = load_build(builds["random-k1"])
    assert shared_sram_hazards(build) == []
    target, draft = sram_extent(build), sram_extent(build.proposer)
    assert all(draft[c][0] >= target[c][1] for c in draft)
    own = load_build(builds["random-k4"])
    claimed = replace(own, plan=own.plan | {"speculative": own.plan["speculative"] | {"placement": "target's stages"}})
    hazards = shared_sram_hazards(claimed)
    assert hazards and {h["kind"] for h in hazards} == {"shared-sram"}


def test_the_plan_weighs_both_placements(capsys):
    """Auto weighs the draft on chips of its own against the draft on the target's chips and takes the
    one with more tokens/s per chip; the table's figures are the chosen placement's."""
    assert main(["plan", *TINY, *SHAPE, "--draft", "tiny-llama-draft", "--speculate", "2", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["speculative"]
    per = {q["placement"]: q for q in s["placements"]}
    assert set(per) == {"own chips", "target's stages"} and s["sharing"]["fits"]
    assert per["target's stages"]["chips"] == s["target_chips"] < per["own chips"]["chips"]
    best = max(per.values(), key=lambda q: (q["tokens_per_s_per_chip"], -q["chips"]))
    assert s["placement"] == best["placement"] and s["tokens_per_s"] == best["tokens_per_s"]
    for q in per.values():
        assert q["tokens_per_s_per_chip"] == pytest.approx(q["tokens_per_s"] / q["chips"], rel=1e-3)
    out = ok(capsys, "plan", *TINY, *SHAPE, "--draft", "tiny-llama-draft", "--speculate", "2")
    said = [line for line in out.splitlines() if line.startswith("placement: ")]
    assert len(said) == 1 and said[0].startswith(f"placement: {s['placement']} (") and "per chip" in said[0]


def test_a_draft_the_target_cannot_hold_goes_on_its_own_chips(capsys):
    """tiny-llama as its own draft does not fit in the SRAM its chip leaves: own chips, and the plan
    says why; asking for sharing is refused in one line."""
    assert main(["plan", *TINY, *SHAPE, "--draft", "tiny-llama", "--speculate", "2", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["speculative"]
    assert s["placement"] == "own chips" and not s["sharing"]["fits"]
    assert s["placement_why"].startswith("not on the target's stages: the draft does not fit")
    assert main(["plan", *TINY, *SHAPE, "--draft", "tiny-llama", "--speculate", "2"]) == 0
    assert "not on the target's stages: the draft does not fit" in capsys.readouterr().out
    for command in ("plan", "compile"):
        extra = ["-o", "never-written"] if command == "compile" else []
        line = refused(capsys, command, *TINY, *SHAPE, "--draft", "tiny-llama", "--draft-placement", "shared", *extra)
        assert "--draft-placement shared: the draft does not fit" in line
        assert not Path("never-written").exists()


def test_auto_may_choose_no_speculation(tmp_path, capsys):
    """At a low acceptance no K pays for its draft and verify steps: auto says K = 0 in one line, and
    compile builds plain decode (the same Programs as a compile without a draft)."""
    assert main(["plan", *TINY, *SHAPE, "--draft", "tiny-llama-draft", "--acceptance", "0.1", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["speculative"]
    assert s["steps"] == 0 and s["placement"] == "none" and s["chips"] == s["target_chips"]
    assert s["tokens_per_s"] == s["plain"]["tokens_per_s"] and s["speedup"] == 1
    assert all(r["tokens_per_s"] <= s["plain"]["tokens_per_s"] for r in s["candidates"])
    assert s["no_speculation"].startswith("no speculation (K = 0): at acceptance 0.1 no K beats plain decode")
    out = ok(capsys, "plan", *TINY, *SHAPE, "--draft", "tiny-llama-draft", "--acceptance", "0.1")
    assert sum("auto: no speculation (K = 0)" in line for line in out.splitlines()) == 1
    for name, extra in (("auto", ["--draft", "tiny-llama-draft", "--acceptance", "0.1"]), ("plain", [])):
        assert main(["compile", *TINY, *SHAPE, *extra, "-o", str(tmp_path / name)]) == 0
    assert "no speculation (K = 0)" in capsys.readouterr().err
    assert not (tmp_path / "auto" / "verify.prog").exists() and not (tmp_path / "auto" / "draft").exists()
    for name in ("decode.prog", "prefill.prog", "sram.img"):
        assert (tmp_path / "auto" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    assert main(["run", str(tmp_path / "auto"), "--json"]) == 0
    assert "speculative" not in json.loads(capsys.readouterr().out)


def test_functional_run_reports_measured_acceptance(builds, capsys):
    assert main(["run", str(builds["self-k3"]), "--functional", "--prompt", "5 6 7", "--tokens", "9"]) == 0
    out = capsys.readouterr().out
    assert "acceptance 1.0 measured" in out and "4.000 tokens a step" in out


def test_plan_auto_chooses_the_fastest_k(capsys):
    assert main(["plan", *TINY, "--draft", "tiny-llama-draft", "--speculate", "auto", "--acceptance", "0.9",
                 "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["speculative"]
    best = max(s["candidates"], key=lambda r: r["tokens_per_s"])
    assert s["steps"] == best["steps"] and s["tokens_per_s"] == best["tokens_per_s"]
    for r in s["candidates"]:
        a, k = 0.9, r["steps"]
        assert r["expected_tokens_per_step"] == pytest.approx((1 - a ** (k + 1)) / (1 - a), rel=1e-4)
        assert r["tokens_per_s"] <= r["tokens_per_s_bound"]
    assert s["chips"] == s["target_chips"] + s["proposer_chips"]
    assert s["plain"]["tokens_per_s"] < s["plain"]["tokens_per_s_bound"]


@pytest.fixture(scope="module")
def mtp_builds(tmp_path_factory) -> dict[str, Path]:
    """tiny-deepseek-v3's MTP module (depth 1) at fp16 and int8, and at depth 2 (its two chained layers)."""
    root = tmp_path_factory.mktemp("mtp")
    config = json.loads((Path(__file__).parents[1] / "examples/models/tiny-deepseek-v3.json").read_text())
    (root / "deep").mkdir()
    (root / "deep" / "config.json").write_text(json.dumps(config | {"num_nextn_predict_layers": 2}))
    cases = {"fp16": ("tiny-deepseek-v3", "fp16", 1), "int8": ("tiny-deepseek-v3", "int8", 1),
             "depth2": (str(root / "deep"), "fp16", 2)}
    for name, (model, precision, depth) in cases.items():
        assert main(["compile", model, "--target", "lpu-mini", *SHAPE, "--precision", precision, "--mtp",
                     "--speculate", str(depth), "-o", str(root / name)]) == 0
    return {name: root / name for name in cases}


@pytest.mark.parametrize("case", ["fp16", "int8", "depth2"])
def test_mtp_speculative_greedy_equals_plain_greedy(mtp_builds, case):
    build = load_build(mtp_builds[case])
    out = run_speculative(build, PROMPTS, 6)
    assert out["tokens"] == run_prompts(build, PROMPTS, 6)["tokens"]
    assert len(set(out["instructions_per_step"])) == 1


@pytest.mark.parametrize("case, depth", [("fp16", 1), ("depth2", 2)])
def test_the_mtp_module_computes_what_the_reference_does(mtp_builds, case, depth):
    """The module's Program on the SRAM image, fed tokens, positions and hidden states, proposes at
    every depth what the graph IR reference proposes from its decode.ir and the image's weights (depth
    2 embeds depth 1's proposal on the machine)."""
    mtp = load_build(mtp_builds[case] / "mtp")
    reference = Reference.load(mtp)
    rng = np.random.default_rng(7)
    ids, pos = rng.integers(0, 256, depth + 1).astype(np.int32), np.arange(depth + 1, dtype=np.int32)
    hidden = rng.standard_normal((depth + 1, 64)).astype(np.float16)
    machine = Machine.blank(mtp.programs["decode"].chips, mtp.system.chip.usable_sram_bytes)
    machine.load(mtp.image())
    state = {s.name: np.zeros(s.type.shape, np.float16) for s in reference.graph.state}
    want = run_graph(reference.graph, {"tokens": ids, "pos": pos, "hidden": hidden}, reference.params, state)
    got = mtp_step(mtp, machine, ids, pos, hidden.astype(np.float32), None)
    assert got.shape == (depth + 1, depth)
    names = ["next_tokens"] + [f"next_tokens_{d}" for d in range(2, depth + 1)]
    assert got.T.tolist() == [want[n].tolist() for n in names]


def test_mtp_plans_and_compiles_with_its_weights_counted(mtp_builds, capsys):
    assert main(["plan", "tiny-deepseek-v3", "--target", "lpu-mini", "--mtp", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    s = plan["speculative"]
    assert s["proposer"] == "mtp" and s["steps"] == 1 and s["placement"] == "own chips"
    assert s["params"] == plan["totals"]["params"] + s["proposer_params"] > plan["totals"]["params"]
    for case, depth in (("fp16", 1), ("depth2", 2)):
        assert main(["run", str(mtp_builds[case]), "--json", "--check-determinism"]) == 0
        figures = json.loads(capsys.readouterr().out)
        assert figures["hazards"] == [] and figures["determinism"]["passed"]
        assert figures["speculative"]["proposer"] == "mtp" and figures["speculative"]["steps"] == depth


@pytest.mark.parametrize("args, says", [
    (["--draft", "llama-3.2-1b"], "a draft must share the target's vocabulary"),
    (["--draft", "tiny-llama-draft", "--speculate", "0"], "--speculate must be auto or a number of drafts"),
    (["--draft", "tiny-llama-draft", "--acceptance", "0"], "--acceptance must be a rate in (0, 1]"),
    (["--draft", "tiny-llama-draft", "--acceptance", "1.01"], "--acceptance must be a rate in (0, 1]"),
    (["--mtp"], "--mtp: tiny-llama has no multi-token-prediction layers"),
    (["--speculate", "3"], "--speculate needs a proposer"),
    (["--draft", "tiny-llama-draft", "--draft-placement", "near"], "--draft-placement must be one of auto, own"),
    (["--mtp", "--draft-placement", "shared"], "--draft-placement shared: the MTP module is built on chips of its own"),
])
def test_bad_speculation_is_one_line(capsys, args, says):
    for command in ("plan", "compile"):
        extra = ["-o", "never-written"] if command == "compile" else []
        assert says in refused(capsys, command, *TINY, *args, *extra)
        assert not Path("never-written").exists()


def test_wafers_refuse_speculation_in_one_line(tmp_path, capsys):
    """A wafer's plan places regions of cores, which the verify step's and the proposer's plans do not
    pin: plan and compile refuse in one line (and write nothing), never a wrong plan."""
    wafer = tmp_path / "small.toml"
    wafer.write_text('base = "wse3"\nmesh_rows = 24\nmesh_cols = 20\n')
    for command, proposer in (("plan", ["--draft", "tiny-llama-draft"]), ("compile", ["--mtp"])):
        extra = ["-o", str(tmp_path / "never")] if command == "compile" else []
        line = refused(capsys, command, "tiny-llama", "--target", wafer, *proposer, *extra)
        assert "speculative decoding is built for chip targets; small is a wafer" in line
    assert not (tmp_path / "never").exists()


def test_the_70b_speculative_build_is_hazard_free(tmp_path, capsys):
    """README's 70B int8 build with a 1B draft: its verify hand-off to the head stage splits 5 rows over 6
    lanes, so the last lane's slice reads 4 bytes past the value, over bytes an earlier piece wrote; that
    padding its receiver drops is no hazard (a TAIL read past its value's end)."""
    out = tmp_path / "spec"
    ok(capsys, "compile", "llama-3.1-70b", "--precision", "int8", "--draft", "llama-3.2-1b", "--speculate", "4",
       "--weights", "none", "-o", str(out))
    assert main(["run", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []
