"""Programs stored as blocks and instances: the same rows as unrolled, and the same verdicts.

The interpreter checks each block once and instances by their offsets; the unrolled form of the
same Program (one block per chip, Program.build) is checked row by row. Both must find the same
hazards, clean or broken, including faults that live only at instance boundaries: an instance
started too early (a loop period too short), two instances overlapping, a tag offset that
collides with another instance's.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.mutation_campaign import TARGET_64K, WAFER
from compiler.build import compile_model
from compiler.codegen.blocks import Blocks
from compiler.frontend.options import CompileOptions
from ir.isa import Op
from ir.program import INSTANCE_NAMES, Program
from ir.program_io import dumps, loads
from targets.build_dir import load_build
from targets.interpreter import execute


@pytest.fixture(scope="module", params=["chips", "wafer"])
def build(request, tmp_path_factory):
    """tiny-llama over several 64 KiB chips, and on a small wafer: three prefill chunks each."""
    root = tmp_path_factory.mktemp("instances")
    target = root / "target.toml"
    target.write_text(TARGET_64K if request.param == "chips" else WAFER)
    compile_model("tiny-llama", str(target), CompileOptions(context=64, prompt=48, prefill_chunk=16), root / "b",
                  weights="none")
    return load_build(root / "b")


def unrolled(program: Program) -> Program:
    return Program.build(program.phase, program.target, program.chips, program.clock_hz,
                         {n: a.copy() for n, a in program.cols.items()}, program.meta, program.dialect)


def kinds(program: Program, system) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in execute(program, system).hazards:
        out[h.kind] = out.get(h.kind, 0) + (int(h.detail.split()[0]) if h.chip < 0 else 1)
    return out


def moved(program: Program, change) -> Program:
    inst = {n: program.inst[n].copy() for n in INSTANCE_NAMES}
    change(inst)
    return program.with_instances(inst)


def test_prefill_repeats_blocks_instead_of_unrolling_them(build):
    prefill = build.programs["prefill"]
    assert prefill.meta["chunks"] == 3
    assert prefill.instances > prefill.blocks
    # A block that every chunk runs is stored once (on chips each chunk here is a causal reach variant of its
    # own, so only the pieces that do not attend repeat; the wafer streams the whole cache: every piece repeats).
    assert np.bincount(prefill.inst["block"]).max() >= prefill.meta["chunks"]
    if len(prefill.meta.get("variant_chunks", [])) <= 1:
        assert len(prefill.body["chip"]) * 2 < len(prefill)


def test_unrolled_rows_are_the_same_program(build):
    for program in build.programs.values():
        flat = unrolled(program)
        assert flat == program
        assert len(flat) == len(program) and flat.makespan == program.makespan
        assert loads(dumps(program)) == program
        assert dumps(loads(dumps(program))) == dumps(program)  # byte-identical round trip


def test_a_clean_build_is_clean_in_both_forms(build):
    for program in build.programs.values():
        assert kinds(program, build.system) == {} == kinds(unrolled(program), build.system)


def _chip_instances(program: Program, chip: int) -> np.ndarray:
    mine = np.flatnonzero(program.inst["chip"] == chip)
    return mine[np.argsort(program.inst["issue"][mine], kind="stable")]


def _too_early(program: Program, by: int):
    """Chip 0's largest instance (after its first) starts `by` cycles before the one before it ends."""
    j = _chip_instances(program, 0)
    first, last = program.block_span
    k = 1 + int(np.argmax(program.block_rows[program.inst["block"][j[1:]]]))
    prev, this = j[k - 1], j[k]
    end = program.inst["issue"][prev] + last[program.inst["block"][prev]]

    def change(inst):
        inst["issue"][this] = end - by - first[inst["block"][this]]
    return change


@pytest.mark.parametrize("fault", ["period-too-short", "overlapping", "tag-collision", "chunk-late"])
def test_faults_at_instance_boundaries_are_found_as_unrolled(build, fault):
    prefill = build.programs["prefill"]
    if fault == "period-too-short":
        broken = moved(prefill, _too_early(prefill, 40))
    elif fault == "overlapping":  # a chunk's instance doubled onto the same cycles
        j = _chip_instances(prefill, 1)[-1]
        inst = {n: np.r_[prefill.inst[n], prefill.inst[n][j]] for n in INSTANCE_NAMES}
        broken = prefill.with_instances(inst)
    elif fault == "tag-collision":  # one piece instance takes another's tag base
        has = np.isin(prefill.body["op"], (Op.SEND, Op.RECV))
        block = np.repeat(np.arange(prefill.blocks), prefill.block_rows)
        talk = np.flatnonzero(np.isin(prefill.inst["block"], block[has]))
        a, b = talk[0], next(t for t in talk if prefill.inst["tag"][t] != prefill.inst["tag"][talk[0]])

        def change(inst):
            inst["tag"][a] = inst["tag"][b]
        broken = moved(prefill, change)
    else:  # every instance of the last chunk on one chip a cycle late: the chip leaves its barrier peers
        j = _chip_instances(prefill, 0)[1:]

        def change(inst):
            inst["issue"][j] -= 1
        broken = moved(prefill, change)
    found = kinds(broken, build.system)
    assert found, fault
    assert found == kinds(unrolled(broken), build.system)  # the same hazards, counted alike


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_any_instance_shift_gets_the_unrolled_verdict(build, data):
    """Property: an instance moved by any amount is judged as its unrolled rows are."""
    prefill = build.programs["prefill"]
    j = data.draw(st.integers(0, prefill.instances - 1))
    shift = data.draw(st.sampled_from([-400, -60, -7, -1, 1, 9, 300]))

    def change(inst):
        inst["issue"][j] = max(0, int(inst["issue"][j]) + shift)
    broken = moved(prefill, change)
    assert kinds(broken, build.system) == kinds(unrolled(broken), build.system)


@pytest.fixture(scope="module")
def chips_plan(tmp_path_factory):
    """tiny-llama on 64 KiB chips as four stages, the two layers alike (4 chips each: the same pieces at
    the same addresses, so their rows can be reused), and the target file."""
    root = tmp_path_factory.mktemp("placed")
    (root / "target.toml").write_text(TARGET_64K)
    compile_model("tiny-llama", str(root / "target.toml"), replace(SHORT, chips=7), root / "searched",
                  weights="none")  # 7 chips: the layers' stage and the head's (6, one stage, hold it all)
    plan = json.loads((root / "searched" / "plan.json").read_text())
    body, head = plan["stages"]
    body = {k: v for k, v in body.items() if k != "kv_layout"}  # each stage takes the layout its group can
    plan["stages"] = [dict(body, units=[u, u], tp=tp) for u, tp in (("embed", 1), ("layers.0", 4), ("layers.1", 4))]
    plan["stages"].append(head)
    return root, plan


SHORT = CompileOptions(context=64, prompt=48, prefill_chunk=16)


@settings(max_examples=5, deadline=None)
@given(gaps=st.lists(st.integers(0, 9), min_size=4, max_size=4))
def test_rows_built_once_are_the_rows_built_every_time(chips_plan, gaps):
    """Property: wherever the stages sit (any first chip, any gaps, inside or across nodes), the Programs
    are byte for byte those built with every piece's rows made afresh (Blocks.once skipping nothing)."""
    root, plan = chips_plan
    at = 0
    for stage, gap in zip(plan["stages"], gaps, strict=True):
        stage["chip_range"] = [at + gap, at + gap + stage["tp"] - 1]
        at += gap + stage["tp"]
    (root / "plan.json").write_text(json.dumps(plan))
    progs = []
    for fresh in (False, True):
        out = root / f"b{int(fresh)}"
        with pytest.MonkeyPatch.context() as mp:
            if fresh:
                mp.setattr(Blocks, "once", lambda self, key, make: make())
            compile_model("tiny-llama", str(root / "target.toml"), SHORT, out, weights="none",
                          plan_file=root / "plan.json", force=True)
        progs.append([(out / f"{phase}.prog").read_bytes() for phase in ("decode", "prefill")])
    assert progs[0] == progs[1]
