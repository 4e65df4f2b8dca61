"""Pipeline hand-offs (compiler.partition.cost.handoff): one rule for the plan's hop_s and the lowering's
messages, so a stage narrower than its successor's team sends several pieces over several links; the
Programs stay hazard-free and compute what the graph IR reference does on stages of different widths."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.codegen.stage import StageBuilder
from compiler.partition import cost
from compiler.partition.cost import HandOff, handoff, handoff_links, handoff_parts, hop_s, hop_trailing_s
from ir.graph import Value
from ir.isa import Op
from ir.types import DType, TensorType
from targets import chip_hops, load_target
from targets.topology import node_wires

LPU = load_target("lpu")
MINI = load_target("lpu-mini")


def _single_piece_lanes(t0: int, t1: int, node: int, cap: int | None = None) -> HandOff:
    """The rule before pieces: L lanes (L <= both groups and a node, dividing the receivers), one piece each;
    at most `cap` (across nodes: what the node's routes to the other carry at once, cost._Fabric.lanes)."""
    lanes = max(n for n in range(1, min(t0, t1, node, cap or node) + 1)
                if t1 % n == 0 and (t1 <= node or node % n == 0))
    return HandOff(lanes, 1, t1 // lanes)


@settings(max_examples=200, deadline=None)
@given(t0=st.integers(1, 40), t1=st.integers(1, 40), hops=st.sampled_from([1, 3, 7]),
       system=st.sampled_from([LPU, load_target("h100"), load_target("lpu3")]))
def test_a_handoff_covers_every_receiver_and_is_never_slower_than_single_pieces(t0, t1, hops, system):
    """Each message in one part (the shape is ranked so: parts depend on the value's size, cost.handoff_parts)."""
    h = handoff(t0, t1, hops, system)
    node = system.chips_per_node
    assert h.team * h.teams == t1 and h.senders <= t0 and h.teams % h.sets == 0
    # a team never straddles nodes, unless it is the whole receiving stage of whole nodes across nodes
    assert t1 <= node or node % h.team == 0 or (hops > 1 and h.team == t1 and t1 % node == 0)
    n = 262_144
    wires = node_wires(system)
    # a dragonfly's senders reach the links joining two nodes through its gateways: one at once (_Fabric.lanes)
    cap = None if hops <= 1 else 1 if system.topology == "dragonfly" else wires.links if hops <= 3 else \
        wires.group_links
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cost, "handoff_parts", lambda *_: 1)
        single = hop_s(n, hops, _single_piece_lanes(t0, t1, node, cap), system)
        assert hop_s(n, hops, h, system) <= single * (1 + 1e-12)


@pytest.mark.parametrize(("t0", "t1", "hops"), [(5, 8, 3), (8, 8, 3), (8, 6, 3), (1, 8, 3), (3, 4, 1), (2, 6, 1),
                                                (8, 16, 3), (16, 8, 3), (4, 24, 3),
                                                (16, 16, 3), (12, 24, 3), (64, 64, 7)])
def test_the_plan_times_the_messages_the_lowering_emits(t0, t1, hops):
    """For sender and receiver groups of several widths, placed `hops` apart: each sender's SENDs, counted
    per link, are the plan's rounds of one piece, and across nodes a sending node never has more messages at
    once than the links joining two nodes; each receiver gathers its team's other pieces; the sum of the
    wire's cycles is the plan's hop_s."""
    node = LPU.chips_per_node
    f0 = 0
    f1 = t0 if hops == 1 else math.ceil(t0 / node) * node + node  # beside it, or from the next node but one
    chips = f1 + t1
    assert chip_hops(LPU, f0 + t0 - 1, f1) == hops
    value = Value("x", TensorType(DType.F16, (16, 8192)))  # a 16-token chunk of a 70B layer's output
    send, recv = StageBuilder(LPU, (), set(), chips).handoff(value, (f0, t0), (f1, t1), tag=0)
    h = handoff(t0, t1, hops, LPU)
    piece = -(-value.type.nbytes // h.team)
    k = handoff_parts(value.type.nbytes, hops, h, LPU)  # each message in k parts across nodes, each >= a latency
    link, local = (LPU.local_link if hops <= 1 else LPU.global_link), LPU.local_link
    assert k == (max(1, int(piece / link.bw_bytes_per_s / link.latency_s)) if hops > 1 and 1 < h.team <= node else 1)
    parts = {piece // k, -(-piece // k)}
    sends = [i for i in send.code.template.instrs if i.op is Op.SEND]
    per_link = Counter(i.unit for i in sends)
    assert send.ranks == h.senders and len(sends) == h.messages * k and {i.src_bytes for i in sends} <= parts
    assert max(per_link.values()) == h.rounds(handoff_links(h, hops, LPU)) * k
    if hops > 1:  # a sending node's messages at once fit the links joining two nodes: 2 in a group, 1 across
        assert min(h.senders, node) * len(per_link) <= (2 if hops == 3 else 1)
    gathered = [i for i in recv.code.template.instrs if i.op is Op.RECV]
    rounds = 1 if hops <= 1 else max(per_link.values()) // k  # inside a node each message has its peer's own link
    wire = hops * link.latency_s + rounds * piece / link.bw_bytes_per_s
    gather = local.latency_s + piece / local.bw_bytes_per_s if h.team > 1 else 0.0
    if k > 1:  # the team gathers each part while the next arrives: of the last RECV and the gather, one part each
        wire -= piece / link.bw_bytes_per_s * (k - 1) / k  # waits, and the rest of both runs together
        gather += max(piece / link.bw_bytes_per_s, piece / local.bw_bytes_per_s) * (k - 1) / k \
            - piece / local.bw_bytes_per_s * (k - 1) / k
    if h.team > node:  # the whole stage's team: its node's pieces, then each node's block to the other nodes
        q, block = h.team // node, piece * node
        # the nodes' level in slots of turned peers (partition.mesh.turn_slots), q - 1 of which run on each rank
        assert Counter(i.dst_bytes for i in gathered)[piece] == node
        blocks = [i for i in gathered if i.dst_bytes == block]
        assert all(sum(i.peer.turns[r] != 0 for i in blocks) == q - 1 for r in range(node))
        block_units = Counter(i.unit for i in recv.code.template.instrs if i.op is Op.SEND and i.src_bytes == block)
        # the block's rounds over a chip's global links, or a node's 8 blocks to another over the 2 joining them
        turns = max(max(block_units.values()), -(-node // 2))
        gather += 3 * link.latency_s + turns * block / link.bw_bytes_per_s
    else:
        assert len(gathered) == h.team * k and {i.dst_bytes for i in gathered} <= parts
    assert hop_s(value.type.nbytes, hops, h, LPU) == pytest.approx(wire + gather, rel=1e-4)


def test_a_narrower_sender_uses_its_links_for_the_whole_team():
    """70B int8's embedding on 5 chips hands off to layers on 8 in the next node: a node's messages to another
    cross one at a time (a second sender would reach the 2 links joining the nodes through the first's gateway,
    cost._Fabric.lanes), so one lane of eight pieces reaches all 8 receivers in 8 rounds of an eighth, as fast
    as an 8-chip sender (held to the same lane), where a single-piece lane took 8 rounds of the whole."""
    h = handoff(5, 8, 3, LPU)
    assert (h.team, h.lanes, handoff_links(h, 3, LPU)) == (8, 1, 1)
    n = 262_144
    assert hop_s(n, 3, h, LPU) == pytest.approx(hop_s(n, 3, handoff(8, 8, 3, LPU), LPU))
    assert hop_s(n, 3, h, LPU) < hop_s(n, 3, _single_piece_lanes(5, 8, 8, 1), LPU)


def _staged(capsys, tmp: Path, stages: list[tuple[str, str, int, int]], sizes: tuple[int, int, int] = (64, 16, 8),
            **config) -> Path:
    """tiny-llama with 16 heads on lpu-mini (and `config`'s fields) compiled from a plan of `stages` (first unit,
    last unit, tp, first chip), at `sizes` (context, prompt, prefill chunk)."""
    cfg = json.loads(Path("examples/models/tiny-llama.json").read_text())
    (tmp / "config.json").write_text(json.dumps(cfg | {"num_attention_heads": 16, "num_key_value_heads": 8,
                                                       "head_dim": 16} | config))
    context, prompt, chunk = sizes
    args = [str(tmp / "config.json"), "--target", "lpu-mini", "--context", str(context), "--prompt", str(prompt),
            "--prefill-chunk", str(chunk)]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first = {k: v for k, v in plan["stages"][0].items() if k not in ("kv_layout", "experts")}
    plan["stages"] = [dict(first, units=[a, b], tp=tp, chip_range=[c, c + tp - 1]) for a, b, tp, c in stages]
    plan.pop("layer_units", None)  # the stages given hold whole layers
    (tmp / "plan.json").write_text(json.dumps(plan))
    assert main(["compile", *args, "--plan", str(tmp / "plan.json"), "-o", str(tmp / "b")]) == 0
    capsys.readouterr()
    return tmp / "b"


@pytest.mark.parametrize("stages", [
    [("embed", "layers.1", 3, 0), ("head", "head", 4, 3)],  # 2 lanes of 2 pieces, inside a node
    [("embed", "layers.0", 2, 0), ("layers.1", "layers.1", 5, 8), ("head", "head", 4, 16)],  # 1 lane of 5, then 4 of 5
    [("embed", "embed", 1, 0), ("layers.0", "layers.1", 8, 8), ("head", "head", 2, 16)],  # 8 pieces from one lane
    # in two rounds on the global links, then a team of 2
    [("embed", "layers.1", 3, 0), ("head", "head", 16, 8)],  # 2 lanes of 4 pieces to 2 teams of 8
    [("embed", "layers.1", 16, 0), ("head", "head", 16, 16)],  # 2 sets of 8 lanes, one team each
])
def test_stages_of_different_widths_run_as_the_reference(tmp_path, capsys, stages):
    build = _staged(capsys, tmp_path, stages)
    for prompt in ("1 7 42 99 3 250 17 8 200 5", "9 9 9 1"):
        assert main(["run", str(build), "--functional", "--check-reference", "--prompt", prompt, "--tokens", "3",
                     "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["reference"]["passed"] and out["hazards"] == []
    assert main(["run", str(build), "--check-determinism", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []


def test_a_handoff_to_a_stage_of_several_nodes_crosses_once_and_gathers_over_its_nodes(tmp_path, capsys):
    """A node's messages to another cross one at a time (cost._Fabric.lanes), so 8 chips hand the whole stage of
    32 after them the value as one team (one lane of 32 pieces, one after another), which then all-gathers over
    its 4 nodes: a quarter of the bytes 4 node teams would take across. The Program runs as the reference."""
    h = handoff(8, 32, 3, MINI)
    assert (h.team, h.lanes, h.teams, handoff_links(h, 3, MINI)) == (32, 1, 1, 1)
    build = _staged(capsys, tmp_path, [("embed", "layers.1", 8, 0), ("head", "head", 32, 8)])
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", "1 7 42 99 3", "--tokens", "3",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []


def test_a_lone_lane_serving_more_chips_than_it_has_streams_reads_its_pieces_as_it_sends_them(tmp_path, capsys):
    """16 chips hand a 128-chip stage a 1024-wide value as one team: one lane of 128 pieces of 16 bytes, twice the
    chip's 64 streams, each piece's stream live until its SEND ends. The lane reads at most 32 pieces ahead of
    their SENDs (read all at once, DeepSeek-V3's expert stages had kept 98 streams live and not compiled)."""
    assert handoff(16, 128, 3, MINI).team == 128
    build = _staged(capsys, tmp_path, [("embed", "layers.0", 16, 0), ("layers.1", "layers.1", 16, 16),
                                       ("head", "head", 128, 32)], hidden_size=1024)
    assert main(["run", str(build), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []


def test_a_receiving_team_gathers_each_part_while_the_next_arrives():
    """A 70B chunk from 8 chips to 8 in the next node: 32 KiB a receiver, 2.5 us on a global link, in parts of at
    least a hop's latency (10). The receiving template's schedule is the plan's receiving part of hop_s (the
    last RECV and the gather, about a piece and a part, not two pieces), and shorter than in one part."""
    value = Value("x", TensorType(DType.F16, (16, 8192)))
    h = handoff(8, 8, 3, LPU)
    k = handoff_parts(value.type.nbytes, 3, h, LPU)
    assert k == 10

    def receive_cycles() -> int:
        _, recv = StageBuilder(LPU, (), set(), 32).handoff(value, (8, 8), (16, 8), tag=0)
        return max(i.end for i in recv.code.template.instrs)

    plan = (hop_s(value.type.nbytes, 3, h, LPU) - hop_trailing_s(value.type.nbytes, 3, h, LPU)) * LPU.chip.clock_hz
    assert receive_cycles() == pytest.approx(plan, rel=0.01)
    whole = 2 * value.type.nbytes / h.team / LPU.global_link.bw_bytes_per_s * LPU.chip.clock_hz
    assert receive_cycles() < 0.6 * whole


def test_a_handoff_in_parts_runs_as_the_reference(tmp_path, capsys):
    """Hidden 1024: stages of 4 chips, each in a node of its own, hand a prefill chunk on in parts (16 rows: 8 KiB a
    receiver, 2 parts), a decode row in one. The Program is hazard-free and computes what the reference does."""
    stages = [("embed", "embed", 4, 0), ("layers.0", "layers.0", 4, 8), ("layers.1", "layers.1", 4, 16),
              ("head", "head", 4, 24)]
    build = _staged(capsys, tmp_path, stages, (72, 64, 16), hidden_size=1024, intermediate_size=64,
                    num_attention_heads=4, num_key_value_heads=2)
    chunk = json.loads((build / "plan.json").read_text())["prefill"]["chunk_tokens"]
    h = handoff(4, 4, 3, MINI)
    assert handoff_parts(chunk * 1024 * 2, 3, h, MINI) >= 2 and handoff_parts(1024 * 2, 3, h, MINI) == 1
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", "1 7 42 99 3 250 17 8 200 5",
                 "--tokens", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []
    assert main(["run", str(build), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []
