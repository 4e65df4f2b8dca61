"""Lower a wafer Plan to a Program whose "chips" are role streams: cost.py's model, instruction by instruction.

Role streams. The cores of a region run the same code except where they sit in its reduction trees
(the 2-way tree down the R rows; on the first row, the one along its C columns): cores of one
position class run one stream, replicated (targets.mesh.Roles, which the interpreter re-derives),
about log2 R + log2 C streams a region. Program.meta["replicas"][s] counts the cores running stream
s, meta["roles"][s] names it.

Schedule. Phases are level-synchronous: every stream of a region enters a phase at the same
cycle, so all sends of one tree level start together, and a RECV names the stream of its first
core's partner (pairing is by sender stream and tag; targets/wafer_timing.py). Per op:

  matmul     feed: row 0 SENDs the input (route FEED: R + C - 2 hops) and every stream
             RECVs its K-slice; local: one MXM of the core's k/R x n/C block (weights streamed
             from SRAM, simd_width MACs a cycle); reduce: the row tree, a level's senders SEND
             their partials h_j rows up, the receivers RECV with ACCUMULATE (one message step each)
  attention  feed; an MXM over the core's cached keys and one over its values (KEYS, VALUES);
             the within-head score reduction; softmax max and sum and the weighted values down
             the row tree
  vector ops one VOP on row 0's cores (bytes and elements of 1/C of the op); a norm reduces and
             broadcasts along the column tree, argmax reduces along it
  embed      row 0 GATHERs its slice of the token's row and sends it out (R + C - 2 hops)
  hand-off   the previous region's row 0 SENDs over the shared edge's links (fabric unit 0), or
             across the wafer link (unit 2) with the half-perimeters of both meshes as hops
  host rows  with --embed-on-host, the first region's row 0 RECVs each step's embedding rows from the
             host (peer HOST) over the wafer link (unit 3), half a mesh perimeter from its I/O edge

Prefill chunks are pipelined through the stages by the shared timeline (codegen.phase): a stage
takes chunk c once it has finished chunk c - 1 and its hand-off SEND has read the result.

Simplifications, all small against the model: the input slice of a matmul feeds the MXM from
the link and is not re-read from SRAM; attention's within-head reduction is timed on the last
(shortest) levels of row 0's column tree, for every row at once; the attention MXMs count the
core's whole tile (features per core rounded up), where the model averages the op's flops over
the cores.

Templates. Every unit on a region shape, every hand-off's send and receive side and the host's
rows are the shared codegen's Templates (compiler/codegen/template.py): one Instr a role stream's
instruction (`Instr.stream`, a route on SENDs), timed here as it is emitted (level-synchronous
steps), on the core's physical streams and links. Identical units on one shape share a template,
and the shared instantiation (compiler/codegen/instantiate.py) places each on the region's streams
with shifted cycles, tags and addresses, its streams' result pair (P, Q) traded where a role's
activation sits on Q.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from compiler.backends.wafer.cost import ACT_BYTES, Shape, head_split, matmul_dims, op_rows, resident_bytes, row_split
from compiler.backends.wafer.planner import host_input_bytes
from compiler.codegen.blocks import Blocks
from compiler.codegen.instantiate import instantiate
from compiler.codegen.lowering import Lowering
from compiler.codegen.phase import chunk_starts, timeline
from compiler.codegen.template import Instr, Peer, Ref, Space, Template
from compiler.frontend.options import CompileOptions
from compiler.partition.units import boundary_bytes, signature
from compiler.plan import Plan
from ir.contract import Route
from ir.graph import Graph, Op
from ir.isa import Fmt, Fn
from ir.isa import Op as Isa
from ir.ops import Opcode
from ir.program import Flag, Program
from targets.mesh import Roles, region_hops, shared_edge
from targets.spec import SystemSpec
from targets.timing import Timing
from targets.wafer_timing import FABRIC_RECV, FABRIC_SEND, WAFER_RECV, WAFER_SEND

X, S = 0, 2  # streams: an op's input slice, attention scores
P, Q = 1, 3  # an op's result (partial sums) alternates between these two: a stream is never
#              rewritten by the instruction that reads it (the interpreter's write-after-read rule)
FMT = {"fp16": Fmt.F16, "fp8": Fmt.FP8, "int8": Fmt.I8, "int4": Fmt.I4}
VECTOR_FN = {Opcode.ADD: Fn.ADD, Opcode.MUL: Fn.MUL, Opcode.SILU: Fn.SILU, Opcode.GELU: Fn.GELU,
             Opcode.RMSNORM: Fn.RMSNORM, Opcode.ROPE: Fn.ROPE, Opcode.SOFTMAX: Fn.SOFTMAX,
             Opcode.ARGMAX: Fn.ARGMAX}


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
        arrive = self.now + tm.arrival(hops)
        for r, s in receivers:
            extra = {"s_c": self.cur[r], "flags": Flag.ACCUMULATE} if accumulate else {}
            self.put(r, Isa.RECV, tm.recv(nbytes, FABRIC_RECV), at=arrive, unit=FABRIC_RECV, dst_bytes=nbytes,
                     s_out=self.fresh(r) if out is None else out, peer=_stream(s), tag=tag, **extra)
        self.now = arrive + tm.recv(nbytes, FABRIC_RECV)

    def feed(self, values: int) -> None:
        """The input of an op, from row 0 to every core: R + C - 2 hops, one step."""
        everyone = [(r, self.roles.root[0]) for r in range(len(self.roles))]
        self.message(self.roles.root, everyone, Route.FEED, self.shape.rows + self.shape.cols - 2, values * ACT_BYTES,
                     None, X)

    def row_tree(self, values: int, times: int = 1) -> None:
        """The 2-way tree down the rows: at level j the rows [h_j, a_j) send their partials h_j rows up."""
        ro = self.roles
        for _ in range(times):
            for j, h in enumerate(ro.row_halves):
                senders = [i for i, k in enumerate(ro.keys) if k[0] == "row" and k[1] == j]
                takers = [(i, ro.row_role[ro.first[i] + h]) for i, k in enumerate(ro.keys)
                          if k[0] == "row" and j in k[2]]
                takers += [(i, ro.row_role[h]) for i in ro.root]
                self.message(senders, takers, Route.ROWS, h, values * ACT_BYTES, None, None, accumulate=True, level=j)

    def col_tree(self, values: int, levels: int | None = None, broadcast: bool = False) -> None:
        """The 2-way tree along row 0's columns; `broadcast` runs it back down. With `levels`, only the
        last (shortest) levels: a reduction within groups of about 2^levels columns, timed as one."""
        ro = self.roles
        height = len(ro.col_halves)
        order = range(height - (height if levels is None else min(levels, height)), height)
        for j in reversed(order) if broadcast else order:
            h = ro.col_halves[j]
            low = [i for i in ro.root if ro.keys[i][1] == j]
            high = [i for i in ro.root if j in ro.keys[i][2]]
            if broadcast:  # the partner below sends the result back
                pairs = [(i, ro.col_role[ro.first[i] - h]) for i in low]
                self.message(high, pairs, Route.COLS, h, values * ACT_BYTES, None, None, level=j)
            else:
                pairs = [(i, ro.col_role[ro.first[i] + h]) for i in high]
                self.message(low, pairs, Route.COLS, h, values * ACT_BYTES, None, None, accumulate=True, level=j)

    def mxm(self, roles: list[int], m: int, k: int, n: int, fmt: Fmt, src: int, nbytes: int, s_b: int,
            out: int | None, flags: int = 0) -> None:
        cycles = self.t.timing.mxm(m, k, n, fmt)
        for r in roles:
            self.put(r, Isa.MXM, cycles, src=Ref(Space.PARAM, 0, src), src_bytes=nbytes, s_b=s_b,
                     s_out=self.fresh(r) if out is None else out, m=m, k=k, n=n, fmt=fmt, flags=flags | Flag.LAST)
        self.now += cycles

    def alloc(self, nbytes: int) -> int:
        at, self.addr = self.addr, self.addr + nbytes
        return at


def _matmul(e: _Steps, op: Op, rows_scale: float, precision: str, kv: str) -> None:
    m, (k, n) = op_rows(op, rows_scale), matmul_dims(op)
    kr, nc = math.ceil(k / e.shape.rows), math.ceil(n / e.shape.cols)
    addr = e.alloc(resident_bytes(op, e.shape))
    e.feed(m * kr)
    fmt = FMT[precision]
    e.mxm(list(range(len(e.roles))), m, kr, nc, fmt, addr, math.ceil(kr * nc * fmt.bits / 8), X, None)
    e.row_tree(m * nc)


def _attention(e: _Steps, op: Op, rows_scale: float, precision: str, kv: str) -> None:
    m, region = op_rows(op, rows_scale), e.shape
    heads, q_cols, group, split = head_split(op, region)
    per_core = resident_bytes(op, region)
    addr = e.alloc(per_core)
    e.feed(m * q_cols)
    fmt = Fmt.F16 if kv == "fp16" else Fmt.I8
    feats = math.ceil(op.attr["kv_heads"] * op.attr["head_dim"] / region.cols)
    tokens = max(1, math.ceil(per_core / 2 / (feats * fmt.bits / 8)))  # cached tokens on this core
    half = math.ceil(feats * tokens * fmt.bits / 8)
    everyone = list(range(len(e.roles)))
    e.mxm(everyone, m * group, feats, tokens, fmt, addr, half, X, S, Flag.KEYS)
    e.mxm(everyone, m * group, feats, tokens, fmt, addr + half, half, S, None, Flag.VALUES)
    e.col_tree(m * group, levels=math.ceil(math.log2(split)) if split > 1 else 0)
    e.row_tree(m * heads, times=2)
    e.row_tree(m * q_cols)


def _embed(e: _Steps, op: Op, rows_scale: float, precision: str, kv: str) -> None:
    m = op_rows(op, rows_scale)
    cols = math.ceil(op.results[0].type.shape[-1] / e.shape.cols)
    addr = e.alloc(resident_bytes(op, e.shape))
    nbytes = m * cols * ACT_BYTES
    cycles = e.t.timing.mem(nbytes)
    for r in e.roles.root:
        e.put(r, Isa.GATHER, cycles, src=Ref(Space.PARAM, 0, addr), src_bytes=nbytes, s_out=X, m=m, n=cols)
    e.now += cycles
    root = e.roles.root
    e.message(root, [(r, root[0]) for r in root], Route.FEED, e.shape.rows + e.shape.cols - 2, nbytes, X, None)


def _vector(e: _Steps, op: Op, rows_scale: float, precision: str, kv: str) -> None:
    m, per_core, moved = row_split(op, e.shape, rows_scale)
    nbytes = math.ceil(moved / e.shape.cols)
    e.alloc(resident_bytes(op, e.shape))
    fn = VECTOR_FN[op.opcode]
    cycles = e.t.timing.vop(fn, m * per_core, nbytes, rows=m)
    for r in e.roles.root:
        e.put(r, Isa.VOP, cycles, fn=fn, src_bytes=nbytes, s_a=e.cur[r], s_out=e.fresh(r), m=m, n=per_core)
    e.now += cycles
    if op.opcode is Opcode.RMSNORM:
        e.col_tree(m)
        e.col_tree(m, broadcast=True)
    elif op.opcode is Opcode.ARGMAX:
        e.col_tree(2 * m)


# The wafer backend's emission rules, by opcode: an op without one is refused before planning.
LOWER = {Opcode.MATMUL: _matmul, Opcode.ATTENTION: _attention, Opcode.EMBED: _embed,
         **{op: _vector for op in VECTOR_FN}}


@dataclass(frozen=True)
class _Piece:
    """A template a stage runs every chunk (a unit, the host's rows, a hand-off's side) on its streams
    from `base` with its address; the roles whose result it leaves on the other stream of the pair; for
    a hand-off sender, the cycles from its start until the data is on the far side."""

    t: Template
    base: int
    streams: int
    tags: int
    addr: int = 0
    flips: tuple[bool, ...] = ()
    land: int | None = None


def _unit(ops: list[Op], shape: Shape, roles: Roles, timing: Timing, rows_scale: float, precision: str,
          kv: str) -> tuple[_Piece, int]:
    """A unit's piece on a region shape (from stream 0, address 0) and the per-core bytes it holds."""
    e = _Steps.of(ops[0].scope or "unit", timing, roles, shape)
    for op in ops:
        LOWER[op.opcode](e, op, rows_scale, precision, kv)
    return _Piece(e.t, 0, len(roles), e.tags, flips=tuple(c != P for c in e.cur)), e.addr


@dataclass(frozen=True)
class _Stage:
    """A stage's region, its roles, its first stream, its pieces and the bytes its units hold a core."""

    region: object
    roles: Roles
    base: int
    pieces: list[_Piece]
    resident_bytes: int
    entry_bytes: int


class _Placer:
    """Template instances in time order, each on its first stream with its address, tags and traded
    streams; `program` instantiates every distinct one once over all its start cycles."""

    def __init__(self, streams: int):
        self.on_q = [False] * streams  # per stream: its activation sits on Q where templates say P
        self.tags = 0
        self._runs: dict[tuple, tuple[Template, list[tuple[int, int]]]] = {}

    def place(self, t: Template, base: int, streams: int, start: int, tags: int, addr: int = 0,
              flips: tuple[bool, ...] = ()) -> None:
        """Template `t` on streams base .. base + streams - 1 from cycle `start`, with the next `tags` tags;
        `flips`: the streams whose activation it leaves on the other stream of the pair."""
        swap = tuple(self.on_q[base:base + streams])
        self._runs.setdefault((id(t), base, addr, swap), (t, []))[1].append((start, self.tags))
        self.tags += tags
        for s, flip in enumerate(flips):
            self.on_q[base + s] ^= flip

    def program(self, phase: str, wafer: SystemSpec, streams: int, meta: dict) -> Program:
        blocks = Blocks()
        for (_, base, addr, swap), (t, runs) in self._runs.items():
            start, tag = np.array(runs, np.int64).T
            instantiate(blocks, t, base, 1, start, tag, {}, lambda ref, a=addr: a, wafer, swap=swap)
        return blocks.program(phase, wafer.name, streams, wafer.chip.clock_hz, meta, dialect="roles")


def lower(plan: Plan, decode: Graph, prefill: Graph, chunk_graph: Graph, system: SystemSpec, options: CompileOptions,
          progress: Callable[[str], None]) -> Lowering:
    """Decode once; prefill as the plan's chunks, pipelined through the regions (role streams)."""
    crossing = boundary_bytes(decode)
    chunk = plan.prefill["chunk_tokens"]
    host = host_input_bytes(decode)
    progress("scheduling decode")
    d = lower_wafer("decode", decode, plan.stages, system, crossing, 1.0, options.precision, options.kv_precision,
                    host_bytes=host)
    progress("scheduling prefill")
    p = lower_wafer("prefill", prefill, plan.stages, system, [b * chunk for b in crossing], chunk / options.prompt,
                    options.precision, options.kv_precision, plan.prefill["chunks"], {"chunk_tokens": chunk},
                    host_bytes=host * chunk)
    return Lowering(d, p, prefill, {"wafer": True, "stages": _stage_memory(d, p)})


def _stage_memory(decode: Program, prefill: Program) -> list[dict]:
    """Each region's per-core resident bytes and its role streams (every core of a region has one layout)."""
    return [{"index": d["index"], "region": d["region"], "first_stream": d["first_stream"], "streams": d["streams"],
             "resident_bytes_per_core": d["resident_bytes_per_core"],
             "prefill_resident_bytes_per_core": p["resident_bytes_per_core"]}
            for d, p in zip(decode.meta["stages"], prefill.meta["stages"], strict=True)]


def lower_wafer(phase: str, graph: Graph, stages, wafer: SystemSpec, crossing: list[int], rows_scale: float,
                precision: str, kv_precision: str, chunks: int = 1, meta: dict | None = None,
                host_bytes: int = 0) -> Program:
    """One phase as role streams: decode, or `chunks` prefill chunks of `rows_scale` of the prompt's rows,
    pipelined through the stages (a stage takes chunk c once it has finished chunk c - 1 and sent it on)."""
    timing = Timing.of(wafer)
    plan, templates = _stages(graph, stages, timing, crossing, rows_scale, precision, kv_precision)
    if host_bytes:
        plan[0].pieces.insert(0, _host_input(timing, wafer, plan[0], host_bytes))
    for prev, cur in zip(plan, plan[1:], strict=False):
        send, recv = _handoff(timing, wafer, prev, cur)
        prev.pieces.append(send)
        cur.pieces.insert(0, recv)
    placed = timeline([[[p.t.makespan for p in st.pieces] for st in plan]],
                      [[[p.land for p in st.pieces] for st in plan]], [0] * chunks)
    out = _Placer(plan[-1].base + len(plan[-1].roles))
    for pl in placed:
        p = plan[pl.stage].pieces[pl.piece]
        out.place(p.t, p.base, p.streams, pl.start, p.tags, p.addr, p.flips)
    stage_meta = [{"index": st.index, "first_stream": p.base, "streams": len(p.roles), "region": st.region.to_dict(),
                   "resident_bytes_per_core": p.resident_bytes}
                  for st, p in zip(stages, plan, strict=True)]
    replicas = [n for p in plan for n in p.roles.replicas]
    info = {"wafer": True, "replicas": replicas, "roles": [[st.index, *key] for st, p in zip(stages, plan, strict=True)
                                                           for key in p.roles.keys],
            "stages": stage_meta, "chunks": chunks, "chunk_starts": chunk_starts(placed, len(plan), chunks),
            "templates": templates,
            "cores": sum(replicas)} | (meta or {})
    return out.program(phase, wafer, len(replicas), info)


def _stages(graph: Graph, stages, timing: Timing, crossing: list[int], rows_scale: float, precision: str,
            kv: str) -> tuple[list[_Stage], int]:
    """Every stage's roles and units' templates (one per distinct unit and region shape), and how many."""
    scopes = graph.scopes()
    index = {s: i for i, s in enumerate(scopes)}
    units = [list(graph.ops_in(s)) for s in scopes]
    templates: dict[tuple, tuple[_Piece, int]] = {}
    plan, base = [], 0
    for st in stages:
        shape = st.region.shape
        roles = Roles.of(shape.rows, shape.cols)
        pieces, addr = [], 0
        for u in range(index[st.first_unit], index[st.last_unit] + 1):
            key = (signature(units[u]), shape)
            if key not in templates:
                templates[key] = _unit(units[u], shape, roles, timing, rows_scale, precision, kv)
            piece, nbytes = templates[key]
            pieces.append(replace(piece, base=base, addr=addr))
            addr += nbytes
        plan.append(_Stage(st.region, roles, base, pieces, addr, crossing[index[st.first_unit]]))
        base += len(roles)
    return plan, len(templates)


def _host_input(timing: Timing, wafer: SystemSpec, first: _Stage, nbytes: int) -> _Piece:
    """The host sends the step's embedding rows over the wafer's system I/O link (--embed-on-host): the
    first region's row 0 RECVs them from HOST into a fresh result stream once they are in, half the
    mesh's perimeter from its I/O edge."""
    t = Template("host input", timing, physical=True, pair=(P, Q))
    arrive = timing.arrival((wafer.mesh_rows + wafer.mesh_cols) // 2, WAFER_SEND)
    for r in first.roles.root:
        t.add(Instr(Isa.RECV, timing.recv(nbytes, WAFER_RECV), unit=WAFER_RECV, stream=r, issue=arrive,
                    dst_bytes=nbytes, s_out=Q, peer=Peer("host", 0, 1, 1, 0), tag=0))
    return _Piece(t, first.base, len(first.roles.root), 1, flips=(True,) * len(first.roles.root))


def _handoff(timing: Timing, wafer: SystemSpec, prev: _Stage, cur: _Stage) -> tuple[_Piece, _Piece]:
    """The previous region's row 0 sends the activation into this region's row 0 (a fresh result stream)
    over the shared edge's links, or across the wafer link: the sending piece (its tag is the receiving
    piece's, placed next) and the receiving one."""
    a, b, nbytes = prev.region, cur.region, cur.entry_bytes
    far = a.wafer != b.wafer
    if far:
        hops, per_link = wafer.mesh_rows + wafer.mesh_cols, nbytes
    else:
        links = shared_edge(a, b) or min(b.rows, b.cols)
        hops, per_link = region_hops(a, b), math.ceil(math.ceil(nbytes / ACT_BYTES) / max(1, links)) * ACT_BYTES
    send_unit, recv_unit = (WAFER_SEND, WAFER_RECV) if far else (FABRIC_SEND, FABRIC_RECV)
    send = Template("hand-off send", timing, physical=True, pair=(P, Q))
    for s in prev.roles.root:
        send.add(Instr(Isa.SEND, timing.link(per_link, send_unit), unit=send_unit, stream=s, issue=0,
                       src_bytes=per_link, s_a=P, peer=_stream(cur.base + cur.roles.root[0] - prev.base), tag=0,
                       route=Route.NEXT_WAFER if far else Route.NEXT_REGION))
    recv = Template("hand-off receive", timing, physical=True, pair=(P, Q))
    for r in cur.roles.root:
        recv.add(Instr(Isa.RECV, timing.recv(per_link, recv_unit), unit=recv_unit, stream=r, issue=0,
                       dst_bytes=per_link, s_out=Q, peer=_stream(prev.base + prev.roles.root[0] - cur.base), tag=0))
    roots = len(cur.roles.root)
    return (_Piece(send, prev.base, len(prev.roles.root), 0, land=timing.arrival(hops, send_unit)),
            _Piece(recv, cur.base, roots, 1, flips=(True,) * roots))
