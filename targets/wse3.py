"""The `wse3` preset: a Cerebras WSE-3-class wafer (CS-3), every number from a public source cited beside it.

A wafer is a mesh system: each device is one core (processing element), each node one wafer of
mesh_rows x mesh_cols cores, the local link one fabric link, the global link the wafer's system I/O.
"""

from __future__ import annotations

from targets.spec import ChipSpec, LinkSpec, SystemSpec

# Confidence tags: [V] primary source, [S] secondary, [D] derived here, [L] low, [U] unverified.
# "Argonne" is the SC24 tutorial's Cerebras page (github.com/argonne-lcf/AIaccelerators-SC24-tutorial);
# "WaferLLM" is github.com/MeshInfra/WaferLLM.

CORES_MARKETED = 900_000  # "900,000 AI cores": Argonne; aiwiki.ai/wiki/cerebras_wse_3 [S]
SRAM_MARKETED_BYTES = 44e9  # "44 GB on-chip SRAM": Argonne [S]
MEM_BW_MARKETED_BYTES_PER_S = 21e15  # "21 PB/s memory bandwidth": Argonne; AnandTech [S]
FABRIC_MARKETED_BITS_PER_S = 214e15  # "214 Pb/s fabric bandwidth": Argonne [S]

# SDK fabric of a WSE-3 as a program sees it: `cslc --arch=wse3 --fabric-dims=762,1172
# --fabric-offsets=4,1` (WaferLLM, Decode/WSE-3/WSE3_SDK_RUN_RESULTS.md) [V]. 762 x 1172 = 893,064
# positions, consistent with the marketed 900k cores. The offsets put the program rectangle 4
# columns in from the west and 1 row in from the north; the memcpy halo on the east and south
# sides is not stated there, so we assume the same widths on the opposite sides [U]: a program
# rectangle of (762 - 2*4) x (1172 - 2*1) = 754 x 1170 = 882,180 cores.
FABRIC_COLS, FABRIC_ROWS = 762, 1172
HALO_COLS, HALO_ROWS = 4, 1
MESH_COLS = FABRIC_COLS - 2 * HALO_COLS
MESH_ROWS = FABRIC_ROWS - 2 * HALO_ROWS

# 48 KB of SRAM per PE: ServeTheHome, HC34 (WSE-2) [S]; not restated for WSE-3, but 44 GB / 900k
# cores = 48.9 KB per core agrees [D]. Taken as 48 KiB.
CORE_SRAM_BYTES = 48 * 1024

# Per-core reserve for code, the task table and fabric I/O buffers: not published [U], a modelling
# parameter with a wide uncertainty. Low end: WaferLLM's kernels leave under 1 KiB per PE for code at
# their largest grids (github.com/MeshInfra/WaferLLM) [V/D], so small per-PE programs are possible.
# High end: WaferLLM's WSE-3 full-decode build at P=32 failed with "ran out of PE memory for data /
# task table" (Decode/WSE-3/WSE3_SDK_RUN_RESULTS.md) [V], so code and runtime data take a real share.
# We hold back 8 KiB (1/6 of the core), plausibly 1-8 KiB: a file with `core_reserve_bytes = "1 KiB"`
# shows how much a plan leans on it (the usable SRAM per core moves from 40 to 47 KiB).
CORE_RESERVE_BYTES = 8 * 1024

# Clock: not disclosed ("Cerebras is not telling": Next Platform, 14 Mar 2024) [U]. Derived [D]:
# each core has 4 fabric links, each moving one 32-bit wavelet per cycle per direction (Cerebras
# SDK docs, "A Conceptual View", sdk.cerebras.net/computing-with-cerebras) [V], so
# 214 Pb/s = 900k x 4 links x 2 directions x 32 bit x f gives f = 0.929 GHz.
LINKS_PER_CORE = 4
WAVELET_BITS = 32
CLOCK_HZ = FABRIC_MARKETED_BITS_PER_S / (CORES_MARKETED * LINKS_PER_CORE * 2 * WAVELET_BITS)

# One fabric link, one direction: one 32-bit wavelet per cycle (SDK docs) [V] at the derived
# clock [D] = 3.72 GB/s.
LINK_BW_BYTES_PER_S = WAVELET_BITS / 8 * CLOCK_HZ

# Per-core SRAM bandwidth: 21 PB/s over 900k cores = 23.3 GB/s, about 25 B/cycle at 0.93 GHz [D].
CORE_MEM_BW_BYTES_PER_S = MEM_BW_MARKETED_BYTES_PER_S / CORES_MARKETED

# FP16 SIMD is 8 wide per core on WSE-3 (Next Platform, 14 Mar 2024) [S]: 8 multiply-adds per
# cycle = 16 flop/cycle, 14.9 GFLOP/s per core and 13.1 PFLOP/s dense over the program rectangle
# [D]. The marketed 125 PFLOPS only fits if it counts sparsity (dense FP16 at ~1 GHz is ~14-16 PFLOPS). No dense rate is
# published for 8-bit or 4-bit types [U]: such weights are widened to fp16 on load and run at the
# fp16 rate while taking less SRAM.
SIMD_WIDTH = 8
FP16_OPS_PER_S = SIMD_WIDTH * 2 * CLOCK_HZ
CORE_PEAK_OPS_PER_S = {"fp16": FP16_OPS_PER_S, "fp8": FP16_OPS_PER_S, "int8": FP16_OPS_PER_S,
                       "int4": FP16_OPS_PER_S}

# Per-hop latency: the SDK's wavelet moves to a neighbour "in one clock cycle" [V], and a router
# forwards a passing wavelet without the core, so a hop costs 1 cycle of wire latency [D].
HOP_CYCLES = 1
# What a core adds for each message it handles in a collective (a wavelet-activated task, its
# add, the forward) is not published [U]. WaferLLM models allreduce cost as per-step overhead
# (alpha) plus per-hop latency (beta) and picks a 2-way tree to trade them (arXiv 2502.04563;
# blog.rijuyuezhu.top summary) [S], so alpha exceeds beta. We take 20 cycles, the order of a task
# switch on a small in-order core, exposed as a field; it is a guess, not fitted to any tokens/s.
STEP_CYCLES = 20

# Wafer to wafer: CS-3 system I/O is 1.2 Tb/s (Argonne; tweakers.net for CS-2's 12 x 100 GbE) [S],
# taken per direction as Ethernet is full duplex: 150 GB/s. Latency: NIC, one switch and cable
# over Ethernet, a few microseconds; we take 3 us, as for the h100 preset's InfiniBand hop [L].
WAFER_LINK = LinkSpec(bw_bytes_per_s=1.2e12 / 8, latency_s=3e-6)

# Cerebras announced clusters of up to 2,048 CS-3 systems (Next Platform, 14 Mar 2024) [S].
MAX_WAFERS = 2048

# A core's matrix products are SIMD multiply-adds over its weight block, element by element: no
# tiles (matrix_dim 1, one "plane"), weights streamed from its SRAM at their stored bytes.
INSTALL_BYTES_PER_WEIGHT = {"fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
# The fabric: each core a router with 4 neighbours; a program reaches a neighbour through one colour's
# route, which we model as one local link per core [D]. The wafer's system I/O is its one global link.
FABRIC_LINK = LinkSpec(bw_bytes_per_s=LINK_BW_BYTES_PER_S, latency_s=HOP_CYCLES / CLOCK_HZ)

CORE = ChipSpec(
    name="WSE-3 PE",
    memory_kind="sram",
    sram_bytes=CORE_SRAM_BYTES,
    mem_bytes_per_cycle=CORE_MEM_BW_BYTES_PER_S / CLOCK_HZ,
    clock_hz=CLOCK_HZ,
    peak_ops_per_s=CORE_PEAK_OPS_PER_S,
    vector_bytes=4,  # one 32-bit wavelet: the unit a core moves and aligns [D]
    matrix_dim=1,
    matrix_planes=1,
    program_reserve_bytes=CORE_RESERVE_BYTES,
    op_latency_cycles=0,  # results stay on the core; no pipeline drain to model [D]
    # No shared stream registers: one instruction moves at most the SRAM's rate (its port), and the
    # core's units together at most their own ports (MEM, the SIMD's products and element-wise
    # results), both directions of its 4 fabric links and, at the wafer's edge, its I/O [D].
    stream_bytes_per_cycle=(3 * CORE_MEM_BW_BYTES_PER_S / CLOCK_HZ + 2 * LINKS_PER_CORE * WAVELET_BITS / 8
                            + WAFER_LINK.bw_bytes_per_s / CLOCK_HZ),
    stream_port_bytes_per_cycle=CORE_MEM_BW_BYTES_PER_S / CLOCK_HZ,
    mxm_install_bytes_per_cycle=CORE_MEM_BW_BYTES_PER_S / CLOCK_HZ,
    install_bytes_per_weight=INSTALL_BYTES_PER_WEIGHT,
    isa="wse",  # role streams replicated over a region's cores
    vector_alus=2 * SIMD_WIDTH,  # a lane's multiply and add a cycle: the core's peak ops
    streams=24,  # routable colours, commonly quoted [U]; the lowering uses four
)

WSE3 = SystemSpec(
    name="wse3",
    chip=CORE,
    chips_per_node=MESH_ROWS * MESH_COLS,
    nodes_per_group=1,
    max_chips=MAX_WAFERS * MESH_ROWS * MESH_COLS,
    c2c_links_per_chip=LINKS_PER_CORE + 1,  # 4 fabric neighbours; the wafer's I/O reached through its edge
    local_links_per_chip=1,
    global_links_per_chip=1,
    local_link=FABRIC_LINK,
    global_link=WAFER_LINK,
    topology="mesh",
    sync_cycles=0,  # cores start on their tasks' first wavelet; no barrier is modelled [D]
    mesh_rows=MESH_ROWS,
    mesh_cols=MESH_COLS,
    step_cycles=STEP_CYCLES,
)
