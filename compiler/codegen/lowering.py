"""What a backend's lowering hands the build: both phases' Programs and the build's memory map."""

from __future__ import annotations

from dataclasses import dataclass

from compiler.codegen.stage import StageCode
from ir.graph import Graph
from ir.program import Program


@dataclass(frozen=True)
class Lowering:
    """Both phases' Programs, the build's memory map, and what the SRAM image is laid out from."""

    decode: Program
    prefill: Program
    prefill_graph: Graph  # the graph the prefill Program runs
    memory: dict
    codes: list[StageCode] | None = None  # decode's stage layouts (the chip backend's SRAM image reads them)
    verify: Program | None = None  # speculative decoding's verify step (a build with a proposer)
    verify_graph: Graph | None = None
