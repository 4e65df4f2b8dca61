"""The `rubin` preset: Vera Rubin NVL72 racks (72 Rubin GPUs in one NVLink 6 domain), an HBM reference.

Rubin is announced (GTC 2025, CES 2026), not shipped: NVIDIA's preliminary figures, read through
press coverage. A "GPU" here is one Rubin package (two compute dies), as NVL72 counts them.
"""

from __future__ import annotations

from targets import b200, h100
from targets.spec import ChipSpec, LinkSpec, SystemSpec

# Confidence tags: [V] primary, [S] secondary, [D] derived, [L] low, [U] unverified.

# 288 GB of HBM4 per GPU (CES 2026: introl.com "Rubin ... 288GB HBM4"; HPCwire's report as
# summarised at buzzbytech.com) [S]. Eight stacks of 36 GB, as 12-high stacks of 24 Gbit dies are
# (36 GiB each), so binary units, as the "80 GB" of an H100 [D].
HBM_BYTES = 288 * 2**30

# 22 TB/s HBM4 per GPU (CES 2026: HPCwire via buzzbytech.com, introl.com, servermo.com) [S]; GTC
# 2025 had announced about 13 TB/s, so this figure moved with the product [U for the shipped part].
HBM_BW_BYTES_PER_S = 22e12

# No clock is published [U]: B200's 1.86 GHz stands in; it only converts cycles to seconds here.
CLOCK_HZ = b200.CLOCK_HZ

PEAK_OPS_PER_S = {
    # 35 PFLOPS NVFP4 "training", 50 PFLOPS NVFP4 "inference" per GPU (CES 2026, HPCwire via
    # buzzbytech.com; rack totals 2.5 and 3.6 EFLOPS over 72 GPUs: imgtag.co.kr) [S]. Training runs
    # dense GEMMs, so 35 is the dense e2m1 rate [D]; what the 50 counts beyond it (sparsity or the
    # Transformer Engine's compression) is not stated in what we read [U], so it is not used.
    "fp4": 35e15,
    # 1.2 EFLOPS FP8 training per NVL144 rack at GTC 2025 (megaobzor.com; "3.3x GB300 NVL72", whose
    # 360 PF FP8 is in glennklockwood.com/garden/processors/B300) [S], over 72 GPUs: 16.7 PFLOPS [D].
    "fp8": 1.2e18 / 72,
    # No fp16, int8 or int4 figure found [U]: half the fp8 rate for fp16, the fp8 rate for int8 (as on
    # B200), and int4 dequantised to int8.
    "fp16": 1.2e18 / 72 / 2,
    "int8": 1.2e18 / 72,
    "int4": 1.2e18 / 72,
}

# Per-GPU tile shapes and tensor-core count are not published [U]: B200's stand in (the plan only
# uses them to check that block scales fit an MXM panel).
MATRIX_DIM = b200.MATRIX_DIM
MATRIX_PLANES = b200.MATRIX_PLANES

PROGRAM_RESERVE_BYTES = HBM_BYTES // 10  # vLLM's gpu_memory_utilization = 0.9, as for h100 [S]
OP_LATENCY_CYCLES = round(h100.KERNEL_GAP_S * CLOCK_HZ)  # the 2 us kernel gap [L]

# NVLink 6: 3.6 TB/s per GPU, bidirectional (CES 2026: HPCwire via buzzbytech.com; introl.com:
# "NVLink 6 provides 3.6 TB/s bidirectional bandwidth per GPU"; hardwareluxx.de) [S]: 1.8 TB/s a
# direction. The link count is not published [U]: we keep NVLink 5's 18, at 100 GB/s a direction.
NVLINKS_PER_GPU = 18
NVLINK_BW_BYTES_PER_S = 3.6e12 / 2 / NVLINKS_PER_GPU

# Scale-out: two 800 Gb/s ConnectX-9 NICs per GPU, 1.6 Tb/s (wheelersnetwork.com, "Decoding
# Nvidia's Rubin Networking Math"; hardwareluxx.de: ConnectX-9 "1.6 TBit/s") [S].
NICS_PER_GPU = 2
NIC_BW_BYTES_PER_S = 800e9 / 8

# The weight path of a GPU is HBM, as for the h100 preset: the stream budget, one kernel's port and
# the tensor cores' install rate are all the HBM rate per cycle [D], and a weight costs its stored
# bytes (e2m1 half a byte, its block scales on top: targets.spec.install_bytes).
HBM_BYTES_PER_CYCLE = HBM_BW_BYTES_PER_S / CLOCK_HZ
INSTALL_BYTES_PER_WEIGHT = {"fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "fp4": 0.5}

CHIP = ChipSpec(
    name="Rubin",
    memory_kind="hbm",
    sram_bytes=HBM_BYTES,
    mem_bytes_per_cycle=HBM_BYTES_PER_CYCLE,
    clock_hz=CLOCK_HZ,
    peak_ops_per_s=PEAK_OPS_PER_S,
    vector_bytes=b200.VECTOR_BYTES,
    matrix_dim=MATRIX_DIM,
    matrix_planes=MATRIX_PLANES,
    program_reserve_bytes=PROGRAM_RESERVE_BYTES,
    op_latency_cycles=OP_LATENCY_CYCLES,
    stream_bytes_per_cycle=HBM_BYTES_PER_CYCLE,
    stream_port_bytes_per_cycle=HBM_BYTES_PER_CYCLE,
    mxm_install_bytes_per_cycle=HBM_BYTES_PER_CYCLE,
    install_bytes_per_weight=INSTALL_BYTES_PER_WEIGHT,
    isa="none",  # a GPU runs kernels, not a static schedule: plan and compare only
    vector_alus=b200.CHIP.vector_alus,  # GUESS [U]: the element-wise lanes of its predecessor
    streams=1,  # unused: no Program is written for a GPU
)

RUBIN = SystemSpec(
    name="rubin",
    chip=CHIP,
    # 72 GPUs per rack in one NVLink domain (Vera Rubin NVL72: silicontales.com, regantih.github.io;
    # 260 TB/s all-to-all = 72 x 3.6 TB/s) [S]: the "node" of the nvlink topology.
    chips_per_node=72,
    # Eight racks under one rail of leaf switches: a modelling choice [U].
    nodes_per_group=8,
    max_chips=576,
    c2c_links_per_chip=NVLINKS_PER_GPU + NICS_PER_GPU,
    local_links_per_chip=NVLINKS_PER_GPU,
    global_links_per_chip=NICS_PER_GPU,
    # Latencies: the h100 preset's software-path figures (2 us NVLink, 3 us network) [L].
    local_link=LinkSpec(bw_bytes_per_s=NVLINK_BW_BYTES_PER_S, latency_s=h100.NVLINK_LATENCY_S),
    global_link=LinkSpec(bw_bytes_per_s=NIC_BW_BYTES_PER_S, latency_s=h100.IB_LATENCY_S),
    topology="nvlink",
    # The rack's 72 GPUs meet in NVLink switch trays, each GPU reaching any other at its full per-GPU
    # NVLink bandwidth (the 3.6 TB/s figure above, HPCwire via buzzbytech.com; introl.com) [S].
    local_fabric="switch",
    sync_cycles=round(h100.NVLINK_LATENCY_S * CLOCK_HZ),
    # To another pool (the LPX racks beside it, or other racks): both ConnectX-9 NICs of a GPU, 1.6 Tb/s
    # (wheelersnetwork.com, above) [S], at the h100 preset's network latency [L].
    pool_link=LinkSpec(bw_bytes_per_s=NICS_PER_GPU * NIC_BW_BYTES_PER_S, latency_s=h100.IB_LATENCY_S),
)
