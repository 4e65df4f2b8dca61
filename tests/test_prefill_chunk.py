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
