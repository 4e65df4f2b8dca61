"""The `lpu-mini` test preset: the LPU's rules with 4 MiB per chip, so tiny models span dozens of chips.

Not a real machine. Everything but the memory size and the chip count is the `lpu` preset, so
tests exercise the same topology, links and timing as the real target in milliseconds.
"""

from __future__ import annotations

from dataclasses import replace

from targets import lpu

SRAM_BYTES = 4 * 2**20

CHIP = replace(
    lpu.CHIP,
    name="GroqChip-mini",
    sram_bytes=SRAM_BYTES,
    # Same rule as the lpu: one MEM slice per hemisphere, 1/44 of SRAM.
    program_reserve_bytes=SRAM_BYTES // lpu.MEM_SLICES_PER_HEMISPHERE,
)

# 256 chips = 3 full groups of 72 and a partial fourth, so tests see local, intra-group and
# inter-group links and a partly filled group.
LPU_MINI = replace(lpu.LPU, name="lpu-mini", chip=CHIP, max_chips=256)
