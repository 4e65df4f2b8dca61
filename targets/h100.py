"""The `h100` preset: 8x H100 SXM nodes (HGX/DGX H100) on rail-optimised NDR InfiniBand, the HBM reference."""

from __future__ import annotations

from targets.spec import ChipSpec, LinkSpec, MemoryTier, SystemSpec

# Confidence tags: [V] primary source, [S] secondary, [D] derived here, [L] low, [U] unverified.
# "Datasheet" is NVIDIA's H100 product page/datasheet (nvidia.com/en-us/data-center/h100/), read
# through the copies cited beside each number.

# 80 GB HBM3 (datasheet, via archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html) [S]. HBM is
# sized in binary units, so "80 GB" is 80 GiB, as nvidia-smi totals show on its siblings (e.g.
# 143,771 MiB on the "141 GB" H200, NVIDIA/cuda-samples#311) [D]. This field is HBM, not SRAM.
HBM_BYTES = 80 * 2**30
HBM_BW_BYTES_PER_S = 3.35e12  # 3.35 TB/s HBM3: datasheet, via hpctech copy and codesota.com/hardware/h100 [S]

# 1.83 GHz is the clock the tensor-core peaks assume (glennklockwood.com/garden/processors/h100:
# "1.83 GHz (low precision), 1.98 GHz (high precision)") [S]. Check [D]: 132 SMs x 4,096 dense
# fp16 flop/cycle/SM x 1.83 GHz = 989.4 TFLOPS, the datasheet figure.
CLOCK_HZ = 1.83e9

# Dense peaks: the datasheet prints sparse figures ("Shown with sparsity. Specifications 1/2 lower
# without sparsity": hpctech copy) [S]; dense values from glennklockwood.com's table [S].
PEAK_OPS_PER_S = {
    "fp16": 989.4e12,  # bf16 is the same rate
    "fp8": 1978.9e12,
    "int8": 1978.9e12,
    # Hopper has no int4 tensor-core path (no INT4 row in the datasheet) [S]: int4 weights are
    # dequantised and run at the int8/fp8 rate while taking half the memory.
    "int4": 1978.9e12,
}

VECTOR_BYTES = 128  # one warp of 32 lanes x 4 bytes, the unit of a coalesced access [D]
# 128 FP32 CUDA cores per SM x 132 SMs = 16,896 (NVIDIA H100 Tensor Core GPU Architecture whitepaper;
# glennklockwood.com/garden/processors/h100) [S]: element-wise work runs on them.
VECTOR_ALUS = 128 * 132
MATRIX_DIM = 64  # wgmma tiles are 64 rows (M=64): CUTLASS Hopper docs (mintlify.com/NVIDIA/cutlass) [S]
MATRIX_PLANES = 528  # 132 SMs x 4 tensor cores: glennklockwood.com [S]

# Reserve: vLLM's default gpu_memory_utilization = 0.9 leaves 10% of HBM for the CUDA context,
# workspaces and graphs (unsloth.ai vLLM engine-arguments guide; HF discussion on
# neuralmagic/Mistral-7B-Instruct-v0.3-GPTQ-4bit) [S]. A rule from a serving stack, not hardware.
PROGRAM_RESERVE_BYTES = HBM_BYTES // 10

# Fixed cost of one dependent op: a GPU runs dependent ops as back-to-back kernels, whose
# launch-and-drain gap is a few microseconds even with CUDA Graphs (NVIDIA blog, "Getting
# Started with CUDA Graphs") [L]. We take 2 us, like the NVLink hop below; unverified for H100 [U].
KERNEL_GAP_S = 2e-6
OP_LATENCY_CYCLES = round(KERNEL_GAP_S * CLOCK_HZ)

# NVLink 4: 18 links per GPU, 900 GB/s bidirectional in total, so 50 GB/s per link both ways
# and 25 GB/s per direction (NVIDIA HGX H100 blog via dynasys.com.hk; petronellatech.com) [S].
NVLINKS_PER_GPU = 18
NVLINK_BW_BYTES_PER_S = 25e9

# GPU-to-GPU P2P write latency over NVLink measured by cuda-samples p2pBandwidthLatencyTest:
# 1.8-2.3 us (NVIDIA/cuda-samples#230; the GPU model there is not stated) [L]. It includes the
# software path, which is what a GPU program pays per transfer, so we use it rather than the
# sub-microsecond wire figure.
NVLINK_LATENCY_S = 2e-6

# One ConnectX-7 NDR 400 Gb/s port per GPU on the compute fabric (DGX H100 User Guide, network
# modules table, via easymanua.ls; ConnectX-7 user manual, docs.nvidia.com) [S]: 50 GB/s a direction.
IB_BW_BYTES_PER_S = 400e9 / 8

# Across nodes: the NVLink-path software latency (~2 us) plus NIC, cable and one leaf switch
# (~1 us; Quantum-2 port-to-port <150 ns per router-switch.com) [L]. Secondary summaries put
# InfiniBand GPU-to-GPU at 1-5 us (fridayswithfaraday.com) [S]. We use 3 us.
IB_LATENCY_S = 3e-6

# The weight path of a GPU is HBM: at batch 1 every weight, cache and activation byte comes from it
# (on-chip reuse in L2 and shared memory is not modelled), so the "stream" budget, one kernel's port
# and the tensor cores' install rate are all the HBM rate, here per cycle of the clock above [D]. HBM
# has its own clock: a what-if file that changes clock_hz should state mem_bw_bytes_per_s again. A
# weight costs its stored bytes (fp8 and int8 are native; int4 is read as 4 bits and widened on chip).
HBM_BYTES_PER_CYCLE = HBM_BW_BYTES_PER_S / CLOCK_HZ
INSTALL_BYTES_PER_WEIGHT = {"fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
                            # e2m1 has no Hopper tensor-core path [S: no FP4 row in the datasheet]: read
                            # as stored (codes and block scales) and widened on chip, as int4 is
                            "nvfp4": 0.5 + 1 / 16, "mxfp4": 0.5 + 1 / 32}

CHIP = ChipSpec(
    name="H100-SXM5-80GB",
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
    vector_alus=VECTOR_ALUS,
    streams=1,  # unused: no Program is written for a GPU
)

# Tiers below HBM: a DGX H100 has "2 TB of DDR5 system memory" and "eight 3.84 TB U.2 NVMe drives for
# storage/cache", its CPUs with PCIe 5.0 (docs.nvidia.com/dgx-basepod/reference-architecture-
# infrastructure-foundation-enterprise-ai/latest/core-components.html) [V]. Each GPU's host link is PCIe
# Gen5 x16: 32 GT/s x 16 x 128/130 / 8 = 63 GB/s per direction [D], 504 GB/s for the node's eight [D]
# (the DDR5 channels of two Xeon 8480C, 16 x 38.4 GB/s = 614 GB/s [D], keep up). Latency GUESS [U]: 1 us.
# Flash: the drives' read rate is not in that source [U]; GUESS, ~6.5 GB/s each (a PCIe Gen4 U.2 drive's
# rating), 52 GB/s together, 100 us a read.
PCIE_GEN5_X16_BYTES_PER_S = 32e9 * 16 * 128 / 130 / 8
HOST_DRAM = MemoryTier(capacity_bytes=2 * 10**12, bw_bytes_per_s=8 * PCIE_GEN5_X16_BYTES_PER_S, latency_s=1e-6)
HOST_FLASH = MemoryTier(capacity_bytes=8 * 3_840 * 10**9, bw_bytes_per_s=8 * 6.5e9, latency_s=100e-6)

H100 = SystemSpec(
    name="h100",
    chip=CHIP,
    # 8 GPUs per node, all-to-all through 4 third-generation NVSwitches (NVIDIA HGX H100 blog) [S].
    chips_per_node=8,
    # A rail-optimised leaf-spine compute fabric (NVIDIA enterprise RA, docs.nvidia.com/
    # enterprise-reference-architectures/hgx-ai-factory-h100-h200-b200) [V]. We model one tier:
    # 32 nodes, the downlinks of a 64-port Quantum-2 leaf with half its ports up (mortalapps.com:
    # 64 x 400 Gb/s per QM9700) [S]. The 32-node group size is our modelling choice [U].
    nodes_per_group=32,
    max_chips=256,
    c2c_links_per_chip=NVLINKS_PER_GPU + 1,  # 18 NVLinks + 1 InfiniBand port
    local_links_per_chip=NVLINKS_PER_GPU,
    global_links_per_chip=1,
    local_link=LinkSpec(bw_bytes_per_s=NVLINK_BW_BYTES_PER_S, latency_s=NVLINK_LATENCY_S),
    global_link=LinkSpec(bw_bytes_per_s=IB_BW_BYTES_PER_S, latency_s=IB_LATENCY_S),
    topology="nvlink",
    # The node's GPUs meet in non-blocking NVSwitch crossbars, every GPU's 18 links spread over the four
    # switches: any pair can exchange at the GPU's full 900 GB/s (450 GB/s a direction) at once, so a
    # message to one peer uses all 18 links, not one (NVIDIA developer blog, "Upgrading Multi-GPU
    # Interconnectivity with the Third-Generation NVIDIA NVSwitch", developer.nvidia.com/blog/upgrading-
    # multi-gpu-interconnectivity-with-the-third-generation-nvidia-nvswitch/; factryze.ai/scale-atlas/
    # interconnect/nvlink-nvswitch-topology) [S].
    local_fabric="switch",
    # Per-step synchronisation: one barrier costs at least one NVLink message, ~2 us [L, D].
    sync_cycles=round(NVLINK_LATENCY_S * CLOCK_HZ),
    dram=HOST_DRAM,
    flash=HOST_FLASH,
    # To another pool: the same ConnectX-7 NDR 400 Gb/s port per GPU (DGX H100 User Guide) [S] at the
    # InfiniBand latency above [L]; each GPU sends or receives its share of a KV cache over its own.
    pool_link=LinkSpec(bw_bytes_per_s=IB_BW_BYTES_PER_S, latency_s=IB_LATENCY_S),
)
