"""Messages checked by universe: the instances whose message tags can meet.

A SEND and the RECV that takes it carry one tag, so messages can only pair among instances whose
absolute tag ranges overlap: those ranges, merged where they touch, split a Program's messages into
universes that are checked apart (targets/messages.py: the dialect's pairing, the target's arrival
rule, built once for the whole Program). Prefill repeats each piece once per chunk at
another cycle and another tag base, so most universes are the same instances shifted in time and
tags: a universe's signature (each instance's block, chip and peer offset, its tag and cycle less
the universe's first) is checked once, and what it finds counts once per universe that shares it.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ir.isa import Op
from ir.program import Program
from targets.hazards import Rows
from targets.messages import Wires, check_messages
from targets.spec import SystemSpec
from targets.views import RowsView
from targets.wafer_timing import MeshRoutes

ROUTES = {"queues": Wires, "roles": MeshRoutes}  # each dialect's arrival rule, built once a Program


def check_messages_by_universe(program: Program, system: SystemSpec, dur: np.ndarray, hazards) -> None:
    routes = ROUTES[program.dialect](program, system, hazards)  # a wafer's placement is checked even without messages
    msg = np.isin(program.body["op"], (Op.SEND, Op.RECV))
    if not msg.any():
        return
    members, starts = universes(program, msg)
    groups: dict[bytes, list[int]] = {}
    for u, key in enumerate(_signatures(program, members, starts)):
        groups.setdefault(key, []).append(u)
    ends = np.r_[starts[1:], len(members)]
    for us in groups.values():
        u = us[0]
        c = program.expand(members[starts[u]:ends[u]], origin=True, rows=msg, ordered=False)
        view, start = RowsView(program, c), c["issue"].astype(np.int64)
        check_messages(view, start, Rows(hazards, c["_inst"], c["_row"], len(us)), routes)


def universes(program: Program, msg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(instances grouped by universe, where each universe starts in that list): instances whose
    blocks hold messages, grouped where their absolute tag ranges overlap."""
    b, inst = program.body, program.inst
    block = np.repeat(np.arange(program.blocks), program.block_rows)
    big = np.iinfo(np.int64).max
    tags = b["tag"].astype(np.int64)
    tagged = msg & (tags >= 0)
    low, high = np.full(program.blocks, big), np.full(program.blocks, -big)
    np.minimum.at(low, block[tagged], tags[tagged])
    np.maximum.at(high, block[tagged], tags[tagged])
    untagged = np.bincount(block[msg & (tags < 0)], minlength=program.blocks) > 0
    has = np.bincount(block[msg], minlength=program.blocks) > 0
    j = np.flatnonzero(has[inst["block"]])
    blk = inst["block"][j]
    off = inst["tag"][j].astype(np.int64)
    lo = np.where(low[blk] < big, off + low[blk], big)
    hi = np.where(high[blk] > -big, off + high[blk], -big)
    lo = np.where(untagged[blk], np.minimum(lo, -1), lo)  # an untagged message keeps tag -1 wherever it runs
    hi = np.where(untagged[blk], np.maximum(hi, -1), hi)
    order = np.lexsort((j, lo))
    j, lo, hi = j[order], lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    fresh = np.r_[True, lo[1:] > reach[:-1]] if len(j) else np.zeros(0, bool)
    starts = np.flatnonzero(fresh)
    # within a universe, instances in table order (chip, cycle, block): a deterministic signature
    uid = np.cumsum(fresh) - 1
    order = np.lexsort((j, uid))
    return j[order], starts


def _signatures(program: Program, members: np.ndarray, starts: np.ndarray) -> list[bytes]:
    inst = program.inst
    if not len(members):
        return []
    tag = inst["tag"][members].astype(np.int64)
    issue = inst["issue"][members].astype(np.int64)
    tag0 = np.minimum.reduceat(tag, starts)
    issue0 = np.minimum.reduceat(issue, starts)
    size = np.diff(np.r_[starts, len(members)])
    rel = np.stack([inst["block"][members].astype(np.int64), inst["chip"][members].astype(np.int64),
                    inst["peer"][members].astype(np.int64), tag - np.repeat(tag0, size),
                    issue - np.repeat(issue0, size)], axis=1)
    raw = np.ascontiguousarray(rel)
    ends = np.r_[starts[1:], len(members)]
    return [hashlib.blake2b(raw[s:e].tobytes(), digest_size=16).digest()
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]

