"""`sramflow run`: execute a build directory's Programs in the interpreter and report.

Reads only the build's files (manifest.json, decode.prog, prefill.prog) and the target;
never the compiler. Decode runs once per generated token (its cycle count does not
depend on the token, which --check-determinism verifies), so `tokens` tokens take
TTFT + (tokens - 1) decode steps.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

from ir.errors import ConfigError
from ir.program import Program
from ir.program_io import load_program
from targets.interpreter import Run, execute
from targets.loader import load_target
from targets.spec import SystemSpec


def load_build(path: str | Path) -> tuple[SystemSpec, Program, Program]:
    path = Path(path)
    manifest = path / "manifest.json"
    if not manifest.is_file():
        raise ConfigError(f"{path}: not a build directory (no manifest.json); make one with `sramflow compile`")
    target = json.loads(manifest.read_text()).get("target")
    if target is None:
        raise ConfigError(f"{manifest}: no 'target' field; recompile the build")
    return load_target(target), load_program(path / "decode.prog"), load_program(path / "prefill.prog")


def run_build(path: str | Path, tokens: int = 1, check_determinism: bool = False) -> dict:
    """The figures `sramflow run --json` prints."""
    if tokens < 1:
        raise ConfigError(f"--tokens must be a positive integer, got {tokens}")
    started = time.perf_counter()
    system, decode, prefill = load_build(path)
    runs = {"decode": execute(decode, system), "prefill": execute(prefill, system)}
    figures = _figures(runs, tokens)
    if check_determinism:
        figures["determinism"] = _determinism(runs, system)
    figures["wall_s"] = round(time.perf_counter() - started, 3)
    return figures


def _figures(runs: dict[str, Run], tokens: int) -> dict:
    d, p = runs["decode"], runs["prefill"]
    clock = d.program.clock_hz
    hazards = [h.to_dict() | {"phase": phase} for phase, r in runs.items() for h in r.hazards]
    return {
        "hazards": hazards,
        "instructions_simulated": len(d.program) * tokens + len(p.program),
        "decode": {
            "latency_cycles": d.makespan,
            "latency_us": round(d.seconds * 1e6, 3),
            "tokens_per_s": round(1 / d.seconds, 1) if d.makespan else 0.0,
            "scheduled_cycles": d.program.makespan,
            "busy": d.busy(),
        },
        "prefill": {"latency_cycles": p.makespan, "ttft_ms": round(p.seconds * 1e3, 4),
                    "scheduled_cycles": p.program.makespan},
        "tokens": {"count": tokens, "total_ms": round((p.makespan + (tokens - 1) * d.makespan) / clock * 1e3, 4)},
        "chips": d.program.chips,
    }


def _determinism(runs: dict[str, Run], system: SystemSpec) -> dict:
    """Execute each phase again in a shuffled host order of chips; cycle counts, timelines and
    hazards must be bit-identical. The digest covers both phases."""
    digests, failures = [], []
    for phase, first in runs.items():
        chips = list(range(first.program.chips))
        random.Random(phase).shuffle(chips)
        again = execute(first.program, system, order=chips)
        if again.digest() != first.digest():
            failures.append(f"{phase}: a second run in another chip order differs")
        digests.append(first.digest())
    return {"passed": not failures, "failures": failures,
            "digest": _combine(digests), "runs": 2, "orders": ["ascending", "shuffled"]}


def _combine(digests: list[str]) -> str:
    return hashlib.sha256("".join(digests).encode()).hexdigest()
