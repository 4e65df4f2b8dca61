"""Where the KV cache lives: all in SRAM, or its older positions in a tier below (host DRAM, flash).

`place` turns `--kv-tier` into a placement (a tier and the hot window of newest positions kept in
SRAM), plans it, checks the tier can hold what the plan puts there, and attaches the tier table
(`plan.kv_tiers`). A window is chosen, when not given, as the largest that keeps the chips the tier
saves: planned at no window first (everything below), then bisected on a grid of the context.
`auto` takes a tier when the objective gains from it: `chips`, when it saves at least AUTO_MIN_SAVING
of the chips SRAM alone needs (every token then waits on the tier's bandwidth, often many times the
SRAM step, so a few chips are not worth it); `latency`, only when SRAM alone does not fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, replace

from compiler.frontend.options import CompileOptions
from compiler.plan.records import Plan, round_sig
from ir.errors import ConfigError, DoesNotFitError
from ir.ops import KV_TIERS
from targets.spec import SystemSpec

AUTO_MIN_SAVING = 0.10  # auto moves KV below only for at least this share of the chips
WINDOW_STEPS = 32  # the hot window is a multiple of context / WINDOW_STEPS (rounded to 16 positions)

PlanAt = Callable[[CompileOptions], Plan]


def place(plan_at: PlanAt, system: SystemSpec, options: CompileOptions, idle_s: float | None = None,
          pinned: tuple[str, int | None] | None = None) -> tuple[Plan, CompileOptions]:
    """The plan of `options` with its KV placed (`pinned`: a plan file's tier and window), and the
    options it was lowered with (kv_tier a concrete one, kv_hot the window)."""
    if pinned is not None:
        placed = _placed(options, *pinned)
        plan = plan_at(placed)
        return _finish(plan, system, options, placed, {"requested": options.kv_tier, "why": "as the plan file gives"},
                       idle_s)
    if options.kv_tier == "sram":
        plan = plan_at(options)
        return _finish(plan, system, options, options, None, idle_s)
    if system.is_mesh:
        if options.kv_tier == "auto":
            return _finish(plan_at(replace(options, kv_tier="sram")), system, options, replace(options, kv_tier="sram"),
                           {"requested": "auto", "why": "the wafer backend keeps the KV cache in SRAM"}, idle_s)
        raise ConfigError(f"--kv-tier {options.kv_tier}: the wafer backend keeps the KV cache in SRAM "
                          f"({system.name} streams no cache from below)")
    if options.kv_tier == "auto":
        return _auto(plan_at, system, options, idle_s)
    system.tier(options.kv_tier)  # a one-line error when the target declares no such tier
    placed, plan = _forced(plan_at, system, options)
    why = "--kv-hot given" if options.kv_hot is not None else "the largest window that keeps the tier's chip count"
    return _finish(plan, system, options, placed, {"requested": options.kv_tier, "why": why}, idle_s)


def _placed(options: CompileOptions, tier: str, hot: int | None) -> CompileOptions:
    return replace(options, kv_tier=tier, kv_hot=hot if tier != "sram" else None)


def _forced(plan_at: PlanAt, system: SystemSpec, options: CompileOptions) -> tuple[CompileOptions, Plan]:
    """A given tier: the window given, or the largest one keeping the chips of everything below."""
    tier = options.kv_tier
    if options.kv_hot is not None:
        plan = plan_at(options)
        check_capacity(plan, system, tier)
        return options, plan
    low = _placed(options, tier, 0)
    plan = plan_at(low)
    check_capacity(plan, system, tier)
    return _widest(plan_at, system, low, plan)


def _widest(plan_at: PlanAt, system: SystemSpec, low: CompileOptions, floor: Plan) -> tuple[CompileOptions, Plan]:
    """The largest window on the grid whose plan needs no more chips than `floor` (the plan with
    everything below; under --objective latency, one that fits at all). Chips grow with the window."""
    step = max(16, math.ceil(low.context / WINDOW_STEPS / 16) * 16)
    top = (low.context - 1) // step
    best, best_plan = low, floor
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        trial = replace(low, kv_hot=mid * step)
        plan = _try(plan_at, trial)
        if plan is not None and (low.objective == "latency" or plan.chips <= floor.chips):
            best, best_plan, lo = trial, plan, mid
        else:
            hi = mid - 1
    return best, best_plan


def _try(plan_at: PlanAt, options: CompileOptions) -> Plan | None:
    try:
        return plan_at(options)
    except DoesNotFitError:
        return None


def _auto(plan_at: PlanAt, system: SystemSpec, options: CompileOptions, idle_s: float | None
          ) -> tuple[Plan, CompileOptions]:
    sram_options = replace(options, kv_tier="sram")
    reasons, considered = [], None
    try:
        sram = plan_at(sram_options)
    except (ConfigError, DoesNotFitError) as err:  # SRAM alone cannot hold it (maybe never): try below
        sram = None
        reasons.append(f"SRAM alone: {err}")
    for tier in system.tiers:
        low = _placed(options, tier, 0)
        try:
            below = plan_at(low)
            check_capacity(below, system, tier)
        except (ConfigError, DoesNotFitError) as err:
            reasons.append(str(err))
            continue
        take, why = _worth(sram, below, options, tier)
        if take:
            why = "; ".join([r for r in reasons if not r.startswith("SRAM alone")] + [why])  # faster tiers' refusals
            placed, plan = _widest(plan_at, system, low, below)
            return _finish(plan, system, options, placed, _choice(why, sram, below), idle_s)
        reasons.append(why)
        considered = below
        break  # a slower tier saves no more chips than this one
    if sram is None:
        raise DoesNotFitError("--kv-tier auto: " + ("; ".join(reasons) or f"{system.name} declares no tier below "
                                                    "SRAM and SRAM alone does not hold the model"), None)
    why = "; ".join(reasons) or f"{system.name} declares no tier below SRAM"
    return _finish(sram, system, options, sram_options, _choice(why, sram, considered), idle_s)


def _worth(sram: Plan | None, below: Plan, options: CompileOptions, tier: str) -> tuple[bool, str]:
    """Whether auto takes `tier` (planned with everything below), and why, in words."""
    fetch = _fetch_us(below) / 1e3
    kv = _gib(below.totals["kv_cache_bytes"])
    if sram is None:
        return True, f"SRAM alone does not hold the model with its {kv} KV cache; {tier} does"
    saved = sram.chips - below.chips
    share = saved / sram.chips
    costs = (f"{kv} of KV in {tier} saves {saved:,} of {sram.chips:,} chips ({share:.0%}) for "
             f"{fetch:,.2f} ms a token of fetches with all of it there")
    if options.objective == "latency":
        return False, f"--objective latency: SRAM alone fits, and {costs}"
    if share >= AUTO_MIN_SAVING:
        return True, costs
    return False, f"{costs}, under the {AUTO_MIN_SAVING:.0%} of the chips auto moves KV below for"


def _choice(why: str, sram: Plan | None, below: Plan | None) -> dict:
    return {"requested": "auto", "why": why, "sram_chips": sram.chips if sram else None,
            "tier_chips": below.chips if below else None}


def _fetch_us(plan: Plan) -> float:
    return sum(s.tier["fetch_us"] for s in plan.stages if s.tier)


def check_capacity(plan: Plan, system: SystemSpec, tier: str) -> None:
    """The tier holds what the plan's chips put there (per node, or per chip): a one-line error naming
    the tier when it does not."""
    spec = system.tier(tier)
    used = tier_used(plan, system, tier)
    if not used:
        return
    where, most = max(used.items(), key=lambda kv: (kv[1], -kv[0]))
    if most > spec.capacity_bytes:
        unit = "node" if spec.per == "node" else "chip"
        raise ConfigError(f"the {tier} tier of {system.name} holds {_gib(spec.capacity_bytes)} per {unit}, less than "
                          f"the {_gib(most)} of KV cache {unit} {where} places there; give [{tier}] more "
                          "capacity_bytes, keep more in SRAM (--kv-hot) or use --kv-tier sram")


def tier_used(plan: Plan, system: SystemSpec, tier: str) -> dict[int, int]:
    """Bytes the plan holds in `tier`, by node (a node tier) or by chip."""
    per_node = system.tier(tier).per == "node"
    used: dict[int, int] = {}
    for s in plan.stages:
        if not s.tier or s.tier["name"] != tier:
            continue
        for chip in range(s.first_chip, s.first_chip + s.tp):
            key = chip // system.chips_per_node if per_node else chip
            used[key] = used.get(key, 0) + s.tier["bytes"]
    return used


def _gib(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:,.2f} GiB"
    return f"{n / 2**20:,.2f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def _finish(plan: Plan, system: SystemSpec, asked: CompileOptions, placed: CompileOptions, choice: dict | None,
            idle_s: float | None) -> tuple[Plan, CompileOptions]:
    """The plan as asked (its options the user's), with its placement and tier table when there is one
    to tell (a tier asked for, or --idle)."""
    plan = replace(plan, options=asdict(asked))
    if choice is None and idle_s is None:
        return plan, placed
    tiers = {"placement": _placement(plan, placed, choice), "tiers": tier_table(plan, system)}
    if idle_s is not None:
        tiers["idle"] = idle(plan, system, idle_s)
    return replace(plan, kv_tiers=tiers), placed


def _placement(plan: Plan, placed: CompileOptions, choice: dict | None) -> dict:
    below = placed.kv_tier != "sram"
    hot = placed.kv_hot if below else placed.context
    return {"tier": placed.kv_tier, "hot_tokens": hot, "cold_tokens": placed.context - hot,
            "fetch_us_per_token": round_sig(_fetch_us(plan)),
            "exposed_us_per_token": round_sig(sum(s.tier["exposed_us"] for s in plan.stages if s.tier))
            } | (choice or {"requested": "sram", "why": "--kv-tier sram"})


def tier_table(plan: Plan, system: SystemSpec) -> list[dict]:
    """One row per memory: SRAM, then every tier the target declares, fastest first."""
    chip = system.chip
    sram_used = sum(s.memory.total * s.tp for s in plan.stages)
    sram_read = sum(s.bound_terms.get("stream_bytes", 0) * s.tp for s in plan.stages if s.bound_terms)
    exposed = sum(s.tier["exposed_us"] for s in plan.stages if s.tier)
    rows = [{"tier": "sram", "per": "chip", "capacity_bytes": chip.sram_bytes * plan.chips, "used_bytes": sram_used,
             "bw_bytes_per_s": chip.mem_bw_bytes_per_s, "drain_s": chip.sram_bytes / chip.mem_bw_bytes_per_s,
             "read_bytes_per_token": sram_read, "us_per_token": round_sig(plan.decode["latency_us"] - exposed),
             "binds": _sram_binding(plan.decode["breakdown_us"])}]
    for name, spec in system.tiers.items():
        units = _units_spanned(plan, system, spec.per)
        stages = [s for s in plan.stages if s.tier and s.tier["name"] == name]
        read = sum(s.tier["bytes"] * s.tp for s in stages)
        fetch = sum(s.tier["fetch_us"] for s in stages)
        waits = sum(s.tier["exposed_us"] for s in stages)
        binds = ("-" if not stages else f"bandwidth: {waits / 1e3:,.3f} ms a token wait on it" if waits
                 else "hidden under the SRAM work")
        rows.append({"tier": name, "per": spec.per, "capacity_bytes": spec.capacity_bytes * units,
                     "used_bytes": sum(tier_used(plan, system, name).values()),
                     "bw_bytes_per_s": spec.bw_bytes_per_s, "chip_bw_bytes_per_s": system.tier_bw_per_chip(name),
                     "latency_s": spec.latency_s, "drain_s": spec.drain_s, "read_bytes_per_token": read,
                     "us_per_token": round_sig(fetch), "binds": binds})
    return rows


def _sram_binding(breakdown: dict) -> str:
    """What the SRAM side of the step spends most on (the decode binding without the tier's wait)."""
    names = {"sram_bandwidth": "sram-bandwidth", "compute": "compute", "pipeline_latency": "pipeline-latency",
             "links": "links"}
    return names[max(names, key=lambda k: (breakdown[k], k))]


def _units_spanned(plan: Plan, system: SystemSpec, per: str) -> int:
    """Nodes (or chips) the plan's chips span: the tier records it can use."""
    if per == "chip":
        return plan.chips
    return len({c // system.chips_per_node for s in plan.stages for c in range(s.first_chip, s.first_chip + s.tp)})


def idle(plan: Plan, system: SystemSpec, idle_s: float) -> dict:
    """Where an idle conversation's KV should wait: with the memories ordered fastest first (SRAM, then
    the target's tiers), the last, the highest-numbered, whose drain time is below the idle time (the
    issue's rule: a tier that turns over everything it holds within the idle time can take the
    conversation in and give it back in time), else SRAM; and what resuming costs: every chip pulls its
    share back at once, so the fullest chip's share over its link, plus latency."""
    if idle_s <= 0:
        raise ConfigError(f"--idle must be a positive number of seconds, got {idle_s:g}")
    chip = system.chip
    drains = {"sram": chip.sram_bytes / chip.mem_bw_bytes_per_s} | {n: t.drain_s for n, t in
                                                                     _fastest_first(system.tiers).items()}
    holder = ([n for n, d in drains.items() if d < idle_s] or ["sram"])[-1]
    batch = plan.options["batch"]
    share = max((s.memory.kv_cache + (s.tier["bytes"] if s.tier else 0)) / batch for s in plan.stages)
    resume = 0.0 if holder == "sram" else share / system.tier_bw_per_chip(holder) + system.tier(holder).latency_s
    kv = (plan.totals["kv_cache_bytes"] + plan.totals.get("ssm_state_bytes", 0)) / batch
    return {"idle_s": idle_s, "tier": holder, "drain_s": drains, "sequence_bytes": round(kv),
            "chip_share_bytes": round(share), "resume_s": resume,
            "why": _idle_why(holder, drains, idle_s)}


def _fastest_first(tiers: dict) -> dict:
    """The tiers in the hierarchy's order (ir.ops.KV_TIERS: dram, then flash), whatever a target file's order."""
    return {n: tiers[n] for n in KV_TIERS if n in tiers}


def _idle_why(holder: str, drains: dict[str, float], idle_s: float) -> str:
    below = [n for n, d in drains.items() if d < idle_s]
    past = [f"{n} drains in {_seconds(d)}" for n, d in drains.items() if d >= idle_s]
    if not below:
        return f"no memory drains in under {_seconds(idle_s)} ({', '.join(past)}): it stays in sram"
    rest = f"; {', '.join(past)}, not under it" if past else ""
    return f"{holder} is the last memory, fastest first, that drains in under the idle time{rest}"


def _seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:,.1f} µs"
    if s < 1:
        return f"{s * 1e3:,.1f} ms"
    return f"{s:,.1f} s" if s < 120 else f"{s / 60:,.1f} min"
