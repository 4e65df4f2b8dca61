"""A Program as a compact binary file.

Layout: the magic b"SRAMPRG1", a little-endian u32 header length, the header
(JSON, sorted keys: phase, target, chips, clock_hz, meta, rows, columns), then
one zlib stream of every column's little-endian bytes in COLUMNS order. The
compression level is fixed and JSON keys are sorted, so equal Programs give
byte-identical files. Files are written beside their destination and renamed.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

from ir.errors import ParseError
from ir.files import atomic_write
from ir.program import DTYPES, NAMES, Program

MAGIC = b"SRAMPRG1"
LEVEL = 6
_LEN = struct.Struct("<I")


def dumps(program: Program) -> bytes:
    header = {
        "phase": program.phase, "target": program.target, "chips": program.chips,
        "clock_hz": program.clock_hz, "meta": program.meta, "rows": len(program),
        "columns": [[n, DTYPES[n].str] for n in NAMES],
    }
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = b"".join(program.cols[n].astype(DTYPES[n].newbyteorder("<"), copy=False).tobytes() for n in NAMES)
    return MAGIC + _LEN.pack(len(head)) + head + zlib.compress(body, LEVEL)


def loads(data: bytes, filename: str = "<bytes>") -> Program:
    def bad(why: str) -> ParseError:
        return ParseError(f"{filename}: not a readable sramflow program ({why})")

    if not data.startswith(MAGIC):
        raise bad("wrong magic bytes")
    at = len(MAGIC) + _LEN.size
    if len(data) < at:
        raise bad("truncated header")
    (size,) = _LEN.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(data[at:at + size])
        body = zlib.decompress(data[at + size:])
        rows, columns = int(header["rows"]), header["columns"]
    except (ValueError, KeyError, TypeError, zlib.error) as e:
        raise bad(f"corrupt header or body: {e}") from None
    if [c[0] for c in columns] != list(NAMES):
        raise bad("its columns differ from this version's; recompile it")
    cols, offset = {}, 0
    for name in NAMES:
        dt = DTYPES[name].newbyteorder("<")
        nbytes = rows * dt.itemsize
        if offset + nbytes > len(body):
            raise bad(f"column {name} is truncated")
        cols[name] = np.frombuffer(body, dt, rows, offset).astype(DTYPES[name])
        offset += nbytes
    if offset != len(body):
        raise bad("trailing bytes after the last column")
    try:
        return Program.build(header["phase"], header["target"], int(header["chips"]), float(header["clock_hz"]),
                             cols, header["meta"])
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"bad header field: {e}") from None


def save_program(program: Program, path: Path | str) -> None:
    data = dumps(program)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def load_program(path: Path | str) -> Program:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ParseError(f"{path}: cannot read program: {e.strerror}") from None
    return loads(data, str(path))
