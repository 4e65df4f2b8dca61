"""The chip backend's lowering: a plan's stages to per-chip unit queues (the "queues" dialect)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from compiler.codegen.lowering import Lowering
from compiler.codegen.phase import lower_phase
from compiler.codegen.stage import StageCode
from compiler.frontend.options import CompileOptions
from compiler.plan import Plan
from ir.graph import Graph
from targets.spec import SystemSpec


def lower(plan: Plan, decode: Graph, prefill: Graph, chunks: Sequence[Graph], system: SystemSpec,
          options: CompileOptions, progress: Callable[[str], None]) -> Lowering:
    """Decode once; prefill as the plan's chunks, each of its reach variant's graph (`chunks`, in the
    plan's `prefill.variants` order: the prefill graph of one chunk reading that much cache)."""
    progress("scheduling decode")
    decode_program, decode_codes = lower_phase("decode", [decode], [1], plan.stages, system, system.name)
    progress("scheduling prefill")
    counts = [v["chunks"] for v in plan.prefill["variants"]]
    prefill_program, prefill_codes = lower_phase("prefill", chunks, counts, plan.stages, system, system.name)
    chunk = chunks[-1]
    memory = memory_map(decode_codes, prefill_codes) | {"outputs": _outputs(decode_codes, prefill_codes, decode,
                                                                              chunk)}
    return Lowering(decode_program, prefill_program, chunk, memory, decode_codes)


def _outputs(decode: list[StageCode], prefill: list[StageCode], decode_graph: Graph, prefill_graph: Graph) -> dict:
    """Where each phase's outputs end up: the last stage's per-chip value and how many
    vocabulary shards it is split into (the host concatenates them)."""
    out = {}
    for phase, codes, graph in (("decode", decode, decode_graph), ("prefill", prefill, prefill_graph)):
        last = codes[-1]
        out[phase] = {v.name: {"stage": last.index, "value": last.outputs[v.name].name,
                               "shards": -(-v.type.numel // last.outputs[v.name].type.numel)} for v in graph.outputs}
    return out


RESIDENT = ("tier", "param", "state")  # what both phases find at one address ("tier": in the tier below SRAM)


def memory_map(decode: list[StageCode], prefill: list[StageCode]) -> dict:
    """Each stage's SRAM map (every chip of a stage has the same layout). Weights and caches
    ("phase": "both") sit where both phases find them; above them each phase lays out its own
    inputs, ports and activation arena, which overlap the other phase's (they never run at once)."""
    stages = []
    for d, p in zip(decode, prefill, strict=True):
        resident = [r for r in d.memory_map if r[0] in RESIDENT]
        if resident != [r for r in p.memory_map if r[0] in RESIDENT]:
            raise RuntimeError(f"stage {d.index}: decode and prefill place weights or caches differently")
        regions = [(*r, "both") for r in resident]
        for phase, code in (("decode", d), ("prefill", p)):
            regions += [(*r, phase) for r in code.memory_map if r[0] not in RESIDENT]
        stages.append({"index": d.index, "first_chip": d.first_chip, "tp": d.tp,
                       "regions": [{"kind": k, "name": n, "addr": a, "bytes": b, "phase": ph}
                                   for k, n, a, b, ph in regions]})
    return {"stages": stages}
