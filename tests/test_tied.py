"""A tied embedding table (the LM head reads the embedding's table) is one param: the capacity bound counts it
once, however many units read it, and a plan may hold it once on several stages: the head's chips look each
row up over their own shard and hand the rows to the first stage (codegen.phase.embedding_stage)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from compiler.backends.chips.planner import ChipLayout
from compiler.cli import main
from compiler.codegen import phase
from compiler.frontend.options import CompileOptions
from compiler.partition.candidates import resident_total
from compiler.partition.shard_cost import align
from compiler.planner import lower
from targets import load_target
from tests.cli_errors import layers_then_head

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


ARGS = ["--context", "64", "--prompt", "16", "--prefill-chunk", "8"]
PROMPT = "1 7 42 99 3 25 17 8 200 5"


def _run_reference(capsys, build: Path) -> dict:
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", PROMPT, "--tokens", "3",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []
    return out


def _tables(build: Path) -> list[list[str]]:
    """Per stage, the embedding-table regions its chips hold."""
    memory = json.loads((build / "memory.json").read_text())
    return [[r["name"] for r in s["regions"] if r["name"].startswith("embed_tokens")] for s in memory["stages"]]


@pytest.fixture(scope="module")
def head_build(tied_llama, tmp_path_factory) -> tuple[Path, dict, list[str]]:
    """The tied tiny-llama on 64 KiB chips as the planner lays it out (the embedding on the head's chips)."""
    tmp = tmp_path_factory.mktemp("head")
    (tmp / "t.toml").write_text(TARGET)
    args = [str(tied_llama), "--target", str(tmp / "t.toml"), *ARGS]
    assert main(["compile", *args, "-o", str(tmp / "b")]) == 0
    return tmp / "b", json.loads((tmp / "b" / "plan.json").read_text()), args


def test_the_planner_takes_the_layout_that_holds_the_table_once(head_build):
    _, plan, _ = head_build
    choice = plan["embedding"]
    assert choice["on"] == "head"
    assert choice["layouts"]["head"]["footprint_chips"] < choice["layouts"]["first"]["footprint_chips"]
    assert plan["footprint_chips"] == choice["layouts"]["head"]["footprint_chips"]
    assert [s.get("embedding", False) for s in plan["stages"]] == [False] * (len(plan["stages"]) - 1) + [True]
    assert plan["stages"][0]["units"][0] == "embed" and plan["stages"][0]["hops_in"] > 0  # the rows come in


def test_a_max_chips_neither_layout_fits_names_the_fewer_chips(head_build, capsys):
    """Both layouts refused: the refusal names what the one holding the table once spans, not the first's."""
    _, plan, args = head_build
    spans = plan["embedding"]["layouts"]
    assert main(["plan", *args, "--max-chips", str(spans["head"]["footprint_chips"] - 1)]) != 0
    err = capsys.readouterr().err
    assert f"at least {spans['head']['footprint_chips']} chips" in err and len(err.strip().splitlines()) == 1


def test_the_head_looks_rows_up_over_its_own_shard_and_runs_as_the_reference(head_build, capsys):
    build, plan, _ = head_build
    assert len(plan["stages"]) > 1
    tables = _tables(build)
    assert tables[-1] == ["embed_tokens.weight"] and not any(tables[:-1])  # held on the head's chips alone
    out = _run_reference(capsys, build)
    assert out["tokens"]["generated"]


def test_a_compiled_plan_round_trips_with_its_embedding(head_build, tmp_path, capsys):
    build, plan, args = head_build
    assert main(["compile", *args, "--plan", str(build / "plan.json"), "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    again = json.loads((tmp_path / "b" / "plan.json").read_text())
    for key in ("stages", "decode", "prefill", "footprint_chips", "chips_lower_bound"):
        assert again[key] == plan[key]
    for name in ("decode.prog", "prefill.prog", "memory.json"):
        assert (tmp_path / "b" / name).read_bytes() == (build / name).read_bytes()


def test_tiny_mamba_on_one_stage_and_on_several_with_its_embedding_on_the_head(tmp_path, capsys):
    """Mamba's head is tied: on one stage (the planner's choice here: as few chips, a faster decode) its
    embedding and head share the one shard; on two, pinned, the head's chips look the rows up."""
    (tmp_path / "t.toml").write_text(TARGET)
    args = ["tiny-mamba", "--target", str(tmp_path / "t.toml"), *ARGS]
    assert main(["compile", *args, "-o", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    plan = json.loads((tmp_path / "one" / "plan.json").read_text())
    assert len(plan["stages"]) == 1 and plan["embedding"]["on"] == "first"
    _run_reference(capsys, tmp_path / "one")
    plan = layers_then_head(plan, 4)
    plan["stages"][-1]["embedding"] = True
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp_path / "plan.json"), "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    tables = _tables(tmp_path / "b")
    assert tables[-1] and not tables[0]
    _run_reference(capsys, tmp_path / "b")


@pytest.mark.parametrize(("model", "stages", "why"), [
    ("tiny-llama", 2, "the model's embeddings are not tied"),
    ("tiny-mamba", 1, "only the last of several stages"),
])
def test_an_embedding_the_lowering_cannot_move_is_one_line(tmp_path, capsys, model, stages, why):
    (tmp_path / "t.toml").write_text(TARGET.replace("64 KiB", "384 KiB").replace("1489 B", "8937 B"))
    args = [model, "--target", str(tmp_path / "t.toml"), *ARGS]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    plan = layers_then_head(plan, 1) if stages == 2 else plan
    plan["stages"][-1]["embedding"] = True
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp_path / "plan.json"), "-o", str(tmp_path / "b")]) != 0
    err = capsys.readouterr().err.strip()
    assert "embedding" in err and why in err and len(err.splitlines()) == 1


def test_the_interpreter_flags_the_head_looking_up_a_chunk_over_its_other_work(head_build, tmp_path, capsys,
                                                                               monkeypatch):
    """The head's chips run each chunk's lookup before their first chunk: moved onto the head's own work of
    chunk 0, they would overlap, and the run says so."""
    _, plan, args = head_build
    first, last = plan["stages"][-1]["chip_range"]
    timeline = phase.timeline

    def overlapping(variants, per_chunk, ready=0, leads=None, early=()):
        placed = timeline(variants, per_chunk, ready, leads, early)
        head = next((s for s, n in enumerate(early) if n), None)
        if head is None or len(per_chunk) < 2:
            return placed
        at = min(p.start for p in placed if p.stage == head and p.piece >= early[head])
        return [replace(p, start=at) if p.stage == head and p.piece == 0 and p.chunk == 1 else p for p in placed]

    monkeypatch.setattr(phase, "timeline", overlapping)
    assert main(["compile", *args, "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "b"), "--json"]) != 0
    hazards = json.loads(capsys.readouterr().out)["hazards"]
    assert hazards and all(h["phase"] == "prefill" and first <= h["chip"] <= last for h in hazards)


def test_a_speculative_target_keeps_its_lookup_on_its_first_stage(tied_llama, tmp_path, capsys):
    """The verify step is costed and lowered on the target's stages as pinned: a tied target with a draft is
    planned, as `plan --draft` plans it, with its embedding on the first stage, and decodes as the reference."""
    (tmp_path / "t.toml").write_text(TARGET)
    args = [str(tied_llama), "--target", str(tmp_path / "t.toml"), *ARGS, "--draft", "tiny-llama-draft",
            "--speculate", "2"]
    assert main(["compile", *args, "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    plan = json.loads((tmp_path / "b" / "plan.json").read_text())
    assert not any(s.get("embedding") for s in plan["stages"]) and _tables(tmp_path / "b")[0]
    _run_reference(capsys, tmp_path / "b")
