"""Pools sized for a request load: a prefill pool and a decode pool of plan replicas, beside one co-located pool.

A replica is one plan on its target (its devices); a pool is N replicas. The models (README: Serving):

- Prefill replica: a plan at batch b and context S with prompt S. Prompts pipeline through its
  stages chunk after chunk, so a replica finishes b prompts per period = chunks x its slowest
  stage's chunk time (a single-stage replica: its TTFT). Replicas = ceil(R x S / (b x S / period)).
  b is the power of two up to PREFILL_BATCH_LIMIT with the fewest devices (then the lowest TTFT),
  within --max-ttft-ms.
- Decode replica: a plan at batch B and context S + N. A request holds a slot from the start of its
  KV hand-off until its N tokens are out (Little's law): concurrent = R x (hand-off + N / per-user
  tokens/s); replicas = ceil(concurrent / B). B is the power of two with the fewest devices whose
  per-user tokens/s meets the floor, then lowered to ceil(concurrent / replicas) when that is not
  worse.
- Co-located: replicas of the decode target's plan at batch B time-slice prefill and decode: each
  prefills its share of the prompts, B at a time (the plan's prefill at batch B), and decodes the rest
  of the time, so per-user tokens/s is the plan's times (1 - prefill share), and a request holds its
  slot from its prefill (TTFT) to its last token.

Queueing delay (a request waiting for a free replica or a batch to form) is not counted in TTFT: the
pools are sized for throughput and their utilisation is printed beside them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from compiler.frontend.options import CompileOptions
from compiler.planner import make_plan_on
from compiler.serving.handoff import Handoff, plan_handoff
from compiler.serving.rule import device_name
from ir.errors import ConfigError, DoesNotFitError
from targets.spec import SystemSpec

PREFILL_BATCH_LIMIT = 64  # prompts prefilled together: past this, TTFT grows with no gain on any target
DECODE_BATCH_LIMIT = 4096
DEFAULT_FLOOR_SHARE = 0.5  # default per-user floor: half the decode target's batch-1 speed


@dataclass(frozen=True, slots=True)
class Load:
    """The request load a deployment is sized for, and the service each request must get."""

    rate_per_s: float  # requests per second
    prompt: int  # S: prompt tokens per request
    output: int  # N: tokens generated per request
    min_tokens_per_s: float | None = None  # per-user floor; None: DEFAULT_FLOOR_SHARE of batch 1
    max_ttft_ms: float | None = None  # prefill's TTFT ceiling (the hand-off comes on top)

    def __post_init__(self) -> None:
        for flag, value in (("--rate", self.rate_per_s), ("--prompt", self.prompt), ("--output", self.output),
                            ("--min-tokens-per-s", self.min_tokens_per_s), ("--max-ttft-ms", self.max_ttft_ms)):
            if value is not None and not value > 0:
                raise ConfigError(f"{flag} must be positive, got {value}")

    def to_dict(self) -> dict:
        return {"rate_per_s": self.rate_per_s, "prompt_tokens": self.prompt, "output_tokens": self.output,
                "min_tokens_per_s": self.min_tokens_per_s, "max_ttft_ms": self.max_ttft_ms}


@dataclass(frozen=True, slots=True)
class Replica:
    """One plan's figures a pool needs (read from its JSON)."""

    plan: dict
    system: SystemSpec

    @property
    def batch(self) -> int:
        return self.plan["options"]["batch"]

    @property
    def devices(self) -> int:
        return self.plan["chips"]

    @property
    def tokens_per_s(self) -> float:
        return self.plan["decode"]["tokens_per_s"]

    @property
    def ttft_s(self) -> float:
        return self.plan["prefill"]["ttft_ms"] * 1e-3

    @property
    def prefill_period_s(self) -> float:
        """Time between prompt batches leaving a pipelined replica: the busiest stage's time for every
        chunk of a prompt, each at its own reach (never above the TTFT, which the JSON rounds apart)."""
        return min(self.plan["prefill"]["period_ms"] * 1e-3, self.ttft_s)

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.batch * self.plan["options"]["prompt"] / self.prefill_period_s


@dataclass(frozen=True, slots=True)
class PrefillPool:
    replica: Replica
    replicas: int
    demand_tokens_per_s: float  # R x S

    @property
    def devices(self) -> int:
        return self.replicas * self.replica.devices

    @property
    def utilisation(self) -> float:
        return self.demand_tokens_per_s / (self.replicas * self.replica.prompt_tokens_per_s)

    def to_dict(self) -> dict:
        r = self.replica
        return {"target": r.system.name, "device": device_name(r.system), "batch": r.batch,
                "replicas": self.replicas, "devices_per_replica": r.devices, "devices": self.devices,
                "period_ms": r.prefill_period_s * 1e3, "prompt_tokens_per_s_per_replica": r.prompt_tokens_per_s,
                "prompt_tokens_per_s": self.demand_tokens_per_s, "ttft_ms": r.ttft_s * 1e3,
                "utilisation": self.utilisation}


@dataclass(frozen=True, slots=True)
class DecodePool:
    replica: Replica
    replicas: int
    handoff: Handoff
    concurrent: float  # sequences held at once (Little's law)
    served_tokens_per_s: float  # R x N

    @property
    def devices(self) -> int:
        return self.replicas * self.replica.devices

    @property
    def utilisation(self) -> float:
        return self.concurrent / (self.replicas * self.replica.batch)

    def to_dict(self) -> dict:
        r = self.replica
        return {"target": r.system.name, "device": device_name(r.system), "batch": r.batch,
                "replicas": self.replicas, "devices_per_replica": r.devices, "devices": self.devices,
                "tokens_per_s": r.tokens_per_s, "concurrent_sequences": self.concurrent,
                "utilisation": self.utilisation, "throughput_tokens_per_s": self.replicas * r.batch * r.tokens_per_s,
                "served_tokens_per_s": self.served_tokens_per_s}


@dataclass(frozen=True, slots=True)
class CoLocated:
    """The same load on one pool of the decode target, each replica time-slicing prefill and decode;
    `error` says why no pool size meets it (the figures are then those of the last batch tried)."""

    replica: Replica | None
    replicas: int = 0
    prefill_share: float = 0.0
    tokens_per_s: float = 0.0  # per user, after the prefill slices
    concurrent: float = 0.0
    error: str = ""

    @property
    def devices(self) -> int:
        return self.replicas * self.replica.devices if self.replica else 0

    def to_dict(self, load: Load) -> dict:
        if self.error:
            return {"error": self.error}
        r = self.replica
        return {"target": r.system.name, "device": device_name(r.system), "batch": r.batch,
                "replicas": self.replicas, "devices_per_replica": r.devices, "devices": self.devices,
                "prefill_share": self.prefill_share, "tokens_per_s": self.tokens_per_s, "ttft_ms": r.ttft_s * 1e3,
                "concurrent_sequences": self.concurrent, "utilisation": self.concurrent / (self.replicas * r.batch),
                "throughput_tokens_per_s": self.replicas * r.batch * self.tokens_per_s,
                "served_tokens_per_s": load.rate_per_s * load.output}


@dataclass(frozen=True, slots=True)
class Deployment:
    load: Load
    floor_tokens_per_s: float
    prefill: PrefillPool
    decode: DecodePool
    colocated: CoLocated
    plans_made: int = field(default=0)

    @property
    def ttft_s(self) -> float:
        return self.prefill.replica.ttft_s + self.decode.handoff.time_s


# ---------------------------------------------------------------- planning replicas


class _Plans:
    """Plans of one model on one target by batch, made once each (a sizing revisits batches)."""

    def __init__(self, model: str, system: SystemSpec, options: CompileOptions, pool: str) -> None:
        self.model, self.system, self.options, self.pool = model, system, options, pool
        self.made: dict[int, Replica | str] = {}

    def at(self, batch: int) -> Replica | str:
        """The replica at `batch`, or the planner's reason it does not fit."""
        if batch not in self.made:
            try:
                plan = make_plan_on(self.model, self.system, replace(self.options, batch=batch)).to_dict()
                self.made[batch] = Replica(plan, self.system)
            except DoesNotFitError as err:
                self.made[batch] = str(err)
        return self.made[batch]

    def first(self) -> Replica:
        """Batch 1, which must fit: else no pool of this target can serve the model at all."""
        one = self.at(1)
        if isinstance(one, str):
            raise DoesNotFitError(f"{self.pool} pool ({self.system.name}): one sequence does not fit a replica at "
                                  f"context {self.options.context}: {one}", None)
        return one


def _powers(limit: int) -> Iterator[int]:
    b = 1
    while b <= limit:
        yield b
        b *= 2


# ---------------------------------------------------------------- the prefill pool


def size_prefill(plans: _Plans, load: Load) -> PrefillPool:
    """Fewest devices keeping up with R x S prompt tokens/s (then lowest TTFT, then smaller batch)."""
    first = plans.first()
    if load.max_ttft_ms is not None and first.ttft_s * 1e3 > load.max_ttft_ms:
        raise DoesNotFitError(f"prefill pool ({plans.system.name}): no prefill batch meets --max-ttft-ms "
                              f"{load.max_ttft_ms:g}; one prompt alone takes {first.ttft_s * 1e3:,.2f} ms", None)
    demand = load.rate_per_s * load.prompt
    pools = []
    for b in _powers(PREFILL_BATCH_LIMIT):
        r = plans.at(b)
        if isinstance(r, str) or (load.max_ttft_ms is not None and r.ttft_s * 1e3 > load.max_ttft_ms):
            break
        pools.append(PrefillPool(r, math.ceil(demand / r.prompt_tokens_per_s), demand))
    return min(pools, key=lambda p: (p.devices, p.replica.ttft_s, p.replica.batch))


# ---------------------------------------------------------------- the decode pool


def decode_floor(plans: _Plans, load: Load) -> float:
    """The per-user floor: --min-tokens-per-s, or half the batch-1 speed; above batch 1's, no pool meets it."""
    one = plans.first().tokens_per_s
    floor = load.min_tokens_per_s if load.min_tokens_per_s is not None else DEFAULT_FLOOR_SHARE * one
    if floor > one:
        raise DoesNotFitError(f"decode pool ({plans.system.name}): no batch keeps {floor:,.1f} tokens/s per user; "
                              f"batch 1 gives {one:,.1f} (--min-tokens-per-s)", None)
    return floor


def size_decode(plans: _Plans, load: Load, floor: float, handoff: Callable[[Replica], Handoff]) -> DecodePool:
    """Fewest devices holding the concurrent sequences at the floor (then higher per-user speed)."""
    pools = []
    for b in _powers(DECODE_BATCH_LIMIT):
        r = plans.at(b)
        if isinstance(r, str) or r.tokens_per_s < floor:
            break
        pools.append(_decode_pool(r, load, handoff(r)))
        if pools[-1].concurrent <= b:  # one replica holds every sequence: a larger batch only slows users
            break
    best = min(pools, key=lambda p: (p.devices, -p.replica.tokens_per_s, p.replica.batch))
    lower = math.ceil(best.concurrent / best.replicas)
    if lower < best.replica.batch and isinstance(r := plans.at(lower), Replica) and r.tokens_per_s >= floor:
        tighter = _decode_pool(r, load, handoff(r))
        if tighter.devices <= best.devices:
            return tighter
    return best


def _decode_pool(r: Replica, load: Load, handoff: Handoff) -> DecodePool:
    concurrent = load.rate_per_s * (handoff.time_s + load.output / r.tokens_per_s)
    return DecodePool(r, math.ceil(concurrent / r.batch), handoff, concurrent, load.rate_per_s * load.output)


# ---------------------------------------------------------------- co-located


def size_colocated(plans: _Plans, load: Load, floor: float) -> CoLocated:
    """The decode target's replicas doing both phases: fewest devices meeting the floor."""
    found, reason = [], ""
    for b in _powers(DECODE_BATCH_LIMIT):
        r = plans.at(b)
        if isinstance(r, str) or r.tokens_per_s < floor:
            break
        pool = _colocated(r, load, floor)
        if pool.error:
            reason = pool.error
            continue
        found.append(pool)
        if pool.concurrent <= b:
            break
    if not found:
        return CoLocated(None, error=reason or f"no batch of {plans.system.name} keeps {floor:,.1f} tokens/s per user")
    return min(found, key=lambda p: (p.devices, -p.tokens_per_s, p.replica.batch))


def _colocated(r: Replica, load: Load, floor: float) -> CoLocated:
    """The fewest replicas of `r` that serve the load time-sliced (doubling, then bisection)."""
    if r.tokens_per_s < floor:
        return CoLocated(r, error=f"batch {r.batch} decodes under the floor")
    low, high = 0, 1
    while not _colocated_at(r, load, floor, high).replicas:
        low, high = high, 2 * high
        if high > 2**40:
            return CoLocated(r, error=f"at batch {r.batch} prefilling the prompts leaves too little time to decode "
                                      f"{floor:,.1f} tokens/s per user")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if _colocated_at(r, load, floor, mid).replicas else (mid, high)
    return _colocated_at(r, load, floor, high)


def _colocated_at(r: Replica, load: Load, floor: float, n: int) -> CoLocated:
    """n replicas of `r` time-slicing: a pool if they meet the load (replicas = n), else replicas 0."""
    share = load.rate_per_s * load.prompt / (n * r.prompt_tokens_per_s)
    speed = r.tokens_per_s * (1 - share)
    if share >= 1 or speed < floor:
        return CoLocated(r)
    concurrent = load.rate_per_s * (r.ttft_s + load.output / speed)
    return CoLocated(r, n, share, speed, concurrent) if concurrent <= n * r.batch else CoLocated(r)


# ---------------------------------------------------------------- the deployment


def size_deployment(model: str, prefill: SystemSpec, decode: SystemSpec,
                    options: CompileOptions, load: Load) -> Deployment:
    """Both pools and the co-located comparison for `load` (README: Serving)."""
    pre = _Plans(model, prefill, replace(options, context=load.prompt, prompt=load.prompt), "prefill")
    dec = _Plans(model, decode, replace(options, context=load.prompt + load.output, prompt=load.prompt), "decode")
    prefill_pool = size_prefill(pre, load)
    floor = decode_floor(dec, load)
    decode_pool = size_decode(dec, load, floor, lambda r: plan_handoff(prefill_pool.replica.plan, r.plan, prefill,
                                                                      decode))
    colocated = size_colocated(dec, load, floor)
    return Deployment(load, floor, prefill_pool, decode_pool, colocated, len(pre.made) + len(dec.made))


def deployment_dict(model: str, options: CompileOptions, d: Deployment) -> dict:
    """`plan --prefill-target ... --json` (README: Serving)."""
    from dataclasses import asdict

    common = {k: v for k, v in asdict(options).items() if k not in ("batch", "context", "prompt")}
    decode = d.decode.to_dict() | {"ttft_ms": d.ttft_s * 1e3}
    plans = {"prefill": d.prefill.replica.plan, "decode": d.decode.replica.plan}
    if d.colocated.replica is not None and not d.colocated.error:
        plans["colocated"] = d.colocated.replica.plan
    return {"model": model, "options": common, "load": d.load.to_dict(), "min_tokens_per_s": d.floor_tokens_per_s,
            "prefill": d.prefill.to_dict(), "handoff": d.decode.handoff.to_dict(), "decode": decode,
            "disaggregated": {"devices": _by_target(d), "ttft_ms": d.ttft_s * 1e3,
                              "tokens_per_s": d.decode.replica.tokens_per_s},
            "colocated": d.colocated.to_dict(d.load), "plans": plans}


def _by_target(d: Deployment) -> dict[str, int]:
    """Devices of both pools by target (one sum when both pools are the same machine)."""
    out = {d.prefill.replica.system.name: d.prefill.devices}
    name = d.decode.replica.system.name
    out[name] = out.get(name, 0) + d.decode.devices
    return out
