"""Collectives from point-to-point sends: direct all-reduce and all-gather, hierarchical over nodes.

Inside a node the chips are fully connected, so a reduce-scatter is one message of
bytes/p to each peer on its own link, all at once; across q nodes the chips with the
same local rank exchange their slice over the global links (rounds when q-1 exceeds
them). The all-gather runs the levels back. Levels after the first `reduced` (partition.mesh.
allreduce_steps: whichever is shortest for the bytes) exchange the slice left in one shot instead, their
staging buffers the ones partition.mesh.staged_slots counts for the plan.
This is the algorithm partition.mesh.collective_s times, so the plan's estimate and the schedule agree.

Buffer layout: a slice's offset is the sum over levels of (its index in that level's
group) x (that level's slice bytes), so every rank writes distinct bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from compiler.codegen.emit import Emitter, Slot
from compiler.codegen.template import Instr, Peer, Ref, Rel
from compiler.partition.mesh import Step, allreduce_steps, clique_rounds, may_shoot, turn_slots
from ir.errors import ConfigError
from ir.isa import Fn, Op


@dataclass(frozen=True, slots=True)
class Level:
    group: int
    stride: int
    hops: int
    links: int  # parallel links this level's messages spread over
    cross: int = 0  # an outer level's: hops between the farthest two of the stage's chips in different nodes
    crowd: int = 0  # an outer level's: messages a node sends another at once (one a chip of it)
    pair_links: int = 1  # the links joining the two nodes farthest apart (targets.topology.NodeWires)

    def peer(self, delta: int) -> Peer:
        return Peer("group", delta, self.group, self.stride, self.hops)

    @property
    def turned(self) -> bool:
        """An outer level: its chips' peers turn with their place in the node (partition.mesh.turn_slots)."""
        return self.crowd > 0

    def pairs(self) -> list[tuple[Peer, Peer, int]]:
        """(whom a member sends to, whom it receives from, the link) of each message slot: a peer per delta, on
        links in turn; turned, partition.mesh.turn_slots' slots, each link's instruction naming per chip of a
        node the node it sends to (and receives from as many back), or none (the chip skips it)."""
        if not self.turned:
            return [(self.peer(d), self.peer(-d), (d - 1) % self.links) for d in range(1, self.group)]
        out = []
        for row in turn_slots(self.group, self.links, self.crowd, self.pair_links):
            for link, deltas in enumerate(row):
                if any(deltas):
                    out += [(Peer("group", 0, self.group, self.stride, self.hops, deltas),
                             Peer("group", 0, self.group, self.stride, self.hops, deltas, True), link)]
        return out


def levels(p: int, node: int, global_links: int, far_hops: Callable[[int], int],
           cross_hops: Callable[[], int] | None = None, pair_links: int = 1) -> list[Level]:
    """The levels of a group of p chips laid out node-aligned (innermost first); `cross_hops` gives the
    outer level's `cross` (a block of ranks straddling nodes reaches its far member in that many), `pair_links`
    the links joining its two nodes farthest apart (partition.mesh.chip_mesh's)."""
    if p <= 1:
        return []
    if p <= node:
        return [Level(p, 1, 1, p - 1)]
    q = math.ceil(p / node)
    return [Level(node, 1, 1, node - 1),
            Level(q, node, far_hops(q), global_links, cross_hops() if cross_hops else 0, node, pair_links)]


class Collectives:
    """Emits collectives into one unit's template; tags pair each SEND with its RECV."""

    def __init__(self, e: Emitter, lv: list[Level]):
        self.e, self.levels, self.tag = e, lv, 0

    def allreduce(self, x: str, out: str, nbytes: int, elements: int, one_row: bool, fn: Fn = Fn.SUM,
                  src: tuple[int, int] | None = None) -> int:
        """Reduce-scatter the `reduced` innermost levels, innermost first, exchange the rest in one shot,
        then gather outermost first; returns the last write. Slices are whole elements; when they do not
        divide the tensor, `out` grows to hold the last slice's overhang, so no write lands past its buffer.
        `src`: x already whole on a stream (its producer and stream), its first sends taken off it. `one_row`: of
        one row, which a node's chips may shoot (partition.mesh.may_shoot)."""
        cur = src or self.e.read(x)
        elem_bytes = max(1, nbytes // max(1, elements))
        tree = self.levels[:self.reduced(nbytes, one_row)]
        # Slices nest: each level's slice is exactly its group's finer slices, so a rank's bytes are
        # its own at every level (ceil level by level would let an outer level's slices overhang the
        # inner slice they split, and two ranks write the same bytes).
        total = math.prod(lv.group for lv in tree)
        elems, dims = math.ceil(elements / total) * total, []
        for i, lv in enumerate(tree):
            elems //= lv.group
            dims.append((lv, elems * elem_bytes))
            cur = self._reduce_scatter(lv, f"{out}.rs{i}", cur, elems * elem_bytes, elems, fn)
        for j, lv in enumerate(self.levels[len(tree):]):
            cur = self._exchange(lv, f"{out}.shot{j or ''}", cur, elems * elem_bytes, elems, fn)
        self.e.pad(out, elems * elem_bytes * total)
        if not dims:  # every level in one shot: each chip holds the whole sum
            return self._store(out, cur, elems * elem_bytes, (), drain=True)
        dims.reverse()  # finest slices first
        own = self._write(out, cur, dims, drain=True)
        return self._gather(out, cur, own, dims)

    def allgather(self, x: str, out: str, nbytes: int) -> int:
        """Every chip holds shard r (its rank) of `out`; gather innermost level first."""
        shard = math.ceil(nbytes / math.prod(lv.group for lv in self.levels))
        self.e.pad(out, shard * math.prod(lv.group for lv in self.levels))
        dims, unit = [], shard
        for lv in self.levels:
            dims.append((lv, unit))
            unit *= lv.group
        cur = self.e.read(x)
        own = self._write(out, cur, dims, drain=False)
        return self._gather(out, cur, own, dims)

    def subgroup(self, size: int) -> Collectives:
        """Collectives over every block of `size` consecutive ranks (the chips sharing a kv head's cache by
        sequence); it continues this one's tags, and hands them back with `rejoin`."""
        inner = self.levels[0]
        if size <= inner.group and (len(self.levels) == 1 or inner.group % size == 0):
            lv = [Level(size, 1, inner.hops, size - 1)]
        elif size % inner.group == 0 and len(self.levels) > 1:
            outer = self.levels[1]
            lv = [inner, Level(size // inner.group, inner.group, outer.hops, outer.links, 0, outer.crowd,
                               outer.pair_links)]
        elif size < inner.group and len(self.levels) > 1:  # blocks straddle two nodes: one clique, its far
            # members the stage's farthest cross-node pair away (else a node's hop plus the nodes' away), in
            # rounds over the global links (one a peer across)
            outer = self.levels[1]
            lv = [Level(size, 1, outer.cross or inner.hops + outer.hops, outer.links)]
        else:
            raise ConfigError(f"a group of {size} chips sharing a kv head is neither within a node of "
                              f"{inner.group} nor whole nodes (passes.shard.lowers_split)")
        sub = Collectives(self.e, lv)
        sub.tag = self.tag
        return sub

    def rejoin(self, sub: Collectives) -> None:
        self.tag = sub.tag

    def member(self, unit: int) -> tuple[tuple[Peer, int], ...]:
        """Parts (as Ref and Rel take them) giving `unit` times this chip's index in the group."""
        parts, step = [], unit
        for lv in self.levels:
            parts.append((lv.peer(0), step))
            step *= lv.group
        return tuple(parts)

    def gather_rows(self, x: str, out: str, rows: int, chunk: int) -> list[int]:
        """Every member's [rows, chunk bytes] side by side in each row of `out` (member i's at byte
        i x chunk of a row of group x chunk bytes), innermost level first; returns every write."""
        dims, unit = [], chunk
        for lv in self.levels:
            dims.append((lv, unit))
            unit *= lv.group
        total = unit
        self.e.pad(out, rows * total)
        cur = self.e.read(x)
        writes = [self._store_rows(out, cur, (rows, chunk, total), tuple((lv.peer(0), b) for lv, b in dims), ())]
        for j, (lv, block) in enumerate(dims):
            own = tuple((c.peer(0), b) for c, b in dims[j:])
            src = cur if j == 0 else self._read_rows(out, (rows, block, total), own, writes)
            tags = self._sends(lv, src, rows * block)
            for k, (_, sender, link) in enumerate(lv.pairs()):
                r = self._recv(lv, sender, link, rows * block, tags[k])
                parts = ((sender, block), *((c.peer(0), b) for c, b in dims[j + 1:]))
                # each write follows the one before, so the last one's end means the value is whole
                writes.append(self._store_rows(out, r, (rows, block, total), parts, ((writes[-1], 0),)))
        return writes

    def _store_rows(self, out: str, src: tuple[int, int], shape: tuple[int, int, int], parts, after) -> int:
        """`rows` rows of `block` bytes, `total` bytes apart, at the parts' offset of `out`."""
        rows, block, total = shape
        slot = self.e.slots[out]
        ref = Ref(slot.ref.space, slot.ref.slot, slot.ref.offset, tuple(parts))
        many = rows if rows > 1 else 0
        i = self.e.t.add(Instr(Op.WRITE, self.e.t.timing.mem(rows * block), dst=ref, dst_bytes=rows * block,
                               s_a=src[1], m=many, stride=total if many else 0, deps=((src[0], 0), *after)))
        slot.ready = i
        return i

    def _read_rows(self, out: str, shape: tuple[int, int, int], parts, writes: list[int]) -> tuple[int, int]:
        rows, block, total = shape
        slot = self.e.slots[out]
        ref = Ref(slot.ref.space, slot.ref.slot, slot.ref.offset, tuple(parts))
        many = rows if rows > 1 else 0
        stream = self.e.t.stream()
        i = self.e.t.add(Instr(Op.READ, self.e.t.timing.mem(rows * block), src=ref, src_bytes=rows * block,
                               s_out=stream, m=many, stride=total if many else 0,
                               deps=tuple((w, 0) for w in writes)))
        return i, stream

    def _reduce_scatter(self, lv: Level, stage: str, cur: tuple[int, int], size: int, elems: int, fn: Fn
                        ) -> tuple[int, int]:
        """Peer d gets its slice of `cur` (its group index x size bytes in); this chip sums its
        own slice of `cur` with what each peer sends of it. A turned level's messages land in slots a rank
        may skip, so it stages them and sums them in member order (`_exchange`)."""
        if lv.turned:
            return self._exchange(lv, stage, cur, size, elems, fn, sliced=True)
        tags = self._sends(lv, cur, size, sliced=True)
        acc, own = cur, Rel(parts=((lv.peer(0), size),))
        for k, (_, sender, link) in enumerate(lv.pairs()):
            r = self._recv(lv, sender, link, size, tags[k])
            acc = self.e.vop(fn, 1, elems, acc, r, 2 * size, offset=own if k == 0 else 0)
        return acc

    def reduced(self, nbytes: int, one_row: bool) -> int:
        """How many levels an all-reduce of `nbytes` reduce-scatters: partition.mesh's rule (allreduce_steps)
        on this group's levels, in cycles."""
        return allreduce_steps(self._steps(one_row), nbytes, self.e.t.timing.drain_cycles)[1]

    def allreduce_cycles(self, nbytes: float, one_row: bool) -> float:
        """An all-reduce's link cycles by its bytes, as partition.mesh.collective_s times it."""
        return allreduce_steps(self._steps(one_row), nbytes, self.e.t.timing.drain_cycles)[0]

    def _steps(self, one_row: bool) -> list[Step]:
        t = self.e.t.timing
        return [Step(lv.group, lv.hops * t.link_latency_cycles,
                     clique_rounds(lv.group, lv.links, lv.crowd, lv.pair_links), 1 / t.link_bytes_per_cycle,
                     may_shoot(lv.group, i, len(self.levels), one_row), lv.turned)
                for i, lv in enumerate(self.levels)]

    def _exchange(self, lv: Level, stage: str, cur: tuple[int, int], size: int, elems: int, fn: Fn,
                  sliced: bool = False) -> tuple[int, int]:
        """A level in one shot: every member sends its whole slice (reduced by the levels inside) to each peer, and
        each sums the group's slices in the members' order (staged at their index, so every member adds
        the same operands in the same order and holds the same bytes). Two members of a level that does not
        turn add theirs straight off the streams: a + b is b + a to the bit, and no staging buffer grows with a
        prefill chunk's slice. `sliced` (a turned reduce-scatter's): each peer is sent its own slice of `cur`."""
        if lv.group == 2 and not lv.turned:
            tags = self._sends(lv, cur, size)
            return self.e.vop(fn, 1, elems, cur, self._recv(lv, lv.peer(-1), 0, size, tags[0]), 2 * size)
        self.e.slots[stage] = Slot(self.e.t.local(lv.group * size), lv.group * size)
        own = Rel(parts=((lv.peer(0), size),)) if sliced else 0
        writes = [self._store(stage, cur, size, ((lv.peer(0), size),), drain=True, offset=own)]
        tags = self._sends(lv, cur, size, sliced)
        for k, (_, sender, link) in enumerate(lv.pairs()):
            r = self._recv(lv, sender, link, size, tags[k])
            writes.append(self._store(stage, r, size, ((sender, size),), drain=False))
        after = tuple((w, 0) for w in writes)
        acc = self.e.read(stage, size, 0, after=after)
        for j in range(1, lv.group):
            acc = self.e.vop(fn, 1, elems, acc, self.e.read(stage, size, j * size, after=after), 2 * size)
        return acc

    def _gather(self, out: str, src: tuple[int, int] | None, written: int, dims: list[tuple[Level, int]],
                block: int | None = None) -> int:
        """Gather level by level; `src` streams this chip's first block, later blocks are re-read. `block`: the
        bytes of each, when less than the blocks' spacing (part of each piece)."""
        block, writes = block or dims[0][1], [written]
        for j, (lv, unit) in enumerate(dims):
            coarser = dims[j + 1:]
            if src is None:
                src = self._read_block(out, block, [(lv, unit), *coarser], writes)
            tags = self._sends(lv, src, block)
            for k, (_, sender, link) in enumerate(lv.pairs()):
                r = self._recv(lv, sender, link, block, tags[k])
                parts = ((sender, unit), *((c.peer(0), b) for c, b in coarser))
                writes.append(self._store(out, r, block, parts, drain=False))
            block *= lv.group
            src = None
        # Readers wait for the last write, so it waits for every other: messages on busy links (an
        # all-reduce in pieces shares them) may land out of order.
        last = self.e.t.instrs[writes[-1]]
        last.deps = last.deps + tuple((w, 0) for w in writes[:-1] if all(w != d for d, _ in last.deps))
        return writes[-1]

    def _write(self, out: str, cur: tuple[int, int], dims: list[tuple[Level, int]], drain: bool,
               block: int | None = None) -> int:
        parts = tuple((lv.peer(0), b) for lv, b in dims)
        return self._store(out, cur, block or dims[0][1], parts, drain)

    def _store(self, out: str, src: tuple[int, int], size: int, parts, drain: bool, offset: int | Rel = 0) -> int:
        e = self.e
        slot = e.slots[out]
        lag = e.t.timing.drain_cycles if drain else 0
        ref = Ref(slot.ref.space, slot.ref.slot, slot.ref.offset, tuple(parts))
        i = e.t.add(Instr(Op.WRITE, e.t.timing.mem(size), dst=ref, dst_bytes=size, s_a=src[1], offset=offset,
                          deps=((src[0], lag),)))
        slot.ready = i
        return i

    def _read_block(self, out: str, size: int, dims, writes: list[int]) -> tuple[int, int]:
        e = self.e
        slot = e.slots[out]
        ref = Ref(slot.ref.space, slot.ref.slot, slot.ref.offset, tuple((lv.peer(0), b) for lv, b in dims))
        stream = e.t.stream()
        i = e.t.add(Instr(Op.READ, e.t.timing.mem(size), src=ref, src_bytes=size, s_out=stream,
                          deps=tuple((w, 0) for w in writes)))
        return i, stream

    def _sends(self, lv: Level, src: tuple[int, int], size: int, sliced: bool = False) -> list[int]:
        """One SEND a message slot (Level.pairs) on its link; returns the tags by slot. `sliced`: each peer gets
        its own slice of the stream, else all of it."""
        t = self.e.t
        tags = []
        for peer, _, link in lv.pairs():
            tags.append(self._next_tag())
            offset = Rel(parts=((peer, size),)) if sliced else 0
            t.add(Instr(Op.SEND, t.timing.link(size), unit=2 * link, src_bytes=size, s_a=src[1],
                        peer=peer, tag=tags[-1], offset=offset, deps=((src[0], 0),)))
        return tags

    def _recv(self, lv: Level, sender: Peer, link: int, size: int, tag: int) -> tuple[int, int]:
        """The peer's matching SEND sits at the same point of its identical template, so it issues
        when ours does: the data arrives hops x link latency later."""
        t = self.e.t
        send = next(i for i in range(len(t.instrs) - 1, -1, -1)
                    if t.instrs[i].op is Op.SEND and t.instrs[i].tag == tag)
        lag = lv.hops * t.timing.link_latency_cycles - t.instrs[send].cycles
        stream = t.stream()
        i = t.add(Instr(Op.RECV, t.timing.link(size), unit=2 * link + 1, dst_bytes=size,
                        s_out=stream, peer=sender, tag=tag, deps=((send, lag),)))
        return i, stream

    def _next_tag(self) -> int:
        self.tag += 1
        return self.tag - 1
