"""`compile --target <wafer>`: the wafer plan, lowered to role-stream Programs, written as a build directory.

Decode is complete (every stage, every unit, hand-offs). Prefill runs the plan's `chunks` chunks
of `chunk_tokens` rows, pipelined through the stages as the plan times them, so its makespan is
the time to first token. There is no SRAM image yet, so `run --functional` is not available on
wafer builds.
"""

from __future__ import annotations

import json
from pathlib import Path

from compiler.options import CompileOptions
from compiler.partition.units import boundary_bytes
from compiler.wafer.lower import lower_wafer
from compiler.wafer.plan import WaferPlan
from compiler.wafer.planner import host_input_bytes
from ir.program import Program
from targets.spec import WaferSpec


def compile_wafer(config, wafer: WaferSpec, options: CompileOptions, out: Path, progress, force: bool = False
                  ) -> dict:
    from compiler.build import _graphs, _write
    from compiler.planner import plan_graphs

    progress("lowering graphs")
    graphs = _graphs(config, options)
    progress("planning the wafer")
    plan: WaferPlan = plan_graphs(config.name, graphs, wafer, options)
    crossing = boundary_bytes(graphs.decode)
    chunk = plan.prefill["chunk_tokens"]
    progress("scheduling decode")
    host = host_input_bytes(graphs.decode)
    decode = lower_wafer("decode", graphs.decode, plan.stages, wafer, crossing, 1.0, options.precision,
                         options.kv_precision, host_bytes=host)
    progress("scheduling prefill")
    prefill = lower_wafer("prefill", graphs.prefill, plan.stages, wafer, [b * chunk for b in crossing],
                          chunk / options.prompt, options.precision, options.kv_precision, plan.prefill["chunks"],
                          {"chunk_tokens": chunk}, host_bytes=host * chunk)
    progress("writing")
    memory = {"wafer": True, "stages": _stage_memory(decode, prefill)}
    return _write(out, plan, graphs.decode, graphs.prefill, decode, prefill, memory, wafer, (None, "none"), force)


def _stage_memory(decode: Program, prefill: Program) -> list[dict]:
    """Each region's per-core resident bytes and its role streams (every core of a region has one layout)."""
    rows = []
    for d, p in zip(decode.meta["stages"], prefill.meta["stages"], strict=True):
        rows.append({"index": d["index"], "region": d["region"], "first_stream": d["first_stream"],
                     "streams": d["streams"], "resident_bytes_per_core": d["resident_bytes_per_core"],
                     "prefill_resident_bytes_per_core": p["resident_bytes_per_core"]})
    json.dumps(rows)  # JSON-serialisable, checked here rather than half-way through writing
    return rows
