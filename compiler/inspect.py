"""`inspect`: what a build directory holds, measured from its Programs (summary, memory map, assembly)."""

from __future__ import annotations

import numpy as np

from compiler.plan.figures import gap_shares
from ir.errors import ConfigError
from ir.isa import UnitKind
from ir.program import Program


def summary(plan: dict, decode: Program, prefill: Program) -> dict:
    """The figures `inspect` prints; the JSON keys are documented in README."""
    clock = decode.clock_hz
    span = decode.makespan
    latency_us = span / clock * 1e6
    bound = plan["decode"]["latency_bound_us"]
    return {
        "model": plan["model"],
        "target": plan["target"],
        "chips": plan["chips"],
        "chip_ids": decode.chips,  # chips are numbered node-aligned (on a wafer: role streams)
        "instructions": len(decode) + len(prefill),
        "decode": {
            "instructions": len(decode),
            "makespan_cycles": int(span),
            "latency_us": round(latency_us, 3),
            "tokens_per_s": round(1e6 / latency_us, 1),
            "estimate_us": plan["decode"]["latency_us"],
            "bound_us": bound,
            "efficiency": round(bound / latency_us, 4),
            "vs_estimate": round(latency_us / plan["decode"]["latency_us"] - 1, 4),
            "busy": busy(decode),
            "critical_path": critical_shares(decode),
            "gap_us": gap_shares(plan, latency_us),
            "stages": stage_times(plan, decode),
        },
        "prefill": {
            "instructions": len(prefill),
            "makespan_cycles": int(prefill.makespan),
            "ttft_ms": round(prefill.makespan / clock * 1e3, 4),
            "estimate_ms": plan["prefill"]["ttft_ms"],
        },
    }


def stage_times(plan: dict, decode: Program) -> list[dict]:
    """Each stage's scheduled share of the token, from its start to the next stage's (the last's: to the
    end; its outgoing hand-off in), beside the plan's decode_us (which counts the incoming one)."""
    starts = [s[0] for s in decode.meta["chunk_starts"]] + [decode.makespan]
    return [{"index": s["index"], "tp": s["tp"], "estimate_us": s["decode_us"],
             "scheduled_us": round((starts[i + 1] - starts[i]) / decode.clock_hz * 1e6, 3)}
            for i, s in enumerate(plan["stages"])]


def busy(program: Program) -> dict[str, float]:
    """Mean share of the makespan each kind of unit is busy, over the chips (per unit instance)."""
    _, kind, _, cycles = program.lane_cycles()
    span = max(1, program.makespan)
    out = {}
    host = (UnitKind.HOST,) if (kind == UnitKind.HOST).any() else ()  # a build fetching KV from a tier
    for k in (UnitKind.MEM, UnitKind.MXM, UnitKind.VXM, UnitKind.C2C, *host):
        mine = kind == k
        out[k.name.lower()] = round(float(cycles[mine].sum()) / (span * int(mine.sum())), 4) if mine.any() else 0.0
    return out


def critical_shares(program: Program) -> dict[str, float]:
    """Where the token's time goes along the pipeline: for every cycle, what the busiest
    class of unit on the stage then working is doing (links over memory over compute);
    cycles with nothing busy are pipeline latency (results draining, waiting on wires)."""
    span = max(1, program.makespan)
    # The stage's first chip (or, on a wafer, the first role stream of its region) stands for it.
    first_chips = sorted({s.get("first_chip", s.get("first_stream")) for s in program.meta.get("stages", [])}) or [0]
    c = program.window(first_chips).cols
    classes = {"links": (UnitKind.C2C,), "memory": (UnitKind.MEM,), "compute": (UnitKind.MXM, UnitKind.VXM)}
    active = {}
    on_path = np.isin(c["chip"], first_chips)
    for name, kinds in classes.items():
        mask = on_path & np.isin(c["kind"], kinds)
        active[name] = _covered(c["issue"][mask], c["issue"][mask] + c["cycles"][mask], span)
    taken = np.zeros(span, dtype=bool)
    shares = {}
    for name in ("links", "memory", "compute"):
        mine = active[name] & ~taken
        shares[name] = round(float(mine.sum()) / span, 4)
        taken |= mine
    shares["latency"] = round(1 - sum(shares.values()), 4)
    return shares


def _covered(starts: np.ndarray, ends: np.ndarray, span: int) -> np.ndarray:
    """Boolean per cycle: inside any [start, end)."""
    delta = np.zeros(span + 1, dtype=np.int64)
    np.add.at(delta, np.clip(starts, 0, span), 1)
    np.add.at(delta, np.clip(ends, 0, span), -1)
    return np.cumsum(delta)[:span] > 0


def check_drawable(program: Program, chips: list[int] | None, window: tuple[int, int] | None, flag: str) -> None:
    """Refuse a picture of nothing: no instruction of `chips` in the window."""
    if not len(program.window(chips, window)):
        where = f"cycles {window[0]:,}-{window[1]:,}" if window else "the program"
        shown = "chips " + ",".join(map(str, chips)) if chips else "the chips"
        raise ConfigError(f"{flag}: {shown} run no instruction in {where} of {program.phase}; nothing to draw")


def parse_chips(text: str, chips: int) -> list[int]:
    """'17', '0-7' or '0,3,5-6' to chip ids, checked against the program."""
    out: list[int] = []
    for part in text.split(","):
        lo, hi = _chip_range(part, text)
        if hi < lo:
            raise ConfigError(f"--chip: {part.strip()!r} is an empty range (give A-B with A <= B)")
        out.extend(range(lo, hi + 1))
    bad = [c for c in out if not 0 <= c < chips]
    if bad:
        raise ConfigError(f"--chip: chip {bad[0]} is not in the program (chips 0-{chips - 1})")
    twice = next((c for i, c in enumerate(out) if c in out[:i]), None)
    if twice is not None:
        raise ConfigError(f"--chip: chip {twice} is listed twice in {text!r}")
    return out


def _chip_range(part: str, text: str) -> tuple[int, int]:
    lo, sep, hi = part.strip().partition("-")
    try:
        return int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise ConfigError(f"--chip: expected N, A-B or a comma list, got {text!r}") from None


def parse_cycles(text: str, program: Program) -> tuple[int, int]:
    """'LO:HI' to a window of cycles that overlaps the program."""
    lo, sep, hi = text.partition(":")
    try:
        window = (int(lo), int(hi))
    except ValueError:
        window = None
    if not sep or window is None or window[0] < 0:
        raise ConfigError(f"--cycles: expected LO:HI (two cycle numbers, like 0:20000), got {text!r}")
    if window[0] >= window[1]:
        raise ConfigError(f"--cycles: empty window {text!r} (LO must be less than HI)")
    if window[0] >= program.makespan:
        raise ConfigError(f"--cycles {text}: starts after the {program.phase} program ends "
                          f"(cycle {program.makespan:,})")
    return window
