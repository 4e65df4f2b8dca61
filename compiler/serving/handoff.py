"""The KV hand-off: a request's cache moved from a prefill replica to a decode replica over the pool links.

Bytes: the prefill plan's cache and state for its batch of prompts (context = the prompt), per
sequence: `(totals.kv_cache_bytes + totals.ssm_state_bytes) / batch`, i.e. KV bytes per token x S
plus a recurrent state. Each device holding a share of the cache sends it over its own pool link
(`SystemSpec.pool_link`; on a wafer its system I/O, the `global_link`), and each receiving device takes
its share over its own, so the hand-off takes the slower side's aggregate: time = the larger of the two links' latencies
+ bytes / min(senders x their link's bandwidth, receivers x theirs). One device on each side is
bytes / bandwidth + latency. Shares are taken as balanced over the devices that hold a cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from targets.spec import LinkSpec, SystemSpec


def pool_link(system: SystemSpec) -> LinkSpec:
    """One device's link to another pool: `pool_link` (a wafer's defaults to its system I/O link)."""
    return system.pool_link


def request_cache_bytes(plan: dict) -> float:
    """One sequence's KV cache and recurrent state in a plan (at the plan's context)."""
    totals = plan["totals"]
    return (totals["kv_cache_bytes"] + totals.get("ssm_state_bytes", 0)) / plan["options"]["batch"]


def cache_devices(plan: dict) -> int:
    """Devices of a replica that hold some of the cache: chips of the stages with one (wafers: their wafers)."""
    if "mesh" in plan:
        return len({s["wafer"] for s in plan["stages"] if s["memory_per_core_bytes"]["kv_cache"] > 0}) or 1
    return sum(s["tp"] for s in plan["stages"] if s["memory_per_chip_bytes"]["kv_cache"] > 0) or 1


@dataclass(frozen=True, slots=True)
class Handoff:
    """One request's cache from a prefill replica to a decode replica; `binding` names the slower side."""

    bytes: float
    senders: int
    receivers: int
    send_link: LinkSpec
    receive_link: LinkSpec

    @property
    def bw_bytes_per_s(self) -> float:
        return min(self.senders * self.send_link.bw_bytes_per_s, self.receivers * self.receive_link.bw_bytes_per_s)

    @property
    def latency_s(self) -> float:
        return max(self.send_link.latency_s, self.receive_link.latency_s)

    @property
    def time_s(self) -> float:
        return self.latency_s + self.bytes / self.bw_bytes_per_s

    @property
    def binding(self) -> str:
        sending = self.senders * self.send_link.bw_bytes_per_s
        return "prefill" if sending <= self.receivers * self.receive_link.bw_bytes_per_s else "decode"

    def to_dict(self) -> dict:
        return {"bytes": round(self.bytes), "time_ms": self.time_s * 1e3, "bw_bytes_per_s": self.bw_bytes_per_s,
                "latency_s": self.latency_s, "senders": self.senders, "receivers": self.receivers,
                "send_link": _link(self.send_link), "receive_link": _link(self.receive_link),
                "binding": self.binding}


def _link(link: LinkSpec) -> dict:
    return {"bw_bytes_per_s": link.bw_bytes_per_s, "latency_s": link.latency_s}


def plan_handoff(prefill_plan: dict, decode_plan: dict, prefill: SystemSpec,
                 decode: SystemSpec) -> Handoff:
    """The hand-off between replicas of these two plans (the prefill plan's context is the prompt)."""
    return Handoff(request_cache_bytes(prefill_plan), cache_devices(prefill_plan), cache_devices(decode_plan),
                   pool_link(prefill), pool_link(decode))
