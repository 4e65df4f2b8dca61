"""The ISA contract (ir/contract.py): every column of every instruction means one thing in its dialect, a
Program declares its dialect, and it runs only where the target's instruction set reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from ir.asm import parse_asm, print_asm
from ir.contract import CONTRACT, DIALECT_OF_ISA, FN_ARGS, Route, violations
from ir.errors import ConfigError
from ir.isa import Fn, Op
from ir.program import DEFAULTS, NAMES, Program
from ir.program_io import load_program, save_program
from targets import load_target
from targets.interpreter import execute

WAFER = 'base = "wse3"\nmesh_rows = 24\nmesh_cols = 20\n'


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, tuple[str, Program, Program]]:
    """tiny-llama and tiny-mamba on lpu-mini (queues), tiny-llama on a small wafer (roles)."""
    tmp = tmp_path_factory.mktemp("contract")
    (tmp / "wafer.toml").write_text(WAFER)
    out = {}
    for name, model, target in (("llama", "tiny-llama", "lpu-mini"), ("mamba", "tiny-mamba", "lpu-mini"),
                                ("wafer", "tiny-llama", str(tmp / "wafer.toml"))):
        assert main(["compile", model, "--target", target, "-o", str(tmp / name), "--weights", "none"]) == 0
        out[name] = (target, load_program(tmp / name / "decode.prog"), load_program(tmp / name / "prefill.prog"))
    return out


def test_every_build_keeps_the_contract_of_its_dialect(builds):
    for name, (target, decode, prefill) in builds.items():
        assert decode.dialect == prefill.dialect == DIALECT_OF_ISA[load_target(target).chip.isa]
        for program in (decode, prefill):
            assert list(violations(program)) == [], name


def test_the_tables_name_only_real_columns_and_functions():
    for table in CONTRACT.values():
        for used in table.values():
            assert set(used) <= set(NAMES)
    assert all(isinstance(fn, Fn) or fn == "mxm" for fn in FN_ARGS)


def _edited(program: Program, row: int, **fields) -> Program:
    cols = {n: a.copy() for n, a in program.cols.items()}
    for name, value in fields.items():
        cols[name][row] = value
    return program.with_columns(cols)


def test_a_column_an_opcode_does_not_use_is_a_contract_hazard(builds):
    target, decode, _ = builds["llama"]
    system = load_target(target)
    c = decode.cols
    vop = int(np.flatnonzero(c["op"] == Op.VOP)[0])
    send = int(np.flatnonzero(c["op"] == Op.SEND)[0])
    for row, fields, words in ((vop, {"stride": 640}, "vop sets stride=640"),
                               (send, {"route": Route.FEED}, "send sets route=1"),
                               (send, {"imm": 3}, "send sets imm=3")):
        assert DEFAULTS[next(iter(fields))] != next(iter(fields.values()))
        found = [h for h in execute(_edited(decode, row, **fields), system).hazards if h.kind == "contract"]
        assert len(found) == 1 and words in found[0].detail, (fields, found)


def test_vector_function_arguments_follow_their_schema(builds):
    target, decode, _ = builds["llama"]
    meta = json.loads(json.dumps(decode.meta))
    entry = next(i for i, a in enumerate(meta["fn_args"]) if "eps" in a)
    meta["fn_args"][entry]["eps"] = "small"  # a string where a float goes
    edited = decode.with_meta(meta)
    found = [h for h in execute(edited, load_target(target)).hazards if h.kind == "contract"]
    assert found and "rmsnorm an argument eps='small' it does not take" in found[0].detail


def test_argbest_without_its_limit_or_with_a_bad_one_is_a_contract_hazard(builds):
    """tiny-llama's head on 2 chips: each ARGBEST names the vocabulary (256) as its limit; without one,
    or with one that leaves a shard no real id or lies past every shard, the Program is refused."""
    target, decode, _ = builds["llama"]
    system = load_target(target)
    c = decode.cols
    rows = np.flatnonzero((c["op"] == Op.VOP) & (c["fn"] == Fn.ARGBEST))
    entry = int(c["imm"][rows[0]])
    assert len(rows) == 2 and decode.meta["fn_args"][entry] == {"limit": 256}
    assert not [h for h in execute(decode, system).hazards if h.kind == "contract"]

    def found(program: Program) -> list[str]:
        return [h.detail for h in execute(program, system).hazards if h.kind == "contract"]

    def with_limit(limit) -> Program:
        meta = json.loads(json.dumps(decode.meta))
        meta["fn_args"][entry] = {} if limit is None else {"limit": limit}
        return decode.with_meta(meta)

    no_entry = found(_edited(decode, int(rows[0]), imm=-1))
    assert any("argbest needs the argument limit (imm=-1 gives none)" in d for d in no_entry)
    assert any(f"argbest needs the argument limit (imm={entry} gives none)" in d for d in found(with_limit(None)))
    assert any("argbest an argument limit='256' it does not take" in d for d in found(with_limit("256")))
    assert any("argbest's shard from id 128 holds no id below its limit 100" in d for d in found(with_limit(100)))
    assert any("limit 300 lies past every shard naming it (their ids end at 256)" in d for d in found(with_limit(300)))


def test_an_opcode_the_dialect_lacks_is_a_contract_hazard(builds):
    target, decode, _ = builds["wafer"]
    recv = int(np.flatnonzero(decode.cols["op"] == Op.RECV)[0])
    found = [h for h in execute(_edited(decode, recv, op=Op.WRITE), load_target(target)).hazards
             if h.kind == "contract"]
    assert any("write is not an instruction of the roles dialect" in h.detail for h in found)


def test_a_program_runs_only_where_its_dialect_is_read(builds):
    _, chips, _ = builds["llama"]
    wafer_target, wafer, _ = builds["wafer"]
    with pytest.raises(ConfigError, match="a queues-dialect decode Program cannot run on wse3, whose wse"):
        execute(chips, load_target("wse3"))
    with pytest.raises(ConfigError, match="a roles-dialect decode Program cannot run on lpu-mini, whose tsp"):
        execute(wafer, load_target("lpu-mini"))
    with pytest.raises(ConfigError, match=r"h100 has no instruction set \(isa = 'none'\)"):
        execute(chips, load_target("h100"))


def test_the_dialect_and_routes_survive_files_and_assembly(builds, tmp_path):
    _, wafer, _ = builds["wafer"]
    save_program(wafer, tmp_path / "w.prog")
    assert load_program(tmp_path / "w.prog") == wafer
    window = wafer.window(list(range(min(3, wafer.chips))))
    text = print_asm(window)
    assert text.splitlines()[1].endswith("dialect roles") and "route=feed" in text
    assert parse_asm(text) == window


# ---------------------------------------------------------------- the wrong cases issue 13 names


def test_ssm_ops_on_a_wafer_are_refused_before_planning(capsys, tmp_path):
    (tmp_path / "wafer.toml").write_text(WAFER)
    for command in (["compile", "tiny-mamba", "--target", str(tmp_path / "wafer.toml"), "-o", str(tmp_path / "b")],
                    ["plan", "tiny-mamba", "--target", "wse3"]):
        assert main(command) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "conv1d (" in err and "selective_scan (" in err
        assert "cannot run on this target" in err
    assert not (tmp_path / "b").exists()


def test_latent_attention_on_a_wafer_is_refused_not_timed_as_an_elementwise_op(capsys):
    assert main(["plan", "tiny-deepseek-v3", "--target", "wse3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("sramflow: error: wse3: the wafer backend has no cost rule mla_attention (%11 in scope layers.0); "
                   "the model cannot run on this target")


def test_compile_for_a_target_with_no_instruction_set_is_refused(capsys, tmp_path):
    assert main(["compile", "tiny-llama", "--target", "h100", "-o", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'H100-SXM5-80GB has none (chip.isa = "none")' in err
    assert not (tmp_path / "b").exists()
    assert main(["plan", "tiny-llama", "--target", "h100", "--json"]) == 0  # it plans


MODELS = Path(__file__).parent.parent / "examples" / "models"


@pytest.mark.parametrize("model", sorted(p.stem for p in MODELS.glob("*.json")))
def test_every_shipped_model_gives_its_vector_functions_arguments_the_contract_knows(model):
    """The codegen hands an op's attributes to its vector function (emit.py): for every shipped model,
    rope's (YaRN's beta_fast, mscale, ...), the norms' and the router's fit the contract's schema."""
    from compiler.frontend.build import build_graph
    from compiler.frontend.config import load_model_config
    from ir.contract import _fits
    from ir.ops import Opcode

    graph = build_graph(load_model_config(model), "decode", context=64, prompt=16, layers=1)
    schemas = {Opcode.ROPE: FN_ARGS[Fn.ROPE], Opcode.RMSNORM: FN_ARGS[Fn.RMSNORM]}
    for op in graph.ops:
        for name, value in op.attr.items() if op.opcode in schemas else ():
            assert name in schemas[op.opcode] and _fits(value, schemas[op.opcode][name]), (op.opcode, name, value)
