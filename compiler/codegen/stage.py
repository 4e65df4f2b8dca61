"""A stage's code: its units' templates (one per distinct shape of a run of units lowered together,
partition.chaining.lowered_together), hand-offs, and SRAM layout.

Identical runs of layers share one scheduled template; an instance only renames the values
the template's slots stand for. Every chip of the stage runs the same code (SPMD):
the rank picks its peers and its slices of collective buffers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from compiler.codegen.alloc import Interval, first_fit, pack
from compiler.codegen.collectives import Collectives, Level, levels
from compiler.codegen.emit import Emitter, Slot
from compiler.codegen.template import TAG_SPACE, Instr, Peer, Ref, Space, Template
from compiler.codegen.unit import UnitCode, finish, unit_code
from compiler.partition.cost import HandOff, handoff, handoff_links, handoff_parts
from compiler.partition.units import signature
from ir.errors import DoesNotFitError
from ir.graph import Op, Value
from ir.isa import Op as Isa
from targets.spec import SystemSpec
from targets.timing import Timing
from targets.topology import Wiring, chip_hops, node_wires


@dataclass(frozen=True, slots=True)
class Piece:
    """One template instance on a stage: the names behind its slots, and which ranks run it."""

    code: UnitCode
    params: tuple[str, ...] = ()
    ports_in: tuple[str, ...] = ()
    ports_out: tuple[str, ...] = ()
    ranks: int | None = None  # only ranks below this run it (hand-off senders)
    kind: str = "unit"  # "unit" | "recv" | "send"
    land: int | None = None  # a hand-off sender's: cycles from its start till its data is across (phase.timeline)
    # A wafer region's piece (its template names physical role streams, compiler/backends/wafer/lower.py): the
    # first address of its params, and per stream it runs whether it leaves that role's result on the pair's other.
    addr: int = 0
    flips: tuple[bool, ...] = ()


@dataclass
class StageCode:
    index: int
    tp: int
    first_chip: int
    pieces: list[Piece] = field(default_factory=list)
    addr: dict[str, int] = field(default_factory=dict)  # params, caches, inputs, ports
    arenas: list[int] = field(default_factory=list)  # base of each piece's LOCAL arena
    inputs: tuple[str, ...] = ()  # graph inputs, by INPUT slot
    memory_map: list[tuple[str, str, int, int]] = field(default_factory=list)  # (kind, name, addr, bytes)
    outputs: dict[str, Value] = field(default_factory=dict)  # the graph's outputs held here, per chip
    split: bool = False  # the plan stage's kv_layout is "split" (passes.shard.shard_unit's `split`)
    # Leading pieces that run for every chunk before the stage's first (the head's embedding of a tied table
    # and its hand-off to the first stage: phase.timeline), each chunk's after the one before.
    early: int = 0


class StageBuilder:
    """Builds every stage's code for one phase graph, sharing templates across stages."""

    def __init__(self, system: SystemSpec, inputs: Sequence[Value], outputs: set[str], chips: int):
        self.system, self.timing = system, Timing.of(system)
        self.wiring = Wiring(system, chips)  # the plan's chips as wired: hops are paths over it
        self.inputs = tuple(inputs)
        self.outputs = outputs
        self.cache: dict[tuple, UnitCode] = {}
        self.handoffs: dict[tuple, tuple[Piece, Piece]] = {}

    def unit(self, scope: str, ops: list[Op], tp: int, first_chip: int, exported: set[str]) -> Piece:
        lv = levels(tp, self.system.chips_per_node, self.system.global_links_per_chip,
                    lambda q: self._far_hops(first_chip, tp), lambda: self._cross_hops(first_chip, tp),
                    node_wires(self.system).of_span(self.system, first_chip, tp))
        key = (signature(ops), tp, tuple(sorted(_positions(ops, exported))), tuple(lv))
        if key not in self.cache:
            self.cache[key] = unit_code(scope, ops, self.timing, [v.name for v in self.inputs], exported, lv)
        code = self.cache[key]
        rename = _rename(code, ops)
        return Piece(code, *(tuple(rename[v.name] for v in vs) for vs in (code.params, code.ports_in, code.ports_out)))

    @functools.cache  # noqa: B019 -- one builder per phase; stages share their first chip and width
    def _far_hops(self, first_chip: int, tp: int) -> int:
        """The most hops between two chips of the stage a node apart (the outer level's partners)."""
        node = self.system.chips_per_node
        return max(self.wiring.hops(first_chip + a, first_chip + b)
                   for a in range(tp) for b in range(a % node, tp, node) if a != b)

    @functools.cache  # noqa: B019 -- as _far_hops
    def _cross_hops(self, first_chip: int, tp: int) -> int:
        """The most hops between two chips of the stage in different nodes (a kv head's block of ranks
        straddling a node boundary reaches its far member in at most these)."""
        node = self.system.chips_per_node
        return max(self.wiring.hops(first_chip + a, first_chip + b)
                   for a in range(tp) for b in range(tp) if (first_chip + a) // node != (first_chip + b) // node)

    def handoff(self, value: Value, sender: tuple[int, int], receiver: tuple[int, int], tag: int,
                streams: int | None = None) -> tuple[Piece, Piece]:
        """Send `value` from stage (first_chip, tp) `sender` to `receiver` by partition.cost.handoff's rule
        (the plan's): each lane carries its slices to one receiver of each of its set's teams, then each team
        all-gathers. `streams`: at most this many pieces on the streams at once (a trailing hand-off's, on
        the streams the sending stage's other pieces leave free). Built once for every prefill variant (they
        hand off the same values)."""
        key = (value, sender, receiver, tag, streams)
        if key not in self.handoffs:
            self.handoffs[key] = self._handoff(value, sender, receiver, tag, streams)
        return self.handoffs[key]

    def _handoff(self, value: Value, sender: tuple[int, int], receiver: tuple[int, int], tag: int,
                 streams: int | None) -> tuple[Piece, Piece]:
        (f0, t0), (f1, t1) = sender, receiver
        h = handoff(t0, t1, chip_hops(self.system, f0 + t0 - 1, f1), self.system)  # the plan's hops and rule
        team, slices = h.team, h.slices
        served = team * h.sets  # receivers j and j + served hear from the same sender
        hops = max(self.wiring.hops(f0 + j % served // slices, f1 + j) for j in range(t1))
        size = -(-value.type.nbytes // team)
        parts = handoff_parts(value.type.nbytes, chip_hops(self.system, f0 + t0 - 1, f1), h, self.system)
        send = Template(f"send {value.name}", self.timing, top=True)
        e = Emitter(send, {value.name: Slot(Ref(Space.PORT_IN, 0), value.type.nbytes)}, set())
        lane = Peer("group", 0, h.lanes, 1, 0)  # sender r's lane r mod lanes carries pieces from (r mod lanes) * slices
        links = handoff_links(h, chip_hops(self.system, f0 + t0 - 1, f1), self.system)
        nbytes = value.type.nbytes
        # A piece's stream stays live until its last SEND ends: read at most `ahead` pieces before they are sent
        # (a stage-wide team's lone lane carries one piece a receiving chip, more than the chip has streams).
        ahead, sent = max(1, min(self.system.chip.streams // 2, streams or self.system.chip.streams)), []
        for i in range(slices):
            # a lone lane's pieces wholly past the value (a stage-wide team's many small ones) read its last bytes
            # instead: they land in the receivers' padding, which nothing reads
            at = min(i * size, nbytes - size) if h.lanes == 1 and i * size >= nbytes else i * size
            src = e.read(value.name, size, Ref(Space.PORT_IN, 0, at, ((lane, slices * size),)))
            if i >= ahead:  # after every SEND of the piece `ahead` before: then its stream is free
                send.instrs[src[0]].deps += tuple((j, 0) for j in sent[i - ahead])
            sent.append([])
            # the piece the value ends inside rounds up (the last lane's last, or a lone lane's)
            ends_in = i * size < nbytes < (i + 1) * size if h.lanes == 1 else i == slices - 1 and team * size > nbytes
            send.instrs[src[0]].overhang = ends_in
            for k in range(h.teams // h.sets):  # sender r's message m to receiver k * served + r * slices + i
                m = k * slices + i
                for at, part in _parts(size, parts):  # one tag: the receiver's RECVs take them in order
                    sent[i].append(send.add(Instr(Isa.SEND, self.timing.link(part), unit=2 * (m % max(1, links)),
                                                  src_bytes=part, s_a=src[1], offset=at, tag=tag + m,
                                                  deps=((src[0], 0),),
                                                  peer=Peer("next", k * served + i, h.senders, slices, hops))))
        send_code = finish(send, (), (value,), ())
        recv = self._receive(value, h, hops, size, tag, receiver, parts)
        return (Piece(send_code, (), (value.name,), (), ranks=h.senders, kind="send",
                      land=lands(send_code.template, self.timing)),
                Piece(recv, (), (), (value.name,), kind="recv"))

    def _receive(self, value: Value, h: HandOff, hops: int, size: int, tag: int, receiver: tuple[int, int],
                 parts: int = 1) -> UnitCode:
        t = Template(f"recv {value.name}", self.timing)
        e = Emitter(t, {value.name: Slot(Ref(Space.PORT_OUT, 0), value.type.nbytes)}, set())
        if parts > 1:
            return self._receive_parts(t, e, value, h, hops, size, tag, parts)
        stream = t.stream()
        team, served = h.team, h.team * h.sets
        # Receiver j takes piece j mod team from sender (j mod served) // slices, its message (j // served) *
        # slices + j mod slices: the tag resolved per rank.
        node, (first, tp) = self.system.chips_per_node, receiver
        r = t.add(Instr(Isa.RECV, self.timing.link(size), unit=1, dst_bytes=size, s_out=stream,
                        peer=Peer("prev", 0, served, h.slices, hops), tag=tag, deps=()))
        if team > node:  # the whole stage's team (partition.cost._handoff): gather over its nodes too
            lv = levels(team, node, self.system.global_links_per_chip, lambda q: self._far_hops(first, tp),
                        pair_links=node_wires(self.system).of_span(self.system, first, tp))
        else:
            lv = [Level(team, 1, 1, max(1, team - 1))] if team > 1 else []
        dims = [(level, size * math.prod(lower.group for lower in lv[:i])) for i, level in enumerate(lv)]
        coll = Collectives(e, lv)
        coll.tag = TAG_SPACE // 2  # clear of the hand-off's own tags
        if lv:
            e.pad(value.name, team * size)  # the last piece may overhang the value
            own = coll._write(value.name, (r, stream), dims, drain=False)
            coll._gather(value.name, (r, stream), own, dims)
        else:
            e.write(value.name, stream, r, size, drain=False)
        return finish(t, (), (), (value,), port_bytes=e.port_bytes())

    def _receive_parts(self, t: Template, e: Emitter, value: Value, h: HandOff, hops: int, size: int, tag: int,
                        parts: int) -> UnitCode:
        """_receive for a hand-off in parts (partition.cost.handoff_parts): each part's RECV, then its gather inside
        the node, which runs on local links beside the next part's RECV on a global one."""
        team = h.team
        lv = [Level(team, 1, 1, max(1, team - 1))]
        coll = Collectives(e, lv)
        coll.tag = TAG_SPACE // 2  # clear of the hand-off's own tags
        e.pad(value.name, team * size)  # the last piece may overhang the value
        # The RECVs' link slot: past the local links' slots the gather takes, one a chip maps to its first
        # global link (instantiate._units), so the template's schedule lets the gather run beside them.
        local, far = self.system.local_links_per_chip, max(1, self.system.global_links_per_chip)
        unit = 2 * (-(-local // far) * far) + 1
        slot, last, ends = e.slots[value.name], None, []
        for n, (at, part) in enumerate(_parts(size, parts)):
            stream = t.stream()
            r = t.add(Instr(Isa.RECV, self.timing.link(part), unit=unit, dst_bytes=part, s_out=stream,
                            peer=Peer("prev", 0, team * h.sets, h.slices, hops), tag=tag,
                            deps=((last, 0),) if last is not None else ()))
            last, name = r, f"{value.name}#{n}"  # the part's bytes of every piece, `size` apart
            e.slots[name] = Slot(Ref(slot.ref.space, slot.ref.slot, slot.ref.offset + at, slot.ref.parts), part)
            own = coll._write(name, (r, stream), [(lv[0], size)], drain=False, block=part)
            ends.append(coll._gather(name, (r, stream), own, [(lv[0], size)], block=part))
            del e.slots[name]
        final = t.instrs[ends[-1]]  # readers wait for the last write: it waits for the other parts'
        final.deps = final.deps + tuple((w, 0) for w in ends[:-1])
        slot.ready = ends[-1]
        return finish(t, (), (), (value,), port_bytes=e.port_bytes())


def lands(t: Template, timing: Timing) -> int:
    """Cycles from a hand-off sender's start until its last message has begun to cross the wire and reached the
    far side. A message in parts (cost.handoff_parts) is received part after part, each RECV as long as its
    SEND: a later part is in time where it leaves no later than the parts before it take."""
    sends = [ins for ins in t.instrs if ins.op is Isa.SEND]
    before: dict[tuple, int] = {}  # cycles of a message's earlier parts, by its tag and peer
    first = 0
    for ins in sends:
        key = (ins.tag, ins.peer)
        first = max(first, ins.issue - before.get(key, 0))
        before[key] = before.get(key, 0) + ins.cycles
    return first + max(ins.peer.hops for ins in sends) * timing.link_latency_cycles


def _parts(size: int, parts: int) -> list[tuple[int, int]]:
    """(offset, bytes) of a piece's `parts` parts, of nearly equal size."""
    cuts = [size * j // parts for j in range(parts + 1)]
    return [(a, b - a) for a, b in zip(cuts, cuts[1:], strict=False)]


def _positions(ops: list[Op], exported: set[str]) -> list[int]:
    """Which results (by position in the unit) are exported: part of a template's identity."""
    names = [r.name for op in ops for r in op.results]
    return [i for i, n in enumerate(names) if n in exported]


def _rename(code: UnitCode, ops: list[Op]) -> dict[str, str]:
    """Template names to this instance's names, by position (the units share a signature)."""
    return {a.name: b.name for a, b in zip(code.values, _flat(ops), strict=True)}


def _flat(ops: list[Op]) -> list[Value]:
    return [v for op in ops for v in (*op.operands, *op.results)]


def layout(stage: StageCode, system: SystemSpec, inputs: Sequence[Value], values: dict[str, Value],
           keep: set[str], state: set[str], arena_floor: Sequence[int] = (), below: set[str] = frozenset(),
           base: int = 0) -> None:
    """Addresses for one stage's chips: params and caches packed from address `base` (0, or above the
    Program whose chips these share; every phase finds them at the same place), then inputs; above
    them, ports (live over the pieces that write and read them) and each piece's arena (live while it
    runs, and at least `arena_floor[i]` bytes: another variant's) share one first-fit allocation by
    liveness. Caches in
    `below` (held in a tier below SRAM) are packed from address 0 of the tier instead (memory map kind
    "tier"). Raises DoesNotFitError."""
    resident = list(dict.fromkeys(n for p in stage.pieces for n in p.params))
    tiered = [n for n in resident if n in below]
    resident = [n for n in resident if n not in below]
    for n, a in zip(tiered, pack([values[n].type.nbytes for n in tiered])[0], strict=True):
        stage.addr[n] = a
        stage.memory_map.append(("tier", n, a, values[n].type.nbytes))
    stage.inputs = tuple(v.name for v in inputs)
    regions = [("state" if n in state else "param", n, values[n].type.nbytes) for n in resident]
    regions += [("input", v.name, v.type.nbytes) for v in inputs]
    addrs, top = pack([size for _, _, size in regions], base)
    for (kind, n, size), a in zip(regions, addrs, strict=True):
        stage.addr[n] = a
        stage.memory_map.append((kind, n, a, size))
    ports = _port_intervals(stage, keep)
    floor = list(arena_floor) or [0] * len(stage.pieces)
    arenas = [Interval(i, i + 1, max(p.code.arena_bytes, f)) for i, (p, f) in enumerate(zip(stage.pieces, floor,
                                                                                              strict=True))]
    offsets, span = first_fit([iv for _, iv in ports] + arenas)
    for (n, iv), off in zip(ports, offsets[:len(ports)], strict=True):
        stage.addr[n] = top + off
        stage.memory_map.append(("port", n, top + off, iv.size))
    stage.arenas = [top + off for off in offsets[len(ports):]]
    largest = max(range(len(arenas)), key=lambda i: (arenas[i].size, -i), default=None)
    if largest is not None:
        stage.memory_map.append(("arena", "activations", stage.arenas[largest], arenas[largest].size))
    end = top + span
    if end > system.chip.usable_sram_bytes:
        raise DoesNotFitError(f"stage {stage.index}: the program needs {end} bytes of SRAM per chip, "
                              f"{system.chip.usable_sram_bytes} are usable", None)


def _port_intervals(stage: StageCode, keep: set[str]) -> list[tuple[str, Interval]]:
    """Ports live over piece indices; `keep` (graph outputs, values other stages read) to the end."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    size: dict[str, int] = {}
    for i, p in enumerate(stage.pieces):
        for nbytes, n in zip(p.code.port_bytes, p.ports_out, strict=True):
            first.setdefault(n, i)
            last[n] = max(last.get(n, i), i)
            size[n] = max(size.get(n, 0), nbytes)
        for v, n in zip(p.code.ports_in, p.ports_in, strict=True):
            first.setdefault(n, 0)
            last[n] = max(last.get(n, i), i)
            size[n] = max(size.get(n, 0), v.type.nbytes)
    end = len(stage.pieces)
    return [(n, Interval(first[n], end if n in keep else last[n] + 1, size[n])) for n in first]
