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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ir.errors import ConfigError
from ir.image_io import load_image
from ir.numerics import decode
from ir.program import Program
from ir.program_io import load_program
from targets.functional import Machine, activation_dtype, execute_functional
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


def run_build(path: str | Path, tokens: int = 1, check_determinism: bool = False,
              prompt: list[int] | None = None) -> dict:
    """The figures `sramflow run --json` prints; with a `prompt`, the functional run's too."""
    if tokens < 1:
        raise ConfigError(f"--tokens must be a positive integer, got {tokens}")
    started = time.perf_counter()
    system, decode, prefill = load_build(path)
    runs = {"decode": execute(decode, system), "prefill": execute(prefill, system)}
    figures = _figures(runs, tokens)
    if prompt is not None:
        figures["functional"] = _functional(path, prompt, tokens)
        figures["tokens"]["generated"] = figures["functional"]["tokens"]
    if check_determinism:
        figures["determinism"] = _determinism(runs, system)
        if prompt is not None:
            _functional_determinism(path, prompt, tokens, figures)
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
            "busy_by_chip": d.busy_by_chip(),
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


# ---- functional mode: prompt in, greedy tokens out -------------------------------------------

def _functional(path: str | Path, prompt: list[int], tokens: int) -> dict:
    out = run_functional(path, prompt, tokens)
    return {"prompt": prompt, "tokens": out["tokens"], "digest": _outputs_digest(out),
            "instructions_executed": out["instructions"]}


def _outputs_digest(out: dict) -> str:
    h = hashlib.sha256(np.asarray(out["tokens"], "<i8").tobytes())
    h.update(np.ascontiguousarray(out["logits"], "<f4").tobytes())
    return h.hexdigest()


def _functional_determinism(path: str | Path, prompt: list[int], tokens: int, figures: dict) -> None:
    """The functional run again with chips in a shuffled host order must give bit-identical
    tokens and logits; a run on other token ids must execute the same Programs (so the same
    cycle counts: no instruction's timing reads data) and differ only in its outputs."""
    det, first = figures["determinism"], figures["functional"]["digest"]
    chips = list(range(figures["chips"]))
    random.Random("functional").shuffle(chips)
    again = _outputs_digest(run_functional(path, prompt, tokens, order=chips))
    if again != first:
        det["failures"].append("functional: a second run in another chip order gives other tokens or logits")
    other = [(t * 7 + 3) % max(2, max(prompt) + 1) for t in prompt]
    run_functional(path, other, tokens)
    det.update(passed=not det["failures"], functional_digest=first, other_inputs=other,
               digest=_combine([det["digest"], first]))

@dataclass(frozen=True)
class Build:
    """What a functional run reads from a build directory."""

    path: Path
    system: SystemSpec
    programs: dict[str, Program]
    memory: dict
    context: int
    recurrent: bool = False  # Mamba state: it runs on through every row, padding included

    @classmethod
    def load(cls, path: str | Path) -> Build:
        path = Path(path)
        system, decode, prefill = load_build(path)
        memory = json.loads((path / "memory.json").read_text())
        if memory.get("wafer"):
            raise ConfigError(f"{path}: a wafer build has no SRAM image yet; `sramflow run` without --functional "
                              "checks its timing")
        if "outputs" not in memory:
            raise ConfigError(f"{path}: built by an older sramflow (memory.json has no outputs); recompile it")
        plan = json.loads((path / "plan.json").read_text())
        return cls(path, system, {"decode": decode, "prefill": prefill}, memory, plan["options"]["context"],
                   plan["totals"].get("ssm_state_bytes", 0) > 0)

    def inputs(self, phase: str, stage: dict) -> dict[str, tuple[int, int]]:
        return {r["name"]: (r["addr"], r["bytes"]) for r in stage["regions"]
                if r["kind"] == "input" and r["phase"] == phase}

    def output(self, phase: str, name: str) -> tuple[dict, int, int]:
        """(stage, address, bytes per chip) of a phase's output."""
        where = self.memory["outputs"][phase][name]
        stage = self.memory["stages"][where["stage"]]
        region = next(r for r in stage["regions"] if r["name"] == where["value"] and r["phase"] == phase)
        return stage, region["addr"], region["bytes"]


def run_functional(path: str | Path, prompt: list[int], tokens: int, order: list[int] | None = None) -> dict:
    """Prefill `prompt`, then decode greedily until `tokens` new tokens: every instruction of
    every chip executed on the build's SRAM image. Returns the tokens and every step's logits."""
    build = Build.load(path)
    image_path = build.path / "sram.img"
    if not image_path.is_file():
        raise ConfigError(f"{build.path}: no SRAM image (sram.img); compile with --weights random or a checkpoint")
    if tokens < 1 or not prompt:
        raise ConfigError("a functional run needs a prompt and at least one token to generate")
    if len(prompt) + tokens - 1 > build.context:
        raise ConfigError(f"prompt ({len(prompt)}) and tokens ({tokens}) need {len(prompt) + tokens - 1} cache "
                          f"positions; the build holds {build.context} (compile with a larger --context)")
    image, _ = load_image(image_path)
    machine = Machine.blank(build.programs["decode"].chips, build.system.chip.usable_sram_bytes)
    machine.load(image)
    logits = [_prefill(build, machine, prompt, order)]
    new = [int(np.argmax(logits[0]))]
    for step in range(tokens - 1):
        step_logits, token = _decode(build, machine, new[-1], len(prompt) + step, order)
        logits.append(step_logits)
        new.append(token)
    return {"tokens": new, "logits": np.stack(logits), "instructions": machine.executed}


def _host_inputs(build: Build, phase: str, stage: dict, ids: np.ndarray, pos: np.ndarray) -> Callable:
    """The host writing this chunk's token ids and positions into every chip of a stage."""
    regions = build.inputs(phase, stage)

    def write(machine: Machine) -> None:
        for chip in range(stage["first_chip"], stage["first_chip"] + stage["tp"]):
            for name, values in (("tokens", ids), ("pos", pos)):
                addr, nbytes = regions[name]
                machine.write(chip, addr, values.astype("<i4").view(np.uint8)[:nbytes])
    return write


def _gather_output(build: Build, phase: str, name: str, machine: Machine) -> np.ndarray:
    """An output read off the last stage: every rank's vocabulary shard side by side."""
    stage, addr, nbytes = build.output(phase, name)
    shards = build.memory["outputs"][phase][name]["shards"]
    parts = [machine.read(stage["first_chip"] + r, addr, nbytes) for r in range(shards)]
    act = activation_dtype(build.programs[phase])
    return np.concatenate([decode(p, act).reshape(-1, nbytes // 2 // _rows(build, phase)) for p in parts], axis=1)


def _rows(build: Build, phase: str) -> int:
    stage = build.memory["stages"][0]
    return build.inputs(phase, stage)["tokens"][1] // 4


def _prefill(build: Build, machine: Machine, prompt: list[int], order: list[int] | None) -> np.ndarray:
    """Run the prompt, padded to the build's chunks, through prefill; the last prompt row's logits."""
    program = build.programs["prefill"]
    chunk, chunks = _rows(build, "prefill"), program.meta["chunks"]
    if len(prompt) > chunk * chunks:
        raise ConfigError(f"the build's prefill takes at most {chunk * chunks} prompt tokens, got {len(prompt)} "
                          "(compile with a larger --prompt)")
    if build.recurrent and len(prompt) < chunk * chunks:
        return _prefill_whole_chunks(build, machine, prompt, order)
    ids = np.zeros(chunk * chunks, np.int32)
    ids[: len(prompt)] = prompt
    pos = np.arange(chunk * chunks, dtype=np.int32)
    starts = program.meta["chunk_starts"]
    events = [(starts[s][c], _host_inputs(build, "prefill", stage, ids[c * chunk:(c + 1) * chunk],
                                          pos[c * chunk:(c + 1) * chunk]))
              for s, stage in enumerate(build.memory["stages"]) for c in range(chunks)]
    last_chunk = (len(prompt) - 1) // chunk
    seen: list[np.ndarray] = []
    at = starts[-1][last_chunk + 1] if last_chunk + 1 < chunks else program.makespan + 1
    events.append((at, lambda m: seen.append(_gather_output(build, "prefill", "logits", m))))
    execute_functional(program, machine, events, order)
    return seen[0][(len(prompt) - 1) % chunk]


def _prefill_whole_chunks(build: Build, machine: Machine, prompt: list[int], order: list[int] | None
                          ) -> np.ndarray:
    """A recurrent state must not run on through padding rows: prefill takes the prompt's whole
    chunks before its last token, each stage's state is saved where its next chunk starts and
    restored after the program, and the rest of the prompt goes through decode steps."""
    program = build.programs["prefill"]
    chunk, stages = _rows(build, "prefill"), build.memory["stages"]
    full = (len(prompt) - 1) // chunk
    if full:
        starts, saved = program.meta["chunk_starts"], {}
        ids = np.array(prompt[: full * chunk], np.int32)
        events = [(starts[s][c], _host_inputs(build, "prefill", stage, ids[c * chunk:(c + 1) * chunk],
                                              np.arange(c * chunk, (c + 1) * chunk, dtype=np.int32)))
                  for s, stage in enumerate(stages) for c in range(full)]
        events += [(starts[s][full], lambda m, stage=stage: saved.update(_states(stage, m)))
                   for s, stage in enumerate(stages)]
        execute_functional(program, machine, events, order)
        for (chip, addr), data in saved.items():
            machine.write(chip, addr, data)
    for position in range(full * chunk, len(prompt)):
        logits, _ = _decode(build, machine, prompt[position], position, order)
    return logits


def _states(stage: dict, machine: Machine) -> dict[tuple[int, int], np.ndarray]:
    """Every chip's copy of the stage's caches and states, by (chip, address)."""
    return {(chip, r["addr"]): machine.read(chip, r["addr"], r["bytes"])
            for chip in range(stage["first_chip"], stage["first_chip"] + stage["tp"])
            for r in stage["regions"] if r["kind"] == "state"}


def _decode(build: Build, machine: Machine, token: int, position: int, order: list[int] | None
            ) -> tuple[np.ndarray, int]:
    program = build.programs["decode"]
    events = [(0, _host_inputs(build, "decode", stage, np.array([token]), np.array([position])))
              for stage in build.memory["stages"]]
    execute_functional(program, machine, events, order)
    logits = _gather_output(build, "decode", "logits", machine)[0]
    stage, addr, _ = build.output("decode", "next_tokens")
    return logits, int(machine.read(stage["first_chip"], addr, 4).view("<i4")[0])
