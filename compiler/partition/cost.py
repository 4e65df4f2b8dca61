"""First-principles timing of a plan: ops, collectives, pipeline hops, and the physical bound.

Every figure is derived from the target's published numbers (SRAM, stream-register and MXM
install rates, peak ops, link bandwidth and latency, pipeline latency); nothing is fitted to a
measured tokens/s. The estimate uses targets/timing.py's rules op by op, so the scheduler lands
within 10% of it. The bound (`StageBound`) is a property of the machine and the work alone.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from compiler.partition.chaining import piece_lead
from compiler.partition.mesh import (
    CLIQUE,
    LOCAL,
    Axis,
    DeviceMesh,
    allreduce_staging,
    chip_mesh,
    clique_rounds,
    collective_wire_s,
    reduced_axes,
)
from compiler.partition.mesh import collective_s as collective_time_s
from compiler.partition.overlap import best_pieces, max_pieces, pair_s
from compiler.partition.shard_cost import (
    STAGING_SLOTS,
    Block,
    Collective,
    OpWork,
    ShardCost,
    Staging,
    TierWork,
    instructions,
)
from ir.ops import Opcode
from targets.spec import ChipSpec, LinkSpec, SystemSpec
from targets.topology import chip_hops, node_wires

# Ops whose arithmetic the lowering runs on the vector ALUs rather than the matrix planes (Mamba's
# conv and recurrence): their flops are timed at the vector rate, as the scheduler times them.
VECTOR_OPS = frozenset({Opcode.CONV1D, Opcode.SELECTIVE_SCAN})


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Seconds spent, split by what bounds them (the first four add up to `total_s`).
    `tiles_s` is the share of memory_s and compute_s that whole-tile rounding adds."""

    memory_s: float = 0.0  # streaming (SRAM, stream registers, MXM install) where it exceeds the arithmetic
    compute_s: float = 0.0  # arithmetic where it exceeds the streaming time
    latency_s: float = 0.0  # fixed pipeline latency of each op through the chip
    link_s: float = 0.0  # collectives and pipeline hops
    tiles_s: float = 0.0
    tier_s: float = 0.0  # fetching cold KV from a tier below SRAM, where it outlasts the work it overlaps
    tier_fetch_s: float = 0.0  # all the tier's transfers, overlapped or not (not part of total_s)

    @property
    def total_s(self) -> float:
        return self.memory_s + self.compute_s + self.latency_s + self.link_s + self.tier_s

    def __add__(self, other: Breakdown) -> Breakdown:  # field by field: the planner adds millions a plan
        return Breakdown(self.memory_s + other.memory_s, self.compute_s + other.compute_s,
                         self.latency_s + other.latency_s, self.link_s + other.link_s, self.tiles_s + other.tiles_s,
                         self.tier_s + other.tier_s, self.tier_fetch_s + other.tier_fetch_s)

    @staticmethod
    def sum_of(parts: Iterable[Breakdown]) -> Breakdown:
        """sum(parts, Breakdown()): the same additions field by field in the same order (the same floats),
        without a Breakdown made at each step."""
        m = c = lat = link = tiles = tier = fetch = 0.0
        for p in parts:
            m += p.memory_s
            c += p.compute_s
            lat += p.latency_s
            link += p.link_s
            tiles += p.tiles_s
            tier += p.tier_s
            fetch += p.tier_fetch_s
        return Breakdown(m, c, lat, link, tiles, tier, fetch)

    def scaled(self, k: float) -> Breakdown:
        return Breakdown(*(getattr(self, f) * k for f in self.__slots__))

    @property
    def binding(self) -> str:
        """What most of the time goes to: "sram-bandwidth", "compute", "pipeline-latency", "links" or
        "tier-bandwidth"."""
        parts = {"sram-bandwidth": self.memory_s, "compute": self.compute_s,
                 "pipeline-latency": self.latency_s, "links": self.link_s, "tier-bandwidth": self.tier_s}
        return max(parts, key=lambda k: (parts[k], k))


def op_time(work: OpWork, system: SystemSpec, precision: str) -> Breakdown:
    """One op's streaming and arithmetic, overlapped: whichever is longer. Streaming is the larger of
    its bytes through one stream port (MEM moves an op's data one way) and its blocks' install."""
    chip = system.chip
    stream = work.read_bytes / (min(chip.mem_bytes_per_cycle, chip.stream_port_bytes_per_cycle) * chip.clock_hz)
    install, install_raw = block_install_s(work.blocks, chip)
    if work.opcode in VECTOR_OPS:
        compute = compute_raw = work.flops / vector_ops_per_s(chip)
    else:
        arithmetic = work.flops / chip.peak_ops(work.precision or precision)
        passes, passes_raw = block_passes_s(work.blocks, chip)
        compute, compute_raw = max(arithmetic, passes), max(arithmetic, passes_raw)
    memory = max(stream, install)
    # The MXM runs an op's instructions one after another, each as long as its install or its passes:
    # what that takes beyond max(memory, compute) (blocks bound by different terms) is the op's too.
    serial, serial_raw = block_serial_s(work.blocks, chip)
    excess = max(0.0, serial - max(memory, compute))
    rounding = excess - max(0.0, serial_raw - max(stream, install_raw, compute_raw))
    if memory >= compute:
        return Breakdown(memory_s=memory + excess, tiles_s=memory - max(stream, install_raw, compute_raw) + rounding)
    return Breakdown(compute_s=compute + excess, tiles_s=compute - max(compute_raw, memory) + rounding)


def block_install_s(blocks: Iterable[Block], chip: ChipSpec) -> tuple[float, float]:
    """Seconds to install the blocks into the matrix unit: in whole tiles, and as if tiles were exact."""
    dim, rate = chip.matrix_dim, chip.mxm_install_bytes_per_cycle * chip.clock_hz
    whole = raw = 0.0
    for b in _instructions(blocks, chip):
        per_weight = chip.install_bytes(b.precision)
        whole += b.installed * _tiles(b.k, b.n, dim) * dim * dim * per_weight / rate
        raw += b.weights * per_weight / rate
    return whole, raw


def block_passes_s(blocks: Iterable[Block], chip: ChipSpec) -> tuple[float, float]:
    """Seconds for the blocks' rows through their tiles at peak: whole tiles, and exact."""
    dim = chip.matrix_dim
    whole = raw = 0.0
    for b in _instructions(blocks, chip):
        macs_per_s = chip.peak_ops(b.precision) / 2
        whole += b.count * b.m * _tiles(b.k, b.n, dim) * dim * dim / macs_per_s
        raw += b.m * b.passed / macs_per_s
    return whole, raw


def block_serial_s(blocks: Iterable[Block], chip: ChipSpec) -> tuple[float, float]:
    """Seconds for the blocks' MXM instructions one after another, each its install or its passes,
    whichever is longer (targets.timing's MXM rule): in whole tiles, and as if tiles were exact."""
    whole = raw = 0.0
    for b in _instructions(blocks, chip):
        (install, install_raw), (passes, passes_raw) = block_install_s([b], chip), block_passes_s([b], chip)
        whole, raw = whole + max(install, passes), raw + max(install_raw, passes_raw)
    return whole, raw


def _instructions(blocks: Iterable[Block], chip: ChipSpec) -> list[Block]:
    panel = chip.matrix_dim * chip.matrix_planes
    return [i for b in blocks for i in instructions(b, panel)]


def _tiles(k: int, n: int, dim: int) -> int:
    return -(-k // dim) * -(-n // dim)


def unit_time(cost: ShardCost, system: SystemSpec, precision: str, spans_groups: bool = False) -> Breakdown:
    """A unit on one chip: its ops stream one after another (they share the SRAM
    bandwidth), the dependency chain pays the pipeline latency, then collectives (an all-reduce
    in pieces under its row-parallel matmul only what the pair takes beyond the matmul). `spans_groups`:
    the stage's chips lie in two groups (group_mesh)."""
    total = Breakdown(latency_s=cost.chain_ops * _op_latency_s(system))
    times = [op_time(work, system, precision) for work in cost.work]
    for t in times:
        total += t
    total += Breakdown(link_s=sum(_exposed_s(c, times, system, spans_groups)
                                  - _shared_s(cost.collectives, j, times, system, spans_groups)
                                  for j, c in enumerate(cost.collectives)))
    return total + tier_time(cost, times, system) if cost.tier else total


def boundary_time(before: ShardCost, after: ShardCost, in_run: bool, system: SystemSpec) -> Breakdown:
    """What the boundary between two of a stage's units saves when it lies `in_run`, one template the lowering
    makes of both (partition.chaining.run_boundary), and the op after it takes the op before's result off the
    stream: one pipeline latency (llama's residual add, then the next layer's norm)."""
    if in_run and before.closes and after.opens:
        return Breakdown(latency_s=-_op_latency_s(system))
    return Breakdown()


def tier_fetch_s(tier: TierWork, system: SystemSpec) -> float:
    """Every transfer of the unit's on the chip's host link (the cold KV fetched, the new rows stored):
    bytes at its share of the tier's bandwidth, plus the tier's latency per transfer (targets/timing.py's
    host-link rule)."""
    latency = system.tier(tier.name).latency_s
    return (tier.bytes + tier.store_bytes) / system.tier_bw_per_chip(tier.name) + (tier.fetches + tier.stores) * latency


def tier_time(cost: ShardCost, times: list[Breakdown], system: SystemSpec) -> Breakdown:
    """The host link runs beside MEM and the MXM: the attention waits only for the fetches that outlast
    its own streaming and what ran before it, and only STAGING_SLOTS blocks can be fetched ahead of
    it (the slots it then streams from), so the work before it hides at most that many."""
    tier = cost.tier
    fetch = tier_fetch_s(tier, system)
    per_fetch = fetch / (tier.fetches + tier.stores)
    before = sum((t.total_s for t in times[:tier.attention]), 0.0) + cost.chain_ops * _op_latency_s(system) / 2
    hidden = times[tier.attention].total_s + min(before, STAGING_SLOTS * per_fetch)
    return Breakdown(tier_s=max(0.0, fetch - hidden), tier_fetch_s=fetch)


@dataclass(frozen=True, slots=True)
class StageBound:
    """The physical bound's terms for one chip of a stage, in seconds: weights through the MXM's
    install path, cache and state through the SRAM, every streamed byte through the stream
    registers, arithmetic at peak, and the wire latency no schedule can hide."""

    install_s: float = 0.0
    cache_s: float = 0.0
    stream_s: float = 0.0
    compute_s: float = 0.0
    wire_s: float = 0.0
    install_bytes: float = 0.0  # weights x install bytes per weight
    cache_bytes: int = 0  # KV cache and SSM state held (read once a step)
    stream_bytes: int = 0  # every byte the ops stream
    tier_s: float = 0.0  # cold KV over the chip's share of its tier's bandwidth
    tier_bytes: int = 0

    def __add__(self, other: StageBound) -> StageBound:
        return StageBound(*(getattr(self, f) + getattr(other, f) for f in self.__slots__))

    @property
    def total_s(self) -> float:
        """The stage's bound: its slowest resource, plus the wires."""
        return max(self.install_s, self.cache_s, self.stream_s, self.compute_s, self.tier_s) + self.wire_s

    def to_dict(self) -> dict[str, float]:
        return {"install_us": self.install_s * 1e6, "cache_us": self.cache_s * 1e6, "stream_us": self.stream_s * 1e6,
                "compute_us": self.compute_s * 1e6, "wire_us": self.wire_s * 1e6,
                "install_bytes": self.install_bytes, "cache_bytes": self.cache_bytes,
                "stream_bytes": self.stream_bytes} | (
            {"tier_us": self.tier_s * 1e6, "tier_bytes": self.tier_bytes} if self.tier_bytes else {})


def unit_bound(cost: ShardCost, system: SystemSpec, precision: str, spans_groups: bool = False) -> StageBound:
    """What no schedule of this unit on one chip of its group can beat (README: the bound)."""
    chip = system.chip
    clock = chip.clock_hz
    weights = sum(b.weights * chip.install_bytes(b.precision)
                  for w in cost.work for b in w.blocks if not b.cache)
    streamed = sum(w.read_bytes for w in cost.work)
    matrix = sum(w.flops / chip.peak_ops(w.precision or precision) for w in cost.work if w.opcode not in VECTOR_OPS)
    vector = sum(w.flops for w in cost.work if w.opcode in VECTOR_OPS) / vector_ops_per_s(chip)
    return StageBound(install_s=weights / (chip.mxm_install_bytes_per_cycle * clock),
                      cache_s=cost.state_read_bytes / (chip.mem_bytes_per_cycle * clock),
                      stream_s=streamed / (chip.stream_bytes_per_cycle * clock),
                      compute_s=max(matrix, vector),
                      wire_s=unit_wire_s(cost.collectives, system, spans_groups),
                      install_bytes=weights, cache_bytes=cost.state_read_bytes, stream_bytes=streamed,
                      tier_s=cost.tier_bytes / system.tier_bw_per_chip(cost.tier.name) if cost.tier else 0.0,
                      tier_bytes=cost.tier_bytes)


def handoff_wire_s(system: SystemSpec) -> float:
    """A stage boundary's unavoidable wire: one hop (placement could put the stages side by side)."""
    return min(system.local_link.latency_s, system.global_link.latency_s)


def vector_ops_per_s(chip: ChipSpec) -> float:
    """The vector ALUs' rate: every lane's ALUs, one op a cycle (targets/timing.py's VOP rule)."""
    return chip.vector_alus * chip.clock_hz


def _op_latency_s(system: SystemSpec) -> float:
    return system.chip.op_latency_cycles / system.chip.clock_hz


def group_mesh(tp: int, system: SystemSpec, spans_groups: bool = False) -> DeviceMesh:
    """The mesh of a group of tp chips laid out node-aligned from a node's first chip (the plan's view,
    before placement; the lowering measures hops from the stage's own chips); `spans_groups`: laid out
    across a group boundary, its nodes' level as far as two groups' nodes and over the links joining them
    (what a group's first chip reaches past it, NodeWires.of_span)."""
    node, group, last = system.chips_per_node, system.chips_per_group, system.max_chips - 1
    first = group - node if spans_groups and node < tp <= group <= last else 0
    return chip_mesh(tp, system, lambda q: chip_hops(system, first, min(last, first + (q - 1) * node)),
                     node_wires(system).of_span(system, first, tp))


def _shared_s(collectives: Sequence[Collective], j: int, times: list[Breakdown], system: SystemSpec,
              spans_groups: bool = False) -> float:
    """What collective j does not add, running beside the next (Collective.concurrent): the shorter of
    itself and the independent work issued between them plus the next one's time."""
    c = collectives[j]
    if not c.concurrent:
        return 0.0
    beside = sum(times[w].total_s for w in c.hides) + collective_s(collectives[j + 1], system, spans_groups)
    return min(collective_s(c, system, spans_groups), beside)


def _exposed_s(c: Collective, times: list[Breakdown], system: SystemSpec, spans_groups: bool = False) -> float:
    """A collective's time beyond the ops': all of it, or, for an all-reduce in pieces under its
    matmul (partition.overlap), what the pair takes beyond the matmul alone."""
    if c.overlaps < 0:
        return collective_s(c, system, spans_groups)
    matmul, drain = times[c.overlaps].total_s, _op_latency_s(system)
    pieces, collective, lead = _pieces(c, matmul, group_mesh(c.group, system, spans_groups), system)
    # the chain already charges one drain, as the latency of the all-reduce's reader
    return pair_s(matmul, c.bytes, pieces, collective, lead) - drain - matmul


def _pieces(c: Collective, matmul: float, mesh: DeviceMesh, system: SystemSpec
            ) -> tuple[tuple[tuple[int, int], ...], Callable[[float], float], Callable[[int, int], float]]:
    """An all-reduce's column pieces under its matmul of `matmul` seconds (partition.overlap.best_pieces, as
    codegen.overlap cuts them), its time by bytes over the mesh and each piece's lead."""
    chip = system.chip

    def collective(n: float) -> float:
        return collective_time_s(c.kind, n, mesh, system, c.one_row)

    most = max_pieces([axis.size for axis in mesh.axes], reduced_axes(mesh, c.bytes, system, c.one_row), c.rows)
    lead = piece_lead(c.rows, c.columns, chip.mxm_panel, c.group, c.scaled, _op_latency_s(system))
    return best_pieces(c.rows, c.columns, chip.mxm_panel, c.group, matmul, c.bytes, collective, most, lead), \
        collective, lead


def staging_rule(system: SystemSpec, precision: str) -> Staging:
    """shard_cost's rule for the buffers a unit's all-reduces stage on this target (partition.mesh.allreduce_staging:
    a shot of more than two members, a turned reduce-scatter), each piece of one under its matmul staging its own
    (all counted at once: a piece's exchange may still run while the next one's starts); of a stage that may
    lie in one group or across two (group_mesh), the larger."""

    def rule(work: Sequence[OpWork], collectives: Sequence[Collective]) -> list[tuple[int, ...]]:
        out = []
        for c in collectives:
            if c.kind != "allreduce" or c.group <= 1:
                out.append(())
                continue
            matmul = op_time(work[c.overlaps], system, precision).total_s if c.overlaps >= 0 else 0.0
            meshes = {group_mesh(c.group, system, s) for s in (False, True)}
            out.append(max((_staged(c, matmul, m, system) for m in sorted(meshes, key=repr)), key=sum))
        return out

    return rule


def _staged(c: Collective, matmul: float, mesh: DeviceMesh, system: SystemSpec) -> tuple[int, ...]:
    if c.overlaps < 0:
        return allreduce_staging(mesh, c.bytes, c.elements, system, c.one_row)
    per = max(1, c.bytes // max(1, c.elements))
    return tuple(b for a, z in _pieces(c, matmul, mesh, system)[0]
                 for b in allreduce_staging(mesh, c.rows * (z - a) * per, c.rows * (z - a), system, c.one_row))


def collective_s(c: Collective, system: SystemSpec, spans_groups: bool = False) -> float:
    """A tensor-parallel collective over its group's mesh (partition.mesh: direct exchanges per axis)."""
    return collective_time_s(c.kind, c.bytes, collective_mesh(c, system, spans_groups), system, c.one_row)


def collective_mesh(c: Collective, system: SystemSpec, spans_groups: bool = False) -> DeviceMesh:
    """group_mesh of the collective's group, or where its blocks of consecutive ranks in a stage of several
    nodes straddle a node boundary (a kv head's chips neither dividing a node nor whole nodes), one clique
    whose far members are as far as two chips of the stage's nodes in different nodes can be (the
    structural route: local, global, local within a group), its messages in rounds over the global links,
    as codegen.collectives.subgroup lowers it (there over the wiring's paths)."""
    if not _straddles(c, system):
        return group_mesh(c.group, system, spans_groups)
    node = system.chips_per_node
    far = chip_hops(system, 0, system.chips_per_group if spans_groups else (math.ceil(c.stage / node) - 1) * node)
    return DeviceMesh((Axis("chips", c.group, CLIQUE, LOCAL, 1, far, max(1, system.global_links_per_chip)),))


def _straddles(c: Collective, system: SystemSpec) -> bool:
    """Whether some of the stage's blocks of `group` consecutive ranks must straddle a node boundary: a
    stage of several nodes whose blocks neither divide a node nor are whole nodes."""
    node = system.chips_per_node
    return not (c.stage <= node or c.group in (1, c.stage) or node % c.group == 0 or c.group % node == 0)


def collective_latency_s(c: Collective, system: SystemSpec, spans_groups: bool = False) -> float:
    """The wire latency a collective cannot avoid: a one-shot exchange, each chip's data reaching the
    group's farthest member (one hop inside a node; a node-aligned group's far hops across nodes). Where
    some block of a stage's ranks must straddle two nodes (_straddles), however the ranks are laid out,
    that block's gather takes two hops (local, then global): of its a x b pairs across the two nodes
    (at least two once it has three members) a direct global link joins at most one per chip, and the
    layer waits for its slowest block."""
    wire = collective_wire_s(c.kind, group_mesh(c.group, system, spans_groups), system)
    if _straddles(c, system) and 2 < c.group < system.chips_per_node:
        return max(wire, system.local_link.latency_s + system.global_link.latency_s)
    return wire


def unit_wire_s(collectives: Sequence[Collective], system: SystemSpec, spans_groups: bool = False) -> float:
    """The wire a unit's collectives cannot hide: each one's collective_latency_s in turn, except that a run
    of concurrent ones (Collective.concurrent: issued back to back, none waiting for another) pays only
    its longest."""
    total = run = 0.0
    for c in collectives:
        run = max(run, collective_latency_s(c, system, spans_groups))
        if not c.concurrent:
            total, run = total + run, 0.0
    return total + run


@dataclass(frozen=True, slots=True)
class HandOff:
    """How a stage hands a value to the next, the one rule the plan (hop_s) and the lowering
    (codegen.stage) share: the value is cut into `team` = lanes x slices pieces, and the receivers
    into `teams` teams of `team` consecutive chips (a team inside a node). `sets` sets of `lanes`
    senders serve the teams in turn (team t by set t mod sets); a set's lane l carries pieces
    l*slices .. (l+1)*slices - 1, one message a piece to each of its teams. Receiver j takes piece
    j mod team and all-gathers the rest from its team."""

    lanes: int  # senders a team's pieces come from
    slices: int  # pieces each sender carries
    teams: int  # groups of receivers that each receive every piece once
    sets: int = 1  # disjoint sets of lanes, each serving teams / sets teams

    @property
    def team(self) -> int:
        return self.lanes * self.slices

    @property
    def senders(self) -> int:
        return self.lanes * self.sets

    @property
    def messages(self) -> int:
        """What each sender sends: every one of its pieces to each of its set's teams."""
        return self.slices * self.teams // self.sets

    def rounds(self, links: int) -> int:
        """A sender's messages in turns over `links` links (message k on link k mod links)."""
        return -(-self.messages // max(1, links))



def handoff(sender_tp: int, receiver_tp: int, hops: int, system: SystemSpec) -> HandOff:
    """The hand-off that moves a byte soonest (hop_s per byte; then the fewest messages a sender, the
    fewest senders): teams divide the receivers and stay inside nodes, slices divide a team, sets divide
    the teams, and the senders are at most the sending stage's. A sender stage narrower than a team
    carries several pieces a sender over its several links; one wider than a team serves the teams
    from several sets. Across nodes a sending node's messages at once stay within what its routes to the
    other node carry (_Fabric.lanes: on a dragonfly one), so a node has at most that many senders."""
    return _handoff(sender_tp, receiver_tp, _reach(hops), _Fabric.of(system))


def handoff_trails(sender: tuple[int, int], receiver: tuple[int, int], system: SystemSpec) -> bool:
    """Whether a hand-off from stage (first chip, tp) `sender` to `receiver` trails: its SENDs run on the
    sending chips beside the stage's next chunk, which then starts once they have read the value (the lowering's
    timeline and the plan's recurrence, reach.pipelined). So where the sender lies inside one node and no
    receiver shares it: the SENDs take global links, which the stage's own collectives (inside its node) and
    receives never do."""
    (f0, t0), (f1, t1) = sender, receiver
    node = system.chips_per_node
    mine = f0 // node
    return mine == (f0 + t0 - 1) // node and (f1 // node > mine or (f1 + t1 - 1) // node < mine)


def handoff_links(h: HandOff, hops: int, system: SystemSpec) -> int:
    """The links a sender of `h` spreads its messages over (message m on link m mod this; the plan's rounds
    and the lowering's SENDs): inside a node its local links; across nodes its global links, but no more than
    keep its node's senders, all at once, within what their routes carry (_Fabric.lanes)."""
    return _Fabric.of(system).links(h, _reach(hops))


def _reach(hops: int) -> int:
    """What a hand-off `hops` away crosses, as its time depends on it: 0 one hop, 1 two nodes of a group, 2
    two groups (chip_hops: at most 3 hops within a group)."""
    return 0 if hops <= 1 else 1 if hops <= 3 else 2


@dataclass(frozen=True, slots=True)
class _Fabric:
    """What a hand-off's time depends on, a cheap cache key (hashing a SystemSpec hashes its whole chip,
    and the plan's search asks for hand-offs hundreds of thousands of times)."""

    node: int
    switch: bool
    local_links: int
    global_links: int
    local: LinkSpec
    far: LinkSpec
    node_links: int  # joining two nodes of a group (targets.topology.NodeWires)
    group_links: int  # joining two groups
    group_nodes: int  # nodes of a dragonfly group; 0 on other networks

    @staticmethod
    def of(system: SystemSpec) -> _Fabric:
        wires = node_wires(system)
        return _Fabric(system.chips_per_node, system.local_fabric == "switch", system.local_links_per_chip,
                       system.global_links_per_chip, system.local_link, system.global_link, wires.links,
                       wires.group_links, system.nodes_per_group if system.topology == "dragonfly" else 0)

    def spans_nodes(self, h: HandOff) -> bool:
        """Whether `h`'s team is a whole receiving stage of several nodes (its gather runs over the nodes)."""
        return h.team > self.node

    def gather_nodes(self, h: HandOff, across: bool = False) -> tuple[int, int, int]:
        """A stage-wide team's nodes' level: (nodes, hops to the farthest (chip_hops' 3 in a group, 7 across),
        slice-times of its exchange (partition.mesh.clique_rounds over the links joining its nodes)). `across`:
        the receiving stage lies across two groups, so its nodes' messages take turns on the links joining the
        groups, as the lowering's levels (codegen.stage, NodeWires.of_span) issue them."""
        q = h.team // self.node
        within = q <= self.group_nodes and not across
        return q, 3 if within else 7, clique_rounds(q, self.global_links, self.node,
                                                   self.node_links if within else self.group_links)

    def link(self, reach: int) -> LinkSpec:
        return self.local if reach == 0 else self.far

    def pair(self, reach: int) -> int:
        """The links joining the two nodes a hand-off `reach` away crosses (two groups' at reach 2)."""
        return max(1, self.group_links if reach == 2 else self.node_links)

    def lanes(self, reach: int) -> int:
        """A node's messages to another that may cross at once. On a dragonfly, one: the links joining two
        nodes sit on a few gateway chips of each, and a sender that is none reaches one over a local hop
        (targets.topology.Wiring.routes, the lowest-id gateway), so two senders' messages may share one
        gateway's wire; one sender's messages one after another never overlap on any wire of their routes."""
        return 1 if reach and self.group_nodes else self.pair(reach)

    def links(self, h: HandOff, reach: int) -> int:
        if reach == 0:
            return self.local_links
        return max(1, min(self.global_links, self.lanes(reach) // min(h.senders, self.node)))


@functools.cache
def _handoff(sender_tp: int, receiver_tp: int, reach: int, f: _Fabric) -> HandOff:
    """handoff's choice, once per shape (hops matter only as _reach)."""
    node = f.node
    # across nodes whose links cannot carry a node's senders at once, a team may be the whole receiving stage
    # of whole nodes, served by one sender: the value crosses once, and the stage all-gathers it over its nodes
    whole = (receiver_tp,) if reach and f.group_nodes and f.lanes(reach) < node < receiver_tp and \
        receiver_tp % node == 0 else ()
    options = [HandOff(team // slices, slices, receiver_tp // team, sets)
               for team in (*range(1, min(receiver_tp, node) + 1), *whole)
               if receiver_tp % team == 0 and (receiver_tp <= node or node % team == 0 or team == receiver_tp)
               for slices in range(1, team + 1) if team % slices == 0 and team // slices <= sender_tp
               and (team <= node or slices == team)  # a stage-wide team from one lane (codegen.stage reads)
               for sets in range(1, receiver_tp // team + 1)
               if (receiver_tp // team) % sets == 0 and team // slices * sets <= sender_tp
               and (reach == 0 or min(team // slices * sets, node) <= f.lanes(reach))]
    # ranked in one part: the shape serves every size it carries, and a decode row goes in one (handoff_parts)
    return min(options, key=lambda h: (_per_byte_s(h, reach, f), h.messages, h.senders))


def _in_parts(h: HandOff, reach: int, f: _Fabric) -> bool:
    """Whether `h`'s receivers may take their pieces in parts (handoff_parts, the value large enough)."""
    return bool(reach) and not f.switch and 1 < h.team <= f.node


def handoff_parts(nbytes: int, hops: int, h: HandOff, system: SystemSpec) -> int:
    """In how many parts each message of hand-off `h` of `nbytes` goes (plan and lowering, codegen.stage). Where
    a receiver's piece comes over a global link (another node) and its team gathers on the node's local links
    (direct links, a team inside one node), the team gathers each part while the next arrives, so the receiver
    waits for its whole piece and then one part's gather, not two pieces: as many parts as each stays at least a
    hop's latency on the wire (what a message's first byte waits anyway; shorter parts would cost instructions
    for a gain below it). Else one."""
    f, reach = _Fabric.of(system), _reach(hops)
    if not _in_parts(h, reach, f):
        return 1
    return max(1, int(-(-nbytes // h.team) / f.far.bw_bytes_per_s / f.far.latency_s))


def hop_s(nbytes: int, hops: int, h: HandOff, system: SystemSpec, across: bool = False) -> float:
    """A pipeline hand-off `h`: each sender's messages of one piece `hops` away in rounds over its links,
    then each team's all-gather inside its node (one local message per peer, over its own link; through
    a switch every chip's messages share all its local links). `across`: the receiving stage lies across two
    groups (a stage-wide team's gather over its nodes then crosses the groups' links, _Fabric.gather_nodes)."""
    f, reach = _Fabric.of(system), _reach(hops)
    gather = f.local.latency_s if h.team > 1 else 0.0
    if f.spans_nodes(h):
        gather += f.gather_nodes(h, across)[1] * f.far.latency_s
    parts = handoff_parts(nbytes, hops, h, system)
    return hops * f.link(reach).latency_s + nbytes * _per_byte_s(h, reach, f, parts, across) + gather


def hop_trailing_s(nbytes: int, hops: int, h: HandOff, system: SystemSpec) -> float:
    """What of hop_s a trailing hand-off (handoff_trails) spends beside the sending stage's next chunk, the
    receivers not yet busy: the hops, and every round of the senders' messages but the last, which the
    receivers take (a RECV as long as its message) before they gather."""
    f, reach = _Fabric.of(system), _reach(hops)
    rounds = h.rounds(f.links(h, reach)) if reach else 1
    return hops * f.link(reach).latency_s + (rounds - 1) * nbytes / h.team / f.link(reach).bw_bytes_per_s


def hop_send_s(nbytes: int, hops: int, h: HandOff, system: SystemSpec) -> float:
    """How long a hand-off `h` that does not trail holds its sending stage (codegen.phase.timeline's send piece):
    each sender's messages of one piece on its links in rounds (through a switch, spread over all its local
    links), the part of hop_s on the senders' side."""
    f, reach = _Fabric.of(system), _reach(hops)
    piece = nbytes / h.team
    if f.switch and reach == 0:
        return h.messages * piece / (f.local_links * f.local.bw_bytes_per_s)
    return h.rounds(f.links(h, reach)) * piece / f.link(reach).bw_bytes_per_s


def _per_byte_s(h: HandOff, reach: int, f: _Fabric, k: int = 1, across: bool = False) -> float:
    """Seconds a byte of the value adds to hand-off `h`: the senders' rounds, then the team's gather, each
    message in `k` parts (handoff_parts)."""
    share = 1 / h.team
    if f.switch:  # a chip's messages spread over all its local links (mesh.SWITCH)
        wire = (h.messages * share / (f.local_links * f.local.bw_bytes_per_s) if reach == 0
                else h.rounds(f.links(h, reach)) * share / f.far.bw_bytes_per_s)
        return wire + (h.team - 1) * share / (f.local_links * f.local.bw_bytes_per_s)
    # direct links: a node's messages each go to their own peer; across nodes they take turns on handoff_links
    rounds = 1 if reach == 0 else h.rounds(f.links(h, reach))
    gather = share / f.local.bw_bytes_per_s if h.team > 1 else 0.0
    if f.spans_nodes(h):  # then each node's block of f.node pieces to the other nodes (codegen.collectives)
        gather += f.gather_nodes(h, across)[2] * f.node * share / f.far.bw_bytes_per_s
    piece = share / f.link(reach).bw_bytes_per_s
    # in k parts: the first part's RECV, then each part's gather beside the next one's RECV, then the last's gather
    return (rounds - 1) * piece + (piece + gather) / k + (k - 1) / k * max(piece, gather)
