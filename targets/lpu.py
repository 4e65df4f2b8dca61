"""The `lpu` preset: a GroqChip-class TSP system, every number from a public source cited beside it."""

from __future__ import annotations

from targets.spec import ChipSpec, LinkSpec, MemoryTier, SystemSpec

# Confidence tags: [V] primary source, [S] secondary, [D] derived here, [L] low, [U] unverified.
# "ISCA 2020" is Abts et al., "Think Fast: A Tensor Streaming Processor" (wow.groq.com/groq-isca-paper-
# 2020/), its bandwidth budget (section II-B) as transcribed by public reading notes; "GroqAPI" is
# Groq's public GroqAPI 0.9 notebooks (GitHub mirror miniskar/GroqAPI, gapi/notebooks).

CLOCK_HZ = 900e6  # 900 MHz nominal: ISCA 2020 abstract (groq.com/isca-2020-conference/) [V]

# 220 MiB per TSP: ISCA 2022 abstract (groq.com/groq-at-isca-2022). The "230 MB" marketing figure
# (TechPowerUp) is the same quantity in decimal units: 220 MiB = 230.7 MB. [V/D]
SRAM_BYTES = 220 * 2**20

# MEM is 88 slices of 2.5 MiB, 44 per hemisphere (survey note citing ISCA 2020; Techspot). [S]
MEM_SLICES_PER_HEMISPHERE = 44

# Per superlane, east to west: MXM SXM MEM VXM MEM SXM MXM, each MEM block being 44 slices
# (Techspot; survey note citing ISCA 2020) [S]. Streams advance one slice per cycle, so a stream
# crosses the superlane in 2 + 2 + 2*44 + 1 = 93 cycles. We take that traversal as the fixed
# latency of one dependent op (operands stream from MEM to a unit, results stream back; on
# average about one full width). Derived [D]; the unit pipeline depths are not public.
SLICES_ACROSS_SUPERLANE = 2 + 2 + 2 * MEM_SLICES_PER_HEMISPHERE + 1
OP_LATENCY_CYCLES = SLICES_ACROSS_SUPERLANE

# Program reserve: a modelling rule, not a published figure [U]. We hold back one MEM slice per
# hemisphere (2 of 88 slices = 1/44 of SRAM = 5 MiB) for instruction queues and I/O buffers,
# since instructions are fetched from MEM like data.
PROGRAM_RESERVE_BYTES = SRAM_BYTES // MEM_SLICES_PER_HEMISPHERE

# The data path, per cycle (the chip is clocked, so per-cycle figures stay right at any clock).
# SRAM: 2 hemispheres x 44 slices x 2 banks x 320 B = 56,320 B/cycle (ISCA 2020) [S/D]; the paper's
# "55 TiB/s" is this at its 1 GHz exposition clock, 50.7 TB/s at 900 MHz. (">60 TB/s of on-chip stream
# bandwidth", Abts at SC21, and the "80 TB/s" of marketing count other things.)
MEM_BANKS_PER_SLICE = 2
MEM_BYTES_PER_CYCLE = 2 * MEM_SLICES_PER_HEMISPHERE * MEM_BANKS_PER_SLICE * 320

# Streams: 32 per direction (east, west) per lane, 320 lanes (Techspot; ISCA 2020) [S]. The stream
# register file moves 2 x 32 x 320 = 20,480 B/cycle; every operand and result of every unit crosses it,
# so all units' stream traffic together stays under it. One instruction's data flows one way, on at
# most one direction's 32 streams: 10,240 B/cycle [D].
STREAMS_PER_DIRECTION = 32
STREAM_BYTES_PER_CYCLE = 2 * STREAMS_PER_DIRECTION * 320
STREAM_PORT_BYTES_PER_CYCLE = STREAMS_PER_DIRECTION * 320

# MXM weight installation: "MEM can read and install 409,600 weights into the four 320x320 arrays in
# less than 40 cycles, including SRAM and on-chip network transit delay" (ISCA 2020 section II-B, one
# reading note) [S]: 409,600 B / 40 = 10,240 B/cycle of int8 weights. At batch 1 this, not the SRAM
# figure, sets the decode ceiling. GroqAPI's matmul notebooks agree [V]: a weight tensor spread over 16
# MEM slices, two matrix-vector products per hemisphere started ~20 cycles apart "so that the mem slices
# are almost always busy reading out weights", one 320x320 int8 tile per plane per ~20 cycles, one
# plane per hemisphere at a time: 2 x 102,400 B / 20 = 10,240 B/cycle.
MXM_INSTALL_BYTES_PER_CYCLE = 409_600 // 40

# What one weight costs on the install path, by format. FP16 matmuls use a pair of planes (GroqAPI
# tutorial 6_linear.ipynb, planes=[0, 1]) [V]: two byte planes a weight, so fp16 installs, and
# multiplies, at half the per-plane rate of 8-bit formats (the 188 TFLOPS fp16 peak below is a quarter
# of 750 TOPS int8: two pairs at half rate). No native fp8 [U]: fp8 weights are widened to fp16 on the
# way in. No native int4 [U]: int4 weights are widened to int8, so they take half the SRAM but
# install as int8. Weights are stored unpadded in SRAM (panels are 2-D reads); only install time and
# MAC passes are paid in whole 320 x 320 tiles.
INSTALL_BYTES_PER_WEIGHT = {"fp16": 2.0, "fp8": 2.0, "int8": 1.0, "int4": 1.0}

# Dense peaks, Groq marketing via TechPowerUp [S], at the 900 MHz clock above. Check [D]:
# 4 MXM planes x 320 x 320 = 409,600 MACs x 2 x 0.9 GHz = 737 TOPS, 1.7% under 750.
PEAK_OPS_PER_S = {
    "fp16": 188e12,
    # No FP8 peak is published for this generation [U]; fp8 weights are widened to fp16 and run at
    # the fp16 rate.
    "fp8": 188e12,
    "int8": 750e12,
    # No native int4 [U]: int4 weights are dequantised to int8 on the way into the MXM, so they
    # run at the int8 rate while taking half the SRAM.
    "int4": 750e12,
}

VECTOR_BYTES = 320  # 20 superlanes x 16 lanes = 320-byte vectors: Techspot [S]
# 320 lanes x 16 ALUs = 5,120 vector ALUs: TechPowerUp; Techspot ("16 ALUs" per lane) [S].
VECTOR_ALUS = VECTOR_BYTES * 16
# 32 streams per direction (east, west): Techspot [S]. A stream is busy from its producer's start to its
# last consumer's end.
STREAMS = 2 * STREAMS_PER_DIRECTION
MATRIX_DIM = 320  # 320x320 MXM planes: TechPowerUp [S]
MATRIX_PLANES = 4  # 4 planes = 409,600 MACs: survey note citing ISCA 2020 [S]

C2C_LINKS_PER_CHIP = 16  # 16 C2C links + 1 PCIe Gen4 x16: Linley, "Groq Gets Connected" (2020) [S]
# 8 TSPs per node fully connected by 7 local links; 4 global ports per TSP: HC34 slides as
# summarised at vengineer.hatenablog.com (2022-08-31) [S]. The remaining 16 - 7 - 4 = 5 ports
# have no published role, so our topology leaves them unwired [U].
CHIPS_PER_NODE = 8
LOCAL_LINKS_PER_CHIP = 7
GLOBAL_LINKS_PER_CHIP = 4
NODES_PER_GROUP = 9  # a rack: 72 chips = 9 nodes x 8, SC21 abstract (Abts) [V]
MAX_CHIPS = 10_440  # 145 racks x 72: ISCA 2022 abstract [V]; rack count from the survey note [S]

# C2C links: 4 lanes each; on A1.4b-based GroqNodes the board speed defaults to 25.78125 Gb/s a lane
# and "cannot be overridden" (GroqAPI gapi/c2c/README.md) [V]; only A1.1 nodes run 30 Gb/s (28 Gb/s
# cabled: Linley, "Groq Gets Connected", 2020) [S]. 4 x 25.78125 Gb/s = 12.89 GB/s per direction, every
# link, local and global alike.
C2C_LANES = 4
C2C_LANE_BITS_PER_S = 25.78125e9
LINK_BW_BYTES_PER_S = C2C_LANES * C2C_LANE_BITS_PER_S / 8

# Per-hop latency is not published [U]: a documented estimate. The measured HAC resync of ~216 cycles
# (survey note citing ISCA 2022) is the time to align counters across one link, so 216 cycles at
# 900 MHz = 240 ns per hop. Bounds: the ISCA 2022 abstract's <3 us end to end over <=5 hops allows up
# to 600 ns a hop; a hop crosses the chip from MEM to the C2C interface and back, so 240 ns is a low
# estimate, not a tuned one.
HAC_RESYNC_CYCLES = 216
HOP_LATENCY_S = HAC_RESYNC_CYCLES / CLOCK_HZ

CHIP = ChipSpec(
    name="GroqChip",
    memory_kind="sram",
    sram_bytes=SRAM_BYTES,
    mem_bytes_per_cycle=MEM_BYTES_PER_CYCLE,
    clock_hz=CLOCK_HZ,
    peak_ops_per_s=PEAK_OPS_PER_S,
    vector_bytes=VECTOR_BYTES,
    matrix_dim=MATRIX_DIM,
    matrix_planes=MATRIX_PLANES,
    program_reserve_bytes=PROGRAM_RESERVE_BYTES,
    op_latency_cycles=OP_LATENCY_CYCLES,
    stream_bytes_per_cycle=STREAM_BYTES_PER_CYCLE,
    stream_port_bytes_per_cycle=STREAM_PORT_BYTES_PER_CYCLE,
    mxm_install_bytes_per_cycle=MXM_INSTALL_BYTES_PER_CYCLE,
    install_bytes_per_weight=INSTALL_BYTES_PER_WEIGHT,
    isa="tsp",  # per-chip unit queues, scheduled to the cycle (ISCA 2020) [V]
    vector_alus=VECTOR_ALUS,
    streams=STREAMS,
)

LINK = LinkSpec(bw_bytes_per_s=LINK_BW_BYTES_PER_S, latency_s=HOP_LATENCY_S)

# The link to another serving pool (a second machine of LPUs, or the GPUs beside them): no published
# figure [U]. We take one C2C link per chip (the 16 - 7 - 4 = 5 ports our topology leaves unwired
# could carry it), at the C2C rate above, and the network's worst case of 5 hops (ISCA 2022 abstract:
# any of 10,440 TSPs reachable in at most ~5 hops) [V/S] at the per-hop estimate: 1.2 us [D].
POOL_HOPS = 5
POOL_LINK = LinkSpec(bw_bytes_per_s=LINK_BW_BYTES_PER_S, latency_s=POOL_HOPS * HOP_LATENCY_S)

# Memory below SRAM (KV blocks a plan moves down, `--kv-tier`). Each TSP has one PCIe Gen4 x16 link to
# its host (Linley, "Groq Gets Connected", 2020) [S]: 16 GT/s x 16 lanes x 128/130 / 8 = 31.5 GB/s per
# direction [D]; the node's eight chips together 252 GB/s [D]. The host's DRAM capacity and rate are not
# published for the GroqNode [U]: GUESS, 1 TiB per node (a two-socket x86 server's usual fill) whose
# 8-16 DDR4 channels (> 200 GB/s) keep up with the eight links, so the links bind. Latency GUESS [U]:
# 1 us, a PCIe round trip to host memory.
PCIE_GEN4_X16_BYTES_PER_S = 16e9 * 16 * 128 / 130 / 8
HOST_DRAM = MemoryTier(capacity_bytes=2**40, bw_bytes_per_s=CHIPS_PER_NODE * PCIE_GEN4_X16_BYTES_PER_S,
                       latency_s=1e-6, per="node")
# Flash: no NVMe figure is published for the GroqNode [U]. GUESS: 4 x 7.68 TB NVMe Gen4 drives per node
# at ~7 GB/s sequential read each (a data-center U.2 drive's rating), 28 GB/s together, reached through
# the host (the drives, not the chips' links, bind); 100 us a read (an NVMe read's order of magnitude).
HOST_FLASH = MemoryTier(capacity_bytes=4 * 7_680 * 10**9, bw_bytes_per_s=4 * 7e9, latency_s=100e-6, per="node")

LPU = SystemSpec(
    name="lpu",
    chip=CHIP,
    chips_per_node=CHIPS_PER_NODE,
    nodes_per_group=NODES_PER_GROUP,
    max_chips=MAX_CHIPS,
    c2c_links_per_chip=C2C_LINKS_PER_CHIP,
    local_links_per_chip=LOCAL_LINKS_PER_CHIP,
    global_links_per_chip=GLOBAL_LINKS_PER_CHIP,
    local_link=LINK,
    global_link=LINK,
    topology="dragonfly",  # software-defined Dragonfly, TSP = endpoint + switch: ISCA 2022 abstract [V]
    sync_cycles=HAC_RESYNC_CYCLES,  # HAC resync ~216 cycles mean, sd 2.6-2.9: survey note, ISCA 2022 [S]
    pool_link=POOL_LINK,
    dram=HOST_DRAM,
    flash=HOST_FLASH,
)
