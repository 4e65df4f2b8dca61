"""The `lpu-mini` test preset: the LPU's rules with 384 KiB per chip, so tiny models span several chips.

Not a real machine. Everything but the memory size and the chip count is the `lpu` preset, so
tests exercise the same topology, links and timing as the real target in milliseconds.
384 KiB is the least that holds one tiny-llama layer with its 4096-token KV cache (the default
context) on one tensor-parallel group, so `compile tiny-llama --target lpu-mini` makes a
pipeline of two stages of two chips: hand-offs, all-reduces and vocabulary-sharded embedding
and head. Tests spread it further with 64 KiB target files and shorter contexts.
"""

from __future__ import annotations

from dataclasses import replace

from targets import lpu

SRAM_BYTES = 384 * 2**10

CHIP = replace(
    lpu.CHIP,
    name="GroqChip-mini",
    sram_bytes=SRAM_BYTES,
    # Same rule as the lpu: one MEM slice per hemisphere, 1/44 of SRAM.
    program_reserve_bytes=SRAM_BYTES // lpu.MEM_SLICES_PER_HEMISPHERE,
)

# 256 chips = 3 full groups of 72 and a partial fourth, so tests see local, intra-group and
# inter-group links and a partly filled group.
# Tiers shrunk with the SRAM (not a real machine): host DRAM of 64 MiB and flash of 1 GiB per node, at
# the lpu's rates and latencies, so tiny models' caches can move down and a tier can be too small.
DRAM = replace(lpu.HOST_DRAM, capacity_bytes=64 * 2**20)
FLASH = replace(lpu.HOST_FLASH, capacity_bytes=2**30)
LPU_MINI = replace(lpu.LPU, name="lpu-mini", chip=CHIP, max_chips=256, dram=DRAM, flash=FLASH)
