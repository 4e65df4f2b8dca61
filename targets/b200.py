"""The `b200` preset: 8x B200 SXM nodes (HGX/DGX B200) on rail-optimised NDR InfiniBand, an HBM reference."""

from __future__ import annotations

from targets import h100
from targets.spec import ChipSpec, LinkSpec, SystemSpec

# Confidence tags: [V] primary, [S] secondary, [D] derived, [L] low, [U] unverified.

# "180 GB" HBM3e per GPU: MLCommons Inference v6.0 system description of an 8x B200 node
# (mlcommons/inference_results_v6.0, closed/Nebius/systems/nebius_b200_n1.json:
# "NVIDIA B200-SXM-180GB", "accelerator_memory_capacity": "180 GB") [S]. nvidia-smi reports
# 183,359 MiB on a B200 (NVIDIA/TensorRT-LLM#10278) [S]: that is the capacity software sees,
# and "180 GB" is it in GiB, rounded (179.06 GiB) [D]. This field is HBM, not SRAM.
HBM_BYTES = 183_359 * 2**20

# 8 TB/s HBM3e: NVIDIA's figure, via glennklockwood.com/garden/processors/B200 ("8 TB/s (max)")
# and docs.vultr.com's HGX B200 overview ("8.0 TB/s") [S]. The driver reports a 7,680-bit bus at
# 3,996 MHz, i.e. 7.67 TB/s (pytorch/ao#4002) [S/D]: the datasheet figure may be ~4% high.
HBM_BW_BYTES_PER_S = 8e12

# 1.86 GHz tensor clock (hmc-tech.com B200 spec sheet: "Tensor Clock 1.86GHz") [S]. Check [D]:
# 148 SMs x 8,192 dense fp16 flop/cycle/SM (twice Hopper's 4,096) x 1.86 GHz = 2.255 PFLOPS, the
# dense fp16 peak below. 148 SMs: the device query in pytorch/ao#4002 [S].
CLOCK_HZ = 1.86e9

# Dense peaks of the HGX B200 (1,000 W), as NVIDIA lists them: glennklockwood.com (its table of
# NVIDIA's figures), pytorch/ao's roofline_utils (bf16 2.25e15, fp8 4.5e15, fp4 9.0e15) [S]. NVIDIA's
# headline figures (18 PFLOPS FP4, 9 PFLOPS FP8) are with 2:4 sparsity, twice these.
PEAK_OPS_PER_S = {
    "fp16": 2.25e15,  # bf16 is the same rate
    "fp8": 4.5e15,
    "int8": 4.5e15,
    # Blackwell has no int4 tensor-core path [U]: int4 weights run dequantised at the int8 rate.
    "int4": 4.5e15,
    # Native e2m1 with block scales in the tensor core: tcgen05's block-scaled MMA (mxfp8, nvfp4:
    # scale factors as operands; mlc.ai "Modern GPU programming", Tensor Cores: tcgen05) [S].
    "fp4": 9e15,
}

VECTOR_BYTES = h100.VECTOR_BYTES  # one warp of 32 lanes x 4 bytes [D]
# tcgen05 MMA tiles are 128 rows (M = 128 per CTA; TMEM is 128 rows: triton-lang.org Gluon tcgen05
# tutorial; mlc.ai tcgen05 chapter) [S].
MATRIX_DIM = 128
MATRIX_PLANES = 148 * 4  # 592 tensor cores, 4 per SM: hmc-tech.com ("592 T-Cores") [S]

# Reserve: 10% of HBM, vLLM's default gpu_memory_utilization = 0.9, as for the h100 preset [S].
PROGRAM_RESERVE_BYTES = HBM_BYTES // 10

# Dependent kernels: the h100 preset's 2 us launch-and-drain gap (NVIDIA CUDA Graphs blog) [L],
# unverified for Blackwell [U].
OP_LATENCY_CYCLES = round(h100.KERNEL_GAP_S * CLOCK_HZ)

# NVLink 5: 18 links per GPU, 1.8 TB/s bidirectional per GPU (docs.vultr.com: "NV18", "1.8 TB/s
# bidirectional"; MLCommons v6.0 Nebius B200 node: "18x 5th Gen NVLink, 14.4 TB/s aggregated" over
# 8 GPUs) [S]: 100 GB/s per link both ways, 50 GB/s per direction [D].
NVLINKS_PER_GPU = 18
NVLINK_BW_BYTES_PER_S = 50e9

# One ConnectX-7 NDR 400 Gb/s port per GPU ("8x ConnectX-7 IB NDR 400Gb/s" in the same MLCommons
# system description) [S]: 50 GB/s a direction.
IB_BW_BYTES_PER_S = 400e9 / 8

# The weight path of a GPU is HBM, as for the h100 preset: the stream budget, one kernel's port and
# the tensor cores' install rate are all the HBM rate per cycle [D], and a weight costs its stored
# bytes (e2m1 half a byte, its block scales on top: targets.spec.install_bytes).
HBM_BYTES_PER_CYCLE = HBM_BW_BYTES_PER_S / CLOCK_HZ
INSTALL_BYTES_PER_WEIGHT = {"fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "fp4": 0.5}

CHIP = ChipSpec(
    name="B200-SXM-180GB",
    memory_kind="hbm",
    sram_bytes=HBM_BYTES,
    mem_bytes_per_cycle=HBM_BYTES_PER_CYCLE,
    clock_hz=CLOCK_HZ,
    peak_ops_per_s=PEAK_OPS_PER_S,
    vector_bytes=VECTOR_BYTES,
    matrix_dim=MATRIX_DIM,
    matrix_planes=MATRIX_PLANES,
    program_reserve_bytes=PROGRAM_RESERVE_BYTES,
    op_latency_cycles=OP_LATENCY_CYCLES,
    stream_bytes_per_cycle=HBM_BYTES_PER_CYCLE,
    stream_port_bytes_per_cycle=HBM_BYTES_PER_CYCLE,
    mxm_install_bytes_per_cycle=HBM_BYTES_PER_CYCLE,
    install_bytes_per_weight=INSTALL_BYTES_PER_WEIGHT,
    isa="none",  # a GPU runs kernels, not a static schedule: plan and compare only
    vector_alus=h100.VECTOR_ALUS,  # GUESS [U]: the element-wise lanes of its predecessor
    streams=1,  # unused: no Program is written for a GPU
)

B200 = SystemSpec(
    name="b200",
    chip=CHIP,
    # 8 GPUs per node, all-to-all through NVSwitch ("NV18" between every pair: docs.vultr.com) [S].
    chips_per_node=8,
    # One tier of a rail-optimised fabric, 32 nodes under a leaf: the h100 preset's modelling choice [U].
    nodes_per_group=32,
    max_chips=256,
    c2c_links_per_chip=NVLINKS_PER_GPU + 1,  # 18 NVLinks + 1 InfiniBand port
    local_links_per_chip=NVLINKS_PER_GPU,
    global_links_per_chip=1,
    # Latencies: the h100 preset's software-path figures (2 us NVLink, 3 us InfiniBand) [L].
    local_link=LinkSpec(bw_bytes_per_s=NVLINK_BW_BYTES_PER_S, latency_s=h100.NVLINK_LATENCY_S),
    global_link=LinkSpec(bw_bytes_per_s=IB_BW_BYTES_PER_S, latency_s=h100.IB_LATENCY_S),
    topology="nvlink",
    # Through NVSwitch, as on the h100 preset (non-blocking: NVIDIA's third-generation NVSwitch blog,
    # cited there): "NV18" between every pair (docs.vultr.com, above) means a message to one peer
    # crosses all 18 links [S].
    local_fabric="switch",
    sync_cycles=round(h100.NVLINK_LATENCY_S * CLOCK_HZ),  # one NVLink message per barrier [L, D]
    # To another pool: each GPU's ConnectX-7 400 Gb/s port (the MLCommons system description above)
    # [S], at the h100 preset's InfiniBand latency [L].
    pool_link=LinkSpec(bw_bytes_per_s=IB_BW_BYTES_PER_S, latency_s=h100.IB_LATENCY_S),
)
