"""`compile --prefill-target T1 --decode-target T2 -o DIR` and `run DIR`: both pools' builds, the KV hand-off,
one request end to end (hazard-free, deterministic), and the co-located build's tokens in functional mode."""

import contextlib
import hashlib
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.cli import main
from compiler.image import shard_of
from compiler.serving.layout import block_start
from ir.build_io import write_manifest
from targets import load_target

PROMPT_IDS = "1 2 3 4 5"
CASES = {
    # Prefill: one chip (caches for 16 tokens); decode: two stages of two chips (4096 tokens, kv heads split).
    "tiny-llama": ["--prompt", "16"],
    # A recurrent state (conv and SSM) moves whole; the decode build holds 128 tokens.
    "tiny-mamba": ["--prompt", "32", "--context", "128"],
}


def _run_json(argv: list[str]) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--json"])
    return code, json.loads(out.getvalue())


@pytest.fixture(scope="module", params=sorted(CASES))
def builds(request, tmp_path_factory):
    """(model, disaggregated build, co-located build on the decode target)."""
    model, args = request.param, CASES[request.param]
    root = tmp_path_factory.mktemp(model)
    assert main(["compile", model, *args, "--prefill-target", "lpu-mini", "--decode-target", "lpu-mini",
                 "-o", str(root / "pair")]) == 0
    assert main(["compile", model, *args, "--target", "lpu-mini", "-o", str(root / "one")]) == 0
    return model, root / "pair", root / "one"


def test_build_holds_both_pools_and_the_handoff(builds):
    _, pair, _ = builds
    manifest = json.loads((pair / "manifest.json").read_text())
    assert (manifest["kind"], manifest["target"]) == ("disaggregated", "lpu-mini to lpu-mini")
    assert set(manifest["files"]) == {"handoff.json", "memory.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((pair / name).read_bytes()).hexdigest() == digest
    for pool in ("prefill", "decode"):  # each a whole build, recorded by its manifest's digest
        sub = json.loads((pair / pool / "manifest.json").read_text())
        assert sub["target"] == "lpu-mini" and manifest["builds"][pool] == sub["digest"]
        assert "target.toml" in sub["files"]
    plans = {pool: json.loads((pair / pool / "plan.json").read_text()) for pool in ("prefill", "decode")}
    h = json.loads((pair / "handoff.json").read_text())
    assert plans["prefill"]["options"]["context"] == h["prompt_tokens"]  # the prefill build holds the prompt
    t = plans["prefill"]["totals"]
    assert h["bytes"] == t["kv_cache_bytes"] + t["ssm_state_bytes"]  # batch 1, caches sized for the prompt
    link = load_target("lpu-mini").pool_link
    assert math.isclose(h["time_s"], link.latency_s + h["bytes"] / (min(h["senders"], h["receivers"])
                                                                   * link.bw_bytes_per_s))


def test_memory_json_names_every_cache_in_both_layouts(builds):
    _, pair, _ = builds
    layouts = json.loads((pair / "memory.json").read_text())
    for pool in ("prefill", "decode"):
        memory = json.loads((pair / pool / "memory.json").read_text())
        regions = {(s["first_chip"] + r, reg["name"]): reg["addr"] for s in memory["stages"] for r in range(s["tp"])
                   for reg in s["regions"] if reg["kind"] == "state"}
        blocks = {(b["chip"], c["name"]): b["addr"] for c in layouts[pool]["caches"] for b in c["chips"]}
        assert blocks == regions
        for cache in layouts[pool]["caches"]:  # the blocks cover the whole tensor
            covered = np.zeros(cache["shape"], bool)
            for b in cache["chips"]:
                covered[tuple(slice(s, s + n) for s, n in zip(b["start"], b["shape"], strict=True))] = True
            assert covered.all()


def test_run_is_one_request_end_to_end(builds):
    _, pair, _ = builds
    code, f = _run_json(["run", str(pair), "--tokens", "4", "--check-determinism"])
    assert code == 0 and f["hazards"] == [] and f["determinism"]["passed"]
    h = json.loads((pair / "handoff.json").read_text())
    assert math.isclose(f["handoff"]["time_ms"], h["time_s"] * 1e3, rel_tol=1e-6)
    assert math.isclose(f["ttft_ms"], f["prefill"]["ttft_ms"] + f["handoff"]["time_ms"], rel_tol=1e-6)
    assert math.isclose(f["tokens"]["total_ms"], f["ttft_ms"] + 3 * f["decode"]["latency_us"] / 1e3, rel_tol=1e-6)


def test_functional_gives_the_colocated_tokens(builds):
    _, pair, one = builds
    code, split = _run_json(["run", str(pair), "--functional", "--prompt", PROMPT_IDS, "--tokens", "6",
                             "--check-determinism"])
    assert code == 0 and split["determinism"]["passed"]
    code, alone = _run_json(["run", str(one), "--functional", "--prompt", PROMPT_IDS, "--tokens", "6"])
    assert code == 0
    assert split["functional"]["tokens"] == alone["functional"]["tokens"]
    assert split["functional"]["copied_bytes"] > 0


def test_a_handoff_figure_the_builds_do_not_give_is_a_hazard(builds, tmp_path):
    import shutil

    _, pair, _ = builds
    copy = tmp_path / "edited"
    shutil.copytree(pair, copy)
    h = json.loads((copy / "handoff.json").read_text())
    (copy / "handoff.json").write_text(json.dumps(h | {"time_s": h["time_s"] / 2}))
    write_manifest(copy, "lpu-mini to lpu-mini", extra={"kind": "disaggregated"}, builds=("prefill", "decode"))
    code, f = _run_json(["run", str(copy)])
    assert code == 2 and [x["kind"] for x in f["hazards"]] == ["handoff"]


def test_a_changed_file_is_refused_in_one_line(builds, tmp_path, capsys):
    import shutil

    _, pair, _ = builds
    copy = tmp_path / "changed"
    shutil.copytree(pair, copy)
    (copy / "memory.json").write_text("{}")
    assert main(["run", str(copy)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sramflow: error: {copy}: damaged or edited build: memory.json") and err.count("\n") == 1
    shutil.rmtree(copy)
    shutil.copytree(pair, copy)
    (copy / "decode" / "plan.json").write_text("{}")  # a sub-build edited: the whole build is
    assert main(["run", str(copy)]) == 1
    assert "damaged or edited build: plan.json" in capsys.readouterr().err
    assert main(["compile", "tiny-llama", "--prefill-target", "lpu-mini", "--decode-target", "lpu-mini",
                 "-o", str(copy)]) == 1
    assert "an edited sramflow build (decode/ differs from its manifest); --force" in capsys.readouterr().err


def test_compile_is_deterministic(tmp_path):
    for out in ("a", "b"):
        assert main(["compile", "tiny-llama", "--prompt", "16", "--context", "64", "--prefill-target", "lpu-mini",
                     "--decode-target", "lpu-mini", "-o", str(tmp_path / out)]) == 0
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    # Over a previous disaggregated build (it is a build: replaced, nothing asked).
    assert main(["compile", "tiny-llama", "--prompt", "16", "--context", "64", "--prefill-target", "lpu-mini",
                 "--decode-target", "lpu-mini", "-o", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary left beside them


@pytest.mark.parametrize(("argv", "message"), [
    (["--prefill-target", "h100", "--decode-target", "lpu-mini"], "--prefill-target h100: an HBM GPU target is"),
    (["--prefill-target", "lpu-mini", "--decode-target", "wse3"], "--decode-target wse3: a wafer build has no"),
    (["--prefill-target", "lpu-mini"], "--prefill-target and --decode-target: give both"),
    (["--prefill-target", "lpu-mini", "--decode-target", "lpu-mini", "--target", "lpu"], "--target: a disaggregated"),
])
def test_compile_mistakes_are_one_line(capsys, tmp_path, argv, message):
    assert main(["compile", "tiny-llama", *argv, "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sramflow: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_never_replaces_a_directory_that_is_not_a_build(capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["compile", "tiny-llama", "--prefill-target", "lpu-mini", "--decode-target", "lpu-mini",
                 "-o", str(mine)]) == 1
    assert "holds files and is not a sramflow build" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"


def test_inspect_names_the_sub_builds(builds, capsys):
    _, pair, _ = builds
    assert main(["inspect", str(pair)]) == 1
    err = capsys.readouterr().err
    assert f"inspect {pair}/prefill or {pair}/decode" in err and err.count("\n") == 1


@given(st.lists(st.integers(1, 6), min_size=1, max_size=3), st.data())
def test_block_start_is_where_shard_of_cuts(dims, data):
    """The layout's offsets are the SRAM image's blocks, for any split and group wider than the blocks."""
    full = tuple(dims)
    axis = data.draw(st.integers(0, len(full) - 1))
    parts = data.draw(st.integers(1, full[axis]))
    shape = tuple(-(-n // parts) if i == axis else n for i, n in enumerate(full))
    blocks = -(-full[axis] // shape[axis])
    tp = blocks * data.draw(st.integers(1, 3))
    tensor = np.arange(np.prod(full)).reshape(full) + 1
    for rank in range(tp):
        start = block_start(full, shape, rank, tp)
        window = tensor[tuple(slice(s, s + n) for s, n in zip(start, shape, strict=True))]
        cut = shard_of(tensor, shape, rank, tp, "t")
        assert np.array_equal(cut[tuple(slice(0, n) for n in window.shape)], window)


def test_a_batch_of_prompts_and_the_reference(tmp_path):
    """Two sequences of different lengths (a batch-2 build on both sides): the co-located build's tokens,
    and --check-reference holds the disaggregated run to the decode build's numpy reference."""
    args = ["tiny-llama", "--prompt", "16", "--context", "64", "--batch", "2"]
    assert main(["compile", *args, "--prefill-target", "lpu-mini", "--decode-target", "lpu-mini",
                 "-o", str(tmp_path / "pair")]) == 0
    assert main(["compile", *args, "--target", "lpu-mini", "-o", str(tmp_path / "one")]) == 0
    prompts = "1 2 3; 4 5 6 7 8"
    code, split = _run_json(["run", str(tmp_path / "pair"), "--functional", "--prompt", prompts, "--tokens", "5",
                             "--check-reference"])
    assert code == 0 and split["reference"]["passed"]
    _, alone = _run_json(["run", str(tmp_path / "one"), "--functional", "--prompt", prompts, "--tokens", "5"])
    assert split["functional"]["tokens"] == alone["functional"]["tokens"] and len(split["functional"]["tokens"]) == 2
