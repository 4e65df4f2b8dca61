"""Template instances to Program columns: offset in time, addresses resolved, peers and links per rank.

A template's instructions become numpy rows once (`Frozen`); each instance then
costs a handful of vector operations over (instructions x ranks), so the work
grows with distinct templates, not with chips or layers.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from compiler.codegen.blocks import Blocks
from compiler.codegen.stage import StageCode
from compiler.codegen.template import TAG_SPACE, Instr, Peer, Ref, Rel, Space, Template
from ir.contract import LOCAL_VALUES, Prov
from ir.errors import DoesNotFitError
from ir.isa import Op, UnitKind
from ir.program import HOST, empty_columns
from targets.spec import SystemSpec
from targets.timing import Timing

_PLAIN = ("kind", "unit", "op", "fn", "dtype", "issue", "cycles", "src_bytes", "dst_bytes", "s_a", "s_b", "s_c",
          "s_d", "s_e", "s_out", "tag", "m", "k", "n", "flags", "stride")


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
    slots: tuple[tuple[Space, int], ...]  # the distinct (space, slot) its addresses name
    levels: tuple[str, ...]  # the distinct levels of its peers
    turned: tuple[tuple[int, Peer], ...]  # (instruction, turned peer it names): runs only where that is a member


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
        "flags": np.array([i.flags for i in ins], np.uint16),
        "stride": np.array([i.stride for i in ins], np.int64),
        "route": np.array([i.route for i in ins], np.uint8),
        "stream": np.array([i.stream for i in ins], np.int64),
    }
    for name in ("s_a", "s_b", "s_c", "s_d", "s_e", "s_out"):
        plain[name] = np.array([streams.get(getattr(i, name), -1) for i in ins], np.int16)
    refs = [r for i in ins for r in (i.src, i.dst) if r is not None]
    slots = tuple(dict.fromkeys((r.space, r.slot) for r in refs))
    levels = tuple(dict.fromkeys(i.peer.level for i in ins if i.peer is not None))
    turned = tuple((k, p) for k, i in enumerate(ins) for p in _peers_named(i) if p.turns)
    return Frozen(plain, [i.src for i in ins], [i.dst for i in ins], [i.peer for i in ins],
                  [i.offset for i in ins], [i.imm for i in ins], [i.base for i in ins], [i.args for i in ins],
                  [i.overhang for i in ins], slots, levels, turned)


def _peers_named(i: Instr) -> list[Peer]:
    """Every peer an instruction names: its own, and the parts of its addresses and rank-dependent integers."""
    named = [i.peer] if i.peer is not None else []
    named += [p for ref in (i.src, i.dst) if ref is not None for p, _ in ref.parts]
    return named + [p for v in (i.offset, i.imm, i.base) if isinstance(v, Rel) for p, _ in v.parts]


def _physical_streams(t: Template) -> dict[int, int]:
    """Stream ids by interval colouring: a stream is busy from its producer's issue to its
    last consumer's end. Raises if the schedule needs more streams than the chip has."""
    if t.physical:
        return {s: s for s in range(t.timing.streams)}
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for i in t.instrs:
        if i.s_out >= 0:
            start[i.s_out] = i.issue
            end[i.s_out] = max(end.get(i.s_out, 0), i.end)
        for s in (i.s_a, i.s_b, i.s_c, i.s_d, i.s_e):
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
    if t.top:
        return {s: t.timing.streams - used + p for s, p in physical.items()}
    return physical


def streams_used(t: Template) -> range:
    """The physical stream ids the template's instances use (freeze's colouring)."""
    plain = freeze(t).plain
    ids = [s for name in ("s_a", "s_b", "s_c", "s_d", "s_e", "s_out") for s in plain[name].tolist() if s >= 0]
    return range(min(ids), max(ids) + 1) if ids else range(0)


def instantiate(blocks: Blocks, t: Template, first_chip: int, ranks: int, starts: np.ndarray, tag_bases: np.ndarray,
                fn_args: dict[tuple, int], base: Callable[[Ref], int], system: SystemSpec,
                neighbours: tuple[int, int] = (0, 0), swap: Sequence[bool] = ()) -> None:
    """Template `t` on chips (or streams) from `first_chip`, once per start cycle (prefill runs a piece
    once per chunk): every rank below `ranks` runs each of the template's streams, on chip first_chip +
    rank + stream (a chip template: one stream per rank; a wafer region's: one rank, a stream per role
    class). One block per chip, its rows relative to the chip, the chunk's cycle and tags, and (for peers
    from the first chip on) the first chip; then one instance per chip and start. `base` resolves a
    symbolic address's space and slot; `neighbours` are the first chips of the stages before and after;
    `system` picks the links of C2C slots (a physical template names its units). `swap[s]`: stream
    s of the template has its two result streams (`Template.pair`) the other way round in this instance
    (a wafer role's activation sits on the other one). `fn_args` numbers the distinct argument sets of VOPs
    (the Program's meta["fn_args"]). The blocks are built once per what they are a function of
    (`_block_key`): the same layer on another stage or prefill variant reuses them."""
    f = freeze(t)
    key, relative = _block_key(f, t, first_chip, ranks, base, system, neighbours, swap)
    chips, ids, bases, made_at = blocks.once(key, lambda: _chip_blocks(blocks, f, t, first_chip, ranks, fn_args, base,
                                                                        system, neighbours, swap))
    if relative:  # made for a stage at another first chip: its chips and every peer base were that chip's
        chips, bases = chips - made_at + first_chip, bases - made_at + first_chip
    every = np.ones((len(starts), 1), np.int64)
    blocks.place(every * ids, every * chips, starts[:, None] * 1, tag_bases[:, None] * 1, every * bases)


def _block_key(f: Frozen, t: Template, first_chip: int, ranks: int, base: Callable[[Ref], int], system: SystemSpec,
               neighbours: tuple[int, int], swap: Sequence[bool]) -> tuple[tuple, bool]:
    """What a template's chip blocks are a function of, and whether every peer lies at or after the first
    chip (the blocks then name peers relative to it, and depend on where it starts only through its place
    in a node: the same layer on another stage is the same blocks)."""
    addresses = tuple(base(Ref(space, slot)) for space, slot in f.slots)
    prev, nxt = neighbours
    far = tuple((level, (nxt if level == "next" else prev) - first_chip) for level in f.levels
                if level in ("next", "prev"))
    lowest = [d + min(p.delta for p in f.peers if p is not None and p.level == level) if level == "next"
              else d for level, d in far]
    lowest += [p.delta for p in f.peers if p is not None and p.level == "stream"]
    relative = all(low >= 0 for low in lowest)
    where = first_chip % system.chips_per_node if relative else first_chip
    return (id(f), ranks, addresses, where, far, tuple(swap)), relative


def _chip_blocks(blocks: Blocks, f: Frozen, t: Template, first_chip: int, ranks: int, fn_args: dict[tuple, int],
                 base: Callable[[Ref], int], system: SystemSpec, neighbours: tuple[int, int], swap: Sequence[bool]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(chips, block id, peer base) of each chip's rows of the template, and the first chip they were made at."""
    ranks_ = np.arange(ranks, dtype=np.int64)
    count = len(f.src)
    rows = {name: np.tile(a, ranks) for name, a in f.plain.items()}
    stream = rows.pop("stream")
    chip = np.repeat(first_chip + ranks_, count) + stream
    if any(swap):
        traded, (a, b) = np.asarray(swap, bool)[stream], t.pair
        for name in ("s_a", "s_b", "s_c", "s_d", "s_e", "s_out"):
            col = rows[name]
            rows[name] = np.where(traded & (col == a), b, np.where(traded & (col == b), a, col)).astype(col.dtype)
    rows["src"] = _addresses(f.src, base, ranks_)
    rows["dst"] = _addresses(f.dst, base, ranks_)
    # Provenance is the queues dialect's: a wafer's role streams write no SRAM (their columns stay unset).
    val, prov = _provenance(f, base) if not t.physical else (np.full(count, -1, np.int64), np.zeros(count, np.uint8))
    rows["val"], rows["prov"] = np.tile(val, ranks), np.tile(prov, ranks)
    rows["offset"] = _integers(f.offset, ranks_)
    imm = [fn_args.setdefault(a, len(fn_args)) if a is not None else v for a, v in zip(f.args, f.imm, strict=True)]
    rows["imm"] = _integers(imm, ranks_)
    rows["base"] = _integers(f.base, ranks_)
    peer, tag_shift = _peers(f.peers, first_chip, ranks_, neighbours)
    rows["tag"] = np.where(rows["tag"] >= 0, rows["tag"] + tag_shift, -1)
    assert rows["tag"].max(initial=0) < TAG_SPACE, f"{t.name}: tags past TAG_SPACE"
    if not t.physical:
        rows["unit"] = _units(rows, chip, peer, system)
    rows["chip"] = np.zeros(len(chip), np.int64)
    present = _present(f, ranks_)
    if present is not None:
        keep = present.reshape(-1)
        rows, chip, peer = {name: a[keep] for name, a in rows.items()}, chip[keep], peer[keep]
    order = np.argsort(chip, kind="stable")
    chips, first = np.unique(chip[order], return_index=True)
    ids, bases = np.zeros(len(chips), np.int64), np.zeros(len(chips), np.int64)
    for k, mine in enumerate(np.split(order, first[1:])):
        theirs = peer[mine]
        at = first_chip if (theirs[theirs >= 0] >= first_chip).all() else 0
        block = {name: a[mine] for name, a in rows.items()}
        block["peer"] = np.where(theirs >= 0, theirs - at, theirs)
        ids[k], bases[k] = blocks.block(block), at
    return chips, ids, bases, first_chip


def stage_base(code: StageCode, index: int) -> Callable[[Ref], int]:
    """Where piece `index` of a chip stage finds each symbolic address's space and slot."""
    return lambda ref: _base(ref, code, index)


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


def _provenance(f: Frozen, base: Callable[[Ref], int]) -> tuple[np.ndarray, np.ndarray]:
    """Every row's SRAM value (the buffer's base address; a local value's index past LOCAL_VALUES) and,
    for a read, where its value was written: the SRAM side of each row, rank-independent."""
    val = np.full(len(f.src), -1, np.int64)
    prov = np.zeros(len(f.src), np.uint8)
    for i, op in enumerate(f.plain["op"].tolist()):
        ref = f.src[i] if op in _READS_SRAM else f.dst[i] if op in _WRITES_SRAM else None
        if ref is None:
            continue
        val[i] = LOCAL_VALUES + ref.slot if ref.space is Space.LOCAL else base(ref)
        if op in _READS_SRAM:
            prov[i] = Prov.TAIL if f.overhang[i] else _PROV[ref.space]
    return val, prov


def _addresses(refs: list[Ref | None], base: Callable[[Ref], int], ranks: np.ndarray) -> np.ndarray:
    out = np.full((len(ranks), len(refs)), -1, dtype=np.int64)
    for i, ref in enumerate(refs):
        if ref is None:
            continue
        at = np.full(len(ranks), base(ref) + ref.offset, dtype=np.int64)
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
    other = (idx + _delta(p, ranks)) % p.group
    return base + other * p.stride + ranks % p.stride, other


def _delta(p: Peer, ranks: np.ndarray) -> np.ndarray | int:
    """A 'group' peer's delta on each rank: fixed, or turned by the rank's index inside its stride."""
    if not p.turns:
        return p.delta
    turned = np.asarray(p.turns, np.int64)[ranks % p.stride]
    return -turned if p.back else turned


def _present(f: Frozen, ranks: np.ndarray) -> np.ndarray | None:
    """Per (rank, instruction), whether it runs: not where a turned peer it names has no delta for the rank
    (template.Peer); None: every instruction runs on every rank."""
    if not f.turned:
        return None
    keep = np.ones((len(ranks), len(f.src)), bool)
    for i, p in f.turned:
        keep[:, i] &= _delta(p, ranks) != 0
    return keep


def _peers(peers: list[Peer | None], first_chip: int, ranks: np.ndarray,
           neighbours: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    chip = np.full((len(ranks), len(peers)), -1, dtype=np.int64)
    tag = np.zeros((len(ranks), len(peers)), dtype=np.int64)
    prev, nxt = neighbours
    for i, p in enumerate(peers):
        if p is None:
            continue
        if p.level == "group":
            chip[:, i] = first_chip + _member(p, ranks)[0]
        elif p.level == "next":
            chip[:, i] = nxt + ranks % p.group * p.stride + p.delta
        elif p.level == "prev":  # receiver j's message is the ((j // team) * slices + j % slices)-th its lane sends
            chip[:, i] = prev + ranks % p.group // p.stride
            tag[:, i] = ranks // p.group * p.stride + ranks % p.stride
        else:
            chip[:, i] = first_chip + p.delta if p.level == "stream" else HOST
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
