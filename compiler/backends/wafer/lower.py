"""Lower a wafer Plan to a Program whose "chips" are role streams: cost.py's model, instruction by instruction.

Role streams. The cores of a region run the same code except where they sit in its reduction trees
(the 2-way tree down the R rows; on the first row, the one along its C columns): cores of one
position class run one stream, replicated (targets.mesh.Roles, which the interpreter re-derives),
about log2 R + log2 C streams a region. Program.meta["replicas"][s] counts the cores running stream
s, meta["roles"][s] names it.

Schedule. Each op's steps (cost.describe, the cost model's own) become instructions: a Feed is row
0's SENDs (route FEED, never its hops) and every stream's RECV; an Mxm one MXM a stream of the core's
block; a Tree level its senders' SENDs and its receivers' accumulating RECVs (one message step each);
a RowOp one VOP or GATHER on row 0's streams. Phases are level-synchronous: every stream of a
region enters a step at the same cycle, and a RECV names the stream of its first core's partner
(pairing is by sender stream and tag; targets/wafer_timing.py). Hand-offs and the host's rows
(--embed-on-host) cross layout.entry's wire: over the fabric (units 0, 1) or the wafer link (2, 3).
Prefill chunks are pipelined through the stages by the shared timeline (codegen.phase): a stage
takes chunk c once it has finished chunk c - 1 and its hand-off SEND has read the result.

Simplification: attention's within-head reduction is timed on the last (shortest) levels of row 0's
column tree, for every row at once. A unit's instructions take the cycles its cost counts
(cost.steps_time: the same steps, level-synchronous, by the same Timing rules).

Templates. Every unit on a region shape, every hand-off's send and receive side and the host's
rows are the shared codegen's Templates (compiler/codegen/template.py): one Instr a role stream's
instruction (`Instr.stream`, a route on SENDs), timed here as it is emitted (level-synchronous
steps), on the core's physical streams and links. Identical units on one shape share a template,
and the shared instantiation (compiler/codegen/instantiate.py) places each on the region's streams
with shifted cycles, tags and addresses, its streams' result pair (P, Q) traded where a role's
activation sits on Q.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from compiler.backends.wafer.cost import ACT_BYTES, Feed, Mxm, RowOp, Shape, Step, Tree, X, describe, message_cycles
from compiler.backends.wafer.layout import entry
from compiler.backends.wafer.planner import host_input_bytes
from compiler.codegen.blocks import Blocks
from compiler.codegen.instantiate import instantiate
from compiler.codegen.lowering import Lowering
from compiler.codegen.phase import Placed, chunk_starts, tag_runs, timeline
from compiler.codegen.stage import Piece
from compiler.codegen.template import Instr, Peer, Ref, Space, Template
from compiler.codegen.unit import UnitCode
from compiler.frontend.options import CompileOptions
from compiler.partition.units import boundary_bytes, unit_kinds
from compiler.plan import Plan
from ir.contract import Route
from ir.graph import Graph, Op
from ir.isa import Op as Isa
from ir.program import Flag, Program
from targets.mesh import Roles
from targets.spec import SystemSpec
from targets.timing import Timing
from targets.wafer_timing import FABRIC_RECV, FABRIC_SEND

P, Q = 1, 3  # an op's result (partial sums) alternates between these two: a stream is never
#              rewritten by the instruction that reads it (the interpreter's write-after-read rule)


def _stream(delta: int) -> Peer:
    """A stream `delta` from the instance's first: a role of this region (or of a neighbouring one)."""
    return Peer("stream", delta, 1, 1, 0)


@dataclass
class _Steps:
    """A region's template as it is emitted: each role's result stream, the cycle, tags and arena so far."""

    t: Template
    roles: Roles
    shape: Shape
    cur: list[int] = field(default_factory=list)
    now: int = 0
    tags: int = 0
    addr: int = 0

    @classmethod
    def of(cls, name: str, timing: Timing, roles: Roles, shape: Shape) -> _Steps:
        return cls(Template(name, timing, physical=True, pair=(P, Q)), roles, shape, [P] * len(roles))

    def fresh(self, role: int) -> int:
        """The other result stream of `role`, made current (the one the next result is written to)."""
        self.cur[role] = Q if self.cur[role] == P else P
        return self.cur[role]

    def put(self, role: int, op: Isa, cycles: int, at: int | None = None, **fields) -> None:
        self.t.add(Instr(op, cycles, stream=role, issue=self.now if at is None else at, **fields))

    def message(self, senders: list[int], receivers: list[tuple[int, int]], route: Route, hops: int, nbytes: int,
                src: int | None, out: int | None, accumulate: bool = False, level: int = -1) -> None:
        """One message step: `senders` SEND stream `src` (None: their result) now along `route` (tree
        `level`), `hops` away; each (receiver, named sender) RECVs into `out` (None: a fresh result
        stream; accumulating onto the last). The SEND names its route, never its hops."""
        tm, tag = self.t.timing, self.tags
        self.tags += 1
        for s in senders:
            self.put(s, Isa.SEND, tm.link(nbytes, FABRIC_SEND), unit=FABRIC_SEND, src_bytes=nbytes,
                     s_a=self.cur[s] if src is None else src, peer=_stream(receivers[0][0]), tag=tag, route=route,
                     imm=level)
        arrive, done = (self.now + c for c in message_cycles(hops, nbytes, tm))
        for r, s in receivers:
            extra = {"s_c": self.cur[r], "flags": Flag.ACCUMULATE} if accumulate else {}
            self.put(r, Isa.RECV, tm.recv(nbytes, FABRIC_RECV), at=arrive, unit=FABRIC_RECV, dst_bytes=nbytes,
                     s_out=self.fresh(r) if out is None else out, peer=_stream(s), tag=tag, **extra)
        self.now = done

    def tree(self, s: Tree) -> None:
        """A 2-way tree along the rows (row 0's roots receive at every level) or along row 0's columns, its
        levels Tree.levels: at level j the cores h_j on send their partials h_j back, or with `broadcast`
        the result runs back out, last level first."""
        ro, nbytes = self.roles, s.values * ACT_BYTES
        kind, halves, role_at, route = ("row", ro.row_halves, ro.row_role, Route.ROWS) if s.axis == "rows" else \
            ("root", ro.col_halves, ro.col_role, Route.COLS)
        line = [i for i, k in enumerate(ro.keys) if k[0] == kind]
        order = range(len(halves) - len(s.levels(self.shape)), len(halves))
        for j in reversed(order) if s.broadcast else order:
            h = halves[j]
            up = [i for i in line if ro.keys[i][1] == j]  # send at level j, h cores back
            down = [i for i in line if j in ro.keys[i][2]]  # receive at level j, from h cores on
            if s.broadcast:
                self.message(down, [(i, role_at[ro.first[i] - h]) for i in up], route, h, nbytes, None, None, level=j)
                continue
            takers = [(i, role_at[ro.first[i] + h]) for i in down] + [(i, ro.row_role[h]) for i in ro.root
                                                                      if s.axis == "rows"]
            self.message(up, takers, route, h, nbytes, None, None, accumulate=True, level=j)

    def alloc(self, nbytes: int) -> int:
        at, self.addr = self.addr, self.addr + nbytes
        return at

    def step(self, s: Step, addr: int) -> None:
        """One step of an op (cost.describe) as its role streams' instructions; the op's params from `addr`."""
        root, tm, far = self.roles.root, self.t.timing, self.shape.rows + self.shape.cols - 2
        match s:
            case Feed(row0=False):  # into every core's input stream
                everyone = [(r, root[0]) for r in range(len(self.roles))]
                self.message(root, everyone, Route.FEED, far, s.values * ACT_BYTES, None, X)
            case Feed():  # the row's GATHER result along row 0, into a fresh result
                self.message(root, [(r, root[0]) for r in root], Route.FEED, far, s.values * ACT_BYTES, X, None)
            case Mxm():
                for r in range(len(self.roles)):
                    self.put(r, Isa.MXM, tm.mxm(s.m, s.k, s.n, s.fmt), src=Ref(Space.PARAM, 0, addr + s.at),
                             src_bytes=s.src_bytes, s_b=s.s_b, s_out=self.fresh(r) if s.out is None else s.out, m=s.m,
                             k=s.k, n=s.n, fmt=s.fmt, flags=s.flags | Flag.LAST)
                self.now += tm.mxm(s.m, s.k, s.n, s.fmt)
            case Tree():
                self.tree(s)
            case RowOp():
                cycles = s.cycles(tm)
                for r in root:
                    if s.op is Isa.VOP:
                        self.put(r, s.op, cycles, fn=s.fn, src_bytes=s.nbytes, s_a=self.cur[r], s_out=self.fresh(r),
                                 m=s.m, n=s.n)
                    else:
                        self.put(r, s.op, cycles, src=Ref(Space.PARAM, 0, addr), src_bytes=s.nbytes, s_out=X, m=s.m,
                                 n=s.n)
                self.now += cycles


def _unit(ops: list[Op], shape: Shape, roles: Roles, wafer: SystemSpec, timing: Timing, rows_scale: float
          ) -> tuple[Piece, int]:
    """A unit's piece on a region shape (from stream 0, address 0) and the per-core bytes it holds."""
    e = _Steps.of(ops[0].scope or "unit", timing, roles, shape)
    for op in ops:
        w = describe(op, shape, wafer, rows_scale)
        addr = e.alloc(w.weight_bytes + w.state_bytes)
        for step in w.steps:
            e.step(step, addr)
    return Piece(UnitCode(e.t), flips=tuple(c != P for c in e.cur)), e.addr


@dataclass(frozen=True)
class _Stage:
    """A stage's region, its roles, its first stream, its pieces and the bytes its units hold a core."""

    region: object
    roles: Roles
    base: int
    pieces: list[Piece]
    resident_bytes: int
    entry_bytes: int


def lower(plan: Plan, decode: Graph, prefill: Graph, chunks: Sequence[Graph], system: SystemSpec,
          options: CompileOptions, progress: Callable[[str], None]) -> Lowering:
    """Decode once; prefill as the plan's chunks, pipelined through the regions (role streams). Every chunk
    streams the whole cache (the backend is not causal): the prompt's graph at a chunk's rows, not the
    per-reach `chunks` a causal backend lowers."""
    crossing = boundary_bytes(decode)
    chunk = plan.prefill["chunk_tokens"]
    host = host_input_bytes(decode)
    progress("scheduling decode")
    d = lower_wafer("decode", decode, plan.stages, system, crossing, 1.0, host_bytes=host)
    progress("scheduling prefill")
    p = lower_wafer("prefill", prefill, plan.stages, system, [b * chunk for b in crossing], chunk / options.prompt,
                    plan.prefill["chunks"], {"chunk_tokens": chunk}, host_bytes=host * chunk)
    return Lowering(d, p, prefill, {"wafer": True, "stages": _stage_memory(d, p)})


def _stage_memory(decode: Program, prefill: Program) -> list[dict]:
    """Each region's per-core resident bytes and its role streams (every core of a region has one layout)."""
    return [{"index": d["index"], "region": d["region"], "first_stream": d["first_stream"], "streams": d["streams"],
             "resident_bytes_per_core": d["resident_bytes_per_core"],
             "prefill_resident_bytes_per_core": p["resident_bytes_per_core"]}
            for d, p in zip(decode.meta["stages"], prefill.meta["stages"], strict=True)]


def lower_wafer(phase: str, graph: Graph, stages, wafer: SystemSpec, crossing: list[int], rows_scale: float,
                chunks: int = 1, meta: dict | None = None, host_bytes: int = 0) -> Program:
    """One phase as role streams: decode, or `chunks` prefill chunks of `rows_scale` of the prompt's rows,
    pipelined through the stages (a stage takes chunk c once it has finished chunk c - 1 and sent it on)."""
    timing = Timing.of(wafer)
    plan, templates = _stages(graph, stages, wafer, timing, crossing, rows_scale)
    for prev, cur in zip([None, *plan], plan, strict=False):  # the host's rows into the first, then hand-offs
        if prev is not None or host_bytes:
            pieces = _into(timing, wafer, prev, cur, host_bytes if prev is None else cur.entry_bytes)
            cur.pieces.insert(0, pieces[-1])
            if prev is not None:
                prev.pieces.append(pieces[0])
    placed = timeline([plan], [0] * chunks)
    on_q = [False] * (plan[-1].base + len(plan[-1].roles))  # per stream: its activation sits on Q, not P

    def traded(pl: Placed) -> tuple:
        """The instance's key: its piece and which of its streams trade P and Q (as those before it left them)."""
        base, p = plan[pl.stage].base, plan[pl.stage].pieces[pl.piece]
        swap = tuple(on_q[base:base + len(p.flips)])
        for s, flip in enumerate(p.flips):
            on_q[base + s] ^= flip
        return pl.stage, pl.piece, swap

    blocks = Blocks()
    for (stage, index, swap), runs in tag_runs(phase, placed, lambda pl: plan[pl.stage].pieces[pl.piece].kind,
                                               traded).items():
        base, p = plan[stage].base, plan[stage].pieces[index]
        start, tag = np.array(runs, np.int64).T
        instantiate(blocks, p.code.template, base, 1, start, tag, {}, lambda ref, a=p.addr: a, wafer, swap=swap)
    stage_meta = [{"index": st.index, "first_stream": p.base, "streams": len(p.roles), "region": st.region.to_dict(),
                   "resident_bytes_per_core": p.resident_bytes}
                  for st, p in zip(stages, plan, strict=True)]
    replicas = [n for p in plan for n in p.roles.replicas]
    info = {"wafer": True, "replicas": replicas, "roles": [[st.index, *key] for st, p in zip(stages, plan, strict=True)
                                                           for key in p.roles.keys],
            "stages": stage_meta, "chunks": chunks, "chunk_starts": chunk_starts(placed, len(plan), chunks),
            "templates": templates,
            "cores": sum(replicas)} | (meta or {})
    return blocks.program(phase, wafer.name, len(replicas), wafer.chip.clock_hz, info, dialect="roles")


def _stages(graph: Graph, stages, wafer: SystemSpec, timing: Timing, crossing: list[int], rows_scale: float
            ) -> tuple[list[_Stage], int]:
    """Every stage's roles and units' templates (one per distinct unit and region shape), and how many."""
    scopes, kinds, ops = unit_kinds(graph)  # the planner's kinds (_Costed): one template a kind and shape
    index = {s: i for i, s in enumerate(scopes)}
    templates: dict[tuple, tuple[Piece, int]] = {}
    plan, base = [], 0
    for st in stages:
        shape = st.region.shape
        roles = Roles.of(shape.rows, shape.cols)
        pieces, addr = [], 0
        for u in range(index[st.first_unit], index[st.last_unit] + 1):
            key = (kinds[u], shape)
            if key not in templates:
                templates[key] = _unit(ops[kinds[u]], shape, roles, wafer, timing, rows_scale)
            piece, nbytes = templates[key]
            pieces.append(replace(piece, addr=addr))
            addr += nbytes
        plan.append(_Stage(st.region, roles, base, pieces, addr, crossing[index[st.first_unit]]))
        base += len(roles)
    return plan, len(templates)


def _into(timing: Timing, wafer: SystemSpec, prev: _Stage | None, cur: _Stage, nbytes: int) -> list[Piece]:
    """`nbytes` into `cur`'s row 0 over layout.entry's wire, received into a fresh result stream (Q: the
    roles' pair traded): from the previous region's row 0, the sending piece (its tag the receiving piece's,
    placed next) and the receiving one; from the host (`prev` None: --embed-on-host, the step's embedding
    rows over the wafer's system I/O link), the receiving piece alone, its RECVs once the rows are in."""
    hop = entry(None if prev is None else prev.region, cur.region, nbytes, wafer)
    land, pieces, peer = timing.arrival(hop.hops, hop.unit), [], Peer("host", 0, 1, 1, 0)
    if prev is not None:
        send = Template("hand-off send", timing, physical=True, pair=(P, Q))
        for s in prev.roles.root:
            send.add(Instr(Isa.SEND, timing.link(hop.nbytes, hop.unit), unit=hop.unit, stream=s, issue=0,
                           src_bytes=hop.nbytes, s_a=P, peer=_stream(cur.base + cur.roles.root[0] - prev.base), tag=0,
                           route=Route.NEXT_WAFER if hop.far else Route.NEXT_REGION))
        pieces.append(Piece(UnitCode(send), kind="send", land=land, flips=(False,) * len(prev.roles.root)))
        peer = _stream(prev.base + prev.roles.root[0] - cur.base)
    recv = Template("host input" if prev is None else "hand-off receive", timing, physical=True, pair=(P, Q))
    for r in cur.roles.root:
        recv.add(Instr(Isa.RECV, timing.recv(hop.nbytes, hop.unit + 1), unit=hop.unit + 1, stream=r,
                       issue=land if prev is None else 0, dst_bytes=hop.nbytes, s_out=Q, peer=peer, tag=0))
    roots = len(cur.roles.root)
    return [*pieces, Piece(UnitCode(recv), kind="unit" if prev is None else "recv", flips=(True,) * roots)]
