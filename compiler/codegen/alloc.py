"""SRAM allocation: resident tensors packed in order; activations by liveness, first fit.

A buffer lives from its first write to its last read. Two buffers may share bytes
only if their lifetimes do not overlap, which `first_fit` guarantees by placing
each new buffer at the lowest aligned offset clear of every buffer still live.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ALIGN = 320  # one vector: every buffer starts on a vector boundary


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True, slots=True)
class Interval:
    """A buffer of `size` bytes live over [start, end) (cycles, or unit indices)."""

    start: int
    end: int
    size: int


def first_fit(intervals: Sequence[Interval]) -> tuple[list[int], int]:
    """Offsets for `intervals` (in their order) and the bytes the whole arrangement spans."""
    order = sorted(range(len(intervals)), key=lambda i: (intervals[i].start, i))
    offsets = [0] * len(intervals)
    live: list[int] = []
    top = 0
    for i in order:
        iv = intervals[i]
        live = [j for j in live if intervals[j].end > iv.start]
        offsets[i] = _lowest_gap(sorted((offsets[j], align(intervals[j].size)) for j in live), align(iv.size))
        live.append(i)
        top = max(top, offsets[i] + align(iv.size))
    return offsets, top


def _lowest_gap(taken: list[tuple[int, int]], size: int) -> int:
    at = 0
    for offset, length in taken:
        if offset - at >= size:
            return at
        at = max(at, offset + length)
    return at


def pack(sizes: Sequence[int], base: int = 0) -> tuple[list[int], int]:
    """Consecutive aligned addresses from `base`; returns them and the end."""
    out, at = [], base
    for s in sizes:
        out.append(at)
        at += align(s)
    return out, at
