"""Tiered KV memory: tiers in targets, plans that keep older KV below SRAM, --idle, and builds that fetch it."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from cli_errors import TINY, ok, refused
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.planner import lower_one
from ir.isa import Op
from ir.program_io import load_program
from ir.reference import NUMPY, run_graph
from ir.weights import random_weights
from targets import load_target
from targets.interpreter import execute
from targets.loader import loads_target
from targets.target_file import dumps_target

PCIE_GEN4_X16 = 16e9 * 16 * 128 / 130 / 8  # bytes/s a direction: 16 GT/s, 16 lanes, 128b/130b


def _json(*argv) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in (*argv, "--json")])
    return code, json.loads(out.getvalue())


def _tiers(plan: dict) -> dict[str, dict]:
    return {row["tier"]: row for row in plan["kv_tiers"]["tiers"]}


# ---- targets ---------------------------------------------------------------------------------------

def test_drain_time_is_capacity_over_bandwidth():
    lpu = load_target("lpu")
    assert lpu.dram.bw_bytes_per_s == pytest.approx(8 * PCIE_GEN4_X16)  # eight chips' host links
    assert lpu.dram.drain_s == pytest.approx(2**40 / (8 * PCIE_GEN4_X16))  # 4.36 s
    assert lpu.flash.drain_s == pytest.approx(30.72e12 / 28e9)  # 18 minutes
    assert lpu.tier_bw_per_chip("dram") == pytest.approx(PCIE_GEN4_X16)
    h100 = load_target("h100")
    assert h100.dram.capacity_bytes == 2 * 10**12 and h100.flash.capacity_bytes == 8 * 3.84e12


def test_a_target_file_declares_tiers_with_units(tmp_path):
    path = tmp_path / "host.toml"
    path.write_text('base = "lpu-mini"\n\n[dram]\ncapacity_bytes = "2 MiB"\nbw_bytes_per_s = "10 GB/s"\n'
                    'latency_s = "2 us"\nper = "chip"\n')
    spec = load_target(str(path))
    assert (spec.dram.capacity_bytes, spec.dram.bw_bytes_per_s, spec.dram.latency_s) == (2**21, 1e10, 2e-6)
    assert spec.tier_bw_per_chip("dram") == 1e10  # a chip's own tier: not shared
    assert spec.dram.drain_s == pytest.approx(2**21 / 1e10)
    assert spec.flash == load_target("lpu-mini").flash  # the base's flash stays
    assert loads_target(dumps_target(spec), "x.toml") == spec


@pytest.mark.parametrize("body, message", [
    ('[dram]\ncapacity_bytes = 4096\nbw_bytes_per_s = "1 GB/s"\nlatency_s = "1 us"\n',
     "t.toml:3: dram.capacity_bytes: 4096 has no unit"),
    ('base = "b200"\n[flash]\ncapacity_bytes = "1 GB"\nbw_bytes_per_s = "1 GB/s"\n',
     "flash: latency_s is missing"),  # b200 declares no flash to inherit it from
    ('[dram]\ncapacity_bytes = "1 GB"\nbw_bytes_per_s = "1 GB/s"\nlatency_s = "1 us"\nper = "rack"\n',
     "dram.per: must be one of node, chip"),
    ('[dram]\ncapacity_bytes = "1 GB"\nbw_bytes_per_s = "0 GB/s"\nlatency_s = "1 us"\n',
     "dram.bw_bytes_per_s: must be positive"),
])
def test_tier_mistakes_are_one_line(capsys, tmp_path, body, message):
    (tmp_path / "t.toml").write_text(body if body.startswith("base") else 'base = "lpu-mini"\n' + body)
    assert message in refused(capsys, "plan", "tiny-llama", "--target", tmp_path / "t.toml")


# ---- planning --------------------------------------------------------------------------------------

def test_tier_traffic_by_hand():
    """Every chip fetches its share of the cold positions of both caches each step, in blocks."""
    code, plan = _json("plan", *TINY, "--context", "256", "--kv-tier", "dram", "--kv-hot", "64")
    assert code == 0
    lpu = load_target("lpu-mini")
    cold, block = 256 - 64, 48  # a quarter of the cold range, rounded to 16 positions
    placement = plan["kv_tiers"]["placement"]
    assert (placement["tier"], placement["hot_tokens"], placement["cold_tokens"]) == ("dram", 64, cold)
    total_fetch = total_bytes = 0
    for s in plan["stages"]:
        layers = 0 if s["layers"] is None else s["layers"][1] - s["layers"][0] + 1
        if not layers:
            assert "tier" not in s
            continue
        width = 16 * max(1, 2 // s["tp"])  # head_dim x the kv heads a chip holds (2 kv heads)
        nbytes = layers * 2 * cold * width * 2  # k and v, 16-bit
        fetches = layers * 2 * math.ceil(cold / block)
        stored = layers * 2 * width * 2  # the step's one new row of k and of v, stored to the tier
        assert (s["tier"]["bytes"], s["tier"]["fetches"], s["tier"]["store_bytes"]) == (nbytes, fetches, stored)
        transfers = fetches + layers * 2
        fetch_us = ((nbytes + stored) / PCIE_GEN4_X16 + transfers * lpu.dram.latency_s) * 1e6
        assert s["tier"]["fetch_us"] == pytest.approx(fetch_us, rel=1e-3)
        assert s["decode_bound_terms"]["tier_us"] == pytest.approx(nbytes / PCIE_GEN4_X16 * 1e6, rel=1e-3)
        total_fetch += s["tier"]["fetch_us"]
        total_bytes += nbytes * s["tp"]
    dram = _tiers(plan)["dram"]
    assert dram["read_bytes_per_token"] == dram["used_bytes"] == total_bytes
    assert dram["us_per_token"] == pytest.approx(total_fetch, rel=1e-3)
    assert dram["drain_s"] == pytest.approx(lpu.dram.drain_s)
    assert plan["decode"]["breakdown_us"]["tier"] <= total_fetch


def test_a_quantized_cache_below_sram_moves_its_scales_too(capsys, tmp_path):
    """int8 codes and a 16-bit scale per token and kv head, both held below and fetched apart; a build of it
    fetches and stores on each chip what the plan counted."""
    code, plan = _json("plan", *TINY, "--context", "256", "--kv-precision", "int8", "--kv-tier", "dram",
                       "--kv-hot", "64")
    assert code == 0
    for s in plan["stages"]:
        if s["layers"] is None:
            continue
        layers = s["layers"][1] - s["layers"][0] + 1
        width, heads = 16 * max(1, 2 // s["tp"]), max(1, 2 // s["tp"])
        row = width + 2 * heads  # codes, then the scales of one position
        assert s["tier"]["bytes"] == layers * 2 * 192 * row
        assert s["tier"]["fetches"] == layers * 4 * math.ceil(192 / 48)  # codes and scales of k and v
        assert (s["tier"]["stores"], s["tier"]["store_bytes"]) == (layers * 4, layers * 2 * row)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compile", *TINY, "--context", "256", "--kv-precision", "int8", "--kv-tier", "dram",
                     "--kv-hot", "64", "-o", str(tmp_path / "q")]) == 0
    c = load_program(tmp_path / "q" / "decode.prog").cols
    for s in plan["stages"]:
        for chip in range(s["chip_range"][0], s["chip_range"][1] + 1):
            mine = c["chip"] == chip
            fetches, stores = ((c["op"][mine] == op).sum() for op in (Op.FETCH, Op.STORE))
            assert (fetches, stores) == ((s["tier"]["fetches"], s["tier"]["stores"]) if s["tier"] else (0, 0))


def test_dram_holds_70b_at_128k_on_far_fewer_chips():
    code, plan = _json("plan", "llama-3.1-70b", "--target", "lpu", "--context", "131072", "--kv-tier", "auto")
    assert code == 0
    placement = plan["kv_tiers"]["placement"]
    assert placement["tier"] == "dram" and placement["requested"] == "auto"
    _, sram = _json("plan", "llama-3.1-70b", "--target", "lpu", "--context", "131072")
    assert placement["sram_chips"] == sram["chips"]
    assert plan["chips"] < 0.8 * sram["chips"]  # SRAM alone shards the cache by sequence past the kv heads
    dram = _tiers(plan)["dram"]
    assert dram["drain_s"] == pytest.approx(load_target("lpu").dram.drain_s)
    assert dram["read_bytes_per_token"] > 0.8 * plan["totals"]["kv_cache_bytes"] * placement["cold_tokens"] / 131072
    # what the tier costs a token is in the decode latency
    assert plan["decode"]["latency_us"] >= placement["exposed_us_per_token"] > 0
    assert plan["decode"]["binding"] == "tier-bandwidth"


def test_jamba_at_256k_stays_in_sram_and_says_why():
    code, plan = _json("plan", "jamba-v0.1", "--target", "lpu", "--context", "262144", "--kv-tier", "auto")
    assert code == 0
    placement = plan["kv_tiers"]["placement"]
    assert placement["tier"] == "sram" and placement["cold_tokens"] == 0
    assert "4.00 GiB of KV in dram saves" in placement["why"] and "under the 10%" in placement["why"]
    assert placement["tier_chips"] <= placement["sram_chips"] == plan["chips"]  # sharded by sequence, SRAM holds it


def test_a_context_sweep_shows_the_crossover(capsys):
    out = ok(capsys, "plan", *TINY, "--context", "256,4096", "--kv-tier", "auto")
    assert "KV in" in out and "SRAM-only chips" in out
    assert "crossover: from context 4,096 moving KV to dram beats adding chips" in out


def test_a_context_sram_could_never_hold_goes_below(capsys):
    """A million positions: no lpu-mini SRAM holds the cache (refused at once), its DRAM per node neither;
    auto says so and puts it in flash."""
    assert "more than the target holds" in refused(capsys, "plan", *TINY, "--context", "1000000", "--prompt", "16")
    code, plan = _json("plan", *TINY, "--context", "1000000", "--prompt", "16", "--kv-tier", "auto")
    assert code == 0
    p = plan["kv_tiers"]["placement"]
    assert p["tier"] == "flash" and p["sram_chips"] is None
    assert p["why"].startswith("the dram tier of lpu-mini holds 64.00 MiB per node") and "flash does" in p["why"]


def test_a_tier_too_small_for_the_cache_is_one_line_naming_it(capsys, tmp_path):
    (tmp_path / "small.toml").write_text('base = "lpu-mini"\n\n[dram]\ncapacity_bytes = "4 KiB"\n'
                                         'bw_bytes_per_s = "31.5 GB/s"\nlatency_s = "1 us"\n')
    line = refused(capsys, "plan", "tiny-llama", "--target", tmp_path / "small.toml", "--context", "1024",
                   "--kv-tier", "dram")
    assert "the dram tier of small holds 4.0 KiB per node" in line


@pytest.mark.parametrize("argv, message", [
    (["--kv-hot", "64"], "--kv-hot needs --kv-tier dram or flash"),
    (["--kv-tier", "dram", "--kv-hot", "4096"], "--kv-hot 4096 must be at least 0 and below --context 4096"),
    (["--kv-tier", "dram", "--speculate", "2", "--draft", "tiny-llama"], "a rejected one would overwrite a row"),
])
def test_tier_options_that_cannot_work_are_one_line(capsys, argv, message):
    assert message in refused(capsys, "plan", *TINY, *argv)


def test_targets_without_the_tier_refuse_it(capsys):
    assert "wse3" in refused(capsys, "plan", "tiny-llama", "--target", "wse3", "--kv-tier", "dram")
    assert "b200 declares no flash tier" in refused(capsys, "plan", "tiny-llama", "--target", "b200",
                                                    "--kv-tier", "flash")


# lpu: SRAM drains in 4.6 µs, host DRAM in 4.4 s, flash in 18.3 min.
@pytest.mark.parametrize("idle, tier", [(1e-6, "sram"), (1.0, "sram"), (60.0, "dram"), (1e5, "flash")])
def test_idle_picks_the_last_tier_fastest_first_that_drains_in_under_the_idle_time(idle, tier):
    code, plan = _json("plan", "tiny-llama", "--target", "lpu", "--idle", idle)
    assert code == 0
    answer = plan["kv_tiers"]["idle"]
    assert answer["tier"] == tier
    lpu = load_target("lpu")
    share = max(s["memory_per_chip_bytes"]["kv_cache"] for s in plan["stages"])
    if tier == "sram":
        assert answer["resume_s"] == 0
    else:
        spec = getattr(lpu, tier)
        assert answer["resume_s"] == pytest.approx(share / (spec.bw_bytes_per_s / 8) + spec.latency_s)


def test_the_idle_line_names_the_tier_its_drain_time_and_the_resume_cost(capsys):
    assert main(["plan", "tiny-llama", "--target", "lpu", "--idle", "60"]) == 0
    line = " ".join(capsys.readouterr().out.split())
    lpu = load_target("lpu")
    assert f"keep the conversation's KV in dram (drains in {lpu.dram.drain_s:.2f} s); resuming pulls" in line
    assert "flash drains in 18.3 min, not under it" in line


@pytest.mark.parametrize("kv", ["fp16", "int8", "fp8", "nvfp4"])
def test_the_reference_of_a_split_cache_is_the_whole_caches(kv):
    """The graph semantics do not change when older positions move below SRAM: the reference gives the same
    logits bit for bit, token after token, across the split (16 hot of 64 positions; 30 steps)."""
    logits = []
    for tier, hot in (("sram", None), ("dram", 16)):
        graph = lower_one("tiny-llama", "decode", CompileOptions(context=64, kv_precision=kv, kv_tier=tier, kv_hot=hot))
        weights = random_weights(lower_one("tiny-llama", "decode", CompileOptions(context=64)), 3)
        params = {p.name: weights[p.name].astype(NUMPY[p.type.dtype]) for p in graph.params}
        state = {v.name: np.zeros(v.type.shape, NUMPY[v.type.dtype]) for v in graph.state}
        steps = [run_graph(graph, {"tokens": np.array([7 * t % 250 + 1], np.int32), "pos": np.array([t], np.int32)},
                           params, state)["logits"] for t in range(30)]
        logits.append(np.array(steps, np.float64))
    assert np.array_equal(logits[0], logits[1])


_WEIGHTS: dict[str, np.ndarray] = {}


def _logits(tier: str, hot: int | None, prompt: int, kv: str, steps: int) -> np.ndarray:
    """A prompt of `prompt` tokens in one prefill op (every row at once), then `steps` decode steps: the logits."""
    options = CompileOptions(context=64, prompt=prompt, kv_precision=kv, kv_tier=tier, kv_hot=hot)
    prefill, decode = (lower_one("tiny-llama", phase, options) for phase in ("prefill", "decode"))
    if not _WEIGHTS:
        _WEIGHTS.update(random_weights(lower_one("tiny-llama", "decode", CompileOptions(context=64)), 5))
    params = {p.name: _WEIGHTS[p.name].astype(NUMPY[p.type.dtype]) for p in decode.params}
    state = {v.name: np.zeros(v.type.shape, NUMPY[v.type.dtype]) for v in decode.state}
    ids = np.array([5 * t % 250 + 1 for t in range(prompt + steps)], np.int32)
    out = [run_graph(prefill, {"tokens": ids[:prompt], "pos": np.arange(prompt, dtype=np.int32)}, params,
                     state)["logits"][-1:]]
    out += [run_graph(decode, {"tokens": ids[t: t + 1], "pos": np.array([t], np.int32)}, params, state)["logits"]
            for t in range(prompt, prompt + steps)]
    return np.concatenate(out).astype(np.float64)


@settings(max_examples=12, deadline=None)
@given(hot=st.integers(0, 63), prompt=st.integers(1, 40), kv=st.sampled_from(["fp16", "int8"]))
def test_a_ring_of_any_length_gives_the_whole_caches_logits(hot, prompt, kv):
    """Whatever the ring's length against a prompt written in one op (more rows than the ring wraps past) and the
    decode steps after it: the reference over the split cache is the whole cache's, bit for bit."""
    steps = min(8, 64 - prompt)
    assert np.array_equal(_logits("dram", hot, prompt, kv, steps), _logits("sram", None, prompt, kv, steps))


# ---- compile and run -------------------------------------------------------------------------------

PROMPT = "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20"  # two prefill chunks of 16


@pytest.fixture(scope="module")
def tiered(tmp_path_factory):
    """tiny-llama with a ring of the 16 (or 8: fewer than a prefill chunk) newest of its 64 positions in SRAM and
    the older ones in host DRAM, beside the same build in SRAM."""
    root = tmp_path_factory.mktemp("tiers")
    shape = [*TINY, "--context", "64", "--prompt", "32", "--prefill-chunk", "16"]
    for name, extra in (("dram", ["--kv-tier", "dram", "--kv-hot", "16"]), ("sram", []),
                        ("hot8", ["--kv-tier", "dram", "--kv-hot", "8"]),
                        ("batch2", ["--kv-tier", "dram", "--kv-hot", "16", "--batch", "2", "--chips", "4"])):
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["compile", *shape, *extra, "-o", str(root / name)]) == 0
    return root


def test_a_tiered_build_fetches_over_the_host_link(tiered):
    program = load_program(tiered / "dram" / "decode.prog")
    ops = program.cols["op"]
    assert (ops == Op.FETCH).sum() > 0 and (ops == Op.STORE).sum() > 0
    memory = json.loads((tiered / "dram" / "memory.json").read_text())
    kinds = {r["kind"] for s in memory["stages"] for r in s["regions"]}
    assert "tier" in kinds


def test_a_tiered_build_is_hazard_free_and_decodes_the_references_tokens(tiered):
    code, run = _json("run", tiered / "dram", "--functional", "--prompt", PROMPT, "--tokens", "24",
                      "--check-reference", "--check-determinism")
    assert code == 0 and run["hazards"] == []
    assert run["reference"]["passed"]
    _, sram = _json("run", tiered / "sram", "--functional", "--prompt", PROMPT, "--tokens", "24")
    assert run["functional"]["tokens"] == sram["functional"]["tokens"]


@pytest.mark.parametrize("build, length", [("dram", 5), ("dram", 16), ("dram", 31), ("hot8", 9), ("hot8", 32)])
def test_the_sram_ring_holds_the_newest_positions_at_any_length(tiered, build, length):
    """Prompts ending before, at and past the ring's length, decoded to the end of the context: the ring of newest
    positions wraps many times (and within a prefill chunk when it is shorter than one), older ones come back
    from DRAM, and every token is the reference's and the SRAM-only build's."""
    prompt = " ".join(str(3 * t % 200 + 1) for t in range(length))
    tokens = str(64 - length + 1)
    code, run = _json("run", tiered / build, "--functional", "--prompt", prompt, "--tokens", tokens,
                      "--check-reference")
    assert code == 0 and run["hazards"] == [] and run["reference"]["passed"]
    _, sram = _json("run", tiered / "sram", "--functional", "--prompt", prompt, "--tokens", tokens)
    assert run["functional"]["tokens"] == sram["functional"]["tokens"]


@pytest.mark.parametrize("kv", ["int8", "nvfp4"])
def test_a_quantized_cache_below_sram_compiles_and_decodes_the_references_tokens(tmp_path, kv):
    """Codes and scales through the ring, the STOREs and the staged FETCHes (8-bit: a 16-bit scale per token and
    kv head, as fp8; nvfp4: e4m3 block scales on the MXM's s_d), past the ring's wrap: the reference's tokens."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compile", *TINY, "--context", "64", "--prompt", "32", "--prefill-chunk", "16", "--kv-tier",
                     "dram", "--kv-hot", "8", "--kv-precision", kv, "-o", str(tmp_path / "q")]) == 0
    memory = json.loads((tmp_path / "q" / "memory.json").read_text())
    below = {r["name"] for s in memory["stages"] for r in s["regions"] if r["kind"] == "tier"}
    assert any(n.endswith(".cold") and "scale" in n for n in below)
    code, run = _json("run", tmp_path / "q", "--functional", "--prompt", PROMPT, "--tokens", "40", "--check-reference")
    assert code == 0 and run["hazards"] == [] and run["reference"]["passed"]


def test_a_hybrid_model_reusing_the_staging_sram_is_hazard_free(tmp_path):
    """tiny-jamba's Mamba layers reuse the local SRAM the attention's staging slots take: a read after their own
    write is no staged block's read; its ring of 8 decodes the reference's tokens."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compile", "tiny-jamba", "--target", "lpu-mini", "--context", "64", "--prompt", "32",
                     "--prefill-chunk", "16", "--kv-tier", "dram", "--kv-hot", "8", "-o", str(tmp_path / "j")]) == 0
    code, run = _json("run", tmp_path / "j", "--functional", "--prompt", PROMPT, "--tokens", "30", "--check-reference")
    assert code == 0 and run["hazards"] == [] and run["reference"]["passed"]


def test_a_fetch_moved_late_is_a_hazard(tiered):
    system = load_target("lpu-mini")
    program = load_program(tiered / "dram" / "decode.prog")
    assert execute(program, system).hazards == []
    row = int(np.flatnonzero(program.cols["op"] == Op.FETCH)[0])
    issue = program.cols["issue"].copy()
    issue[row] += 5_000
    late = program.with_columns(program.cols | {"issue": issue})
    kinds = {h.kind for h in execute(late, system).hazards}
    assert "tier-raw" in kinds


@pytest.mark.parametrize("moved, kind", [("store", "tier-war"), ("fetch", "tier-raw")])
def test_a_store_and_a_fetch_of_one_cache_at_once_is_a_hazard(tiered, moved, kind):
    """A STORE's window covers its whole tier buffer, so a FETCH of that cache must not run beside it."""
    system = load_target("lpu-mini")
    program = load_program(tiered / "dram" / "decode.prog")
    c = program.cols
    store = int(np.flatnonzero(c["op"] == Op.STORE)[0])
    top = c["dst"][store] + c["imm"][store] * c["stride"][store]
    fetch = int(np.flatnonzero((c["op"] == Op.FETCH) & (c["chip"] == c["chip"][store]) & (c["src"] >= c["dst"][store])
                               & (c["src"] < top))[0])
    first, second = (fetch, store) if moved == "store" else (store, fetch)
    issue = c["issue"].copy()
    issue[second] = issue[first] + 1
    hazards = execute(program.with_columns(c | {"issue": issue}), system).hazards
    assert kind in {h.kind for h in hazards}
    assert any(h.kind == kind and "tier [" in h.detail for h in hazards)


def test_a_fetch_outside_the_chips_share_of_the_tier_is_a_hazard(tiered):
    program = load_program(tiered / "dram" / "decode.prog")
    row = int(np.flatnonzero(program.cols["op"] == Op.FETCH)[0])
    src = program.cols["src"].copy()
    src[row] = 64 * 2**20 // 8  # lpu-mini's 64 MiB of DRAM a node, shared by its 8 chips: just past a chip's share
    hazards = execute(program.with_columns(program.cols | {"src": src}), load_target("lpu-mini")).hazards
    assert [h.kind for h in hazards] == ["tier-range"]
    assert "outside the chip's 8,388,608 bytes" in hazards[0].detail


def test_a_batch_over_chips_with_a_tier_gives_each_sequence_its_own_tokens(tiered):
    """Two sequences decoded together over a split stage: each equals its batch-1 run, and the reference."""
    prompts = f"{PROMPT}; 7 8 9"
    code, run = _json("run", tiered / "batch2", "--functional", "--prompt", prompts, "--tokens", "20",
                      "--check-reference")
    assert code == 0 and run["hazards"] == [] and run["reference"]["passed"]
    _, alone = _json("run", tiered / "sram", "--functional", "--prompt", prompts, "--tokens", "20")
    assert run["functional"]["tokens"] == alone["functional"]["tokens"]
    assert max(s["tp"] for s in json.loads((tiered / "batch2" / "plan.json").read_text())["stages"]) > 1


def test_a_disaggregated_build_refuses_a_tier(capsys, tmp_path):
    line = refused(capsys, "compile", "tiny-llama", "--prefill-target", "lpu-mini", "--decode-target", "lpu-mini",
                   "--prompt", "16", "--kv-tier", "dram", "-o", tmp_path / "pair")
    assert "a disaggregated build hands the KV cache over from SRAM" in line
    assert not (tmp_path / "pair").exists()
