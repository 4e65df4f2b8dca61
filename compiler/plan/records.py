"""The Plan: where every weight lives, how fast it runs, and the bounds beside each figure.

One Plan for every backend. A stage is a contiguous run of units on a group of devices placed on the
machine: a range of chips (a tensor-parallel group) or a region of a wafer's cores (one program
replicated on every core). `chips` counts the devices the plan takes: chips, or wafers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from targets.mesh import Region


@dataclass(frozen=True, slots=True)
class Memory:
    """Bytes on one device (or, summed, on one wafer), by what they hold."""

    weights: int
    kv_cache: int
    activations: int
    program: int
    capacity: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.program

    @property
    def headroom(self) -> int:
        return self.capacity - self.total

    def to_dict(self) -> dict:
        return asdict(self) | {"total": self.total, "headroom": self.headroom}


@dataclass(frozen=True, slots=True)
class ChipRange:
    """A stage on chips first_chip .. first_chip + tp - 1."""

    first_chip: int
    tp: int

    @property
    def devices(self) -> int:
        return self.tp

    def to_dict(self) -> dict:
        return {"tp": self.tp, "chips": self.tp, "chip_range": [self.first_chip, self.first_chip + self.tp - 1]}


def _region_dict(region: Region) -> dict:
    return {"tp": region.cores, "wafer": region.wafer, "region": region.to_dict(), "cores": region.cores}


@dataclass(frozen=True, slots=True)
class Stage:
    """A contiguous run of units on a placed group of devices (ChipRange or a wafer Region)."""

    index: int
    first_unit: str
    last_unit: str
    layers: tuple[int, int] | None  # inclusive range of decoder layers, if any
    placement: ChipRange | Region
    memory: Memory  # per device
    decode_us: float  # this stage's share of one decode step, hand-off in included
    decode_bound_us: float
    prefill_chunk_us: float
    hops_in: int  # network hops from the previous stage (a wafer link counts as one)
    binding: str
    bound_terms: dict[str, float] | None = None  # the physical bound's terms (partition.cost.StageBound)
    decode_tiles_us: float = 0.0  # of decode_us, what whole-tile rounding adds
    experts: str | None = None  # how the stage's experts are spread (passes.shard.expert_placement)
    tier: dict | None = None  # cold KV below SRAM, per chip: tier, bytes held, decode fetch and exposed us
    kv_layout: str | None = None  # "split" or "whole" where the group could take either (passes.shard.splits_kv)
    # The first stage's embedding unit runs on this (the head's) stage's chips, over the head's shard of the
    # tied table, its rows handed to the first stage: the table is held once (codegen.phase, embedding_stage).
    embedding: bool = False

    @property
    def split(self) -> bool:
        """Whether the stage's caches are shared by sequence (latent down projections split by column)."""
        return self.kv_layout == "split"

    @property
    def tp(self) -> int:
        """Devices running the stage's program: its chips, or its region's cores."""
        return self.placement.devices if isinstance(self.placement, ChipRange) else self.placement.cores

    @property
    def first_chip(self) -> int:
        return self.placement.first_chip

    @property
    def region(self) -> Region:
        return self.placement

    @property
    def cores(self) -> int:
        return self.placement.cores

    def to_dict(self) -> dict:
        on_chips = isinstance(self.placement, ChipRange)
        place = self.placement.to_dict() if on_chips else _region_dict(self.placement)
        memory_key = "memory_per_chip_bytes" if on_chips else "memory_per_core_bytes"
        return {
            "index": self.index,
            "units": [self.first_unit, self.last_unit],
            "layers": list(self.layers) if self.layers else None,
            **place,
            memory_key: self.memory.to_dict(),
            "decode_us": round_sig(self.decode_us),
            "decode_bound_us": round_sig(self.decode_bound_us),
            "prefill_chunk_us": round_sig(self.prefill_chunk_us),
            "hops_in": self.hops_in,
            "binding": self.binding,
        } | ({"decode_bound_terms": {k: round_sig(v) if k.endswith("_us") else int(v)
                                     for k, v in self.bound_terms.items()},
              "decode_tiles_us": round_sig(self.decode_tiles_us)} if self.bound_terms is not None else {}) | (
            {"experts": self.experts} if self.experts else {}) | ({"tier": self.tier} if self.tier else {}) | (
            {"kv_layout": self.kv_layout} if self.kv_layout else {}) | ({"embedding": True} if self.embedding else {})


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything `sramflow plan` decides and predicts; `to_json` is the artifact. `memory` is the
    fullest device the plan reports (a chip; a wafer's cores summed); `extra` holds a backend's own
    keys (a wafer plan's `mesh`)."""

    model: str
    target: str
    options: dict
    chips: int
    chips_lower_bound: int
    footprint_chips: int
    stages: tuple[Stage, ...]
    memory: Memory
    decode: dict
    prefill: dict
    binding: dict
    solver: dict
    totals: dict
    device: str = "chip"  # "chip" or "wafer": what `chips` counts
    extra: dict = field(default_factory=dict)
    kv_tiers: dict = field(default_factory=dict)  # where the KV cache lives and each tier's figures (kv_tiers.py)
    wall_s: float = 0.0  # measured, shown to people; never in the JSON, which must be byte-stable

    @property
    def fullest(self) -> Memory:
        return self.memory

    @property
    def on_wafers(self) -> bool:
        return self.device == "wafer"

    def to_dict(self) -> dict:
        return plan_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def round_sig(x: float) -> float:
    """Figures are printed to 4 significant digits: enough to read, stable to compare."""
    return float(f"{x:.4g}")


def plan_dict(plan: Plan) -> dict:
    """Every plan's keys in the order the JSON shows them, then the backend's own."""
    return {
        "model": plan.model,
        "target": plan.target,
        "options": plan.options,
        "chips": plan.chips,
        "chips_lower_bound": plan.chips_lower_bound,
        "footprint_chips": plan.footprint_chips,
        "memory_per_chip_bytes": plan.memory.to_dict(),
        "totals": plan.totals,
        "stages": [s.to_dict() for s in plan.stages],
        "decode": plan.decode,
        "prefill": plan.prefill,
        "binding": plan.binding,
        "solver": plan.solver,
    } | ({"kv_tiers": plan.kv_tiers} if plan.kv_tiers else {}) | plan.extra
