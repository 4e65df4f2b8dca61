"""`sramflow run` on a speculative build: the proposer's steps, then the target's verify step, per step.

Reads only the build's files; never the compiler. K comes from the verify Program's own rows (K + 1 a
sequence); a step is K proposer decode steps, then the verify step with the proposer's one more step
beside it (its cache row for the last draft), and the token ids' hand-off each way over one global
link of the target (its latency plus the bytes over its bandwidth). No instruction's timing reads
data, so every step takes the same cycles whatever is accepted; functional mode runs real greedy
speculative decoding on both SRAM images and reports the tokens each step emitted and the
acceptance rate measured; `--check-reference` holds every emitted token's logits (its verify row) to
the graph IR reference's decode step, as for a plain build.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ir.errors import ConfigError
from ir.numerics import encode
from ir.program import Program
from targets.build_dir import PROPOSERS, Build, load_build
from targets.functional import Machine, activation_dtype, execute_functional
from targets.interpreter import execute
from targets.reference_check import Reference
from targets.runner import (
    _as_prompts,
    _batch,
    _check_functional,
    _check_group,
    _check_prefill,
    _determinism,
    _figures,
    _finish_prompts,
    _gather_output,
    _host_inputs,
    _inputs,
    _output,
    _outputs_digest,
    _prefill,
    _rows,
)
from targets.tier_checks import tier_side

HANDOFF_IDS = 16  # token ids each hand-off carries (K + 1 at most: the compiler's MAX_SPECULATE + 1)
SHARED = "target's stages"  # plan.json's placement of a draft on the target's chips (above their layout)


def is_speculative(path: str | Path) -> bool:
    """Whether `path`'s manifest records a proposer's sub-build (unreadable ones are left to the reader)."""
    try:
        builds = json.loads((Path(path) / "manifest.json").read_text()).get("builds") or {}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False
    return isinstance(builds, dict) and any(k in builds for k in PROPOSERS)


def steps_of(build: Build) -> int:
    """K: the drafts a verify step checks, from the verify Program's rows per sequence."""
    return _rows(build, "verify") // _batch(build) - 1


def run_speculative_build(path: str | Path, tokens: int = 1, check_determinism: bool = False,
                          prompt: list[int] | list[list[int]] | None = None, check_reference: bool = False) -> dict:
    """`run --json`'s figures for a speculative build: the plain phases', the verify step's and the
    proposer's, the step they make; with a prompt, the functional run's tokens and measured acceptance."""
    if tokens < 1:
        raise ConfigError(f"--tokens must be a positive integer, got {tokens}")
    started = time.perf_counter()
    build = load_build(path)
    prompts = None if prompt is None else _as_prompts(prompt)
    if prompts is not None:
        _check_speculative_functional(build, prompts, tokens)
    runs = {"decode": execute(build.programs["decode"], build.system),
            "prefill": execute(build.programs["prefill"], build.system)}
    figures = _figures(runs, tokens)
    extra = {"verify": execute(build.programs["verify"], build.system),
             "proposer": execute(build.proposer.programs["decode"], build.proposer.system)}
    figures["hazards"] += [h.to_dict() | {"phase": phase} for phase, r in extra.items() for h in r.hazards]
    if shared(build):
        figures["hazards"] += shared_sram_hazards(build)
    figures["speculative"] = step_figures(build, extra["verify"].makespan, extra["proposer"].makespan)
    if prompts is not None:
        out = run_speculative(build, prompts, tokens)
        figures["functional"] = _functional(prompts, out, figures["speculative"])
        figures["tokens"]["generated"] = figures["functional"]["tokens"]
        if check_reference:  # each emitted token's logits (its verify row) against the reference's decode step
            figures["reference"] = Reference.load(build).check(prompts, out["tokens"], out["logits"])
    if check_determinism:
        figures["determinism"] = _determinism(runs | {"verify": extra["verify"]}, build.system)
        again = _determinism({"proposer": extra["proposer"]}, build.proposer.system)
        figures["determinism"]["failures"] += again["failures"]
        figures["determinism"]["passed"] = not figures["determinism"]["failures"]
        if prompts is not None:
            second = run_speculative(build, prompts, tokens, order=list(range(build.programs["decode"].chips))[::-1])
            if _outputs_digest(second) != figures["functional"]["digest"]:
                figures["determinism"]["failures"].append("functional: another chip order gives other tokens")
                figures["determinism"]["passed"] = False
    figures["wall_s"] = round(time.perf_counter() - started, 3)
    return figures


def step_figures(build: Build, verify_cycles: int, proposer_cycles: int) -> dict:
    """One step's cycles, derived from the Programs and the target: K proposer steps, the verify step
    (or the proposer's extra step, if longer) and two hand-offs; the plan's expected tokens per step
    at its acceptance rate, and the tokens/s they give."""
    k, system = steps_of(build), build.system
    clock = build.programs["decode"].clock_hz
    link = system.global_link
    handoff = round(2 * (link.latency_s + 4 * HANDOFF_IDS / link.bw_bytes_per_s) * clock)
    proposer_cycles = round(proposer_cycles * clock / build.proposer.programs["decode"].clock_hz)
    if build.proposer_kind == "mtp":  # the module proposes from the verify step's hidden states: after it
        step = verify_cycles + proposer_cycles + handoff
    elif shared(build):  # one set of chips: K + 1 draft steps and the verify step in turn
        step = (k + 1) * proposer_cycles + verify_cycles + handoff
    else:  # K draft steps, then the verify step beside the draft's extra one
        step = k * proposer_cycles + max(verify_cycles, proposer_cycles) + handoff
    acceptance = build.plan.get("speculative", {}).get("acceptance")
    expected = None if acceptance is None else (k + 1 if acceptance == 1 else
                                                (1 - acceptance ** (k + 1)) / (1 - acceptance))
    return {"steps": k, "proposer": build.proposer_kind, "placement": SHARED if shared(build) else "own chips",
            "proposer_chips": build.proposer.programs["decode"].chips,
            "verify_cycles": verify_cycles, "proposer_cycles": proposer_cycles, "handoff_cycles": handoff,
            "cycles_per_step": step, "step_us": round(step / clock * 1e6, 3), "acceptance": acceptance,
            "expected_tokens_per_step": None if expected is None else round(expected, 4),
            "tokens_per_s": None if expected is None else round(expected * clock / step, 1)}


def shared(build: Build) -> bool:
    """Whether the plan put the draft on the target's chips (checked by `shared_sram_hazards`, never
    trusted: its Programs must stay off every byte the target's use)."""
    return build.plan.get("speculative", {}).get("placement") == SHARED


def shared_sram_hazards(build: Build) -> list[dict]:
    """A draft on the target's chips: its chips among the target's, and on each the SRAM its Programs
    and memory map touch above all the target's (its Programs, memory map and image)."""
    draft, chips = build.proposer, build.programs["decode"].chips
    if draft.programs["decode"].chips > chips:
        return [_shared_hazard(chips, f"the draft takes {draft.programs['decode'].chips} chips, the target has "
                                      f"{chips}")]
    target, below = sram_extent(build), sram_extent(draft)
    for chip, data in build.image().items() if build.has_image else ():
        target[chip] = (0, max(target.get(chip, (0, 0))[1], len(data)))
    return [_shared_hazard(c, f"the draft's SRAM [{lo:#x}, {hi:#x}) meets the target's, which ends at "
                              f"{target[c][1]:#x}")
            for c, (lo, hi) in sorted(below.items()) if c in target and lo < target[c][1]]


def sram_extent(build: Build) -> dict[int, tuple[int, int]]:
    """Per chip, the lowest and highest SRAM address any Program of `build` reads or writes, or its
    memory map lays out (tier addresses aside)."""
    spans = [program_extent(p) for p in build.programs.values()]
    spans.append({chip: (r.addr, r.addr + r.bytes) for stage in build.memory.stages for r in stage.regions
                  if r.kind != "tier" for chip in range(stage.first_chip, stage.first_chip + stage.tp)})
    return _union(spans)


def program_extent(program: Program) -> dict[int, tuple[int, int]]:
    """Per chip, the lowest and highest SRAM address the Program's instructions name (tier addresses aside)."""
    c = program.expand(names=("chip", "op", "src", "dst", "src_bytes", "dst_bytes"), ordered=False)
    spans = []
    for addr, size in (("src", "src_bytes"), ("dst", "dst_bytes")):
        used = (c[addr] >= 0) & (c[size] > 0) & ~tier_side(c, addr)
        chips, start, end = c["chip"][used], c[addr][used], c[addr][used] + c[size][used]
        spans += [{chip: (int(start[chips == chip].min()), int(end[chips == chip].max()))}
                  for chip in np.unique(chips).tolist()]
    return _union(spans)


def _union(spans: list[dict[int, tuple[int, int]]]) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for span in spans:
        for chip, (lo, hi) in span.items():
            was = out.get(chip, (lo, hi))
            out[chip] = (min(was[0], lo), max(was[1], hi))
    return out


def _shared_hazard(chip: int, detail: str) -> dict:
    return {"chip": chip, "unit": "mem", "index": -1, "cycle": 0, "kind": "shared-sram", "detail": detail,
            "phase": "draft"}


def _check_speculative_functional(build: Build, prompts: list[list[int]], tokens: int) -> None:
    if build.proposer_kind == "mtp" and len(_proposal_outputs(build.proposer)) != steps_of(build):
        raise ConfigError(f"{build.path}: the verify step checks {steps_of(build)} proposals, the MTP module's "
                          f"build proposes {len(_proposal_outputs(build.proposer))} a row")
    _check_group(build, prompts)
    for p in prompts:
        _check_functional(build, p, tokens + steps_of(build))
        _check_functional(build.proposer, p, tokens + steps_of(build))


@dataclass
class _Seq:
    prompt: list[int]
    position: int  # where the current token (tokens[-1]) goes
    tokens: list[int]
    logits: list[np.ndarray]


def run_speculative(build: Build, prompts: list[list[int]], tokens: int, order: list[int] | None = None) -> dict:
    """Greedy speculative decoding, every instruction executed on data: the prompts through both
    builds' prefill, then steps of K draft decode steps and one verify step until each sequence has
    `tokens` tokens. Per sequence its tokens and their logits (the verify step's rows), and per step
    the drafts each sequence had accepted."""
    if build.proposer is None:
        raise ConfigError(f"{build.path}: not a speculative build (no verify.prog and proposer); run it plainly")
    out = {"tokens": [], "logits": [], "accepted": [], "instructions": 0, "instructions_per_step": []}
    batch = _batch(build)
    run = _run_mtp_group if build.proposer_kind == "mtp" else _run_group
    for i in range(0, len(prompts), batch):
        group = run(build, prompts[i: i + batch], tokens, order)
        for key in ("tokens", "logits", "accepted"):
            out[key] += group[key]
        out["instructions"] += group["instructions"]
        out["instructions_per_step"] += group["instructions_per_step"]
    return out


def _run_group(build: Build, prompts: list[list[int]], tokens: int, order: list[int] | None) -> dict:
    draft = build.proposer
    _check_prefill(build, prompts)
    _check_prefill(draft, prompts)
    target_m = _machine(build)
    draft_m = _shared_machine(target_m, draft) if shared(build) else _machine(draft)
    first = _prefill(build, target_m, prompts, order)
    _finish_prompts(build, target_m, first, order)
    seqs = [_Seq(p, s.position, s.tokens, s.logits) for p, s in zip(prompts, first, strict=True)]
    _prefill(draft, draft_m, prompts, order)
    k, context = steps_of(build), build.context
    accepted: list[list[int]] = [[] for _ in seqs]
    per_step = []
    machines = list({id(m): m for m in (target_m, draft_m)}.values())  # one, when the draft shares the chips
    while not all(len(s.tokens) >= tokens for s in seqs):
        before = sum(m.executed for m in machines)
        active = [len(s.tokens) < tokens for s in seqs]
        starts = np.array([min(s.position, context - k - 1) for s in seqs], np.int32)
        rows = [[s.tokens[-1]] for s in seqs]
        for j in range(k + 1):  # the last step writes the last draft's cache row
            ids = _decode_step(draft, draft_m, np.array([r[-1] for r in rows], np.int32), starts + j, order)
            if j < k:
                for r, t in zip(rows, ids.tolist(), strict=True):
                    r.append(int(t))
        ids = np.array(rows, np.int32).reshape(-1)
        pos = (starts[:, None] + np.arange(k + 1, dtype=np.int32)).reshape(-1)
        chosen, counts, logits = _verify_step(build, target_m, ids, pos, order)
        _emit(seqs, active, chosen, counts, logits, accepted)
        per_step.append(sum(m.executed for m in machines) - before)
    return _result(seqs, tokens, accepted, sum(m.executed for m in machines), per_step)


def _machine(build: Build) -> Machine:
    machine = Machine.blank(build.programs["decode"].chips, build.system.chip.usable_sram_bytes)
    machine.load(build.image())
    return machine


def _shared_machine(target: Machine, draft: Build) -> Machine:
    """The target's machine with the draft's resident bytes written above the target's: each chip's
    image from the lowest address the draft's Programs or memory map use (below it the image holds
    only zeros: checked, since those bytes are the target's)."""
    extent = sram_extent(draft)
    for chip, data in draft.image().items():
        lo = extent.get(chip, (len(data), 0))[0]
        if data[:lo].any():
            raise ConfigError(f"{draft.path}: the draft's image holds bytes below its lowest address {lo:#x} on chip "
                              f"{chip}, where the target's are")
        target.write(chip, lo, data[lo:])
    return target


def _decode_step(build: Build, machine: Machine, ids: np.ndarray, pos: np.ndarray, order: list[int] | None
                 ) -> np.ndarray:
    """One decode step of every sequence; its greedy next tokens."""
    events = [(0, _host_inputs(build, "decode", stage, ids, pos)) for stage in build.memory.stages]
    execute_functional(build.programs["decode"], machine, events, order)
    stage, addr, _ = _output(build, "decode", "next_tokens")
    return machine.read(stage.first_chip, addr, 4 * len(ids)).view("<i4").copy()


def _verify_step(build: Build, machine: Machine, ids: np.ndarray, pos: np.ndarray, order: list[int] | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The verify step: every row's target token [B, K+1], the drafts accepted [B], the logits [B, K+1, V]
    (the hidden states, for an MTP proposer, are left in the machine for `_hidden`)."""
    events = [(0, _host_inputs(build, "verify", stage, ids, pos)) for stage in build.memory.stages]
    execute_functional(build.programs["verify"], machine, events, order)
    batch = _batch(build)
    stage, addr, _ = _output(build, "verify", "next_tokens")
    chosen = machine.read(stage.first_chip, addr, 4 * len(ids)).view("<i4").reshape(batch, -1)
    stage, addr, _ = _output(build, "verify", "accepted")
    counts = machine.read(stage.first_chip, addr, 4 * batch).view("<i4")
    logits = _gather_output(build, "verify", "logits", machine)
    return chosen, counts, logits.reshape(batch, chosen.shape[1], -1)


def _functional(prompts: list[list[int]], out: dict, step: dict) -> dict:
    one = len(prompts) == 1
    drafts = sum(len(a) for a in out["accepted"]) * step["steps"]
    taken = sum(sum(a) for a in out["accepted"])
    steps = max(len(a) for a in out["accepted"])
    emitted = sum(len(a) + sum(a) for a in out["accepted"])
    return {"prompt": prompts[0] if one else prompts, "tokens": out["tokens"][0] if one else out["tokens"],
            "prompts": prompts, "sequences": out["tokens"], "digest": _outputs_digest(out),
            "accepted": out["accepted"], "steps": steps,
            "acceptance": round(taken / drafts, 4) if drafts else None,
            "tokens_per_step": round(emitted / max(1, sum(len(a) for a in out["accepted"])), 4),
            "cycles_per_step": step["cycles_per_step"],
            "tokens_per_s": round(emitted / max(1, sum(len(a) for a in out["accepted"]))
                                  * 1e6 / step["step_us"], 1),
            "instructions_per_step": sorted(set(out["instructions_per_step"])),
            "instructions_executed": out["instructions"]}


# ---- an MTP proposer: it reads the target's hidden states ----------------------------------------

def _run_mtp_group(build: Build, prompts: list[list[int]], tokens: int, order: list[int] | None) -> dict:
    """Greedy speculative decoding with the model's MTP module of depth K: row i of the module takes
    token i + 1 and the target's hidden state at i, and its K depths chained predict tokens i + 2 ..
    i + K + 1. After prefill the module runs over the prompt's rows in windows of its Program's K + 1
    rows; each step the target verifies [current token, K proposals], then the module runs over the
    verify rows (the target's tokens and hidden states) and the row of the last accepted position gives
    the next K proposals."""
    mtp, k, context = build.proposer, steps_of(build), build.context
    _check_prefill(build, prompts)
    target_m, mtp_m = _machine(build), _machine(mtp)
    chunks: dict[int, np.ndarray] = {}
    first = _prefill(build, target_m, prompts, order, hidden=chunks)
    _finish_prompts(build, target_m, first, order)
    seqs = [_Seq(p, s.position, s.tokens, s.logits) for p, s in zip(prompts, first, strict=True)]
    hidden = _prompt_hidden(chunks, len(prompts))
    proposals = _mtp_prefill(mtp, mtp_m, seqs, hidden, k + 1, order)
    accepted: list[list[int]] = [[] for _ in seqs]
    per_step = []
    while not all(len(s.tokens) >= tokens for s in seqs):
        before = target_m.executed + mtp_m.executed
        active = [len(s.tokens) < tokens for s in seqs]
        starts = np.array([min(s.position, context - k - 1) for s in seqs], np.int32)
        ids = np.array([[s.tokens[-1], *d] for s, d in zip(seqs, proposals, strict=True)], np.int32)
        pos = (starts[:, None] + np.arange(k + 1, dtype=np.int32)).reshape(-1)
        chosen, counts, logits = _verify_step(build, target_m, ids.reshape(-1), pos, order)
        rows_hidden = _gather_output(build, "verify", "hidden", target_m)
        out = mtp_step(mtp, mtp_m, chosen.reshape(-1), pos, rows_hidden, order).reshape(len(seqs), k + 1, -1)
        for b in range(len(seqs)):
            proposals[b] = out[b, int(counts[b])].tolist()
        _emit(seqs, active, chosen, counts, logits, accepted)
        per_step.append(target_m.executed + mtp_m.executed - before)
    return _result(seqs, tokens, accepted, target_m.executed + mtp_m.executed, per_step)


def _emit(seqs, active, chosen: np.ndarray, counts: np.ndarray, logits: np.ndarray, accepted: list[list[int]]) -> None:
    """A verify step's tokens onto each live sequence: the target's choices up to the first mismatch."""
    for b, s in enumerate(seqs):
        if active[b]:
            n = int(counts[b])
            s.tokens += chosen[b, : n + 1].tolist()
            s.logits += list(logits[b, : n + 1])
            s.position += n + 1
            accepted[b].append(n)


def _result(seqs, tokens: int, accepted: list[list[int]], executed: int, per_step: list[int]) -> dict:
    return {"tokens": [s.tokens[:tokens] for s in seqs],
            "logits": [np.stack(s.logits[:tokens]) for s in seqs], "accepted": accepted,
            "instructions": executed, "instructions_per_step": per_step}


def _prompt_hidden(chunks: dict[int, np.ndarray], batch: int) -> list[np.ndarray]:
    """Each sequence's hidden state at every prompt position, from the prefill chunks' rows."""
    per = [chunks[c].reshape(batch, -1, chunks[c].shape[-1]) for c in sorted(chunks)]
    return [np.concatenate([part[b] for part in per]) for b in range(batch)]


def _mtp_prefill(mtp: Build, machine: Machine, seqs: list[_Seq], hidden: list[np.ndarray], rows: int,
                 order: list[int] | None) -> list[list[int]]:
    """The module over each prompt's positions, `rows` at a time (positions past a prompt's last repeat
    it: the same row, written again); each sequence's proposals for the positions after its first token."""
    last = [len(s.prompt) - 1 for s in seqs]
    text = [s.prompt + s.tokens[:1] for s in seqs]
    proposals: list[list[int]] = [[] for _ in seqs]
    for start in range(0, max(last) + 1, rows):
        q = np.minimum(start + np.arange(rows)[None, :], np.array(last)[:, None])
        ids = np.array([[text[b][i + 1] for i in q[b]] for b in range(len(seqs))], np.int32)
        h = np.concatenate([hidden[b][q[b]] for b in range(len(seqs))])
        out = mtp_step(mtp, machine, ids.reshape(-1), q.reshape(-1).astype(np.int32), h, order)
        out = out.reshape(len(seqs), rows, -1)
        for b in range(len(seqs)):
            hits = np.flatnonzero(q[b] == last[b])
            if len(hits):
                proposals[b] = out[b, hits[-1]].tolist()
    return proposals


def mtp_step(mtp: Build, machine: Machine, ids: np.ndarray, pos: np.ndarray, hidden: np.ndarray,
             order: list[int] | None) -> np.ndarray:
    """The module's Program once over rows (token, position, the target's hidden state): per row its
    depths' next tokens [rows, depth] (`next_tokens`, `next_tokens_2`, ... of its memory map's outputs)."""
    program = mtp.programs["decode"]
    act = activation_dtype(program)
    data = encode(np.asarray(hidden, np.float32).reshape(-1), act)
    events = [(0, _host_inputs(mtp, "decode", stage, ids, pos)) for stage in mtp.memory.stages]
    events += [(0, lambda m, stage=stage: _write_hidden(m, stage, data)) for stage in mtp.memory.stages
               if "hidden" in _inputs("decode", stage)]
    execute_functional(program, machine, events, order)
    depths = []
    for name in _proposal_outputs(mtp):
        stage, addr, _ = _output(mtp, "decode", name)
        depths.append(machine.read(stage.first_chip, addr, 4 * len(ids)).view("<i4").copy())
    return np.stack(depths, axis=1)


def _proposal_outputs(mtp: Build) -> list[str]:
    """The module's per-depth argmax outputs in depth order: next_tokens, next_tokens_2, ..."""
    names = [n for n in mtp.memory.outputs.get("decode", {}) if n == "next_tokens" or n.startswith("next_tokens_")]
    return sorted(names, key=lambda n: 1 if n == "next_tokens" else int(n.rsplit("_", 1)[1]))


def _write_hidden(machine: Machine, stage, data: np.ndarray) -> None:
    addr, nbytes = _inputs("decode", stage)["hidden"]
    for chip in range(stage.first_chip, stage.first_chip + stage.tp):
        machine.write(chip, addr, data[:nbytes])
