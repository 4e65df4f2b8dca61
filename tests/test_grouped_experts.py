"""MoE prefill by routed rows (codegen.experts.lower_grouped): vop.group sorts each chip's routed
(row, expert) pairs into a fixed buffer of rows x min(k, local experts) slots, a GATHER permutes the
rows, gate, up and down are grouped MXMs and vop.ungroup weighs the slots back. Timing comes from
the buffer's sizes only, so two prompts that route differently take the same cycles; the results
equal the graph IR reference's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.cli import main
from compiler.frontend import build_graph, load_model_config
from compiler.image import random_weights
from ir.asm import parse_asm, print_asm
from ir.build_io import write_manifest
from ir.isa import Fmt, Fn, Op
from ir.ops import Opcode, routed_slots
from ir.program import DEFAULTS, NAMES
from ir.program_io import load_program, save_program
from ir.types import DType
from targets import load_target
from targets.functional import VECTOR, _grouped_product
from targets.runner import run_build
from targets.timing import Timing, durations
from tests.test_functional import routed_experts

PROMPTS = ("1 7 42 99 3 250 17 8 200 5 66 13 90 121 31 2", "240 3 3 77 128 16 9 1 64 33 5 5 80")  # 2 chunks each
SHAPE = ["--context", "64", "--prompt", "16", "--prefill-chunk", "8"]


def _target(tmp: Path, dim: int) -> str:
    path = tmp / f"t{dim}.toml"
    path.write_text(f'base = "lpu-mini"\nname = "lpu-mini-{dim}"\n[chip]\nmatrix_dim = {dim}\n')
    return str(path)


def _compile(capsys, tmp: Path, model: str, tp: int, dim: int, *extra: str) -> Path:
    """`model` on lpu-mini with dim x dim tiles, as one stage of `tp` chips (a pinned plan)."""
    args = [model, "--target", _target(tmp, dim), *SHAPE, *extra]
    assert main(["plan", *args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    first, last = plan["stages"][0], plan["stages"][-1]
    plan["stages"] = [dict(first, units=[first["units"][0], last["units"][1]], tp=tp, chip_range=[0, tp - 1])]
    (tmp / "plan.json").write_text(json.dumps(plan))
    out = tmp / f"{model}-{tp}"
    assert main(["compile", *args, "--plan", str(tmp / "plan.json"), "-o", str(out)]) == 0
    capsys.readouterr()
    return out


def _runs(capsys, build: Path) -> set[tuple[int, int]]:
    """Each prompt run on data against the reference; the (decode, prefill) cycles of each."""
    cycles = set()
    for prompt in PROMPTS:
        assert main(["run", str(build), "--functional", "--check-reference", "--prompt", prompt, "--tokens", "3",
                     "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["hazards"] == [] and got["reference"]["passed"]
        cycles.add((got["decode"]["latency_cycles"], got["prefill"]["latency_cycles"]))
    return cycles


@pytest.mark.parametrize(("model", "tp", "dim", "placement"), [
    ("tiny-mixtral", 2, 16, "sliced"), ("tiny-mixtral", 4, 320, "parallel"),
    ("tiny-deepseek-v3", 2, 16, "sliced"), ("tiny-deepseek-v3", 4, 16, "mixed 2x2"),
    ("tiny-jamba", 2, 16, "sliced"), ("tiny-jamba", 4, 320, "parallel"),
])
def test_grouped_prefill_matches_the_reference_in_the_same_cycles_whatever_the_routing(tmp_path, capsys, model, tp,
                                                                                      dim, placement):
    build = _compile(capsys, tmp_path, model, tp, dim)
    assert json.loads((build / "plan.json").read_text())["stages"][0].get("experts") == placement
    assert len(_runs(capsys, build)) == 1


def test_the_two_prompts_route_differently():
    config = load_model_config("tiny-mixtral")
    weights = random_weights(build_graph(config, "decode", context=64))
    a, b = ([int(t) for t in p.split()] for p in PROMPTS)
    assert routed_experts(config, weights, a) != routed_experts(config, weights, b)


def test_prefill_multiplies_only_the_routed_rows(tmp_path, capsys):
    """Every prefill expert MXM is grouped over rows x min(k, here) slots and streams each local
    expert's panel once; decode keeps its static passes (one row: min(k, here) routed experts)."""
    build = _compile(capsys, tmp_path, "tiny-mixtral", 2, 16)
    config = load_model_config("tiny-mixtral")
    k, experts = config.experts_per_token, config.num_experts
    prefill, decode = (load_program(build / f"{p}.prog") for p in ("prefill", "decode"))
    c = prefill.body
    grouped = (c["op"] == Op.MXM) & (c["s_e"] >= 0)
    assert grouped.any()
    assert set(c["m"][grouped].tolist()) == {routed_slots(8, k, experts)}  # sliced: every chip holds all experts
    assert set(c["imm"][grouped].tolist()) == {experts}
    assert ((c["op"] == Op.VOP) & (c["fn"] == Fn.ROUTE)).sum() == 0
    assert ((c["op"] == Op.VOP) & (c["fn"] == Fn.GROUP)).sum() == ((c["op"] == Op.VOP) & (c["fn"] == Fn.UNGROUP)).sum()
    d = decode.body
    assert not (d["s_e"] >= 0).any() and ((d["op"] == Op.VOP) & (d["fn"] == Fn.ROUTE)).any()
    text = print_asm(prefill)
    assert " e=" in text and "vop.group" in text and "vop.ungroup" in text
    again = parse_asm(text)
    assert all(np.array_equal(again.cols[n], prefill.cols[n]) for n in NAMES)


def test_the_plan_counts_k_routed_rows_of_expert_arithmetic():
    """A chunk's expert flops are 6 x hidden x inter x rows x min(k, experts here), E/k less than one
    pass of every row per expert (DeepSeek-V3: 256 experts, k = 8)."""
    graph = build_graph(load_model_config("deepseek-v3"), "prefill", context=4096, prompt=256, layers=4)
    op = next(op for op in graph.ops if op.opcode is Opcode.EXPERTS)
    experts, hidden, inter = op.operands[3].type.shape
    assert op.cost.flops == 6 * hidden * inter * 256 * 8
    assert experts // op.attr["top_k"] == 32


def _grouped_row(m: int, k: int, n: int, tiles: int) -> dict[str, np.ndarray]:
    row = {name: np.array([DEFAULTS[name]], np.int64) for name in NAMES}
    row.update(op=np.array([int(Op.MXM)]), m=np.array([m]), k=np.array([k]), n=np.array([n]),
               dtype=np.array([int(Fmt.FP8)]), s_e=np.array([3]), imm=np.array([tiles]), s_a=np.array([1]),
               s_b=np.array([2]), s_out=np.array([4]), cycles=np.array([0]))
    return row


@given(st.integers(1, 8), st.integers(1, 600), st.integers(1, 700), st.integers(1, 700), st.data())
def test_a_grouped_mxm_takes_at_least_any_routing_s_time(tiles, slots, k, n, data):
    """The grouped rule is the worst split of the slots over the tiles: no routing's per-expert
    installs and passes (each expert's own max(install, passes, results)) take longer."""
    timing = Timing.of(load_target("lpu"))
    cycles = int(durations(timing, _grouped_row(slots, k, n, tiles))[0])
    assert cycles == timing.mxm(slots, k, n, Fmt.FP8, tiles)
    cuts = sorted(data.draw(st.lists(st.integers(0, slots), min_size=tiles - 1, max_size=tiles - 1)))
    split = np.diff([0, *cuts, slots]).tolist()
    per_expert = sum(timing.mxm(r, k, n, Fmt.FP8) if r else timing.install(k, n, Fmt.FP8) for r in split)
    assert per_expert <= cycles


@given(st.integers(1, 6), st.integers(1, 3), st.integers(1, 5), st.integers(0, 3), st.data())
def test_group_gather_grouped_product_and_ungroup_equal_the_dense_sum(rows, k, local, base, data):
    """The functional semantics end to end: each row's weighted sum over its routed experts held here."""
    experts = local + base + data.draw(st.integers(0, 2))
    k = min(k, experts)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    ids = np.stack([rng.permutation(experts)[:k] for _ in range(rows)]).astype(np.int32)
    weights = rng.random((rows, k)).astype(np.float16).astype(np.float32)
    x, w = rng.standard_normal((rows, 4)), rng.standard_normal((local, 4, 3))
    slots = routed_slots(rows, k, local)
    ins = {"m": slots, "n": 3, "base": base, "act": DType.F16, "offset": 0, "k": 4, "imm": local, "flags": 0,
           "chip": 0, "s_e": 0}
    table = VECTOR[Fn.GROUP](ins, ids, weights.astype(np.float16).view(np.uint8), {"rows": rows, "k": k,
                                                                                    "local": local})
    src = table[:slots]
    gathered = np.where((src >= 0)[:, None], x[np.maximum(src, 0)], 0)
    y = _grouped_product(dict(ins, n=3), w.reshape(-1), gathered.reshape(-1), table).astype(np.float32)
    out = VECTOR[Fn.UNGROUP](dict(ins, n=3), y, table, {"rows": rows}).reshape(rows, 3)
    want = np.zeros((rows, 3))
    for r in range(rows):
        for j in range(k):
            if base <= ids[r, j] < base + local:
                want[r] += weights[r, j] * (x[r] @ w[ids[r, j] - base])
    assert np.allclose(out, want, atol=2e-2 * (1 + np.abs(want).max()))


def test_a_few_rows_pass_their_routed_experts_by_address(tmp_path, capsys):
    """Chunks of 2 rows on a chip of all 8 of tiny-deepseek-v3's experts (k = 2): 4 routed pairs stream
    fewer experts one row at a time, by address, than the grouped matmul's 8 (ir.ops.by_address); the
    result is the reference's in one cycle count whatever the routing."""
    args = ["tiny-deepseek-v3", "--target", _target(tmp_path, 16), "--context", "64", "--prompt", "16",
            "--prefill-chunk", "2"]
    out = tmp_path / "b"
    assert main(["compile", *args, "-o", str(out)]) == 0
    prefill = load_program(out / "prefill.prog").body
    vops = prefill["op"] == Op.VOP
    assert not (vops & (prefill["fn"] == Fn.GROUP)).any() and (vops & (prefill["fn"] == Fn.ROUTE)).any()
    assert not (prefill["s_e"] >= 0).any()
    capsys.readouterr()
    assert len(_runs(capsys, out)) == 1


def test_a_tiled_read_past_the_sram_is_a_hazard(tmp_path, capsys):
    """Timing mode holds a tiled READ's last tile to the chip's SRAM ((n - 1) x k bytes past its start)."""
    build = _compile(capsys, tmp_path, "tiny-mixtral", 2, 16)
    program = load_program(build / "prefill.prog")
    c = program.body
    tiled = np.flatnonzero((c["op"] == Op.READ) & (c["n"] > 1) & (c["flags"] == 0))
    assert len(tiled)
    c["k"][tiled[0]] = 2**22  # 4 MiB between tiles: the last one far past the chip's 384 KiB
    save_program(program, build / "prefill.prog")
    write_manifest(build, program.target)  # a deliberate edit: the build must accept it
    kinds = {h["kind"] for h in run_build(build)["hazards"]}
    assert "sram-range" in kinds
