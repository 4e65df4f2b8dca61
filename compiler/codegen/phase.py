"""One phase (decode, or prefill in chunks) of a plan to a Program: stages built, laid out, stitched in time.

Timeline. Every chip synchronises at cycle 0. A stage runs its pieces back to back;
it starts a chunk when it has finished the previous one and the chunk's hand-off
has arrived (the previous stage's SENDs plus hops x link latency). Decode is one
chunk of one token per sequence, so the makespan is the per-token latency.

Causal prefill runs a few variants of the chunk graph (compiler.plan.reach: each reads the cache
up to its own reach); chunk i runs its variant's pieces. Every variant's stages share one template
cache and one SRAM layout (the last, widest-reaching variant's, its arenas widened to hold every
variant's), so any chunk finds its weights, caches, ports and arenas at the same addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from compiler.codegen.blocks import Blocks
from compiler.codegen.instantiate import instantiate, stage_base, streams_used, sync
from compiler.codegen.stage import Piece, StageBuilder, StageCode, layout
from compiler.codegen.template import TAG_SPACE
from compiler.partition.chaining import lowered_together
from compiler.partition.cost import handoff_trails
from compiler.partition.units import signature
from compiler.passes.fuse import fuse_siblings
from compiler.passes.shard import shard_unit
from compiler.passes.subset import Subset, shard_subset
from compiler.plan import Stage
from ir.errors import ConfigError, DoesNotFitError
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
    variant: int = 0


def build_stages(graph: Graph, stages: Sequence[Stage], system: SystemSpec, builder: StageBuilder | None = None,
                 arena_floor: Sequence[Sequence[int]] = (), sram_base: int = 0) -> list[StageCode]:
    """Lower every stage of the plan: per-chip ops, shared templates, hand-offs, SRAM layout.
    `builder`: another variant's (its templates shared); `arena_floor[s][i]`: bytes piece i of stage s's
    arena takes at least (the widest of every variant's); `sram_base`: where the layout starts on every
    chip (above another Program's, whose chips these share)."""
    outputs = {v.name for v in graph.outputs}
    builder = builder or StageBuilder(system, graph.inputs, outputs, max(s.first_chip + s.tp for s in stages))
    scopes = graph.scopes()
    owner = _owner(scopes, stages)
    head = embedding_stage(graph, stages)
    if head is not None:  # the embedding runs on the head's chips (Stage.embedding)
        owner[scopes[0]] = head
    final: dict[str, Value] = {}
    codes = [StageCode(s.index, s.tp, s.first_chip, split=s.split, attention_tp=s.attention_tp, mlp_share=s.mlp_share)
             for s in stages]
    chip_ops: dict[str, list] = {}
    subsets: dict[str, Subset] = {}  # a subset stage's layers' parts (passes.subset), siblings fused
    for scope in scopes:  # in model order: a unit's inputs are sharded before it
        s = stages[owner[scope]]
        if s.attention_tp:
            sub = shard_subset(list(graph.ops_in(scope)), s.tp, s.attention_tp, final, s.split, s.mlp_share)
            dim = system.chip.matrix_dim
            subsets[scope] = replace(sub, **{part: fuse_siblings(getattr(sub, part), dim) for part in sub.parts})
            ops, values = sub.body + sub.tail, sub.values
        else:
            ops, values = shard_unit(list(graph.ops_in(scope)), s.tp, final, s.split)
        final.update(values)
        chip_ops[scope] = fuse_siblings(ops, system.chip.matrix_dim)  # as the plan costs them (shard_cost)
    uses = _last_use(graph, owner, final)
    for s, code in zip(stages, codes, strict=True):
        mine = [sc for sc in scopes if owner[sc] == s.index]
        if s.attention_tp:
            for scope in mine:
                made = (op for part in subsets[scope].parts for op in getattr(subsets[scope], part))
                exported = {r.name for op in made for r in op.results
                            if r.name in uses and uses[r.name] > (scopes.index(scope), s.index)
                            or _is_output(r.name, final, outputs)}
                code.pieces += _subset_pieces(builder, scope, subsets[scope], s, exported, code.aliases)
            continue
        kinds = [signature(list(graph.ops_in(sc))) for sc in mine]  # partition.units.unit_kinds' kinds
        for run in ([mine[i] for i in r] for r in lowered_together(kinds)):
            ops = [op for sc in run for op in chip_ops[sc]]
            exported = {r.name for op in ops for r in op.results
                        if r.name in uses and uses[r.name] > (scopes.index(run[-1]), s.index)
                        or _is_output(r.name, final, outputs)}
            code.pieces.append(builder.unit("+".join(run), ops, s.tp, s.first_chip, exported))
    _handoffs(builder, graph, codes, owner, final, scopes)
    if head is not None:
        _embedding_handoff(builder, codes, head, chip_ops[scopes[0]], chip_ops, owner)
    codes[-1].outputs = {v.name: final.get(v.name, v) for v in graph.outputs}
    for i, code in enumerate(codes):
        # Per stage: a tied table is a param of two stages, sharded over each one's own group (of one where
        # the embedding runs on the head's chips).
        values = {v.name: v for sc in scopes if owner[sc] == i for op in (*_others(subsets.get(sc)), *chip_ops[sc])
                  for v in (*op.operands, *op.results)}
        values.update((v.name, v) for v in graph.inputs)
        keep = {n for p in codes[i].pieces if p.kind == "send" for n in p.ports_in}
        keep |= {final[n].name for n in outputs if n in final}
        # A param two stages hold (a tied table: embedding and head) has each stage's own shard.
        own = {v.name: v for sc in scopes if owner[sc] == i for op in (*_others(subsets.get(sc)), *chip_ops[sc])
               for v in op.operands}
        layout(code, system, graph.inputs, values | own, keep, {v.name for v in graph.state},
               arena_floor[i] if arena_floor else (), _below(graph), sram_base)
    return codes


def embedding_stage(graph: Graph, stages: Sequence[Stage]) -> int | None:
    """The stage whose chips run the first stage's embedding unit (Stage.embedding), or None: the last, on
    which the head reads the same table (tied), of a plan of several stages. ConfigError for a layout the
    lowering cannot run."""
    at = [s.index for s in stages if s.embedding]
    if not at:
        return None
    why = embedding_refusal(graph, len(stages), at)
    if why:
        raise ConfigError(f"the embedding on the head's chips: {why}")
    return at[0]


def embedding_refusal(graph: Graph, stages: int, at: Sequence[int]) -> str | None:
    """Why the embedding unit cannot run on stage `at`'s chips (None: it can): it must be one stage, the last
    of several, the first unit must be the embedding alone, its table read by the head (a tied table), and
    its rows read only by the first stage's first layer."""
    scopes = graph.scopes()
    embed = list(graph.ops_in(scopes[0]))
    if len(at) != 1 or at[0] != stages - 1 or stages < 2:
        return "only the last of several stages (the head's) runs it"
    if len(embed) != 1 or embed[0].opcode is not Opcode.EMBED:
        return f"the first unit ({scopes[0]}) is not an embedding lookup alone"
    table = embed[0].operands[1].name
    if not any(v.name == table for op in graph.ops_in(scopes[-1]) for v in op.operands):
        return "the head does not read the embedding's table (the model's embeddings are not tied)"
    rows = embed[0].results[0].name
    if any(v.name == rows for op in graph.ops if op.scope not in scopes[:2] for v in op.operands):
        return f"units past {scopes[1]} read the embedding's rows"
    return None


def _subset_pieces(builder: StageBuilder, scope: str, sub: Subset, s: Stage, exported: set[str],
                   aliases: dict[str, str]) -> list[Piece]:
    """A layer of a stage whose attention runs on its first attention_tp ranks (passes.subset), one piece a part:
    the attention on those ranks and the zero partial sum on the others (`aliases`: at the attention's partial's
    address), every rank's all-reduce and residual add, then every rank's rest; with uneven MLP shares, the
    rest's body on every rank, the extra features' piece on the others (its sum over the body's partial), then
    every rank's tail. A unit whose attention is all of it ends at the mix; one without attention is its body."""
    a, t, first = s.attention_tp, s.tp, s.first_chip
    later = {v.name for part in sub.parts for op in getattr(sub, part) for v in op.operands}
    pieces = []
    end = max(i for i, part in enumerate(sub.parts) if getattr(sub, part))  # the part that hands the unit on
    for i, (part, (lo, hi)) in enumerate(zip(sub.parts, ((0, a), (a, t), (0, t), (0, t), (a, t), (0, t)),
                                             strict=True)):
        ops = getattr(sub, part)
        if not ops:
            continue
        out = {r.name for op in ops for r in op.results} & later
        if part in ("zeros", "extra"):  # its sum stands in for (zeros) or adds to (extra) a partial sum read later
            total = ops[-1].results[0].name
            aliases[total] = sub.mix[0].operands[0].name if part == "zeros" else ops[-1].operands[0].name
            out |= {total}
        piece = builder.unit(scope, ops, hi - lo, first + lo, exported if i == end else out)
        pieces.append(replace(piece, ranks=hi - lo, first_rank=lo) if hi - lo < t else piece)
    return pieces


def _others(sub: Subset | None) -> tuple:
    """A subset layer's ops beside its body and tail (its attention's, its zero sum, its all-reduce and residual
    add, its extra features')."""
    return (*sub.head, *sub.zeros, *sub.mix, *sub.extra) if sub is not None else ()


def _below(graph: Graph) -> set[str]:
    """Caches held in a tier below SRAM: a tiered attention's cold k and v (ir.ops.tier_operands)."""
    return {op.operands[i].name for op in graph.ops if op.opcode is Opcode.ATTENTION and "tier" in op.attr
            for i in tier_operands(len(op.operands))}


def build_variants(graphs: Sequence[Graph], stages: Sequence[Stage], system: SystemSpec, sram_base: int = 0
                   ) -> list[list[StageCode]]:
    """Every variant's stages (see the module docstring): one template cache, and the last variant's
    layout, widened to every variant's arenas, copied into the others."""
    outputs = {v.name for v in graphs[-1].outputs}
    builder = StageBuilder(system, graphs[-1].inputs, outputs, max(s.first_chip + s.tp for s in stages))
    earlier = [build_stages(g, stages, system, builder, sram_base=sram_base) for g in graphs[:-1]]
    floor = [[max(v[s].pieces[i].code.arena_bytes for v in earlier) for i in range(len(code.pieces))]
             for s, code in enumerate(earlier[0])] if earlier else ()
    last = build_stages(graphs[-1], stages, system, builder, floor, sram_base)
    for codes in earlier:
        for code, shared in zip(codes, last, strict=True):
            if [p.ports_out for p in code.pieces] != [p.ports_out for p in shared.pieces]:
                raise RuntimeError(f"stage {code.index}: prefill variants differ in their pieces")
            code.addr, code.arenas, code.inputs, code.memory_map = shared.addr, shared.arenas, shared.inputs, \
                shared.memory_map
    return [*earlier, last]


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
    """For each boundary, the values produced before it and used after it travel across it, in the order
    of their first use after it. One pass over the ops: a use at stage s of a value made at stage m
    crosses every boundary m .. s - 1."""
    made: dict[str, int] = {}
    for op in graph.ops:
        for r in op.results:
            made[r.name] = owner[op.scope]
    crossing: list[dict[str, Value]] = [{} for _ in range(len(codes) - 1)]
    for op in graph.ops:
        stage = owner[op.scope]
        for v in op.operands:
            for b in range(made.get(v.name, stage), stage):
                crossing[b].setdefault(final[v.name].name, final[v.name])
    system = builder.system
    for b, values in enumerate(crossing):
        sender, receiver = (codes[b].first_chip, codes[b].tp), (codes[b + 1].first_chip, codes[b + 1].tp)
        # a trailing hand-off's pieces stay on the streams above every other piece's of the stage (_leads)
        room = system.chip.streams - 1 - _top_stream(codes[b]) if handoff_trails(sender, receiver, system) else None
        for k, value in enumerate(values.values()):
            send, recv = builder.handoff(value, sender, receiver, k * 64, room)
            codes[b].pieces.append(send)
            codes[b + 1].pieces.insert(k, recv)


def _embedding_handoff(builder: StageBuilder, codes: list[StageCode], head: int, embed_ops: list,
                       chip_ops: dict[str, list], owner: dict[str, int]) -> None:
    """The head's stage runs the embedding (its own vocabulary shard of the tied table: partial rows reduced
    over its group) and hands the rows to the first stage: both pieces lead the head's, run for every chunk
    before its first (StageCode.early, timeline), the first stage receiving first."""
    rows = [r for op in embed_ops for r in op.results if r.name in
            {v.name for sc, ops in chip_ops.items() if owner[sc] == 0 for op in ops for v in op.operands}]
    code, first = codes[head], codes[0]
    embed = next(i for i, p in enumerate(code.pieces) if p.kind == "unit")
    piece = code.pieces.pop(embed)
    sends, recvs = [], []
    for k, value in enumerate(rows):
        send, recv = builder.handoff(value, (code.first_chip, code.tp), (first.first_chip, first.tp), k * 64)
        sends.append(send)
        recvs.append(recv)
    code.pieces[0:0] = [piece, *sends]
    code.early = 1 + len(sends)
    first.pieces[0:0] = recvs


def timeline(variants: Sequence[Sequence], per_chunk: Sequence[int], ready: int = 0,
             leads: list[list[list[int | None]]] | None = None, early: Sequence[int] = ()) -> list[Placed]:
    """Start cycle of every piece instance (see the module docstring), every stage free from `ready`;
    chunk c runs the pieces of variant `per_chunk[c]`. `variants[v][s].pieces`: stage s of variant v's
    (codegen.stage.Piece), each as long as its template, a hand-off sender's data on the far side `land`
    cycles after its start; `leads[v][s][i]`: for a hand-off that trails (cost.handoff_trails), the cycles
    until it has read what it sends: the stage goes on from there while its SENDs run, and its next
    trailing hand-off starts once they have ended (None: the piece holds the stage for its whole span).
    `early[s]`: stage s's leading pieces (StageCode.early: the head's embedding and its hand-off to the first
    stage), run for every chunk in turn before the stage's first chunk, on the same chips and so never beside
    its other pieces; the first stage starts a chunk once their data for it has landed.
    Any backend's pipeline: the chip stages', the wafer regions'."""
    # the same for every chunk of a variant, so read off the templates once
    spans = [[[p.code.template.makespan for p in st.pieces] for st in stages] for stages in variants]
    free = [ready] * len(spans[0])
    links = [ready] * len(spans[0])  # when each stage's trailing SENDs have ended
    early = list(early) or [0] * len(free)
    placed: list[Placed] = []
    landed = [0] * len(per_chunk)  # when each chunk's rows from the early pieces are across
    for s in (s for s, n in enumerate(early) if n):
        for c, v in enumerate(per_chunk):
            for i in range(early[s]):
                placed.append(Placed(s, i, c, free[s], v))
                p = variants[v][s].pieces[i]
                if p.land is not None:
                    landed[c] = max(landed[c], free[s] + p.land)
                free[s] += spans[v][s][i]
    for c, v in enumerate(per_chunk):
        arrival = landed[c]
        for s in range(len(free)):
            start = max(free[s], arrival)
            arrival = 0
            trail = leads[v][s] if leads else [None] * len(spans[v][s])
            for i in range(early[s], len(spans[v][s])):
                span, p, lead = spans[v][s][i], variants[v][s].pieces[i], trail[i]
                if lead is not None:
                    start = max(start, links[s])
                placed.append(Placed(s, i, c, start, v))
                if p.land is not None:
                    arrival = max(arrival, start + p.land)
                if lead is not None:
                    links[s] = start + span
                start += span if lead is None else lead
            free[s] = start
    return placed


def _leads(codes: list[StageCode], system: SystemSpec) -> list[list[int | None]]:
    """Per piece of each stage, for a hand-off that trails (cost.handoff_trails, and its streams, the chip's
    highest, clear of every other piece's of the stage): the cycles until its last READ has ended."""
    out = []
    for s, code in enumerate(codes):
        row: list[int | None] = [None] * len(code.pieces)
        if s + 1 < len(codes) and handoff_trails((code.first_chip, code.tp), (codes[s + 1].first_chip,
                                                                             codes[s + 1].tp), system):
            below = _top_stream(code)
            for i, p in enumerate(code.pieces):
                used = streams_used(p.code.template)
                if p.kind == "send" and (not used or used.start > below):
                    row[i] = max(ins.end for ins in p.code.template.instrs if ins.op is Op.READ)
        out.append(row)
    return out


def _top_stream(code: StageCode) -> int:
    """The highest physical stream the stage's pieces but its hand-off sends use (-1: none): a trailing
    hand-off keeps above it, on the streams those leave free."""
    return max((max(streams_used(p.code.template), default=-1) for p in code.pieces if p.kind != "send"), default=-1)


def chunk_starts(placed: list[Placed], stages: int, chunks: int, early: Sequence[int] = ()) -> list[list[int]]:
    """The cycle each stage starts each chunk: when the host's inputs for it must be in place. `early`: each
    stage's leading pieces (timeline), which are not the chunk's start; early_starts gives theirs."""
    early = list(early) or [0] * stages
    starts = [[-1] * chunks for _ in range(stages)]
    for pl in placed:
        if pl.piece >= early[pl.stage] and starts[pl.stage][pl.chunk] < 0:
            starts[pl.stage][pl.chunk] = pl.start
    return starts


def early_starts(placed: list[Placed], stage: int, chunks: int) -> list[int]:
    """The cycle a stage's leading pieces (timeline's `early`: the head's embedding) start each chunk: when
    the host's token ids for it must be in place on its chips."""
    starts = [-1] * chunks
    for pl in placed:
        if pl.stage == stage and pl.piece == 0 and starts[pl.chunk] < 0:
            starts[pl.chunk] = pl.start
    return starts


def tag_runs(phase: str, placed: list[Placed], kind: Callable[[Placed], str], group: Callable[[Placed], tuple],
             back: int | None = None) -> dict[tuple, list[tuple[int, int]]]:
    """Every piece instance's (start cycle, tag base), in time order, under the key `group` gives it (the
    instances one instantiate call places); `kind` is its piece's ("unit", "send" or "recv"). Each
    instance has its own block of tags (numbered densely), and a boundary's hand-off (the sender's piece
    and the receiver's) one shared: the interpreter pairs messages only among instances whose tags can
    meet, so these small universes keep its work per piece, not per chunk. `back`: the stage that hands off
    to the first (the head's embedding rows): the first stage's receivers share its block. Any backend's pieces."""
    tag_bases: dict[tuple, int] = {}
    runs: dict[tuple, list[tuple[int, int]]] = {}
    for pl in placed:
        k = kind(pl)
        key = (pl.chunk, "unit", pl.stage, pl.piece) if k == "unit" else \
            (pl.chunk, "handoff", pl.stage if k == "send" else back if pl.stage == 0 else pl.stage - 1)
        tag_base = tag_bases.setdefault(key, len(tag_bases)) * TAG_SPACE
        runs.setdefault(group(pl), []).append((pl.start, tag_base))
    if len(tag_bases) * TAG_SPACE >= 2**31:
        raise DoesNotFitError(f"{phase}: {len(tag_bases):,} piece instances need more message tags than a "
                              f"tag holds (2**31 / {TAG_SPACE}); use fewer chips or a larger prefill chunk")
    return runs


def activation_dtype(graph: Graph) -> DType:
    """The 16-bit type the graph's activations are held in: that of its logits."""
    return next(v.type.dtype for v in graph.outputs if v.type.dtype in ACTIVATION_DTYPES)


def _shared_variant(variants: list[list[StageCode]], pl: Placed) -> int:
    """The variant whose code places this piece instance: the last one's wherever the piece is the same
    there (a unit that does not attend, a hand-off), so one call places it for every chunk."""
    last = len(variants) - 1
    a, b = (variants[v][pl.stage].pieces[pl.piece] for v in (pl.variant, last))
    same = a.code is b.code and (a.params, a.ports_in, a.ports_out) == (b.params, b.ports_in, b.ports_out)
    return last if same else pl.variant


def lower_phase(phase: str, graphs: Sequence[Graph], chunks: Sequence[int], stages: Sequence[Stage],
                system: SystemSpec, target_name: str, sram_base: int = 0) -> tuple[Program, list[StageCode]]:
    """The phase's Program: `chunks[v]` consecutive chunks of variant graph `graphs[v]`, in order
    (decode: one graph, once), its SRAM layout from `sram_base`. Returns it and the stages' code (their
    shared layout)."""
    timing = Timing.of(system)
    variants = build_variants(graphs, stages, system, sram_base)
    codes = variants[-1]
    leads = [_leads(codes, system) for codes in variants]
    early = [c.early for c in codes]
    back = next((s for s, n in enumerate(early) if n), None)  # the head's stage, when it runs the embedding
    placed = timeline(variants, [v for v, n in enumerate(chunks) for _ in range(n)], timing.sync_cycles, leads,
                      early)
    blocks = Blocks()
    for code in codes:
        sync(blocks, code, timing)
    fn_args: dict[tuple, int] = {}
    runs = tag_runs(phase, placed, lambda pl: codes[pl.stage].pieces[pl.piece].kind,
                    lambda pl: (_shared_variant(variants, pl), pl.stage, pl.piece), back)
    for (variant, stage, index), starts in runs.items():
        own = variants[variant]
        code, piece = own[stage], own[stage].pieces[index]
        start, tag = np.array(starts, dtype=np.int64).T
        ranks = piece.ranks if piece.ranks is not None else code.tp - piece.first_rank
        instantiate(blocks, piece.code.template, code.first_chip + piece.first_rank, ranks,
                    start, tag, fn_args, stage_base(code, index), system, _neighbours(own, stage, back))
    chips = max(c.first_chip + c.tp for c in codes)
    total = sum(chunks)
    meta = {"stages": [{"index": c.index, "first_chip": c.first_chip, "tp": c.tp} for c in codes],
            "chunks": total, **({"variant_chunks": list(chunks)} if len(chunks) > 1 else {}),
            "fn_args": [dict(a) for a in fn_args], "chunk_starts": chunk_starts(placed, len(codes), total, early),
            **({"embedding": {"stage": back, "starts": early_starts(placed, back, total)}} if back is not None
               else {}),
            "activations": activation_dtype(graphs[-1]).value}
    return blocks.program(phase, target_name, chips, timing.clock_hz, meta, dialect="queues"), codes


def _neighbours(codes: Sequence[StageCode], stage: int, back: int | None) -> tuple[int, int]:
    """The first chips of the stages a stage receives from and sends to: the ones before and after it, the
    first stage's from and the head's to each other where the head runs the embedding (`back`)."""
    prev = codes[stage - 1].first_chip if stage else codes[back].first_chip if back is not None else 0
    nxt = codes[stage + 1].first_chip if stage + 1 < len(codes) else codes[0].first_chip if back == stage else 0
    return prev, nxt
