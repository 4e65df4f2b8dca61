"""`sramflow run`: execute a build directory's Programs in the interpreter and report.

Reads only the build's files, each verified against its manifest (targets.build_dir), and
never the compiler. Decode runs once per generated token (its cycle count does not
depend on the token, which --check-determinism verifies), so `tokens` tokens take
TTFT + (tokens - 1) decode steps.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ir.errors import ConfigError
from ir.numerics import decode
from targets.build_dir import Build, load_build
from targets.functional import Machine, activation_dtype, execute_functional
from targets.interpreter import Run, execute
from targets.spec import SystemSpec, WaferSpec

# A functional run holds every chip's SRAM in this machine's memory; it may take this share of it.
HOST_MEMORY_SHARE = 4


def run_build(path: str | Path | Build, tokens: int = 1, check_determinism: bool = False,
              prompt: list[int] | None = None) -> dict:
    """The figures `sramflow run --json` prints; with a `prompt`, the functional run's too."""
    if tokens < 1:
        raise ConfigError(f"--tokens must be a positive integer, got {tokens}")
    started = time.perf_counter()
    build = _loaded(path)
    if prompt is not None:
        _check_functional(build, prompt, tokens)
    decode, prefill = build.programs["decode"], build.programs["prefill"]
    runs = {"decode": execute(decode, build.system), "prefill": execute(prefill, build.system)}
    figures = _figures(runs, tokens)
    if prompt is not None:
        figures["functional"] = _functional(build, prompt, tokens)
        figures["tokens"]["generated"] = figures["functional"]["tokens"]
    if check_determinism:
        figures["determinism"] = _determinism(runs, build.system)
        if prompt is not None:
            _functional_determinism(build, prompt, tokens, figures)
    figures["wall_s"] = round(time.perf_counter() - started, 3)
    return figures


def _loaded(path: str | Path | Build) -> Build:
    return path if isinstance(path, Build) else load_build(path)


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

def _functional(build: Build, prompt: list[int], tokens: int) -> dict:
    out = run_functional(build, prompt, tokens)
    return {"prompt": prompt, "tokens": out["tokens"], "digest": _outputs_digest(out),
            "instructions_executed": out["instructions"]}


def _outputs_digest(out: dict) -> str:
    h = hashlib.sha256(np.asarray(out["tokens"], "<i8").tobytes())
    h.update(np.ascontiguousarray(out["logits"], "<f4").tobytes())
    return h.hexdigest()


def _functional_determinism(build: Build, prompt: list[int], tokens: int, figures: dict) -> None:
    """The functional run again with chips in a shuffled host order must give bit-identical
    tokens and logits; a run on other token ids must execute the same Programs (so the same
    cycle counts: no instruction's timing reads data) and differ only in its outputs."""
    det, first = figures["determinism"], figures["functional"]["digest"]
    chips = list(range(figures["chips"]))
    random.Random("functional").shuffle(chips)
    again = _outputs_digest(run_functional(build, prompt, tokens, order=chips))
    if again != first:
        det["failures"].append("functional: a second run in another chip order gives other tokens or logits")
    other = [(t * 7 + 3) % max(2, max(prompt) + 1) for t in prompt]
    run_functional(build, other, tokens)
    det.update(passed=not det["failures"], functional_digest=first, other_inputs=other,
               digest=_combine([det["digest"], first]))

def _inputs(phase: str, stage: dict) -> dict[str, tuple[int, int]]:
    return {r["name"]: (r["addr"], r["bytes"]) for r in stage["regions"]
            if r["kind"] == "input" and r["phase"] == phase}


def _output(build: Build, phase: str, name: str) -> tuple[dict, int, int]:
    """(stage, address, bytes per chip) of a phase's output."""
    where = build.memory["outputs"][phase][name]
    stage = build.memory["stages"][where["stage"]]
    region = next(r for r in stage["regions"] if r["name"] == where["value"] and r["phase"] == phase)
    return stage, region["addr"], region["bytes"]


def run_functional(path: str | Path | Build, prompt: list[int], tokens: int, order: list[int] | None = None
                   ) -> dict:
    """Prefill `prompt`, then decode greedily until `tokens` new tokens: every instruction of
    every chip executed on the build's SRAM image. Returns the tokens and every step's logits."""
    build = _loaded(path)
    _check_functional(build, prompt, tokens)
    machine = Machine.blank(build.programs["decode"].chips, build.system.chip.usable_sram_bytes)
    machine.load(build.image())
    logits = [_prefill(build, machine, prompt, order)]
    new = [int(np.argmax(logits[0]))]
    for step in range(tokens - 1):
        step_logits, token = _decode(build, machine, new[-1], len(prompt) + step, order)
        logits.append(step_logits)
        new.append(token)
    return {"tokens": new, "logits": np.stack(logits), "instructions": machine.executed}


def _check_functional(build: Build, prompt: list[int], tokens: int) -> None:
    """Everything a functional run needs, refused in one line before any work."""
    _check_machine(build)
    if tokens < 1 or not prompt:
        raise ConfigError("a functional run needs a prompt and at least one token to generate")
    vocab = build.memory.get("vocab_size")
    bad = next((t for t in prompt if not 0 <= t < vocab), None) if vocab else None
    if bad is not None:
        raise ConfigError(f"--prompt: token id {bad} is outside the vocabulary ({vocab:,} tokens: ids 0 to "
                          f"{vocab - 1:,})")
    if len(prompt) + tokens - 1 > build.context:
        raise ConfigError(f"prompt ({len(prompt)}) and tokens ({tokens}) need {len(prompt) + tokens - 1} cache "
                          f"positions; the build holds {build.context} (compile with a larger --context)")


def _check_machine(build: Build) -> None:
    system = build.system
    if isinstance(system, WaferSpec) or build.memory.get("wafer"):
        raise ConfigError(f"{build.path}: a wafer build has no SRAM image yet; `sramflow run` without --functional "
                          "checks its timing")
    if system.chip.memory_kind != "sram":
        raise ConfigError(f"{build.path}: {system.name} keeps weights in {system.chip.memory_kind.upper()}; "
                          "functional runs execute SRAM chips only (`sramflow run` without --functional checks "
                          "timing)")
    if not build.has_image:
        raise ConfigError(f"{build.path}: no SRAM image (sram.img); compile with --weights random or a checkpoint")
    if "outputs" not in build.memory or "vocab_size" not in build.memory:
        raise ConfigError(f"{build.path}: memory.json has no outputs or vocab_size; recompile it")
    chips = build.programs["decode"].chips
    need, have = chips * system.chip.usable_sram_bytes, host_memory_bytes()
    if need > have // HOST_MEMORY_SHARE:
        raise ConfigError(f"{build.path}: a functional run holds every chip's SRAM ({chips:,} chips x "
                          f"{system.chip.usable_sram_bytes:,} B = {need / 1e9:,.1f} GB), more than 1/"
                          f"{HOST_MEMORY_SHARE} of this machine's {have / 1e9:,.1f} GB of memory")


def host_memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _host_inputs(build: Build, phase: str, stage: dict, ids: np.ndarray, pos: np.ndarray) -> Callable:
    """The host writing this chunk's token ids and positions into every chip of a stage."""
    regions = _inputs(phase, stage)

    def write(machine: Machine) -> None:
        for chip in range(stage["first_chip"], stage["first_chip"] + stage["tp"]):
            for name, values in (("tokens", ids), ("pos", pos)):
                addr, nbytes = regions[name]
                machine.write(chip, addr, values.astype("<i4").view(np.uint8)[:nbytes])
    return write


def _gather_output(build: Build, phase: str, name: str, machine: Machine) -> np.ndarray:
    """An output read off the last stage: every rank's vocabulary shard side by side."""
    stage, addr, nbytes = _output(build, phase, name)
    shards = build.memory["outputs"][phase][name]["shards"]
    parts = [machine.read(stage["first_chip"] + r, addr, nbytes) for r in range(shards)]
    act = activation_dtype(build.programs[phase])
    return np.concatenate([decode(p, act).reshape(-1, nbytes // 2 // _rows(build, phase)) for p in parts], axis=1)


def _rows(build: Build, phase: str) -> int:
    stage = build.memory["stages"][0]
    return _inputs(phase, stage)["tokens"][1] // 4


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
    stage, addr, _ = _output(build, "decode", "next_tokens")
    return logits, int(machine.read(stage["first_chip"], addr, 4).view("<i4")[0])
