"""A tied embedding table (the LM head reads the embedding's table) is one param: the capacity bound counts it
once, however many units read it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from compiler.backends.chips.planner import ChipLayout
from compiler.frontend.options import CompileOptions
from compiler.partition.candidates import resident_total
from compiler.partition.shard_cost import align
from compiler.planner import lower
from targets import load_target

TARGET = 'base = "lpu-mini"\nname = "lpu-64k"\n[chip]\nsram_bytes = "64 KiB"\nprogram_reserve_bytes = "1489 B"\n'


@pytest.fixture(scope="module")
def tied_llama(tmp_path_factory) -> Path:
    """tiny-llama whose head reads its embedding table."""
    path = tmp_path_factory.mktemp("tied") / "config.json"
    cfg = json.loads(Path("examples/models/tiny-llama.json").read_text()) | {"tie_word_embeddings": True}
    path.write_text(json.dumps(cfg))
    return path


def test_the_capacity_bound_counts_a_tied_table_once(tied_llama, tmp_path):
    (tmp_path / "t.toml").write_text(TARGET)
    system = load_target(str(tmp_path / "t.toml"))
    options = CompileOptions(context=64, prompt=16)
    _, graphs = lower(str(tied_llama), options, system, system)
    layout = ChipLayout.of(graphs.decode, graphs.prefill, system, options)
    a = system.chip.vector_bytes
    distinct = sum(align(v.type.nbytes, a) for v in (*graphs.decode.params, *graphs.decode.state))
    usable = system.chip.usable_sram_bytes
    assert layout.lower_bound == math.ceil(distinct / usable)
    table = next(p for p in graphs.decode.params if p.name == "embed_tokens.weight")
    # the sum over units holds the table twice (embedding and head): a bound that would need one more chip
    assert resident_total(layout.units_) == distinct + align(table.type.nbytes, a)
    assert math.ceil(resident_total(layout.units_) / usable) > layout.lower_bound
