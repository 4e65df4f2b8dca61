"""Instruction timing rules: the cycles each instruction takes, derived from the target's numbers.

One table for the scheduler and the interpreter alike; the interpreter re-derives
every duration from the instruction's own operands, so a scheduler that books
too few cycles is caught. Rules (chip = ChipSpec, per cycle = per second / clock):

  READ, WRITE, GATHER  ceil(bytes / SRAM bytes per cycle)
                       -- MEM streams at the chip's SRAM bandwidth
  MXM (m x k x n)      max(ceil(weight bytes / SRAM bytes per cycle),
                           ceil(2 m k n / peak ops per cycle at the weight format))
                       -- weights are installed as fast as MEM delivers them, and the
                          planes together do peak MACs per cycle; one MXM instruction
                          covers a panel of up to (dim x planes)^2 weights
  VOP (m x n elements) max(ceil(bytes in / SRAM bytes per cycle), ceil(m n ops(fn) / VXM ALUs))
  SEND, RECV           ceil(bytes / link bytes per cycle); a RECV may start no earlier
                       than its SEND plus hops x link latency (link_latency_cycles)
  SYNC                 the system's synchronisation cycles
  SHIFT, TRANSPOSE, PERMUTE  ceil(bytes / SRAM bytes per cycle)

A result leaving a compute unit (MXM or VOP) for SRAM crosses the chip's pipeline:
a WRITE consuming it starts `drain_cycles` after the producer ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ir.isa import Fmt, Fn, Op
from targets.spec import SystemSpec

# 320 lanes x 16 ALUs = 5,120 vector ALUs on the GroqChip: TechPowerUp; Techspot ("16 ALUs" per lane) [S].
VXM_ALUS_PER_LANE = 16
# 32 streams per direction (east, west): Techspot [S]. A stream is busy from its producer's start
# to its last consumer's end.
STREAMS_PER_CHIP = 64

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
}


@dataclass(frozen=True, slots=True)
class Timing:
    """A system's rates in per-cycle units."""

    clock_hz: float
    sram_bytes_per_cycle: float
    macs_per_cycle: dict[str, float]  # by precision, all planes together
    vxm_alus: int
    link_bytes_per_cycle: float
    link_latency_cycles: int  # one hop
    drain_cycles: int
    sync_cycles: int
    streams: int
    planes: int
    dim: int

    @classmethod
    def of(cls, system: SystemSpec) -> Timing:
        chip = system.chip
        clock = chip.clock_hz
        link = system.local_link
        return cls(
            clock_hz=clock,
            sram_bytes_per_cycle=chip.mem_bw_bytes_per_s / clock,
            macs_per_cycle={p: r / 2 / clock for p, r in chip.peak_ops_per_s.items()},
            vxm_alus=chip.vector_bytes * VXM_ALUS_PER_LANE,
            link_bytes_per_cycle=link.bw_bytes_per_s / clock,
            link_latency_cycles=max(1, round(link.latency_s * clock)),
            drain_cycles=chip.op_latency_cycles,
            sync_cycles=system.sync_cycles,
            streams=STREAMS_PER_CHIP,
            planes=chip.matrix_planes,
            dim=chip.matrix_dim,
        )

    # ---- scalar rules (the scheduler) ---------------------------------------------------------

    def mem(self, nbytes: int) -> int:
        return max(1, _ceil(nbytes / self.sram_bytes_per_cycle))

    def mxm(self, m: int, k: int, n: int, fmt: Fmt) -> int:
        install = _ceil(k * n * fmt.bits / 8 / self.sram_bytes_per_cycle)
        passes = _ceil(m * k * n / self.macs_per_cycle[fmt.precision])
        return max(1, install, passes)

    def vop(self, fn: Fn, elements: int, bytes_in: int) -> int:
        return max(1, _ceil(bytes_in / self.sram_bytes_per_cycle), _ceil(elements * FN_OPS[fn] / self.vxm_alus))

    def link(self, nbytes: int) -> int:
        return max(1, _ceil(nbytes / self.link_bytes_per_cycle))

    @property
    def panel(self) -> int:
        """Rows and columns of the widest weight panel one MXM instruction covers."""
        return self.dim * self.planes


def _ceil(x: float) -> int:
    """Ceiling that forgives float noise, the same in the scalar and vector rules."""
    return math.ceil(x - 1e-9)


def durations(timing: Timing, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Every instruction's cycles by the rules above (vectorised; the interpreter's view).

    Byte counts: MEM ops use src_bytes (READ, GATHER) or dst_bytes (WRITE); VOP its
    input bytes in src_bytes and its m x n elements; SEND src_bytes, RECV dst_bytes."""
    op = cols["op"]
    out = np.ones(len(op), dtype=np.int64)
    bpc = timing.sram_bytes_per_cycle

    def ceil(x: np.ndarray) -> np.ndarray:
        return np.ceil(x - 1e-9).astype(np.int64)

    reads = np.isin(op, (Op.READ, Op.GATHER, Op.SHIFT, Op.TRANSPOSE, Op.PERMUTE))
    out[reads] = ceil(cols["src_bytes"][reads] / bpc)
    writes = op == Op.WRITE
    out[writes] = ceil(cols["dst_bytes"][writes] / bpc)
    out = _mxm(timing, cols, op == Op.MXM, out)
    vop = op == Op.VOP
    ops_per = np.array([FN_OPS[Fn(i)] for i in range(len(Fn))], dtype=np.int64)[cols["fn"][vop]]
    elements = cols["m"][vop].astype(np.int64) * cols["n"][vop]
    out[vop] = np.maximum(ceil(cols["src_bytes"][vop] / bpc), ceil(elements * ops_per / timing.vxm_alus))
    send, recv = op == Op.SEND, op == Op.RECV
    out[send] = ceil(cols["src_bytes"][send] / timing.link_bytes_per_cycle)
    out[recv] = ceil(cols["dst_bytes"][recv] / timing.link_bytes_per_cycle)
    out[op == Op.SYNC] = timing.sync_cycles
    return np.maximum(out, np.where(op == Op.SYNC, 0, 1))


def _mxm(timing: Timing, cols: dict[str, np.ndarray], mask: np.ndarray, out: np.ndarray) -> np.ndarray:
    m, k, n = (cols[c][mask].astype(np.int64) for c in ("m", "k", "n"))
    fmt = cols["dtype"][mask]
    bits = np.array([Fmt(i).bits for i in range(len(Fmt))])[fmt]
    macs = np.array([timing.macs_per_cycle[Fmt(i).precision] for i in range(len(Fmt))])[fmt]
    install = np.ceil(k * n * bits / 8 / timing.sram_bytes_per_cycle - 1e-9)
    passes = np.ceil(m * k * n / macs - 1e-9)
    out[mask] = np.maximum(install, passes).astype(np.int64)
    return out
