"""Sibling matmuls as one weight block (passes.fuse) and a norm chained into them (partition.chaining), as a
user sees them: one MXM in the program, one block in the memory map, the plan's figures, the reference."""

import json

import pytest

from compiler.cli import main
from compiler.partition.cost import block_install_s
from compiler.partition.shard_cost import chip_cost
from compiler.passes.fuse import fuse_siblings, parts
from compiler.passes.shard import ShardTensorParallel
from ir.isa import Op
from ir.ops import Opcode
from ir.program_io import load_program
from targets import load_target
from tests.layer_fixture import llama_like
from tests.test_kernels import DRAIN, SYNC, compile_kernel

TILE = load_target("lpu").chip.matrix_dim  # 320

QKV = """graph qkv {
  input %x: f16[1,320]
  param %g: f16[320]
  param %wq: f16[320,64]
  param %wk: f16[320,64]
  param %wv: f16[320,64]
  scope s {
    %h: f16[1,320] = rmsnorm %x, %g {eps = 1e-05}
    %q: f16[1,64] = matmul %h, %wq {split = "col"}
    %k: f16[1,64] = matmul %h, %wk {split = "col"}
    %v: f16[1,64] = matmul %h, %wv {split = "col"}
    %a: f16[1,64] = add %q, %k
    %c: f16[1,64] = add %a, %v
  }
  output %c
}
"""


def test_three_narrow_projections_install_one_tile_off_the_norms_stream(tmp_path, capsys):
    """q, k and v, 64 columns each, are one 320 x 192 block: one MXM installing one tile (20 cycles at 2 B a
    weight), not three, reading the norm's result off the vector unit's stream (no drain between them).
    By hand: sync | read x, g | 1 (the MXM starts a cycle after the block's READ, 122,880 B at 10,240 B/cycle
    with the norm beside it: its install takes the block off the stream, targets.timing.paced_start) | MXM |
    drain | write q|k|v | read q, k (v beside the add) | add | add (chained, v) | drain | write c. The plan
    counts the same two drains, and the memory map the one block."""
    assert compile_kernel(tmp_path, QKV) == SYNC + 2 + 1 + 20 + DRAIN + 1 + 2 + 1 + 1 + DRAIN + 1
    c = load_program(tmp_path / "build" / "decode.prog").cols
    mxm = c["op"] == Op.MXM
    assert list(zip(c["k"][mxm].tolist(), c["n"][mxm].tolist(), strict=True)) == [(320, 192)]
    memory = json.loads((tmp_path / "build" / "memory.json").read_text())
    assert ("wq+wk+wv", 320 * 192 * 2) in {(r["name"], r["bytes"]) for r in memory["stages"][0]["regions"]}
    assert main(["plan", str(tmp_path / "kernel.ir"), "--target", "lpu", "--chips", "1", "--json"]) == 0
    latency_us = json.loads(capsys.readouterr().out)["decode"]["breakdown_us"]["pipeline_latency"]
    assert latency_us == pytest.approx(2 * DRAIN / 900e6 * 1e6, rel=1e-3)
    assert main(["run", str(tmp_path / "build"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hazards"] == []


def test_the_plan_installs_the_fused_blocks_in_fewer_whole_tiles():
    """A layer of the llama-like fixture on 4 chips: q (16 columns) | k | v (8 each) and gate | up (44 each)
    are two matmuls whose blocks take ceil(sum / dim) tiles, fewer than the siblings' tiles apart."""
    layer = list(llama_like().ops_in("layers.0"))
    chip = load_target("lpu").chip
    separate = ShardTensorParallel(4)(layer)
    fused = chip_cost(separate, 4, tile=chip.matrix_dim)
    matmuls = [w for w in fused.work if w.opcode is Opcode.MATMUL]
    assert [(b.k, b.n) for w in matmuls for b in w.blocks] == [(64, 32), (16, 64), (64, 88), (44, 64)]
    apart = [b for op in separate if op.opcode is Opcode.MATMUL
             for b in chip_cost([op], 4, tile=chip.matrix_dim).work[0].blocks]
    assert block_install_s([b for w in matmuls for b in w.blocks], chip)[0] < block_install_s(apart, chip)[0]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_a_fused_build_runs_as_the_reference(tmp_path, capsys, precision):
    """tiny-llama: the graph IR keeps the model's q, k, v, gate and up matmuls; the program holds each
    layer's q|k|v and gate|up blocks, schedules within 10% of the plan and runs bit for bit as the reference."""
    build = tmp_path / "b"
    assert main(["compile", "tiny-llama", "--target", "lpu-mini", "--precision", precision, "-o", str(build)]) == 0
    capsys.readouterr()
    ir = (build / "decode.ir").read_text()
    assert all(f"layers.0.self_attn.{p}_proj.weight" in ir for p in "qkv") and "+" not in ir
    names = [parts(r["name"]) for s in json.loads((build / "memory.json").read_text())["stages"]
             for r in s["regions"]]
    assert [f"layers.1.self_attn.{p}_proj.weight" for p in "qkv"] in names
    assert ["layers.1.mlp.gate_proj.weight", "layers.1.mlp.up_proj.weight"] in names
    assert main(["inspect", str(build), "--json"]) == 0
    decode = json.loads(capsys.readouterr().out)["decode"]
    assert decode["latency_us"] == pytest.approx(decode["estimate_us"], rel=0.1)
    assert main(["run", str(build), "--functional", "--check-reference", "--prompt", "1 7 42 99", "--tokens", "4",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference"]["passed"] and out["hazards"] == []


def test_over_several_rows_each_sibling_reads_its_columns_of_the_block():
    """A prefill chunk's siblings share the block decode reads (one SRAM layout) but keep MXMs of their own
    over their columns, writing their own results: no fused result beside copies of it (passes.fuse)."""
    ops = fuse_siblings(ShardTensorParallel(2)(list(llama_like(rows=8).ops_in("layers.0"))), TILE)
    assert not any(op.opcode is Opcode.SLICE for op in ops)
    qkv = [op for op in ops if op.opcode is Opcode.MATMUL and op.operands[1].name.count("+") == 2]
    assert [(op.attr["start"], op.attr["stop"]) for op in qkv] == [(0, 32), (32, 48), (48, 64)]
    blocks = [b.n for w in chip_cost(ops, 2, tile=TILE).work if w.opcode is Opcode.MATMUL for b in w.blocks]
    assert blocks[:3] == [32, 16, 16]


def test_siblings_fuse_only_where_they_save_whole_tiles():
    """On 4 chips q (16 columns), k and v (8 each) fill 2 + 1 + 1 tiles of 8 apart and 4 side by side: no
    saving, so they stay apart (a sibling read first would wait for the others' columns for nothing, as
    Mamba's in_proj x would for z); gate | up (44 each) take 11 tiles of 8 instead of 12 and fuse."""
    chip_ops = ShardTensorParallel(4)(list(llama_like().ops_in("layers.0")))
    fused = [op.operands[1].name for op in fuse_siblings(chip_ops, 8)
             if op.opcode is Opcode.MATMUL and "+" in op.operands[1].name]
    assert fused == ["layers.0.gate_proj.weight+layers.0.up_proj.weight"]
    assert fuse_siblings(chip_ops, 0) == chip_ops  # no matrix unit: nothing fused
