"""Targets as data: presets, TOML target files and their errors, units, and chip topologies."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ir.errors import ConfigError
from targets import (
    PRECISIONS,
    PRESETS,
    SystemSpec,
    build_topology,
    chip_hops,
    format_size,
    hops,
    list_targets,
    load_target,
    parse_quantity,
    route,
)
from targets.loader import loads_target
from targets.target_file import dumps_target
from targets.units import FREQUENCY, OPS, RATE, SIZE, TIME

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "targets"

# ---------------------------------------------------------------- presets


def test_presets_are_listed_and_load_by_name():
    assert list_targets() == ["b200", "h100", "lpu", "lpu-mini", "lpu3", "rubin", "wse3"]
    for name in ("b200", "h100", "lpu", "lpu-mini", "lpu3", "rubin"):  # chip systems; wse3: test_wse3.py
        system = load_target(name)
        assert isinstance(system, SystemSpec) and system.name == name
        assert set(PRECISIONS) <= set(system.chip.peak_ops_per_s) <= set(PRECISIONS) | {"fp4"}


def test_presets_are_frozen_and_hashable():
    lpu = load_target("lpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        lpu.max_chips = 1  # type: ignore[misc]
    assert len({load_target(n) for n in list_targets()}) == len(list_targets())
    assert hash(lpu) == hash(dataclasses.replace(lpu))


def test_a_target_file_may_add_an_fp4_peak(tmp_path):
    path = tmp_path / "lpu-fp4.toml"
    path.write_text('base = "lpu"\n[chip.peak_ops_per_s]\nfp4 = "1500 TOPS"\n'
                    '[chip.install_bytes_per_weight]\nfp4 = "4 bit"\n')
    chip = load_target(str(path)).chip
    assert chip.peak_ops("nvfp4") == 1.5e15 and chip.runs_natively("mxfp4")
    assert chip.install_bytes("nvfp4") == 0.5 + 1 / 16  # the codes as stored, and their e4m3 scales
    assert not load_target("lpu").chip.runs_natively("mxfp4")
    assert load_target("lpu").chip.install_bytes("nvfp4") == 2.0  # widened to the lpu's fp8 path (fp16 planes)


def test_an_fp4_peak_needs_its_install_cost(tmp_path):
    path = tmp_path / "lpu-fp4.toml"
    path.write_text('base = "lpu"\n[chip.peak_ops_per_s]\nfp4 = "1500 TOPS"\n')
    with pytest.raises(ConfigError, match="install_bytes_per_weight.*fp4"):
        load_target(str(path))


def test_b200_numbers_agree_with_their_derivations():
    b200 = load_target("b200")
    chip = b200.chip
    assert chip.memory_kind == "hbm" and chip.sram_bytes / 2**30 == pytest.approx(180, rel=0.01)
    assert chip.peak_ops("fp16") == pytest.approx(148 * 8192 * chip.clock_hz, rel=0.01)
    assert chip.peak_ops("fp4") == 2 * chip.peak_ops("fp8") == 4 * chip.peak_ops("fp16")
    assert chip.peak_ops("nvfp4") == chip.peak_ops("mxfp4") == chip.peak_ops("fp4")  # native e2m1
    assert b200.local_links_per_chip * b200.local_link.bw_bytes_per_s * 2 == pytest.approx(1.8e12)


def test_rubin_and_lpu3_rack_figures_agree_with_their_per_chip_ones():
    rubin, lpu3 = load_target("rubin"), load_target("lpu3")
    assert rubin.chips_per_node * rubin.local_links_per_chip * rubin.local_link.bw_bytes_per_s * 2 == \
        pytest.approx(260e12, rel=0.01)  # NVL72's 260 TB/s of NVLink 6
    assert 72 * rubin.chip.peak_ops("fp4") == pytest.approx(2.5e18, rel=0.01)  # 2.5 EF NVFP4 training
    rack = lpu3.chips_per_node * lpu3.nodes_per_group
    assert rack == 256 and rack * lpu3.chip.sram_bytes == 128e9
    assert rack * lpu3.chip.mem_bw_bytes_per_s == pytest.approx(40e15, rel=0.05)  # "40 PB/s"
    assert rack * lpu3.chip.peak_ops("fp8") == pytest.approx(315e15)
    assert lpu3.c2c_links_per_chip * lpu3.local_link.bw_bytes_per_s * 2 == pytest.approx(2.5e12, rel=0.1)
    # No fp4 peak is published for the Groq 3 LPU: e2m1 weights run dequantised at its fp8 rate.
    assert "fp4" not in lpu3.chip.peak_ops_per_s and lpu3.chip.peak_ops("nvfp4") == lpu3.chip.peak_ops("fp8")


def test_lpu_numbers_agree_with_their_derivations():
    lpu = load_target("lpu")
    chip = lpu.chip
    assert chip.sram_bytes == 220 * 2**20
    assert chip.sram_bytes == pytest.approx(230e6, rel=0.005)  # the "230 MB" marketing figure
    macs = chip.matrix_planes * chip.matrix_dim**2
    assert macs == 409_600
    assert chip.peak_ops("int8") == pytest.approx(macs * 2 * chip.clock_hz, rel=0.03)
    assert chip.peak_ops("fp16") == pytest.approx(chip.peak_ops("int8") / 4, rel=0.01)
    assert chip.peak_ops("int4") == chip.peak_ops("int8")  # dequantised to int8
    assert chip.vector_bytes == 320
    assert chip.op_latency_cycles == 93  # 2 MXM + 2 SXM + 88 MEM + 1 VXM slices
    assert chip.usable_sram_bytes == chip.sram_bytes - 5 * 2**20


def test_lpu_weight_path_follows_the_papers_bandwidth_budget():
    chip = load_target("lpu").chip
    assert chip.mem_bytes_per_cycle == 2 * 44 * 2 * 320 == 56_320  # 55 TiB/s at the paper's 1 GHz
    assert chip.mem_bw_bytes_per_s == pytest.approx(50.7e12, rel=0.001)  # at the real 900 MHz
    assert chip.stream_bytes_per_cycle == 2 * 32 * 320 == 20_480
    assert chip.stream_port_bytes_per_cycle == 32 * 320
    # "409,600 weights into the four 320x320 arrays in less than 40 cycles"
    assert chip.mxm_install_bytes_per_cycle * 40 == chip.matrix_planes * chip.matrix_dim**2 == 409_600
    # fp16 takes a pair of byte planes: it installs at half the 8-bit rate
    assert chip.install_bytes_per_weight == {"fp16": 2.0, "fp8": 2.0, "int8": 1.0, "int4": 1.0}
    # at batch 1 the install path is ~5.5x slower than the SRAM: the decode ceiling
    assert chip.mem_bytes_per_cycle / chip.mxm_install_bytes_per_cycle == pytest.approx(5.5)


def test_lpu_system_agrees_with_published_totals():
    lpu = load_target("lpu")
    assert lpu.max_chips == 145 * lpu.chips_per_group == 10_440
    assert lpu.chips_per_group == 72
    assert lpu.local_links_per_chip == lpu.chips_per_node - 1
    # 4 lanes x 25.78125 Gb/s (the A1.4b board speed) per direction per link; 16 links x 2 directions
    # = 412.5 GB/s, under the published 480 GB/s of 30 Gbps lanes.
    assert lpu.local_link.bw_bytes_per_s == lpu.global_link.bw_bytes_per_s == 4 * 25.78125e9 / 8
    aggregate = lpu.c2c_links_per_chip * lpu.local_link.bw_bytes_per_s * 2
    assert aggregate == pytest.approx(480e9 * 25.78125 / 30)
    assert lpu.local_link.latency_s == pytest.approx(216 / 900e6)
    assert lpu.sync_cycles == 216


def test_h100_numbers_agree_with_their_derivations():
    h100 = load_target("h100")
    chip = h100.chip
    assert chip.memory_kind == "hbm" and chip.sram_bytes == 80 * 2**30
    assert chip.mem_bw_bytes_per_s == 3.35e12
    assert chip.peak_ops("fp16") == pytest.approx(132 * 4096 * chip.clock_hz, rel=0.01)
    assert chip.peak_ops("fp8") == pytest.approx(2 * chip.peak_ops("fp16"), rel=0.001)
    nvlink_bidirectional = h100.local_links_per_chip * h100.local_link.bw_bytes_per_s * 2
    assert nvlink_bidirectional == pytest.approx(900e9)
    assert h100.global_link.bw_bytes_per_s == 50e9  # NDR 400 Gb/s
    assert chip.usable_sram_bytes == pytest.approx(0.9 * chip.sram_bytes, rel=1e-9)


def test_lpu_mini_keeps_the_lpu_rules_with_small_sram():
    lpu, mini = load_target("lpu"), load_target("lpu-mini")
    assert mini.chip.sram_bytes == 384 * 2**10
    assert mini.chip.program_reserve_bytes / mini.chip.sram_bytes == pytest.approx(
        lpu.chip.program_reserve_bytes / lpu.chip.sram_bytes, rel=1e-3
    )
    assert mini.max_chips == 256
    assert (mini.dram.bw_bytes_per_s, mini.flash.latency_s) == (lpu.dram.bw_bytes_per_s, lpu.flash.latency_s)
    same = dataclasses.replace(mini, name="lpu", max_chips=lpu.max_chips, chip=lpu.chip, dram=lpu.dram,
                               flash=lpu.flash)
    assert same == lpu


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown precision 'fp6'.*fp8"):
        load_target("lpu").chip.peak_ops("fp6")


def test_spec_rejects_inconsistent_values():
    lpu = load_target("lpu")
    with pytest.raises(ConfigError, match="chip.program_reserve_bytes"):
        dataclasses.replace(lpu.chip, program_reserve_bytes=lpu.chip.sram_bytes)
    with pytest.raises(ConfigError, match="chip.peak_ops_per_s"):
        dataclasses.replace(lpu.chip, peak_ops_per_s={"fp16": 1.0})
    with pytest.raises(ConfigError, match="local_links_per_chip"):
        dataclasses.replace(lpu, local_links_per_chip=3)
    with pytest.raises(ConfigError, match="max_chips"):
        dataclasses.replace(load_target("h100"), max_chips=10_000)


# ---------------------------------------------------------------- TOML files


def test_lpu_toml_example_equals_the_preset():
    assert load_target(str(EXAMPLES / "lpu.toml")) == load_target("lpu")


def test_every_example_target_loads():
    files = sorted(EXAMPLES.glob("*.toml"))
    assert len(files) >= 2
    for path in files:
        assert load_target(str(path)).name == path.stem


def test_groq3_sketch_overrides_and_inherits():
    system = load_target(str(EXAMPLES / "lpu-500mb.toml"))
    assert system.chip.sram_bytes == 500_000_000
    assert system.chip.mem_bw_bytes_per_s == 150e12
    assert system.chip.peak_ops("fp8") == 1230e12
    assert system.chip.vector_bytes == 320  # inherited from the lpu
    assert system.local_link.bw_bytes_per_s == 14e9  # 112 Gb/s
    assert system.c2c_links_per_chip * system.local_link.bw_bytes_per_s * 2 == pytest.approx(2.5e12, rel=0.1)


def _write(tmp_path: Path, text: str, name: str = "x.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_memory_bandwidth_may_be_given_per_cycle_or_per_second(tmp_path):
    per_second = load_target(str(_write(tmp_path, 'base = "lpu"\n[chip]\nmem_bw_bytes_per_s = "90 TB/s"\n')))
    assert per_second.chip.mem_bytes_per_cycle == pytest.approx(1e5)  # at the lpu's 900 MHz
    faster = load_target(str(_write(tmp_path, 'base = "lpu"\n[chip]\nclock_hz = "1.8 GHz"\n')))
    # per-cycle figures follow the clock: an SRAM clocked with the chip
    assert faster.chip.mem_bw_bytes_per_s == 2 * load_target("lpu").chip.mem_bw_bytes_per_s


def test_override_keeps_the_rest_of_a_table(tmp_path):
    path = _write(tmp_path, 'base = "lpu"\n[chip]\nsram_bytes = "500 MB"\n[chip.peak_ops_per_s]\nfp8 = "1 POPS"\n')
    system = load_target(path)
    lpu = load_target("lpu")
    assert system.name == "x" and system.chip.name == lpu.chip.name
    assert system.chip.sram_bytes == 500_000_000
    assert system.chip.peak_ops("fp8") == 1e15 and system.chip.peak_ops("int8") == lpu.chip.peak_ops("int8")
    assert dataclasses.replace(system, name="lpu", chip=lpu.chip) == lpu


def test_base_may_be_another_file(tmp_path):
    _write(tmp_path, 'base = "lpu"\nmax_chips = 144\n', "parent.toml")
    child = load_target(_write(tmp_path, 'base = "parent.toml"\n[chip]\nclock_hz = "1 GHz"\n', "child.toml"))
    assert child.max_chips == 144 and child.chip.clock_hz == 1e9 and child.name == "child"
    with pytest.raises(ConfigError, match="based on itself"):
        load_target(_write(tmp_path, 'base = "loop.toml"\n', "loop.toml"))


ERRORS = [
    # (file text, what the message must say besides the file name)
    ('base = "lpu"\n[chip]\nsram_byte = "500 MB"\n', [":3:", "chip.sram_byte", "unknown field", "chip.sram_bytes"]),
    ('base = "lpu"\nsram_bytes = "1 GB"\n', [":2:", "unknown field", "did you mean 'chip.sram_bytes'"]),
    (
        'base = "lpu"\n[chip]\nsram_bytes = "12 parsecs"\n',
        [":3:", "chip.sram_bytes", "expected a size like '230 MB', got '12 parsecs'"],
    ),
    ('base = "lpu"\n[local_link]\nlatency_s = "240 MB"\n', ["local_link.latency_s", "expected a time"]),
    ('base = "lpu"\nchips_per_node = 8.5\n', ["chips_per_node", "whole number"]),
    ('base = "lpu"\nchips_per_node = "eight"\n', ["chips_per_node", "whole number"]),
    ('base = "lpu"\n[chip]\nsram_bytes = "0 B"\n', ["chip.sram_bytes", "must be positive"]),
    ('base = "lpu"\n[local_link]\nlatency_s = 240\n', [":3:", "local_link.latency_s", "240 has no unit",
                                                       "like '240 ns'"]),
    ('base = "lpu"\n[chip]\nclock_hz = "900"\n', ["chip.clock_hz", "'900' has no unit"]),
    ('base = "lpu"\n[chip]\nmem_bw_bytes_per_s = "-1 TB/s"\n', ["chip.mem_bw_bytes_per_s", "must be positive"]),
    ('base = "lpu"\n[chip]\nprogram_reserve_bytes = "300 MiB"\n', ["chip.program_reserve_bytes", "less than"]),
    ('base = "lpu"\n[chip]\nmem_bytes_per_cycle = "1 B/cycle"\nmem_bw_bytes_per_s = "1 TB/s"\n',
     ["chip.mem_bw_bytes_per_s", "not both"]),
    ('base = "lpu"\n[chip]\nmxm_install_bytes_per_cycle = "10 GB/s"\n',
     [":3:", "chip.mxm_install_bytes_per_cycle", "expected a bandwidth per clock cycle like '10240 B/cycle'"]),
    ('base = "lpu"\n[chip]\nstream_port_bytes_per_cycle = "40000 B/cycle"\n',
     ["chip.stream_port_bytes_per_cycle", "must not exceed chip.stream_bytes_per_cycle"]),
    ('base = "lpu"\n[chip.install_bytes_per_weight]\nfp16 = "2 furlongs"\n',
     ["chip.install_bytes_per_weight.fp16", "expected a size of one weight"]),
    ('base = "lpu"\ntopology = "torus"\n', ["topology", "dragonfly, nvlink, mesh"]),
    ('base = "h100"\nlocal_fabric = "crossbar"\n', [":2:", "local_fabric", "direct, switch"]),
    ('base = "lpu"\ntopology = "mesh"\n', ["mesh_rows", "a mesh needs mesh_rows and mesh_cols"]),
    ('base = "lpu"\nchip = 3\n', ["chip", "expected a table"]),
    ('base = "lpx"\n', [":1:", "base", "unknown preset 'lpx'", "did you mean 'lpu'"]),
    ('name = "x"\n[chip]\nsram_bytes = "1 MB"\n', ["missing required field 'chip.memory_kind'"]),
    ('base = "lpu"\n[chip\nsram_bytes = 1\n', [":2:", "invalid TOML"]),
    ('base = "lpu"\nmax_chips = = 3\n', [":2:", "invalid TOML"]),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_toml_errors_name_file_and_field(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_target(path)
    message = str(err.value)
    assert message.startswith(path)
    for part in expected:
        assert part in message


def test_missing_file_and_unknown_name(tmp_path):
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="nope.toml: no such target file"):
        load_target(missing)
    with pytest.raises(ConfigError, match="unknown target 'lpx'.*did you mean 'lpu'"):
        load_target("lpx")


def test_full_file_without_base_needs_every_field(tmp_path):
    text = (EXAMPLES / "lpu.toml").read_text().replace('clock_hz = "900 MHz"\n', "")
    with pytest.raises(ConfigError, match="missing required field 'chip.clock_hz'"):
        load_target(_write(tmp_path, text))


# ---------------------------------------------------------------- a target written out (a build's target.toml)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_written_in_full_loads_back_equal(name):
    text = dumps_target(PRESETS[name])
    assert "\nbase =" not in text
    assert loads_target(text, f"{name}.toml") == PRESETS[name]


def test_every_example_file_written_back_loads_equal():
    for path in sorted(EXAMPLES.glob("*.toml")):
        spec = load_target(str(path))
        assert loads_target(dumps_target(spec), path.name) == spec, path.name


_FLOATS = st.floats(min_value=1e-12, max_value=1e18, allow_nan=False, allow_infinity=False)


@given(_FLOATS, _FLOATS, _FLOATS, _FLOATS, st.integers(min_value=2**23, max_value=2**50))
def test_written_targets_keep_every_float_bit_for_bit(bw, latency, clock, ops, sram):
    lpu = PRESETS["lpu"]
    chip = dataclasses.replace(lpu.chip, clock_hz=clock, sram_bytes=sram, mem_bytes_per_cycle=bw / clock,
                               peak_ops_per_s={p: ops for p in PRECISIONS})
    spec = dataclasses.replace(lpu, chip=chip, local_link=dataclasses.replace(lpu.local_link, latency_s=latency))
    assert loads_target(dumps_target(spec), "x.toml") == spec
    wse3 = PRESETS["wse3"]
    wafer = dataclasses.replace(wse3, chip=dataclasses.replace(wse3.chip, clock_hz=clock),
                                local_link=dataclasses.replace(wse3.local_link, bw_bytes_per_s=bw))
    assert loads_target(dumps_target(wafer), "w.toml") == wafer


# ---------------------------------------------------------------- units

QUANTITIES = [
    ("230 MB", SIZE, 230_000_000),
    ("220 MiB", SIZE, 220 * 2**20),
    ("1 KB", SIZE, 1000),
    ("1KiB", SIZE, 1024),
    ("4096 B", SIZE, 4096),
    ("80 TB/s", RATE, 80e12),
    ("14 GB/s", RATE, 14e9),
    ("400 Gb/s", RATE, 50e9),
    ("55 TiB/s", RATE, 55 * 2**40),
    ("240 ns", TIME, 240e-9),
    ("2 us", TIME, 2e-6),
    ("3e-6 s", TIME, 3e-6),
    ("900 MHz", FREQUENCY, 900e6),
    ("1.83 GHz", FREQUENCY, 1.83e9),
    ("750 TOPS", OPS, 750e12),
    ("188 TFLOPS", OPS, 188e12),
    ("1e9 OPS", OPS, 1e9),
]


@pytest.mark.parametrize(("text", "kind", "value"), QUANTITIES)
def test_parse_quantity(text, kind, value):
    assert parse_quantity(text, kind, "f: x") == value


@pytest.mark.parametrize("bad", ["12 parsecs", "MB", "", "1.5 B", True, [1], "230 Mb", "230 mB", float("inf"), 4096,
                                 "4096", 2.5])
def test_bad_sizes_are_config_errors(bad):
    with pytest.raises(ConfigError, match=r"^f\.toml: chip\.sram_bytes: "):
        parse_quantity(bad, SIZE, "f.toml: chip.sram_bytes")


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(SIZE.units)))
def test_size_units_round_trip(count, unit):
    assert parse_quantity(f"{count} {unit}", SIZE, "x") == count * SIZE.units[unit]


@given(st.integers(min_value=0, max_value=2**70))
def test_format_size_round_trips(n_bytes):
    assert parse_quantity(format_size(n_bytes), SIZE, "x") == n_bytes


def test_format_size_prefers_exact_units():
    assert format_size(220 * 2**20) == "220 MiB"
    assert format_size(230_000_000) == "230 MB"
    assert format_size(12_345) == "12345 B"


# ---------------------------------------------------------------- topology


def _links_per_chip(graph: nx.Graph) -> Counter:
    count: Counter = Counter()
    for u, v, edge in graph.edges(data=True):
        count[u, edge["kind"]] += edge["links"]
        count[v, edge["kind"]] += edge["links"]
    return count


def _check_structure(system: SystemSpec, graph: nx.Graph) -> None:
    """Connected; attributes right; a chip's wires never exceed its ports (switched edges share them)."""
    assert nx.is_connected(graph)
    ports = {"local": system.local_links_per_chip, "global": system.global_links_per_chip}
    wired = _links_per_chip(graph)
    for chip, attrs in graph.nodes(data=True):
        assert attrs["node"] == chip // system.chips_per_node
        assert attrs["group"] == chip // system.chips_per_group
        if system.topology == "dragonfly":
            assert all(wired[chip, kind] <= n for kind, n in ports.items())
    for u, v, edge in graph.edges(data=True):
        same_node = graph.nodes[u]["node"] == graph.nodes[v]["node"]
        assert edge["kind"] == ("local" if same_node else "global")
        assert edge["switched"] == (system.topology == "nvlink")
        assert 1 <= edge["links"] <= ports[edge["kind"]]
        link = system.local_link if same_node else system.global_link
        assert edge["bw_bytes_per_s"] == edge["links"] * link.bw_bytes_per_s
        assert edge["latency_s"] == link.latency_s


@pytest.mark.parametrize(
    ("name", "chips"),
    [
        ("lpu", 1),
        ("lpu", 5),
        ("lpu", 8),
        ("lpu", 20),
        ("lpu", 72),
        ("lpu", 100),
        ("lpu-mini", 256),
        ("h100", 8),
        ("h100", 44),
    ],
)
def test_small_topologies_are_well_formed(name, chips):
    system = load_target(name)
    graph = build_topology(system, chips)
    assert sorted(graph.nodes) == list(range(chips))
    _check_structure(system, graph)


@pytest.mark.parametrize(("name", "chips"), [("lpu", 37), ("lpu", 160), ("lpu-mini", 256), ("h100", 44)])
def test_hops_and_routes_match_networkx(name, chips):
    graph = build_topology(load_target(name), chips)
    lengths = dict(nx.all_pairs_shortest_path_length(graph))
    rng = random.Random(0)
    pairs = [(rng.randrange(chips), rng.randrange(chips)) for _ in range(300)]
    for a, b in pairs:
        assert hops(graph, a, b) == lengths[a][b]
        found = route(graph, a, b)
        assert found.path[0] == a and found.path[-1] == b
        assert all(graph.has_edge(u, v) for u, v in zip(found.path, found.path[1:], strict=False))
        fastest = nx.dijkstra_path_length(graph, a, b, weight="latency_s")
        assert found.latency_s == pytest.approx(fastest, rel=1e-9, abs=1e-15)


def test_route_breaks_ties_by_hops_then_lowest_chip():
    graph = build_topology(load_target("h100"), 16)
    assert route(graph, 0, 11).path == (0, 3, 11)  # NVLink to rail 3, then InfiniBand
    assert route(graph, 0, 8).path == (0, 8)  # same rail: one InfiniBand hop
    assert route(graph, 5, 5).hops == 0


def test_lpu_single_group_uses_every_global_port_inside():
    system = load_target("lpu")
    links = _links_per_chip(build_topology(system, 72))
    assert all(links[c, "global"] == system.global_links_per_chip for c in range(72))


def test_full_lpu_builds_fast_and_keeps_the_hop_bound():
    system = load_target("lpu")
    start = time.perf_counter()
    graph = build_topology(system, system.max_chips)
    assert time.perf_counter() - start < 2.0
    links = _links_per_chip(graph)
    assert all(links[c, "local"] == 7 and links[c, "global"] == 4 for c in range(system.max_chips))
    # Exactly one link between every two racks: 145 x 144 / 2 inter-group edges.
    inter = [1 for u, v in graph.edges if graph.nodes[u]["group"] != graph.nodes[v]["group"]]
    assert len(inter) == 145 * 144 // 2
    for source in (0, 77, 5_000, 10_439):
        assert max(nx.single_source_shortest_path_length(graph, source).values()) <= 7
    rng = random.Random(1)
    for _ in range(200):
        a, b = rng.randrange(system.max_chips), rng.randrange(system.max_chips)
        n = hops(graph, a, b)
        if a // 8 == b // 8:
            assert n <= 1
        elif a // 72 == b // 72:
            assert n <= 3
        else:
            assert n <= 7
    assert route(graph, 0, 10_439).latency_s < 3e-6  # "<3 us end to end" (ISCA 2022)


def test_h100_topology_is_nvswitch_plus_rails():
    system = load_target("h100")
    graph = build_topology(system, 256)
    _check_structure(system, graph)
    for u, v, edge in graph.edges(data=True):
        assert edge["switched"]
        if edge["kind"] == "local":
            assert edge["bw_bytes_per_s"] == 450e9
        else:
            assert u % 8 == v % 8  # rail-aligned
    assert max(nx.single_source_shortest_path_length(graph, 0).values()) == 2


@pytest.mark.parametrize("chips", [44, 256])
def test_chip_hops_is_exact_on_nvlink(chips):
    system = load_target("h100")
    lengths = dict(nx.all_pairs_shortest_path_length(build_topology(system, chips)))
    assert all(chip_hops(system, a, b) == lengths[a][b] for a in range(chips) for b in range(chips))


def test_chip_hops_is_a_tight_bound_on_full_dragonfly_groups():
    system = load_target("lpu")
    graph = build_topology(system, system.max_chips)
    for source in (0, 4_321):
        worst: Counter = Counter()
        for chip, n in nx.single_source_shortest_path_length(graph, source).items():
            bound = chip_hops(system, source, chip)
            assert n <= bound
            worst[bound] = max(worst[bound], n)
        assert all(worst[bound] == bound for bound in (0, 1, 3, 7))


def test_chip_hops_checks_chip_ids():
    with pytest.raises(ConfigError, match="no chip 256"):
        chip_hops(load_target("lpu-mini"), 0, 256)


def test_topology_errors():
    lpu = load_target("lpu")
    with pytest.raises(ConfigError, match="max_chips"):
        build_topology(lpu, lpu.max_chips + 1)
    with pytest.raises(ConfigError, match="between 1"):
        build_topology(lpu, 0)
    graph = build_topology(lpu, 16)
    with pytest.raises(ConfigError, match="no chip 16"):
        hops(graph, 0, 16)


_DIGEST = """
from targets import build_topology, load_target, route
import hashlib
g = build_topology(load_target("lpu-mini"), 256)
text = repr(list(g.edges(data=True))) + repr([route(g, a, 255 - a).path for a in range(0, 256, 17)])
print(hashlib.sha256(text.encode()).hexdigest())
"""


def test_topology_is_identical_across_processes():
    digests = set()
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", _DIGEST], env=env, cwd=ROOT, check=True, capture_output=True, text=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    assert len(next(iter(digests))) == len(hashlib.sha256().hexdigest())


def test_presets_table_matches_loader():
    assert set(PRESETS) == set(list_targets())
