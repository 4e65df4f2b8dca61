"""One phase (decode, or prefill in chunks) of a plan to a Program: stages built, laid out, stitched in time.

Timeline. Every chip synchronises at cycle 0. A stage runs its pieces back to back;
it starts a chunk when it has finished the previous one and the chunk's hand-off
has arrived (the previous stage's SENDs plus hops x link latency). Decode is one
chunk of one token per sequence, so the makespan is the per-token latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compiler.codegen.blocks import Blocks
from compiler.codegen.instantiate import instantiate, sync
from compiler.codegen.stage import Piece, StageBuilder, StageCode, layout
from compiler.codegen.template import TAG_SPACE
from compiler.passes.shard import shard_unit
from compiler.plan import Stage
from ir.errors import DoesNotFitError
from ir.graph import Graph, Value
from ir.isa import Op
from ir.ops import Opcode, tier_operands
from ir.program import Program
from ir.types import ACTIVATION_DTYPES, DType
from targets.spec import SystemSpec
from targets.timing import Timing


@dataclass(frozen=True, slots=True)
class Placed:
    stage: int
    piece: int
    chunk: int
    start: int


def build_stages(graph: Graph, stages: Sequence[Stage], system: SystemSpec) -> list[StageCode]:
    """Lower every stage of the plan: per-chip ops, shared templates, hand-offs, SRAM layout."""
    outputs = {v.name for v in graph.outputs}
    builder = StageBuilder(system, graph.inputs, outputs, max(s.first_chip + s.tp for s in stages))
    scopes = graph.scopes()
    owner = _owner(scopes, stages)
    final: dict[str, Value] = {}
    codes, chip_ops = [], {}
    for s in stages:
        code = StageCode(s.index, s.tp, s.first_chip)
        for scope in (sc for sc in scopes if owner[sc] == s.index):
            ops, values = shard_unit(list(graph.ops_in(scope)), s.tp, final)
            final.update(values)
            chip_ops[scope] = ops
        codes.append(code)
    uses = _last_use(graph, owner, final)
    for s, code in zip(stages, codes, strict=True):
        for scope in (sc for sc in scopes if owner[sc] == s.index):
            ops = chip_ops[scope]
            exported = {r.name for op in ops for r in op.results
                        if r.name in uses and uses[r.name] > (scopes.index(scope), s.index)
                        or _is_output(r.name, final, outputs)}
            code.pieces.append(builder.unit(scope, ops, s.tp, s.first_chip, exported))
    _handoffs(builder, graph, codes, owner, final, scopes)
    codes[-1].outputs = {v.name: final.get(v.name, v) for v in graph.outputs}
    for i, code in enumerate(codes):
        # Per stage: a tied table is a param of two stages, sharded over each one's own group.
        values = {v.name: v for sc in scopes if owner[sc] == i for op in chip_ops[sc]
                  for v in (*op.operands, *op.results)}
        values.update((v.name, v) for v in graph.inputs)
        keep = {n for p in codes[i].pieces if p.kind == "send" for n in p.ports_in}
        keep |= {final[n].name for n in outputs if n in final}
        # A param two stages hold (a tied table: embedding and head) has each stage's own shard.
        own = {v.name: v for sc in scopes if owner[sc] == i for op in chip_ops[sc] for v in op.operands}
        layout(code, system, graph.inputs, values | own, keep, {v.name for v in graph.state}, _below(graph))
    return codes


def _below(graph: Graph) -> set[str]:
    """Caches held in a tier below SRAM: a tiered attention's cold k and v (ir.ops.tier_operands)."""
    return {op.operands[i].name for op in graph.ops if op.opcode is Opcode.ATTENTION and "tier" in op.attr
            for i in tier_operands(len(op.operands))}


def _owner(scopes: list[str], stages: Sequence[Stage]) -> dict[str, int]:
    out = {}
    for s in stages:
        first, last = scopes.index(s.first_unit), scopes.index(s.last_unit)
        for sc in scopes[first:last + 1]:
            out[sc] = s.index
    return out


def _last_use(graph: Graph, owner: dict[str, int], final: dict[str, Value]) -> dict[str, tuple[int, int]]:
    """Per-chip value name -> (scope index, stage) of its last use."""
    scopes = graph.scopes()
    uses: dict[str, tuple[int, int]] = {}
    for op in graph.ops:
        where = (scopes.index(op.scope), owner[op.scope])
        for v in op.operands:
            name = final[v.name].name if v.name in final else v.name
            uses[name] = max(uses.get(name, where), where)
    return uses


def _is_output(name: str, final: dict[str, Value], outputs: set[str]) -> bool:
    return any(final.get(o) is not None and final[o].name == name for o in outputs)


def _handoffs(builder: StageBuilder, graph: Graph, codes: list[StageCode], owner: dict[str, int],
              final: dict[str, Value], scopes: list[str]) -> None:
    """For each boundary, the values produced before it and used after it travel across it."""
    made: dict[str, int] = {}
    for op in graph.ops:
        for r in op.results:
            made[r.name] = owner[op.scope]
    for b in range(len(codes) - 1):
        crossing = []
        for op in graph.ops:
            if owner[op.scope] <= b:
                continue
            for v in op.operands:
                if v.name in made and made[v.name] <= b and final[v.name] not in crossing:
                    crossing.append(final[v.name])
        for k, value in enumerate(crossing):
            send, recv = builder.handoff(value, (codes[b].first_chip, codes[b].tp),
                                         (codes[b + 1].first_chip, codes[b + 1].tp), k * 64)
            codes[b].pieces.append(send)
            codes[b + 1].pieces.insert(k, recv)


def timeline(codes: list[StageCode], timing: Timing, chunks: int) -> list[Placed]:
    """Start cycle of every piece instance (see the module docstring)."""
    free = [timing.sync_cycles] * len(codes)
    # Each piece's length, and for a hand-off sender the cycle its data is on the far side,
    # from its start: the same for every chunk, so read off the templates once.
    spans = [[p.code.template.makespan for p in code.pieces] for code in codes]
    lands = [[_lands(p, timing) for p in code.pieces] for code in codes]
    placed: list[Placed] = []
    for c in range(chunks):
        arrival = 0
        for s in range(len(codes)):
            start = max(free[s], arrival)
            arrival = 0
            for i, (span, land) in enumerate(zip(spans[s], lands[s], strict=True)):
                placed.append(Placed(s, i, c, start))
                if land is not None:
                    arrival = max(arrival, start + land)
                start += span
            free[s] = start
    return placed


def _lands(piece: Piece, timing: Timing) -> int | None:
    """Cycles from a hand-off sender's start until its last message has crossed the wire."""
    if piece.kind != "send":
        return None
    sends = [ins for ins in piece.code.template.instrs if ins.op is Op.SEND]
    return max(ins.issue for ins in sends) + max(ins.peer.hops for ins in sends) * timing.link_latency_cycles


def _chunk_starts(placed: list[Placed], stages: int, chunks: int) -> list[list[int]]:
    """The cycle each stage starts each chunk: when the host's inputs for it must be in place."""
    starts = [[-1] * chunks for _ in range(stages)]
    for pl in placed:
        if starts[pl.stage][pl.chunk] < 0:
            starts[pl.stage][pl.chunk] = pl.start
    return starts


def activation_dtype(graph: Graph) -> DType:
    """The 16-bit type the graph's activations are held in: that of its logits."""
    return next(v.type.dtype for v in graph.outputs if v.type.dtype in ACTIVATION_DTYPES)


def lower_phase(phase: str, graph: Graph, stages: Sequence[Stage], system: SystemSpec, chunks: int,
                target_name: str) -> tuple[Program, list[StageCode]]:
    timing = Timing.of(system)
    codes = build_stages(graph, stages, system)
    placed = timeline(codes, timing, chunks)
    blocks = Blocks()
    for code in codes:
        sync(blocks, code, timing)
    # Each piece instance has its own block of tags (numbered densely), and a boundary's hand-off
    # (the sender's piece and the receiver's) one shared: the interpreter pairs messages only among
    # instances whose tags can meet, so these small universes keep its work per piece, not per chunk.
    tag_bases: dict[tuple, int] = {}
    runs: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (stage, piece) -> (start, tag base) per chunk
    fn_args: dict[tuple, int] = {}
    for pl in placed:
        piece: Piece = codes[pl.stage].pieces[pl.piece]
        key = (pl.chunk, "unit", pl.stage, pl.piece) if piece.kind == "unit" else \
            (pl.chunk, "handoff", pl.stage if piece.kind == "send" else pl.stage - 1)
        tag_base = tag_bases.setdefault(key, len(tag_bases)) * TAG_SPACE
        runs.setdefault((pl.stage, pl.piece), []).append((pl.start, tag_base))
    if len(tag_bases) * TAG_SPACE >= 2**31:
        raise DoesNotFitError(f"{phase}: {len(tag_bases):,} piece instances need more message tags than a "
                              f"tag holds (2**31 / {TAG_SPACE}); use fewer chips or a larger prefill chunk")
    for (stage, index), starts in runs.items():
        neighbours = (codes[stage - 1] if stage else None, codes[stage + 1] if stage + 1 < len(codes) else None)
        start, tag = np.array(starts, dtype=np.int64).T
        instantiate(blocks, codes[stage], index, start, tag, neighbours, system, fn_args)
    chips = max(c.first_chip + c.tp for c in codes)
    meta = {"stages": [{"index": c.index, "first_chip": c.first_chip, "tp": c.tp} for c in codes], "chunks": chunks,
            "fn_args": [dict(a) for a in fn_args], "chunk_starts": _chunk_starts(placed, len(codes), chunks),
            "activations": activation_dtype(graph).value}
    return blocks.program(phase, target_name, chips, timing.clock_hz, meta, dialect="queues"), codes

