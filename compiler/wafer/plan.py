"""The wafer Plan: regions of cores per stage, wafers in a pipeline, figures beside their bounds.

The JSON keeps the chip Plan's top-level keys (compiler/plan.py) with a wafer as the device:
`chips` counts wafers, `memory_per_chip_bytes` is the fullest wafer's memory summed over its
cores. Mesh-specific figures sit under `mesh`, and each stage names its wafer and its region
(rows x cols of cores: one program replicated on every core of the region).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from compiler.plan import Memory, plan_dict, round_sig
from targets.mesh import Region


@dataclass(frozen=True, slots=True)
class WaferStage:
    """A run of units on one region of one wafer."""

    index: int
    first_unit: str
    last_unit: str
    layers: tuple[int, int] | None
    region: Region
    memory: Memory  # per core
    decode_us: float  # this stage's share of a decode step, hand-off in included
    decode_bound_us: float
    prefill_chunk_us: float
    hops_in: int  # fabric hops from the previous stage (a wafer link counts as one)
    binding: str

    @property
    def cores(self) -> int:
        return self.region.cores

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "units": [self.first_unit, self.last_unit],
            "layers": list(self.layers) if self.layers else None,
            "tp": self.cores,  # the program's replication count
            "wafer": self.region.wafer,
            "region": self.region.to_dict(),
            "cores": self.cores,
            "memory_per_core_bytes": self.memory.to_dict(),
            "decode_us": round_sig(self.decode_us),
            "decode_bound_us": round_sig(self.decode_bound_us),
            "prefill_chunk_us": round_sig(self.prefill_chunk_us),
            "hops_in": self.hops_in,
            "binding": self.binding,
        }


@dataclass(frozen=True, slots=True)
class WaferPlan:
    """Everything `sramflow plan --target wse3` decides and predicts; `to_json` is the artifact."""

    model: str
    target: str
    options: dict
    chips: int  # wafers
    chips_lower_bound: int
    stages: tuple[WaferStage, ...]
    wafer_memory: tuple[Memory, ...]  # per wafer, summed over its cores
    mesh: dict
    decode: dict
    prefill: dict
    binding: dict
    solver: dict
    totals: dict
    wall_s: float = 0.0  # measured, shown to people; never in the JSON

    @property
    def footprint_chips(self) -> int:
        return self.chips

    @property
    def fullest(self) -> Memory:
        return max(self.wafer_memory, key=lambda m: (m.total, m.weights))

    @property
    def fullest_core(self) -> Memory:
        return max((s.memory for s in self.stages), key=lambda m: (m.total, m.weights))

    def to_dict(self) -> dict:
        return plan_dict(self) | {"mesh": self.mesh | {"memory_per_core_bytes": self.fullest_core.to_dict()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
