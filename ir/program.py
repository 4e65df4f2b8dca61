"""The Program: every chip's instruction queues, one row per instruction, stored by column.

Millions of instructions must stay cheap to build, save, load and check, so a
Program is a dict of equal-length numpy arrays (COLUMNS) rather than objects.
Rows are sorted by (chip, unit kind, unit, issue cycle): each functional unit's
in-order queue is one contiguous run, and a chip's instructions are one slice.

Operands are explicit: SRAM byte ranges [src, src+src_bytes) and [dst,
dst+dst_bytes), stream ids s_a, s_b, s_c, s_d (inputs) and s_out (output), the peer
chip and message tag of a send or receive, and the tile shape m x k x n. A field
that does not apply holds its default (-1 for addresses, streams, peer and tag;
-1 for imm, meaning none; 0 for sizes, shapes, offset and stride).

What each instruction computes (the functional interpreter's contract):

  READ     SRAM -> s_out. With stride: m rows of src_bytes/m bytes, row i at src + i*stride.
           INDIRECT: the address moves by k bytes times (element `imm` of the i32 stream s_b
           less `base`), clamped to the n items the chip holds (a routed expert's weights).
  WRITE    s_a -> SRAM, rows laid out as READ's. INDIRECT (a cache append): row r goes to
           dst + ((r // k) * imm + pos[r]) * stride, pos the i32 stream s_b, k rows a sequence.
  GATHER   m rows of n elements (format `dtype`): row id - base of the table at src, for the
           ids on s_b; ids outside [base, base + k) give zero rows (a vocabulary shard).
  MXM      s_out = s_a (weight tile k x n, format `dtype`; [n, k] with TRANSPOSE) applied to
           columns [offset, offset + k) of the m rows on s_b, plus s_c's partial sums with
           ACCUMULATE. A block-scaled format (nvfp4, mxfp4, mxfp8) brings its scales on s_d:
           one per block of 16 or 32 elements along k (the tile's rows; along each stored
           row with TRANSPOSE, and along each cached token's row for KEYS / VALUES), the
           tile starting on a block boundary; codes times scales are the weights.
           KEYS / VALUES: the attention products, per kv head (`imm` indexes
           meta["fn_args"] for the head grouping). HEADS (latent attention's absorbed kv_b):
           s_a holds g = fn_args "heads" tiles of k x n/g, row i of every tile before row i+1
           ([k, g, n/g]; with TRANSPOSE [n/g, g, k], each tile stored [n/g, k]); s_b's rows
           are g equal parts, and tile h takes columns [offset, offset + k) of part h; s_out
           is [m, g, n/g].
  VOP      s_out = fn(s_a[offset:], s_b, s_c); `imm` indexes meta["fn_args"] (eps, rope
           frequencies, softmax scale and mask, routing) or is -1; SOFTMAX scales the scores
           by 1/sqrt(head_dim), or by `scale` when given (latent attention); ARGBEST adds `base`
           to its ids, ROUTE weighs the experts from `base` on. SCAN (Mamba) leaves raw bytes:
           the new f32 state, then y in 16 bits; a WRITE stores the first dst_bytes of its stream.
  SEND     src_bytes of s_a from byte `offset` -> link towards `peer`, message `tag`.
  RECV     dst_bytes from `peer`, message `tag` -> s_out. Links are FIFO: the SENDs from one chip
           to one peer with one tag, in issue order, are a queue, and the k-th RECV naming
           (sender, tag) takes the k-th of them, once; the byte counts agree, and every message
           sent in a Program is received in it.
  SYNC     a barrier: every chip of the Program issues the same sequence of SYNCs; SYNC k of every
           chip starts at the same cycle; a SYNC has its chip to itself (what issued before it
           has ended, nothing else issues until it ends); each chip's first instruction is a SYNC.

Wafer Programs (target a SystemSpec; compiler/wafer/lower.py, timed by targets/wafer_timing.py):
a "chip" is a role stream, the code every core of one class of a region runs; meta["replicas"]
counts its cores and meta["roles"] names it ([stage, "root" | "row", tree level, levels it
receives at]). A SEND's `imm` is its hop count; `peer` is a receiving stream, and one SEND feeds
every RECV that names (its stream, its tag). A RECV with ACCUMULATE adds s_c to what arrives. An
MXM reads its k x n weight block straight from SRAM [src, src+src_bytes) (s_a = -1). C2C units:
0 fabric send, 1 fabric receive, 2 and 3 the wafer-to-wafer link.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

# (name, dtype) in storage order; the binary format and the assembly follow it.
COLUMNS: tuple[tuple[str, type], ...] = (
    ("chip", np.int32),
    ("kind", np.uint8),  # ir.isa.UnitKind
    ("unit", np.uint8),  # index of the unit within its kind on the chip
    ("op", np.uint8),  # ir.isa.Op
    ("fn", np.uint8),  # ir.isa.Fn (VOP only)
    ("issue", np.int64),  # cycle the instruction starts
    ("cycles", np.int32),  # cycles it occupies its unit
    ("src", np.int64),
    ("src_bytes", np.int32),
    ("dst", np.int64),
    ("dst_bytes", np.int32),
    ("s_a", np.int16),
    ("s_b", np.int16),
    ("s_c", np.int16),  # a third input: MXM partial sums, a VOP's table
    ("s_d", np.int16),  # a fourth input: a block-scaled MXM tile's scales
    ("s_out", np.int16),
    ("peer", np.int32),
    ("tag", np.int32),
    ("m", np.int32),
    ("k", np.int32),
    ("n", np.int32),
    ("flags", np.uint8),  # Flag
    ("dtype", np.uint8),  # ir.isa.Fmt of an MXM weight tile (sets its rate)
    ("offset", np.int32),  # where in an input stream the instruction starts (see above)
    ("stride", np.int32),  # bytes between rows of a 2-D SRAM access
    ("imm", np.int32),  # an immediate: an index, a count or a table entry (see above)
    ("base", np.int32),  # the first id this chip holds: its vocabulary shard's first row, first local expert
    ("route", np.uint8),  # ir.contract.Route: how a roles-dialect message crosses the wafer
)
NAMES = tuple(name for name, _ in COLUMNS)
DTYPES = {name: np.dtype(dt) for name, dt in COLUMNS}
DEFAULTS = {name: -1 if name in ("src", "dst", "s_a", "s_b", "s_c", "s_d", "s_out", "peer", "tag", "imm") else 0
            for name in NAMES}
SORT_KEY = ("chip", "kind", "unit", "issue")
HOST = -2  # the `peer` of a message to or from the host rather than a chip or stream


class Flag(enum.IntFlag):
    ACCUMULATE = 1  # MXM adds into its accumulators instead of overwriting
    LAST = 2  # MXM's last k-tile (or attention's last block): results leave the unit
    INDIRECT = 4  # the address is offset at run time by an index on a stream (gather, cache write)
    TRANSPOSE = 8  # MXM: the weight tile is stored [n, k] (a tied head reading the embedding table)
    KEYS = 16  # MXM: attention scores, queries (s_b) against a block of cached keys (s_a)
    VALUES = 32  # MXM: attention output, probabilities (s_b) times a block of cached values (s_a)
    HEADS = 64  # MXM: one weight tile per head (s_a), each applied to its own head's columns of s_b
    WINDOW = 128  # INDIRECT WRITE/STORE: the buffer holds positions [base, base + imm); rows outside are dropped


@dataclass(frozen=True, eq=False)
class Program:
    """One phase (decode: one token; prefill: the whole prompt) on every chip of a plan."""

    phase: str
    target: str
    chips: int
    clock_hz: float
    cols: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)  # JSON-serialisable facts for tools (stages, chunks)
    dialect: str = "queues"  # ir.contract.DIALECTS: what its "chips" are and what its columns mean

    @classmethod
    def build(cls, phase: str, target: str, chips: int, clock_hz: float, cols: dict[str, np.ndarray],
              meta: dict | None = None, dialect: str = "queues") -> Program:
        """Check the columns and sort rows into queue order (stable, so equal keys keep their order)."""
        cols = _checked(cols)
        if not _in_queue_order(cols):
            order = _queue_order(cols)
            for name in NAMES:  # one column at a time, so only one extra copy is alive
                cols[name] = cols[name][order]
        program = cls(phase, target, int(chips), float(clock_hz), cols, dict(meta or {}), dialect)
        if len(program) and not (cols["chip"][0] >= 0 and cols["chip"][-1] < chips):
            raise ValueError(f"chip ids must lie in 0..{chips - 1}")
        return program

    def __len__(self) -> int:
        return len(self.cols["chip"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Program):
            return NotImplemented
        same = (self.phase, self.target, self.chips, self.clock_hz, self.meta, self.dialect) == (
            other.phase, other.target, other.chips, other.clock_hz, other.meta, other.dialect)
        return same and all(np.array_equal(self.cols[n], other.cols[n]) for n in NAMES)

    __hash__ = None  # mutable arrays inside

    @property
    def makespan(self) -> int:
        """Cycles from the first issue to the last instruction's end."""
        if not len(self):
            return 0
        return int((self.cols["issue"] + self.cols["cycles"]).max())

    def chip_slice(self, chip: int) -> slice:
        """Rows of one chip (contiguous by the sort order)."""
        c = self.cols["chip"]
        return slice(int(np.searchsorted(c, chip, "left")), int(np.searchsorted(c, chip, "right")))

    def queues(self) -> Iterator[tuple[int, int, int, slice]]:
        """(chip, kind, unit, rows) for every non-empty unit queue, in storage order."""
        c = self.cols
        if not len(self):
            return
        key = (c["chip"].astype(np.int64) << 16) | (c["kind"].astype(np.int64) << 8) | c["unit"]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        ends = np.r_[starts[1:], len(key)]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            yield int(c["chip"][s]), int(c["kind"][s]), int(c["unit"][s]), slice(s, e)

    def with_columns(self, cols: dict[str, np.ndarray]) -> Program:
        """The same Program (phase, target, chips, clock, metadata, dialect) over other columns: an edit."""
        return Program.build(self.phase, self.target, self.chips, self.clock_hz, {n: cols[n] for n in NAMES},
                             self.meta, self.dialect)

    def select(self, rows: np.ndarray | slice) -> Program:
        """A Program of the chosen rows (a boolean mask, index array in order, or slice)."""
        return Program(self.phase, self.target, self.chips, self.clock_hz,
                       {n: np.ascontiguousarray(a[rows]) for n, a in self.cols.items()}, self.meta, self.dialect)

    def window(self, chips: Sequence[int] | None = None, cycles: tuple[int, int] | None = None) -> Program:
        """The instructions of `chips` (all if None) that overlap the cycle window [lo, hi)."""
        c = self.cols
        keep = np.ones(len(self), dtype=bool)
        if chips is not None:
            keep &= np.isin(c["chip"], chips)
        if cycles is not None:
            keep &= (c["issue"] < cycles[1]) & (c["issue"] + c["cycles"] > cycles[0])
        return self if keep.all() else self.select(keep)

    def row(self, i: int) -> dict[str, int]:
        return {n: int(self.cols[n][i]) for n in NAMES}


def empty_columns(rows: int) -> dict[str, np.ndarray]:
    """`rows` instructions with every field at its default."""
    return {n: np.full(rows, DEFAULTS[n], DTYPES[n]) for n in NAMES}


def _checked(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [n for n in NAMES if n not in cols]
    extra = sorted(set(cols) - set(NAMES))
    if missing or extra:
        raise ValueError(f"program columns: missing {missing}, unknown {extra}")
    lengths = {len(cols[n]) for n in NAMES}
    if len(lengths) > 1:
        raise ValueError(f"program columns differ in length: {sorted(lengths)}")
    out = {}
    for n in NAMES:
        a = np.asarray(cols[n])
        if a.dtype != DTYPES[n]:
            cast = a.astype(DTYPES[n])
            if not np.array_equal(cast, a):
                raise ValueError(f"program column {n}: values do not fit {DTYPES[n]}")
            a = cast
        out[n] = np.ascontiguousarray(a)
    return out


def _queue_order(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The stable permutation into SORT_KEY order: one argsort of a packed 64-bit key (3x faster
    than a lexsort of four keys on millions of rows) when the fields fit, else the lexsort."""
    chip, kind, unit, issue = (cols[name].astype(np.int64) for name in SORT_KEY)
    fits = len(chip) and chip.min() >= 0 and chip.max() < 2**19 and kind.max() < 8 and issue.min() >= 0 \
        and issue.max() < 2**33
    if fits:
        return np.argsort((chip << 44) | (kind << 41) | (unit << 33) | issue, kind="stable")
    return np.lexsort((issue, unit, kind, chip))


def _in_queue_order(cols: dict[str, np.ndarray]) -> bool:
    """Whether rows are already sorted by SORT_KEY (a loaded file is): O(n), no sort."""
    if len(cols["chip"]) < 2:
        return True
    tied = np.ones(len(cols["chip"]) - 1, dtype=bool)
    for name in SORT_KEY:
        step = np.diff(cols[name].astype(np.int64))
        if (tied & (step < 0)).any():
            return False
        tied &= step == 0
    return True
