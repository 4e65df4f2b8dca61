"""Row-parallel matmuls overlapped with their all-reduce, by column pieces (compiler.partition.overlap):
the pieces' all-reduces together give the whole one (functional mode against the graph IR reference at
tp 2 and 4), the schedule is faster than the unpieced form, and the plan costs the pair as the longer
of its two streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import compiler.codegen.overlap as lowering
import compiler.partition.overlap as rule
from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.partition.chaining import piece_lead
from compiler.partition.cost import collective_s, group_mesh, unit_time
from compiler.partition.mesh import collective_s as mesh_collective_s
from compiler.partition.mesh import outer_one_shot
from compiler.partition.overlap import ONE_ROW_PIECE_MESSAGES, PIECE_MESSAGES, column_pieces, max_pieces, pair_s
from compiler.partition.shard_cost import shard_cost
from ir.isa import Fn, Op
from ir.ops import Opcode
from ir.program_io import load_program
from targets import load_target
from tests.cli_errors import layers_then_head

TINY = json.loads(Path("examples/models/tiny-llama.json").read_text())
# 16-column panels: tiny-llama's 64-wide o_proj and down_proj outputs come in 4 pieces.
PANELS_16 = 'base = "lpu-mini"\nname = "lpu-mini-p16"\n[chip]\nmatrix_dim = 16\nmatrix_planes = 1\n'
PROMPT = "1 7 42 99 3 250 17 8 200 5 9 9 4 3"  # 14 tokens: two 8-token chunks


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 64), columns=st.integers(1, 9000), panel=st.sampled_from([16, 320, 1280]),
       group=st.integers(1, 16), narrow_first=st.booleans())
def test_pieces_are_whole_panels_that_cover_the_columns_once(rows, columns, panel, group, narrow_first):
    pieces = column_pieces(rows, columns, panel, group, narrow_first)
    assert pieces[0][0] == 0 and pieces[-1][1] == columns
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))
    if len(pieces) > 1:
        widths = [b - a for a, b in pieces]
        assert all(rows * w % group == 0 for w in widths) and len(pieces) == -(-columns // panel)
        narrow = widths[0] if narrow_first else widths[-1]  # the one piece that may be less than a panel
        assert widths.count(panel) >= len(pieces) - 1 and narrow == (columns % panel or panel)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 64), columns=st.integers(1, 20000), panel=st.sampled_from([16, 320, 1280]),
       group=st.sampled_from([1, 2, 4, 8]), most=st.integers(1, 20), narrow_first=st.booleans())
def test_at_most_pieces_of_equal_whole_panels_but_the_narrow_one(rows, columns, panel, group, most, narrow_first):
    pieces = column_pieces(rows, columns, panel, group, narrow_first, most)
    widths = [b - a for a, b in pieces]
    assert pieces[0][0] == 0 and pieces[-1][1] == columns and len(pieces) <= most
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))
    if len(pieces) > 1:
        wide = max(widths)
        assert wide % panel == 0 and widths.count(wide) >= len(pieces) - 1
        assert (widths[-1] if not narrow_first else widths[0]) == (columns % wide or wide)


@pytest.mark.parametrize(("levels", "pieces"), [((8,), 3), ((8, 2), 3), ((8, 8), 1), ((2,), 24), ((1,), 1)])
def test_a_pair_takes_as_many_pieces_as_its_message_budget_allows(levels, pieces):
    """Each piece's all-reduce sends 2 x (size - 1) messages a chip per level: llama-3.1-405b int8's tp-64
    stages (8 x 8) stay whole, at 13 one-panel pieces their prefill had 5x the instructions."""
    assert max_pieces(levels) == pieces
    assert pieces == 1 or pieces * 2 * sum(s - 1 for s in levels) <= PIECE_MESSAGES


@pytest.mark.parametrize(("levels", "reduced", "rows", "pieces"), [
    ((8, 8), 1, 1, 4),  # llama-3.1-405b's decode row: 21 messages a piece, its nodes in one shot
    ((8, 8), 1, 32, 2),
    ((8, 8), 2, 32, 1),  # its 32-row prefill chunk's slices: too large for one shot, 28 messages
    ((8,), 1, 1, 6),  # llama-3.1-70b's decode row: 14 messages a piece
    ((8,), 1, 256, 3),
])
def test_a_one_row_pair_takes_twice_the_message_budget(levels, reduced, rows, pieces):
    """A decode step's pair (one row) is lowered once a token and its all-reduce is mostly latency, so its
    pieces may send twice the messages a prefill chunk's may."""
    assert max_pieces(levels, reduced, rows) == pieces
    budget = ONE_ROW_PIECE_MESSAGES if rows == 1 else PIECE_MESSAGES
    messages = sum((2 if i < reduced else 1) * (s - 1) for i, s in enumerate(levels))
    assert pieces * messages <= budget < (pieces + 1) * messages or pieces == 1


@settings(max_examples=60, deadline=None)
@given(matmul=st.floats(1e-7, 1e-4), nbytes=st.integers(1, 1 << 22), columns=st.integers(1, 9000))
def test_a_pair_takes_the_longer_stream_and_never_more_than_serial(matmul, nbytes, columns):
    def collective(n: float) -> float:
        return 2.4e-7 + n / 12.9e9

    pieces = column_pieces(1, columns, 1280, 1)
    whole = pair_s(matmul, nbytes, ((0, columns),), collective)
    split = pair_s(matmul, nbytes, column_pieces(1, columns, 1280, 8) if columns % 8 == 0 else pieces, collective)
    assert whole == matmul + collective(nbytes)
    assert max(matmul, collective(nbytes)) <= split <= whole * (1 + 1e-12)


def _build(capsys, tmp: Path, case: tuple, pieced: bool, monkeypatch) -> Path:
    """tiny-llama (with `fields`) on `dim`-column panels, its layers (and embedding) pinned on `tp` chips,
    the head on one more."""
    tp, fields, dim, extra = case
    tmp.mkdir(exist_ok=True)
    target = tmp / "target.toml"
    target.write_text(PANELS_16.replace("matrix_dim = 16", f"matrix_dim = {dim}"))
    (tmp / "config.json").write_text(json.dumps(TINY | fields))
    args = [str(tmp / "config.json"), "--target", str(target), "--context", "32", "--prompt", "16",
            "--prefill-chunk", "8", *extra]
    assert main(["plan", *args, "--json"]) == 0
    plan = layers_then_head(json.loads(capsys.readouterr().out), tp)
    (tmp / "plan.json").write_text(json.dumps(plan))
    if not pieced:  # the unpieced form: every product one piece
        monkeypatch.setattr(lowering, "best_pieces", lambda rows, columns, *rest: ((0, columns),))
    assert main(["compile", *args, "--plan", str(tmp / "plan.json"), "-o", str(tmp / "b")]) == 0
    monkeypatch.undo()
    capsys.readouterr()
    return tmp / "b"


def _run(capsys, build: Path, *extra: str) -> dict:
    assert main(["run", str(build), *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("case", [
    (2, {}, 16, ()),
    (4, {}, 16, ()),
    # block-scaled weights: each piece's panels bring their block scales (32-column panels: 2 pieces)
    (2, {"intermediate_size": 256}, 32, ("--precision", "nvfp4")),
])
def test_pieces_reduce_to_the_reference_and_schedule_faster(tmp_path, capsys, monkeypatch, case):
    tp = case[0]
    pieced = _build(capsys, tmp_path / "pieced", case, True, monkeypatch)
    out = _run(capsys, pieced, "--functional", "--check-reference", "--prompt", PROMPT, "--tokens", "6")
    assert out["hazards"] == []
    whole = _run(capsys, _build(capsys, tmp_path / "whole", case, False, monkeypatch))
    fast = _run(capsys, pieced)
    cycles = {phase: (fast[phase]["scheduled_cycles"], whole[phase]["scheduled_cycles"]) for phase in fast
              if phase in ("decode", "prefill")}
    assert cycles["prefill"][0] < cycles["prefill"][1]
    if tp == 2:
        assert cycles["decode"][0] < cycles["decode"][1]
    else:  # one row over 4 chips: all message latency, each piece in one shot (partition.mesh.allreduce_steps),
        # which stages the 4 slices and re-reads them to sum them: MEM instructions the pair's rule does not
        # count, a few cycles each on the path (3,994 against 3,954 cycles)
        assert cycles["decode"][0] <= cycles["decode"][1] * 1.015


def _sends(capsys, build: Path, phase: str) -> int:
    assert main(["inspect", str(build), "--asm", "--chip", "0", "--phase", phase]) == 0
    return sum(" send " in line for line in capsys.readouterr().out.splitlines())


def test_a_decode_row_takes_more_pieces_than_a_prefill_chunk_and_both_reduce_to_the_reference(
        tmp_path, capsys, monkeypatch):
    """tiny-llama widened to 128 features (8 panels of 16 columns) over 8 chips, 14 messages a piece: a decode
    row's pair may take 6 pieces (ONE_ROW_PIECE_MESSAGES), a prefill chunk's 3; the decode row's shortest cut
    (best_pieces) needs no more than 3 here, so the decode Program sends no fewer messages than at the prefill
    chunk's budget, prefill the same, and it runs hazard-free to the reference."""
    case = (8, {"hidden_size": 128}, 16, ())
    wide = _build(capsys, tmp_path / "wide", case, True, monkeypatch)
    out = _run(capsys, wide, "--functional", "--check-reference", "--prompt", PROMPT, "--tokens", "6")
    assert out["hazards"] == []
    monkeypatch.setattr(rule, "ONE_ROW_PIECE_MESSAGES", PIECE_MESSAGES)  # _build undoes it after compiling
    narrow = _build(capsys, tmp_path / "narrow", case, True, monkeypatch)
    assert _sends(capsys, wide, "decode") >= _sends(capsys, narrow, "decode")
    assert _sends(capsys, wide, "prefill") == _sends(capsys, narrow, "prefill")


def test_a_decode_rows_pieces_are_the_shortest_cut_and_taper_to_one_panel_pieces_off_their_scale():
    """llama-3.1-70b int8's o_proj decode row on 8 lpu chips (8192 columns, 1,040 cycles of product, a piece's
    first sends after its 93-cycle drain unless it is one panel on its scale's stream): best_pieces takes the
    shortest of every cut of its 7 panels within 6 pieces, shorter than every equal cut, and its last pieces
    are one panel each; a prefill chunk of several rows keeps equal pieces."""
    lpu = load_target("lpu")
    mesh, panel, drain = group_mesh(8, lpu), lpu.chip.mxm_panel, lpu.chip.op_latency_cycles

    def collective(n: float) -> float:
        return mesh_collective_s("allreduce", n, mesh, lpu) * lpu.chip.clock_hz

    lead = piece_lead(1, 8192, panel, 8, True, drain)
    pieces = rule.best_pieces(1, 8192, panel, 8, 1040, 16384, collective, 6, lead)
    widths = [b - a for a, b in pieces]
    assert pieces[0][0] == 0 and pieces[-1][1] == 8192 and len(pieces) <= 6
    assert widths[-3:] == [panel, panel, 512] and all(w % panel == 0 for w in widths[:-1])
    equal = [column_pieces(1, 8192, panel, 8, first, most) for first in (False, True) for most in range(1, 7)]
    best = pair_s(1040, 16384, pieces, collective, lead)
    assert all(best < pair_s(1040, 16384, p, collective, lead) for p in equal if p != pieces)
    chunk = rule.best_pieces(32, 8192, panel, 8, 1040 * 32, 32 * 16384, collective, 3,
                             piece_lead(32, 8192, panel, 8, True, drain))
    assert chunk in [column_pieces(32, 8192, panel, 8, first, 3) for first in (False, True)]


def test_the_plan_costs_each_row_parallel_pair_as_its_longer_stream():
    """llama-3.1-8b's layer on 8 lpu chips: o_proj's and down_proj's all-reduces overlap their matmuls,
    and the unit's link time is what the pairs take beyond the matmuls (prefill: a 32-row chunk)."""
    lpu = load_target("lpu")
    graph = build_graph(load_model_config("llama-3.1-8b"), "prefill", context=1024, prompt=1024, layers=1)
    cost = shard_cost(list(graph.ops_in("layers.0")), 8, rows_scale=32 / 1024)
    paired = [c for c in cost.collectives if c.overlaps >= 0]
    assert len(paired) == 2 and all(cost.work[c.overlaps].opcode is Opcode.MATMUL for c in paired)
    assert all((c.rows, c.columns) == (32, 4096) for c in paired)
    serial = sum(collective_s(c, lpu) for c in cost.collectives)
    assert unit_time(cost, lpu, "int8").link_s < serial


@pytest.mark.parametrize(("levels", "pieces"), [((8, 8), 2), ((8, 2), 3), ((8, 5), 2)])
def test_nodes_exchanging_in_one_shot_send_fewer_messages_a_piece(levels, pieces):
    """The nodes' level in one shot (partition.mesh.outer_one_shot) sends size - 1 messages a chip, not
    2 x (size - 1): llama-3.1-405b's decode rows over 8 nodes (21 a piece) take 2 pieces."""
    messages = 2 * (levels[0] - 1) + levels[-1] - 1
    assert max_pieces(levels, reduced=len(levels) - 1) == pieces
    assert pieces * messages <= PIECE_MESSAGES < (pieces + 1) * messages


def test_one_decode_row_over_eight_nodes_is_one_shot_and_a_prefill_chunk_is_not():
    """llama-3.1-405b's tp 64: half of one decode row (a piece of two under its matmul) exchanges its nodes in one
    shot; the whole fp16 row no longer does (a node's 8 slices to another take 4 rounds on the 2 links joining
    them, targets.topology.node_wires); a 32-row chunk's slices are far too large for it, so prefill keeps one
    piece and its instructions."""
    lpu = load_target("lpu")
    mesh = group_mesh(64, lpu)
    assert outer_one_shot(mesh, 16384, lpu) and not outer_one_shot(mesh, 16384 * 2, lpu)
    assert not outer_one_shot(mesh, 32 * 16384 * 2, lpu)


def _sends_off_a_scale(program) -> int:
    """SENDs whose stream was last written by a SCALE VOP of the same chip (not a READ of SRAM)."""
    c = program.cols
    count = 0
    for chip in range(program.chips):
        rows = sorted(range(*program.chip_slice(chip).indices(len(program))), key=lambda i: (c["issue"][i], i))
        writer: dict[int, int] = {}
        for i in rows:
            if c["op"][i] == Op.SEND:
                w = writer.get(int(c["s_a"][i]))
                count += w is not None and c["op"][w] == Op.VOP and c["fn"][w] == Fn.SCALE
            if c["s_out"][i] >= 0:
                writer[int(c["s_out"][i])] = i
    return count


def test_an_int8_decode_rows_one_panel_pieces_send_straight_off_their_scale(tmp_path, capsys, monkeypatch):
    """int8 tiny-llama on 2 chips, 16-column panels: a decode row's one-panel pieces are whole on their scale
    VOP's stream, so the all-reduce's first sends take them from there (no drain, no re-read); prefill's chunk
    rows read theirs from SRAM. It runs hazard-free to the reference."""
    build = _build(capsys, tmp_path / "int8", (2, {}, 16, ("--precision", "int8")), True, monkeypatch)
    out = _run(capsys, build, "--functional", "--check-reference", "--prompt", PROMPT, "--tokens", "6")
    assert out["hazards"] == []
    assert _sends_off_a_scale(load_program(build / "decode.prog")) > 0
    assert _sends_off_a_scale(load_program(build / "prefill.prog")) == 0


def test_o_proj_and_the_next_layers_norm_take_their_inputs_off_the_vector_units_stream(tmp_path, capsys,
                                                                                       monkeypatch):
    """partition.chaining: attention's context leaves through a rounding COPY whose stream o_proj's MXMs read
    (every COPY feeds them, in decode and prefill), and tiny-llama's two layers on one stage, lowered as one
    template (lowered_together), have the second layer's first norm read the first's residual add off its
    stream: more norms off an add's stream than with every unit a template of its own (inside a layer the
    MLP's norm always is). It runs hazard-free to the reference, and the plan's estimate is a pipeline latency
    per such boundary lower."""
    import compiler.partition.chaining as chaining
    from tests.test_functional import _fed

    together = _build(capsys, tmp_path / "together", (2, {}, 16, ()), True, monkeypatch)
    monkeypatch.setattr(chaining, "UNITS_TOGETHER", 1)  # _build undoes it after compiling
    apart = _build(capsys, tmp_path / "apart", (2, {}, 16, ()), True, monkeypatch)
    out = _run(capsys, together, "--functional", "--check-reference", "--prompt", PROMPT, "--tokens", "3")
    assert out["hazards"] == []
    for phase in ("decode", "prefill"):
        program = load_program(together / f"{phase}.prog")
        copies, _ = _fed(program, Op.VOP, Fn.COPY, Fn.COPY)
        _, off_copy = _fed(program, Op.MXM, None, Fn.COPY)
        assert copies > 0 and off_copy >= copies
        plan = json.loads((together / "plan.json").read_text())
        runs = plan["stages"][0]["tp"] * (plan["prefill"]["chunks"] if phase == "prefill" else 1)
        _, off_add = _fed(program, Op.VOP, Fn.RMSNORM, Fn.ADD)
        _, off_add_apart = _fed(load_program(apart / f"{phase}.prog"), Op.VOP, Fn.RMSNORM, Fn.ADD)
        assert off_add == off_add_apart + runs  # one more a chip of the layers' stage and chunk: layer 1's
    estimate = [json.loads((b / "plan.json").read_text())["decode"]["latency_us"] for b in (together, apart)]
    assert estimate[0] < estimate[1]
