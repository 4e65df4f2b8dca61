"""A Program as a compact binary file.

Layout: the magic b"SRAMPRG6", a little-endian u32 header length, the header
(JSON, sorted keys: phase, target, chips, clock_hz, dialect, meta, rows, blocks, instances and
the column lists), then one zstandard frame holding the body's columns (every block's rows, in
COLUMNS order), the block bounds (i64) and the instance table's columns (INSTANCE_COLUMNS), all
little-endian. A Program is stored as it is held: blocks once, instances as offsets
(ir/program.py), so a 2,048-chip prefill is a file of megabytes, not gigabytes. The compression
level is fixed, single-threaded, and JSON keys are sorted, so equal Programs give byte-identical
files. Files are written beside their destination and renamed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import zstandard

from ir.errors import ParseError
from ir.files import atomic_write
from ir.program import DTYPES, INSTANCE_DTYPES, INSTANCE_NAMES, NAMES, Program

MAGIC = b"SRAMPRG7"  # 7: the flags column is 16 bits (Flag.ROUND)
LEVEL = 1  # fastest; programs still shrink many times (their columns are mostly repeats)
# A column's repeats lie a block's or a column's length apart, past level 1's default window for programs of
# many rows (llama-3.1-405b int8's prefill: 10.2 MB in that window, 0.4 MB with these): long-distance
# matching over a 128 MiB window, the largest every decoder accepts by default (zstd's 2^27 limit).
PARAMS = zstandard.ZstdCompressionParameters.from_level(LEVEL, enable_ldm=True, window_log=27, threads=0)
_LEN = struct.Struct("<I")
_BOUNDS = np.dtype("<i8")


def _parts(program: Program) -> list[tuple[np.ndarray, np.dtype]]:
    return ([(program.body[n], DTYPES[n]) for n in NAMES] + [(program.bounds, _BOUNDS)]
            + [(program.inst[n], INSTANCE_DTYPES[n]) for n in INSTANCE_NAMES])


def dumps(program: Program) -> bytes:
    header = {
        "phase": program.phase, "target": program.target, "chips": program.chips,
        "clock_hz": program.clock_hz, "meta": program.meta, "dialect": program.dialect,
        "rows": len(program.body["chip"]), "blocks": program.blocks, "instances": program.instances,
        "columns": [[n, DTYPES[n].str] for n in NAMES],
        "instance_columns": [[n, INSTANCE_DTYPES[n].str] for n in INSTANCE_NAMES],
    }
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw = b"".join(np.ascontiguousarray(a, dt.newbyteorder("<")).data for a, dt in _parts(program))
    body = zstandard.ZstdCompressor(compression_params=PARAMS).compress(raw)
    return b"".join([MAGIC, _LEN.pack(len(head)), head, body])


def loads(data: bytes, filename: str = "<bytes>") -> Program:
    def bad(why: str) -> ParseError:
        return ParseError(f"{filename}: not a readable sramflow program ({why})")

    if not data.startswith(MAGIC):
        raise bad("wrong magic bytes" + ("; it was written by an older sramflow, recompile it"
                                         if data.startswith(MAGIC[:-1]) else ""))
    at = len(MAGIC) + _LEN.size
    if len(data) < at:
        raise bad("truncated header")
    (size,) = _LEN.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(data[at:at + size])
        rows, blocks, instances = int(header["rows"]), int(header["blocks"]), int(header["instances"])
        columns, inst_columns = header["columns"], header["instance_columns"]
        total = (rows * sum(DTYPES[n].itemsize for n in NAMES) + (blocks + 1) * _BOUNDS.itemsize
                 + instances * sum(INSTANCE_DTYPES[n].itemsize for n in INSTANCE_NAMES))
        body = zstandard.ZstdDecompressor().decompress(data[at + size:], max_output_size=total)
    except (ValueError, KeyError, TypeError, zstandard.ZstdError) as e:
        raise bad(f"corrupt header or body: {e}") from None
    if (columns != [[n, DTYPES[n].str] for n in NAMES]
            or inst_columns != [[n, INSTANCE_DTYPES[n].str] for n in INSTANCE_NAMES]):
        raise bad("its columns differ from this version's; recompile it")
    offset = 0

    def take(count: int, dt: np.dtype, name: str) -> np.ndarray:
        nonlocal offset
        dt = np.dtype(dt).newbyteorder("<")
        nbytes = count * dt.itemsize
        if offset + nbytes > len(body):
            raise bad(f"column {name} is truncated")
        out = np.frombuffer(body, dt, count, offset).astype(dt.newbyteorder("="))
        offset += nbytes
        return out

    cols = {n: take(rows, DTYPES[n], n) for n in NAMES}
    bounds = take(blocks + 1, _BOUNDS, "bounds")
    inst = {n: take(instances, INSTANCE_DTYPES[n], n) for n in INSTANCE_NAMES}
    if offset != len(body):
        raise bad("trailing bytes after the last column")
    try:
        return Program.from_blocks(header["phase"], header["target"], int(header["chips"]),
                                   float(header["clock_hz"]), cols, bounds, inst, header["meta"],
                                   str(header["dialect"]))
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
