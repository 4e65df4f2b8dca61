"""The `lpu` preset: a GroqChip-class TSP system, every number from a public source (see HARDWARE.md)."""

from __future__ import annotations

from targets.spec import ChipSpec, LinkSpec, SystemSpec

# Confidence tags follow /work/shared/HARDWARE.md: [V] primary, [S] secondary, [D] derived,
# [L] low, [U] unverified.

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

# On-chip bandwidth: we use the paper's 55 TiB/s (= 60.5 TB/s, idealised; survey note) because it
# agrees with Abts' SC21 talk, ">60 TB/s of on-chip stream bandwidth" (sc21.supercomputing.org,
# exforum112) [V]. The "80 TB/s" marketing figure (TechPowerUp) [S] could not be traced to either
# paper, and decode speed is proportional to this number, so we take the traceable one.
MEM_BW_BYTES_PER_S = 55 * 2**40

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

# 4 lanes x 28 Gbps cabled = 14 GB/s per direction per link: Linley (Abts at Linley Fall 2020) [S].
# Uncabled lanes run at 30 Gbps (15 GB/s); we use 14 GB/s for every link, local and global alike.
LINK_BW_BYTES_PER_S = 14e9

# Per-hop latency is not published [U]. Estimate: the measured HAC resync of ~216 cycles (survey
# note citing ISCA 2022) is the time to align counters across one link, so 216 cycles at 900 MHz
# = 240 ns per hop. Cross-check: the ISCA 2022 bound of <3 us end to end over <=5 hops allows up
# to 600 ns a hop, so 240 ns is plausible, not tuned.
HAC_RESYNC_CYCLES = 216
HOP_LATENCY_S = HAC_RESYNC_CYCLES / CLOCK_HZ

CHIP = ChipSpec(
    name="GroqChip",
    memory_kind="sram",
    sram_bytes=SRAM_BYTES,
    mem_bw_bytes_per_s=MEM_BW_BYTES_PER_S,
    clock_hz=CLOCK_HZ,
    peak_ops_per_s=PEAK_OPS_PER_S,
    vector_bytes=VECTOR_BYTES,
    matrix_dim=MATRIX_DIM,
    matrix_planes=MATRIX_PLANES,
    program_reserve_bytes=PROGRAM_RESERVE_BYTES,
    op_latency_cycles=OP_LATENCY_CYCLES,
)

LINK = LinkSpec(bw_bytes_per_s=LINK_BW_BYTES_PER_S, latency_s=HOP_LATENCY_S)

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
)
