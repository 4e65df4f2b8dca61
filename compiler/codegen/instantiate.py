"""Template instances to Program columns: offset in time, addresses resolved, peers and links per rank.

A template's instructions become numpy rows once (`Frozen`); each instance then
costs a handful of vector operations over (instructions x ranks), so the work
grows with distinct templates, not with chips or layers.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from compiler.codegen.blocks import Blocks
from compiler.codegen.stage import StageCode
from compiler.codegen.template import TAG_SPACE, Peer, Ref, Rel, Space, Template
from ir.contract import LOCAL_VALUES, Prov
from ir.errors import DoesNotFitError
from ir.isa import Op, UnitKind
from ir.program import empty_columns
from targets.spec import SystemSpec
from targets.timing import Timing

_PLAIN = ("kind", "unit", "op", "fn", "dtype", "issue", "cycles", "src_bytes", "dst_bytes", "s_a", "s_b", "s_c",
          "s_d", "s_out", "tag", "m", "k", "n", "flags", "stride")


def sync(blocks: Blocks, code: StageCode, timing: Timing) -> None:
    """Every chip of the stage starts with a SYNC at cycle 0."""
    row = empty_columns(1)
    row["kind"][:] = UnitKind.SYNC
    row["op"][:] = Op.SYNC
    row["cycles"][:] = timing.sync_cycles
    blocks.place(blocks.block(row), np.arange(code.first_chip, code.first_chip + code.tp), 0)


@dataclass(frozen=True)
class Frozen:
    """A template as arrays, with physical streams assigned."""

    plain: dict[str, np.ndarray]
    src: list[Ref | None]
    dst: list[Ref | None]
    peers: list[Peer | None]
    offset: list[int | Rel]
    imm: list[int | Rel]
    base: list[int | Rel]
    args: list[tuple | None]
    overhang: list[bool]


def freeze(t: Template) -> Frozen:
    """The template's arrays, built once and kept on the template."""
    if t.frozen is None:
        t.frozen = _freeze(t)
    return t.frozen


def _freeze(t: Template) -> Frozen:
    streams = _physical_streams(t)
    ins = t.instrs
    plain = {
        "kind": np.array([int(i.kind) for i in ins], np.uint8),
        "unit": np.array([i.unit for i in ins], np.int64),
        "op": np.array([int(i.op) for i in ins], np.uint8),
        "fn": np.array([int(i.fn) for i in ins], np.uint8),
        "dtype": np.array([int(i.fmt) for i in ins], np.uint8),
        "issue": np.array([i.issue for i in ins], np.int64),
        "cycles": np.array([i.cycles for i in ins], np.int32),
        "src_bytes": np.array([i.src_bytes for i in ins], np.int32),
        "dst_bytes": np.array([i.dst_bytes for i in ins], np.int32),
        "tag": np.array([i.tag for i in ins], np.int64),
        "m": np.array([i.m for i in ins], np.int32),
        "k": np.array([i.k for i in ins], np.int32),
        "n": np.array([i.n for i in ins], np.int32),
        "flags": np.array([i.flags for i in ins], np.uint8),
        "stride": np.array([i.stride for i in ins], np.int64),
        "route": np.zeros(len(ins), np.uint8),  # a queues-dialect message goes to its peer; no route
    }
    for name in ("s_a", "s_b", "s_c", "s_d", "s_out"):
        plain[name] = np.array([streams.get(getattr(i, name), -1) for i in ins], np.int16)
    return Frozen(plain, [i.src for i in ins], [i.dst for i in ins], [i.peer for i in ins],
                  [i.offset for i in ins], [i.imm for i in ins], [i.base for i in ins], [i.args for i in ins],
                  [i.overhang for i in ins])


def _physical_streams(t: Template) -> dict[int, int]:
    """Stream ids by interval colouring: a stream is busy from its producer's issue to its
    last consumer's end. Raises if the schedule needs more streams than the chip has."""
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for i in t.instrs:
        if i.s_out >= 0:
            start[i.s_out] = i.issue
            end[i.s_out] = max(end.get(i.s_out, 0), i.end)
        for s in (i.s_a, i.s_b, i.s_c, i.s_d):
            if s >= 0:
                end[s] = max(end.get(s, 0), i.end)
    physical: dict[int, int] = {}
    busy: list[tuple[int, int]] = []  # (end, id) of streams in use
    spare: list[int] = []
    used = 0
    for s in sorted(start, key=lambda s: (start[s], s)):
        while busy and busy[0][0] <= start[s]:
            heapq.heappush(spare, heapq.heappop(busy)[1])
        if spare:
            physical[s] = heapq.heappop(spare)
        else:
            physical[s], used = used, used + 1
        heapq.heappush(busy, (end[s], physical[s]))
    if used > t.timing.streams:
        raise DoesNotFitError(f"unit {t.name}: its schedule keeps {used} streams live at once, the chip has "
                              f"{t.timing.streams}; split it over more chips (--chips) or a larger target")
    return physical


def instantiate(blocks: Blocks, code: StageCode, index: int, starts: np.ndarray, tag_bases: np.ndarray,
                neighbours: tuple[StageCode | None, StageCode | None], system: SystemSpec,
                fn_args: dict[tuple, int]) -> None:
    """Piece `index` of `code` on every rank that runs it, once per start cycle (prefill runs a
    piece once per chunk): one block per rank, its rows relative to the rank's chip, the chunk's
    cycle and tags, and (for peers in its own stage or the next) the stage's first chip; then one
    instance per rank and start. `fn_args` numbers the distinct argument sets of VOPs (the
    Program's meta["fn_args"])."""
    piece = code.pieces[index]
    f = freeze(piece.code.template)
    ranks = np.arange(piece.ranks if piece.ranks is not None else code.tp, dtype=np.int64)
    count, r = len(f.src), len(ranks)
    rows = {name: np.tile(a, r) for name, a in f.plain.items()}
    chip = np.repeat(code.first_chip + ranks, count)
    rows["src"] = _addresses(f.src, code, index, ranks)
    rows["dst"] = _addresses(f.dst, code, index, ranks)
    val, prov = _provenance(f, code, index)
    rows["val"], rows["prov"] = np.tile(val, r), np.tile(prov, r)
    rows["offset"] = _integers(f.offset, ranks)
    imm = [fn_args.setdefault(a, len(fn_args)) if a is not None else v for a, v in zip(f.args, f.imm, strict=True)]
    rows["imm"] = _integers(imm, ranks)
    rows["base"] = _integers(f.base, ranks)
    peer, tag_shift = _peers(f.peers, code, ranks, neighbours)
    rows["tag"] = np.where(rows["tag"] >= 0, rows["tag"] + tag_shift, -1)
    assert rows["tag"].max(initial=0) < TAG_SPACE, f"{piece.code.template.name}: tags past TAG_SPACE"
    rows["unit"] = _units(rows, chip, peer, system)
    rows["chip"] = np.zeros(len(chip), np.int64)
    ids, bases = np.zeros(r, np.int64), np.zeros(r, np.int64)
    for k in range(r):
        mine = slice(k * count, (k + 1) * count)
        theirs = peer[mine]
        base = code.first_chip if (theirs[theirs >= 0] >= code.first_chip).all() else 0
        block = {name: a[mine] for name, a in rows.items()}
        block["peer"] = np.where(theirs >= 0, theirs - base, theirs)
        ids[k], bases[k] = blocks.block(block), base
    every = np.ones((len(starts), 1), np.int64)
    blocks.place(every * ids, every * (code.first_chip + ranks), starts[:, None] * 1, tag_bases[:, None] * 1,
                 every * bases)


def _base(ref: Ref, code: StageCode, index: int) -> int:
    piece = code.pieces[index]
    space, slot = ref.space, ref.slot
    if space is Space.PARAM:
        return code.addr[piece.params[slot]]
    if space is Space.INPUT:
        return code.addr[code.inputs[slot]]
    if space is Space.LOCAL:
        return code.arenas[index] + piece.code.local_offsets[slot]
    if space is Space.PORT_IN:
        return code.addr[piece.ports_in[slot]]
    return code.addr[piece.ports_out[slot]]


# Where the value a READ or GATHER of each space expects was written (ir.contract.Prov).
_PROV = {Space.LOCAL: Prov.MINE, Space.PORT_OUT: Prov.MINE, Space.PORT_IN: Prov.EARLIER, Space.PARAM: Prov.RESIDENT,
         Space.INPUT: Prov.RESIDENT}
_READS_SRAM = (Op.READ, Op.GATHER)
_WRITES_SRAM = (Op.WRITE, Op.FETCH)  # a FETCH's source is a tier address, its destination SRAM


def _provenance(f: Frozen, code: StageCode, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's SRAM value (the buffer's base address; a local value's index past LOCAL_VALUES) and,
    for a read, where its value was written: the SRAM side of each row, rank-independent."""
    val = np.full(len(f.src), -1, np.int64)
    prov = np.zeros(len(f.src), np.uint8)
    for i, op in enumerate(f.plain["op"].tolist()):
        ref = f.src[i] if op in _READS_SRAM else f.dst[i] if op in _WRITES_SRAM else None
        if ref is None:
            continue
        val[i] = LOCAL_VALUES + ref.slot if ref.space is Space.LOCAL else _base(ref, code, index)
        if op in _READS_SRAM:
            prov[i] = Prov.TAIL if f.overhang[i] else _PROV[ref.space]
    return val, prov


def _addresses(refs: list[Ref | None], code: StageCode, index: int, ranks: np.ndarray) -> np.ndarray:
    out = np.full((len(ranks), len(refs)), -1, dtype=np.int64)
    for i, ref in enumerate(refs):
        if ref is None:
            continue
        at = np.full(len(ranks), _base(ref, code, index) + ref.offset, dtype=np.int64)
        for peer, nbytes in ref.parts:
            at += _member(peer, ranks)[1] * nbytes
        out[:, i] = at
    return out.reshape(-1)


def _integers(values: list[int | Rel], ranks: np.ndarray) -> np.ndarray:
    """Rank-dependent integers (Rel) resolved for every rank; plain ints repeat."""
    out = np.zeros((len(ranks), len(values)), dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, Rel):
            out[:, i] = v.base + v.per_rank * (ranks // v.div)
            for peer, nbytes in v.parts:
                out[:, i] += _member(peer, ranks)[1] * nbytes
        else:
            out[:, i] = v
    return out.reshape(-1)


def _member(p: Peer, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the peer's rank in the stage, its index in the level group) for a 'group' peer."""
    block = p.group * p.stride
    base = ranks // block * block
    idx = (ranks % block) // p.stride
    other = (idx + p.delta) % p.group
    return base + other * p.stride + ranks % p.stride, other


def _peers(peers: list[Peer | None], code: StageCode, ranks: np.ndarray,
           neighbours: tuple[StageCode | None, StageCode | None]) -> tuple[np.ndarray, np.ndarray]:
    chip = np.full((len(ranks), len(peers)), -1, dtype=np.int64)
    tag = np.zeros((len(ranks), len(peers)), dtype=np.int64)
    prev, nxt = neighbours
    for i, p in enumerate(peers):
        if p is None:
            continue
        if p.level == "group":
            chip[:, i] = code.first_chip + _member(p, ranks)[0]
        elif p.level == "next":
            chip[:, i] = nxt.first_chip + ranks % p.group + p.delta * p.group
        else:  # prev: receiver j's message is the (j // lanes)-th its sender sends
            chip[:, i] = prev.first_chip + ranks % p.group
            tag[:, i] = ranks // p.group
    return chip.reshape(-1), tag.reshape(-1)


def _units(rows: dict[str, np.ndarray], chip: np.ndarray, peer: np.ndarray, system: SystemSpec) -> np.ndarray:
    """Physical unit indices: C2C templates name a link slot; the chips pick the link."""
    unit = rows["unit"].copy()
    c2c = rows["kind"] == UnitKind.C2C
    node = system.chips_per_node
    same = (chip // node) == (peer // node)
    local = (peer % node - chip % node - 1) % node
    slot = unit // 2
    direction = unit % 2
    glob = system.local_links_per_chip + slot % max(1, system.global_links_per_chip)
    link = np.where(same, local, glob)
    unit[c2c] = (2 * link + direction)[c2c]
    return unit
