"""Single faults injected into small builds: every real defect is flagged, no clean build is.

The seeded campaign (benchmarks/mutation_campaign.py, here at 520 faults of 28 kinds over
tiny-llama, tiny-mixtral, tiny-mamba and a tiny wafer) is judged by timing mode, functional mode
and --check-reference. Each class of defect that used to slip through has a test of its own,
through the CLI where a user meets it.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from benchmarks.mutation_campaign import (
    PROMPTS,
    TIMING_KINDS,
    TOKENS,
    apply_fault,
    campaign,
    compile_builds,
    false_alarms,
    fault_kinds,
    judge,
    table,
)
from compiler.cli import main
from ir.build_io import write_manifest
from ir.errors import ExecutionError
from ir.isa import Op
from ir.program import Program
from ir.program_io import save_program
from targets.functional import FunctionalError
from targets.interpreter import execute
from targets.runner import run_prompts

RANGE = r"\[0x[0-9a-f]+, 0x[0-9a-f]+\)"
LOCATED = re.compile(r"^sramflow: error: chip \d+ [a-z0-9]+\.\d+\[\d+\] @\d+: [a-z]+: .+$")


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    return {s.name: s for s in compile_builds(tmp_path_factory.mktemp("campaign"))}


@pytest.fixture(scope="module")
def llama(subjects):
    return subjects["tiny-llama"]


def edited(program: Program, change) -> Program:
    cols = {n: a.copy() for n, a in program.cols.items()}
    cols = change(cols) or cols
    return program.with_columns(cols)


def write_build(subject, tmp_path: Path, phase: str, program: Program) -> Path:
    """A copy of the build with one Program replaced (its manifest entry updated)."""
    out = tmp_path / "broken"
    out.mkdir()
    for p in subject.path.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    save_program(program, out / f"{phase}.prog")
    write_manifest(out, program.target)  # a deliberate edit: the build must accept it
    return out


def prompt_text(prompts: list[list[int]]) -> str:
    return "; ".join(" ".join(map(str, p)) for p in prompts)


# ---------------------------------------------------------------- the campaign


def test_the_campaign_flags_every_real_defect_and_no_clean_build(subjects):
    results = campaign(list(subjects.values()), 640, seed=15)
    alarms = {name: false_alarms(s) for name, s in subjects.items()}
    rows = {r["build"]: r for r in table(results, alarms)}
    total = rows["total"]
    assert total["injected"] == 640 and total["missed"] == 0 and total["false_alarms"] == 0
    assert total["real"] == total["timing"] + total["functional"] > 250
    assert rows["tiny-llama-wafer"]["timing"] > 0 and rows["tiny-mamba"]["functional"] > 0
    assert rows["tiny-mixtral"]["functional"] > 0
    kinds = Counter(f.kind for f in results)
    assert len(kinds) >= 15 and min(kinds.values()) >= 10
    assert {f.verdict for f in results} <= {"timing", "functional", "identical", "within-tolerance", "timing-only"}
    # SRAM address faults are the interpreter's to catch without data: every one, by timing mode
    assert {f.verdict for f in results if f.kind in TIMING_KINDS} == {"timing"}


def test_the_campaign_is_reproducible(subjects):
    some = [subjects["tiny-mixtral"], subjects["tiny-llama-wafer"]]
    assert campaign(some, 30, seed=4) == campaign(some, 30, seed=4)


# ---------------------------------------------------------------- one test per class that slipped


def _search(subject, phase: str, kind: str, rows, keep) -> tuple[Program, object] | None:
    """The first fault of `kind` at one of `rows` that timing passes and `keep(outputs)` accepts."""
    program = subject.programs[phase]
    _, fault = fault_kinds(program.chips)[kind]
    rng = np.random.default_rng(0)
    for row in rows:
        cols = fault(program.cols, int(row), rng)
        mutated = program.with_columns(cols)
        if mutated == program or execute(mutated, subject.system).hazards:
            continue
        build = dataclasses.replace(subject.build, programs={**subject.build.programs, phase: mutated})
        try:
            out = run_prompts(build, PROMPTS, TOKENS)
        except ExecutionError:
            continue
        if keep(out):
            return mutated, out
    return None


def test_logits_that_change_under_unchanged_tokens_fail_check_reference(llama, tmp_path, capsys):
    """A READ one vector off: the greedy tokens survive, the logits do not; --check-reference exits 2
    naming the step, position and largest difference, while the tokens alone look fine."""
    c = llama.programs["decode"].cols
    reads = np.flatnonzero((c["op"] == Op.READ) & (c["src"] >= 320))
    clean = llama.clean

    def quiet(out):
        moved = max(float(np.abs(a - b).max()) for a, b in zip(out["logits"], clean["logits"], strict=True))
        return out["tokens"] == clean["tokens"] and moved > 0.05

    found = _search(llama, "decode", "src-address", reads, quiet)
    assert found is not None
    broken = write_build(llama, tmp_path, "decode", found[0])
    args = ["run", str(broken), "--functional", "--prompt", prompt_text(PROMPTS), "--tokens", str(TOKENS)]
    assert main(args) == 0  # tokens alone: nothing to see
    capsys.readouterr()
    assert main([*args, "--check-reference"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(r"reference check: sequence \d, step \d \(position \d+\): logits differ by up to [\d.]+", err)


def test_a_fault_only_one_prompt_shows_is_caught_with_several_prompts(llama, tmp_path, capsys):
    """A prompt that ends on prefill's head row reads the last chunk's logits, which a prompt ending inside
    the first chunk never reads (its first token comes from a decode step): a fault there passes a run on
    the short prompt and fails one given both prompts."""
    c = llama.programs["prefill"].cols
    writes = np.flatnonzero((c["op"] == Op.WRITE) & (c["dst"] >= 0))
    clean = llama.clean

    def only_long(out):
        return np.array_equal(out["logits"][0], clean["logits"][0]) and (
            out["tokens"][1] != clean["tokens"][1] or float(np.abs(out["logits"][1] - clean["logits"][1]).max()) > 0.05)

    found = _search(llama, "prefill", "dst-address", writes[::-1], only_long)
    assert found is not None
    broken = write_build(llama, tmp_path, "prefill", found[0])
    run = ["run", str(broken), "--functional", "--check-reference", "--tokens", str(TOKENS)]
    assert main([*run, "--prompt", prompt_text(PROMPTS[:1])]) == 0
    capsys.readouterr()
    assert main([*run, "--prompt", prompt_text(PROMPTS)]) == 2
    assert "reference check: sequence 1" in capsys.readouterr().err


def test_a_send_duplicated_before_its_original_is_flagged_in_both_modes(llama):
    """Links are FIFO and a message is consumed once: the early copy takes the receive, the original
    is left over (timing), and the functional run ends with a message nobody received."""
    program = llama.programs["decode"]
    send = int(np.flatnonzero(program.cols["op"] == Op.SEND)[0])

    def early_copy(c):
        extra = {n: a[send: send + 1].copy() for n, a in c.items()}
        extra["issue"][0] -= 5
        return {n: np.concatenate([a, extra[n]]) for n, a in c.items()}

    broken = edited(program, early_copy)
    kinds = {h.kind for h in execute(broken, llama.system).hazards}
    assert "unmatched" in kinds
    build = dataclasses.replace(llama.build, programs={**llama.build.programs, "decode": broken})
    with pytest.raises(FunctionalError, match=r"^chip \d+ c2c\.\d+\[\d+\] @\d+: send: "):
        run_prompts(build, PROMPTS[:1], 2)


@pytest.mark.parametrize("fault", ["drop", "duplicate", "move"])
def test_a_broken_barrier_is_flagged_in_both_modes(llama, fault):
    """Every chip reaches the same SYNCs at the same cycles, and nothing on a chip runs before its first."""
    program = llama.programs["decode"]
    sync = int(np.flatnonzero((program.cols["op"] == Op.SYNC) & (program.cols["chip"] == 3))[0])

    def change(c):
        if fault == "drop":
            keep = np.arange(len(c["chip"])) != sync
            return {n: a[keep] for n, a in c.items()}
        if fault == "duplicate":
            return {n: np.concatenate([a, a[sync: sync + 1]]) for n, a in c.items()}
        c["issue"][sync] += 1
        return c

    broken = edited(program, change)
    assert "sync" in {h.kind for h in execute(broken, llama.system).hazards}
    build = dataclasses.replace(llama.build, programs={**llama.build.programs, "decode": broken})
    with pytest.raises(FunctionalError, match=r"SYNC|barrier"):
        run_prompts(build, PROMPTS[:1], 2)


@pytest.mark.parametrize("kind", TIMING_KINDS)
def test_sram_address_faults_are_caught_by_timing_mode_alone(subjects, kind):
    """A read re-addressed onto another value, a write re-addressed onto a buffer a later read still
    needs, an access shifted across its value's edge: timing mode's provenance check flags each one
    (sram-raw), naming the read and the instruction that last wrote what it reads, with no data."""
    rng = np.random.default_rng(15)
    caught = Counter()
    for name in ("tiny-llama", "tiny-mixtral", "tiny-mamba"):
        subject = subjects[name]
        for phase, program in subject.programs.items():
            applies, fault = fault_kinds(program.chips)[kind]
            rows = np.flatnonzero(applies(program.cols))
            made = 0
            for row in rng.permutation(rows).tolist():
                if made == 4:
                    break
                mutated = apply_fault(program, fault, row, rng)
                if mutated == program:
                    continue  # no buffer to aim at from this row
                made += 1
                hazards = [h for h in execute(mutated, subject.system).hazards if h.kind == "sram-raw"]
                assert hazards, f"{name} {phase} {kind} at row {row} passed timing mode"
                assert re.search(rf"reads {RANGE}, (last written by chip \d+ [a-z]+\.\d+\[\d+\] @\d+|which nothing)",
                                 hazards[0].detail)
                caught[name] += 1
    assert min(caught.values()) >= 4


def test_the_wafer_has_no_sram_writes_to_check(subjects):
    """The roles dialect has no WRITE: a wafer core's SRAM holds its weights, which nothing in a
    Program can clobber, so the address faults aimed at produced values have nowhere to land."""
    for program in subjects["tiny-llama-wafer"].programs.values():
        c = program.cols
        assert not np.isin(c["op"], (Op.WRITE, Op.FETCH)).any() and (c["prov"] == 0).all()
        for kind in TIMING_KINDS:
            assert not fault_kinds(program.chips)[kind][0](c).any()


def test_a_clobbered_buffer_fails_run_naming_both_instructions(llama, tmp_path, capsys):
    """Through the CLI: a WRITE moved onto a buffer a later read still needs is a hazard of `run`."""
    program = llama.programs["decode"]
    _, fault = fault_kinds(program.chips)["write-clobber"]
    rng = np.random.default_rng(1)
    writes = np.flatnonzero(program.cols["op"] == Op.WRITE)
    broken = next(m for m in (apply_fault(program, fault, int(r), rng) for r in writes) if m != program)
    assert main(["run", str(write_build(llama, tmp_path, "decode", broken))]) == 2
    out = capsys.readouterr().out
    assert re.search(rf"decode chip \d+ mem\.\d+\[\d+\] @\d+: sram-raw: reads {RANGE}, last written by chip \d+ "
                     r"mem\.\d+\[\d+\] @\d+ \((the value at 0x[0-9a-f]+|local value \d+)\); it expects ", out)


def test_sram_address_and_offset_faults_are_flagged_when_they_change_any_logit(subjects):
    """Random address, size, offset or stride faults: timing mode's provenance catches those that move
    an access onto another value's bytes; one that stays inside its own value (a weight panel read one
    vector off) is left to the numbers, and every one that changes a logit on some prompt fails
    --check-reference."""
    rng = np.random.default_rng(7)
    verdicts = Counter()
    for name in ("tiny-llama", "tiny-mixtral", "tiny-mamba"):
        subject = subjects[name]
        for kind in ("src-address", "dst-address", "offset", "stride"):
            for _ in range(5):
                phase = ("decode", "prefill")[int(rng.integers(2))]
                program = subject.programs[phase]
                applies, fault = fault_kinds(program.chips)[kind]
                rows = np.flatnonzero(applies(program.cols))
                if not len(rows):
                    continue
                row = int(rng.choice(rows))
                mutated = apply_fault(program, fault, row, rng)
                verdicts[judge(subject, phase, kind, row, mutated).verdict] += 1
    assert verdicts["missed"] == 0 and verdicts["timing"] > 20 and verdicts["functional"] > 0


def test_functional_failures_are_one_located_line_and_exit_2(llama, tmp_path, capsys):
    """A VOP made to read a stream nothing wrote: no traceback, the chip, unit, queue index and cycle."""
    program = llama.programs["decode"]
    c = program.cols
    vop = int(np.flatnonzero((c["op"] == Op.VOP) & (c["s_a"] >= 0))[0])
    used = set(c["s_out"][c["chip"] == c["chip"][vop]].tolist())
    unused = next(s for s in range(64) if s not in used)
    broken = write_build(llama, tmp_path, "decode", edited(program, lambda c: c["s_a"].__setitem__(vop, unused)))
    assert main(["run", str(broken), "--functional", "--prompt", "1 2 3", "--tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert LOCATED.match(err) and f"reads stream {unused}, which nothing wrote" in err


def test_random_faults_never_escape_as_raw_exceptions(subjects):
    """Whatever a fault does to the data, functional mode raises only its own located errors."""
    rng = np.random.default_rng(11)
    subject = subjects["tiny-mixtral"]
    kinds = list(fault_kinds(1))
    raised = 0
    for i in range(40):
        phase = ("decode", "prefill")[i % 2]
        program = subject.programs[phase]
        applies, fault = fault_kinds(program.chips)[kinds[i % len(kinds)]]
        rows = np.flatnonzero(applies(program.cols))
        if not len(rows):
            continue
        cols = fault(program.cols, int(rng.choice(rows)), rng)
        try:
            mutated = program.with_columns(cols)
        except ValueError:
            continue
        build = dataclasses.replace(subject.build, programs={**subject.build.programs, phase: mutated})
        try:
            run_prompts(build, PROMPTS[:1], 2)
        except FunctionalError as error:
            raised += 1
            assert re.match(r"^chip \d+ [a-z0-9]+\.\d+\[\d+\] @\d+: [a-z]+: ", str(error))
    assert raised > 5


def test_a_duplicated_wafer_send_is_a_duplicate(subjects):
    """On a wafer one SEND feeds every RECV naming (its stream, its tag): a second one is flagged."""
    wafer = subjects["tiny-llama-wafer"]
    program = wafer.programs["decode"]
    send = int(np.flatnonzero(program.cols["op"] == Op.SEND)[0])
    twice = edited(program, lambda c: {n: np.concatenate([a, a[send: send + 1]]) for n, a in c.items()})
    assert "duplicate" in {h.kind for h in execute(twice, wafer.system).hazards}
