"""The Program's instruction vocabulary: functional-unit kinds, opcodes, vector functions.

Modelled on the TSP's functional slices (ISCA 2020): MEM reads and writes SRAM
onto and off streams, MXM planes hold a weight tile and pass activation vectors
through it, VXM does element-wise and reduction arithmetic, SXM moves data
across lanes, C2C sends and receives over one named link, SYNC aligns chips at
program start, HOST moves cache blocks between SRAM and the memory tiers below it
(host DRAM, flash). Timing rules live with each target (targets/timing.py); this is
only the language.
"""

from __future__ import annotations

import enum

from ir.types import DType


class UnitKind(enum.IntEnum):
    MEM = 0  # SRAM <-> streams
    MXM = 1  # one matrix plane (a chip has several: unit index = plane)
    VXM = 2  # vector ALUs
    SXM = 3  # switch: shift, transpose, permute
    C2C = 4  # one direction of a chip-to-chip link (unit index = 2 x link id + 0 send, 1 receive)
    SYNC = 5  # program-start synchronisation
    HOST = 6  # the host link to the memory tiers below SRAM (unit index = tier: 0 host DRAM, 1 flash)


class Op(enum.IntEnum):
    """Opcodes. Each belongs to one unit kind (UNIT_OF)."""

    READ = 0  # SRAM [src, src+src_bytes) -> stream `s_out`
    WRITE = 1  # stream `s_a` -> SRAM [dst, dst+dst_bytes)
    GATHER = 2  # rows of SRAM table at src chosen by ids on stream `s_b` -> stream `s_out`
    MXM = 3  # weight tile (k x n, stream `s_a`) times activations (m x k, stream `s_b`) -> accumulators
    VOP = 4  # vector function `fn` over streams `s_a` (and `s_b`) -> stream `s_out`
    SHIFT = 5
    TRANSPOSE = 6
    PERMUTE = 7
    SEND = 8  # stream `s_a` -> link `link` towards chip `peer`, message `tag`
    RECV = 9  # link `link` from chip `peer`, message `tag` -> stream `s_out`
    SYNC = 10  # wait for every chip of the program to reach its start
    FETCH = 11  # tier (the unit's) [src, src+src_bytes) -> SRAM [dst, dst+dst_bytes), over the host link
    STORE = 12  # rows of stream `s_a` -> the unit's tier at their positions (s_b) in the buffer at `dst`


UNIT_OF: dict[Op, UnitKind] = {
    Op.READ: UnitKind.MEM,
    Op.WRITE: UnitKind.MEM,
    Op.GATHER: UnitKind.MEM,
    Op.MXM: UnitKind.MXM,
    Op.VOP: UnitKind.VXM,
    Op.SHIFT: UnitKind.SXM,
    Op.TRANSPOSE: UnitKind.SXM,
    Op.PERMUTE: UnitKind.SXM,
    Op.SEND: UnitKind.C2C,
    Op.RECV: UnitKind.C2C,
    Op.SYNC: UnitKind.SYNC,
    Op.FETCH: UnitKind.HOST,
    Op.STORE: UnitKind.HOST,
}
TIER_UNITS = ("dram", "flash")  # the host link's unit index names the tier it talks to (targets.spec.TIER_NAMES)


class Fn(enum.IntEnum):
    """What a VOP computes (NONE for every other opcode)."""

    NONE = 0
    ADD = 1
    MUL = 2
    SILU = 3
    GELU = 4
    RMSNORM = 5
    ROPE = 6
    SOFTMAX = 7
    ARGMAX = 8
    SCALE = 9  # multiply by per-channel dequantisation scales
    SUM = 10  # add a partial sum received from a peer (all-reduce)
    COPY = 11
    TOPK = 12  # router scores -> the k best experts' weights (and, with ARGTOPK, their ids)
    ARGTOPK = 13
    QUANTIZE = 14  # 16-bit rows -> 8-bit codes and a scale per group (KV-cache writes)
    ARGBEST = 15  # rows of a vocabulary shard -> each row's best (id + base, value) pair among ids below its limit
    PICK = 16  # every shard's pairs -> each row's best id (ties to the lower id)
    ROUTE = 17  # an expert pass's output times each row's routing weight for that expert (0 if not routed)
    CONV1D = 18  # causal depthwise conv: rows (s_a) after the conv state (s_b), taps [C, K] (s_c)
    CONVSTATE = 19  # conv state (s_b) and rows (s_a) -> the state after them: each sequence's last K-1 inputs
    JOIN = 20  # the values of s_a, s_b (and s_c), whole, one after another: a many-operand function's inputs
    SCAN = 21  # Mamba's recurrence: f32 state (s_a), [A_log | D] (s_b), [x | dt | B | C] (s_c) -> the new
    #            state's f32 bytes, then y's 16-bit ones (a WRITE takes the state, a COPY from offset y)
    ACCEPT = 22  # speculative decoding: the target's ids (s_a) and the fed tokens (s_b), m sequences of n rows
    #              -> per sequence the drafts accepted (rows 1..n-1 of s_b equal to s_a one row earlier, in a run)
    COMBINE = 23  # attention partials of a kv head's sequence shards (each its context and log-sum-exp) -> the
    #               context over all the shards' positions, its features from `base` on (flash-decoding's merge)
    GROUP = 24  # routed prefill: ids (s_a) and weights (s_b) of each row's k experts -> a table of m slots,
    #             rows permuted by local expert (ir/program.py): each slot's row, local expert and weight
    UNGROUP = 25  # a grouped matmul's slots (s_a) back to their rows by the table (s_b), weighted and summed


class Fmt(enum.IntEnum):
    """Element format of an MXM's weight tile or a GATHER's table (the `dtype` column); it sets
    the MXM's rate. A block-scaled tile (NVFP4, MXFP4, MXFP8) brings its block scales on `s_d`."""

    F16 = 0
    FP8 = 1
    I8 = 2
    I4 = 3
    BF16 = 4
    NVFP4 = 5
    MXFP4 = 6
    MXFP8 = 7
    E8M0 = 8  # an MX block scale: only gathered (an embedding table's scales), never an MXM tile

    @property
    def dtype(self) -> DType:
        return _DTYPE[self]

    @property
    def bits(self) -> int:
        return self.dtype.bits

    @property
    def precision(self) -> str:
        """The key of ChipSpec.peak_ops_per_s this format runs at natively (targets.spec.mxm_rate_key
        says what a target without that key runs it at)."""
        return _PRECISION[self]


_DTYPE = {Fmt.F16: DType.F16, Fmt.FP8: DType.FP8, Fmt.I8: DType.I8, Fmt.I4: DType.I4, Fmt.BF16: DType.BF16,
          Fmt.NVFP4: DType.NVFP4, Fmt.MXFP4: DType.MXFP4, Fmt.MXFP8: DType.MXFP8, Fmt.E8M0: DType.E8M0}
# e2m1 codes (NVFP4, MXFP4) run at the fp4 peak, MXFP8's e4m3 at the fp8 one. E8M0 is never an
# MXM tile; its key only completes the table.
_PRECISION = {Fmt.F16: "fp16", Fmt.BF16: "fp16", Fmt.FP8: "fp8", Fmt.I8: "int8", Fmt.I4: "int4", Fmt.NVFP4: "fp4",
              Fmt.MXFP4: "fp4", Fmt.MXFP8: "fp8", Fmt.E8M0: "fp8"}
FMT_OF = {dtype: fmt for fmt, dtype in _DTYPE.items()}
