"""Lower a WaferPlan to a Program whose "chips" are role streams: mesh_cost.py's model, instruction by instruction.

Role streams. The cores of a region run the same code except where they sit in the reduction
trees: the 2-way tree down the R rows (matmul partial sums, attention) and, on the region's
first row (the row vector ops run on), the tree along its C columns (norms, argmax, attention's
within-head scores). Trees halve recursively (`tree_positions`): at level j the live line of
a_j cores folds its far half onto its near half, h_j = ceil(a_j / 2) hops, so the hops of all
levels add up to about R - 1, the model's figure. Cores with the same (send level, receive
levels) run one stream, replicated on every core of those rows (or columns of row 0). A region
of R x C cores so has about log2 R + log2 C streams; Program.meta["replicas"][s] counts the
cores running stream s, meta["roles"][s] names it.

Schedule. Phases are level-synchronous: every stream of a region enters a phase at the same
cycle, so all sends of one tree level start together, and a RECV names the stream of its first
core's partner (pairing is by sender stream and tag; targets/wafer_timing.py). Per op:

  matmul     feed: row 0 SENDs the input (R + C - 2 hops, the imm column) and every stream
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

Prefill chunks are pipelined through the stages: a stage takes chunk c once it has finished
chunk c - 1 and its hand-off SEND has read the result.

Simplifications, all small against the model: the input slice of a matmul feeds the MXM from
the link and is not re-read from SRAM; attention's within-head reduction is timed on the last
(shortest) levels of row 0's column tree, for every row at once; the attention MXMs count the
core's whole tile (features per core rounded up), where the model averages the op's flops over
the cores. Units with identical ops on the same region shape share one template, scheduled once
and instantiated with shifted cycles, tags, streams and addresses.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from compiler.backends.wafer.cost import ACT_BYTES, Shape, op_rows, resident_bytes
from compiler.backends.wafer.planner import host_input_bytes
from compiler.codegen.blocks import Blocks
from compiler.codegen.lowering import Lowering
from compiler.frontend.options import CompileOptions
from compiler.partition.units import boundary_bytes, signature
from compiler.plan import Plan
from ir.contract import Route
from ir.graph import Graph, Op
from ir.isa import Fmt, Fn, UnitKind
from ir.isa import Op as Isa
from ir.ops import Opcode
from ir.program import HOST, Flag, Program, empty_columns
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


@dataclass(frozen=True)
class WaferTiming:
    """The target's Timing, read as a wafer core's links: the fabric (units 0, 1) and the wafer link (2, 3)."""

    rules: Timing

    @classmethod
    def of(cls, wafer: SystemSpec) -> WaferTiming:
        return cls(Timing.of(wafer))

    def __getattr__(self, name: str):
        return getattr(self.rules, name)

    def send(self, nbytes: int, wafer_link: bool = False) -> int:
        return self.rules.link(nbytes, WAFER_SEND if wafer_link else FABRIC_SEND)

    def recv(self, nbytes: int, wafer_link: bool = False) -> int:
        return self.rules.recv(nbytes, WAFER_RECV if wafer_link else FABRIC_RECV)

    def arrival(self, hops: int, wafer_link: bool = False) -> int:
        return hops * self.rules.local.latency_cycles + (self.rules.remote.latency_cycles if wafer_link else 0)


class _Emitter:
    """Instructions of one template: role-local stream ids, tags from 0, addresses from 0."""

    def __init__(self, roles: Roles, timing: WaferTiming, shape: Shape):
        self.roles, self.timing, self.shape = roles, timing, shape
        self.rows: list[dict] = []
        self.t, self.tags, self.addr = 0, 0, 0
        self.cur = [P] * len(roles)  # each role's result stream

    def fresh(self, role: int) -> int:
        """The other result stream of `role`, made current (the one the next result is written to)."""
        self.cur[role] = Q if self.cur[role] == P else P
        return self.cur[role]

    def put(self, role: int, kind: UnitKind, unit: int, op: Isa, cycles: int, at: int | None = None,
            **fields) -> None:
        self.rows.append({"chip": role, "kind": kind, "unit": unit, "op": op, "issue": self.t if at is None else at,
                          "cycles": cycles, **fields})

    def message(self, senders: list[int], receivers: list[tuple[int, int]], route: Route, hops: int, nbytes: int,
                src: int | None, out: int | None, accumulate: bool = False, level: int = -1) -> None:
        """One message step: `senders` SEND stream `src` (None: their result) at t along `route` (tree
        `level`), `hops` away; each (receiver, named sender) RECVs into `out` (None: a fresh result
        stream; accumulating onto the last). The SEND names its route, never its hops."""
        tm, tag = self.timing, self.tags
        self.tags += 1
        for s in senders:
            self.put(s, UnitKind.C2C, FABRIC_SEND, Isa.SEND, tm.send(nbytes), src_bytes=nbytes,
                     s_a=self.cur[s] if src is None else src,
                     peer=receivers[0][0], tag=tag, route=route, imm=level)
        arrive = self.t + tm.arrival(hops)
        for r, s in receivers:
            extra = {"s_c": self.cur[r], "flags": Flag.ACCUMULATE} if accumulate else {}
            self.put(r, UnitKind.C2C, FABRIC_RECV, Isa.RECV, tm.recv(nbytes), at=arrive, dst_bytes=nbytes,
                     s_out=self.fresh(r) if out is None else out, peer=s, tag=tag, **extra)
        self.t = arrive + tm.recv(nbytes)

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
        cycles = self.timing.mxm(m, k, n, fmt)
        for r in roles:
            self.put(r, UnitKind.MXM, 0, Isa.MXM, cycles, src=src, src_bytes=nbytes, s_b=s_b,
                     s_out=self.fresh(r) if out is None else out, m=m, k=k,
                     n=n, dtype=fmt, flags=flags | Flag.LAST)
        self.t += cycles

    def alloc(self, nbytes: int) -> int:
        at, self.addr = self.addr, self.addr + nbytes
        return at


def _matmul(e: _Emitter, op: Op, rows_scale: float, precision: str, kv: str) -> None:
    m = op_rows(op, rows_scale)
    w = op.operands[1].type
    k, n = (w.shape[1], w.shape[0]) if op.attr.get("transpose_b") else w.shape
    kr, nc = math.ceil(k / e.shape.rows), math.ceil(n / e.shape.cols)
    addr = e.alloc(resident_bytes(op, e.shape))
    e.feed(m * kr)
    fmt = FMT[precision]
    e.mxm(list(range(len(e.roles))), m, kr, nc, fmt, addr, math.ceil(kr * nc * fmt.bits / 8), X, None)
    e.row_tree(m * nc)


def _attention(e: _Emitter, op: Op, rows_scale: float, precision: str, kv: str) -> None:
    m = op_rows(op, rows_scale)
    heads, kv_heads, head_dim = op.attr["heads"], op.attr["kv_heads"], op.attr["head_dim"]
    region = e.shape
    per_core = resident_bytes(op, region)
    addr = e.alloc(per_core)
    q_cols = math.ceil(heads * head_dim / region.cols)
    group = max(1, heads // kv_heads)
    e.feed(m * q_cols)
    fmt = Fmt.F16 if kv == "fp16" else Fmt.I8
    feats = math.ceil(kv_heads * head_dim / region.cols)
    tokens = max(1, math.ceil(per_core / 2 / (feats * fmt.bits / 8)))  # cached tokens on this core
    half = math.ceil(feats * tokens * fmt.bits / 8)
    everyone = list(range(len(e.roles)))
    e.mxm(everyone, m * group, feats, tokens, fmt, addr, half, X, S, Flag.KEYS)
    e.mxm(everyone, m * group, feats, tokens, fmt, addr + half, half, S, None, Flag.VALUES)
    split = max(1, region.cols // kv_heads)
    e.col_tree(m * group, levels=math.ceil(math.log2(split)) if split > 1 else 0)
    e.row_tree(m * heads, times=2)
    e.row_tree(m * q_cols)


def _embed(e: _Emitter, op: Op, rows_scale: float, precision: str, kv: str) -> None:
    m = op_rows(op, rows_scale)
    cols = math.ceil(op.results[0].type.shape[-1] / e.shape.cols)
    addr = e.alloc(resident_bytes(op, e.shape))
    nbytes = m * cols * ACT_BYTES
    cycles = e.timing.mem(nbytes)
    for r in e.roles.root:
        e.put(r, UnitKind.MEM, 0, Isa.GATHER, cycles, src=addr, src_bytes=nbytes, s_out=X, m=m, n=cols)
    e.t += cycles
    root = e.roles.root
    e.message(root, [(r, root[0]) for r in root], Route.FEED, e.shape.rows + e.shape.cols - 2, nbytes, X, None)


def _vector(e: _Emitter, op: Op, rows_scale: float, precision: str, kv: str) -> None:
    m = op_rows(op, rows_scale)
    cols = e.shape.cols
    e.alloc(resident_bytes(op, e.shape))
    out = op.results[0].type
    width = out.shape[-1] if len(out.shape) > 1 else 1
    moved = sum(math.ceil(v.type.nbytes * rows_scale) for v in (*op.operands, *op.results))
    per_core, nbytes = math.ceil(width / cols), math.ceil(moved / cols)
    fn = VECTOR_FN[op.opcode]
    cycles = e.timing.vop(fn, m * per_core, nbytes, rows=m)
    for r in e.roles.root:
        e.put(r, UnitKind.VXM, 0, Isa.VOP, cycles, fn=fn, src_bytes=nbytes, s_a=e.cur[r], s_out=e.fresh(r), m=m,
              n=per_core)
    e.t += cycles
    if op.opcode is Opcode.RMSNORM:
        e.col_tree(m)
        e.col_tree(m, broadcast=True)
    elif op.opcode is Opcode.ARGMAX:
        e.col_tree(2 * m)


# The wafer backend's emission rules, by opcode: an op without one is refused before planning.
LOWER = {Opcode.MATMUL: _matmul, Opcode.ATTENTION: _attention, Opcode.EMBED: _embed,
         **{op: _vector for op in VECTOR_FN}}


@dataclass
class _Template:
    cols: dict[str, np.ndarray]
    cycles: int
    tags: int
    resident_bytes: int
    flips: np.ndarray  # roles whose result ends on the other stream than it started on


def _template(ops: list[Op], shape: Shape, roles: Roles, timing: WaferTiming, rows_scale: float,
              precision: str, kv: str) -> _Template:
    e = _Emitter(roles, timing, shape)
    for op in ops:
        LOWER[op.opcode](e, op, rows_scale, precision, kv)
    return _Template(_columns(e.rows), e.t, e.tags, e.addr, np.array([c != P for c in e.cur], dtype=bool))


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    cols = empty_columns(len(rows))
    for name in cols:
        present = [i for i, r in enumerate(rows) if name in r]
        if present:
            cols[name][present] = [int(rows[i][name]) for i in present]
    return cols


@dataclass
class _Out:
    """The blocks placed so far (ir/program.py: one per role stream of a template, stored once) and the streams."""

    blocks: Blocks = field(default_factory=Blocks)
    replicas: list[int] = field(default_factory=list)
    roles: list[list] = field(default_factory=list)
    tags: int = 0
    templates: int = 0
    swapped: list[bool] = field(default_factory=list)  # per stream: its result is on Q where templates say P
    _ids: dict[tuple, int] = field(default_factory=dict)  # (template, role, swapped, address) -> block
    _placed: dict[bytes, tuple] = field(default_factory=dict)  # rows built in place -> their blocks

    def place(self, tpl: _Template, base_chip: int, t0: int, addr: int) -> None:
        """Each role stream's rows of `tpl` as a block (its streams swapped where the stream's result sits
        on Q), placed at the stream, cycle t0 and the next free tags; peers are the template's roles."""
        swapped = np.array(self.swapped[base_chip:base_chip + len(tpl.flips)], dtype=bool)
        ids = []
        for role in range(len(tpl.flips)):
            key = (id(tpl), role, bool(swapped[role]), addr)
            if key not in self._ids:
                self._ids[key] = self.blocks.block(_role_rows(tpl, role, bool(swapped[role]), addr))
            ids.append(self._ids[key])
        self.blocks.place(ids, base_chip + np.arange(len(ids)), t0, self.tags, base_chip)
        self.swapped[base_chip:base_chip + len(tpl.flips)] = (swapped ^ tpl.flips).tolist()
        self.tags += tpl.tags

    def absolute(self, cols: dict[str, np.ndarray]) -> None:
        """Rows built in place (hand-offs, host input): per stream a block from its first cycle, all from
        the rows' first tag. Every chunk's hand-off across one boundary is alike: its blocks are made once."""
        t0 = int(cols["issue"].min())
        tagged = cols["tag"] >= 0
        tag0 = int(cols["tag"][tagged].min()) if tagged.any() else 0
        rel = {n: a.copy() for n, a in cols.items()}
        rel["issue"] -= t0
        rel["tag"][tagged] -= tag0
        digest = hashlib.blake2b(digest_size=16)
        for n in sorted(rel):
            digest.update(np.ascontiguousarray(rel[n]).data)
        key = digest.digest()
        if key not in self._placed:
            ids, chips, offsets = [], [], []
            for chip in np.unique(rel["chip"]).tolist():
                rows = {n: a[rel["chip"] == chip] for n, a in rel.items()}
                start = int(rows["issue"].min())
                rows["issue"] = rows["issue"] - start
                rows["chip"] = np.zeros_like(rows["chip"])
                ids.append(self.blocks.block(rows))
                chips.append(chip)
                offsets.append(start)
            self._placed[key] = (ids, chips, np.array(offsets, np.int64))
        ids, chips, offsets = self._placed[key]
        self.blocks.place(ids, chips, t0 + offsets, tag0, 0)


def _role_rows(tpl: _Template, role: int, swapped: bool, addr: int) -> dict[str, np.ndarray]:
    mine = tpl.cols["chip"] == role
    rows = {n: a[mine].copy() for n, a in tpl.cols.items()}
    if swapped:
        for name in ("s_a", "s_b", "s_c", "s_d", "s_out"):
            a = rows[name]
            rows[name] = np.where(a == P, Q, np.where(a == Q, P, a)).astype(a.dtype)
    rows["chip"][:] = 0
    rows["src"] = np.where(rows["src"] >= 0, rows["src"] + addr, -1)
    return rows


@dataclass(frozen=True)
class _Stage:
    """A stage's region, its roles, its first stream, and its units' templates with their addresses."""

    region: object
    roles: Roles
    base: int
    units: tuple[tuple[_Template, int], ...]
    entry_bytes: int

    @property
    def cycles(self) -> int:
        return sum(tpl.cycles for tpl, _ in self.units)


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
    timing = WaferTiming.of(wafer)
    out = _Out()
    plan = _stages(graph, stages, wafer, timing, crossing, rows_scale, precision, kv_precision, out)
    free = [0] * len(plan)  # when each stage can take its next chunk
    starts: list[list[int]] = [[] for _ in plan]
    for _ in range(chunks):
        t = 0
        for s, st in enumerate(plan):
            if s == 0 and host_bytes:
                t = _host_input(out, timing, wafer, st, max(t, free[0]), host_bytes)
            if s:
                t, send = _handoff(out, timing, wafer, plan[s - 1], st, t, free[s])
                free[s - 1] = max(free[s - 1], send)  # the hand-off's SEND still reads the stage's result
            t = max(t, free[s])
            starts[s].append(t)
            for tpl, addr in st.units:
                out.place(tpl, st.base, t, addr)
                t += tpl.cycles
            free[s] = t
    stage_meta = [{"index": st.index, "first_stream": p.base, "streams": len(p.roles), "region": st.region.to_dict(),
                   "resident_bytes_per_core": sum(tpl.resident_bytes for tpl, _ in p.units)}
                  for st, p in zip(stages, plan, strict=True)]
    info = {"wafer": True, "replicas": out.replicas, "roles": out.roles, "stages": stage_meta, "chunks": chunks,
            "chunk_starts": starts, "templates": out.templates, "cores": sum(out.replicas)} | (meta or {})
    return out.blocks.program(phase, wafer.name, len(out.replicas), wafer.chip.clock_hz, info, dialect="roles")


def _stages(graph: Graph, stages, wafer: SystemSpec, timing: WaferTiming, crossing: list[int], rows_scale: float,
            precision: str, kv: str, out: _Out) -> list[_Stage]:
    """Every stage's roles (numbered into `out`) and templates: one per distinct (unit, region shape)."""
    scopes = graph.scopes()
    index = {s: i for i, s in enumerate(scopes)}
    units = [list(graph.ops_in(s)) for s in scopes]
    templates: dict[tuple, _Template] = {}
    plan = []
    for st in stages:
        shape = Shape(st.region.rows, st.region.cols)
        roles = Roles.of(shape.rows, shape.cols)
        base = len(out.replicas)
        out.replicas += list(roles.replicas)
        out.swapped += [False] * len(roles)
        out.roles += [[st.index, *key] for key in roles.keys]
        placed, addr = [], 0
        for u in range(index[st.first_unit], index[st.last_unit] + 1):
            key = (signature(units[u]), shape)
            if key not in templates:
                templates[key] = _template(units[u], shape, roles, timing, rows_scale, precision, kv)
            placed.append((templates[key], addr))
            addr += templates[key].resident_bytes
        plan.append(_Stage(st.region, roles, base, tuple(placed), crossing[index[st.first_unit]]))
    out.templates = len(templates)
    return plan


def _host_input(out: _Out, timing: WaferTiming, wafer: SystemSpec, first: _Stage, t: int, nbytes: int) -> int:
    """The host sends the step's embedding rows over the wafer's system I/O link (--embed-on-host): the
    first region's row 0 RECVs them from HOST, half the mesh's perimeter from its I/O edge. Returns when
    they are in."""
    e = _Emitter(first.roles, timing, Shape(first.region.rows, first.region.cols))
    tag = out.tags
    out.tags += 1
    arrive = t + timing.arrival((wafer.mesh_rows + wafer.mesh_cols) // 2, True)
    for r in first.roles.root:
        out.swapped[first.base + r] = not out.swapped[first.base + r]
        e.put(first.base + r, UnitKind.C2C, WAFER_RECV, Isa.RECV, timing.recv(nbytes, True), at=arrive,
              dst_bytes=nbytes, s_out=Q if out.swapped[first.base + r] else P, peer=HOST, tag=tag)
    out.absolute(_columns(e.rows))
    return arrive + timing.recv(nbytes, True)


def _handoff(out: _Out, timing: WaferTiming, wafer: SystemSpec, prev: _Stage, cur: _Stage, t: int, free: int
             ) -> tuple[int, int]:
    """The previous region's row 0 sends the activation into this region's row 0 (a fresh result stream),
    from cycle t; the receiver takes it once it is `free`. Returns (when it has it, when the SEND ends)."""
    a, b, nbytes = prev.region, cur.region, cur.entry_bytes
    far = a.wafer != b.wafer
    if far:
        hops, per_link = wafer.mesh_rows + wafer.mesh_cols, nbytes
    else:
        links = shared_edge(a, b) or min(b.rows, b.cols)
        hops, per_link = region_hops(a, b), math.ceil(math.ceil(nbytes / ACT_BYTES) / max(1, links)) * ACT_BYTES
    e = _Emitter(cur.roles, timing, Shape(b.rows, b.cols))
    e.t = t
    send_unit, recv_unit = (WAFER_SEND, WAFER_RECV) if far else (FABRIC_SEND, FABRIC_RECV)
    tag = out.tags
    out.tags += 1
    for s in prev.roles.root:
        e.put(prev.base + s, UnitKind.C2C, send_unit, Isa.SEND, timing.send(per_link, far), src_bytes=per_link,
              s_a=Q if out.swapped[prev.base + s] else P, peer=cur.base + cur.roles.root[0], tag=tag,
              route=Route.NEXT_WAFER if far else Route.NEXT_REGION)
    arrive = max(t + timing.arrival(hops, far), free)
    for r in cur.roles.root:
        out.swapped[cur.base + r] = not out.swapped[cur.base + r]
        e.put(cur.base + r, UnitKind.C2C, recv_unit, Isa.RECV, timing.recv(per_link, far), at=arrive,
              dst_bytes=per_link, s_out=Q if out.swapped[cur.base + r] else P, peer=prev.base + prev.roles.root[0],
              tag=tag)
    out.absolute(_columns(e.rows))
    return arrive + timing.recv(per_link, far), t + timing.send(per_link, far)
