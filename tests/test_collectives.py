"""Collectives along a stage's mesh: one link per peer on a direct node, the aggregate local bandwidth
through a switch (a GPU node's NVSwitch), as plans cost them."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.codegen.collectives import Collectives, levels
from compiler.codegen.emit import Emitter, Slot
from compiler.codegen.template import Ref, Space, Template
from compiler.frontend.options import CompileOptions
from compiler.partition.cost import collective_mesh, group_mesh, unit_time
from compiler.partition.cost import collective_s as collective_cost_s
from compiler.partition.mesh import (
    allreduce_staging,
    clique_rounds,
    collective_s,
    outer_one_shot,
    reduced_axes,
    turn_slots,
)
from compiler.partition.shard_cost import Collective, shard_cost
from compiler.planner import lower
from targets import load_target
from targets.timing import Timing

H100 = load_target("h100")


def _drain_s(system) -> float:
    return system.chip.op_latency_cycles / system.chip.clock_hz


@settings(max_examples=40, deadline=None)
@given(group=st.integers(2, 8), nbytes=st.integers(1, 1 << 26))
def test_a_switched_node_all_reduces_at_its_aggregate_bandwidth(group, nbytes):
    link = H100.local_link
    aggregate = H100.local_links_per_chip * link.bw_bytes_per_s
    # reduce-scatter and all-gather: each sends its (group - 1) slices of nbytes / group through the switch;
    # or one shot: the whole tensor to each of group - 1 peers, one latency, then the sum's drain before its
    # write (no all-gather's sends to hide it under), whichever is shorter
    tree = 2 * (link.latency_s + (group - 1) * (nbytes / group) / aggregate)
    shot = link.latency_s + (group - 1) * nbytes / aggregate + _drain_s(H100)
    expected = min(tree, shot)
    assert abs(collective_s("allreduce", nbytes, group_mesh(group, H100), H100) - expected) <= 1e-12 * expected


@settings(max_examples=40, deadline=None)
@given(group=st.integers(2, 8), nbytes=st.integers(1, 1 << 26))
def test_a_switch_is_never_slower_than_one_link_per_peer(group, nbytes):
    direct = dataclasses.replace(H100, local_fabric="direct")
    switched = collective_s("allreduce", nbytes, group_mesh(group, H100), H100)
    assert switched <= collective_s("allreduce", nbytes, group_mesh(group, direct), direct)


def test_the_lpu_keeps_one_link_per_peer():
    lpu = load_target("lpu")
    link = lpu.local_link
    # 2 chips: a reduce-scatter and an all-gather would each send a half over the one link between them;
    # one shot sends the same bytes, the whole tensor, in one trip (and drains its sum, shorter than a trip)
    expected = link.latency_s + 2**22 / link.bw_bytes_per_s + _drain_s(lpu)
    assert abs(collective_s("allreduce", 2**22, group_mesh(2, lpu), lpu) - expected) <= 1e-12 * expected


def test_a_target_file_says_its_node_is_switched(tmp_path, capsys):
    path = tmp_path / "h100-direct.toml"
    path.write_text('base = "h100"\nlocal_fabric = "direct"\n')

    def link_us(target: str) -> float:
        assert main(["plan", "llama-3.1-8b", "--target", target, "--chips", "2", "--json"]) == 0
        return json.loads(capsys.readouterr().out)["decode"]["breakdown_us"]["links"]

    assert link_us("h100") < link_us(str(path))


@settings(max_examples=40, deadline=None)
@given(nodes=st.integers(2, 8), nbytes=st.integers(1, 1 << 24), one_row=st.booleans())
def test_nodes_exchange_in_one_shot_where_that_is_shorter(nodes, nbytes, one_row):
    """lpu, 8 chips a node: the node's reduce-scatter and all-gather around the nodes' level, which is a
    reduce-scatter then an all-gather (two trips of the 3 hops local, global, local, slices of 1 / nodes)
    or one exchange of the whole node-reduced slice (one trip, nodes times the bytes), whichever is shorter;
    the nodes' messages go in rounds over the 4 global links, and the 8 a node sends another node in rounds
    over the 2 links joining two nodes of a group (targets.topology.node_wires), which bind: 4 rounds. Or, for
    one row's fewest bytes, the node's level in one shot too (the whole tensor to each of 7 peers, one latency
    instead of two; its last sum's drain then on the path, no all-gather hiding it); a prefill chunk's node
    level keeps its two steps (partition.mesh.may_shoot: its staging would grow with the chunk)."""
    lpu = load_target("lpu")
    link = lpu.local_link
    lat, share, rounds = link.latency_s, nbytes / 8, max(-(-(nodes - 1) // 4), 8 // 2)
    inner = 2 * (lat + share / link.bw_bytes_per_s)  # a slice of nbytes / 8 to each of 7 peers, twice
    tree = 2 * (3 * lat + rounds * share / nodes / link.bw_bytes_per_s)
    shot = 3 * lat + rounds * share / link.bw_bytes_per_s
    drain = lpu.chip.op_latency_cycles / lpu.chip.clock_hz
    both = lat + nbytes / link.bw_bytes_per_s + 3 * lat + rounds * nbytes / link.bw_bytes_per_s + drain
    expected = min(inner + tree, inner + shot, both if one_row else inner + shot)
    got = collective_s("allreduce", nbytes, group_mesh(8 * nodes, lpu), lpu, one_row)
    assert abs(got - expected) <= 1e-9 * expected


def test_two_nodes_always_exchange_in_one_shot_eight_only_small_slices():
    """Two nodes move the same bytes either way, so one trip beats two; eight nodes send whole slices in
    4 rounds (8 a node pair over its 2 links) where a reduce-scatter's take 4 of an eighth of them, which pays
    only while the 3 slice-times more are under the trip it saves: 405B's int8 hidden row (16 KB) shoots, its fp16
    one (32 KB) no longer does."""
    lpu = load_target("lpu")
    assert outer_one_shot(group_mesh(16, lpu), 1 << 24, lpu)
    assert outer_one_shot(group_mesh(64, lpu), 16384, lpu)
    assert not outer_one_shot(group_mesh(64, lpu), 32768, lpu)
    assert not outer_one_shot(group_mesh(64, lpu), 1 << 24, lpu)
    assert not outer_one_shot(group_mesh(8, lpu), 8192, lpu)  # one node: no nodes' level


def test_a_kv_head_block_straddling_nodes_reaches_its_far_member_in_three_hops():
    """mixtral-8x7b int8's 40-chip stages: 5 chips a kv head, every other block across a node boundary. Two
    chips of different nodes in one group are local, global, local apart (targets.topology.chip_hops), so
    the block's clique pays 3 hops, not a node's hop on top (4); the lowering measures the same over the
    wiring, and the interpreter checks each message's arrival against its route."""
    lpu = load_target("lpu")
    mesh = collective_mesh(Collective("allgather", 260, 5, 40), lpu)
    assert [(a.size, a.hops, a.links) for a in mesh.axes] == [(5, 3, 4)]
    link = lpu.local_link
    expected = 3 * link.latency_s + 260 / 5 / link.bw_bytes_per_s  # 4 peers in one round over 4 global links
    assert collective_s("allgather", 260, mesh, lpu) == pytest.approx(expected, rel=1e-9)


def test_a_nodes_chips_shoot_only_small_slices():
    """lpu: 8 chips of a node reach each other over 7 links, so a shot sends 8 times a reduce-scatter's slice
    in one latency instead of two: shorter up to about 2 KB (a decode row's last pieces: 70B's 512-column
    piece is 1 KB), not for a whole 16 KB hidden row; a prefill chunk's rows never (their staging would grow
    with the chunk); 2 chips always shoot."""
    lpu = load_target("lpu")
    assert reduced_axes(group_mesh(8, lpu), 1024, lpu, one_row=True) == 0
    assert reduced_axes(group_mesh(8, lpu), 1024, lpu, one_row=False) == 1
    assert reduced_axes(group_mesh(8, lpu), 16384, lpu, one_row=True) == 1
    assert reduced_axes(group_mesh(2, lpu), 1 << 24, lpu) == 0


@pytest.mark.parametrize("tp, nbytes", [(8, 1024), (8, 16384), (6, 960), (4, 2 << 20), (16, 256), (16, 1 << 20),
                                        (64, 16384), (64, 2048), (24, 4096)])
@pytest.mark.parametrize("one_row", [True, False])
def test_the_plan_counts_the_buffers_an_all_reduce_stages_as_the_lowering_allocates_them(tp, nbytes, one_row):
    """A shot of more than two members, and a nodes' reduce-scatter whose messages take turns, stage the
    members' slices to sum them in one order: the plan's count (partition.mesh.allreduce_staging, which
    shard_cost adds to the activations at the all-reduce) is the lowering's staging buffers, byte for byte."""
    lpu = load_target("lpu")
    mesh = group_mesh(tp, lpu)
    t = Template("ar", Timing.of(lpu))
    slots = {"x": Slot(Ref(Space.PORT_IN, 0), nbytes), "y": Slot(t.local(nbytes), nbytes)}
    outer = mesh.axes[-1]
    lv = levels(tp, lpu.chips_per_node, lpu.global_links_per_chip, lambda q: outer.hops, pair_links=outer.pair_links)
    Collectives(Emitter(t, slots, set(), tp=tp), lv).allreduce("x", "y", nbytes, nbytes // 2, one_row)
    assert tuple(t.local_bytes[1:]) == allreduce_staging(mesh, nbytes, nbytes // 2, lpu, one_row)


def test_the_staging_counts_in_the_activations_at_its_all_reduce():
    """shard_cost adds each all-reduce's staged buffers to what is live at it (and nothing at a gather)."""
    lpu = load_target("lpu")
    _, graphs = lower("tiny-llama", CompileOptions(), None, lpu)
    ops = list(graphs.decode.ops_in("layers.1"))
    bare = shard_cost(ops, 2, alignment=320)
    big = 10**7

    def rule(work, collectives):
        return [(big,) if c.kind == "allreduce" else (big, big) for c in collectives]

    staged = shard_cost(ops, 2, alignment=320, staging_rule=rule)
    assert bare.act_bytes < big < staged.act_bytes <= bare.act_bytes + big + 320


@pytest.mark.parametrize("tp", [4, 8, 16, 24])
def test_all_reduces_in_one_shot_run_as_the_reference(tmp_path, capsys, tp):
    """tiny-llama's layers on 4 and 8 chips of a node and on 2 and 3 nodes of lpu-mini (its rows are small,
    so a decode row goes in one shot at every level: a node's chips and three nodes sum their staged slices in
    member order, two nodes add off the streams; a prefill chunk's node level keeps its two steps); the build
    is hazard-free and decodes the graph IR reference's tokens."""
    fields = {"num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 16, "intermediate_size": 192}
    model = json.loads(Path("examples/models/tiny-llama.json").read_text()) | fields
    (tmp_path / "config.json").write_text(json.dumps(model))
    args = [str(tmp_path / "config.json"), "--target", "lpu-mini", "--context", "24", "--prompt", "16",
            "--prefill-chunk", "8"]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = {k: v for k, v in plan["stages"][0].items() if k != "kv_layout"}
    plan["stages"] = [dict(first, units=["embed", "layers.1"], tp=tp, chip_range=[0, tp - 1]),
                      dict(first, units=["head", "head"], tp=1, chip_range=[tp, tp])]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp_path / "plan.json"), "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    lpu_mini = load_target("lpu-mini")
    assert reduced_axes(group_mesh(tp, lpu_mini), 2 * model["hidden_size"], lpu_mini, one_row=True) == 0
    assert main(["run", str(tmp_path / "b"), "--functional", "--check-reference", "--prompt",
                 "1 7 42 99 3 250 17 8 200 5 9 9 4 3", "--tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []



def test_a_kv_heads_q_k_and_v_gathers_share_their_latency():
    """mixtral-8x7b int8's 40-chip split stages: each kv head's 5 chips gather their q, k and v slices one
    after another (the fused q|k|v matmul before them, passes.fuse), each issued before anything waits for the
    one before, so the plan charges each of the first two only what outlasts the next gather and the work
    between (the Program overlaps them alike); the partials' gather waits for the attention, and the
    all-reduces keep their own rules."""
    lpu = load_target("lpu")
    _, graphs = lower("mixtral-8x7b", CompileOptions(precision="int8"), None, lpu)
    cost = shard_cost(list(graphs.decode.ops_in("layers.1")), 40, split=True, tile=lpu.chip.matrix_dim)
    gathers = [c for c in cost.collectives if c.kind == "allgather"]
    assert [c.concurrent for c in gathers] == [True, True, False, False]
    times = unit_time(cost, lpu, "int8")
    serial = sum(collective_cost_s(c, lpu) for c in cost.collectives)
    hidden = sum(min(collective_cost_s(c, lpu), collective_cost_s(n, lpu))
                 for c, n in zip(gathers[:2], gathers[1:3], strict=True))
    assert all(not c.hides for c in gathers[:2])  # nothing between them now: q, k and v are one matmul's views
    assert hidden > 0.9 * sum(collective_cost_s(c, lpu) for c in gathers[:2])
    assert times.link_s == pytest.approx(serial - hidden, rel=1e-9)


def test_an_attentions_query_gather_and_its_partials_stay_in_turn():
    """llama-3.1-8b int8's 32-chip split stage: the attention gathers its queries, then its partials, which
    wait for the attention and so for the queries; only the k gather runs beside the v gather."""
    lpu = load_target("lpu")
    _, graphs = lower("llama-3.1-8b", CompileOptions(precision="int8"), None, lpu)
    cost = shard_cost(list(graphs.decode.ops_in("layers.1")), 32, split=True, tile=lpu.chip.matrix_dim)
    gathers = [c for c in cost.collectives if c.kind == "allgather"]
    assert [c.concurrent for c in gathers] == [True, False, False, False]


@pytest.mark.parametrize(("nodes", "pair_links"), [(2, 2), (4, 2), (5, 2), (8, 2), (10, 1), (16, 2), (9, 8)])
def test_turned_slots_reach_every_node_once_and_never_send_a_node_more_at_once_than_the_links_joining_them(
        nodes, pair_links):
    """A node's 8 chips, 4 global links each: every chip sends to each other node once, at most one message a link
    in a slot, and a node's messages to another in one slot are no more than the links joining the two, in the
    plan's clique_rounds slots."""
    slots = turn_slots(nodes, 4, 8, pair_links)
    assert len(slots) == clique_rounds(nodes, 4, 8, pair_links)
    for r in range(8):
        assert sorted(row[link][r] for row in slots for link in range(4) if row[link][r]) == list(range(1, nodes))
    for row in slots:
        to = Counter(d for deltas in row for d in deltas if d)
        assert max(to.values(), default=0) <= pair_links
