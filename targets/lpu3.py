"""The `lpu3` preset: a Groq 3 LPU (LP30) LPX rack as announced at NVIDIA GTC, 16 March 2026.

Only capacities, bandwidths and the rack's FP8 peak are published (press coverage of the
announcement, cited below). Every other figure is a GUESS, marked [U]: the `lpu` preset's rule
kept until a source says otherwise. Not a measured machine; not tuned to any published tokens/s.
"""

from __future__ import annotations

from targets import lpu
from targets.spec import ChipSpec, LinkSpec, SystemSpec

# Confidence tags: [V] primary, [S] secondary, [D] derived, [L] low, [U] unverified (a guess).

# 500 MB of on-chip SRAM per LPU, 150 TB/s (voice.lapaas.com/nvidia-debut-groq-3-lpu-chip;
# allthingsgeek.me; blog.imseankim.com) [S]. One report says 512 MB per die (ico-optics.org) [S];
# 256 x 500 MB = the rack's quoted 128 GB [D], so we take 500 MB.
SRAM_BYTES = 500 * 10**6
MEM_BW_BYTES_PER_S = 150e12  # 256 x 150 TB/s = 38.4 PB/s, the rack's quoted "40 PB/s" [D]

CLOCK_HZ = lpu.CLOCK_HZ  # GUESS [U]: not published; the first LPU's 900 MHz
MEM_BYTES_PER_CYCLE = MEM_BW_BYTES_PER_S / CLOCK_HZ  # 166,667 B/cycle at the guessed clock [D]
# GUESS [U]: the stream registers and the MXM install path scale with the SRAM bandwidth, as on the
# lpu (2.96 x its 20,480 B/cycle of streams, 10,240 of one direction and of weight installation).
SCALE_OVER_LPU = MEM_BYTES_PER_CYCLE / lpu.MEM_BYTES_PER_CYCLE
STREAM_BYTES_PER_CYCLE = lpu.STREAM_BYTES_PER_CYCLE * SCALE_OVER_LPU
STREAM_PORT_BYTES_PER_CYCLE = lpu.STREAM_PORT_BYTES_PER_CYCLE * SCALE_OVER_LPU
MXM_INSTALL_BYTES_PER_CYCLE = lpu.MXM_INSTALL_BYTES_PER_CYCLE * SCALE_OVER_LPU
# An fp8 peak is published, so fp8 installs a byte a weight [D]; fp16 a pair of planes and int4 widened
# to int8, as on the lpu [U]. No fp4 entry: e2m1 codes widen to fp8 on the way in (one byte a weight).
INSTALL_BYTES_PER_WEIGHT = {"fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 1.0}
PROGRAM_RESERVE_BYTES = SRAM_BYTES // lpu.MEM_SLICES_PER_HEMISPHERE  # GUESS [U]: the lpu's 1/44 rule

# 315 PFLOPS FP8 per 256-LPU rack (bitcoinnewsinvest.com, summarising NVIDIA's blog;
# voice.lapaas.com) [S]: 1.23 PFLOPS FP8 per LPU [D] (also quoted per LPU by ico-optics.org [S]).
FP8_OPS_PER_S = 315e15 / 256
PEAK_OPS_PER_S = {
    "fp8": FP8_OPS_PER_S,
    "fp16": FP8_OPS_PER_S / 2,  # GUESS [U]: half the fp8 rate
    "int8": FP8_OPS_PER_S,  # GUESS [U]: the fp8 rate
    "int4": FP8_OPS_PER_S,  # GUESS [U]: dequantised to int8
    # No fp4 figure is published [U], so the table has no fp4 key: nvfp4 and mxfp4 weights run
    # dequantised on the way into the MXM at the fp8 rate (targets.spec.DEQUANTISED_AT).
}

CHIP = ChipSpec(
    name="Groq3-LPU",
    memory_kind="sram",
    sram_bytes=SRAM_BYTES,
    mem_bytes_per_cycle=MEM_BYTES_PER_CYCLE,
    clock_hz=CLOCK_HZ,
    peak_ops_per_s=PEAK_OPS_PER_S,
    vector_bytes=lpu.VECTOR_BYTES,  # GUESS [U]: the lpu's 320-byte vectors
    matrix_dim=lpu.MATRIX_DIM,  # GUESS [U]: the lpu's 320 x 320 planes
    matrix_planes=lpu.MATRIX_PLANES,  # GUESS [U]
    program_reserve_bytes=PROGRAM_RESERVE_BYTES,
    op_latency_cycles=lpu.OP_LATENCY_CYCLES,  # GUESS [U]
    stream_bytes_per_cycle=STREAM_BYTES_PER_CYCLE,
    stream_port_bytes_per_cycle=STREAM_PORT_BYTES_PER_CYCLE,
    mxm_install_bytes_per_cycle=MXM_INSTALL_BYTES_PER_CYCLE,
    install_bytes_per_weight=INSTALL_BYTES_PER_WEIGHT,
    isa="tsp",  # a static-schedule LPU like its predecessor [D]
    vector_alus=lpu.VECTOR_ALUS,  # GUESS [U]: the lpu's 5,120
    streams=lpu.STREAMS,  # GUESS [U]: the lpu's 64
)

# 96 chip-to-chip links per LPU at 112 Gb/s, 2.5 TB/s bidirectional per chip
# (bitcoinnewsinvest.com) [S]: 14 GB/s per direction per link [D]. Latency: GUESS [U], the lpu's
# 240 ns estimate.
C2C_LINKS_PER_CHIP = 96
LINK = LinkSpec(bw_bytes_per_s=112e9 / 8, latency_s=lpu.HOP_LATENCY_S)
# The link to another pool (the Vera Rubin GPUs an LPX rack is paired with, or another rack): not
# published [U]. GUESS: one of the 96 links per LPU at 112 Gb/s, and the lpu preset's 5-hop latency.
POOL_LINK = LinkSpec(bw_bytes_per_s=112e9 / 8, latency_s=lpu.POOL_LINK.latency_s)

LPU3 = SystemSpec(
    name="lpu3",
    chip=CHIP,
    chips_per_node=8,  # 8 LP30 chips per compute tray (bitcoinnewsinvest.com) [S]
    nodes_per_group=32,  # 32 trays per LPX rack, 256 LPUs (same source; voice.lapaas.com) [S]
    # One LPX rack is 256 LPUs (above); racks join into larger pools over the global links, as the
    # first LPU's racks do (the lpu preset's 10,440-chip Dragonfly). How many is not published [U]:
    # GUESS, 16 racks, so a model that needs more than one rack (70B at fp16) can be sized.
    max_chips=16 * 256,
    c2c_links_per_chip=C2C_LINKS_PER_CHIP,
    local_links_per_chip=28,  # GUESS [U]: 4 links to each of the 7 other chips of a tray
    global_links_per_chip=68,  # GUESS [U]: the rest leave the tray
    local_link=LINK,
    global_link=LINK,
    topology="dragonfly",  # GUESS [U]: the first LPU's software-scheduled Dragonfly
    sync_cycles=lpu.HAC_RESYNC_CYCLES,  # GUESS [U]: the first LPU's HAC resync
    pool_link=POOL_LINK,
    # Tiers below SRAM: nothing is published for the LPX's hosts [U]. GUESS: the lpu preset's host DRAM
    # and flash per 8-chip tray (PCIe Gen4 x16 a chip, 1 TiB; 4 NVMe drives).
    dram=lpu.HOST_DRAM,
    flash=lpu.HOST_FLASH,
)
