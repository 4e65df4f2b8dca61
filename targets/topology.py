"""Networks of chips as networkx graphs, and deterministic hop counts and routes over them.

A graph's nodes are chip ids 0..chips-1 with attributes `node` and `group`. Each edge joins two
chips and carries `kind` ("local" within a node, "global" leaving it), `links` (physical links
aggregated into the edge), `bw_bytes_per_s` (links x per-link bandwidth, per direction),
`latency_s` (one hop) and `switched` (True when the edge is a path through a switch whose ports
the chip's other edges share, rather than a dedicated wire).

Wiring rules
------------
dragonfly (lpu): chips are numbered node by node and nodes group by group. The chips of a node
are fully connected by local links, `local_links_per_chip // (chips_per_node - 1)` per pair.
Each chip's global ports are split: with several groups, half go to nodes of its own group and
half to other groups (the extra port of an odd count stays inside); with one group, all stay
inside. Within a group, node ports are dealt round-robin over node pairs in lexicographic order,
a node handing out its chips' ports chip by chip (chip 0 port 0, chip 1 port 0, ... then port 1),
until ports run out; between groups the same dealing runs over group pairs, a group handing out
ports node by node first, so links to different groups land on different nodes. Parallel links
between the same two chips merge into one edge. For the full lpu (145 groups of 9 nodes) this
gives 2 links between every two nodes of a group and exactly 1 link between every two groups
(`node_wires`, which the plan and the lowering ask):
72 chips x 2 inter-group ports = 144 = the number of other groups, which is why 10,440 = 145 x 72
is the largest such system. The TSP forwards traffic itself, so chips without a direct link
reach each other through intermediate chips.

Hop bound (`chip_hops`): same node 1 hop; same group at most 3 (local, global, local); different
groups at most 7 (3 + 1 inter-group + 3), that is at most 3 inter-node hops, when the groups are
full (a partly filled last node or group can lack some direct links and need a detour). The ISCA 2022 abstract's "at
most 5 hops" (via the survey note) is not reproduced at the chip level: a group's chip graph
(degree 7 local + 2 global) cannot have diameter 2, so 5 chip hops are impossible under this
port split; Groq probably counts hops differently (e.g. node-level routers) [U]. At 240 ns a hop
the 7-hop worst case is 1.7 us, inside the published "<3 us end to end".

nvlink (h100): the GPUs of a node are all-to-all through NVSwitch; each pair gets one switched
edge carrying all `local_links_per_chip` NVLinks (a lone transfer can use every link through the
non-blocking switch; concurrent transfers from one GPU share them). Between nodes, the fabric is
rail-optimised: GPU k of every node hangs off rail k's leaf switch, modelled as switched edges
joining GPU k of each pair of nodes with the InfiniBand figures. Cross-rail traffic goes over
NVLink to the right rail first (2 hops), as NCCL's PXN does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from itertools import combinations, pairwise
from typing import Any

import networkx as nx
import numpy as np

from ir.errors import ConfigError
from targets.spec import LinkSpec, SystemSpec

# Route weights are integers so equal-latency paths compare exactly: latency in picoseconds,
# scaled, plus _HOP per hop, so that among equally fast paths the one with fewer hops wins, plus one per
# global hop, so that among those the one that leaves a node the fewest times wins (a dragonfly's minimal
# route: local, global, local, never through a third node when the two nodes are wired to each other).
_HOP_WEIGHT_SCALE = 2**20
_HOP = 2**8


@dataclass(frozen=True, slots=True)
class Route:
    """A chosen path between two chips: the chips it visits and its summed hop latency."""

    path: tuple[int, ...]
    latency_s: float

    @property
    def hops(self) -> int:
        return len(self.path) - 1


def build_topology(system: SystemSpec, chips: int) -> nx.Graph:
    """The network of the first `chips` chips of `system`, wired by the rules in this module's docstring."""
    if not 1 <= chips <= system.max_chips:
        raise ConfigError(f"{system.name}: chips must be between 1 and max_chips ({system.max_chips}), got {chips}")
    graph = nx.Graph(system=system.name, topology=system.topology, chips=chips)
    graph.add_nodes_from(
        (c, {"node": c // system.chips_per_node, "group": c // system.chips_per_group}) for c in range(chips)
    )
    WIRING[system.topology](graph, system, chips)
    if not nx.is_connected(graph):
        raise ConfigError(
            f"{system.name}: {chips} chips do not form a connected network "
            "(too few global links for the number of nodes)"
        )
    return graph


def chip_hops(system: SystemSpec, a: int, b: int) -> int:
    """Hops between chips a and b on the structural route the wiring guarantees, without building a graph.

    dragonfly: 1 within a node, 3 within a group (local, global, local), 7 across groups; an upper
    bound on `hops` over `build_topology` whenever the nodes and groups involved are full (a partly
    filled node or group may lack some direct links and need a detour), and reached by most pairs.
    nvlink: exact; 1 within a node or along a rail, else 2.
    """
    for chip in (a, b):
        if not 0 <= chip < system.max_chips:
            raise ConfigError(f"{system.name}: no chip {chip} (chips are 0..{system.max_chips - 1})")
    node_a, node_b = a // system.chips_per_node, b // system.chips_per_node
    if a == b:
        return 0
    if node_a == node_b:
        return 1
    if system.topology == "nvlink":
        return 1 if a % system.chips_per_node == b % system.chips_per_node else 2
    return 3 if node_a // system.nodes_per_group == node_b // system.nodes_per_group else 7


@dataclass(frozen=True, slots=True)
class NodeWires:
    """The links that join two nodes, the one rule the plan's cost and the lowering share: whatever the
    routes, the messages a node sends another at once take turns on the links joining the two (ceil of
    messages over links slice-times, a lower bound: a route may funnel them onto fewer). `links` joins two
    nodes of one group, `group_links` two groups (every message between their nodes crosses them)."""

    links: int
    group_links: int  # 0: one group

    def of_span(self, system: SystemSpec, first_chip: int, chips: int) -> int:
        """The links joining the two nodes farthest apart among `chips` chips from `first_chip`: two groups'
        when the chips span groups, else two nodes'."""
        last = first_chip + chips - 1
        return self.group_links if first_chip // system.chips_per_group != last // system.chips_per_group \
            else self.links


def node_wires(system: SystemSpec) -> NodeWires:
    """`NodeWires` of `system` wired at its full size, `max_chips` (what the plan prices before it knows its
    span: a machine of one group joins its nodes by more links, so there the figures are upper bounds), the
    fewest over pairs of full nodes (dragonfly: _wire_dragonfly's dealing; nvlink: a rail a chip)."""
    key = (system.topology, system.chips_per_node, system.nodes_per_group, system.global_links_per_chip,
           system.max_chips)
    if key not in _NODE_WIRES:  # keyed by the fields it reads: hashing a SystemSpec hashes its whole chip
        _NODE_WIRES[key] = _node_wires(system)
    return _NODE_WIRES[key]


_NODE_WIRES: dict[tuple, NodeWires] = {}


def _node_wires(system: SystemSpec) -> NodeWires:
    ports, node, group, chips = (system.global_links_per_chip, system.chips_per_node, system.chips_per_group,
                                 system.max_chips)
    if system.topology != "dragonfly":
        return NodeWires(node * ports, node * ports)
    nodes, groups = _count_nodes_groups(system, chips)
    intra, inter = _split_global_ports(system, groups)
    inside = _deal_round_robin([[c for _ in range(intra) for c in _chips_of_node(system, n, chips)]
                                for n in _nodes_of_group(system, 0, nodes)])  # the first group, the fullest
    between = _deal_round_robin([_group_ports(system, g, inter, nodes, chips) for g in range(groups)])
    full_nodes, full_groups = chips // node, chips // group
    return NodeWires(min((n for (a, b), n in _joining(inside, node).items() if b < full_nodes), default=0),
                     min((n for (a, b), n in _joining(between, group).items() if b < full_groups), default=0))


def _joining(links: Counter[tuple[int, int]], size: int) -> Counter[tuple[int, int]]:
    """Links per chip pair summed per pair of blocks of `size` consecutive chips (nodes or groups)."""
    out: Counter[tuple[int, int]] = Counter()
    for (a, b), n in links.items():
        out[a // size, b // size] += n
    return out


def hops(topology: nx.Graph, a: int, b: int) -> int:
    """The fewest chip-to-chip hops from chip a to chip b (bidirectional BFS; no all-pairs search)."""
    _check_chips(topology, a, b)
    if a == b:
        return 0
    if topology.has_edge(a, b):
        return 1
    return nx.shortest_path_length(topology, a, b)


def route(topology: nx.Graph, a: int, b: int) -> Route:
    """The fastest path from a to b; ties go to fewer hops, then to fewer global hops, then to the lowest chip id
    at each step."""
    _check_chips(topology, a, b)
    if a == b:
        return Route((a,), 0.0)
    best, _ = nx.bidirectional_dijkstra(topology, a, b, weight=_weight)
    return _walk(topology, a, b, nx.single_source_dijkstra_path_length(topology, b, cutoff=best, weight=_weight))


def _neighbours(ptr: np.ndarray, nbr: np.ndarray, owner: np.ndarray, chips: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every (owner, neighbour, wire) of each (owner, chip): the chip's neighbours in ascending order, and each
    one's index into `nbr` (the directed wire's place in the compressed rows)."""
    degree = ptr[chips + 1] - ptr[chips]
    first = np.repeat(ptr[chips] - np.cumsum(degree) + degree, degree)
    wire = first + np.arange(int(degree.sum()))
    return np.repeat(owner, degree), nbr[wire], wire


def _walk(topology: nx.Graph, a: int, b: int, to_b: dict[int, int]) -> Route:
    """The fastest path from a to b given every chip's route weight to b: at each step the lowest chip id
    among the neighbours on a fastest path."""
    path = [a]
    while path[-1] != b:
        here = path[-1]
        path.append(
            min(v for v, edge in topology[here].items() if v in to_b and to_b[here] == _weight(here, v, edge) + to_b[v])
        )
    return Route(tuple(path), sum(topology[u][v]["latency_s"] for u, v in pairwise(path)))


class Wiring:
    """The wired network of a Program's chips (`build_topology`), and the cycles a message takes from
    one chip to another over its fastest path, each hop its link's latency: what the interpreter
    holds a RECV to. Shortest paths are computed once per source, and only when the two chips are not
    joined by a link that no detour can beat (one no slower than two hops of the fastest link)."""

    _cache: dict[tuple[int, int], tuple[SystemSpec, Wiring]] = {}

    @classmethod
    def of(cls, system: SystemSpec, chips: int) -> Wiring:
        """The wiring of `chips` chips of `system`, built once (the interpreter asks per universe of messages)."""
        key = (id(system), chips)
        hit = cls._cache.get(key)
        if hit is None or hit[0] is not system:
            if len(cls._cache) >= 8:
                cls._cache.pop(next(iter(cls._cache)))
            hit = cls._cache[key] = (system, cls(system, chips))
        return hit[1]

    def __init__(self, system: SystemSpec, chips: int):
        self.graph = build_topology(system, max(1, chips))
        self.clock_hz = system.chip.clock_hz
        latencies = [lat for *_, lat in self.graph.edges(data="latency_s")]
        self._fastest = min(latencies, default=0.0)
        for _u, _v, edge in self.graph.edges(data=True):  # integer weights: Dijkstra without a Python callback
            edge["cycles"] = self.cycles(edge["latency_s"])
        self._uniform = len({e for *_, e in self.graph.edges(data="cycles")}) <= 1
        weights = {_weight(u, v, e) for u, v, e in self.graph.edges(data=True)}
        self._lightest, self._one_latency = min(weights, default=0), len(set(latencies)) <= 1
        self._from: dict[tuple[int, int], int | None] = {}
        self._hops: dict[int, dict[int, int]] = {}

    def hops(self, a: int, b: int) -> int:
        """The fewest hops from a to b over the wires (what a scheduler waits, at the slower link's latency a
        hop, covers the fastest path: it is never longer in latency than the fewest-hop one)."""
        if a == b:
            return 0
        if self.graph.has_edge(a, b):
            return 1
        if a not in self._hops:
            self._hops[a] = nx.single_source_shortest_path_length(self.graph, a)
        if b not in self._hops[a]:
            raise ConfigError(f"no wire joins chip {a} to chip {b} of {self.graph.number_of_nodes()}")
        return self._hops[a][b]

    def routes(self, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], Route]:
        """`route` for each (a, b) pair of distinct chips: a wire lighter than any two hops is the fastest
        path itself; the others are walked over every chip's distance to their destination (`_walked`
        when every hop is equally fast, else one Dijkstra search a destination). A pair no wire joins is
        left out."""
        out, far = {}, []
        for a, b in pairs:
            edge = self.graph.get_edge_data(a, b)
            if edge is not None and _weight(a, b, edge) < 2 * self._lightest:
                out[a, b] = Route((a, b), edge["latency_s"])
            else:
                far.append((a, b))
        if self._one_latency:
            paths = self._walked(far)
        else:
            to = {b: nx.single_source_dijkstra_path_length(self.graph, b, weight=_weight) for b in {b for _, b in far}}
            paths = {(a, b): _walk(self.graph, a, b, to[b]).path for a, b in far if a in to[b]}
        g = self.graph
        out.update((pair, Route(path, sum(g[u][v]["latency_s"] for u, v in pairwise(path))))
                   for pair, path in paths.items())
        return out

    def _walked(self, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[int, ...]]:
        """`route`'s paths where every hop is equally fast, all pairs at once: breadth-first hop counts to every
        destination (each as far as its farthest source) with the fewest global hops among those shortest
        paths, then each path steps to the lowest-numbered neighbour one hop nearer its destination on such
        a path, as `_walk` does."""
        if not pairs:
            return {}
        ptr, nbr, far = self._adjacency
        src, dst = (np.array(x, np.int64) for x in zip(*pairs, strict=True))
        dests, row = np.unique(dst, return_inverse=True)
        dist = np.full((len(dests), len(ptr) - 1), -1, np.int64)
        glob = np.full_like(dist, np.iinfo(np.int64).max // 2)  # global hops to the destination, fewest
        mark = np.empty_like(dist)
        at = np.arange(len(dests))
        dist[at, dests] = glob[at, dests] = 0
        fi, fv, depth = at, dests, 0
        while len(fi):
            waiting = np.bincount(row[dist[row, src] < 0], minlength=len(dests)) > 0
            fi, fv = fi[waiting[fi]], fv[waiting[fi]]  # a destination whose sources are all reached stops
            depth += 1
            k, v, wire = _neighbours(ptr, nbr, np.arange(len(fi)), fv)
            i, u = fi[k], fv[k]
            fresh = dist[i, v] < 0
            i, u, v, wire = i[fresh], u[fresh], v[fresh], wire[fresh]
            np.minimum.at(glob, (i, v), glob[i, u] + far[wire])
            mark[i, v] = np.arange(len(i))  # one of the entries reaching a chip keeps it in the next frontier
            once = mark[i, v] == np.arange(len(i))
            fi, fv = i[once], v[once]
            dist[fi, fv] = depth
        reached = dist[row, src] >= 0
        steps = np.full((len(pairs), int(dist[row, src].max(initial=0)) + 1), -1, np.int64)
        steps[:, 0] = here = src.copy()
        for k in range(1, steps.shape[1]):
            going = np.flatnonzero(reached & (here != dst))
            owner, v, wire = _neighbours(ptr, nbr, going, here[going])  # neighbours ascending: the first is lowest
            d, h = row[owner], here[owner]
            nearer = (dist[d, v] == dist[d, h] - 1) & (glob[d, v] + far[wire] == glob[d, h])
            owner, v = owner[nearer], v[nearer]
            first = np.r_[True, owner[1:] != owner[:-1]] if len(owner) else np.zeros(0, bool)
            here[owner[first]] = steps[owner[first], k] = v[first]
        return {(a, b): tuple(int(c) for c in path if c >= 0) for (a, b), path, ok in
                zip(pairs, steps.tolist(), reached.tolist(), strict=True) if ok}

    @cached_property
    def _adjacency(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The graph as compressed rows: chip c's neighbours, ascending, are nbr[ptr[c]:ptr[c + 1]]; `far`: 1
        where that wire is global."""
        g = self.graph
        rows = [sorted(g[c]) for c in range(g.number_of_nodes())]
        ptr = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64)
        far = [int(g[c][v]["kind"] == "global") for c, r in enumerate(rows) for v in r]
        return ptr, np.array([v for r in rows for v in r], np.int64), np.array(far, np.int64)

    def cycles(self, latency_s: float) -> int:
        """One hop's latency in cycles, rounded as targets/timing.py's link classes round it."""
        return max(1, round(latency_s * self.clock_hz))

    def arrival_cycles(self, a: int, b: int) -> int | None:
        """Cycles from a's send until its data can be at b; None when no wire joins them."""
        if a == b:
            return 0
        edge = self.graph.get_edge_data(a, b)
        if edge is not None and edge["latency_s"] <= 2 * self._fastest:
            return self.cycles(edge["latency_s"])
        key = (a, b)
        if key not in self._from:  # a search from both ends meets after a few hops on these networks
            try:
                if self._uniform:  # every hop costs the same: the fewest hops are the fastest path
                    self._from[key] = (len(nx.bidirectional_shortest_path(self.graph, a, b)) - 1) * \
                        self.cycles(self._fastest)
                else:
                    self._from[key] = nx.bidirectional_dijkstra(self.graph, a, b, weight="cycles")[0]
            except (nx.NetworkXNoPath, nx.NodeNotFound):
                self._from[key] = None
        return self._from[key]


def _weight(_u: int, _v: int, edge: dict[str, Any]) -> int:
    return round(edge["latency_s"] * 1e12) * _HOP_WEIGHT_SCALE + _HOP + (edge["kind"] == "global")


def _check_chips(topology: nx.Graph, *chips: int) -> None:
    for chip in chips:
        if chip not in topology:
            raise ConfigError(
                f"{topology.graph.get('system', 'topology')}: no chip {chip} "
                f"(chips are 0..{topology.number_of_nodes() - 1})"
            )


# ---------------------------------------------------------------- dragonfly


def _wire_dragonfly(graph: nx.Graph, system: SystemSpec, chips: int) -> None:
    per_pair = system.local_links_per_chip // (system.chips_per_node - 1) if system.chips_per_node > 1 else 0
    _add_local_mesh(graph, system, chips, per_pair, switched=False)
    nodes, groups = _count_nodes_groups(system, chips)
    intra, inter = _split_global_ports(system, groups)
    for group in range(groups):
        members = _nodes_of_group(system, group, nodes)
        ports = [[c for _ in range(intra) for c in _chips_of_node(system, n, chips)] for n in members]
        _add_links(graph, _deal_round_robin(ports), system.global_link, switched=False)
    ports = [_group_ports(system, g, inter, nodes, chips) for g in range(groups)]
    _add_links(graph, _deal_round_robin(ports), system.global_link, switched=False)


def _split_global_ports(system: SystemSpec, groups: int) -> tuple[int, int]:
    """(ports to nodes of the same group, ports to other groups) per chip."""
    ports = system.global_links_per_chip
    if groups == 1:
        return ports, 0
    if system.nodes_per_group == 1:
        return 0, ports
    return ports - ports // 2, ports // 2


def _group_ports(system: SystemSpec, group: int, ports_per_chip: int, nodes: int, chips: int) -> list[int]:
    members = _nodes_of_group(system, group, nodes)
    out = []
    for _port in range(ports_per_chip):
        for index in range(system.chips_per_node):
            out += [c for n in members if (c := n * system.chips_per_node + index) < chips]
    return out


def _deal_round_robin(ports: list[list[int]]) -> Counter[tuple[int, int]]:
    """Deal each member's ports, in order, to member pairs taken round-robin; count links per chip pair."""
    taken = [0] * len(ports)
    links: Counter[tuple[int, int]] = Counter()
    pairs = list(combinations(range(len(ports)), 2))
    dealt = True
    while dealt:
        dealt = False
        for i, j in pairs:
            if taken[i] < len(ports[i]) and taken[j] < len(ports[j]):
                a, b = ports[i][taken[i]], ports[j][taken[j]]
                links[min(a, b), max(a, b)] += 1
                taken[i] += 1
                taken[j] += 1
                dealt = True
    return links


# ---------------------------------------------------------------- nvlink


def _wire_nvlink(graph: nx.Graph, system: SystemSpec, chips: int) -> None:
    _add_local_mesh(graph, system, chips, system.local_links_per_chip, switched=True)
    nodes, _ = _count_nodes_groups(system, chips)
    for rail in range(system.chips_per_node):
        members = [c for n in range(nodes) if (c := n * system.chips_per_node + rail) < chips]
        links = Counter({pair: system.global_links_per_chip for pair in combinations(members, 2)})
        _add_links(graph, links, system.global_link, switched=True)


# ---------------------------------------------------------------- shared


def _add_local_mesh(graph: nx.Graph, system: SystemSpec, chips: int, per_pair: int, switched: bool) -> None:
    nodes, _ = _count_nodes_groups(system, chips)
    link = system.local_link
    attrs = {
        "kind": "local",
        "links": per_pair,
        "bw_bytes_per_s": per_pair * link.bw_bytes_per_s,
        "latency_s": link.latency_s,
        "switched": switched,
    }
    for node in range(nodes):
        graph.add_edges_from(combinations(_chips_of_node(system, node, chips), 2), **attrs)


def _add_links(graph: nx.Graph, links: Counter[tuple[int, int]], link: LinkSpec, switched: bool) -> None:
    graph.add_edges_from(
        (
            a,
            b,
            {
                "kind": "global",
                "links": n,
                "bw_bytes_per_s": n * link.bw_bytes_per_s,
                "latency_s": link.latency_s,
                "switched": switched,
            },
        )
        for (a, b), n in links.items()
    )


def _count_nodes_groups(system: SystemSpec, chips: int) -> tuple[int, int]:
    nodes = math.ceil(chips / system.chips_per_node)
    return nodes, math.ceil(nodes / system.nodes_per_group)


def _nodes_of_group(system: SystemSpec, group: int, nodes: int) -> range:
    return range(group * system.nodes_per_group, min(nodes, (group + 1) * system.nodes_per_group))


def _chips_of_node(system: SystemSpec, node: int, chips: int) -> range:
    return range(node * system.chips_per_node, min(chips, (node + 1) * system.chips_per_node))


WIRING: dict[str, Callable[[nx.Graph, SystemSpec, int], None]] = {
    "dragonfly": _wire_dragonfly,
    "nvlink": _wire_nvlink,
}
