"""Collects a Program as blocks and instances: each distinct block of rows once, placed many times.

A backend hands over a block's rows relative to where it runs (chip 0, cycle 0, tags and peers
less the offsets it names) and the instances that place it; equal blocks (the same layer on
another stage, the same piece on another chunk) are stored once, found by their bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ir.program import COLUMNS, INSTANCE_COLUMNS, NAMES, SORT_KEY, Program


class Blocks:
    def __init__(self) -> None:
        self._ids: dict[bytes, int] = {}
        self._bodies: list[dict[str, np.ndarray]] = []
        self._inst: list[dict[str, np.ndarray]] = []
        self._made: dict = {}

    def once(self, key, make):
        """`make()`'s result, made once per key: a backend names what a group of blocks is a function of,
        and skips building and hashing rows it has built before."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def block(self, rows: dict[str, np.ndarray]) -> int:
        """The id of a block of these rows (every column of COLUMNS, relative to its instances)."""
        rows = {name: np.ascontiguousarray(rows[name], dt) for name, dt in COLUMNS}
        order = np.lexsort(tuple(rows[n] for n in reversed(SORT_KEY)))
        if (order != np.arange(len(order))).any():
            rows = {n: a[order] for n, a in rows.items()}
        digest = hashlib.blake2b(digest_size=16)
        for n in NAMES:
            digest.update(rows[n].data)
        key = digest.digest()
        if key not in self._ids:
            self._ids[key] = len(self._bodies)
            self._bodies.append(rows)
        return self._ids[key]

    def place(self, block, chip, issue, tag=0, peer=0) -> None:
        """Instances of blocks: each argument one value or an array, broadcast together."""
        b, c, i, t, p = np.broadcast_arrays(*(np.asarray(x, np.int64) for x in (block, chip, issue, tag, peer)))
        self._inst.append({"block": b.ravel(), "chip": c.ravel(), "issue": i.ravel(), "tag": t.ravel(),
                           "peer": p.ravel()})

    def program(self, phase: str, target: str, chips: int, clock_hz: float, meta: dict, dialect: str) -> Program:
        body = {name: np.concatenate([b[name] for b in self._bodies]) if self._bodies else np.zeros(0, dt)
                for name, dt in COLUMNS}
        bounds = np.r_[0, np.cumsum([len(b["chip"]) for b in self._bodies], dtype=np.int64)]
        inst = {name: np.concatenate([x[name] for x in self._inst]).astype(dt) if self._inst else np.zeros(0, dt)
                for name, dt in INSTANCE_COLUMNS}
        return Program.from_blocks(phase, target, chips, clock_hz, body, bounds, inst, meta, dialect)
