"""A Program as a compact binary file.

Layout: the magic b"SRAMPRG1", a little-endian u32 header length, the header
(JSON, sorted keys: phase, target, chips, clock_hz, dialect, meta, rows, columns), then
one zstandard frame of every column's little-endian bytes in COLUMNS order
(zstd, not zlib: a 17M-instruction prefill program decompresses in under a second
rather than eight). The compression level is fixed, single-threaded, and JSON keys
are sorted, so equal Programs give byte-identical files. Files are written beside
their destination and renamed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import zstandard

from ir.errors import ParseError
from ir.files import atomic_write
from ir.program import DTYPES, NAMES, Program

MAGIC = b"SRAMPRG3"
LEVEL = 1  # fastest; programs still shrink ~40x (their columns are mostly repeats)
_LEN = struct.Struct("<I")


def dumps(program: Program) -> bytes:
    header = {
        "phase": program.phase, "target": program.target, "chips": program.chips,
        "clock_hz": program.clock_hz, "meta": program.meta, "rows": len(program), "dialect": program.dialect,
        "columns": [[n, DTYPES[n].str] for n in NAMES],
    }
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw = b"".join(np.ascontiguousarray(program.cols[n], DTYPES[n].newbyteorder("<")).data for n in NAMES)
    body = zstandard.ZstdCompressor(level=LEVEL, threads=0).compress(raw)
    return b"".join([MAGIC, _LEN.pack(len(head)), head, body])


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
        rows, columns = int(header["rows"]), header["columns"]
        row_bytes = sum(DTYPES[n].itemsize for n in NAMES)
        body = zstandard.ZstdDecompressor().decompress(data[at + size:], max_output_size=rows * row_bytes)
    except (ValueError, KeyError, TypeError, zstandard.ZstdError) as e:
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
                             cols, header["meta"], str(header["dialect"]))
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
