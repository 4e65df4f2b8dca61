"""The device mesh of a stage: named axes of devices, and the collectives that run along them.

A stage's devices form a mesh with named axes, as in JAX's `Mesh`. A chip stage of t chips laid out
node-aligned has a `chips` axis (the chips of a node, a clique over local links) and, past one node,
a `nodes` axis (the chips of equal local rank in the stage's nodes, a clique over global links). A
wafer region of R x C cores has a `rows` and a `cols` axis, each a line of neighbouring cores over
the fabric. A collective is a rule per axis shape, run axis by axis:

  clique  direct: every member sends each other member its slice in one step, over its `links`
          parallel links: hops x latency + rounds x slice / bandwidth, rounds ceil((size - 1) / links);
          across nodes at least ceil(crowd / pair_links): the `crowd` messages a node sends another take
          turns on the links joining the two (targets.topology.NodeWires), as the lowering issues them
          (turn_slots: each chip's peers by its place in the node)
  switch  direct through a non-blocking switch (a GPU node's NVSwitch): every message spreads over
          all `links` local links, so a member sends at its aggregate bandwidth:
          hops x latency + (size - 1) x slice / (links x bandwidth)
  line    a 2-way tree (halving, targets.mesh.tree_halves): a message step a level, about size - 1 hops
          in all, each a receiver's fixed step plus one block of values over a link (the wafer's steps,
          timed as the lowering emits them: compiler/backends/wafer/cost.py)

An all-reduce reduce-scatters its inner axes, exchanges the slice left over its outer axes in one shot
each (every member sends the slice to every other and sums what arrives: one latency instead of two, for
size times the bytes), then all-gathers the inner axes back; how many axes reduce-scatter is whichever is
shortest for its bytes (allreduce_steps) among the forms whose shot axes may shoot (may_shoot: two
members, the nodes' axis, or a node's chips for one row): the nodes' axis of a decode row takes one shot, a
prefill chunk's does not, and a node's chips shoot a decode row's small slices (its last pieces). A shot
of more than two members, and a reduce-scatter whose messages take turns, stage the members' slices to
sum them in one order (allreduce_staging), which the plan counts in the unit's activations.

The plan's estimate, the lowering and the interpreter's checks all follow these rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from targets.spec import LinkSpec, SystemSpec

CLIQUE, SWITCH, LINE = "clique", "switch", "line"
LOCAL, GLOBAL = "local", "global"


@dataclass(frozen=True, slots=True)
class Axis:
    """One axis of a mesh: `size` devices `stride` apart in the stage's order, joined as `shape`
    by links of class `link`; a member reaches the farthest other in `hops` hops and spreads its
    messages over `links` parallel links."""

    name: str
    size: int
    shape: str
    link: str
    stride: int = 1
    hops: int = 1
    links: int = 1
    crowd: int = 0  # messages a node sends another node at once (one a chip of it); 0: one node
    pair_links: int = 1  # the links joining two nodes (or groups) they cross

    @property
    def rounds(self) -> float:
        """Slice-times a member's messages take: its own links', or the node pair's links' if slower (a switch
        spreads every message over all its links)."""
        if self.shape == SWITCH:
            return (self.size - 1) / max(1, self.links)
        return clique_rounds(self.size, self.links, self.crowd, self.pair_links)


def clique_rounds(size: int, links: int, crowd: int = 0, pair_links: int = 1) -> int:
    """Slice-times of a clique's direct exchange (the plan's Axis and the lowering's Level both ask): a member's
    size - 1 messages in turns over its `links`, and, across nodes (`crowd`: a node's chips, each sending one
    message to every other node), a node's messages to another in turns over the `pair_links` joining them,
    whichever is slower. The lowering issues exactly that many slots (turn_slots)."""
    return max(-(-(size - 1) // max(1, links)), -(-crowd // max(1, pair_links)))


def turn_slots(size: int, links: int, crowd: int, pair_links: int) -> list[list[tuple[int, ...]]]:
    """When each chip of a node sends its message to each other node of a clique of `size` nodes: per slot (one
    slice-time, clique_rounds of them), per link, the node delta each of the `crowd` chips sends to (0: none).
    Chips go in teams of `pair_links` (team g = r // pair_links), the other nodes in blocks of `links`
    (block h: deltas h x links + 1 ...); team g sends block h in slot (g + h) mod slots. So in a slot a chip
    sends at most one block, one message a link, and a node reaches each other node from one team: no more
    messages at once than the links joining the two."""
    slots = clique_rounds(size, links, crowd, pair_links)
    teams, blocks = -(-crowd // max(1, pair_links)), -(-(size - 1) // max(1, links))
    assert slots >= max(teams, blocks)
    out = []
    for s in range(slots):
        row = []
        for w in range(links):
            deltas = []
            for r in range(crowd):
                h = (s - r // pair_links) % slots
                d = h * links + w + 1
                deltas.append(d if h < blocks and d < size else 0)
            row.append(tuple(deltas))
        out.append(row)
    return out


@dataclass(frozen=True, slots=True)
class DeviceMesh:
    """A stage's devices as named axes, innermost first."""

    axes: tuple[Axis, ...]

    @property
    def size(self) -> int:
        return math.prod(a.size for a in self.axes)

    def axis(self, name: str) -> Axis | None:
        return next((a for a in self.axes if a.name == name), None)

    def to_dict(self) -> dict:
        return {a.name: a.size for a in self.axes}


def chip_mesh(tp: int, system: SystemSpec, far_hops: Callable[[int], int], pair_links: int) -> DeviceMesh:
    """t chips laid out node-aligned: a clique of min(t, node) chips, then a clique of the nodes
    (`far_hops(q)` the hops from the first of q nodes to the farthest; `pair_links` joining the two nodes
    farthest apart, NodeWires.of_span), a node's chips each sending one message to every other node."""
    if tp <= 1:
        return DeviceMesh(())
    node = system.chips_per_node
    inner = _node_axis(min(tp, node), system)
    if tp <= node:
        return DeviceMesh((inner,))
    q = math.ceil(tp / node)
    return DeviceMesh((inner, Axis("nodes", q, CLIQUE, GLOBAL, node, far_hops(q), max(1, system.global_links_per_chip),
                                   node, pair_links)))


def _node_axis(size: int, system: SystemSpec) -> Axis:
    """The chips of one node: a clique of one link per peer, or a switch over all local links."""
    if system.local_fabric == "switch":
        return Axis("chips", size, SWITCH, LOCAL, 1, 1, system.local_links_per_chip)
    return Axis("chips", size, CLIQUE, LOCAL, 1, 1, size - 1)


def region_mesh(rows: int, cols: int) -> DeviceMesh:
    """R x C cores of a wafer: a line of rows and a line of columns over the fabric."""
    return DeviceMesh((Axis("rows", rows, LINE, LOCAL), Axis("cols", cols, LINE, LOCAL)))


def link_of(axis: Axis, system: SystemSpec) -> LinkSpec:
    return system.local_link if axis.link == LOCAL else system.global_link


def clique_s(axis: Axis, slice_bytes: float, system: SystemSpec) -> float:
    """One direct exchange along a clique axis: each member's slice to every other member."""
    link = link_of(axis, system)
    return axis.hops * link.latency_s + axis.rounds * slice_bytes / link.bw_bytes_per_s


def collective_s(kind: str, nbytes: float, mesh: DeviceMesh, system: SystemSpec, one_row: bool = False) -> float:
    """An all-reduce or an all-gather of `nbytes` (the whole tensor) over a chip mesh's axes, innermost
    first: an all-gather moves, on each axis, the slice that is left; an all-reduce is allreduce_steps'
    on the axes (reduced_axes of them reduce-scatter; `one_row`: of one row, may_shoot)."""
    if kind == "allreduce":
        return allreduce_steps(_steps(mesh, system, one_row), nbytes, _drain_s(system))[0]
    total, share = 0.0, nbytes
    for axis in mesh.axes:
        share /= axis.size
        total += clique_s(axis, share, system)
    return total


@dataclass(frozen=True, slots=True)
class Step:
    """One axis of an all-reduce as allreduce_steps times it, in any one time unit: `latency` to the axis's
    farthest member, `rounds` times a slice's time per byte (`per_byte`) on its links, whether it may
    exchange in one shot (a clique or a switch, whose members reach each other directly; not a line), and
    whether its chips' messages take turns (a nodes' level: turn_slots), so that its exchanges stage."""

    size: int
    latency: float
    rounds: float
    per_byte: float
    shot: bool = True
    turned: bool = False


def _steps(mesh: DeviceMesh, system: SystemSpec, one_row: bool) -> list[Step]:
    steps = []
    for i, axis in enumerate(mesh.axes):
        link = link_of(axis, system)
        steps.append(Step(axis.size, axis.hops * link.latency_s, axis.rounds, 1 / link.bw_bytes_per_s,
                          axis.shape != LINE and may_shoot(axis.size, i, len(mesh.axes), one_row), axis.crowd > 0))
    return steps


def may_shoot(size: int, level: int, levels: int, one_row: bool) -> bool:
    """Whether level `level` (of `levels`, innermost first) of an all-reduce may exchange in one shot: two
    members add each other's slice straight off the streams; more stage the members' slices to add them in
    one order (codegen.collectives._exchange), size times the slice, which the plan counts (allreduce_staging).
    The nodes' (outer) level stages q slices of 1 / node of the tensor. A node's level of more chips stages
    size times the whole tensor: a decode row's (`one_row`, a few KB) may, a prefill chunk's keeps its two
    steps, since its staging would grow with the chunk and take the room the chunk search fills."""
    return size == 2 or 0 < level == levels - 1 or one_row


def allreduce_steps(steps: Sequence[Step], nbytes: float, drain: float) -> tuple[float, int]:
    """An all-reduce of `nbytes` over the steps (innermost first), and how many of them reduce-scatter: the
    first k axes reduce-scatter (each a step of its slice), the rest exchange the slice left in one shot
    each, then the first k all-gather it back. Of the k whose later axes may all take one shot, the shortest
    (ties: the most reduce-scatters, which move the fewest bytes); the plan's estimate and codegen.collectives
    both ask it (in seconds and in cycles). With no all-gather (k = 0) the last sum's `drain` (the vector
    pipeline's, before its result is written) is on the path; an all-gather's sends hide it."""
    best: tuple[float, int] | None = None
    for k in range(len(steps), -1, -1):
        if not all(s.shot for s in steps[k:]):
            break
        total, share = 0.0, nbytes
        for s in steps[:k]:
            share /= s.size
            total += 2 * (s.latency + s.rounds * share * s.per_byte)
        total += sum(s.latency + s.rounds * share * s.per_byte for s in steps[k:]) + (0.0 if k else drain)
        if best is None or total < best[0]:
            best = (total, k)
    return best if best is not None else (0.0, 0)


def staged_slots(steps: Sequence[Step], reduced: int, elements: int, elem_bytes: int) -> tuple[int, ...]:
    """Bytes of each buffer an all-reduce of `elements` whose first `reduced` steps reduce-scatter stages
    (codegen.collectives, which cuts slices of whole elements nesting over those steps): a turned
    reduce-scatter stages its members' slices (size x its slice), and so does a shot, of the slice left, unless
    it has two members that do not turn (they add each other's slice straight off the streams)."""
    total = math.prod(s.size for s in steps[:reduced])
    share, slots = -(-elements // total) * total, []
    for s in steps[:reduced]:
        share //= s.size
        if s.turned:
            slots.append(s.size * share * elem_bytes)
    slots += [s.size * share * elem_bytes for s in steps[reduced:] if s.turned or s.size > 2]
    return tuple(slots)


def allreduce_staging(mesh: DeviceMesh, nbytes: int, elements: int, system: SystemSpec,
                      one_row: bool = False) -> tuple[int, ...]:
    """The buffers an all-reduce of `nbytes` in `elements` over the mesh stages, in the form allreduce_steps
    takes for its bytes."""
    steps = _steps(mesh, system, one_row)
    reduced = allreduce_steps(steps, nbytes, _drain_s(system))[1]
    return staged_slots(steps, reduced, elements, max(1, nbytes // max(1, elements)))


def reduced_axes(mesh: DeviceMesh, nbytes: float, system: SystemSpec, one_row: bool = False) -> int:
    """How many of the mesh's axes an all-reduce of `nbytes` reduce-scatters (allreduce_steps)."""
    return allreduce_steps(_steps(mesh, system, one_row), nbytes, _drain_s(system))[1]


def _drain_s(system: SystemSpec) -> float:
    """A vector result's drain before it is written (targets.timing's drain_cycles: one op's latency)."""
    return system.chip.op_latency_cycles / system.chip.clock_hz


def outer_one_shot(mesh: DeviceMesh, nbytes: float, system: SystemSpec, one_row: bool = False) -> bool:
    """Whether an all-reduce of `nbytes` over a mesh of several axes exchanges its outer (nodes) axis in one
    shot (reduced_axes leaves it out)."""
    return len(mesh.axes) >= 2 and reduced_axes(mesh, nbytes, system, one_row) < len(mesh.axes)


def collective_wire_s(kind: str, mesh: DeviceMesh, system: SystemSpec) -> float:
    """What a collective cannot avoid: one exchange's wire to the group's farthest member."""
    if mesh.size <= 1:
        return 0.0
    return mesh.axes[-1].hops * min(system.local_link.latency_s, system.global_link.latency_s)
