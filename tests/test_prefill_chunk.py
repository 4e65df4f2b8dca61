"""The plan's prefill chunk: the one that minimises time to first token among those that fit, capped
by --prefill-chunk."""

from __future__ import annotations

import json

import pytest

from compiler.cli import main


def _prefill(capsys, *args: str) -> dict:
    assert main(["plan", "tiny-llama", "--target", "lpu-mini", "--prompt", "256", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["prefill"]


@pytest.mark.parametrize("cap", [1, 5, 16, 32, 48, 64, 256])
def test_no_chunk_the_cap_allows_gives_a_lower_ttft(capsys, cap):
    free, capped = _prefill(capsys), _prefill(capsys, "--prefill-chunk", str(cap))
    assert capped["chunk_tokens"] <= cap
    assert free["ttft_ms"] <= capped["ttft_ms"]
    assert capped["chunks"] * capped["chunk_tokens"] >= 256 > (capped["chunks"] - 1) * capped["chunk_tokens"]


def _plan_8b(capsys, tokens: int) -> dict:
    assert main(["plan", "llama-3.1-8b", "--precision", "int8", "--prompt", str(tokens), "--context", str(tokens),
                 "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_chunk_does_not_collapse_at_a_long_context(capsys):
    """Llama-3.1-8B int8 at a 32K prompt: the LM head costs one row a sequence a chunk, so the head's
    stage no longer binds the chunk (it took 64 tokens when the head ran on every row): every stage
    leaves room for more than 128, the head's stage is not the slowest for a chunk, and the chunk that
    minimises TTFT is larger than 64."""
    long = _plan_8b(capsys, 32768)
    assert long["prefill"]["largest_chunk_tokens"] > 128
    assert long["prefill"]["chunk_tokens"] > 64
    last = long["stages"][-1]
    assert last["prefill_chunk_us"] < max(s["prefill_chunk_us"] for s in long["stages"])
    assert last["units"][1] == "head"
    assert last["memory_per_chip_bytes"]["headroom"] > 0
