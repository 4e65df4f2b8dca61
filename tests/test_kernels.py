"""Kernels a user can check by hand: graph IR files compiled on one lpu chip, cycle for cycle."""

import json

import pytest

from benchmarks.kernels import chain_ir as matvec_chain
from compiler.cli import main
from ir.program_io import load_program

SYNC, DRAIN = 216, 93  # the lpu's start synchronisation and a compute result's drain to SRAM


def compile_kernel(tmp_path, text: str, *extra: str) -> int:
    source = tmp_path / "kernel.ir"
    source.write_text(text)
    out = tmp_path / "build"
    assert main(["compile", str(source), "--target", "lpu", "--chips", "1", "-o", str(out), *extra]) == 0
    return load_program(out / "decode.prog").makespan


# Hand arithmetic for one matmul on one chip (MEM moves 10,240 B/cycle; weights install 10,240 B/cycle
# in 320 x 320 tiles, fp16 at 2 bytes a weight; int8 passes at 416,667 MACs a cycle, fp16 104,444):
#   sync | read x | 1 | MXM = max(install, passes) | [int8: scale VOP, 1] | drain | write y
# The install-bound MXM starts a cycle after the READ of W (its install takes the weights off the stream
# as MEM puts them out, and ends no earlier than that READ: targets.timing.paced_start).
HAND = {
    (320, "i8"): SYNC + 1 + 1 + 10 + 1 + DRAIN + 1,  # 102,400 B; 1 tile
    (640, "i8"): SYNC + 1 + 1 + 40 + 1 + DRAIN + 1,  # 409,600 B; 4 tiles
    (1000, "i8"): SYNC + 1 + 1 + 160 + 1 + DRAIN + 1,  # 1,000,000 B (98 cycles of READ); 16 tiles (4 a side)
    (320, "f16"): SYNC + 1 + 1 + 20 + DRAIN + 1,  # 204,800 B; a tile at 2 B a weight
    (640, "f16"): SYNC + 1 + 1 + 80 + DRAIN + 1,
    (1000, "f16"): SYNC + 1 + 1 + 320 + DRAIN + 1,  # 2,000,000 B (196 cycles of READ); 16 tiles x 20 cycles
}


@pytest.mark.parametrize(("dim", "dtype"), sorted(HAND))
def test_a_matvec_takes_the_cycles_computed_by_hand(tmp_path, dim, dtype):
    assert compile_kernel(tmp_path, matvec_chain(1, [dim, dim], dtype)) == HAND[dim, dtype]


def test_halving_the_install_rate_nearly_halves_a_weight_bound_decode(tmp_path):
    """An 8192 x 8192 int8 matvec: 676 tiles, 6,760 cycles of install at 10,240 B/cycle. At the lpu's
    rate MEM reads the weights exactly as fast, the first MXM installing its panel as it streams (7,074
    cycles); halved, the install path alone binds (13,834): 1.99x."""
    fast = compile_kernel(tmp_path, matvec_chain(1, [8192, 8192], "i8"))
    slow_target = tmp_path / "slow.toml"
    slow_target.write_text('base = "lpu"\n[chip]\nmxm_install_bytes_per_cycle = "5120 B/cycle"\n')
    source = tmp_path / "kernel.ir"
    assert main(["compile", str(source), "--target", str(slow_target), "--chips", "1", "-o",
                 str(tmp_path / "slow")]) == 0
    slow = load_program(tmp_path / "slow" / "decode.prog").makespan
    assert 1.8 < (slow - SYNC) / (fast - SYNC) <= 2.0


def test_a_malformed_graph_file_names_its_line_and_column(tmp_path, capsys):
    source = tmp_path / "bad.ir"
    source.write_text(matvec_chain(1, [320, 320], "i8").replace("matmul %x", "matmul %nope"))
    assert main(["compile", str(source), "--target", "lpu", "--chips", "1", "-o", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"sramflow: error: {source}:6:30: %nope is used before it is defined"
    assert not (tmp_path / "b").exists()


def test_a_graph_file_plans_like_a_model(tmp_path, capsys):
    source = tmp_path / "k.ir"
    source.write_text(matvec_chain(8, [640, 640, 640], "f16"))
    assert main(["plan", str(source), "--target", "lpu", "--chips", "1", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["chips"] == 1 and plan["totals"]["weight_bytes"] == 2 * 640 * 640 * 2


CHAINED = """graph chained {
  input %x: f16[1,320]
  input %r: f16[1,320]
  scope s {
    %a: f16[1,320] = add %x, %r
    %b: f16[1,320] = silu %a
    %c: f16[1,320] = mul %b, %a
  }
  output %c
}
"""


def test_element_wise_ops_chain_on_the_vector_unit_in_the_plan_and_the_schedule(tmp_path, capsys):
    """silu takes add's result off the vector unit's stream (no drain, no re-read); mul takes silu's, but
    also reads add's from SRAM, so it waits for that write: two drains on the path, not three, in the plan's
    pipeline latency and cycle for cycle: sync | read x, r | add | drain | write a | read a | mul | drain |
    write c (write b, off the path, follows read a on the MEM queue)."""
    assert compile_kernel(tmp_path, CHAINED) == SYNC + 2 + 1 + DRAIN + 1 + 1 + 1 + DRAIN + 1
    assert main(["plan", str(tmp_path / "kernel.ir"), "--target", "lpu", "--chips", "1", "--json"]) == 0
    latency_us = json.loads(capsys.readouterr().out)["decode"]["breakdown_us"]["pipeline_latency"]
    assert latency_us == pytest.approx(2 * DRAIN / 900e6 * 1e6, rel=1e-3)
    assert main(["run", str(tmp_path / "build"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []
