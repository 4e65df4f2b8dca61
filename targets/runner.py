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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ir.errors import ConfigError
from ir.memory_map import StageMemory
from ir.numerics import decode
from targets.build_dir import Build, load_build
from targets.functional import Machine, activation_dtype, execute_functional
from targets.interpreter import Run, execute
from targets.reference_check import Reference
from targets.spec import SystemSpec

# A functional run holds every chip's SRAM in this machine's memory; it may take this share of it.
HOST_MEMORY_SHARE = 4


def run_build(path: str | Path | Build, tokens: int = 1, check_determinism: bool = False,
              prompt: list[int] | list[list[int]] | None = None, check_reference: bool = False,
              wires: bool = False) -> dict:
    """The figures `sramflow run --json` prints; with a `prompt` (token ids, or one list of them per
    sequence), the functional run's too, and with `check_reference` the reference's verdict; `wires`: the
    interpreter checks `link-busy` too."""
    if tokens < 1:
        raise ConfigError(f"--tokens must be a positive integer, got {tokens}")
    started = time.perf_counter()
    build = _loaded(path)
    prompts = None if prompt is None else _as_prompts(prompt)
    if prompts is not None:
        _check_group(build, prompts)
        for p in prompts:
            _check_functional(build, p, tokens)
    decode, prefill = build.programs["decode"], build.programs["prefill"]
    runs = {phase: execute(program, build.system, wires=wires) for phase, program in
            (("decode", decode), ("prefill", prefill))}
    figures = _figures(runs, tokens)
    if prompts is not None:
        out = run_prompts(build, prompts, tokens)
        figures["functional"] = _functional(prompts, out)
        figures["tokens"]["generated"] = figures["functional"]["tokens"]
        figures["instructions_executed"] += out["instructions"]
        if check_reference:
            figures["reference"] = Reference.load(build).check(prompts, out["tokens"], out["logits"])
    if check_determinism:
        figures["determinism"] = _determinism(runs, build.system, wires)
        figures["instructions_executed"] += sum(len(r.program) for r in runs.values())
        if prompts is not None:
            figures["instructions_executed"] += _functional_determinism(build, prompts, tokens, figures)
    figures["wall_s"] = round(time.perf_counter() - started, 3)
    return figures


def _as_prompts(prompt: list[int] | list[list[int]]) -> list[list[int]]:
    return [list(p) for p in prompt] if prompt and isinstance(prompt[0], list) else [list(prompt)]


def _loaded(path: str | Path | Build) -> Build:
    return path if isinstance(path, Build) else load_build(path)


def _figures(runs: dict[str, Run], tokens: int) -> dict:
    d, p = runs["decode"], runs["prefill"]
    clock = d.program.clock_hz
    hazards = [h.to_dict() | {"phase": phase} for phase, r in runs.items() for h in r.hazards]
    return {
        "hazards": hazards,
        # Every instruction the interpreter executes: each phase's Program once in timing mode (decode's
        # timing is the same every step), and what functional and determinism runs add.
        "instructions_executed": len(d.program) + len(p.program),
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


def _determinism(runs: dict[str, Run], system: SystemSpec, wires: bool = False) -> dict:
    """Execute each phase again in a shuffled host order of chips; cycle counts, timelines and
    hazards must be bit-identical. The digest covers both phases."""
    digests, failures = [], []
    for phase, first in runs.items():
        chips = list(range(first.program.chips))
        random.Random(phase).shuffle(chips)
        again = execute(first.program, system, order=chips, wires=wires)
        if again.digest() != first.digest():
            failures.append(f"{phase}: a second run in another chip order differs")
        digests.append(first.digest())
    return {"passed": not failures, "failures": failures,
            "digest": _combine(digests), "runs": 2, "orders": ["ascending", "shuffled"]}


def _combine(digests: list[str]) -> str:
    return hashlib.sha256("".join(digests).encode()).hexdigest()


# ---- functional mode: prompt in, greedy tokens out -------------------------------------------

def _functional(prompts: list[list[int]], out: dict) -> dict:
    """One prompt: its ids and tokens as flat lists (as before batches); several: a list per prompt."""
    one = len(prompts) == 1
    return {"prompt": prompts[0] if one else prompts, "tokens": out["tokens"][0] if one else out["tokens"],
            "prompts": prompts, "sequences": out["tokens"], "digest": _outputs_digest(out),
            "instructions_executed": out["instructions"]}


def _outputs_digest(out: dict) -> str:
    h = hashlib.sha256(np.asarray(out["tokens"], "<i8").tobytes())
    for logits in out["logits"] if isinstance(out["logits"], list) else [out["logits"]]:
        h.update(np.ascontiguousarray(logits, "<f4").tobytes())
    return h.hexdigest()


def _functional_determinism(build: Build, prompts: list[list[int]], tokens: int, figures: dict) -> int:
    """The functional run again with chips in a shuffled host order must give bit-identical
    tokens and logits; a run on other token ids must execute the same Programs (so the same
    cycle counts: no instruction's timing reads data) and differ only in its outputs. Returns
    the instructions both runs executed."""
    det, first = figures["determinism"], figures["functional"]["digest"]
    chips = list(range(figures["chips"]))
    random.Random("functional").shuffle(chips)
    shuffled = run_prompts(build, prompts, tokens, order=chips)
    if _outputs_digest(shuffled) != first:
        det["failures"].append("functional: a second run in another chip order gives other tokens or logits")
    top = max(max(p) for p in prompts) + 1
    other = [[(t * 7 + 3) % max(2, top) for t in p] for p in prompts]
    elsewhere = run_prompts(build, other, tokens)
    det.update(passed=not det["failures"], functional_digest=first, other_inputs=other[0] if len(other) == 1
               else other, digest=_combine([det["digest"], first]))
    return shuffled["instructions"] + elsewhere["instructions"]


def _inputs(phase: str, stage: StageMemory) -> dict[str, tuple[int, int]]:
    return {b.name: (b.addr, b.bytes) for b in stage.regions if b.kind == "input" and b.phase == phase}


def _output(build: Build, phase: str, name: str) -> tuple[StageMemory, int, int]:
    """(stage, address, bytes per chip) of a phase's output."""
    where = build.memory.outputs[phase][name]
    stage = build.memory.stages[where.stage]
    block = next(b for b in stage.regions if b.name == where.value and b.phase == phase)
    return stage, block.addr, block.bytes


def run_functional(path: str | Path | Build, prompt: list[int], tokens: int, order: list[int] | None = None
                   ) -> dict:
    """Prefill `prompt`, then decode greedily until `tokens` new tokens: every instruction of
    every chip executed on the build's SRAM image (a build of batch 1). Returns the tokens and
    every step's logits."""
    out = run_sequences(path, [prompt], tokens, order)
    return {"tokens": out["tokens"][0], "logits": out["logits"][0], "instructions": out["instructions"]}


def run_prompts(path: str | Path | Build, prompts: list[list[int]], tokens: int,
                order: list[int] | None = None) -> dict:
    """Several prompts, `batch` at a time (one per sequence of the build, each group from a fresh SRAM
    image): every prompt's tokens and logits, in the prompts' order."""
    build = _loaded(path)
    batch = _batch(build)
    _check_group(build, prompts)
    runs = [run_sequences(build, prompts[i: i + batch], tokens, order) for i in range(0, len(prompts), batch)]
    return {"tokens": [t for r in runs for t in r["tokens"]], "logits": [x for r in runs for x in r["logits"]],
            "instructions": sum(r["instructions"] for r in runs)}


def run_sequences(path: str | Path | Build, prompts: list[list[int]], tokens: int,
                  order: list[int] | None = None) -> dict:
    """One prompt per sequence of the build: prefill them together (each padded to the build's chunks,
    its positions from 0), then decode every sequence greedily in lock step, each at its own position.
    Returns per sequence its `tokens` new tokens and their logits [tokens, vocabulary]. `path` may be a
    loaded Build (its Programs replaced, say, to run an edited Program in-process)."""
    build = _loaded(path)
    if len(prompts) != _batch(build):
        raise ConfigError(f"--prompt: the build decodes {_batch(build)} sequences, got {len(prompts)} prompts; give "
                          "one per sequence, separated by ';' (e.g. \"1 2 3; 4 5 6 7\")")
    for p in prompts:
        _check_functional(build, p, tokens)
    _check_prefill(build, prompts)
    machine = Machine.blank(build.programs["decode"].chips, build.system.chip.usable_sram_bytes)
    machine.load(build.image())
    seqs = _prefill(build, machine, prompts, order)
    while not all(len(s.tokens) >= tokens for s in seqs):
        _decode(build, machine, seqs, tokens, order)
    return {"tokens": [s.tokens[:tokens] for s in seqs], "logits": [np.stack(s.logits[:tokens]) for s in seqs],
            "instructions": machine.executed}


def _batch(build: Build) -> int:
    return build.memory.batch


def _chunk_rows(build: Build) -> int:
    """Prompt tokens of one sequence in one prefill chunk."""
    return _rows(build, "prefill") // _batch(build)


def _check_group(build: Build, prompts: list[list[int]]) -> None:
    """One prompt per sequence of the build's batch (run_prompts takes a multiple of it)."""
    batch = _batch(build)
    if len(prompts) % batch:
        raise ConfigError(f"--prompt: {len(prompts)} prompts for a build of batch {batch}; give one per sequence "
                          f"(a multiple of {batch}, separated by ';')")


def _check_prefill(build: Build, prompts: list[list[int]]) -> None:
    chunk, chunks = _chunk_rows(build), build.programs["prefill"].meta["chunks"]
    longest = max(len(p) for p in prompts)
    if longest > chunk * chunks:
        raise ConfigError(f"the build's prefill takes at most {chunk * chunks} prompt tokens, got {longest} "
                          "(compile with a larger --prompt)")


def _check_functional(build: Build, prompt: list[int], tokens: int) -> None:
    """Everything a functional run needs, refused in one line before any work."""
    _check_machine(build)
    if tokens < 1 or not prompt:
        raise ConfigError("a functional run needs a prompt and at least one token to generate")
    vocab = build.memory.vocab_size
    bad = next((t for t in prompt if not 0 <= t < vocab), None) if vocab else None
    if bad is not None:
        raise ConfigError(f"--prompt: token id {bad} is outside the vocabulary ({vocab:,} tokens: ids 0 to "
                          f"{vocab - 1:,})")
    if len(prompt) + tokens - 1 > build.context:
        raise ConfigError(f"prompt ({len(prompt)}) and tokens ({tokens}) need {len(prompt) + tokens - 1} cache "
                          f"positions; the build holds {build.context} (compile with a larger --context)")


def _check_machine(build: Build) -> None:
    system = build.system
    if build.programs["decode"].dialect == "roles":
        raise ConfigError(f"{build.path}: a wafer (roles-dialect) build has no SRAM image yet; `sramflow run` "
                          "without --functional checks its timing")
    if system.chip.memory_kind != "sram":
        raise ConfigError(f"{build.path}: {system.name} keeps weights in {system.chip.memory_kind.upper()}; "
                          "functional runs execute SRAM chips only (`sramflow run` without --functional checks "
                          "timing)")
    if not build.has_image:
        raise ConfigError(f"{build.path}: no SRAM image (sram.img); compile with --weights random or a checkpoint")
    if not build.memory.outputs or build.memory.vocab_size is None:
        raise ConfigError(f"{build.path}: memory.json has no outputs or vocab_size (a graph IR file's build): "
                          "functional runs need a model's")
    chips = build.programs["decode"].chips
    need, have = chips * system.chip.usable_sram_bytes, host_memory_bytes()
    if need > have // HOST_MEMORY_SHARE:
        raise ConfigError(f"{build.path}: a functional run holds every chip's SRAM ({chips:,} chips x "
                          f"{system.chip.usable_sram_bytes:,} B = {need / 1e9:,.1f} GB), more than 1/"
                          f"{HOST_MEMORY_SHARE} of this machine's {have / 1e9:,.1f} GB of memory")


def host_memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _host_inputs(build: Build, phase: str, stage: StageMemory, ids: np.ndarray, pos: np.ndarray) -> Callable:
    """The host writing this chunk's token ids and positions into every chip of a stage."""
    regions = _inputs(phase, stage)

    def write(machine: Machine) -> None:
        for chip in range(stage.first_chip, stage.first_chip + stage.tp):
            for name, values in (("tokens", ids), ("pos", pos)):
                addr, nbytes = regions[name]
                machine.write(chip, addr, values.astype("<i4").view(np.uint8)[:nbytes])
    return write


def _gather_output(build: Build, phase: str, name: str, machine: Machine) -> np.ndarray:
    """An output read off the last stage: every rank's vocabulary shard side by side, the last one's
    padding past the vocabulary dropped."""
    stage, addr, nbytes = _output(build, phase, name)
    where = build.memory.outputs[phase][name]
    parts = [machine.read(stage.first_chip + r, addr, nbytes) for r in range(where.shards)]
    act = activation_dtype(build.programs[phase])
    return np.concatenate([decode(p, act).reshape(where.rows, -1) for p in parts], axis=1)[:, : where.cols]


def _rows(build: Build, phase: str) -> int:
    return _inputs(phase, build.memory.stages[0])["tokens"][1] // 4


@dataclass
class _Sequence:
    """One sequence's prompt, where decode picks it up, and what it has generated."""

    prompt: list[int]
    position: int  # the next position a decode step feeds
    tokens: list[int]
    logits: list[np.ndarray]

    def next_input(self) -> int:
        return self.prompt[self.position] if self.position < len(self.prompt) else self.tokens[-1]


def _prefill(build: Build, machine: Machine, prompts: list[list[int]], order: list[int] | None,
             hidden: dict[int, np.ndarray] | None = None) -> list[_Sequence]:
    """Run the prompts, each padded to the build's chunks, through prefill (rows sequence by sequence
    in every chunk). A sequence whose prompt ends in a chunk gets its first token from its last row;
    a Mamba state would run on through padding rows (and a ring of the newest cache positions take
    them for the newest), so such a sequence keeps only its prompt's whole chunks (each stage's copy
    of its states saved where its first partial chunk starts and restored after the Program) and
    feeds the rest through decode steps. `hidden`, when given, receives
    every chunk's `hidden` output rows (a speculative build proposing with an MTP module)."""
    program, stages = build.programs["prefill"], build.memory.stages
    chunk, chunks, starts = _chunk_rows(build), program.meta["chunks"], program.meta["chunk_starts"]
    ids = np.zeros((len(prompts), chunk * chunks), np.int32)
    for b, p in enumerate(prompts):
        ids[b, : len(p)] = p
    # Padding rows past the cache's last position write there (a position no step reads before
    # decode writes it again), never past the cache into the next buffer.
    pos = np.broadcast_to(np.minimum(np.arange(chunk * chunks, dtype=np.int32), build.context - 1), ids.shape)
    row = build.memory.outputs["prefill"]["logits"].row
    whole = [_whole(len(p), chunk, row, build.whole_chunks) for p in prompts]
    events = [(starts[s][c], _host_inputs(build, "prefill", stage, ids[:, c * chunk:(c + 1) * chunk].reshape(-1),
                                          pos[:, c * chunk:(c + 1) * chunk].reshape(-1)))
              for s, stage in enumerate(stages) for c in range(chunks)]
    # The head's chips look up every chunk's rows before their first chunk (a tied table held once): the
    # host's ids and positions for a chunk are there when its lookup starts.
    embedding = program.meta.get("embedding")
    if embedding is not None:
        stage = stages[embedding["stage"]]
        events += [(at, _host_inputs(build, "prefill", stage, ids[:, c * chunk:(c + 1) * chunk].reshape(-1),
                                     pos[:, c * chunk:(c + 1) * chunk].reshape(-1)))
                   for c, at in enumerate(embedding["starts"])]
    seen: dict[int, np.ndarray] = {}
    for c in sorted({w - 1 for w in whole if w > 0}):
        at = starts[-1][c + 1] if c + 1 < chunks else program.makespan + 1
        events.append((at, lambda m, c=c: seen.setdefault(c, _gather_output(build, "prefill", "logits", m))))
    for c in range(chunks if hidden is not None else 0):
        at = starts[-1][c + 1] if c + 1 < chunks else program.makespan + 1
        events.append((at, lambda m, c=c: hidden.setdefault(c, _gather_output(build, "prefill", "hidden", m))))
    saved: dict[tuple[int, int], np.ndarray] = {}
    for b, w in enumerate(whole):
        if build.whole_chunks and w < chunks:
            events += [(starts[s][w], lambda m, stage=stage, b=b: saved.update(_states(stage, m, b, len(prompts))))
                       for s, stage in enumerate(stages)]
    execute_functional(program, machine, events, order)
    for (chip, addr), data in saved.items():
        machine.write(chip, addr, data)
    # Logits of every row (row None) hold sequence b's chunk from row b x chunk.
    return [_after_prefill(p, w * chunk, seen.get(w - 1), b if row is not None else b * chunk + (len(p) - 1) % chunk,
                           row is None or (len(p) - 1) % chunk == row)
            for b, (p, w) in enumerate(zip(prompts, whole, strict=True))]


def _whole(length: int, chunk: int, row: int | None, whole_chunks: bool) -> int:
    """The chunks prefill takes of a prompt: every chunk it reaches into, or (a build whose states would
    take padding rows as their own) its whole chunks, one fewer if prefill's logits then miss its last
    position (their `row` is not a chunk's last), so decode steps run the rest."""
    if not whole_chunks:
        return -(-length // chunk)
    return length // chunk - (length % chunk == 0 and row is not None and row != chunk - 1)


def _after_prefill(prompt: list[int], done: int, logits: np.ndarray | None, index: int, last: bool) -> _Sequence:
    """A sequence after prefill. Prefill's logits are one row of each sequence's chunk (memory.json's
    `row`: where the compiled prompt ends; row `index` of the logits), so a prompt that ends on that row
    (`last`) takes its first token from them; one that ends elsewhere, its caches already written
    through its last position, gets it from a decode step at that position; a prompt prefill did not
    take whole (`done` tokens) resumes there."""
    if done < len(prompt):
        return _Sequence(prompt, done, [], [])
    if not last:
        return _Sequence(prompt, len(prompt) - 1, [], [])
    return _Sequence(prompt, len(prompt), [int(np.argmax(logits[index]))], [logits[index]])


def _finish_prompts(build: Build, machine: Machine, seqs: list, order: list[int] | None) -> None:
    """Prefill may leave a prompt's last position (one that ends inside a chunk), or a recurrent model's
    last partial chunk, to decode steps: run them on the build until every sequence has its first
    token. A sequence already done sits those steps out: its caches and states are put back after each
    (a step feeds it again)."""
    stages = build.memory.stages
    while not all(s.tokens for s in seqs):
        done = [b for b, s in enumerate(seqs) if s.tokens]
        kept = {k: v for b in done for stage in stages for k, v in _states(stage, machine, b, len(seqs)).items()}
        _decode(build, machine, seqs, 1, order)
        for (chip, addr), data in kept.items():
            machine.write(chip, addr, data)


def _states(stage: StageMemory, machine: Machine, seq: int, batch: int) -> dict[tuple[int, int], np.ndarray]:
    """Sequence `seq`'s slice of every chip's copy of the stage's caches and states, by (chip, address):
    states are laid out sequence by sequence ([batch, ...])."""
    out = {}
    for chip in range(stage.first_chip, stage.first_chip + stage.tp):
        for b in stage.blocks("both", ("state",)):
            per = b.bytes // batch
            out[chip, b.addr + seq * per] = machine.read(chip, b.addr + seq * per, per)
    return out


def _decode(build: Build, machine: Machine, seqs: list[_Sequence], tokens: int, order: list[int] | None) -> None:
    """One decode step for every sequence at its own position; a sequence done with its tokens is fed
    its last token again at its last position (its results are not read)."""
    program = build.programs["decode"]
    active = [len(s.tokens) < tokens for s in seqs]
    ids = np.array([s.next_input() if a else s.tokens[-1] for s, a in zip(seqs, active, strict=True)], np.int32)
    pos = np.array([s.position if a else s.position - 1 for s, a in zip(seqs, active, strict=True)], np.int32)
    events = [(0, _host_inputs(build, "decode", stage, ids, pos)) for stage in build.memory.stages]
    execute_functional(program, machine, events, order)
    logits = _gather_output(build, "decode", "logits", machine)
    stage, addr, _ = _output(build, "decode", "next_tokens")
    chosen = machine.read(stage.first_chip, addr, 4 * len(seqs)).view("<i4")
    for b, s in enumerate(seqs):
        if active[b]:
            if s.position >= len(s.prompt) - 1:
                s.logits.append(logits[b])
                s.tokens.append(int(chosen[b]))
            s.position += 1
