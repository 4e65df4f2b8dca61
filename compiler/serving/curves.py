"""Batch curves: one plan per batch on one target, and the batch where the decode step turns compute-bound.

A point is `make_plan_on` at that batch (B sequences' KV caches, B rows per decode step), read
through its documented JSON keys, so the curve plans exactly as `plan --batch B` does. "Compute-
bound" is the plan's own breakdown: the decode step's compute-bound ops (`decode.breakdown_us.compute`)
take longer than its streaming-bound ones (`sram_bandwidth`). The crossover is found by the
planner, doubling the batch and then bisecting, never by a formula (rule.py gives the formula's
answer beside it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from compiler.frontend.options import CompileOptions
from compiler.planner import make_plan_on
from compiler.serving.rule import device_name, explain
from ir.errors import ConfigError, DoesNotFitError
from targets.spec import SystemSpec

# The crossover search doubles the batch up to here: past it a step that is still streaming-bound
# is reported as such (a KV cache that streams longer than its arithmetic never turns it over).
BATCH_SEARCH_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class BatchPoint:
    """One plan at one batch; `error` (the planner's one line) when it does not fit, figures then zero."""

    batch: int
    devices: int = 0
    tokens_per_s: float = 0.0  # per user: one token per sequence per step
    throughput_tokens_per_s: float = 0.0  # all B sequences
    latency_us: float = 0.0
    latency_bound_us: float = 0.0
    binding: str = ""
    compute_us: float = 0.0  # of the step, in ops bound by arithmetic
    streaming_us: float = 0.0  # of the step, in ops bound by memory or stream traffic
    error: str = ""
    plan: dict | None = None  # the plan's JSON (plan --json), None when it does not fit

    @property
    def fits(self) -> bool:
        return not self.error

    @property
    def compute_bound(self) -> bool:
        return self.fits and self.compute_us > self.streaming_us

    @property
    def tokens_per_s_per_device(self) -> float:
        return self.throughput_tokens_per_s / self.devices if self.devices else 0.0

    def to_dict(self) -> dict:
        keys = ("batch", "devices", "tokens_per_s", "throughput_tokens_per_s", "latency_us", "latency_bound_us",
                "binding", "compute_us", "streaming_us")
        row = {k: getattr(self, k) for k in keys}
        row |= {"tokens_per_s_per_device": self.tokens_per_s_per_device, "compute_bound": self.compute_bound}
        return {"batch": self.batch, "error": self.error} if self.error else row


def plan_point(model: str, system: SystemSpec, options: CompileOptions, batch: int) -> BatchPoint:
    """`model` planned at `batch` (the other options as given)."""
    try:
        plan = make_plan_on(model, system, replace(options, batch=batch)).to_dict()
    except DoesNotFitError as err:
        return BatchPoint(batch, error=str(err))
    d = plan["decode"]
    return BatchPoint(batch, plan["chips"], d["tokens_per_s"], d["throughput_tokens_per_s"], d["latency_us"],
                      d["latency_bound_us"], d["binding"], d["breakdown_us"]["compute"],
                      d["breakdown_us"]["sram_bandwidth"], plan=plan)


@dataclass(frozen=True, slots=True)
class Crossover:
    """Where the decode step turns compute-bound: `batch`, or None when no batch planned up to
    `searched_to` (the largest that fits, or BATCH_SEARCH_LIMIT) is; `plans` the search made."""

    batch: int | None
    searched_to: int
    plans: int
    point: BatchPoint | None  # the plan at `batch`, or at `searched_to` when none turned

    def to_dict(self) -> dict:
        last = self.point
        share = last.compute_us / last.streaming_us if last and last.streaming_us else None
        return {"batch": self.batch, "searched_to": self.searched_to, "plans": self.plans,
                "compute_over_streaming": share}


def find_crossover(at: Callable[[int], BatchPoint], limit: int = BATCH_SEARCH_LIMIT) -> Crossover:
    """The smallest batch whose step is compute-bound, assuming it stays so above and that every batch
    below one that fits fits too: double from 1 until a plan is compute-bound, stops fitting or passes
    `limit`, then bisect the last interval (a batch that does not fit moves the top down)."""
    seen: dict[int, BatchPoint] = {}

    def point(b: int) -> BatchPoint:
        if b not in seen:
            seen[b] = at(b)
        return seen[b]

    if not point(1).fits:
        return Crossover(None, 0, len(seen), None)
    low, high = 0, 1  # low: fits and streaming-bound (0: none yet); high: the probe
    while point(high).fits and not point(high).compute_bound:
        if high >= limit:
            return Crossover(None, high, len(seen), point(high))
        low, high = high, min(2 * high, limit)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if point(mid).fits and not point(mid).compute_bound else (low, mid)
    if point(high).compute_bound:
        return Crossover(high, high, len(seen), point(high))
    return Crossover(None, low, len(seen), point(low))


def parse_batches(text: str | None) -> list[int]:
    """`--batch 1,4,16`: positive whole numbers, each once, in the order given."""
    try:
        values = [int(part) for part in str(text or "1").split(",")]
    except ValueError:
        raise ConfigError(f"--batch: expected B or a comma list like 1,4,16, got {text!r}") from None
    if min(values) < 1:
        raise ConfigError(f"--batch: batches must be positive whole numbers, got {text!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"--batch: a batch is named twice in {text!r}")
    return values


@dataclass(frozen=True, slots=True)
class Curve:
    """A target's batch curve: the points asked for, the crossover, and the rule-of-thumb beside it."""

    target: str
    device: str  # "chip", "GPU" or "wafer"
    points: tuple[BatchPoint, ...]
    crossover: Crossover
    rule: dict | None  # compiler.serving.rule.explain, None for a graph IR file


def batch_curve(model: str, system: SystemSpec, options: CompileOptions, batches: list[int]) -> Curve:
    """The plans at `batches`, then the crossover search (reusing those plans where it meets them)."""
    points = {b: plan_point(model, system, options, b) for b in batches}
    crossover = find_crossover(lambda b: points[b] if b in points else plan_point(model, system, options, b))
    rule = explain(model, system, options, crossover.point.plan if crossover.point else None)
    return Curve(system.name, device_name(system), tuple(points[b] for b in batches), crossover, rule)


def curve_dict(curve: Curve) -> dict:
    """A curve as `--json` prints it (README: Serving)."""
    return {"target": curve.target, "device": curve.device, "rows": [p.to_dict() for p in curve.points],
            "compute_bound": curve.crossover.to_dict() | {"explanation": curve.rule},
            "plans": [p.plan for p in curve.points if p.plan is not None]}
