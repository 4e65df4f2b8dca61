"""The cycle-accurate interpreter, functional mode: executes a Program on data, chip by chip.

Each chip has an SRAM image (bytes) and streams; instructions run in global issue
order (ties by row), so a RECV finds its SEND's message and a reader finds what
the last earlier writer left, exactly as the schedule promises. What each
instruction computes is the contract in ir/program.py. Numerics follow the
target: weights decoded from their stored format, products and vector functions
in f32, activations rounded to the Program's 16-bit type (meta["activations"]: bf16
for a bfloat16 model) whenever they are written to SRAM or sent over a link. The
element-wise maths is the graph IR's own (ir.reference): what this checks is the
compiler's addressing, layout, sharding, collectives and hand-offs, against the reference
and against Hugging Face transformers.

Messages follow targets/messages.py: per (sender, receiver, tag) a FIFO queue, each message
taken once; a RECV that finds none, a size that differs, or a message left over when the
Program ends is an error. SYNC is the barrier described there: nothing on a chip runs before
its first SYNC, and every chip passes the same SYNCs at the same cycles.

Every failure while executing an instruction is a FunctionalError (exit 2) naming the chip,
its unit queue, the instruction's index in it and its cycle, never a raw exception.

Like timing mode it never imports compiler/.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from ir.errors import ExecutionError
from ir.isa import Fmt, Fn, Op, UnitKind
from ir.numerics import ELEMENT, decode, dequantize_blocks, encode, quantize, quantize_blocks, round_to
from ir.ops import Opcode
from ir.program import Flag, Program
from ir.reference import (
    ACTIVATIONS,
    EVAL,
    accepted_drafts,
    causal_conv,
    ring_positions,
    rms_norm,
    rope,
    selective_scan,
    softmax,
)
from ir.types import DType

PAIR = np.dtype([("id", "<i4"), ("value", "<f4")])  # a vocabulary shard's best (id, value), 8 bytes


class FunctionalError(ExecutionError):
    """The program asks for something functional mode does not model, or is malformed."""


MAX_STREAM_BYTES = 2**28  # no stream of a chip holds more; a larger size is a corrupt operand


@dataclass
class Machine:
    """Every chip's SRAM, and the messages in flight between chips: a FIFO queue of
    (bytes, row of the SEND) per (sender, receiver, tag)."""

    sram: dict[int, np.ndarray]
    mailbox: dict[tuple[int, int, int], deque] = field(default_factory=dict)
    executed: int = 0  # instructions run so far
    tiers: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (chip, tier unit) -> its bytes

    def tier_write(self, chip: int, tier: int, addr: int, data: np.ndarray) -> None:
        """Bytes into a tier below SRAM (it holds zeros where nothing was written, as a zeroed cache)."""
        if addr < 0:
            raise FunctionalError(f"chip {chip}: tier {tier} write at negative address {addr}")
        mem = self.tiers.get((chip, tier), np.zeros(0, np.uint8))
        if len(mem) < addr + len(data):
            mem = np.concatenate([mem, np.zeros(addr + len(data) - len(mem), np.uint8)])
        mem[addr: addr + len(data)] = data
        self.tiers[chip, tier] = mem

    def tier_read(self, chip: int, tier: int, addr: int, nbytes: int) -> np.ndarray:
        if addr < 0 or nbytes < 0:
            raise FunctionalError(f"chip {chip}: tier {tier} read [{addr:#x}, {addr + nbytes:#x})")
        mem = self.tiers.get((chip, tier), np.zeros(0, np.uint8))
        out = np.zeros(nbytes, np.uint8)
        got = mem[addr: addr + nbytes]
        out[: len(got)] = got
        return out

    @classmethod
    def blank(cls, chips: int, usable_bytes: int) -> Machine:
        return cls({c: np.zeros(usable_bytes, np.uint8) for c in range(chips)})

    def load(self, image: dict[int, np.ndarray]) -> None:
        """Resident bytes (weights, zeroed caches) from address 0 of each chip."""
        for chip, data in image.items():
            self.sram[chip][: len(data)] = data

    def write(self, chip: int, addr: int, data: np.ndarray) -> None:
        self._check(chip, addr, len(data), "write")
        self.sram[chip][addr: addr + len(data)] = data

    def read(self, chip: int, addr: int, nbytes: int) -> np.ndarray:
        self._check(chip, addr, nbytes, "read")
        return self.sram[chip][addr: addr + nbytes].copy()

    def _check(self, chip: int, addr: int, nbytes: int, what: str) -> None:
        """Run-time addresses (cache appends, routed experts) come from data, so check them here."""
        if addr < 0 or addr + nbytes > len(self.sram[chip]):
            raise FunctionalError(f"chip {chip}: {what} [{addr:#x}, {addr + nbytes:#x}) is outside its "
                                  f"{len(self.sram[chip]):,} bytes of SRAM")


# A host action at a cycle: it runs before any instruction issued at or after that cycle.
HostEvent = tuple[int, Callable[[Machine], None]]


def execute_functional(program: Program, machine: Machine, events: list[HostEvent] = (),
                       order: list[int] | None = None) -> None:
    """Run every instruction of `program` on `machine`'s data in issue order. `order` ranks
    the chips for instructions issued in the same cycle (any order gives the same data)."""
    c = program.cols
    chip_rank = np.empty(program.chips, np.int64)
    chip_rank[order if order is not None else np.arange(program.chips)] = np.arange(program.chips)
    rows = np.lexsort((np.arange(len(program)), chip_rank[c["chip"]], c["issue"]))
    cols = {n: a[rows].tolist() for n, a in c.items()}
    pending = sorted(events, key=lambda e: e[0])
    streams = Streams()
    args = program.meta.get("fn_args", [])
    barriers: dict[int, list[tuple[int, int]]] = {}
    act = activation_dtype(program)
    with np.errstate(all="ignore"):  # a NaN or inf in the data is the outputs' to show, not a warning's
        _run_rows(program, machine, rows, cols, pending, streams, args, barriers, act)
    for _, action in pending:
        action(machine)
    machine.executed += len(rows)
    _leftover_messages(program, machine)
    _same_barriers(program, barriers)


def _run_rows(program: Program, machine: Machine, rows: np.ndarray, cols: dict[str, list], pending: list,
              streams: Streams, args: list, barriers: dict[int, list[tuple[int, int]]], act: DType) -> None:
    for j in range(len(rows)):
        while pending and pending[0][0] <= cols["issue"][j]:
            pending.pop(0)[1](machine)
        ins = {n: v[j] for n, v in cols.items()}
        ins["row"] = int(rows[j])
        ins["act"] = act  # the instruction's columns, and the 16-bit type activations are held in
        try:
            _barrier(ins, barriers)
            _EXEC[Op(ins["op"])](ins, machine, streams, args)
        except Exception as error:  # the Program is user data: any failure is its defect, located
            raise located(program, int(rows[j]), error) from None


class Streams(dict):
    """(chip, stream) -> value; reading a stream nothing wrote is the Program's error."""

    def __missing__(self, key: tuple[int, int]) -> np.ndarray:
        raise FunctionalError(f"reads stream {key[1]}, which nothing wrote")


def located(program: Program, row: int, error: Exception) -> FunctionalError:
    """The error as `chip C unit.U[index] @cycle: op: what went wrong`."""
    c = program.cols
    chip, kind, unit = int(c["chip"][row]), int(c["kind"][row]), int(c["unit"][row])
    same = (c["chip"] == chip) & (c["kind"] == kind) & (c["unit"] == unit)
    index = int(same[:row].sum())
    what = str(error) if isinstance(error, FunctionalError) else f"{type(error).__name__}: {error}"
    return FunctionalError(f"chip {chip} {UnitKind(kind).name.lower()}.{unit}[{index}] @{int(c['issue'][row])}: "
                           f"{Op(c['op'][row]).name.lower()}: {what}")


def _barrier(ins: dict, barriers: dict[int, list[tuple[int, int]]]) -> None:
    """Nothing on a chip runs before its first SYNC; record each SYNC's (cycle, row)."""
    if ins["op"] == Op.SYNC:
        barriers.setdefault(ins["chip"], []).append((ins["issue"], ins["row"]))
    elif ins["chip"] not in barriers:
        raise FunctionalError("issues before the chip's first SYNC")


def _same_barriers(program: Program, barriers: dict[int, list[tuple[int, int]]]) -> None:
    """Every chip passed the same SYNCs at the same cycles (the first chip's set them)."""
    chips = sorted(set(program.cols["chip"].tolist()))
    if not barriers:
        return
    expected = [cycle for cycle, _ in barriers.get(chips[0], [])]
    for chip in chips[1:]:
        mine = barriers.get(chip, [])
        cycles = [cycle for cycle, _ in mine]
        if cycles != expected:
            k = next((i for i, (a, b) in enumerate(zip(cycles, expected, strict=False)) if a != b),
                     min(len(cycles), len(expected)))
            row = mine[min(k, len(mine) - 1)][1] if mine else program.chip_slice(chip).start
            raise located(program, row, FunctionalError(
                f"the chip passes barriers at cycles {cycles}, chip {chips[0]} at {expected}: every chip reaches "
                "the same SYNCs together"))


def _leftover_messages(program: Program, machine: Machine) -> None:
    """A message sent and never received is an error (of its SEND); the mailbox empties."""
    left = sorted(row for queue in machine.mailbox.values() for _, row in queue)
    machine.mailbox.clear()
    if left:
        c = program.cols
        raise located(program, left[0], FunctionalError(
            f"the message to chip {c['peer'][left[0]]} tag {c['tag'][left[0]]} is never received"
            + (f" ({len(left) - 1} more)" if len(left) > 1 else "")))


def activation_dtype(program: Program) -> DType:
    """The 16-bit type the Program holds activations in (its meta["activations"]: f16 or bf16)."""
    name = program.meta.get("activations")
    if name not in ("f16", "bf16"):
        raise FunctionalError(f"the {program.phase} program does not say its activation type (meta['activations'] "
                              f"is {name!r}); recompile the build")
    return DType(name)


# ---- stream values: bytes as they lie in SRAM, or f32 / i32 results of compute units -----------

def as_bytes(x: np.ndarray, act: DType) -> np.ndarray:
    """A stream as it would be stored: activations rounded to `act` (the Program's 16-bit type),
    32-bit ids, or its raw bytes."""
    if x.dtype == np.float32:
        return encode(x, act)
    return np.ascontiguousarray(x).view(np.uint8).reshape(-1)


def as_values(x: np.ndarray, act: DType) -> np.ndarray:
    """A stream as f32 activations (raw bytes hold 16-bit floats of type `act`)."""
    return decode(x, act) if x.dtype == np.uint8 else x.astype(np.float32, copy=False).reshape(-1)


def as_ids(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.int32).reshape(-1) if x.dtype == np.uint8 else x.astype(np.int32)


def _fit(raw: np.ndarray, nbytes: int) -> np.ndarray:
    """The first `nbytes` bytes, zero-padded (a collective's last slice may overhang)."""
    if not 0 <= nbytes <= MAX_STREAM_BYTES:
        raise FunctionalError(f"{nbytes} bytes: no stream holds that many")
    out = np.zeros(nbytes, np.uint8)
    out[: min(nbytes, len(raw))] = raw[:nbytes]
    return out


# ---- MEM ------------------------------------------------------------------------------------

def _rows(start: int, nbytes: int, rows: int, stride: int) -> list[tuple[int, int]]:
    """(address, bytes) of each row of a 2-D access, or the one contiguous range."""
    if rows <= 0 or not stride:
        return [(start, nbytes)]
    per = nbytes // rows
    return [(start + r * stride, per) for r in range(rows)]


def _read(ins: dict, m: Machine, streams: dict, args: list) -> None:
    chip, addr = ins["chip"], ins["src"]
    if ins["flags"] & Flag.INDIRECT:  # a routed expert: one this chip holds, whatever the id
        item = int(as_ids(streams[chip, ins["s_b"]])[ins["imm"]]) - ins["base"]
        addr += (min(max(item, 0), ins["n"] - 1) if ins["n"] else item) * ins["k"]
    tiles = ins["n"] if ins["n"] > 0 and not ins["flags"] & Flag.INDIRECT else 1  # every local expert's panel
    per = ins["src_bytes"] // tiles
    parts = [m.read(chip, a, n) for j in range(tiles)
             for a, n in _rows(addr + j * ins["k"], per, ins["m"], ins["stride"])]
    streams[chip, ins["s_out"]] = np.concatenate(parts)


def _write(ins: dict, m: Machine, streams: dict, args: list) -> None:
    chip, nbytes = ins["chip"], ins["dst_bytes"]
    data = _fit(as_bytes(streams[chip, ins["s_a"]], ins["act"])[ins["offset"]:], nbytes)
    if ins["flags"] & Flag.INDIRECT:  # a cache append: row r at its sequence's position
        pos = as_ids(streams[chip, ins["s_b"]])
        per = nbytes // ins["m"]
        for r in range(ins["m"]):
            at = _window(ins, int(pos[r]))
            if at is not None:
                m.write(chip, ins["dst"] + ((r // ins["k"]) * ins["imm"] + at) * ins["stride"],
                        data[r * per:(r + 1) * per])
        return
    at = 0
    for addr, n in _rows(ins["dst"], nbytes, ins["m"], ins["stride"]):
        m.write(chip, addr, data[at: at + n])
        at += n


def _window(ins: dict, position: int) -> int | None:
    """A position's row in an INDIRECT buffer; with WINDOW (a cache split over tiers) the buffer holds
    positions [base, base + imm) and a row outside it lands elsewhere (None), or with `n` (a WRITE into
    a ring of the n newest positions) position p is row p mod n (rows are written in order, so a
    sequence's newest row of a ring row wins)."""
    if not ins["flags"] & Flag.WINDOW:
        return position
    if ins["op"] == Op.WRITE and ins["n"] > 0:
        return position % ins["n"] if position >= 0 else None
    row = position - ins["base"]
    return row if 0 <= row < ins["imm"] else None


def _fetch(ins: dict, m: Machine, streams: dict, args: list) -> None:
    """Tier bytes into SRAM over the host link."""
    data = m.tier_read(ins["chip"], ins["unit"], ins["src"], ins["src_bytes"])
    m.write(ins["chip"], ins["dst"], data[: ins["dst_bytes"]])


def _store(ins: dict, m: Machine, streams: dict, args: list) -> None:
    """Rows of a stream into the tier at their positions (those the buffer's window holds)."""
    chip, rows = ins["chip"], ins["m"]
    data = _fit(as_bytes(streams[chip, ins["s_a"]], ins["act"])[ins["offset"]:], ins["dst_bytes"])
    pos = as_ids(streams[chip, ins["s_b"]])
    per = ins["dst_bytes"] // rows
    for r in range(rows):
        at = _window(ins, int(pos[r]))
        if at is not None:
            row = (r // max(1, ins["k"])) * ins["imm"] + at  # its sequence's buffer, then its position there
            m.tier_write(chip, ins["unit"], ins["dst"] + row * ins["stride"], data[r * per:(r + 1) * per])


def _gather(ins: dict, m: Machine, streams: dict, args: list) -> None:
    """Table rows by id; ids outside this chip's shard [base, base + k) give zero rows."""
    chip, rows = ins["chip"], ins["m"]
    per = ins["src_bytes"] // rows
    ids = as_ids(streams[chip, ins["s_b"]])[:rows] - ins["base"]
    out = np.zeros((rows, per), np.uint8)
    for r, i in enumerate(ids.tolist()):
        if 0 <= i < ins["k"]:
            out[r] = m.read(chip, ins["src"] + i * per, per)
    values = decode(out.reshape(-1), Fmt(ins["dtype"]).dtype)
    streams[chip, ins["s_out"]] = values


# ---- MXM ------------------------------------------------------------------------------------

def _mxm(ins: dict, m: Machine, streams: dict, args: list) -> None:
    chip, k, n = ins["chip"], ins["k"], ins["n"]
    dtype = Fmt(ins["dtype"]).dtype
    weight = decode(streams[chip, ins["s_a"]], dtype)
    if dtype.block is not None:
        scales = decode(streams[chip, ins["s_d"]], dtype.block.scale)
        tiles = max(1, ins["imm"]) if ins["s_e"] >= 0 else 1  # a grouped MXM's tiles, each with its own scales
        per, scale_per = ins["k"] * ins["n"], dtype.block.scales(ins["k"]) * ins["n"]
        weight = np.concatenate([_scaled_tile(ins, weight[j * per:], scales[j * scale_per:]) for j in range(tiles)])
    # Products and partial sums exact to float64 along the chain, rounded to f32 as the results
    # leave (LAST): the reference's ir.reference.product, whatever the panel order.
    weight = weight.astype(np.float64)
    acts = as_values(streams[chip, ins["s_b"]], ins["act"]).astype(np.float64)
    flags = ins["flags"]
    if ins["s_e"] >= 0:
        out = _grouped_product(ins, weight, acts, as_ids(streams[chip, ins["s_e"]]))
    elif flags & (Flag.KEYS | Flag.VALUES):
        out = _attention_product(ins, weight, acts, dict(args[ins["imm"]]))
    elif flags & Flag.HEADS:
        out = _head_product(ins, weight, acts, dict(args[ins["imm"]])["heads"])
    else:
        w = weight[: k * n].reshape(n, k).T if flags & Flag.TRANSPOSE else weight[: k * n].reshape(k, n)
        x = acts.reshape(ins["m"], -1)[:, ins["offset"]: ins["offset"] + k]
        out = (x @ w).reshape(-1)
    if flags & Flag.ACCUMULATE:
        earlier = streams[chip, ins["s_c"]]
        if flags & Flag.KEYS:  # the chain's scores so far, then this block's tokens
            a = args[ins["imm"]]
            lines = dict(a)["rows"] * dict(a)["heads"]
            out = np.concatenate([earlier.reshape(lines, -1), out.reshape(lines, -1)], axis=1).reshape(-1)
        else:
            out = earlier + out
    streams[chip, ins["s_out"]] = out.astype(np.float32 if flags & Flag.LAST else np.float64, copy=False)


def _scaled_tile(ins: dict, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """A block-scaled tile's codes times their scales (ir/program.py): blocks run down the columns
    of a [k, n] weight tile, and along the stored rows of a transposed tile ([n, k]) and of a
    cache block ([tokens, width]: KEYS [n, k], VALUES [k, n])."""
    k, n, flags = ins["k"], ins["n"], ins["flags"]
    dtype = Fmt(ins["dtype"]).dtype
    if flags & Flag.HEADS:
        raise FunctionalError(f"chip {ins['chip']}: per-head MXM tiles are not block-scaled")
    rows, cols = (n, k) if flags & (Flag.TRANSPOSE | Flag.KEYS) else (k, n)
    axis = 1 if flags & (Flag.TRANSPOSE | Flag.KEYS | Flag.VALUES) else 0
    per = dtype.block.scales(rows if axis == 0 else cols)
    shape = (per, cols) if axis == 0 else (rows, per)
    tile = dequantize_blocks(codes[: rows * cols].reshape(rows, cols), scales[: shape[0] * shape[1]].reshape(shape),
                             dtype, axis)
    return tile.reshape(-1)


def _grouped_product(ins: dict, weight: np.ndarray, acts: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Slot i of the m rows times tile e_i of the `imm` on s_a (its local expert in the table; ir/program.py),
    zeros for a slot with none."""
    k, n, rows, tiles = ins["k"], ins["n"], ins["m"], ins["imm"]
    if ins["flags"] & (Flag.TRANSPOSE | Flag.KEYS | Flag.VALUES | Flag.HEADS) or tiles < 1:
        raise FunctionalError(f"chip {ins['chip']}: a grouped MXM takes {tiles} plain tiles")
    if len(weight) < tiles * k * n or len(table) < 2 * rows:
        raise FunctionalError(f"chip {ins['chip']}: a grouped MXM of {tiles} {k}x{n} tiles over {rows} slots gets "
                              f"{len(weight)} weights and a table of {len(table)}")
    w = weight[: tiles * k * n].reshape(tiles, k, n)
    x = acts.reshape(rows, -1)[:, ins["offset"]: ins["offset"] + k]
    expert = table[rows: 2 * rows]
    out = np.zeros((rows, n), np.float64)
    for e in np.unique(expert[(expert >= 0) & (expert < tiles)]).tolist():
        mine = expert == e
        out[mine] = x[mine] @ w[e]
    return out.reshape(-1)


def _attention_product(ins: dict, cache: np.ndarray, acts: np.ndarray, a: dict) -> np.ndarray:
    """Keys: scores [rows, heads, block] of each query head against its kv head's keys.
    Values: the block's probabilities (from column `offset`) times its values, [rows, heads x d]."""
    rows, heads, groups = a["rows"], a["heads"], a["kv_heads"]
    per = heads // groups
    if ins["flags"] & Flag.KEYS:
        block, width = ins["n"], ins["k"]
        q = acts.reshape(rows, groups, per, width // groups).transpose(1, 0, 2, 3).reshape(groups, rows * per, -1)
        keys = cache[: block * width].reshape(block, groups, width // groups).transpose(1, 2, 0)
        return (q @ keys).reshape(groups, rows, per, block).transpose(1, 0, 2, 3).reshape(-1)
    block, width = ins["k"], ins["n"]
    p = acts.reshape(rows, heads, -1)[:, :, ins["offset"]: ins["offset"] + block]
    p = p.reshape(rows, groups, per, block).transpose(1, 0, 2, 3).reshape(groups, rows * per, block)
    vals = cache[: block * width].reshape(block, groups, width // groups).transpose(1, 0, 2)
    return (p @ vals).reshape(groups, rows, per, -1).transpose(1, 0, 2, 3).reshape(-1)


def _head_product(ins: dict, weight: np.ndarray, acts: np.ndarray, heads: int) -> np.ndarray:
    """One tile per head (latent attention's absorbed kv_b): tile h, [k, n/heads] (stored
    transposed with TRANSPOSE), times columns [offset, offset + k) of part h of each row."""
    k, per = ins["k"], ins["n"] // heads
    w = weight[: k * ins["n"]]
    tiles = w.reshape(per, heads, k).transpose(1, 2, 0) if ins["flags"] & Flag.TRANSPOSE else \
        w.reshape(k, heads, per).transpose(1, 0, 2)
    x = acts.reshape(ins["m"], heads, -1)[:, :, ins["offset"]: ins["offset"] + k]
    return np.einsum("mhk,hkn->mhn", x, tiles).reshape(-1)


# ---- VXM ------------------------------------------------------------------------------------

def _vop(ins: dict, m: Machine, streams: dict, args: list) -> None:
    chip = ins["chip"]
    fn = Fn(ins["fn"])
    if fn not in VECTOR:
        raise FunctionalError(f"functional mode does not model vop.{fn.name.lower()} yet")
    a = streams[chip, ins["s_a"]]
    b = streams[chip, ins["s_b"]] if ins["s_b"] >= 0 else None
    if ins["s_c"] >= 0:
        b = (b, streams[chip, ins["s_c"]])
    fn_args = dict(args[ins["imm"]]) if fn in _TAKES_ARGS and ins["imm"] >= 0 else {}
    out = VECTOR[fn](ins, a, b, fn_args)
    streams[chip, ins["s_out"]] = round_to(out, ins["act"]) if ins["flags"] & Flag.ROUND else out


def _operand_a(ins: dict, a: np.ndarray) -> np.ndarray:
    """Operand a from byte `offset` (a collective's own slice), m x n elements."""
    values = as_values(a, ins["act"])[ins["offset"] // 2:]
    count = ins["m"] * ins["n"]
    return np.pad(values[:count], (0, max(0, count - len(values))))


def _broadcast(ins: dict, a: np.ndarray, b: np.ndarray, per_row: bool) -> np.ndarray:
    """b over a [m, n]: whole, one value per column, or (per_row) one per row."""
    rows, cols = ins["m"], ins["n"]
    b = as_values(b, ins["act"])
    if len(b) < (rows if per_row else min(cols, rows * cols)):
        raise FunctionalError(f"vop.{Fn(ins['fn']).name.lower()} needs "
                              f"{rows}x{cols} elements, operand b holds {len(b)}")
    if per_row:
        return np.repeat(b[:rows], cols)
    if len(b) >= rows * cols:
        return b[: rows * cols]
    return np.tile(b[:cols], rows)


def _binary(f: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def run(ins, a, b, fn_args):
        x = _operand_a(ins, a)
        return f(x, _broadcast(ins, x, b, fn_args.get("axis") == "row")).astype(np.float32)
    return run


def _unary(f: Callable[[np.ndarray], np.ndarray]):
    return lambda ins, a, b, fn_args: f(_operand_a(ins, a)).astype(np.float32)


def _rmsnorm(ins, a, b, fn_args):
    x = _operand_a(ins, a).reshape(ins["m"], ins["n"]).astype(ELEMENT[ins["act"]])
    return rms_norm(x, as_values(b, ins["act"])[: ins["n"]], fn_args["eps"]).reshape(-1)


def _rope(ins, a, b, fn_args):
    x = _operand_a(ins, a).reshape(ins["m"], ins["n"])
    return rope(x, as_ids(b)[: ins["m"]], fn_args).astype(np.float32).reshape(-1)


def _softmax(ins, a, b, f):
    """Attention probabilities: row r of sequence r // (rows / batch) sees the positions
    0..pos[r] of its own sequence's cache, whose column c holds position `base` + c (a shard of
    the positions); scores scaled by `scale` (latent attention) or 1/sqrt(head_dim). A line that
    sees none gives zeros. With `lse`, each line's log-sum-exp instead (-inf when it sees none),
    as two 16-bit parts whose sum is it (what a sequence shard's partial carries)."""
    rows, heads, tokens, batch = f["rows"], f["heads"], f["tokens"], f["batch"]
    total = tokens * batch
    scores = as_values(a, ins["act"]).reshape(rows * heads, total)
    scores = scores * np.float32(f["scale"]) if "scale" in f else scores / np.float32(math.sqrt(f["head_dim"]))
    pos = as_ids(b)[:rows]
    t = np.arange(total)
    seq = np.arange(rows) // max(1, rows // batch)
    at = _ring_columns(f, pos, seq, tokens) if "ring" in f else np.broadcast_to(t % tokens + ins["base"], (rows, total))
    visible = (t[None, :] // tokens == seq[:, None]) & (at >= 0) & (at <= pos[:, None])
    seen = np.repeat(visible, heads, axis=0)
    scores = np.where(seen, scores, -np.inf)
    any_seen = seen.any(axis=1, keepdims=True)
    if f.get("lse"):
        top = np.where(any_seen, scores.max(axis=1, keepdims=True), 0.0)
        lse = np.where(any_seen[:, 0], np.log(np.exp(scores - top).sum(axis=1)) + top[:, 0], -np.inf)
        hi = round_to(lse.astype(np.float32), ins["act"])
        lo = np.where(np.isfinite(hi), lse - hi, 0.0)
        return np.stack([hi, lo], axis=1).astype(np.float32).reshape(-1)
    return np.where(any_seen, softmax(np.where(any_seen, scores, 0.0)), 0.0).astype(np.float32).reshape(-1)


def _combine(ins, a, b, f):
    """Sequence shards' partials merged (flash-decoding): shard i's part holds its context [rows, heads,
    head_dim], normalised over its positions, then its log-sum-exp per (row, head) in two parts; each
    shard weighs exp(lse_i - max lse) over their sum. Features [base, base + keep) of each row's merged
    heads x head_dim (zeros past them: a query slice's padding)."""
    shards, rows, heads, d, keep = f["shards"], f["rows"], f["heads"], f["head_dim"], f["keep"]
    width = rows * heads * (d + 2)
    parts = as_values(a, ins["act"])[ins["offset"] // 2:][: shards * width]
    parts = np.pad(parts, (0, shards * width - len(parts))).reshape(shards, width).astype(np.float64)
    ctx = parts[:, : rows * heads * d].reshape(shards, rows, heads, d)
    lse = parts[:, rows * heads * d:].reshape(shards, rows, heads, 2).sum(axis=3)
    top = lse.max(axis=0)
    w = np.exp(lse - np.where(np.isfinite(top), top, 0.0))
    out = (w[..., None] * ctx).sum(axis=0) / np.maximum(w.sum(axis=0), np.finfo(np.float64).tiny)[..., None]
    flat = np.pad(out.reshape(rows, heads * d), ((0, 0), (0, max(0, ins["base"] + keep - heads * d))))
    return flat[:, ins["base"]: ins["base"] + keep].astype(np.float32).reshape(-1)


def _ring_columns(f: dict, pos: np.ndarray, seq: np.ndarray, tokens: int) -> np.ndarray:
    """[rows, batch x tokens]: the position each score column of a cache split over tiers holds for
    each row (-1: none). A sequence's columns are its `cold` tier positions, then the ring of `ring`
    (ir.reference.ring_positions after its newest row); a tier position is its own once the ring
    has passed it (p <= newest - ring), the ring holds the rest."""
    cold, hot = f["cold"], f["ring"]
    newest = np.array([pos[seq == s].max() for s in range(int(seq.max()) + 1)])
    ring = ring_positions(newest, hot)[seq]  # [rows, hot]
    tier = np.arange(cold)[None, :]
    tier = np.where(tier <= newest[seq][:, None] - hot, tier, -1)
    per_seq = np.concatenate([np.broadcast_to(tier, (len(pos), cold)), ring], axis=1)
    return np.tile(per_seq, (1, f["batch"]))


def _argmax(ins, a, b, f):
    return np.argmax(_operand_a(ins, a).reshape(ins["m"], ins["n"]), axis=1).astype(np.int32)


def _accept(ins, a, b, f):
    """m sequences of n rows: the target's ids (a) against the fed tokens (b), one row later."""
    count = ins["m"] * ins["n"]
    return accepted_drafts(as_ids(a)[:count], as_ids(b)[:count], ins["n"])


def _argbest(ins, a, b, f):
    """Each row's best (global id, value) over the shard's ids below `limit` (the vocabulary: the last
    shard's padded columns never win)."""
    limit = f.get("limit")
    if limit is None or min(ins["n"], limit - ins["base"]) < 1:
        raise FunctionalError(f"vop.argbest: the shard from id {ins['base']} holds no id below its limit {limit}")
    real = min(ins["n"], limit - ins["base"])
    x = _operand_a(ins, a).reshape(ins["m"], ins["n"])[:, :real]
    pairs = np.zeros(ins["m"], PAIR)
    pairs["id"], pairs["value"] = np.argmax(x, axis=1) + ins["base"], x.max(axis=1)
    return pairs.view(np.uint8)


def _pick(ins, a, b, f):
    """The best of every shard's pair per row; equal values go to the lower id."""
    pairs = _fit(as_bytes(a, ins["act"]), ins["m"] * ins["n"] * PAIR.itemsize).view(PAIR).reshape(ins["n"], ins["m"])
    order = np.lexsort((pairs["id"], -pairs["value"]), axis=0)[0]
    return pairs["id"][order, np.arange(ins["m"])].astype(np.int32)


def _routing(ins, a, b, f):
    """The router (the topk op): weights (TOPK) or expert ids (ARGTOPK) of each row's k best."""
    logits = _operand_a(ins, a).reshape(ins["m"], ins["n"])
    extra = [as_values(b, ins["act"])[: ins["n"]]] if b is not None else []
    weights, ids = EVAL[Opcode.TOPK](SimpleNamespace(attr=f), [logits, *extra])
    return (weights.astype(np.float32) if Fn(ins["fn"]) is Fn.TOPK else ids.astype(np.int32)).reshape(-1)


def _route(ins, a, b, f):
    """An expert pass's rows [m, n] times each row's weight for the expert the pass ran: the
    row's `slot`-th routed expert if this chip holds it (ids in [base, base + local)), or local
    expert `expert` (id base + expert), summed over the row's routing slots."""
    weights, ids = as_values(b[0], ins["act"]), as_ids(b[1])
    rows, cols = ins["m"], ins["n"]
    weights, ids = weights.reshape(rows, -1), ids.reshape(rows, -1)
    if "slot" in f:
        mine = (ids[:, f["slot"]] >= ins["base"]) & (ids[:, f["slot"]] < ins["base"] + f["local"])
        w = np.where(mine, weights[:, f["slot"]], 0)
    else:
        w = np.where(ids == ins["base"] + f["expert"], weights, 0).sum(axis=1)
    return (_operand_a(ins, a).reshape(rows, cols) * w[:, None]).reshape(-1).astype(np.float32)


def _group(ins, a, b, f):
    """The routed prefill's table (ir/program.py): the (row, expert) pairs routed to this chip's experts
    [base, base + local), sorted by expert then row, in the first of m slots; the rest empty."""
    rows, k, slots = f["rows"], f["k"], ins["m"]
    ids = as_ids(a)[: rows * k].reshape(rows, k) - ins["base"]
    weights = as_values(b, ins["act"])[: rows * k].reshape(rows, k)
    mine = (ids >= 0) & (ids < f["local"])
    row, slot = np.nonzero(mine)
    order = np.lexsort((row, ids[row, slot]))
    if len(order) > slots:
        raise FunctionalError(f"vop.group: {len(order)} routed pairs do not fit {slots} slots")
    table = np.full((3, slots), -1, np.int32)
    table[2] = 0
    table[0, : len(order)] = row[order]
    table[1, : len(order)] = ids[row, slot][order]
    table[2, : len(order)] = weights[row, slot][order].astype(np.float32).view(np.int32)
    return table.reshape(-1)


def _ungroup(ins, a, b, f):
    """Slots [m, n] back to their rows [rows, n]: each row's weighted slots in slot order, rounded to the
    activation type after every add (the reference sums experts in id order alike)."""
    slots, n, act = ins["m"], ins["n"], ins["act"]
    table = as_ids(b)[: 3 * slots].reshape(3, slots)
    y = _operand_a(ins, a).reshape(slots, n)
    out = np.zeros((f["rows"], n), np.float32)
    weight = table[2].view(np.float32)
    for s in np.flatnonzero(table[0] >= 0).tolist():
        r = table[0, s]
        out[r] = decode(encode(out[r] + y[s] * weight[s], act), act)
    return out.reshape(-1)


def _join(ins, a, b, f):
    """Every input's values, whole, one after another (b is (b, c) with a third input)."""
    parts = (a, *b) if isinstance(b, tuple) else (a, b)
    return np.concatenate([as_values(x, ins["act"]) for x in parts if x is not None])


def _conv1d(ins, a, b, f):
    """Mamba's conv without its bias: rows a [rows, C] after each sequence's state b [B, C, K-1],
    taps c [C, K]."""
    (state, taps), (rows, ch, k) = b, (f["rows"], f["channels"], f["taps"])
    act = ins["act"]
    held = as_values(state, act)[: f["batch"] * ch * (k - 1)].reshape(f["batch"], ch, k - 1)
    x = as_values(a, act)[: rows * ch].reshape(rows, ch)
    return causal_conv(x, as_values(taps, act)[: ch * k].reshape(ch, k), held).reshape(-1)


def _conv_state(ins, a, b, f):
    """The conv state b after the rows a: each sequence's last K-1 inputs, [B, C, K-1]."""
    rows, ch, k = f["rows"], f["channels"], f["taps"]
    held = as_values(b, ins["act"])[: f["batch"] * ch * (k - 1)].reshape(f["batch"], ch, k - 1)
    causal_conv(as_values(a, ins["act"])[: rows * ch].reshape(rows, ch), np.zeros((ch, k), np.float32), held)
    return held.reshape(-1)


def _scan(ins, a, b, f):
    """Mamba's selective scan: the f32 state's bytes (a), [A_log | D] and [x | dt | B | C] (b, c)
    -> the new state's f32 bytes, then y's 16-bit ones."""
    batch, ch, n, rows = f["batch"], f["channels"], f["state"], f["rows"]
    raw = _fit(as_bytes(a, ins["act"]), batch * ch * n * 4)
    state = np.frombuffer(raw.tobytes(), np.float32).reshape(batch, ch, n).copy()
    params, per_row = (as_values(v, ins["act"]) for v in b)
    cuts = np.cumsum([rows * ch, rows * ch, rows * n, rows * n])
    x, dt, b_in, c_in = (p.reshape(rows, -1) for p in np.split(per_row[: cuts[-1]], cuts[:-1]))
    y = selective_scan(x, dt, params[: ch * n].reshape(ch, n), b_in, c_in, params[ch * n: ch * (n + 1)], state)
    return np.concatenate([state.view(np.uint8).reshape(-1), encode(y, ins["act"])])


def _scale(ins, a, b, f):
    """Per-channel (or, by args, per-row) scales; in attention, an 8-bit cache's scales per token
    and kv head multiply the block's scores (the chain's last `block` columns) or the block's
    probabilities (columns [from, from + block))."""
    if f.get("axis") == "expert":  # a grouped matmul's slots, each by its own expert's scales (the table, s_c)
        return _expert_scale(ins, a, *b, f)
    if f.get("axis") == "tensor":  # NVFP4's f32 tensor scale, read raw
        x = _operand_a(ins, a)
        return x * (decode(b, DType.F32) if b.dtype == np.uint8 else b.reshape(-1))[0]
    if f.get("axis") == "block":  # gathered rows [m, n] times their block scales [m, n / block]
        x = _operand_a(ins, a).reshape(ins["m"], ins["n"])
        size = f["block"]
        s = as_values(b, ins["act"])[: ins["m"] * -(-ins["n"] // size)].reshape(ins["m"], -1)
        return (x * np.repeat(s, size, axis=1)[:, : ins["n"]]).reshape(-1)
    if f.get("on") not in ("scores", "probabilities"):
        return _binary(np.multiply)(ins, a, b, f)
    rows, heads, groups, block = f["rows"], f["heads"], f["kv_heads"], f["block"]
    per_head = as_values(b, ins["act"])[: block * groups].reshape(block, groups)
    scale = np.repeat(per_head, heads // groups, axis=1).T  # [h, t]
    x = as_values(a, ins["act"]).reshape(rows, heads, -1)
    if f["on"] == "scores":
        x = x.copy()
        x[:, :, -block:] *= scale
        return x.reshape(-1)
    return (x[:, :, f["from"]: f["from"] + block] * scale).reshape(-1)


def _expert_scale(ins, a, scales, table, f):
    """Slots [m, n] times their local expert's scales: every expert's n 16-bit channel scales (or one raw
    f32 tensor scale, format f32) one after another, picked by the table's expert column."""
    rows, cols = ins["m"], ins["n"]
    x = _operand_a(ins, a).reshape(rows, cols)
    if f["format"] == "f32":
        per = (decode(scales, DType.F32) if scales.dtype == np.uint8 else scales.reshape(-1))[:, None]
    else:
        per = as_values(scales, ins["act"]).reshape(-1, cols)
    expert = as_ids(table)[rows: 2 * rows]
    if expert.max(initial=-1) >= len(per):
        raise FunctionalError(f"vop.scale: expert {expert.max()} has no scales among {len(per)}")
    return np.where((expert >= 0)[:, None], x * per[np.maximum(expert, 0)], 0).reshape(-1).astype(np.float32)


def _quantize(ins, a, b, f):
    """Rows [m, n] to 8-bit codes with a 16-bit scale per row and kv head, or to NVFP4 codes with
    an e4m3 scale per 16 values (ir.numerics, as the reference stores a cache row): the codes'
    bytes, then the scales'."""
    dtype = DType(f["format"])
    if dtype.block is not None:
        blocked = quantize_blocks(_operand_a(ins, a).reshape(ins["m"], ins["n"]), dtype, axis=1, tensor_scale=False)
        return np.concatenate([encode(blocked.codes, dtype), encode(blocked.scales, dtype.block.scale)])
    rows = _operand_a(ins, a).reshape(ins["m"], f["kv_heads"], -1)
    codes, scales = quantize(rows, dtype, axis=2, scale_dtype=ins["act"])
    return np.concatenate([encode(codes, dtype), encode(scales, ins["act"])])


VECTOR: dict[Fn, Callable] = {
    Fn.ADD: _binary(np.add),
    Fn.MUL: _binary(np.multiply),
    Fn.SUM: _binary(np.add),
    Fn.SCALE: _scale,
    Fn.QUANTIZE: _quantize,
    Fn.COPY: _unary(lambda x: x),
    Fn.SILU: _unary(ACTIVATIONS["silu"]),
    Fn.GELU: _unary(ACTIVATIONS["gelu"]),
    Fn.RMSNORM: _rmsnorm,
    Fn.ROPE: _rope,
    Fn.SOFTMAX: _softmax,
    Fn.ARGMAX: _argmax,
    Fn.ARGBEST: _argbest,
    Fn.PICK: _pick,
    Fn.TOPK: _routing,
    Fn.ARGTOPK: _routing,
    Fn.ROUTE: _route,
    Fn.JOIN: _join,
    Fn.CONV1D: _conv1d,
    Fn.CONVSTATE: _conv_state,
    Fn.SCAN: _scan,
    Fn.ACCEPT: _accept,
    Fn.GROUP: _group,
    Fn.COMBINE: _combine,
    Fn.UNGROUP: _ungroup,
}
_TAKES_ARGS = {Fn.RMSNORM, Fn.ROPE, Fn.SOFTMAX, Fn.SCALE, Fn.ADD, Fn.MUL, Fn.TOPK, Fn.ARGTOPK, Fn.ROUTE,
               Fn.QUANTIZE, Fn.COMBINE, Fn.GROUP, Fn.UNGROUP, Fn.ARGBEST,
               Fn.CONV1D, Fn.CONVSTATE, Fn.SCAN}


# ---- C2C ------------------------------------------------------------------------------------

def _send(ins: dict, m: Machine, streams: dict, args: list) -> None:
    data = as_bytes(streams[ins["chip"], ins["s_a"]], ins["act"])[ins["offset"]:]
    queue = m.mailbox.setdefault((ins["chip"], ins["peer"], ins["tag"]), deque())
    queue.append((_fit(data, ins["src_bytes"]), ins["row"]))


def _recv(ins: dict, m: Machine, streams: dict, args: list) -> None:
    """The oldest message of the link's queue for this tag, taken once."""
    queue = m.mailbox.get((ins["peer"], ins["chip"], ins["tag"]))
    if not queue:
        raise FunctionalError(f"receive from chip {ins['peer']} tag {ins['tag']} finds no message")
    data, _ = queue.popleft()
    if len(data) != ins["dst_bytes"]:
        raise FunctionalError(f"receives {ins['dst_bytes']} bytes, the message from chip {ins['peer']} carries "
                              f"{len(data)}")
    streams[ins["chip"], ins["s_out"]] = data


def _nothing(ins: dict, m: Machine, streams: dict, args: list) -> None:
    return None


def _unsupported(ins: dict, m: Machine, streams: dict, args: list) -> None:
    raise FunctionalError(f"functional mode does not model {Op(ins['op']).name.lower()}")


_EXEC: dict[Op, Callable[[dict, Machine, dict, list], None]] = {
    Op.READ: _read, Op.WRITE: _write, Op.GATHER: _gather, Op.MXM: _mxm, Op.VOP: _vop, Op.FETCH: _fetch,
    Op.STORE: _store,
    Op.SEND: _send, Op.RECV: _recv, Op.SYNC: _nothing,
    Op.SHIFT: _unsupported, Op.TRANSPOSE: _unsupported, Op.PERMUTE: _unsupported,
}
