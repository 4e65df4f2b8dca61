"""The device mesh of a stage: named axes of devices, and the collectives that run along them.

A stage's devices form a mesh with named axes, as in JAX's `Mesh`. A chip stage of t chips laid out
node-aligned has a `chips` axis (the chips of a node, a clique over local links) and, past one node,
a `nodes` axis (the chips of equal local rank in the stage's nodes, a clique over global links). A
wafer region of R x C cores has a `rows` and a `cols` axis, each a line of neighbouring cores over
the fabric. A collective is a rule per axis shape, run axis by axis:

  clique  direct: every member sends each other member its slice in one step, over its `links`
          parallel links: hops x latency + ceil((size - 1) / links) x slice / bandwidth
  switch  direct through a non-blocking switch (a GPU node's NVSwitch): every message spreads over
          all `links` local links, so a member sends at its aggregate bandwidth:
          hops x latency + (size - 1) x slice / (links x bandwidth)
  line    a 2-way tree (halving, targets.mesh.tree_halves): a message step a level, about size - 1 hops
          in all, each a receiver's fixed step plus one block of values over a link (the wafer's steps,
          timed as the lowering emits them: compiler/backends/wafer/cost.py)

An all-reduce is a reduce-scatter then an all-gather, axis by axis, but for its outer (nodes) axis,
which takes one exchange of the whole node-reduced slice where that is shorter (outer_one_shot: one
latency of the far hops instead of two, for q times the bytes).

The plan's estimate, the lowering and the interpreter's checks all follow these rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


def chip_mesh(tp: int, system: SystemSpec, far_hops: Callable[[int], int]) -> DeviceMesh:
    """t chips laid out node-aligned: a clique of min(t, node) chips, then a clique of the nodes
    (`far_hops(q)` the hops from the first of q nodes to the farthest)."""
    if tp <= 1:
        return DeviceMesh(())
    node = system.chips_per_node
    inner = _node_axis(min(tp, node), system)
    if tp <= node:
        return DeviceMesh((inner,))
    q = math.ceil(tp / node)
    return DeviceMesh((inner,
                       Axis("nodes", q, CLIQUE, GLOBAL, node, far_hops(q), max(1, system.global_links_per_chip))))


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
    share = (axis.size - 1) / max(1, axis.links)
    rounds = share if axis.shape == SWITCH else math.ceil(share)  # a switch spreads them, links do not
    return axis.hops * link.latency_s + rounds * slice_bytes / link.bw_bytes_per_s


def collective_s(kind: str, nbytes: float, mesh: DeviceMesh, system: SystemSpec) -> float:
    """An all-reduce (reduce-scatter then all-gather) or an all-gather of `nbytes` (the whole tensor)
    over a chip mesh's clique axes, innermost first: each axis moves the slice that is left. An
    all-reduce whose outer axis takes the one-shot exchange (outer_one_shot) runs the inner axes
    twice around one exchange of the whole node-reduced slice."""
    phases = 2 if kind == "allreduce" else 1
    shot = kind == "allreduce" and outer_one_shot(mesh, nbytes, system)
    total, share = 0.0, nbytes
    for axis in mesh.axes[:-1] if shot else mesh.axes:
        share /= axis.size
        total += clique_s(axis, share, system)
    return phases * total + (clique_s(mesh.axes[-1], share, system) if shot else 0.0)


def one_shot_wins(size: int, links: int, latency: float, slice_time: float) -> bool:
    """Whether an all-reduce level of `size` members, `links` parallel links and `latency` of wire to its
    farthest member, whose slice takes `slice_time` on one link (any one time unit), is shorter as one
    exchange (each member sends all of its slice to every other and sums what arrives: one latency,
    `size` times the bytes) than as a reduce-scatter then an all-gather (two latencies)."""
    rounds = math.ceil((size - 1) / max(1, links))
    return latency + rounds * slice_time < 2 * (latency + rounds * slice_time / size)


def outer_one_shot(mesh: DeviceMesh, nbytes: float, system: SystemSpec) -> bool:
    """Whether an all-reduce of `nbytes` over a mesh of several axes exchanges its outer (nodes) axis in one
    shot (one_shot_wins on the slice the inner axes leave); codegen.collectives lowers it alike."""
    if len(mesh.axes) < 2 or mesh.axes[-1].shape != CLIQUE:
        return False
    outer, link = mesh.axes[-1], link_of(mesh.axes[-1], system)
    share = nbytes / math.prod(a.size for a in mesh.axes[:-1])
    return one_shot_wins(outer.size, outer.links, outer.hops * link.latency_s, share / link.bw_bytes_per_s)


def collective_wire_s(kind: str, mesh: DeviceMesh, system: SystemSpec) -> float:
    """What a collective cannot avoid: one exchange's wire to the group's farthest member."""
    if mesh.size <= 1:
        return 0.0
    return mesh.axes[-1].hops * min(system.local_link.latency_s, system.global_link.latency_s)
