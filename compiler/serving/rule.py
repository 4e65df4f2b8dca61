"""The rule of thumb beside the planner's crossover batch, and the figures that say why they differ.

The rule: a decode step turns compute-bound near batch 300 x total/active parameters. 300 is an
H100's ops per byte at fp16 (989 TFLOPS over 3.35 TB/s = 295): with 2 bytes and 2 flops a weight,
the weights' streaming time and their arithmetic meet at batch ~295, and a mixture of experts
multiplies the weights streamed per active one. It moves with the machine (its peak at the weight
format over the bandwidth weights stream at), with the precision (bytes per weight), and with the
KV cache: every sequence streams its own cache each step, so a cache that takes longer to stream
than its sequence's arithmetic keeps the step streaming-bound at any batch. And in sramflow's static
expert passes (timing never depends on routing) a step of several rows multiplies every row by every
local expert, rows not routed to it weighing zero: above batch 1 a mixture of experts streams and
multiplies all its experts, so its crossover is a dense model's, not 300 x total/active.
"""

from __future__ import annotations

from compiler.frontend.options import CompileOptions
from compiler.planner import is_graph_file, lower_one
from ir.graph import Graph
from ir.ops import Opcode
from targets.spec import SystemSpec

RULE_OPS_PER_BYTE = 300  # the rule of thumb's constant: ~an H100's fp16 peak over its HBM bandwidth


def device_name(system: SystemSpec) -> str:
    if system.is_mesh:
        return "wafer"
    return "GPU" if system.chip.memory_kind == "hbm" else "chip"


def active_params(graph: Graph) -> tuple[int, int]:
    """(all parameters, those one token multiplies): an expert op's stacked experts count top_k / E."""
    weights = {p.name: p.type.numel for p in graph.params}
    idle = 0.0
    for op in graph.ops:
        if op.opcode is Opcode.EXPERTS:
            share = 1 - op.attr["top_k"] / op.attr["experts"]
            idle += share * sum(weights.get(v.name, 0) for v in op.operands[3:6])
    scales = sum(n for name, n in weights.items() if name.endswith((".scale", ".tensor_scale")))
    total = sum(weights.values()) - scales
    return total, round(total - idle)


def machine_rates(system: SystemSpec, precision: str) -> tuple[float, float, float]:
    """(peak ops/s at the weight format, bytes/s weights stream at, bytes a weight costs on that path):
    the MXM install path on an SRAM chip, HBM on a GPU, every core's SRAM on a wafer (a device is a
    node of cores: a wafer)."""
    chip, cores = system.chip, system.chips_per_node if system.is_mesh else 1
    return (chip.peak_ops(precision) * cores, chip.mxm_install_bytes_per_cycle * chip.clock_hz * cores,
            chip.install_bytes(precision))


def explain(model: str, system: SystemSpec, options: CompileOptions, plan: dict | None) -> dict | None:
    """The rule's batch and the first-principles figures beside the planner's (README: Serving); `plan`
    is the crossover's plan (None when the step never turns compute-bound)."""
    if is_graph_file(model):
        return None
    graph = lower_one(model, "decode", options)
    total, active = active_params(graph)
    experts = any(op.opcode is Opcode.EXPERTS for op in graph.ops)
    peak, bandwidth, per_weight = machine_rates(system, options.precision)
    ops_per_byte = peak / bandwidth
    kv = plan["totals"]["kv_cache_bytes"] / plan["options"]["batch"] if plan else 0
    streamed = kv * _cache_install_factor(system, options.kv_precision)
    return {
        "rule_batch": round(RULE_OPS_PER_BYTE * total / active, 1),
        "params": total, "active_params": active,
        "peak_ops_per_s": peak, "weight_bytes_per_s": bandwidth, "bytes_per_weight": per_weight,
        "ops_per_weight_byte": ops_per_byte,
        # Weights alone: every weight's bytes over the bandwidth = 2 flops an active weight x B rows over
        # peak (every expert streams; a row multiplies its routed ones: a grouped matmul above batch 1).
        "weights_only_batch": round(ops_per_byte * per_weight / 2 * total / active, 1),
        "static_expert_passes": experts,
        "kv_bytes_per_sequence": round(kv),
        "kv_us_per_sequence": streamed / bandwidth * 1e6,
        # a row multiplies its active parameters (above batch 1 the experts' grouped matmul its k routed ones)
        "compute_us_per_sequence": 2 * active / peak * 1e6,
        "batch": plan["options"]["batch"] if plan else None,
        "matrix_dim": None if system.is_mesh else system.chip.matrix_dim,
        "tiles_us": sum(s.get("decode_tiles_us", 0.0) for s in plan["stages"]) if plan else 0.0,
    }


# Bytes an element of each cache format is stored in (its scales aside).
_KV_STORED_BYTES = {"fp16": 2.0, "fp8": 1.0, "int8": 1.0, "nvfp4": 0.5}


def _cache_install_factor(system: SystemSpec, kv_precision: str) -> float:
    """How much more a cached byte costs on the weight path than it takes in memory (an lpu widens an
    fp8 cache to fp16 on the way into the MXM, as it does fp8 weights)."""
    if system.is_mesh:
        return 1.0
    return system.chip.install_bytes(kv_precision) / _KV_STORED_BYTES[kv_precision]
