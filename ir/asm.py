"""A Program as assembly text, and back (grammar: ir/asm.lark).

    program decode target "lpu" chips 42 clock_hz 900000000.0
    meta {"chunks": 1, ...}
    chip 0 {
      mem.0 {
        @0 +12 read src=0x2000/6400 out=3
      }
      mxm.1 {
        @40 +320 mxm fmt=i8 a=3 b=4 m=1 k=320 n=320 flags=accumulate|last
      }
    }

A field at its default (ir.program.DEFAULTS) is left out, so lines stay short;
every other column is spelled, so text and binary round-trip exactly. Printing
a window (`chips`, `cycles`) gives a fragment that still parses, as a Program
with just those instructions.
"""

from __future__ import annotations

import enum
import json
from functools import cache
from pathlib import Path

import numpy as np
from lark import Lark, Token, Tree, UnexpectedInput

from ir.contract import Prov, Route
from ir.errors import ParseError
from ir.isa import Fmt, Fn, Op, UnitKind
from ir.program import DEFAULTS, DTYPES, NAMES, Flag, Program, empty_columns

# Field key in text -> column. Addresses carry their byte count: src=ADDR/BYTES.
_SCALAR = {"a": "s_a", "b": "s_b", "c": "s_c", "d": "s_d", "e": "s_e", "out": "s_out", "peer": "peer", "tag": "tag",
           "m": "m", "k": "k", "n": "n", "offset": "offset", "stride": "stride", "imm": "imm", "base": "base"}
_RANGES = {"src": ("src", "src_bytes"), "dst": ("dst", "dst_bytes")}


def print_asm(program: Program, chips: list[int] | None = None, cycles: tuple[int, int] | None = None) -> str:
    """The whole program, or the instructions of `chips` overlapping the window [lo, hi)."""
    part = program.window(chips, cycles)
    lines = [f"; sramflow assembly: {len(part)} instructions",
             f"program {program.phase} target {json.dumps(program.target)} chips {program.chips} "
             f"clock_hz {program.clock_hz!r} dialect {program.dialect}",
             f"meta {json.dumps(program.meta, sort_keys=True)}"]
    cols = {n: part.cols[n].tolist() for n in NAMES}
    chip = None
    for c_id, kind, unit, rows in part.queues():
        if c_id != chip:
            if chip is not None:
                lines.append("}")
            lines.append(f"chip {c_id} {{")
            chip = c_id
        lines.append(f"  {_name(UnitKind, kind)}.{unit} {{")
        lines.extend(_line(cols, i) for i in range(rows.start, rows.stop))
        lines.append("  }")
    if chip is not None:
        lines.append("}")
    return "\n".join(lines) + "\n"


def _line(cols: dict[str, list[int]], i: int) -> str:
    op = _name(Op, cols["op"][i])
    if cols["fn"][i] != DEFAULTS["fn"]:
        op += "." + _name(Fn, cols["fn"][i])
    parts = [f"    @{cols['issue'][i]} {cols['cycles'][i]:+d} {op}"]
    if cols["dtype"][i] != DEFAULTS["dtype"]:
        parts.append(f"fmt={_name(Fmt, cols['dtype'][i])}")
    for key, (addr, size) in _RANGES.items():
        a, b = cols[addr][i], cols[size][i]
        if (a, b) != (DEFAULTS[addr], DEFAULTS[size]):
            parts.append(f"{key}={hex(a) if a >= 0 else a}/{b}")
    for key, col in _SCALAR.items():
        if cols[col][i] != DEFAULTS[col]:
            parts.append(f"{key}={cols[col][i]}")
    if cols["flags"][i]:
        parts.append(f"flags={_flags(cols['flags'][i])}")
    if cols["route"][i]:
        parts.append(f"route={_name(Route, cols['route'][i])}")
    if cols["val"][i] != DEFAULTS["val"]:
        parts.append(f"val={hex(cols['val'][i]) if cols['val'][i] >= 0 else cols['val'][i]}")
    if cols["prov"][i]:
        parts.append(f"prov={_name(Prov, cols['prov'][i])}")
    return " ".join(parts)


def _name(kind: type[enum.IntEnum], value: int) -> str:
    """An enum member's lower-case name; a value outside the enum prints as its number."""
    try:
        return kind(value).name.lower()
    except ValueError:
        return str(value)


def _flags(value: int) -> str:
    known = sum(f.value for f in Flag)
    if value & ~known:
        return str(value)
    return "|".join(f.name.lower() for f in Flag if value & f)


@cache
def _parser() -> Lark:
    return Lark((Path(__file__).parent / "asm.lark").read_text(), parser="lalr")


def parse_asm(text: str, filename: str = "<asm>") -> Program:
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise ParseError(f"{filename}:{e.line}:{e.column}: {_expected(e)}") from None
    header, meta, *chips = tree.children
    phase, target, n_chips, clock, dialect = header.children
    rows: list[list[int]] = []
    for chip in chips:
        for queue in chip.children[1:]:
            kind_name, _, unit = str(queue.children[0]).partition(".")
            kind = _value(UnitKind, kind_name, queue.children[0], filename)
            for instr in queue.children[1:]:
                rows.append(_row(instr, int(chip.children[0]), kind, int(unit), filename))
    cols = empty_columns(len(rows))
    for j, name in enumerate(NAMES):
        if rows:
            cols[name] = np.array([r[j] for r in rows], dtype=np.int64)
    try:
        return Program.build(str(phase), json.loads(target), int(n_chips), float(clock), cols,
                             json.loads(str(meta.children[0])), str(dialect))
    except ValueError as e:
        raise ParseError(f"{filename}: {e}") from None


def _row(instr: Tree, chip: int, kind: int, unit: int, filename: str) -> list[int]:
    issue, cycles, opname, *fields = instr.children
    where = f"{filename}:{issue.line}"
    row = dict(DEFAULTS, chip=chip, kind=kind, unit=unit, issue=int(issue[1:]), cycles=int(cycles))
    op, _, fn = str(opname).partition(".")
    row["op"] = _value(Op, op, opname, filename)
    if fn:
        row["fn"] = _value(Fn, fn, opname, filename)
    for f in fields:
        key, _, text = str(f).partition("=")
        try:
            _field(row, key, text)
        except (ValueError, KeyError):
            raise ParseError(f"{where}:{f.column}: bad field {str(f)!r}") from None
    for name in NAMES:  # a value the binary column could not hold is an error, not a wrap-around
        info = np.iinfo(DTYPES[name])
        if not info.min <= row[name] <= info.max:
            raise ParseError(f"{where}: {name}={row[name]} does not fit {DTYPES[name]}")
    return [row[n] for n in NAMES]


def _field(row: dict[str, int], key: str, text: str) -> None:
    if key in _SCALAR:
        row[_SCALAR[key]] = int(text)
    elif key in _RANGES:
        addr, size = text.split("/")
        row[_RANGES[key][0]], row[_RANGES[key][1]] = int(addr, 0), int(size)
    elif key == "fmt":
        row["dtype"] = int(text) if text.isdigit() else Fmt[text.upper()]
    elif key == "flags":
        row["flags"] = int(text) if text.isdigit() else sum(Flag[f.upper()] for f in text.split("|"))
    elif key == "route":
        row["route"] = int(text) if text.isdigit() else Route[text.upper()]
    elif key == "val":
        row["val"] = int(text, 0)
    elif key == "prov":
        row["prov"] = int(text) if text.isdigit() else Prov[text.upper()]
    else:
        raise KeyError(key)


def _value(kind: type[enum.IntEnum], text: str, token: Token, filename: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return kind[text.upper()]
    except KeyError:
        choices = ", ".join(m.name.lower() for m in kind)
        raise ParseError(f"{filename}:{token.line}:{token.column}: unknown {kind.__name__} {text!r} "
                         f"(one of {choices})") from None


def _expected(e: UnexpectedInput) -> str:
    expected = sorted(getattr(e, "expected", None) or getattr(e, "allowed", None) or ())
    got = getattr(e, "token", None) or getattr(e, "char", "")
    return f"unexpected {str(got)!r}" + (f", expected one of {', '.join(expected)}" if expected else "")
