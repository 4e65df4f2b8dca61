"""SRAM images: every chip's resident bytes (weights, zeroed caches) from address 0, as one file.

Layout as a Program file's: the magic b"SRAMIMG1", a little-endian u32 header length, the
header (JSON, sorted keys: `chips`, a list of [chip, bytes], and `weights`, where they came
from), then one zstandard frame of the chips' bytes in that order. Equal images give
byte-identical files; files are written beside their destination and renamed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import zstandard

from ir.errors import ParseError
from ir.files import atomic_write

MAGIC = b"SRAMIMG1"
LEVEL = 3
_LEN = struct.Struct("<I")


def save_image(image: dict[int, np.ndarray], path: Path | str, source: str) -> None:
    chips = sorted(image)
    head = json.dumps({"chips": [[c, len(image[c])] for c in chips], "weights": source}, sort_keys=True,
                      separators=(",", ":")).encode()
    body = zstandard.ZstdCompressor(level=LEVEL, threads=0).compress(b"".join(image[c].tobytes() for c in chips))
    data = b"".join([MAGIC, _LEN.pack(len(head)), head, body])
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def load_image(path: Path | str) -> tuple[dict[int, np.ndarray], str]:
    """(chip -> bytes, where the weights came from)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ParseError(f"{path}: cannot read SRAM image: {e.strerror}") from None
    return loads_image(data, str(path))


def loads_image(data: bytes, filename: str = "<bytes>") -> tuple[dict[int, np.ndarray], str]:
    """An SRAM image from its file's bytes; `filename` names it in errors."""
    if not data.startswith(MAGIC):
        raise ParseError(f"{filename}: not a sramflow SRAM image (wrong magic bytes)")
    at = len(MAGIC) + _LEN.size
    try:
        (size,) = _LEN.unpack_from(data, len(MAGIC))
        header = json.loads(data[at:at + size])
        total = sum(n for _, n in header["chips"])
        body = zstandard.ZstdDecompressor().decompress(data[at + size:], max_output_size=total)
    except (ValueError, KeyError, TypeError, struct.error, zstandard.ZstdError) as e:
        raise ParseError(f"{filename}: corrupt SRAM image: {e}") from None
    if len(body) != total:
        raise ParseError(f"{filename}: SRAM image holds {len(body)} bytes, its header says {total}")
    out, offset = {}, 0
    for chip, n in header["chips"]:
        out[int(chip)] = np.frombuffer(body, np.uint8, n, offset).copy()
        offset += n
    return out, str(header.get("weights", ""))
