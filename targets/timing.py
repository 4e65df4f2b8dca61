"""Instruction timing rules: the cycles each instruction takes, derived from the target's numbers.

One table for the scheduler and the interpreter alike; the interpreter re-derives
every duration from the instruction's own operands, so a scheduler that books
too few cycles is caught. Rules (chip = ChipSpec, all rates per cycle of its clock):

  READ, WRITE, GATHER  ceil(bytes / MEM rate), MEM rate = min(SRAM bytes, stream port bytes):
  SHIFT, TRANSPOSE,    an instruction's data flows one way on the streams, so it moves at most
  PERMUTE              one port's worth (one direction's streams on the LPU) a cycle
  MXM (m x k x n)      max(install, passes) over the tiles = ceil(k / dim) x ceil(n / dim) of its
                       weight block (the unit works on dim x dim tiles: a part tile costs a whole):
                         install = ceil(tiles x dim^2 x install bytes per weight / install rate)
                         passes  = ceil(m x tiles x dim^2 / peak MACs per cycle)
                       both at the weight format's precision (fp16 takes a pair of planes: two
                       install bytes a weight, and the fp16 peak; a block-scaled format installs
                       its scales too unless widened, and a format without its own peak runs at
                       targets.spec.DEQUANTISED_AT's: Timing.install_bytes, mxm_macs_per_cycle).
                       One MXM instruction covers a panel of up to (dim x planes)^2 weights. Its f32
                       partial sums leave at most a port's worth a cycle: at least ceil(m n 4 / port).
                       Grouped (s_e set: `imm` tiles, one per local expert, and m routed slots): each
                       tile installs once and passes its own slots; how many each gets is routing, so
                       the rule is the worst case over every split of the m slots: all of them on one
                       tile, (imm - 1) x install + max(install, passes(m), results).
  VOP (m x n elements) max(ceil(bytes in / port), ceil(result bytes / port), ceil(m n ops(fn) / VXM ALUs))
                       (GROUP's table is i32: 4 result bytes an element)
  SEND, RECV           ceil(bytes / link bytes per cycle) of the unit's link class (local or global);
                       a RECV adds the class's step cycles (a wafer core's task a message); it may
                       start no earlier than its data can arrive (the interpreter derives the hops)
  SYNC                 the system's synchronisation cycles
  FETCH, STORE         ceil(bytes / the chip's share of its tier's bandwidth + the tier's latency), the
                       tier the host-link unit's index names (ir.isa.TIER_UNITS): a node tier's
                       bandwidth is shared evenly by the node's chips (targets.spec.MemoryTier)

A result leaving a compute unit (MXM or VOP) for SRAM crosses the chip's pipeline:
a WRITE consuming it starts `drain_cycles` after the producer ends.

Weights paced by their READ (`paced_start`). MEM streams a weight panel straight into the MXM's install
path: "MEM can read and install 409,600 weights into the four 320x320 arrays in less than 40 cycles,
including SRAM and on-chip network transit delay" (ISCA 2020 section II-B, as targets/lpu.py cites it),
one pass at one rate, not a read and then an install. So an install-bound MXM (its cycles are its
install's) may start a cycle after the READ of its weight stream (s_a) starts, as long as it ends no
earlier than that READ: its install takes the panel off the stream as MEM puts it out and never runs
ahead of it. An MXM bound by its passes or results consumes its weights slower than they arrive and
waits for the whole panel (the READ's end), as every other stream reader does for its producer.

Stream budget. Every byte an instruction puts on a stream crosses the chip's stream registers
once: READ, GATHER and the SXM ops their bytes, RECV what arrives, MXM m x n f32 partial sums,
VOP m x n 16-bit results (a reduction to one pair per row: 8 bytes a row). An instruction puts
its bytes out evenly, ceil(bytes / cycles) a cycle; at every cycle the producers running on a
chip together stay within `stream_bytes_per_cycle`. The scheduler books around it; the
interpreter flags a cycle over it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ir.isa import Fmt, Fn, Op
from targets.spec import TIER_NAMES, SystemSpec, install_bytes, mxm_rate_key

# Element-wise work of each vector function, in ALU operations per output element.
FN_OPS: dict[Fn, int] = {
    Fn.NONE: 1, Fn.ADD: 1, Fn.MUL: 1, Fn.SILU: 4, Fn.GELU: 8, Fn.RMSNORM: 4, Fn.ROPE: 3,
    Fn.SOFTMAX: 5, Fn.ARGMAX: 1, Fn.SCALE: 1, Fn.SUM: 1, Fn.COPY: 1, Fn.TOPK: 8, Fn.ARGTOPK: 8,
    Fn.QUANTIZE: 3, Fn.ARGBEST: 1, Fn.PICK: 1, Fn.ROUTE: 2,
    # Mamba. CONV1D counts taps (m x C x K elements), a multiply-add each: the conv1d flops rule.
    # CONVSTATE and JOIN move each element once. SCAN counts state elements (m x C x N): exp(dt A),
    # dt B x, the update and its dot with C are 9 ops (the scan flops rule's 9N per channel); the
    # tenth covers softplus and the D skip (8 per channel) for any N >= 8.
    Fn.CONV1D: 2, Fn.CONVSTATE: 1, Fn.JOIN: 1, Fn.SCAN: 10,
    # Acceptance: a compare per draft and a running "all equal so far" (the count is the sum of it).
    Fn.ACCEPT: 2,
    # Merging sequence shards' attention: per shard and element, its weight exp(lse - max) times the
    # context, summed, then one divide.
    Fn.COMBINE: 3,
    # Routed prefill: GROUP is a counting sort of the rows' (expert, row) pairs into slots (count, prefix
    # sum, place, and the weight beside it), UNGROUP a multiply-add a slot element.
    Fn.GROUP: 4, Fn.UNGROUP: 2,
}
# Vector functions that reduce each row to one (id, value) pair: their results are 8 bytes a row.
ROW_REDUCTIONS = frozenset({Fn.ARGMAX, Fn.ARGBEST, Fn.PICK, Fn.ACCEPT})
MXM_RESULT_BYTES = 4  # f32 partial sums per output element
VOP_RESULT_BYTES = 2  # 16-bit results per output element
TABLE_BYTES = 4  # vop.group's i32 table, per element


@dataclass(frozen=True, slots=True)
class LinkClass:
    """One class of link in per-cycle units: bytes a cycle one way, one hop's latency, and the cycles a
    receiver spends on each message it takes (a wafer core's task; 0 on chips)."""

    bytes_per_cycle: float
    latency_cycles: int
    step_cycles: int = 0


@dataclass(frozen=True, slots=True)
class Timing:
    """A system's rates in per-cycle units. C2C unit u is link u // 2 (u even: send, odd: receive) of the
    chip's `links`; links below `local_links` are of the local class, the rest global."""

    clock_hz: float
    sram_bytes_per_cycle: float
    macs_per_cycle: dict[str, float]  # by precision, all planes together
    vxm_alus: int
    local: LinkClass
    remote: LinkClass
    local_links: int
    links: int
    drain_cycles: int
    sync_cycles: int
    streams: int
    planes: int
    dim: int
    port_bytes_per_cycle: float = math.inf  # what one instruction moves on streams
    stream_bytes_per_cycle: float = math.inf  # what all units' results together may put on streams
    install_bytes_per_cycle: float = math.inf  # weights into the matrix unit
    install_bytes_per_weight: dict[str, float] = field(default_factory=dict)  # by precision
    tiers: tuple[LinkClass | None, ...] = ()  # the host link to each of TIER_NAMES (None: the target has none)

    @classmethod
    def of(cls, system: SystemSpec) -> Timing:
        chip = system.chip
        clock = chip.clock_hz
        return cls(
            clock_hz=clock,
            sram_bytes_per_cycle=chip.mem_bytes_per_cycle,
            macs_per_cycle={p: r / 2 / clock for p, r in chip.peak_ops_per_s.items()},
            vxm_alus=chip.vector_alus,
            local=_link_class(system.local_link, clock, system.step_cycles),
            remote=_link_class(system.global_link, clock, 0),
            local_links=system.local_links_per_chip,
            links=system.local_links_per_chip + system.global_links_per_chip,
            drain_cycles=chip.op_latency_cycles,
            sync_cycles=system.sync_cycles,
            streams=chip.streams,
            planes=chip.matrix_planes,
            dim=chip.matrix_dim,
            port_bytes_per_cycle=chip.stream_port_bytes_per_cycle,
            stream_bytes_per_cycle=chip.stream_bytes_per_cycle,
            install_bytes_per_cycle=chip.mxm_install_bytes_per_cycle,
            install_bytes_per_weight=dict(chip.install_bytes_per_weight),
            tiers=tuple(_tier_class(system, name, clock) for name in TIER_NAMES),
        )

    @property
    def link_bytes_per_cycle(self) -> float:
        """The local links' rate (the links a stage's collectives and hand-offs mostly use)."""
        return self.local.bytes_per_cycle

    @property
    def link_latency_cycles(self) -> int:
        """What the scheduler waits a hop: the slower class's latency, so that a route of that many hops
        arrives in time whichever links it takes."""
        return max(self.local.latency_cycles, self.remote.latency_cycles)

    def link_class(self, unit: int) -> LinkClass:
        return self.local if unit // 2 < self.local_links else self.remote

    # ---- scalar rules (the scheduler) ---------------------------------------------------------

    @property
    def mem_bytes_per_cycle(self) -> float:
        """What one MEM instruction moves a cycle: the SRAM's rate, within one stream port."""
        return min(self.sram_bytes_per_cycle, self.port_bytes_per_cycle)

    def mem(self, nbytes: int) -> int:
        return max(1, _ceil(nbytes / self.mem_bytes_per_cycle))

    def tiles(self, k: int, n: int) -> int:
        """Whole dim x dim tiles a k x n weight block occupies."""
        return -(-k // self.dim) * -(-n // self.dim)

    def install_bytes(self, fmt: Fmt) -> float:
        """What one weight of `fmt` costs on the install path (targets.spec.install_bytes: a
        block-scaled format by its name, any other by its precision)."""
        return install_bytes(fmt.dtype.value if fmt.dtype.block else fmt.precision, self.install_bytes_per_weight)

    def mxm_macs_per_cycle(self, fmt: Fmt) -> float:
        """The planes' MACs a cycle on `fmt` tiles: its own peak, or by targets.spec.DEQUANTISED_AT."""
        return self.macs_per_cycle[mxm_rate_key(fmt.precision, self.macs_per_cycle)]

    def install(self, k: int, n: int, fmt: Fmt) -> int:
        """Cycles to install a k x n weight block (whole tiles) into the matrix unit."""
        per_weight = self.install_bytes(fmt)
        return _ceil(self.tiles(k, n) * self.dim ** 2 * per_weight / self.install_bytes_per_cycle)

    def passes(self, m: int, k: int, n: int, fmt: Fmt) -> int:
        """Cycles for m rows through a k x n block's tiles at the format's peak."""
        return _ceil(m * self.tiles(k, n) * self.dim ** 2 / self.mxm_macs_per_cycle(fmt))

    def mxm(self, m: int, k: int, n: int, fmt: Fmt, tiles: int = 1) -> int:
        """`tiles` > 1: a grouped MXM (the rule above: its slots all on one tile, in the worst case)."""
        results = _ceil(m * n * MXM_RESULT_BYTES / self.port_bytes_per_cycle)
        install = self.install(k, n, fmt)
        return (tiles - 1) * install + max(1, install, self.passes(m, k, n, fmt), results)

    def vop(self, fn: Fn, elements: int, bytes_in: int, rows: int = 1) -> int:
        """`rows` matters only for a row reduction, whose results are one 8-byte pair a row."""
        results = rows * 8 if fn in ROW_REDUCTIONS else elements * (TABLE_BYTES if fn is Fn.GROUP else VOP_RESULT_BYTES)
        return max(1, _ceil(bytes_in / self.port_bytes_per_cycle), _ceil(results / self.port_bytes_per_cycle),
                   _ceil(elements * FN_OPS[fn] / self.vxm_alus))

    def link(self, nbytes: int, unit: int = 0) -> int:
        """A SEND's cycles on C2C `unit` (a RECV's are `recv`)."""
        return max(1, _ceil(nbytes / self.link_class(unit).bytes_per_cycle))

    def recv(self, nbytes: int, unit: int = 1) -> int:
        """A RECV's cycles: its bytes off the link, plus the receiver's fixed cost a message."""
        return self.link(nbytes, unit) + self.link_class(unit).step_cycles

    def arrival(self, hops: int, unit: int = 0) -> int:
        """Cycles from a SEND's start on C2C `unit` until its data is `hops` hops away: the local links'
        hop latency each hop, and a global link's latency when the unit is one (a wafer's wafer link)."""
        return hops * self.local.latency_cycles + (self.remote.latency_cycles if unit // 2 >= self.local_links else 0)

    def host(self, nbytes: int, tier: int) -> int:
        """A FETCH's or STORE's cycles on the host link to tier `tier` (an index of TIER_NAMES)."""
        link = self.tiers[tier]
        return _ceil(nbytes / link.bytes_per_cycle) + link.latency_cycles

    @property
    def panel(self) -> int:
        """Rows and columns of the widest weight panel one MXM instruction covers."""
        return self.dim * self.planes


def _ceil(x: float) -> int:
    """Ceiling that forgives float noise, the same in the scalar and vector rules."""
    return math.ceil(x - 1e-9)


def result_bytes(op: Op, m: int, n: int, fn: Fn, src_bytes: int, dst_bytes: int) -> int:
    """Bytes one instruction puts on streams (the stream budget above; the scheduler's view)."""
    if op in _MOVES:
        return src_bytes
    if op is Op.RECV:
        return dst_bytes
    if op is Op.MXM:
        return m * n * MXM_RESULT_BYTES
    if op is Op.VOP:
        return m * 8 if fn in ROW_REDUCTIONS else m * n * (TABLE_BYTES if fn is Fn.GROUP else VOP_RESULT_BYTES)
    return 0


_MOVES = frozenset({Op.READ, Op.GATHER, Op.SHIFT, Op.TRANSPOSE, Op.PERMUTE})


def _result_bytes(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Every instruction's bytes put on streams (vectorised result_bytes)."""
    op = cols["op"]
    out_bytes = np.zeros(len(op), dtype=np.int64)
    moves = np.isin(op, [int(o) for o in _MOVES])
    out_bytes[moves] = cols["src_bytes"][moves]
    recv = op == Op.RECV
    out_bytes[recv] = cols["dst_bytes"][recv]
    elements = cols["m"].astype(np.int64) * cols["n"]
    mxm = op == Op.MXM
    out_bytes[mxm] = elements[mxm] * MXM_RESULT_BYTES
    vop = op == Op.VOP
    reduce = vop & np.isin(cols["fn"], [int(f) for f in ROW_REDUCTIONS])
    out_bytes[vop] = elements[vop] * np.where(cols["fn"][vop] == Fn.GROUP, TABLE_BYTES, VOP_RESULT_BYTES)
    out_bytes[reduce] = cols["m"][reduce].astype(np.int64) * 8
    return out_bytes


def stream_rates(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Every instruction's stream output, bytes a cycle (vectorised; the interpreter's view)."""
    return -(-_result_bytes(cols) // np.maximum(1, cols["cycles"].astype(np.int64)))


def durations(timing: Timing, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Every instruction's cycles by the rules above (vectorised; the interpreter's view).

    Byte counts: MEM ops use src_bytes (READ, GATHER) or dst_bytes (WRITE); VOP its
    input bytes in src_bytes and its m x n elements; SEND src_bytes, RECV dst_bytes."""
    op = cols["op"]
    out = np.ones(len(op), dtype=np.int64)
    mem = timing.mem_bytes_per_cycle

    def ceil(x: np.ndarray) -> np.ndarray:
        return np.ceil(x - 1e-9).astype(np.int64)

    reads = np.isin(op, (Op.READ, Op.GATHER, Op.SHIFT, Op.TRANSPOSE, Op.PERMUTE))
    out[reads] = ceil(cols["src_bytes"][reads] / mem)
    writes = op == Op.WRITE
    out[writes] = ceil(cols["dst_bytes"][writes] / mem)
    out = _mxm(timing, cols, op == Op.MXM, out)
    vop = op == Op.VOP
    ops_per = np.array([FN_OPS[Fn(i)] for i in range(len(Fn))], dtype=np.int64)[cols["fn"][vop]]
    elements = cols["m"][vop].astype(np.int64) * cols["n"][vop]
    results = _result_bytes(cols)
    out[vop] = np.maximum.reduce([ceil(cols["src_bytes"][vop] / timing.port_bytes_per_cycle),
                                  ceil(results[vop] / timing.port_bytes_per_cycle),
                                  ceil(elements * ops_per / timing.vxm_alus)])
    out = _links(timing, cols, out)
    out = _hosts(timing, cols, out)
    out[op == Op.SYNC] = timing.sync_cycles
    return np.maximum(out, np.where(op == Op.SYNC, 0, 1))


def _links(timing: Timing, cols: dict[str, np.ndarray], out: np.ndarray) -> np.ndarray:
    """SEND: bytes over its link class's rate; RECV: the same, plus the class's step a message."""
    op, unit = cols["op"], cols["unit"].astype(np.int64)
    for cls_mask, link in (((unit // 2) < timing.local_links, timing.local),
                           ((unit // 2) >= timing.local_links, timing.remote)):
        for mask, size, step in ((op == Op.SEND, "src_bytes", 0), (op == Op.RECV, "dst_bytes", link.step_cycles)):
            rows = mask & cls_mask
            out[rows] = np.maximum(1, np.ceil(cols[size][rows] / link.bytes_per_cycle - 1e-9)).astype(np.int64) + step
    return out


def _tier_class(system: SystemSpec, name: str, clock: float) -> LinkClass | None:
    """The host link to one tier: the chip's share of its bandwidth and its latency, per cycle."""
    tier = system.tiers.get(name)
    if tier is None:
        return None
    return LinkClass(system.tier_bw_per_chip(name) / clock, _ceil(tier.latency_s * clock))


def _hosts(timing: Timing, cols: dict[str, np.ndarray], out: np.ndarray) -> np.ndarray:
    """FETCH and STORE: their bytes at the unit's tier's rate, plus its latency (a tier the target lacks
    keeps one cycle; targets.tier_checks names it)."""
    op, unit = cols["op"], cols["unit"].astype(np.int64)
    host = (op == Op.FETCH) | (op == Op.STORE)
    for index, link in enumerate(timing.tiers):
        rows = host & (unit == index)
        if link is not None and rows.any():
            size = np.where(op[rows] == Op.FETCH, cols["src_bytes"][rows], cols["dst_bytes"][rows])
            out[rows] = np.ceil(size / link.bytes_per_cycle - 1e-9).astype(np.int64) + link.latency_cycles
    return out


def _link_class(link, clock: float, step_cycles: int) -> LinkClass:
    return LinkClass(link.bw_bytes_per_s / clock, max(1, round(link.latency_s * clock)), step_cycles)


def paced_start(read_start, read_end, mxm_cycles, install_cycles):
    """The earliest start of an MXM whose weight stream a READ puts out over [read_start, read_end) (the
    rule "weights paced by their READ" above): an install-bound MXM a cycle after the READ starts, ending
    no earlier than it; any other once the READ has ended. Scalars or arrays alike."""
    paced = np.asarray(mxm_cycles) <= np.asarray(install_cycles)
    return np.where(paced, np.maximum(np.asarray(read_start) + 1, np.asarray(read_end) - mxm_cycles), read_end)


def install_cycles(timing: Timing, cols: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    """The install cycles of the MXM rows `mask` selects (their weight blocks in whole tiles; vectorised
    Timing.install)."""
    k, n = (cols[c][mask].astype(np.int64) for c in ("k", "n"))
    per_weight = np.array([timing.install_bytes(f) for f in Fmt])[cols["dtype"][mask]]
    tiles = -(-k // timing.dim) * -(-n // timing.dim)
    return np.ceil(tiles * timing.dim ** 2 * per_weight / timing.install_bytes_per_cycle - 1e-9).astype(np.int64)


def _mxm(timing: Timing, cols: dict[str, np.ndarray], mask: np.ndarray, out: np.ndarray) -> np.ndarray:
    m, k, n = (cols[c][mask].astype(np.int64) for c in ("m", "k", "n"))
    fmt = cols["dtype"][mask]
    macs = np.array([timing.mxm_macs_per_cycle(f) for f in Fmt])[fmt]
    tile = timing.dim ** 2
    tiles = -(-k // timing.dim) * -(-n // timing.dim)
    install = install_cycles(timing, cols, mask)
    passes = np.ceil(m * tiles * tile / macs - 1e-9)
    results = np.ceil(m * n * MXM_RESULT_BYTES / timing.port_bytes_per_cycle - 1e-9)
    grouped = np.where(cols["s_e"][mask] >= 0, np.maximum(cols["imm"][mask].astype(np.int64), 1), 1)
    out[mask] = ((grouped - 1) * install
                 + np.maximum.reduce([np.ones_like(install), install, passes, results])).astype(np.int64)
    return out
