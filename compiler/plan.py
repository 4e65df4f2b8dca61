"""The Plan: where every weight lives, how fast it runs, and the bounds beside each figure."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Memory:
    """Bytes on one chip, by what they hold."""

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
class Stage:
    """A contiguous run of units on a tensor-parallel group of chips."""

    index: int
    first_unit: str
    last_unit: str
    layers: tuple[int, int] | None  # inclusive range of decoder layers, if any
    tp: int
    first_chip: int
    memory: Memory
    decode_us: float  # this stage's share of one decode step, hand-off in included
    decode_bound_us: float
    prefill_chunk_us: float
    hops_in: int  # network hops from the previous stage
    binding: str
    bound_terms: dict[str, float] | None = None  # the physical bound's terms (perf.StageBound)
    decode_tiles_us: float = 0.0  # of decode_us, what whole-tile rounding adds

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "units": [self.first_unit, self.last_unit],
            "layers": list(self.layers) if self.layers else None,
            "tp": self.tp,
            "chips": self.tp,
            "chip_range": [self.first_chip, self.first_chip + self.tp - 1],
            "memory_per_chip_bytes": self.memory.to_dict(),
            "decode_us": round_sig(self.decode_us),
            "decode_bound_us": round_sig(self.decode_bound_us),
            "prefill_chunk_us": round_sig(self.prefill_chunk_us),
            "hops_in": self.hops_in,
            "binding": self.binding,
        } | ({"decode_bound_terms": {k: round_sig(v) if k.endswith("_us") else int(v)
                                     for k, v in self.bound_terms.items()},
              "decode_tiles_us": round_sig(self.decode_tiles_us)} if self.bound_terms is not None else {})


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything `sramflow plan` decides and predicts; `to_json` is the artifact."""

    model: str
    target: str
    options: dict
    chips: int
    chips_lower_bound: int
    footprint_chips: int
    stages: tuple[Stage, ...]
    decode: dict
    prefill: dict
    binding: dict
    solver: dict
    totals: dict
    wall_s: float = 0.0  # measured, shown to people; never in the JSON, which must be byte-stable

    @property
    def fullest(self) -> Memory:
        return max((s.memory for s in self.stages), key=lambda m: (m.total, m.weights))

    def to_dict(self) -> dict:
        return plan_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def round_sig(x: float) -> float:
    """Figures are printed to 4 significant digits: enough to read, stable to compare."""
    return float(f"{x:.4g}")


def plan_dict(plan) -> dict:
    """The keys every plan has, chip or wafer, in the order the JSON shows them."""
    return {
        "model": plan.model,
        "target": plan.target,
        "options": plan.options,
        "chips": plan.chips,
        "chips_lower_bound": plan.chips_lower_bound,
        "footprint_chips": plan.footprint_chips,
        "memory_per_chip_bytes": plan.fullest.to_dict(),
        "totals": plan.totals,
        "stages": [s.to_dict() for s in plan.stages],
        "decode": plan.decode,
        "prefill": plan.prefill,
        "binding": plan.binding,
        "solver": plan.solver,
    }
