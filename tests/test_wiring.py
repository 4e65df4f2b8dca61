"""Chip messages are held to the wired topology: the interpreter's arrival is the fastest path through
build_topology's graph, not the scheduler's closed-form hop count, and the scheduler waits paths too."""

from __future__ import annotations

from collections import Counter

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.codegen.stage import StageBuilder
from ir.contract import Prov
from ir.graph import Value
from ir.isa import Op, UnitKind
from ir.program import Program, empty_columns
from ir.types import DType, TensorType
from targets import build_topology, chip_hops, load_target
from targets.interpreter import execute
from targets.timing import Timing, durations
from targets.topology import NodeWires, Wiring, node_wires

MINI = load_target("lpu-mini")  # 8 chips a node, 9 nodes a group


def _partial_group_pair() -> tuple[int, int, int]:
    """65 chips of lpu-mini leave chip 64 alone in its node: it reaches chip 36 in 4 hops, not the 3 a
    full group guarantees (its node lacks the global links the formula assumes)."""
    chips, a, b = 65, 36, 64
    assert nx.shortest_path_length(build_topology(MINI, chips), a, b) == 4 > chip_hops(MINI, a, b) == 3
    return chips, a, b


def _message(chips: int, a: int, b: int, wait: int) -> Program:
    """Every chip SYNCs at cycle 0; chip a READs 320 bytes and sends them to chip b, which receives
    `wait` cycles after the send starts."""
    timing = Timing.of(MINI)
    cols = empty_columns(chips + 3)
    cols["chip"][:chips] = np.arange(chips)
    cols["kind"][:chips], cols["op"][:chips] = UnitKind.SYNC, Op.SYNC
    read, send, recv = chips, chips + 1, chips + 2
    cols["chip"][[read, send, recv]] = a, a, b
    cols["kind"][read], cols["op"][read], cols["src"][read], cols["src_bytes"][read] = UnitKind.MEM, Op.READ, 0, 320
    cols["s_out"][read], cols["val"][read], cols["prov"][read] = 0, 0, Prov.RESIDENT  # a weight's bytes
    for row, op, unit in (
        (send, Op.SEND, 2 * MINI.local_links_per_chip),
        (recv, Op.RECV, 2 * MINI.local_links_per_chip + 1),
    ):
        cols["kind"][row], cols["op"][row], cols["unit"][row], cols["tag"][row] = UnitKind.C2C, op, unit, 0
    cols["peer"][send], cols["src_bytes"][send], cols["s_a"][send] = b, 320, 0
    cols["peer"][recv], cols["dst_bytes"][recv], cols["s_out"][recv] = a, 320, 0
    cols["cycles"] = durations(timing, cols).astype(np.int32)
    cols["issue"][read] = MINI.sync_cycles
    cols["issue"][send] = MINI.sync_cycles + cols["cycles"][read]
    cols["issue"][recv] = cols["issue"][send] + wait
    return Program.build("decode", "lpu-mini", chips, MINI.chip.clock_hz, cols)


def test_a_receive_timed_by_the_formula_on_a_partly_filled_group_is_flagged():
    chips, a, b = _partial_group_pair()
    hop = Timing.of(MINI).link_latency_cycles
    found = [h for h in execute(_message(chips, a, b, 3 * hop), MINI).hazards if h.kind == "recv-early"]
    sent = MINI.sync_cycles + 1  # the READ of 320 bytes takes a cycle
    assert len(found) == 1 and found[0].chip == b and f"arrives at {sent + 4 * hop}" in found[0].detail
    assert execute(_message(chips, a, b, 4 * hop), MINI).hazards == []


def test_the_scheduler_waits_the_wired_path_of_a_partly_filled_group():
    """A hand-off from chip 36 to chip 64 of 65 waits four hops, the wired path, not the formula's three."""
    chips, a, b = _partial_group_pair()
    builder = StageBuilder(MINI, (), set(), chips)
    value = Value("x", TensorType(DType.F16, (1, 64)))
    send, _ = builder.handoff(value, (a, 1), (b, 1), tag=0)
    sends = [i for i in send.code.template.instrs if i.op is Op.SEND]
    assert sends and {i.peer.hops for i in sends} == {4}


@settings(max_examples=25, deadline=None)
@given(chips=st.integers(2, 200), data=st.data())
def test_arrival_is_the_fastest_wired_path(chips, data):
    """Wiring's arrival equals a shortest path by link latency over the whole graph, for any pair."""
    system = data.draw(st.sampled_from([MINI, load_target("lpu")]))
    wiring = Wiring(system, chips)
    a, b = data.draw(st.integers(0, chips - 1)), data.draw(st.integers(0, chips - 1))
    graph = build_topology(system, chips)
    expected = nx.shortest_path_length(graph, a, b, weight=lambda _u, _v, e: wiring.cycles(e["latency_s"]))
    assert wiring.arrival_cycles(a, b) == expected
    assert wiring.hops(a, b) == nx.shortest_path_length(graph, a, b)


def test_a_peer_no_wire_reaches_is_named():
    with pytest.raises(Exception, match="no wire joins chip 0 to chip 9"):
        Wiring(MINI, 4).hops(0, 9)


@pytest.mark.parametrize("unit", [0, 1, 2 * MINI.local_links_per_chip, 2 * (MINI.local_links_per_chip +
                                                                           MINI.global_links_per_chip) + 1])
def test_a_receive_on_a_unit_of_another_class_or_direction_is_flagged(unit):
    """The SEND leaves chip 0 for chip 9 (another node) on a global link: its RECV must take it on a
    receiving unit (odd) of a global link the chip has."""
    program = _message(10, 0, 9, 2 * Timing.of(MINI).link_latency_cycles)
    assert execute(program, MINI).hazards == []
    cols = {n: a.copy() for n, a in program.cols.items()}
    recv = int(np.flatnonzero(cols["op"] == Op.RECV)[0])
    cols["unit"][recv] = unit
    found = [h for h in execute(program.with_columns(cols), MINI).hazards if h.kind == "link-range"]
    assert len(found) == 1 and found[0].chip == 9 and f"receives on unit {unit}" in found[0].detail


@pytest.mark.parametrize("name", ["lpu-mini", "lpu3"])
def test_node_wires_are_the_links_the_wiring_joins_two_full_nodes_and_two_full_groups_by(name):
    """The plan's rule for the links between two nodes (and two groups) is what build_topology wires at the
    target's full size, the fewest over pairs of full nodes of one group and over pairs of full groups."""
    system = load_target(name)
    node, group, chips = system.chips_per_node, system.chips_per_group, system.max_chips
    nodes, groups = Counter(), Counter()
    for a, b, links in build_topology(system, chips).edges(data="links"):
        if a // node == b // node:
            continue
        if a // group == b // group:
            nodes[a // node, b // node] += links * (b < chips // node * node)
        else:
            groups[a // group, b // group] += links * (b < chips // group * group)
    assert node_wires(system) == NodeWires(min(n for n in nodes.values() if n), min(n for n in groups.values() if n))
