"""A seeded mutation campaign: single faults injected into small builds, and what catches them.

Each fault changes one instruction of one phase's Program (dropped, duplicated, moved, re-timed,
swapped with its queue neighbour, moved to another unit, re-addressed, re-sized, re-streamed, its
function, immediate, shape, offset, stride, flags or base changed, a message's peer or tag changed,
a SEND duplicated before its original, a SYNC dropped, duplicated or moved; and three SRAM address
faults aimed by the Program's provenance columns: a read of a produced value re-addressed onto
another value's buffer, a write re-addressed onto the start of a buffer a later read still needs,
a shift of an access that covers a whole local value). It is then judged:

  caught by timing      timing mode reports a hazard (the timing contract breaks: a real defect)
  caught by functional  timing passes; functional mode fails with a located error, or
                        --check-reference finds its logits or tokens off the reference
  missed                neither flags it, yet its tokens or logits (beyond the build's tolerance)
                        differ from the clean build's on some prompt: a real defect that slipped
  benign                neither flags it and the outputs are the clean build's: bit-identical, or
                        within the tolerance; wafer builds (no functional mode) only have timing, so
                        a fault timing passes there counts as benign.

A clean build flagged by either is a false alarm. The prompts include one shorter than a prefill
chunk and one over two chunks. Everything is seeded: the same seed gives the same table.

    python benchmarks/mutation_campaign.py [--faults 1500] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.build import compile_model
from compiler.frontend.config import load_model_config
from compiler.frontend.options import CompileOptions
from compiler.planner import make_plan
from ir.contract import LOCAL_VALUES, Prov
from ir.errors import ExecutionError
from ir.isa import Fn, Op
from ir.program import NAMES, Flag, Program
from targets.build_dir import Build, load_build
from targets.interpreter import execute
from targets.reference_check import Reference
from targets.runner import run_prompts

# The short prompt ends inside the first chunk (its first token from a decode step), the long one on
# the builds' prefill head row (32 tokens: the compiled prompt), so prefill's logits are read too.
PROMPTS = [[7, 99, 3], [1, 7, 42, 99, 3, 250, 17, 8, 200, 5, 66, 13, 90, 121, 31, 2, 44, 187, 9, 77, 140, 6, 222, 58,
                        19, 101, 240, 33, 160, 11, 95, 4]]
TOKENS = 2  # the first token and one decode step more: both Programs run
TARGET_64K = 'base = "lpu-mini"\nname = "lpu-64k"\n[chip]\nsram_bytes = "64 KiB"\nprogram_reserve_bytes = "1489 B"\n'
TARGET_128K = 'base = "lpu-mini"\nname = "lpu-128k"\n[chip]\nsram_bytes = "128 KiB"\nprogram_reserve_bytes = "2979 B"\n'
WAFER = 'base = "wse3"\nmesh_rows = 24\nmesh_cols = 20\n'
# Each build's embedding and layers on this many chips and its head on one more, so every build holds a
# hand-off (the fewest chips hold tiny-llama and tiny-mixtral in one stage, the head's vocabulary shards
# uneven): the builds the campaign was measured on.
LAYER_CHIPS = {"tiny-llama": 6, "tiny-mixtral": 4}
# (name, model, target file text or preset)
BUILDS = (("tiny-llama", "tiny-llama", TARGET_64K), ("tiny-mixtral", "tiny-mixtral", TARGET_128K),
          ("tiny-mamba", "tiny-mamba", "lpu-mini"), ("tiny-llama-wafer", "tiny-llama", WAFER))


@dataclass
class Subject:
    """A compiled build, loaded once, with its clean outputs (None for a wafer)."""

    name: str
    path: Path
    build: Build | None
    system: object
    programs: dict[str, Program]
    reference: Reference | None = None
    clean: dict | None = None


def compile_builds(root: Path, builds=BUILDS) -> list[Subject]:
    out = []
    for name, model, target in builds:
        if target.endswith("\n"):
            (root / f"{name}.toml").write_text(target)
            target = str(root / f"{name}.toml")
        path = root / name
        options = CompileOptions(context=64, prompt=32, prefill_chunk=16)
        plan = _layers_then_head(model, target, options, LAYER_CHIPS[name], root) if name in LAYER_CHIPS else None
        compile_model(model, target, options, path, weights="auto", plan_file=plan)
        build = load_build(path)
        wafer = build.system.is_mesh
        subject = Subject(name, path, None if wafer else build, build.system, dict(build.programs))
        if not wafer:
            subject.reference = Reference.load(path)
            subject.clean = run_prompts(subject.build, PROMPTS, TOKENS)
        out.append(subject)
    return out


def _layers_then_head(model: str, target: str, options: CompileOptions, tp: int, root: Path) -> Path:
    """The searched plan edited to two stages: embedding and layers on chips 0..tp-1, the head on chip tp."""
    plan = make_plan(model, target, options).to_dict()
    first = {k: v for k, v in plan["stages"][0].items() if k not in ("kv_layout", "experts")}
    last = f"layers.{load_model_config(model).num_layers - 1}"
    plan["stages"] = [dict(first, units=["embed", last], tp=tp, chip_range=[0, tp - 1]),
                      dict(first, index=1, units=["head", "head"], tp=1, chip_range=[tp, tp])]
    path = root / f"{model}.plan.json"
    path.write_text(json.dumps(plan))
    return path


# ---- faults: each takes the Program's columns (copies), a row and the generator; returns new columns

Columns = dict[str, np.ndarray]


def _copy(c: Columns) -> Columns:
    return {n: a.copy() for n, a in c.items()}


def _rows_with(c: Columns, row: int, extra: Columns | None = None) -> Columns:
    """The columns with `extra` rows appended (duplicates), or without `row` when extra is None."""
    if extra is None:
        keep = np.ones(len(c["chip"]), bool)
        keep[row] = False
        return {n: a[keep] for n, a in c.items()}
    return {n: np.concatenate([a, extra[n]]) for n, a in c.items()}


def _set(field: str, change: Callable[[int, np.random.Generator], int]):
    def fault(c: Columns, row: int, rng: np.random.Generator) -> Columns:
        c = _copy(c)
        c[field][row] = change(int(c[field][row]), rng)
        return c
    return fault


def _shift(choices: tuple[int, ...], low: int = 0):
    return lambda v, rng: max(low, v + int(rng.choice(choices)))


STREAMS_PER_CHIP = 64  # the lpu's stream registers (a wafer core has fewer: some re-streamed faults fall outside)


def _other_stream(v: int, rng: np.random.Generator) -> int:
    return int((v + rng.integers(1, STREAMS_PER_CHIP)) % STREAMS_PER_CHIP)


def _drop(c: Columns, row: int, rng: np.random.Generator) -> Columns:
    return _rows_with(c, row)


def _duplicate(c: Columns, row: int, rng: np.random.Generator, earlier: bool = False) -> Columns:
    extra = {n: a[row: row + 1].copy() for n, a in c.items()}
    if earlier:  # a duplicated SEND issued before its original
        extra["issue"][0] = max(0, int(extra["issue"][0]) - int(rng.choice((1, 20, 200))))
    return _rows_with(c, row, extra)


def _swap_with_next(c: Columns, row: int, rng: np.random.Generator) -> Columns:
    """Two neighbours of one unit queue trade issue cycles (their order in the queue flips)."""
    c = _copy(c)
    nxt = row + 1
    if nxt >= len(c["chip"]) or any(c[k][nxt] != c[k][row] for k in ("chip", "kind", "unit")):
        nxt = row - 1
    c["issue"][row], c["issue"][nxt] = c["issue"][nxt], c["issue"][row]
    return c


def _other_fn(v: int, rng: np.random.Generator) -> int:
    fns = [f.value for f in Fn if f.value != v]
    return int(rng.choice(fns))


def _flip_flag(v: int, rng: np.random.Generator) -> int:
    return v ^ int(rng.choice((Flag.ACCUMULATE, Flag.LAST)))


def _sync_fault(c: Columns, row: int, rng: np.random.Generator) -> Columns:
    which = int(rng.integers(3))
    if which == 0:
        return _drop(c, row, rng)
    if which == 1:
        return _duplicate(c, row, rng)
    return _set("issue", _shift((1, 5, 300)))(c, row, rng)


def _ranges(c: Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row's SRAM address and end (a READ's or GATHER's source, a WRITE's destination; -1 if none),
    and whether it writes: what the address faults aim at."""
    write = c["op"] == Op.WRITE
    reads = np.isin(c["op"], (Op.READ, Op.GATHER))
    lo = np.where(write, c["dst"], np.where(reads, c["src"], -1)).astype(np.int64)
    size = np.where(write, c["dst_bytes"], c["src_bytes"]).astype(np.int64)
    return lo, np.where(lo >= 0, lo + size, -1), write


def _readdress_read(c: Columns, row: int, rng: np.random.Generator) -> Columns:
    """A read of a value the phase produces, aimed at another value's buffer on its chip: a start no access
    of the read's own value covers (a read moved inside its own value's bytes is benign)."""
    lo, hi, _ = _ranges(c)
    chip = c["chip"] == c["chip"][row]
    own = np.flatnonzero(chip & (lo >= 0) & (c["val"] == c["val"][row]))
    other = np.flatnonzero(chip & (lo >= 0) & (c["val"] != c["val"][row]))
    other = other[~((lo[other, None] >= lo[own]) & (lo[other, None] < hi[own])).any(1)]
    c = _copy(c)
    if len(other):
        c["src"][row] = lo[int(rng.choice(other))]
    return c


def _clobber(c: Columns, row: int, rng: np.random.Generator) -> Columns:
    """A WRITE aimed at a live buffer: the start of a later read of another value on its chip whose own
    value is not written again between this write's end and that read."""
    lo, hi, write = _ranges(c)
    chip = c["chip"] == c["chip"][row]
    end = int(c["issue"][row]) + int(c["cycles"][row])
    later = np.flatnonzero(chip & ~write & (lo >= 0) & (c["issue"] >= end) & (c["val"] != c["val"][row])
                           & (c["prov"] > 0))
    c = _copy(c)
    rng.shuffle(later)
    for r in later[:50].tolist():
        again = chip & write & (c["val"] == c["val"][r]) & (lo < hi[r]) & (hi > lo[r]) \
            & (c["issue"] + c["cycles"] > end) & (c["issue"] + c["cycles"] <= c["issue"][r])
        if not again.any():
            c["dst"][row] = lo[r]
            break
    return c


def _whole_values(c: Columns) -> np.ndarray:
    """Contiguous READs and WRITEs of a local value that cover all of it: every access of the same value on
    the chip has the same range (any shift of one crosses the value's edge; a value accessed in several
    ranges, an all-reduce's staged slices side by side, may shift into its own bytes)."""
    lo, hi, write = _ranges(c)
    rows = np.flatnonzero((lo >= 0) & (c["m"] == 0) & (c["val"] >= LOCAL_VALUES) & ~(c["flags"] & Flag.INDIRECT))
    if not len(rows):
        return np.zeros(len(lo), bool)
    key = np.stack([c["chip"][rows], c["val"][rows], lo[rows], hi[rows]], 1).astype(np.int64)
    ranges, inverse = np.unique(key, axis=0, return_inverse=True)
    first = np.r_[True, (ranges[1:, :2] != ranges[:-1, :2]).any(1)]
    value = np.cumsum(first) - 1
    alone = np.bincount(value)[value] == 1  # the only range of its value on its chip
    written = np.zeros(len(ranges), bool)
    written[inverse.reshape(-1)[write[rows]]] = True
    read = np.zeros(len(ranges), bool)
    read[inverse.reshape(-1)[~write[rows]]] = True
    out = np.zeros(len(lo), bool)
    out[rows] = (alone & written & read)[inverse.reshape(-1)]
    return out


def _sram_offset(c: Columns, row: int, rng: np.random.Generator) -> Columns:
    c = _copy(c)
    column = "dst" if c["op"][row] == Op.WRITE else "src"
    c[column][row] = max(0, int(c[column][row]) + int(rng.choice((-64, -2, 2, 64))))
    return c


def _peer(chips: int):
    return lambda v, rng: int((v + rng.integers(1, max(2, chips))) % max(2, chips))


# kind -> (which rows it applies to, the fault)
def fault_kinds(chips: int) -> dict[str, tuple[Callable[[Columns], np.ndarray], Callable]]:
    op = lambda *ops: lambda c: np.isin(c["op"], ops)  # noqa: E731
    has = lambda name, low=0: lambda c: c[name] >= low  # noqa: E731
    anything = lambda c: c["op"] != Op.SYNC  # noqa: E731
    return {
        "drop": (anything, _drop),
        "duplicate": (anything, _duplicate),
        "move": (anything, _set("issue", _shift((-50, -3, -1, 1, 2, 7, 64, 500)))),
        "retime": (anything, _set("cycles", _shift((-2, -1, 1, 3, 40), low=0))),
        "swap": (anything, _swap_with_next),
        "unit": (lambda c: np.isin(c["op"], (Op.MXM,)) | (c["op"] == Op.SEND),
                 _set("unit", lambda v, rng: v + 1 if v % 2 == 0 else v - 1)),
        "src-address": (has("src"), _set("src", _shift((-320, -64, -2, 2, 64, 320, 4096)))),
        "dst-address": (has("dst"), _set("dst", _shift((-320, -64, -2, 2, 64, 320, 4096)))),
        "src-size": (lambda c: c["src_bytes"] > 2, _set("src_bytes", _shift((-64, -2, 2, 64), low=1))),
        "dst-size": (lambda c: c["dst_bytes"] > 2, _set("dst_bytes", _shift((-64, -2, 2, 64), low=1))),
        "stream-in": (has("s_a"), _set("s_a", _other_stream)),
        "stream-b": (has("s_b"), _set("s_b", _other_stream)),
        "stream-out": (has("s_out"), _set("s_out", _other_stream)),
        "function": (op(Op.VOP), _set("fn", _other_fn)),
        "immediate": (has("imm"), _set("imm", _shift((-1, 1)))),
        "shape": (lambda c: c["m"] > 1, _set("m", _shift((-1, 1), low=1))),
        "width": (lambda c: c["n"] > 1, _set("n", _shift((-16, -1, 1, 16), low=1))),
        "offset": (lambda c: c["s_a"] >= 0, _set("offset", _shift((-64, -2, 2, 64), low=0))),
        "stride": (lambda c: c["stride"] > 0, _set("stride", _shift((-2, 2, 64), low=1))),
        "flags": (op(Op.MXM), _set("flags", _flip_flag)),
        "base": (lambda c: c["base"] > 0, _set("base", _shift((-1, 1, 8), low=0))),
        "peer": (op(Op.SEND, Op.RECV), _set("peer", _peer(chips))),
        "tag": (op(Op.SEND, Op.RECV), _set("tag", _shift((-1, 1), low=0))),
        "send-duplicated-early": (op(Op.SEND), lambda c, r, g: _duplicate(c, r, g, earlier=True)),
        "sync": (op(Op.SYNC), _sync_fault),
        # SRAM address faults that provenance must catch in timing mode alone (TIMING_KINDS)
        "read-readdressed": (lambda c: np.isin(c["op"], (Op.READ, Op.GATHER)) & np.isin(c["prov"], PRODUCED),
                             _readdress_read),
        "write-clobber": (lambda c: (c["op"] == Op.WRITE) & (c["dst"] >= 0), _clobber),
        "sram-offset": (_whole_values, _sram_offset),
    }


PRODUCED = (Prov.MINE, Prov.EARLIER)  # reads of values the phase writes
TIMING_KINDS = ("read-readdressed", "write-clobber", "sram-offset")  # timing mode alone catches every one


@dataclass(frozen=True)
class Fault:
    build: str
    phase: str
    kind: str
    row: int
    verdict: str  # timing, functional, missed, identical, within-tolerance, timing-only
    detail: str = ""


def inject(subject: Subject, kind: str, rng: np.random.Generator) -> tuple[str, int, Program] | None:
    """One fault of `kind` in a random phase and row of `subject` (None if the kind has no rows there)."""
    phase = ("decode", "prefill")[int(rng.integers(2))]
    program = subject.programs[phase]
    applies, fault = fault_kinds(program.chips)[kind]
    rows = np.flatnonzero(applies(program.cols))
    if not len(rows):
        return None
    row = int(rng.choice(rows))
    try:
        mutated = apply_fault(program, fault, row, rng)
    except ValueError:
        return None  # a value that does not fit its column: not a Program at all
    if mutated == program:
        return None  # the change was clamped away: no fault
    return phase, row, mutated


def apply_fault(program: Program, fault: Callable, row: int, rng: np.random.Generator) -> Program:
    """`fault` at unrolled row `row`: a fault in one instance, the others' blocks left as they were (each
    row keeps the instance it came from, so what an instance writes for itself stays its own)."""
    cols = fault({**program.cols, "_inst": program.origin[1]}, row, rng)
    return program.with_instance_rows({n: cols[n] for n in NAMES}, cols["_inst"])


def judge(subject: Subject, phase: str, kind: str, row: int, mutated: Program) -> Fault:
    hazards = execute(mutated, subject.system).hazards
    if hazards:
        return Fault(subject.name, phase, kind, row, "timing", str(hazards[0]))
    if subject.build is None:
        return Fault(subject.name, phase, kind, row, "timing-only")
    build = dataclasses.replace(subject.build, programs={**subject.build.programs, phase: mutated})
    try:
        out = run_prompts(build, PROMPTS, TOKENS)
        subject.reference.check(PROMPTS, out["tokens"], out["logits"])
    except ExecutionError as error:
        return Fault(subject.name, phase, kind, row, "functional", str(error))
    return Fault(subject.name, phase, kind, row, *_unflagged(subject, out))


def _unflagged(subject: Subject, out: dict) -> tuple[str, str]:
    clean = subject.clean
    if out["tokens"] != clean["tokens"]:
        return "missed", f"tokens {out['tokens']} instead of {clean['tokens']}"
    worst = 0.0
    for got, ref in zip(out["logits"], clean["logits"], strict=True):
        diff = float(np.abs(got - ref).max())
        if diff > subject.reference.tolerance.of(ref):
            return "missed", f"logits moved by {diff:.4g}"
        worst = max(worst, diff)
    return ("identical", "") if worst == 0 else ("within-tolerance", f"logits moved by {worst:.3g}")


def false_alarms(subject: Subject) -> list[str]:
    """What either mode reports on the clean build (must be nothing)."""
    found = [str(h) for p in subject.programs.values() for h in execute(p, subject.system).hazards]
    if subject.build is not None:
        try:
            subject.reference.check(PROMPTS, subject.clean["tokens"], subject.clean["logits"])
        except ExecutionError as error:
            found.append(str(error))
    return found


def campaign(subjects: list[Subject], faults: int, seed: int = 0) -> list[Fault]:
    """`faults` faults, kinds and builds taken in turn, everything else drawn from one seeded generator. A kind
    keeps its turn for a few draws, so a kind with sparse sites (a write some later read still needs) gets its
    share; one no build takes in those draws gives its turn up."""
    rng = np.random.default_rng(seed)
    kinds = list(fault_kinds(1))
    out: list[Fault] = []
    attempt = turn = 0
    while len(out) < faults:
        kind = kinds[turn % len(kinds)]
        turn += 1
        for _ in range(4 * len(subjects)):
            subject = subjects[attempt % len(subjects)]
            attempt += 1
            made = inject(subject, kind, rng)
            if made is not None:
                out.append(judge(subject, made[0], kind, made[1], made[2]))
                break
    return out


VERDICTS = ("timing", "functional", "missed", "identical", "within-tolerance", "timing-only")


def table(results: list[Fault], alarms: dict[str, list[str]]) -> list[dict]:
    """One row per build and a total: injected / real / caught by timing / caught by functional /
    missed / benign (identical, within tolerance, no functional mode) / false alarms."""
    rows = []
    for name in [*dict.fromkeys(f.build for f in results), "total"]:
        mine = [f for f in results if name in (f.build, "total")]
        n = Counter(f.verdict for f in mine)
        rows.append({"build": name, "injected": len(mine), "real": n["timing"] + n["functional"] + n["missed"],
                     "timing": n["timing"], "functional": n["functional"], "missed": n["missed"],
                     "benign_identical": n["identical"], "benign_within_tolerance": n["within-tolerance"],
                     "benign_timing_only": n["timing-only"],
                     "false_alarms": sum(len(v) for k, v in alarms.items() if name in (k, "total"))})
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("build", "injected", "real", "timing", "functional", "missed", "benign_identical",
            "benign_within_tolerance", "benign_timing_only", "false_alarms")
    short = ("build", "injected", "real", "by timing", "by functional", "missed", "benign =", "benign ~",
             "benign (no fn)", "false alarms")
    print(" | ".join(f"{h:>16}" if i == 0 else f"{h:>9}" for i, h in enumerate(short)))
    for r in rows:
        print(" | ".join(f"{r[h]:>16}" if i == 0 else f"{r[h]:>9}" for i, h in enumerate(head)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subjects = compile_builds(Path(tmp))
        compiled = time.perf_counter()
        alarms = {s.name: false_alarms(s) for s in subjects}
        results = campaign(subjects, args.faults, args.seed)
        done = time.perf_counter()
    print_table(table(results, alarms))
    kinds = Counter((f.kind, f.verdict) for f in results)
    print("\nper kind: " + "; ".join(f"{k}: " + ", ".join(f"{v} {kinds[k, v]}" for v in VERDICTS if kinds[k, v])
                                     for k in dict.fromkeys(f.kind for f in results)))
    for f in results:
        if f.verdict == "missed":
            print(f"MISSED {f.build} {f.phase} {f.kind} row {f.row}: {f.detail}")
    print(f"\ncompile {compiled - started:.1f} s, campaign {done - compiled:.1f} s ({args.faults} faults, seed "
          f"{args.seed})")


if __name__ == "__main__":
    main()
