"""The wafer-scale target: its numbers, the mesh, the per-region cost model, and planning on wafers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.backends.wafer.cost import ROWS, MeshCost, Shape, Tree, gemv, steps_time, timing_of
from compiler.backends.wafer.layout import Grid, Slot, _packings, wafer_candidate
from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.partition.candidates import capacity_lower_bound
from compiler.partition.cost import Breakdown
from compiler.plan import Plan
from compiler.plan.search import choose
from compiler.planner import make_plan
from ir.errors import ConfigError, DoesNotFitError
from ir.isa import Fmt
from targets import SystemSpec, list_targets, load_target
from targets.mesh import Region, build_mesh_topology, core_hops, grid_cells, region_hops, shared_edge

ROOT = Path(__file__).resolve().parents[1]
WSE3 = load_target("wse3")

# ---------------------------------------------------------------- the target's numbers


def test_wse3_is_a_preset_wafer():
    assert "wse3" in list_targets()
    assert isinstance(WSE3, SystemSpec) and WSE3.name == "wse3" and WSE3.is_mesh and WSE3.chip.isa == "wse"
    assert hash(WSE3) == hash(dataclasses.replace(WSE3))


def test_wse3_numbers_agree_with_their_sources_and_derivations():
    w, core = WSE3, WSE3.chip
    # The SDK fabric 762 x 1172 less the memcpy halo (offsets 4,1 on both sides).
    assert (w.mesh_cols, w.mesh_rows) == (762 - 8, 1172 - 2)
    assert w.chips_per_node == 882_180 and w.chips_per_node == pytest.approx(900_000, rel=0.025)
    assert core.sram_bytes == 48 * 1024
    assert w.chips_per_node * core.sram_bytes == pytest.approx(44e9, rel=0.03)  # ~44 GB on the wafer
    # Clock derived from 214 Pb/s = 900k cores x 4 links x 2 directions x 32 bit x f.
    assert core.clock_hz == pytest.approx(214e15 / (900e3 * 4 * 2 * 32))
    assert core.clock_hz == pytest.approx(0.929e9, rel=1e-3)
    assert w.local_link.bw_bytes_per_s == pytest.approx(4 * core.clock_hz)  # one 32-bit wavelet per cycle
    assert w.chips_per_node * core.mem_bw_bytes_per_s == pytest.approx(21e15, rel=0.03)
    assert core.peak_ops("fp16") == pytest.approx(8 * 2 * core.clock_hz)  # 8-wide FP16 SIMD
    assert w.chips_per_node * core.peak_ops("fp16") == pytest.approx(13.1e15, rel=0.01)  # dense, not the 125 PF
    assert w.local_link.latency_s == pytest.approx(1 / core.clock_hz)  # a hop: one cycle
    assert w.global_link.bw_bytes_per_s == pytest.approx(1.2e12 / 8)  # CS-3 system I/O 1.2 Tb/s
    assert w.max_nodes == 2048 and w.step_cycles == 20
    assert core.usable_sram_bytes == core.sram_bytes - core.program_reserve_bytes


def test_every_wse3_number_cites_a_source():
    """Each assignment of a number in the preset has a confidence tag within its comment block."""
    text = (ROOT / "targets" / "wse3.py").read_text()
    blocks = text.split("\n\n")
    numeric = [b for b in blocks if any(ch.isdigit() for ch in b) and "=" in b
               and "SystemSpec(" not in b and "ChipSpec(" not in b]
    assert numeric
    for block in numeric:
        if block.lstrip().startswith(('"""', "from", "import")):
            continue
        assert any(tag in block for tag in ("[V]", "[S]", "[D]", "[L]", "[U]")), block


def test_a_mesh_system_rejects_inconsistent_values():
    with pytest.raises(ConfigError, match="chip.program_reserve_bytes"):
        dataclasses.replace(WSE3, chip=dataclasses.replace(WSE3.chip, program_reserve_bytes=WSE3.chip.sram_bytes))
    with pytest.raises(ConfigError, match="chips_per_node"):
        dataclasses.replace(WSE3, mesh_rows=10)
    with pytest.raises(ConfigError, match="mesh_rows"):
        dataclasses.replace(WSE3, mesh_rows=0)
    with pytest.raises(ConfigError, match="only a mesh"):
        dataclasses.replace(load_target("lpu"), mesh_rows=3, mesh_cols=3)


def test_wafer_target_files_inherit_from_wse3_and_name_bad_fields(tmp_path):
    path = tmp_path / "slow.toml"
    path.write_text('base = "wse3"\nstep_cycles = 60\n[global_link]\nlatency_s = "10 us"\n')
    slow = load_target(str(path))
    assert slow.is_mesh and slow.name == "slow"
    assert dataclasses.replace(slow, name="wse3", step_cycles=WSE3.step_cycles, global_link=WSE3.global_link,
                               chip=dataclasses.replace(slow.chip, name=WSE3.chip.name)) == WSE3
    assert slow.global_link.latency_s == pytest.approx(10e-6)
    derived = tmp_path / "derived.toml"
    derived.write_text('base = "slow.toml"\nmesh_rows = 100\n')
    small = load_target(str(derived))
    assert small.step_cycles == 60 and small.chips_per_node == 100 * WSE3.mesh_cols
    assert small.max_nodes == WSE3.max_nodes  # resized wafers, as many of them
    for text, message in (('base = "wse3"\nstep_cycle = 6\n', r":2: step_cycle: unknown field; did you mean "
                                                                 r"'step_cycles'"),
                          ('base = "wse3"\n[chip]\nprogram_reserve_bytes = "48 KiB"\n',
                           r":3: chip.program_reserve_bytes: must be less")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_target(str(path))


def test_planning_sees_a_slower_fabric_file():
    options = CompileOptions()
    base = make_plan("tiny-llama", "wse3", options)
    slow = make_plan("tiny-llama", str(ROOT / "examples" / "targets" / "wse3-slow-steps.toml"), options)
    assert slow.target == "wse3-slow-steps"
    assert slow.decode["latency_us"] > base.decode["latency_us"]


# ---------------------------------------------------------------- the mesh


def test_hops_are_manhattan_and_regions_measure_their_gap():
    assert core_hops((0, 0), (3, 4)) == 7
    a, b = Region(0, 0, 0, 10, 10), Region(0, 0, 10, 10, 5)
    assert region_hops(a, b) == 1 and shared_edge(a, b) == 10
    far = Region(0, 20, 30, 5, 5)
    assert region_hops(a, far) == 11 + 21 and shared_edge(a, far) == 0
    with pytest.raises(ConfigError, match="not joined by the fabric"):
        region_hops(a, Region(1, 0, 0, 1, 1))


@pytest.mark.parametrize(("bands", "per_band"), [(1, 1), (7, 2), (6, 3), (16, 16)])
def test_grid_cells_are_serpentine_disjoint_and_inside_the_mesh(bands, per_band):
    cells = grid_cells(WSE3, bands, per_band)
    assert len(cells) == bands * per_band
    assert len({(c.row, c.col) for c in cells}) == len(cells)
    for c in cells:
        assert c.row >= 0 and c.row + c.rows <= WSE3.mesh_rows and c.col >= 0 and c.col + c.cols <= WSE3.mesh_cols
    for a, b in zip(cells, cells[1:], strict=False):
        assert region_hops(a, b) == 1 and shared_edge(a, b) > 0  # every hand-off is one hop
    used = sum(c.cores for c in cells)
    assert WSE3.chips_per_node - used < bands * WSE3.mesh_cols + per_band * WSE3.mesh_rows


def test_mesh_topology_is_a_graph_of_regions_not_cores():
    regions = [Region(0, c.row, c.col, c.rows, c.cols) for c in grid_cells(WSE3, 2, 2)] + [Region(1, 0, 0, 9, 9)]
    graph = build_mesh_topology(WSE3, regions)
    assert graph.number_of_nodes() == 5
    kinds = [graph.edges[i, i + 1]["kind"] for i in range(4)]
    assert kinds == ["fabric", "fabric", "fabric", "wafer-link"]
    assert graph.edges[3, 4]["latency_s"] == WSE3.global_link.latency_s


# ---------------------------------------------------------------- the region cost model


def test_gemv_trades_streaming_for_hops():
    """More cores stream a matrix faster but reduce over more hops; the bound never exceeds the time."""
    k, n = 4096, 14336

    def timed(shape: Shape) -> tuple[Breakdown, float]:
        steps, bound = gemv(1, k, n, 2 * k * n, Fmt.F16, shape, WSE3)
        return steps_time(steps, shape, timing_of(WSE3)), bound

    (small, _), (large, _) = timed(Shape(64, 64)), timed(Shape(1024, 700))
    assert large.memory_s + large.compute_s < small.memory_s + small.compute_s
    assert large.link_s > small.link_s
    for shape in (Shape(1, 1), Shape(64, 64), Shape(1024, 700)):
        time, bound = timed(shape)
        assert 0 < bound <= time.total_s


def test_tree_reduce_pays_every_hop_and_log_steps():
    t = steps_time([Tree(ROWS, 8)], Shape(1024, 1), timing_of(WSE3))
    assert t.latency_s == pytest.approx(10 * (WSE3.step_cycles / WSE3.chip.clock_hz))
    assert t.link_s >= 1023 * WSE3.local_link.latency_s
    assert steps_time([Tree(ROWS, 8)], Shape(1, 1), timing_of(WSE3)) == Breakdown()


def _unit(resident: int, act: int) -> MeshCost:
    return MeshCost(resident, 0, act, Breakdown(compute_s=1e-6), 1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40_000), st.integers(0, 2_000)), min_size=1, max_size=9))
def test_greedy_packing_uses_the_fewest_cells(units):
    """layout.py's exactness claim: greedy first-fit into cells equals the best contiguous split."""
    costs = [_unit(r, a) for r, a in units]
    grid = Grid(3, 3, Shape(WSE3.mesh_rows // 3, WSE3.mesh_cols // 3))
    packed = {stop: stages for stop, stages, _ in _packings(0, grid, lambda _: costs, [0] * (len(costs) + 1), WSE3)}
    usable = WSE3.chip.usable_sram_bytes

    def fits(run):
        return sum(c.resident_bytes for c in run) + max(c.act_bytes for c in run) <= usable

    fewest = [0] + [math.inf] * len(costs)  # fewest cells for the first i units
    for stop in range(1, len(costs) + 1):
        fewest[stop] = min(fewest[a] + 1 for a in range(stop) if fits(costs[a:stop])) if any(
            fits(costs[a:stop]) for a in range(stop)) else math.inf
    for stop in range(1, len(costs) + 1):
        if fewest[stop] <= grid.cells:
            assert len(packed[stop]) == fewest[stop]
        else:
            assert stop not in packed


def test_a_unit_too_big_for_a_cell_takes_neighbouring_cells_of_one_band():
    grid = Grid(2, 4, Shape(WSE3.mesh_rows // 2, WSE3.mesh_cols // 4))
    usable = WSE3.chip.usable_sram_bytes

    def cost_of(shape: Shape) -> list[MeshCost]:
        big = math.ceil(1.5 * usable * grid.cell.cores / shape.cores)  # needs two cells' worth of cores
        small = _unit(usable * 6 // 10, 0)  # one a cell
        return [small, small, small, _unit(big, 0), small]

    *_, (stop, stages, _) = _packings(0, grid, cost_of, [0] * 6, WSE3)
    assert stop == 5
    # Units 0-2 take a cell each; the wide unit does not fit the band's last cell, so it opens the
    # next band with two merged cells, leaving one cell idle.
    assert [(u, slot.band, slot.pos, slot.span) for u, slot in stages] == [(0, 0, 0, 1), (1, 0, 1, 1),
                                                                            (2, 0, 2, 1), (3, 1, 0, 2),
                                                                            (4, 1, 2, 1)]
    wide = stages[3][1].region(grid, WSE3)
    assert (wide.rows, wide.cols) == (grid.cell.rows, 2 * grid.cell.cols)
    assert wide.col == 2 * grid.cell.cols  # odd bands run east to west
    regions = [slot.region(grid, WSE3) for _, slot in stages]
    assert all(region_hops(a, b) == 1 for a, b in zip(regions, regions[1:], strict=False))


def test_capacity_bound_counts_usable_bytes():
    per_wafer = WSE3.chips_per_node * WSE3.chip.usable_sram_bytes
    assert capacity_lower_bound(per_wafer, per_wafer) == 1
    assert capacity_lower_bound(per_wafer + 1, per_wafer) == 2


# ---------------------------------------------------------------- planning on wafers


@pytest.fixture(scope="module")
def w8() -> str:
    out = subprocess.run([sys.executable, "-m", "compiler.cli", "plan", "llama-3.1-8b", "--target", "wse3", "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout


@pytest.fixture(scope="module")
def w70() -> Plan:
    return make_plan("llama-3.1-70b", "wse3", CompileOptions())


def _check_plan(plan: dict, layers: int) -> None:
    lpu_keys = {"model", "target", "options", "chips", "chips_lower_bound", "footprint_chips",
                "memory_per_chip_bytes", "totals", "stages", "decode", "prefill", "binding", "solver"}
    assert lpu_keys | {"mesh"} == plan.keys()
    assert plan["chips"] >= plan["chips_lower_bound"] >= 1
    assert plan["decode"]["latency_bound_us"] <= plan["decode"]["latency_us"]
    assert plan["prefill"]["ttft_bound_ms"] <= plan["prefill"]["ttft_ms"]
    covered = [s["layers"] for s in plan["stages"] if s["layers"]]
    assert covered[0][0] == 0 and covered[-1][1] == layers - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(covered, covered[1:], strict=False))
    mesh = plan["mesh"]
    assert mesh["cores_used"] == sum(s["cores"] for s in plan["stages"])
    assert mesh["cores_used"] <= plan["chips"] * mesh["cores_per_wafer"]
    for s in plan["stages"]:
        r = s["region"]
        assert r["rows"] * r["cols"] == s["cores"] == s["tp"]
        assert r["row"] + r["rows"] <= mesh["mesh_rows"] and r["col"] + r["cols"] <= mesh["mesh_cols"]
        assert s["memory_per_core_bytes"]["headroom"] >= 0
        assert s["decode_bound_us"] <= s["decode_us"]
    assert plan["memory_per_chip_bytes"]["capacity"] == WSE3.chips_per_node * WSE3.chip.sram_bytes


def test_llama_8b_fp16_fits_one_wafer(w8):
    plan = json.loads(w8)
    _check_plan(plan, 32)
    assert plan["chips"] == 1 and plan["footprint_chips"] == 1
    assert plan["totals"]["weight_bytes"] > 16e9  # 16-bit weights
    # Everything resident: the regions hold at least the model's bytes.
    used = plan["memory_per_chip_bytes"]
    assert used["weights"] >= plan["totals"]["weight_bytes"]
    assert used["kv_cache"] >= plan["totals"]["kv_cache_bytes"]


def test_llama_70b_plans_over_several_wafers(w70):
    assert isinstance(w70, Plan) and w70.on_wafers
    plan = w70.to_dict()
    _check_plan(plan, 80)
    assert plan["chips"] > 1 and plan["chips_lower_bound"] >= 4  # 141 GB over ~36 GB usable a wafer
    wafers = [s["wafer"] for s in plan["stages"]]
    assert wafers == sorted(wafers) and wafers[-1] == plan["chips"] - 1
    crossings = [s for s in plan["stages"][1:] if s["wafer"] != plan["stages"][s["index"] - 1]["wafer"]]
    assert len(crossings) == plan["chips"] - 1
    assert all(s["decode_bound_us"] * 1e-6 >= WSE3.global_link.latency_s for s in crossings)


def test_same_command_gives_byte_identical_json_across_processes(w8):
    env = dict(os.environ, PYTHONHASHSEED="4242")
    again = subprocess.run([sys.executable, "-m", "compiler.cli", "plan", "llama-3.1-8b", "--target", "wse3",
                            "--json"], capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    assert hashlib.sha256(again.stdout.encode()).hexdigest() == hashlib.sha256(w8.encode()).hexdigest()


def test_latency_objective_spends_wafers_for_speed(capsys, w8):
    assert main(["plan", "llama-3.1-8b", "--target", "wse3", "--objective", "latency", "--max-chips", "3",
                 "--json"]) == 0
    fast = json.loads(capsys.readouterr().out)
    assert 1 <= fast["chips"] <= 3
    assert fast["decode"]["latency_us"] <= json.loads(w8)["decode"]["latency_us"]


def test_exact_wafer_count(capsys):
    assert main(["plan", "llama-3.1-8b", "--target", "wse3", "--chips", "2", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["chips"] == 2 and {s["wafer"] for s in plan["stages"]} == {0, 1}
    assert "at most 2048 wafers" in _error(capsys, "plan", "tiny-llama", "--target", "wse3", "--chips", "5000")


def test_table_output_names_the_mesh_figures(capsys):
    assert main(["plan", "tiny-llama", "--target", "wse3"]) == 0
    out = capsys.readouterr().out
    for word in ("wafers", "cores used", "decode latency", "regions", "memory per core"):
        assert word in out


def test_lpu_plans_are_unchanged_in_kind():
    assert isinstance(make_plan("tiny-llama", "lpu-mini", CompileOptions()), Plan)


def _error(capsys, *args) -> str:
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("sramflow: error:")
    return err


def test_too_few_wafers_says_how_many():
    """Three wafer-sized runs of units and a budget of two: the error names the three."""
    grid = Grid(1, 1, Shape(WSE3.mesh_rows, WSE3.mesh_cols))
    cands = [wafer_candidate(u, u + 1, grid, ((u, Slot(0, 0, 1)),), Breakdown(compute_s=1e-6)) for u in range(3)]
    layout = dataclasses.make_dataclass("L", ["candidates"])(cands)
    layout.device, layout.machine, layout.max_devices, layout.units, layout.lower_bound = "wafer", "wse3", 2048, 3, 3
    layout.unplaceable = lambda u: f"unit {['embed', 'layers.0', 'head'][u]} does not fit one wse3 wafer"
    with pytest.raises(DoesNotFitError, match=r"needs at least 3 wafers of wse3 \(capacity bound 3\); 2 allowed"):
        choose(layout, CompileOptions(max_chips=2))
    layout.candidates = cands[:2]
    with pytest.raises(DoesNotFitError, match="unit head does not fit one wse3 wafer"):
        choose(layout, CompileOptions())


def test_compile_on_a_wafer_of_an_op_it_cannot_lower_is_a_clear_error(capsys, tmp_path):
    # Dense models compile on wafers (tests/test_wse3_compile.py); mixture-of-experts layers not yet.
    err = _error(capsys, "compile", "tiny-mixtral", "--target", "wse3", "-o", str(tmp_path / "b"))
    assert "wafer backend cannot lower topk (" in err and ", experts (" in err and "cannot run on this target" in err
    assert not (tmp_path / "b").exists()


def test_a_wafer_smaller_than_the_grid_menu_plans(tmp_path, capsys):
    """Grids are only cut into cells of at least one core (a 12 x 12 wafer once divided by zero)."""
    target = tmp_path / "w12.toml"
    target.write_text('base = "wse3"\nname = "wse-12"\nmesh_rows = 12\nmesh_cols = 12\n')
    assert main(["plan", "tiny-llama", "--target", str(target), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chips"] >= 1
