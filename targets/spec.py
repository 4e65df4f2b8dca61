"""Frozen records of a target machine: a link, a chip, and a system of chips joined by links."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields

from ir.errors import ConfigError
from ir.types import DType

PRECISIONS = ("fp16", "fp8", "int8", "int4")  # every peak table has these
# A peak a table may add: native e2m1 products (NVFP4 and MXFP4 weights).
OPTIONAL_PRECISIONS = ("fp4",)
# Block-scaled weight formats (compiler --precision) and the peak key each runs at natively.
FORMAT_PRECISION = {"nvfp4": "fp4", "mxfp4": "fp4", "mxfp8": "fp8"}
# Dequantised on the way in: a target whose table lacks a precision's key widens those codes
# (times their block scales) into its MXM on the way in, at this key's rate and install cost
# (e2m1 values and their scales fit the 8-bit floating path exactly; the int8 one would need
# integer scales).
DEQUANTISED_AT = {"fp4": "fp8"}
# Keys an install table may hold: the precisions, and a block-scaled format of its own where the
# default (Timing.install_bytes: its rate key's entry, plus its scales when stored as is) is wrong.
INSTALL_KEYS = PRECISIONS + OPTIONAL_PRECISIONS + tuple(FORMAT_PRECISION)


def install_bytes(name: str, table: dict[str, float]) -> float:
    """What one weight costs on the install path (an install_bytes_per_weight `table`), for a
    precision or a block-scaled format: its own entry when the table has one; else its rate key's
    (mxm_rate_key), plus the block scales' share when that entry is the codes' own width (installed
    as stored; a format widened on the way in installs as the wider one, its scales applied there)."""
    if name in table:
        return table[name]
    per_weight = table[mxm_rate_key(name, table)]
    dtype = DType(name) if name in FORMAT_PRECISION else None
    if dtype is not None and per_weight <= dtype.bits / 8:
        per_weight += dtype.block.scale.bits / 8 / dtype.block.size
    return per_weight


def mxm_rate_key(precision: str, table: dict[str, float]) -> str:
    """The key of `table` (a peak or install table) that a weight format or precision runs at: its
    own when the table has it, else the DEQUANTISED_AT rule's."""
    key = FORMAT_PRECISION.get(precision, precision)
    return key if key in table else DEQUANTISED_AT.get(key, key)
TOPOLOGIES = ("dragonfly", "nvlink", "mesh")
# Memory below a chip's SRAM, fastest first: host DRAM (over the host link), then flash (NVMe).
TIER_NAMES = ("dram", "flash")
# What one tier record serves: every chip of a node shares it, or each chip has its own.
TIER_SHARING = ("node", "chip")
# How a node's devices reach each other: "direct" one link per peer (a message to one peer crosses its
# link alone), "switch" through a non-blocking switch (every message spreads over all the sender's
# local links, so a device sends at its aggregate local bandwidth whatever the number of peers).
LOCAL_FABRICS = ("direct", "switch")
MEMORY_KINDS = ("sram", "hbm")
# What a device's Programs are written in: "tsp" per-chip unit queues (the LPU), "wse" role streams
# replicated over a region's cores (a wafer), "none" no instruction set (plan and compare only).
ISAS = ("tsp", "wse", "none")


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One chip-to-chip link: bandwidth per direction and the latency of one hop over it."""

    bw_bytes_per_s: float  # per direction, one link
    latency_s: float  # one hop: wire + SerDes + switch/forwarding

    def __post_init__(self) -> None:
        _require(self.bw_bytes_per_s > 0, "bw_bytes_per_s", f"must be positive, got {self.bw_bytes_per_s}")
        _require(self.latency_s >= 0, "latency_s", f"must not be negative, got {self.latency_s}")


@dataclass(frozen=True, slots=True)
class MemoryTier:
    """Memory below SRAM that KV blocks may live in: host DRAM beside a node, NVMe flash below it.

    `capacity_bytes` and `bw_bytes_per_s` are per `per` ("node": the node's chips share them; "chip":
    each chip has its own). The bandwidth is what the tier delivers to the chips it serves together:
    the smaller of the memory's own rate and the sum of their links to it. `latency_s` is one
    transfer's fixed cost (request to first byte). A node tier's bandwidth is shared evenly by the
    node's chips, so each chip's share is bw / chips_per_node."""

    capacity_bytes: int
    bw_bytes_per_s: float
    latency_s: float
    per: str = "node"

    def __post_init__(self) -> None:
        _require(self.capacity_bytes > 0, "capacity_bytes", f"must be positive, got {self.capacity_bytes}")
        _require(self.bw_bytes_per_s > 0, "bw_bytes_per_s", f"must be positive, got {self.bw_bytes_per_s}")
        _require(self.latency_s >= 0, "latency_s", f"must not be negative, got {self.latency_s}")
        _require(self.per in TIER_SHARING, "per", f"must be one of {', '.join(TIER_SHARING)}, got '{self.per}'")

    @property
    def drain_s(self) -> float:
        """Capacity over bandwidth: how long the tier takes to turn over all it holds (its retention horizon)."""
        return self.capacity_bytes / self.bw_bytes_per_s


@dataclass(frozen=True, slots=True)
class ChipSpec:
    """One chip: its memory, clock, compute rates and the fixed costs the scheduler must respect.

    `sram_bytes` and `mem_bytes_per_cycle` describe the memory weights live in: on-die SRAM for the
    LPU, HBM for the H100 (`memory_kind` says which). `peak_ops_per_s` is dense (no sparsity) and
    keyed by PRECISIONS, plus "fp4" (OPTIONAL_PRECISIONS) where the chip multiplies e2m1 natively;
    a precision the chip lacks natively carries the rate it runs at after conversion (e.g. int4
    weights dequantised to int8), and a missing fp4 key runs at the DEQUANTISED_AT rule's rate.

    The weight path, per cycle of `clock_hz` (the rules in targets/timing.py):
    - `stream_bytes_per_cycle`: what the on-chip streams carry for all units together (every result a
      unit puts on a stream counts once); `stream_port_bytes_per_cycle`: what one instruction may put
      on or take off streams (on the LPU one direction's streams);
    - `mxm_install_bytes_per_cycle`: how fast weights enter the matrix unit, and
      `install_bytes_per_weight` (by precision) what one weight costs on that path: the plane bytes it
      occupies on the LPU (fp16 takes a pair of byte planes; formats without native support are
      widened on the way in), the bytes read from HBM on a GPU. The unit works on `matrix_dim`-square
      tiles, so a k x n weight block installs ceil(k/dim) x ceil(n/dim) whole tiles.
    """

    name: str
    memory_kind: str  # "sram" | "hbm"
    sram_bytes: int
    mem_bytes_per_cycle: float
    clock_hz: float
    peak_ops_per_s: dict[str, float]
    vector_bytes: int
    matrix_dim: int
    matrix_planes: int
    program_reserve_bytes: int  # memory held back for instructions and I/O buffers
    op_latency_cycles: int  # fixed latency of one dependent op through the chip
    stream_bytes_per_cycle: float
    stream_port_bytes_per_cycle: float
    mxm_install_bytes_per_cycle: float
    install_bytes_per_weight: dict[str, float]
    isa: str  # ISAS
    vector_alus: int  # element-wise operations the vector unit does a cycle
    streams: int  # stream registers (or a core's data-structure registers) a schedule may hold at once

    def __post_init__(self) -> None:
        # Private copies, so the caller's dicts cannot change a frozen spec; treat them as read-only.
        object.__setattr__(self, "peak_ops_per_s", dict(self.peak_ops_per_s))
        object.__setattr__(self, "install_bytes_per_weight", dict(self.install_bytes_per_weight))
        self._validate()

    def _validate(self) -> None:
        _require(self.memory_kind in MEMORY_KINDS, "chip.memory_kind", f"must be one of {MEMORY_KINDS}")
        _require(self.isa in ISAS, "chip.isa", f"must be one of {', '.join(ISAS)}, got '{self.isa}'")
        for name in ("sram_bytes", "mem_bytes_per_cycle", "clock_hz", "vector_bytes", "matrix_dim", "matrix_planes",
                     "stream_bytes_per_cycle", "stream_port_bytes_per_cycle", "mxm_install_bytes_per_cycle",
                     "vector_alus", "streams"):
            value = getattr(self, name)
            _require(value > 0, f"chip.{name}", f"must be positive, got {value}")
        _require(self.stream_port_bytes_per_cycle <= self.stream_bytes_per_cycle, "chip.stream_port_bytes_per_cycle",
                 f"must not exceed chip.stream_bytes_per_cycle ({self.stream_bytes_per_cycle})")
        for name in ("program_reserve_bytes", "op_latency_cycles"):
            _require(getattr(self, name) >= 0, f"chip.{name}", "must not be negative")
        _require(
            self.program_reserve_bytes < self.sram_bytes,
            "chip.program_reserve_bytes",
            f"must be less than chip.sram_bytes ({self.sram_bytes})",
        )
        for name, allowed in (("peak_ops_per_s", PRECISIONS + OPTIONAL_PRECISIONS),
                              ("install_bytes_per_weight", INSTALL_KEYS)):
            keys = set(getattr(self, name))
            _require(set(PRECISIONS) <= keys <= set(allowed), f"chip.{name}",
                     f"needs the keys {PRECISIONS} (and may add {allowed[len(PRECISIONS):]}), got {tuple(keys)}")
        native = {p for p in OPTIONAL_PRECISIONS if p in self.peak_ops_per_s}
        _require(native == {p for p in OPTIONAL_PRECISIONS if p in self.install_bytes_per_weight},
                 "chip.install_bytes_per_weight", "needs an fp4 entry exactly when chip.peak_ops_per_s has one")
        for key, rate in self.peak_ops_per_s.items():
            _require(rate > 0, f"chip.peak_ops_per_s.{key}", f"must be positive, got {rate}")
        for key, size in self.install_bytes_per_weight.items():
            _require(size > 0, f"chip.install_bytes_per_weight.{key}", f"must be positive, got {size}")

    def __hash__(self) -> int:
        values = (getattr(self, f.name) for f in fields(self))
        return hash(tuple(tuple(sorted(v.items())) if isinstance(v, dict) else v for v in values))

    @property
    def mem_bw_bytes_per_s(self) -> float:
        """The memory's bandwidth in bytes per second (its per-cycle figure at the clock)."""
        return self.mem_bytes_per_cycle * self.clock_hz

    @property
    def mxm_panel(self) -> int:
        """Rows and columns of the widest weight panel one MXM instruction covers: every plane's tiles."""
        return self.matrix_dim * self.matrix_planes

    @property
    def usable_sram_bytes(self) -> int:
        """Memory left for weights, KV cache, state and activations after the program reserve."""
        return self.sram_bytes - self.program_reserve_bytes

    def peak_ops(self, precision: str) -> float:
        """Dense peak ops/s at `precision` (one of PRECISIONS, "fp4", or a block-scaled format of
        FORMAT_PRECISION), natively or by the DEQUANTISED_AT rule (mxm_rate_key)."""
        known = PRECISIONS + OPTIONAL_PRECISIONS + tuple(FORMAT_PRECISION)
        if precision not in known:
            hint = difflib.get_close_matches(precision, known, n=1)
            did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ConfigError(
                f"{self.name}: unknown precision '{precision}' (known: {', '.join(known)}){did_you_mean}"
            )
        return self.peak_ops_per_s[mxm_rate_key(precision, self.peak_ops_per_s)]

    def install_bytes(self, precision: str) -> float:
        """Install-path bytes of one weight at `precision` or of a block-scaled format (install_bytes)."""
        return install_bytes(precision, self.install_bytes_per_weight)

    def runs_natively(self, precision: str) -> bool:
        """Whether the peak table has `precision`'s own key (else it is dequantised on the way in)."""
        return FORMAT_PRECISION.get(precision, precision) in self.peak_ops_per_s


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """Devices grouped into nodes and groups, with the links that join them and the topology they form.

    A node's devices are joined by local links; global links leave the node. `nodes_per_group` is
    a Dragonfly group for "dragonfly" and the nodes under one rail of leaf switches for "nvlink".
    A "mesh" (a wafer-scale machine) is nodes of `mesh_rows` x `mesh_cols` devices: each device is
    one core (`chip`), each node a wafer; `local_link` is one fabric link between neighbouring cores
    (its latency one hop), `global_link` the link between wafers, and a core spends `step_cycles` on
    every message it takes off the fabric (the task a wavelet wakes, its add). Chips of the other
    topologies take a message at no such cost (their per-op latency covers it).
    `pool_link` is one chip's link to another machine (a second serving pool: the NIC of a GPU, a
    chip's port to another rack); it carries a request's KV cache from a prefill pool to a decode
    pool. It defaults to `global_link` (the link between nodes of one machine). `local_fabric` says
    whether a node's links run point to point ("direct") or through a switch ("switch", LOCAL_FABRICS).
    """

    name: str
    chip: ChipSpec
    chips_per_node: int
    nodes_per_group: int
    max_chips: int
    c2c_links_per_chip: int  # every chip-to-chip port the chip has, wired in our model or not
    local_links_per_chip: int  # links to chips of the same node
    global_links_per_chip: int  # links leaving the node
    local_link: LinkSpec
    global_link: LinkSpec
    topology: str  # TOPOLOGIES
    sync_cycles: int  # program-start / per-step synchronisation cost
    mesh_rows: int = 0  # "mesh": a node's devices as a grid (0 otherwise)
    mesh_cols: int = 0
    step_cycles: int = 0
    pool_link: LinkSpec | None = None  # one chip's link to another pool; None: global_link
    dram: MemoryTier | None = None  # host DRAM below the SRAM (TIER_NAMES), if the machine has it
    flash: MemoryTier | None = None  # NVMe flash below that
    local_fabric: str = "direct"  # LOCAL_FABRICS

    def __post_init__(self) -> None:
        if self.pool_link is None:
            object.__setattr__(self, "pool_link", self.global_link)
        _require(self.topology in TOPOLOGIES, "topology", f"must be one of {TOPOLOGIES}, got '{self.topology}'")
        _require(self.local_fabric in LOCAL_FABRICS, "local_fabric",
                 f"must be one of {LOCAL_FABRICS}, got '{self.local_fabric}'")
        for name in ("chips_per_node", "nodes_per_group", "max_chips", "c2c_links_per_chip", "local_links_per_chip"):
            _require(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        for name in ("global_links_per_chip", "sync_cycles", "mesh_rows", "mesh_cols", "step_cycles"):
            _require(getattr(self, name) >= 0, name, "must not be negative")
        wired = self.local_links_per_chip + self.global_links_per_chip
        _require(
            wired <= self.c2c_links_per_chip,
            "c2c_links_per_chip",
            f"must be at least local_links_per_chip + global_links_per_chip ({wired})",
        )
        _require(
            self.max_chips <= self.chips_per_node or self.global_links_per_chip > 0,
            "global_links_per_chip",
            "must be positive when max_chips exceeds chips_per_node",
        )
        TOPOLOGY_RULES[self.topology](self)

    @property
    def chips_per_group(self) -> int:
        return self.chips_per_node * self.nodes_per_group

    @property
    def max_nodes(self) -> int:
        return self.max_chips // self.chips_per_node

    @property
    def is_mesh(self) -> bool:
        return self.topology == "mesh"

    @property
    def tiers(self) -> dict[str, MemoryTier]:
        """The tiers below SRAM this machine declares, fastest first."""
        return {n: getattr(self, n) for n in TIER_NAMES if getattr(self, n) is not None}

    def tier(self, name: str) -> MemoryTier:
        """The tier `name` (TIER_NAMES); a one-line error when the machine declares none of that name."""
        found = self.tiers.get(name)
        if found is None:
            have = ", ".join(self.tiers) or "none"
            raise ConfigError(f"--kv-tier {name}: {self.name} declares no {name} tier (its tiers below SRAM: {have}; "
                              f"a target file adds one as [{name}])")
        return found

    def tier_bw_per_chip(self, name: str) -> float:
        """One chip's share of a tier's bandwidth (a node tier is shared evenly by the node's chips)."""
        t = self.tier(name)
        return t.bw_bytes_per_s / (self.chips_per_node if t.per == "node" else 1)


def _dragonfly(s: SystemSpec) -> None:
    _require(s.local_links_per_chip >= s.chips_per_node - 1, "local_links_per_chip",
             f"a dragonfly node is fully connected, so it needs at least chips_per_node - 1 ({s.chips_per_node - 1})")
    _no_mesh(s)


def _nvlink(s: SystemSpec) -> None:
    _require(s.max_chips <= s.chips_per_group, "max_chips",
             f"an nvlink system is modelled up to one rail group ({s.chips_per_group} chips); "
             "multi-tier InfiniBand fabrics are not modelled")
    _no_mesh(s)


def _no_mesh(s: SystemSpec) -> None:
    _require(s.mesh_rows == s.mesh_cols == 0, "mesh_rows", f"only a mesh topology has a grid, not {s.topology}")


def _mesh(s: SystemSpec) -> None:
    _require(s.mesh_rows > 0 and s.mesh_cols > 0, "mesh_rows", "a mesh needs mesh_rows and mesh_cols")
    _require(s.chips_per_node == s.mesh_rows * s.mesh_cols, "chips_per_node",
             f"a mesh node holds mesh_rows x mesh_cols = {s.mesh_rows * s.mesh_cols} devices, got {s.chips_per_node}")
    _require(s.max_chips % s.chips_per_node == 0, "max_chips", "a mesh system is whole nodes (wafers)")
    _require(s.nodes_per_group == 1, "nodes_per_group", "mesh nodes (wafers) form no groups")


TOPOLOGY_RULES = {"dragonfly": _dragonfly, "nvlink": _nvlink, "mesh": _mesh}
