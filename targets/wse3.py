"""The `wse3` preset: a Cerebras WSE-3-class wafer (CS-3), every number from a public source cited beside it."""

from __future__ import annotations

from targets.spec import LinkSpec, WaferSpec

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

WSE3 = WaferSpec(
    name="wse3",
    mesh_rows=MESH_ROWS,
    mesh_cols=MESH_COLS,
    core_sram_bytes=CORE_SRAM_BYTES,
    core_reserve_bytes=CORE_RESERVE_BYTES,
    core_mem_bw_bytes_per_s=CORE_MEM_BW_BYTES_PER_S,
    clock_hz=CLOCK_HZ,
    core_peak_ops_per_s=CORE_PEAK_OPS_PER_S,
    simd_width=SIMD_WIDTH,
    link_bw_bytes_per_s=LINK_BW_BYTES_PER_S,
    hop_cycles=HOP_CYCLES,
    step_cycles=STEP_CYCLES,
    wafer_link=WAFER_LINK,
    max_wafers=MAX_WAFERS,
)
