"""Stored formats on a target: whether it can hold them, and what rate its matrix unit runs each at.

A format's products run at its own peak when the target's table has that key (`native`), else
dequantised on the way into the matrix unit at the rate targets.spec.DEQUANTISED_AT names (fp4
codes widened to the 8-bit floating path). The plan says which for the weights and the KV cache
(`decode.formats`), and the timing rules apply the same lookup (targets.spec.mxm_rate_key).
"""

from __future__ import annotations

from compiler.frontend.options import CompileOptions
from compiler.passes.quantize import STORAGE
from compiler.passes.quantize_kv import STORAGE as KV_STORAGE
from ir.errors import ConfigError
from targets.spec import SystemSpec, mxm_rate_key
from targets.timing import Timing

# The MXM rate a 16-bit or 8-bit cache's attention products run at (its codes' own precision).
CACHE_PRECISION = {"fp16": "fp16", "fp8": "fp8", "int8": "int8", "nvfp4": "nvfp4"}


def check_storable(system: SystemSpec, options: CompileOptions) -> None:
    """Refuse, in one line, a block-scaled format the target cannot hold: the wafer backend has no
    block-scaled MeshGEMV, and a chip's MXM panel must hold whole scale blocks (each MXM's tile
    then starts on a block boundary, as its scales do)."""
    for flag, name, dtype in (("--precision", options.precision, STORAGE.get(options.precision)),
                              ("--kv-precision", options.kv_precision, KV_STORAGE.get(options.kv_precision))):
        block = dtype.block if dtype is not None else None
        if block is None:
            continue
        if system.is_mesh:
            raise ConfigError(f"{flag} {name}: {system.name} cannot store block-scaled formats (the wafer backend "
                              "streams fp16, fp8, int8 and int4 weights and fp16, fp8 and int8 caches)")
        panel = Timing.of(system).panel
        if flag == "--precision" and panel % block.size:
            raise ConfigError(f"{flag} {name}: {system.name} cannot store it: its MXM panel of {panel} inputs "
                              f"(matrix_dim x matrix_planes) does not hold whole {block.size}-element scale blocks")


def format_rates(system: SystemSpec, options: CompileOptions) -> list[dict]:
    """For the weights and the KV cache: the stored format, the peak key its products run at,
    that peak, and whether it runs natively or dequantised on the way in."""
    table = system.chip.peak_ops_per_s
    rows = []
    for tensor, precision in (("weights", options.precision), ("kv_cache", CACHE_PRECISION[options.kv_precision])):
        key = mxm_rate_key(precision, table)
        rows.append({"tensor": tensor, "format": precision, "mxm_rate": key, "peak_ops_per_s": table[key],
                     "rule": "native" if system.chip.runs_natively(precision) else "dequantised"})
    return rows
