"""The plan's decode and prefill figures, summed from its timed stages (chip and wafer plans alike)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from compiler.frontend.options import CompileOptions
from compiler.partition.cost import Breakdown
from compiler.plan import round_sig as _r
from compiler.plan.reach import Variant, chunk_variants, pipelined


class Timed(Protocol):
    """A stage's unrounded decode and prefill times and their bounds."""

    decode: Breakdown
    decode_bound_s: float
    prefill: Breakdown
    prefill_bound_s: float
    prefill_trailing_s: float  # of prefill, what a trailing hand-off in takes on the wires alone
    prefill_bound_trailing_s: float  # of prefill_bound_s, likewise
    prefill_hold_s: float  # a hand-off in that does not trail: how long it holds the stage before (its SENDs)
    prefill_early_s: float  # a chunk's lookup the stage runs for every chunk before its first (reach.pipelined)
    prefill_early_bound_s: float


def decode_figures(timed: Sequence[Timed], options: CompileOptions) -> dict:
    total = sum((t.decode for t in timed), Breakdown())
    bound = sum(t.decode_bound_s for t in timed)
    latency = total.total_s
    return {
        "latency_us": _r(latency * 1e6),
        "latency_bound_us": _r(bound * 1e6),
        "efficiency": _r(bound / latency),
        "tokens_per_s": _r(1 / latency),
        "tokens_per_s_bound": _r(1 / bound),
        "throughput_tokens_per_s": _r(options.batch / latency),
        "breakdown_us": {"sram_bandwidth": _r(total.memory_s * 1e6), "compute": _r(total.compute_s * 1e6),
                         "pipeline_latency": _r(total.latency_s * 1e6), "links": _r(total.link_s * 1e6)}
        | ({"tier": _r(total.tier_s * 1e6)} if total.tier_fetch_s else {}),
        "binding": total.binding,
    }


def prefill_figures(timed: Sequence[Sequence[Timed]], runs: Sequence[Variant], chunk_tokens: int) -> dict:
    """TTFT and its bound: every chunk through the stages at its own variant's times (`timed[v]`, the
    stages timed at variant v's reach), pipelined as the compiled timeline runs them; the period is
    the busiest stage's time for the whole prompt (what paces a replica fed prompt after prompt)."""
    per_chunk = chunk_variants(runs)
    ttft = ttft_s(timed, runs)
    bound = pipelined([[t.prefill_bound_s for t in ts] for ts in timed], per_chunk,
                      [[t.prefill_bound_trailing_s for t in ts] for ts in timed], None,
                      [ts[-1].prefill_early_bound_s for ts in timed])
    # a stage's own work (less the SENDs of a hand-off in that does not trail, plus those of its hand-off out)
    # and its trailing hand-off's wires each take every chunk in turn
    period = max(max(sum(timed[v][s].prefill.total_s - timed[v][s].prefill_trailing_s - timed[v][s].prefill_hold_s
                         + _hold(timed[v], s) + timed[v][s].prefill_early_s for v in per_chunk),
                     sum(timed[v][s].prefill_trailing_s for v in per_chunk)) for s in range(len(timed[0])))
    total = sum((t.prefill.scaled(run.chunks) for ts, run in zip(timed, runs, strict=True) for t in ts), Breakdown())
    return {"ttft_ms": _r(ttft * 1e3), "ttft_bound_ms": _r(bound * 1e3), "period_ms": _r(period * 1e3),
            "chunks": len(per_chunk), "chunk_tokens": chunk_tokens, "variants": [r.to_dict() for r in runs],
            "binding": total.binding}


def ttft_s(timed: Sequence[Sequence[Timed]], runs: Sequence[Variant]) -> float:
    """Time to first token: every chunk through the stages at its variant's times (what a plan's chunk
    minimises)."""
    return pipelined([[t.prefill.total_s for t in ts] for ts in timed], chunk_variants(runs),
                     [[t.prefill_trailing_s for t in ts] for ts in timed],
                     [[t.prefill_hold_s for t in ts] for ts in timed], [ts[-1].prefill_early_s for ts in timed])


def _hold(stages: Sequence[Timed], s: int) -> float:
    """How long the hand-off out of stage s holds it (the next stage's prefill_hold_s; out of the last, the first
    stage's where the last runs the embedding and hands its rows to it)."""
    if s + 1 < len(stages):
        return stages[s + 1].prefill_hold_s
    return stages[0].prefill_hold_s if stages[s].prefill_early_s and len(stages) > 1 else 0.0


# What lies between the scheduled latency and the physical bound, in the order inspect prints it.
GAP_PARTS = {
    "per_op_latency": "the fixed pipeline latency each dependent op pays",
    "collectives": "collectives and hand-offs beyond their unavoidable wire latency",
    "tiles": "whole matrix-unit tiles where a shard is narrower than a tile",
    "serialisation": "ops streaming one after another instead of overlapping perfectly",
    "drains": "what the schedule adds to the estimate: drains between dependent ops, queue order",
}


def gap_shares(plan: dict, scheduled_us: float) -> dict[str, float] | None:
    """Microseconds of scheduled - bound by cause (GAP_PARTS); None when the plan has no bound terms."""
    stages = plan["stages"]
    if not all("decode_bound_terms" in s for s in stages):
        return None
    d = plan["decode"]
    parts = {"per_op_latency": d["breakdown_us"]["pipeline_latency"],
             "collectives": d["breakdown_us"]["links"] - sum(s["decode_bound_terms"]["wire_us"] for s in stages),
             "tiles": sum(s["decode_tiles_us"] for s in stages)}
    parts["serialisation"] = d["latency_us"] - d["latency_bound_us"] - sum(parts.values())
    parts["drains"] = scheduled_us - d["latency_us"]
    return {k: round(v, 3) for k, v in parts.items()}
