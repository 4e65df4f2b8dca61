"""Causal prefill: each chunk's attention reads only the cache it can see (its reach), in the graph
IR, the plan's cost model and the chip lowering; the wafer backend keeps the whole cache and says so."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.backends import BACKENDS
from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.frontend.options import CompileOptions
from compiler.partition.units import with_reach
from compiler.plan.reach import MAX_VARIANTS, chunk_variants, pipelined, variants
from compiler.planner import graph_passes
from ir.errors import ParseError, VerifyError
from ir.isa import Op
from ir.ops import Opcode
from ir.parser import parse_graph
from ir.printer import print_graph
from ir.program import Flag
from ir.program_io import load_program
from ir.verify import verify_graph
from tests.cli_errors import ok


def chunk_graph(model: str, reach: int | None, context: int = 64, chunk: int = 16):
    config = load_model_config(model)
    return graph_passes(CompileOptions(context=context))(
        build_graph(config, "prefill", context=context, prompt=chunk, reach=reach))


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-deepseek-v3", "tiny-jamba"])
def test_reach_is_an_attribute_that_round_trips_and_scales_the_flops(model):
    whole, causal = chunk_graph(model, None), chunk_graph(model, 16)
    attends = (Opcode.ATTENTION, Opcode.MLA_ATTENTION)
    ops = [op for op in causal.ops if op.opcode in attends]
    assert ops and all(op.attr["reach"] == 16 for op in ops)
    assert all("reach" not in op.attr for op in whole.ops if op.opcode in attends)
    text = print_graph(causal)
    assert "reach = 16" in text and parse_graph(text, "chunk.ir") == causal
    verify_graph(causal)
    # flops of the cache products scale with the cache read; the rest of the op is unchanged
    for full, part in zip((op for op in whole.ops if op.opcode in attends), ops, strict=True):
        assert part.cost.flops < full.cost.flops
    assert chunk_graph(model, 64) == whole  # reaching the whole cache is the whole cache


@pytest.mark.parametrize("reach", [0, 65])
def test_a_reach_outside_the_cache_names_the_line(reach):
    text = print_graph(chunk_graph("tiny-llama", 16)).replace("reach = 16", f"reach = {reach}")
    with pytest.raises((ParseError, VerifyError), match=f"reach {reach} outside 1..64"):
        verify_graph(parse_graph(text, "chunk.ir"))


@given(prompt=st.integers(1, 5000), chunk=st.integers(1, 300), extra=st.integers(0, 3000), causal=st.booleans())
def test_variants_cover_every_chunk_with_the_cache_it_needs(prompt, chunk, extra, causal):
    cache = prompt + extra
    runs = variants(prompt, chunk, cache, causal)
    per_chunk = chunk_variants(runs)
    assert len(per_chunk) == math.ceil(prompt / chunk) and len(runs) <= (MAX_VARIANTS if causal else 1)
    assert all(r.chunks >= 1 for r in runs) and per_chunk == sorted(per_chunk)
    for i, v in enumerate(per_chunk):  # chunk i holds positions below (i + 1) x chunk
        assert min(cache, (i + 1) * chunk) <= runs[v].reach <= cache
    assert [r.reach for r in runs] == sorted({r.reach for r in runs})
    assert causal or runs[0].reach == cache


@given(times=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6), chunks=st.integers(1, 40))
def test_uniform_chunks_pipeline_as_fill_plus_the_slowest_stage(times, chunks):
    assert pipelined([times], [0] * chunks) == pytest.approx(sum(times) + (chunks - 1) * max(times))


def test_the_plan_costs_chunks_at_their_reach_and_the_wafer_at_the_whole_cache(capsys):
    shape = ["--context", "4096", "--prompt", "1024", "--prefill-chunk", "64", "--json"]
    chips = json.loads(ok(capsys, "plan", "tiny-llama", "--target", "lpu-mini", *shape))["prefill"]
    assert chips["chunks"] == 16 and sum(v["chunks"] for v in chips["variants"]) == 16
    assert len(chips["variants"]) == MAX_VARIANTS and chips["variants"][-1]["reach"] == 1024
    assert BACKENDS["chips"].causal and not BACKENDS["wafer"].causal
    wafer = json.loads(ok(capsys, "plan", "tiny-llama", "--target", "wse3", *shape))["prefill"]
    assert wafer["variants"] == [{"reach": 4096, "chunks": wafer["chunks"]}]


def _keys_tokens(path) -> int:
    """Cache tokens the Program's key products stream, over every chip."""
    program = load_program(path)
    keys = (program.cols["op"] == Op.MXM) & ((program.cols["flags"] & Flag.KEYS) != 0)
    return int(program.cols["n"][keys].sum())


def test_each_chunk_streams_the_prefix_it_can_see(tmp_path, capsys):
    out = tmp_path / "b"
    ok(capsys, "compile", "tiny-llama", "--target", "lpu-mini", "--context", "64", "--prompt", "48",
       "--prefill-chunk", "16", "-o", str(out))
    plan = json.loads((out / "plan.json").read_text())
    assert plan["prefill"]["variants"] == [{"reach": r, "chunks": 1} for r in (16, 32, 48)]
    # every chip holds the same layers in both phases; decode reads all 64 positions, the chunks 16 + 32 + 48
    assert _keys_tokens(out / "prefill.prog") * 64 == _keys_tokens(out / "decode.prog") * (16 + 32 + 48)
    assert "reach = 48" in (out / "prefill.ir").read_text()  # the last chunk's graph
    run = json.loads(ok(capsys, "run", str(out), "--json"))
    assert run["hazards"] == []


def test_causal_builds_are_deterministic(tmp_path, capsys):
    args = ["compile", "tiny-deepseek-v3", "--target", "lpu-mini", "--context", "64", "--prompt", "40",
            "--prefill-chunk", "16"]
    for name in ("a", "b"):
        assert main([*args, "-o", str(tmp_path / name)]) == 0
    capsys.readouterr()
    for f in ("prefill.prog", "decode.prog", "prefill.ir", "plan.json", "memory.json", "sram.img"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-deepseek-v3"])
def test_a_variant_of_the_whole_chunk_graph_is_the_graph_built_at_its_reach(model):
    assert with_reach(chunk_graph(model, None), 32) == chunk_graph(model, 32)
    assert with_reach(chunk_graph(model, None), 64) == chunk_graph(model, None)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-deepseek-v3"])
def test_chunks_past_the_cache_keep_to_it_and_match_the_reference(tmp_path, capsys, model):
    """40 positions in chunks of 16: the last chunk's padding rows lie past the cache (positions 40..47);
    they must not write past it. Prompts shorter than a chunk, within one, and over all three."""
    out = tmp_path / "b"
    ok(capsys, "compile", model, "--target", "lpu-mini", "--context", "40", "--prompt", "40", "--prefill-chunk", "16",
       "-o", str(out))
    for prompt in ("5 17 3", " ".join(str(t) for t in range(1, 36))):
        run = json.loads(ok(capsys, "run", str(out), "--functional", "--check-reference", "--prompt", prompt,
                            "--tokens", "4", "--json"))
        assert run["hazards"] == [] and len(run["functional"]["tokens"]) == 4
