"""The ISA contract as data: which columns each opcode uses in each dialect, what each means, and the
arguments each vector function takes. `verify_program` holds a Program to it.

A Program declares its dialect. "queues" (the LPU): one in-order queue per functional unit of every
chip, activations through SRAM, weights streamed onto the MXM by READs. "roles" (a wafer): each
"chip" is a role stream that every core of one position class of a region runs (meta["replicas"]
counts them); an MXM reads its weight block straight from the core's SRAM; a SEND names the route
its message takes, never its distance (the interpreter derives the hops from the region geometry).
Every instruction uses chip, kind, unit, op, issue and cycles; any other column an opcode does not
use must hold its default (ir/program.py's DEFAULTS), so no field means something by accident.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import numpy as np

from ir.isa import Fn, Op
from ir.program import DEFAULTS, NAMES

DIALECTS = ("queues", "roles")
ALWAYS = ("chip", "kind", "unit", "op", "issue", "cycles")


class Route(enum.IntEnum):
    """How a roles-dialect message crosses the wafer (the `route` column of a SEND)."""

    NONE = 0
    FEED = 1  # from the region's first row to every core: rows + cols - 2 hops
    ROWS = 2  # one level (`imm`) of the 2-way tree down the region's rows
    COLS = 3  # one level (`imm`) of the 2-way tree along the first row's columns
    NEXT_REGION = 4  # to the next stage's region on the same wafer: the regions' gap in hops
    NEXT_WAFER = 5  # to the next wafer: both meshes' half-perimeters, then the wafer link
    HOST = 6  # (a RECV's peer HOST) rows the host sends: half a mesh perimeter, then the wafer link


class Prov(enum.IntEnum):
    """Where the value an SRAM read expects was written (the `prov` column; ir/program.py)."""

    NONE = 0
    MINE = 1  # by this instance of the block (a local value, a unit's own output)
    EARLIER = 2  # by an earlier instance on the chip (a unit's input port)
    RESIDENT = 3  # before the phase (weights, caches, host inputs), updated only by writes of the same value
    TAIL = 4  # as EARLIER, and it may read past the last byte its value's writes cover (a hand-off's last
    #           lane: slices round up, so the last one overhangs the value into padding its receiver drops,
    #           whatever last wrote those bytes)


# A local value's `val`: this plus its index among its block's local values (addresses lie far below).
LOCAL_VALUES = 1 << 40
_READ_PROV = {"val": "the value it expects (provenance)", "prov": "where that value was written (Prov)"}
_WRITE_PROV = {"val": "the value it writes (provenance)"}

_INDIRECT_READ = {"s_b": "INDIRECT: the i32 stream of ids", "imm": "INDIRECT: the element of s_b that is the id",
                  "k": "INDIRECT: bytes the address moves an id; else bytes between tiles",
                  "base": "INDIRECT: the first id the chip holds",
                  "n": "INDIRECT: how many ids the chip holds (clamped); else tiles read (0: one)"}

QUEUES: dict[Op, dict[str, str]] = {
    Op.READ: {"src": "SRAM address", "src_bytes": "bytes read", "s_out": "stream written",
              "m": "rows of a 2-D read (0: one block)", "stride": "bytes between rows", "flags": "INDIRECT",
              **_INDIRECT_READ, **_READ_PROV},
    Op.WRITE: {"dst": "SRAM address", "dst_bytes": "bytes written", "s_a": "stream read",
               "offset": "byte of s_a the data starts at", "m": "rows of a 2-D write", "stride": "bytes between rows",
               "flags": "INDIRECT (a cache append), WINDOW", "s_b": "INDIRECT: the i32 positions",
               "k": "INDIRECT: rows a sequence", "imm": "INDIRECT: cache rows a sequence",
               "base": "WINDOW: the position of the buffer's first row (rows outside the window are dropped)",
               "n": "WINDOW: a ring of n rows, position p in row p mod n, rows in order (0: no ring)",
               **_WRITE_PROV},
    Op.GATHER: {"src": "the table's SRAM address", "src_bytes": "bytes gathered", "s_b": "the i32 ids",
                "s_out": "stream written", "m": "rows", "n": "elements a row", "k": "table rows the chip holds",
                "base": "the first id the chip holds", "dtype": "the table's format (ir.isa.Fmt)",
                "flags": "INDIRECT", **_READ_PROV},
    Op.MXM: {"s_a": "weight tile (or cached keys or values)", "s_b": "activations", "s_c": "partial sums in",
             "s_d": "block scales", "s_out": "results", "m": "rows", "k": "contraction", "n": "columns",
             "dtype": "the tile's format (ir.isa.Fmt)", "flags": "ACCUMULATE, LAST, TRANSPOSE, KEYS, VALUES, HEADS",
             "offset": "first column of s_b", "imm": "meta fn_args entry (KEYS, VALUES, HEADS); with s_e, the tiles",
             "s_e": "a grouped MXM's table (vop.group): s_a holds imm tiles, slot i of s_b takes its expert's"},
    Op.VOP: {"fn": "the vector function (ir.isa.Fn)", "s_a": "first operand", "s_b": "second operand",
             "s_c": "third operand", "s_d": "fourth operand", "s_out": "result", "m": "rows", "n": "elements a row",
             "src_bytes": "bytes in", "offset": "byte of s_a the function starts at",
             "imm": "meta fn_args entry", "flags": "ROUND",
             "base": "ARGBEST's first id, ROUTE's and GROUP's first expert, SOFTMAX's first cache position, "
                     "COMBINE's first feature"},
    Op.SEND: {"s_a": "stream sent", "src_bytes": "bytes sent", "offset": "byte of s_a the message starts at",
              "peer": "receiving chip", "tag": "message tag"},
    Op.RECV: {"dst_bytes": "bytes received", "s_out": "stream written", "peer": "sending chip", "tag": "message tag"},
    Op.SYNC: {},
    # The host link (unit = the tier, ir.isa.TIER_UNITS): cache blocks between SRAM and a tier below it.
    Op.FETCH: {"src": "tier address", "src_bytes": "bytes fetched", "dst": "SRAM address",
               "dst_bytes": "bytes written (src_bytes)", **_WRITE_PROV},
    Op.STORE: {"dst": "tier address of the buffer", "dst_bytes": "bytes stored", "s_a": "rows stream",
               "offset": "byte of s_a the rows start at (a quantized cache's scales follow its codes)",
               "s_b": "the i32 positions", "m": "rows", "k": "rows a sequence", "stride": "bytes a row",
               "flags": "INDIRECT, WINDOW", "imm": "WINDOW: rows a sequence's buffer holds",
               "base": "WINDOW: the position of its first row"},
}
ROLES: dict[Op, dict[str, str]] = {
    Op.READ: {"src": "SRAM address", "src_bytes": "bytes", "s_out": "stream written", "m": "rows", "n": "columns"},
    Op.GATHER: {"src": "SRAM address", "src_bytes": "bytes", "s_out": "stream written", "m": "rows",
                "n": "elements a row"},
    Op.MXM: {"src": "the core's weight block in SRAM", "src_bytes": "its bytes", "s_b": "activations",
             "s_out": "results", "m": "rows", "k": "contraction", "n": "columns", "dtype": "the block's format",
             "flags": "LAST, KEYS, VALUES"},
    Op.VOP: {"fn": "the vector function", "s_a": "operand", "s_out": "result", "m": "rows", "n": "elements a row",
             "src_bytes": "bytes in"},
    Op.SEND: {"s_a": "stream sent", "src_bytes": "bytes", "peer": "the receiving stream named first", "tag": "tag",
              "route": "how it crosses the wafer (Route)", "imm": "ROWS, COLS: the tree level"},
    Op.RECV: {"dst_bytes": "bytes", "s_out": "stream written", "peer": "the sending stream (or HOST)", "tag": "tag",
              "flags": "ACCUMULATE", "s_c": "ACCUMULATE: the partial sum added"},
}
CONTRACT: dict[str, dict[Op, dict[str, str]]] = {"queues": QUEUES, "roles": ROLES}

# Every vector function's arguments (meta fn_args entries a VOP's imm names), and an MXM's.
FN_ARGS: dict[Fn | str, dict[str, type]] = {
    Fn.RMSNORM: {"eps": float},
    Fn.ROPE: {"head_dim": int, "heads": int, "theta": float, "interleave": bool, "scaling": str, "factor": float,
              "low_freq_factor": float, "high_freq_factor": float, "original_max_position": int,
              "beta_fast": float, "beta_slow": float, "mscale": float, "mscale_all_dim": float},  # YaRN
    # cold, ring: a cache split over tiers; each sequence's columns: its cold tier positions, a ring (ir.ops._tiered);
    # lse: the row's log-sum-exp instead of its probabilities (a sequence shard's partial, combined by COMBINE)
    Fn.SOFTMAX: {"batch": int, "head_dim": int, "heads": int, "rows": int, "tokens": int, "scale": float,
                 "cold": int, "ring": int, "lse": bool},
    Fn.COMBINE: {"shards": int, "rows": int, "heads": int, "head_dim": int, "keep": int},
    Fn.ARGBEST: {"limit": int},  # the vocabulary: a shard's ids from it on are padding, never the best
    Fn.TOPK: {"k": int, "normalize": bool, "scoring": str, "groups": int, "scale": float, "topk_groups": int},
    Fn.ARGTOPK: {"k": int, "normalize": bool, "scoring": str, "groups": int, "scale": float, "topk_groups": int},
    Fn.QUANTIZE: {"format": str, "kv_heads": int},
    Fn.SCALE: {"axis": str, "block": int, "heads": int, "kv_heads": int, "on": str, "rows": int, "from": int,
               "format": str},
    Fn.ROUTE: {"expert": int, "local": int, "slot": int},
    Fn.GROUP: {"local": int, "rows": int, "k": int},
    Fn.UNGROUP: {"rows": int},
    Fn.CONV1D: {"batch": int, "channels": int, "rows": int, "taps": int},
    Fn.CONVSTATE: {"batch": int, "channels": int, "rows": int, "taps": int},
    Fn.SCAN: {"batch": int, "channels": int, "rows": int, "state": int},
    "mxm": {"heads": int, "kv_heads": int, "rows": int},
}

# Arguments a function cannot go without (a VOP of it must name a fn_args entry that gives them).
REQUIRED_ARGS: dict[Fn, tuple[str, ...]] = {Fn.ARGBEST: ("limit",)}

# What each instruction set's Programs are written in.
DIALECT_OF_ISA = {"tsp": "queues", "wse": "roles"}

# How a dialect's messages pair (targets/messages.py). A chip link carries each SEND to the one chip it
# names, in order; a wafer's routers multicast a colour: one SEND feeds every RECV naming (its stream,
# its tag), and a colour carries one message a phase.
MULTICAST = {"queues": False, "roles": True}


def violations(program) -> Iterator[tuple[int, str]]:
    """(row, why) for the first instruction that breaks the contract in each way: an opcode its dialect
    lacks, a column an opcode does not use holding a value, or a function's arguments off its schema.
    One pass per column: a table of the opcodes that use it, looked up by every row's opcode."""
    table = CONTRACT.get(program.dialect)
    if table is None:
        yield -1, f"unknown dialect {program.dialect!r} (one of {', '.join(DIALECTS)})"
        return
    c = program.cols
    op = c["op"]
    known = np.zeros(256, bool)
    known[[int(o) for o in table]] = True
    stray = np.flatnonzero(~known[op])
    for value in np.unique(op[stray]).tolist():
        row = int(stray[op[stray] == value][0])
        yield row, f"{_opname(value)} is not an instruction of the {program.dialect} dialect"
    for name in NAMES:
        if name in ALWAYS:
            continue
        uses = np.zeros(256, bool)
        uses[[int(o) for o, used in table.items() if name in used]] = True
        bad = np.flatnonzero((c[name] != DEFAULTS[name]) & known[op] & ~uses[op])
        for value in np.unique(op[bad]).tolist():
            row = int(bad[op[bad] == value][0])
            yield row, (f"{_opname(value)} sets {name}={int(c[name][row])}, a column a {_opname(value)} of the "
                        f"{program.dialect} dialect does not use")
    yield from _arg_violations(program)
    yield from _missing_args(program)
    yield from _limit_violations(program)


def _arg_violations(program) -> Iterator[tuple[int, str]]:
    c, entries = program.cols, program.meta.get("fn_args", [])
    grouped = (c["op"] == Op.MXM) & (c["s_e"] >= 0)  # a grouped MXM's imm counts its tiles
    named = np.flatnonzero(np.isin(c["op"], (Op.VOP, Op.MXM)) & (c["imm"] >= 0) & ~grouped)
    seen: set[tuple[int, int]] = set()
    for row in named.tolist():
        fn = Fn(c["fn"][row]) if c["op"][row] == Op.VOP else "mxm"
        key = (int(c["imm"][row]), fn if fn == "mxm" else int(fn))
        if key in seen:
            continue
        seen.add(key)
        if key[0] >= len(entries):
            yield row, f"imm={key[0]} names no meta fn_args entry ({len(entries)} of them)"
            continue
        schema = FN_ARGS.get(fn)
        for name, value in entries[key[0]].items():
            if schema is None or name not in schema or not _fits(value, schema[name]):
                what = fn if fn == "mxm" else fn.name.lower()
                yield row, f"fn_args entry {key[0]} gives {what} an argument {name}={value!r} it does not take"
                break


def _missing_args(program) -> Iterator[tuple[int, str]]:
    """The first VOP of each function in REQUIRED_ARGS that names no entry, or one without them."""
    c, entries = program.cols, program.meta.get("fn_args", [])
    for fn, names in REQUIRED_ARGS.items():
        rows = np.flatnonzero((c["op"] == Op.VOP) & (c["fn"] == fn))
        for row in rows.tolist():
            imm = int(c["imm"][row])
            given = entries[imm] if 0 <= imm < len(entries) else {}
            missing = [n for n in names if n not in given]
            if missing:
                yield row, f"{fn.name.lower()} needs the argument {missing[0]} (imm={imm} gives none)"
                break


def _limit_violations(program) -> Iterator[tuple[int, str]]:
    """ARGBEST's limit (ids from it on are padding) must leave each shard a real id (base < limit) and
    fall within the shards that name it (limit <= the largest base + n): else it names no real boundary."""
    c, entries = program.cols, program.meta.get("fn_args", [])
    rows = np.flatnonzero((c["op"] == Op.VOP) & (c["fn"] == Fn.ARGBEST) & (c["imm"] >= 0) & (c["imm"] < len(entries)))
    for imm in np.unique(c["imm"][rows]).tolist():
        limit = entries[imm].get("limit")
        if not _fits(limit, int):
            continue  # _arg_violations or _missing_args says why
        named = rows[c["imm"][rows] == imm]
        empty = named[c["base"][named] >= limit]
        if len(empty):
            row = int(empty[0])
            yield row, f"argbest's shard from id {int(c['base'][row])} holds no id below its limit {limit}"
        top = int((c["base"][named] + c["n"][named]).max())
        if limit > top:
            yield int(named[0]), f"argbest's limit {limit} lies past every shard naming it (their ids end at {top})"


def _fits(value, kind: type) -> bool:
    """A value of an argument's type (an integer stands for a float, as in JSON; a bool is no number)."""
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


def _op(value: int) -> Op | None:
    try:
        return Op(value)
    except ValueError:
        return None


def _opname(value: int) -> str:
    op = _op(value)
    return op.name.lower() if op is not None else f"opcode {value}"
