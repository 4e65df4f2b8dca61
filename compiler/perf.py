"""First-principles timing of a plan: ops, collectives, pipeline hops, and bounds.

Every figure is derived from the target's published numbers (SRAM bandwidth,
peak ops, link bandwidth and latency, pipeline latency); nothing is fitted to a
measured tokens/s. The scheduler must land within 10% of these estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.partition.shard_cost import Collective, OpWork, ShardCost
from ir.ops import Opcode
from targets.spec import ChipSpec, LinkSpec, SystemSpec
from targets.timing import VXM_ALUS_PER_LANE
from targets.topology import chip_hops

# Ops whose arithmetic the lowering runs on the vector ALUs rather than the matrix planes (Mamba's
# conv and recurrence): their flops are timed at the vector rate, as the scheduler times them.
VECTOR_OPS = frozenset({Opcode.CONV1D, Opcode.SELECTIVE_SCAN})


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Seconds spent, split by what bounds them (they add up to `total_s`)."""

    memory_s: float = 0.0  # SRAM streaming where it exceeds the arithmetic time
    compute_s: float = 0.0  # arithmetic where it exceeds the streaming time
    latency_s: float = 0.0  # fixed pipeline latency of each op through the chip
    link_s: float = 0.0  # collectives and pipeline hops

    @property
    def total_s(self) -> float:
        return self.memory_s + self.compute_s + self.latency_s + self.link_s

    def __add__(self, other: Breakdown) -> Breakdown:
        return Breakdown(self.memory_s + other.memory_s, self.compute_s + other.compute_s,
                         self.latency_s + other.latency_s, self.link_s + other.link_s)

    def scaled(self, k: float) -> Breakdown:
        return Breakdown(self.memory_s * k, self.compute_s * k, self.latency_s * k, self.link_s * k)

    @property
    def binding(self) -> str:
        """What most of the time goes to: "sram-bandwidth", "compute", "pipeline-latency" or "links"."""
        parts = {"sram-bandwidth": self.memory_s, "compute": self.compute_s,
                 "pipeline-latency": self.latency_s, "links": self.link_s}
        return max(parts, key=lambda k: (parts[k], k))


def op_time(work: OpWork, system: SystemSpec, precision: str) -> Breakdown:
    """One op's streaming and arithmetic, overlapped: whichever is longer."""
    chip = system.chip
    memory = work.read_bytes / chip.mem_bw_bytes_per_s
    rate = vector_ops_per_s(chip) if work.opcode in VECTOR_OPS else chip.peak_ops(work.precision or precision)
    compute = work.flops / rate
    return Breakdown(memory_s=memory) if memory >= compute else Breakdown(compute_s=compute)


def unit_time(cost: ShardCost, system: SystemSpec, precision: str) -> Breakdown:
    """A unit on one chip: its ops stream one after another (they share the SRAM
    bandwidth), the dependency chain pays the pipeline latency, then collectives."""
    total = Breakdown(latency_s=cost.chain_ops * _op_latency_s(system))
    for work in cost.work:
        total += op_time(work, system, precision)
    return total + Breakdown(link_s=sum(collective_s(c, system) for c in cost.collectives))


def unit_bound_s(cost: ShardCost, system: SystemSpec, precision: str) -> float:
    """What no schedule of this unit can beat: all bytes at full bandwidth or all ops
    at peak, the dependency chain's pipeline latency, and every collective's wire latency."""
    chip = system.chip
    read = sum(w.read_bytes for w in cost.work)
    matrix_s = sum(w.flops / chip.peak_ops(w.precision or precision) for w in cost.work if w.opcode not in VECTOR_OPS)
    vector = sum(w.flops for w in cost.work if w.opcode in VECTOR_OPS)
    stream = max(read / chip.mem_bw_bytes_per_s, matrix_s, vector / vector_ops_per_s(chip))
    wires = sum(collective_latency_s(c, system) for c in cost.collectives)
    return stream + cost.chain_ops * _op_latency_s(system) + wires


def vector_ops_per_s(chip: ChipSpec) -> float:
    """The vector ALUs' rate: every lane's ALUs, one op a cycle (targets/timing.py's VOP rule)."""
    return chip.vector_bytes * VXM_ALUS_PER_LANE * chip.clock_hz


def _op_latency_s(system: SystemSpec) -> float:
    return system.chip.op_latency_cycles / system.chip.clock_hz


def collective_s(c: Collective, system: SystemSpec) -> float:
    """Direct (one-shot) reduce-scatter + all-gather, hierarchical over nodes.

    Inside a node the chips are fully connected, so each phase is one message of
    bytes/p per peer over parallel links. Across q nodes each chip exchanges its
    1/p slice with its counterparts over its global links, round-robin."""
    if c.group <= 1:
        return 0.0
    p = min(c.group, system.chips_per_node)
    q = math.ceil(c.group / p)
    phases = 2 if c.kind == "allreduce" else 1
    local = _message_s(c.bytes / p, system.local_link) if p > 1 else 0.0
    if q == 1:
        return phases * local
    rounds = math.ceil((q - 1) / max(1, system.global_links_per_chip))
    link = system.global_link
    remote = _far_hops(c.group, system) * link.latency_s + rounds * (c.bytes / (p * q)) / link.bw_bytes_per_s
    return phases * (local + remote)


def collective_latency_s(c: Collective, system: SystemSpec) -> float:
    """The wire latency a collective cannot avoid: each phase crosses at least one link."""
    if c.group <= 1:
        return 0.0
    phases = 2 if c.kind == "allreduce" else 1
    p = min(c.group, system.chips_per_node)
    remote = _far_hops(c.group, system) * system.global_link.latency_s if c.group > p else 0.0
    return phases * ((system.local_link.latency_s if p > 1 else 0.0) + remote)


def _far_hops(group: int, system: SystemSpec) -> int:
    """Hops from a group's first node to its farthest one (the group is node-aligned)."""
    nodes = math.ceil(group / system.chips_per_node)
    return chip_hops(system, 0, (nodes - 1) * system.chips_per_node)


def hop_s(nbytes: int, hops: int, lanes: int, system: SystemSpec) -> float:
    """A pipeline hand-off: `lanes` senders each carry a 1/lanes slice `hops` away, then the
    receivers all-gather the slices inside their node (one local message per peer)."""
    link = system.local_link if hops <= 1 else system.global_link
    lanes = max(1, lanes)
    wire = hops * link.latency_s + nbytes / (lanes * link.bw_bytes_per_s)
    gather = _message_s(nbytes / lanes, system.local_link) if lanes > 1 else 0.0
    return wire + gather


def handoff_lanes(sender_tp: int, receiver_tp: int, node: int) -> int:
    """Largest L dividing the receiving group with L <= min(sender group, node) whose groups of
    L receivers stay inside nodes: the hand-off's parallel lanes."""
    best = 1
    for lanes in range(1, min(sender_tp, receiver_tp, node) + 1):
        if receiver_tp % lanes == 0 and (receiver_tp <= node or node % lanes == 0):
            best = lanes
    return best


def _message_s(nbytes: float, link: LinkSpec) -> float:
    return link.latency_s + nbytes / link.bw_bytes_per_s
