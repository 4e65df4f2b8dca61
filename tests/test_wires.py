"""Wire occupancy (targets/wires.py): each SEND holds every directed edge of its fastest path, cut-through, for
its bytes over one link; an edge of `links` links carries that many at once, and sharing it costs the rest."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.build import compile_model
from compiler.frontend.options import CompileOptions
from ir.errors import ConfigError
from ir.isa import Op, UnitKind
from ir.program import NAMES, Program, empty_columns
from targets import build_topology, load_target, route
from targets.build_dir import load_build
from targets.hazards import Hazards
from targets.interpreter import execute
from targets.timing import Timing, durations
from targets.topology import Wiring
from targets.wires import _shared_ends, check_link_busy, class_loads, occupancy, shared_delays

MINI = load_target("lpu-mini")  # 8 chips a node, one local link a pair, 9 nodes a group
BYTES = 320


def _messages(chips: int, sends: list[tuple[int, int, int]], wait: int = 1000) -> Program:
    """One SEND of BYTES per (sender, receiver, cycle), each on its own tag, and its RECV `wait` cycles after."""
    cols = empty_columns(2 * len(sends))
    for k, (a, b, cycle) in enumerate(sends):
        for row, op, unit, chip, peer in ((2 * k, Op.SEND, 0, a, b), (2 * k + 1, Op.RECV, 1, b, a)):
            cols["chip"][row], cols["kind"][row], cols["op"][row], cols["unit"][row] = chip, UnitKind.C2C, op, unit
            cols["peer"][row], cols["tag"][row], cols["issue"][row] = peer, k, cycle + wait * (op == Op.RECV)
        cols["src_bytes"][2 * k], cols["dst_bytes"][2 * k + 1] = BYTES, BYTES
    cols["cycles"] = durations(Timing.of(MINI), cols).astype(np.int32)
    return Program.build("decode", "lpu-mini", chips, MINI.chip.clock_hz, cols)


def _hold() -> int:
    return Timing.of(MINI).link(BYTES)


def test_two_messages_on_one_wire_at_once_outnumber_its_link_and_share_it():
    occ = occupancy(_messages(8, [(0, 1, 0), (0, 1, 0)]), MINI)
    edge = occ.edges.index()[0, 1]
    assert occ.edges.links[edge] == 1 and occ.edge.tolist() == [edge, edge]
    assert occ.load.peak[edge] == 2 and occ.load.over_cycles[edge] == _hold()
    assert shared_delays(occ).tolist() == [_hold(), _hold()]  # each at half rate: both end at twice the hold


def test_messages_one_after_another_or_on_other_wires_share_nothing():
    hold = _hold()
    occ = occupancy(_messages(8, [(0, 1, 0), (0, 1, hold), (1, 0, 0), (0, 2, 0)]), MINI)
    assert occ.load.peak.max() == 1 and occ.load.over_cycles.sum() == 0 and not occ.load.crowded.any()
    assert shared_delays(occ).sum() == 0
    assert class_loads(occ)["local"].latest_recv_later_by == 0


def test_a_message_between_nodes_holds_each_hop_of_its_route_cut_through():
    graph = build_topology(MINI, 24)
    a, b = next((a, b) for a in range(8) for b in range(8, 24) if len(route(graph, a, b).path) == 4)
    occ = occupancy(_messages(24, [(a, b, 100)]), MINI)
    path = route(graph, a, b).path
    at, lat = occ.edges.index(), Wiring.of(MINI, 24).cycles(MINI.local_link.latency_s)
    assert occ.edge.tolist() == [at[u, v] for u, v in zip(path, path[1:], strict=False)]
    assert occ.start.tolist() == [100, 100 + lat, 100 + 2 * lat]
    assert (occ.end - occ.start).tolist() == [_hold()] * 3
    assert occ.edges.cls[occ.edge].tolist() == [0, 1, 0]  # local, global within the group, local
    assert occ.arrival[0] == 3 * lat and occ.unrouted == 0


@pytest.mark.parametrize("target, chips", [("lpu-mini", 40), ("lpu-mini", 150), ("h100", 24)])
def test_routes_are_the_routes_the_arrival_rule_times(target, chips):
    system = load_target(target)  # lpu: every hop alike (breadth-first; 150 chips: three groups); h100: NVLink and
    # InfiniBand differ (Dijkstra)
    graph, wiring = build_topology(system, chips), Wiring.of(system, chips)
    pairs = [(a, b) for a in range(0, chips, 3) for b in range(1, chips, 5) if a != b]
    found = wiring.routes(pairs)
    assert all(found[p] == route(graph, *p) for p in pairs)
    assert all(wiring.cycles(found[p].latency_s) <= wiring.arrival_cycles(*p) for p in pairs)


def test_a_later_receive_is_reported_when_sharing_pushes_it():
    tight = _messages(8, [(0, 1, 0), (0, 1, 0)], wait=Wiring.of(MINI, 8).cycles(MINI.local_link.latency_s))
    loads = class_loads(occupancy(tight, MINI))
    assert loads["local"].latest_recv_later_by == _hold() and loads["local"].most_delay == _hold()
    assert loads["global"].hops == 0 and loads["global"].latest_recv_later_by == 0


def test_fair_sharing_of_links():
    assert _shared_ends([0, 0, 0], [30, 30, 30], 2) == [45, 45, 45]  # 3 on 2 links: each at 2/3
    assert _shared_ends([0, 10], [20, 20], 1) == [30, 40]  # alone 10 cycles, shared 20, alone again
    assert _shared_ends([0, 0], [10, 10], 2) == [10, 10]  # enough links: no one waits


def test_a_push_carried_on_reaches_the_receives_that_wait_on_it():
    """Chip 0 sends chip 1 two messages at once; chip 1 forwards one to chip 2 as soon as they are in. Alone, the
    shared wire pushes only the first two RECVs; carried on, chip 1's SEND leaves later and the last RECV too."""
    hold, lat = _hold(), Wiring.of(MINI, 8).cycles(MINI.local_link.latency_s)
    chain = _messages(8, [(0, 1, 0), (0, 1, 0), (1, 2, lat + hold)], wait=lat)
    loads = class_loads(occupancy(chain, MINI))
    assert loads["all"].most_delay == hold and loads["all"].latest_recv_later_by == 0
    assert loads["all"].carried == hold


def test_a_wafer_program_is_refused_in_one_line():
    program = _messages(8, [(0, 1, 0)])
    wafer = Program.build("decode", "wse3", 8, MINI.chip.clock_hz, program.cols, dialect="roles")
    with pytest.raises(ConfigError, match="roles-dialect"):
        occupancy(wafer, MINI)


def _link_busy(program: Program) -> list[str]:
    found = Hazards(program, 10)
    check_link_busy(program, MINI, found)
    return [h.detail for h in found.items if h.kind == "link-busy"]


def test_two_sends_on_one_single_link_wire_at_once_are_link_busy_and_one_after_another_are_not():
    busy = _link_busy(_messages(8, [(0, 1, 0), (0, 1, 0)]))
    assert len(busy) == 2 and all("edge 0->1 (1 link(s)) at cycle 0" in d for d in busy)
    assert _link_busy(_messages(8, [(0, 1, 0), (0, 1, _hold()), (1, 0, 0), (0, 2, 0)])) == []


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("wires") / "b"
    compile_model("tiny-llama", "lpu-mini", CompileOptions(chips=32), out, weights="none")
    return load_build(out)


def test_a_clean_build_passes_link_busy_and_one_with_two_sends_forced_onto_one_wire_does_not(tiny_build):
    """tiny-llama on 32 lpu-mini chips (4 nodes: its all-reduces cross nodes in turned slots) keeps every wire
    within its links, decode and prefill; moving one SEND onto the start of another that crosses the same
    single-link wire from the same chip is flagged, naming that wire."""
    for program in tiny_build.programs.values():
        assert execute(program, tiny_build.system, wires=True).hazards == []
    decode = tiny_build.programs["decode"]
    occ = occupancy(decode, tiny_build.system)
    local = np.flatnonzero((occ.edges.links[occ.edge] == 1) & (occ.start == occ.cols["issue"][occ.message]))
    first, pair = {}, None
    for h in local[np.argsort(occ.start[local], kind="stable")].tolist():  # two first hops, one wire, apart in time
        e = int(occ.edge[h])
        if e in first and occ.start[h] >= occ.end[first[e]]:
            pair = (int(occ.message[first[e]]), int(occ.message[h]), e)
            break
        first.setdefault(e, h)
    assert pair is not None
    a, b, edge = pair
    cols = {**decode.cols, "_inst": decode.origin[1]}
    at = _unrolled_row(decode, occ, b)
    cols["issue"] = cols["issue"].copy()
    cols["issue"][at] = occ.cols["issue"][a]
    mutated = decode.with_instance_rows({n: cols[n] for n in NAMES}, cols["_inst"])
    u, v = occ.edges.ends[edge].tolist()
    busy = [h.detail for h in execute(mutated, tiny_build.system, wires=True).hazards if h.kind == "link-busy"]
    assert busy and all(f"edge {u}->{v} (1 link(s))" in d for d in busy)


def _unrolled_row(program: Program, occ, message: int) -> int:
    """The row of program.cols that message row `message` of the occupancy stands for."""
    row, inst = program.origin
    return int(np.flatnonzero((row == occ.cols["_row"][message]) & (inst == occ.cols["_inst"][message]))[0])


def test_a_handoff_across_nodes_sends_one_message_at_once_and_keeps_its_wires(tmp_path):
    """tiny-llama on 80 lpu-mini chips: a stage on node 8 (group 0) hands off to 7 chips of group 1, which this
    80-chip machine joins to node 8 by one link. Every chip of the node reaches it through the gateway holding
    it, so lanes side by side crowded it (7 messages at once); one lane's messages one after another
    (partition.cost._Fabric.lanes) keep every wire of the decode within its links."""
    compile_model("tiny-llama", "lpu-mini", CompileOptions(chips=80), tmp_path / "b", weights="none")
    build = load_build(tmp_path / "b")
    decode = build.programs["decode"]
    first = [s["first_chip"] for s in decode.meta["stages"]]
    group = build.system.chips_per_group
    assert any(a // group != b // group for a, b in zip(first, first[1:], strict=False))  # a hand-off between groups
    assert _link_busy_on(decode, build.system) == []


def _link_busy_on(program: Program, system) -> list[str]:
    found = Hazards(program, 10)
    check_link_busy(program, system, found)
    return [h.detail for h in found.items if h.kind == "link-busy"]
