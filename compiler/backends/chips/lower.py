"""The chip backend's lowering: a plan's stages to per-chip unit queues (the "queues" dialect)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from compiler.codegen.lowering import Lowering
from compiler.codegen.phase import lower_phase
from compiler.codegen.stage import StageCode
from compiler.frontend.options import CompileOptions
from compiler.plan import Plan
from ir.graph import Graph
from ir.ops import Opcode
from targets.spec import SystemSpec


def lower(plan: Plan, decode: Graph, prefill: Graph, chunks: Sequence[Graph], system: SystemSpec,
          options: CompileOptions, progress: Callable[[str], None], verify: Graph | None = None,
          sram_base: int = 0) -> Lowering:
    """Decode once; prefill as the plan's chunks, each of its reach variant's graph (`chunks`, in the
    plan's `prefill.variants` order: the prefill graph of one chunk reading that much cache); with
    `verify` (speculative decoding's verify step: a chunk of drafts), that once too. `sram_base`: every
    chip's layout starts there (a draft on the target's chips, above the target's)."""
    progress("scheduling decode")
    decode_program, decode_codes = lower_phase("decode", [decode], [1], plan.stages, system, system.name, sram_base)
    progress("scheduling prefill")
    counts = [v["chunks"] for v in plan.prefill["variants"]]
    prefill_program, prefill_codes = lower_phase("prefill", chunks, counts, plan.stages, system, system.name,
                                                 sram_base)
    chunk = chunks[-1]
    phases = [("decode", decode_codes, decode), ("prefill", prefill_codes, chunk)]
    verify_program = None
    if verify is not None:
        progress("scheduling verify")
        verify_program, verify_codes = lower_verify(verify, plan, system)
        phases.append(("verify", verify_codes, verify))
    memory = memory_map(*(codes for _, codes, _ in phases)) | {"outputs": _outputs(phases)}
    return Lowering(decode_program, prefill_program, chunk, memory, decode_codes, verify_program, verify)


def lower_verify(verify: Graph, plan: Plan, system: SystemSpec):
    """The verify step: the prefill-chunk lowering of its rows (at their own positions, so the causal
    mask follows them), once, on the plan's stages. Kept apart so a change in how prefill chunks
    lower (their reach into the cache) meets the verify step in one place: the verify step's rows may
    sit anywhere in the context, so they reach the whole cache."""
    return lower_phase("verify", [verify], [1], plan.stages, system, system.name)


def _outputs(phases: list[tuple[str, list[StageCode], Graph]]) -> dict:
    """Where each phase's outputs end up: the per-chip value, on the last stage that lays it out (an
    output no later stage reads stays where it is made: an MTP module's first depths' proposals), and
    how many vocabulary shards it is split into (the host concatenates them, and keeps a row's first
    `cols` elements: the last shard's padding past the vocabulary goes)."""
    out = {}
    for phase, codes, graph in phases:
        last = codes[-1]
        values = {v.name: last.outputs[v.name] for v in graph.outputs}
        picked = _picked_rows(graph)
        out[phase] = {}
        for v in graph.outputs:
            value = values[v.name]
            shards = -(-v.type.numel // value.type.numel)
            out[phase][v.name] = ({"stage": _holder(codes, value.name), "value": value.name, "shards": shards,
                                   "rows": _rows(v)} | ({"row": picked[v.name]} if v.name in picked else {})
                                  | ({"cols": v.type.numel // _rows(v)} if shards > 1 else {}))
    return out


def _picked_rows(graph: Graph) -> dict[str, int]:
    """Values computed from a ROWS op's result, by name: the row of each sequence's rows it picked."""
    row: dict[str, int] = {}
    for op in graph.ops:
        picked = op.attr["row"] if op.opcode is Opcode.ROWS else next(
            (row[v.name] for v in op.operands if v.name in row), None)
        if picked is not None:
            row.update((r.name, picked) for r in op.results)
    return row


def _rows(value) -> int:
    """An output's rows: its leading axis (a scalar per sequence has none: one row)."""
    return value.type.shape[0] if value.type.shape else 1


def _holder(codes: list[StageCode], value: str) -> int:
    return next((c.index for c in reversed(codes) if any(r[1] == value for r in c.memory_map)), codes[-1].index)


RESIDENT = ("tier", "param", "state")  # what every phase finds at one address ("tier": in the tier below SRAM)


def memory_map(decode: list[StageCode], prefill: list[StageCode], verify: list[StageCode] | None = None) -> dict:
    """Each stage's SRAM map (every chip of a stage has the same layout, but for the params only a block of its
    ranks holds: a subset stage's, each with its `ranks`, the blocks sharing addresses). Weights and caches
    ("phase": "both") sit where every phase finds them; above them each phase lays out its own
    inputs, ports and activation arena, which overlap the other phases' (they never run at once)."""
    stages = []
    for i, (d, p) in enumerate(zip(decode, prefill, strict=True)):
        codes = [("decode", d), ("prefill", p)] + ([("verify", verify[i])] if verify else [])
        resident = [r for r in d.memory_map if r[0] in RESIDENT]
        for phase, code in codes[1:]:
            if resident != [r for r in code.memory_map if r[0] in RESIDENT]:
                raise RuntimeError(f"stage {d.index}: decode and {phase} place weights or caches differently")
        regions = [(*r, "both") for r in resident]
        for phase, code in codes:
            regions += [(*r, phase) for r in code.memory_map if r[0] not in RESIDENT]
        stages.append({"index": d.index, "first_chip": d.first_chip, "tp": d.tp,
                       "regions": [{"kind": k, "name": n, "addr": a, "bytes": b, "phase": ph}
                                   | ({"ranks": list(d.held[n])} if n in d.held else {})
                                   for k, n, a, b, ph in regions]})
    return {"stages": stages}
