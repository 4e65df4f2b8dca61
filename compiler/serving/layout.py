"""Where a build keeps each cache and state: its logical shape and every chip's block of it, by address.

A disaggregated build's memory.json holds this for both sub-builds, so the run can copy a request's
cache rows from the prefill build's chips to the decode build's without knowing either layout's rules.
A chip's block is its per-chip shape (ShardTensorParallel's, as the lowering and the SRAM image use
it) at the offsets compiler.image.shard_of cuts it from: the split axes number the blocks outermost
first, and a group wider than the blocks keeps whole ones, tp / blocks chips each.
"""

from __future__ import annotations

import math

from compiler.passes.shard import shard_unit
from ir.errors import ConfigError
from ir.graph import Graph, Value
from ir.memory_map import MemoryMap
from ir.ops import Opcode

# Ops whose state operands are per-token caches ([batch, tokens, ...]): their rows are what moves.
CACHE_OPS = (Opcode.ATTENTION, Opcode.MLA_ATTENTION)


def block_start(full: tuple[int, ...], shape: tuple[int, ...], rank: int, tp: int) -> list[int]:
    """Where rank `rank`'s block of a tensor of shape `full` starts, given its per-chip `shape`."""
    axes = [i for i, (a, b) in enumerate(zip(full, shape, strict=True)) if a != b]
    parts = [-(-full[i] // shape[i]) for i in axes]
    index = rank // (tp // math.prod(parts))
    start = [0] * len(full)
    for axis, count in zip(reversed(axes), reversed(parts), strict=True):  # innermost digit first
        block, index = index % count, index // count
        start[axis] = block * shape[axis]
    return start


def token_caches(graph: Graph) -> set[str]:
    """Names of the states that hold one row per token (KV caches and their scales)."""
    names = {s.name for s in graph.state}
    return {v.name for op in graph.ops if op.opcode in CACHE_OPS for v in op.operands if v.name in names}


def cache_layout(graph: Graph, plan: dict, memory: MemoryMap) -> list[dict]:
    """Every state of `graph` (a build's decode.ir) with each chip's block and address (its memory.json)."""
    tokens = token_caches(graph)
    full = {s.name: s for s in graph.state}
    scopes = graph.scopes()
    chips: dict[str, list[dict]] = {name: [] for name in full}
    for stage, held in zip(plan["stages"], memory.stages, strict=True):
        first, last = stage["units"]
        owned = scopes[scopes.index(first): scopes.index(last) + 1]
        # A subset stage's caches are its attention chips' (passes.subset), sharded over those alone.
        tp = stage.get("attention_tp") or stage["tp"]
        per_chip = _per_chip(graph, owned, tp, stage.get("kv_layout") == "split")
        for b in held.blocks("both", ("state",)):
            if (b.ranks or (0, stage["tp"])) != (0, tp):
                raise RuntimeError(f"stage {stage['index']}: {b.name} is on ranks {b.ranks} in memory.json, its "
                                   f"caches on the first {tp}")
            if not _tiles(full[b.name].type.shape, per_chip[b.name].type.shape, tp):
                raise ConfigError(f"stage {stage['index']}: its {tp} chips pad or repeat {b.name} (kv heads: "
                                  "passes.shard.head_case; Mamba channels: feature_width), which a disaggregated "
                                  "build cannot hand over yet (a group that divides the kv heads or the channels, "
                                  "or a multiple of the kv heads, can)")
            if per_chip[b.name].type.nbytes != b.bytes:
                raise RuntimeError(f"stage {stage['index']}: {b.name} takes {b.bytes} bytes in memory.json, "
                                   f"its per-chip shape {per_chip[b.name].type.nbytes}")
            chips[b.name] += _blocks(full[b.name], per_chip[b.name], b.addr, held.first_chip, tp)
    return [{"name": name, "dtype": v.type.dtype.value, "shape": list(v.type.shape),
             "tokens_axis": 1 if name in tokens else None, "chips": chips[name]}
            for name, v in full.items() if chips[name]]


def _tiles(full: tuple[int, ...], shape: tuple[int, ...], tp: int) -> bool:
    """Whether the per-chip blocks tile the whole exactly (no padded or repeated part), tp / blocks chips each."""
    parts = [f // s for f, s in zip(full, shape, strict=True) if f != s]
    exact = all(f % s == 0 for f, s in zip(full, shape, strict=True))
    return exact and tp % math.prod(parts) == 0


def _per_chip(graph: Graph, scopes: list[str], tp: int, split: bool) -> dict[str, Value]:
    ops = [op for scope in scopes for op in shard_unit(list(graph.ops_in(scope)), tp, split=split)[0]]
    return {v.name: v for op in ops for v in op.operands}


def _blocks(full: Value, chip: Value, addr: int, first_chip: int, tp: int) -> list[dict]:
    """The blocks of `full` on the `tp` chips from `first_chip` that hold it."""
    shape = chip.type.shape
    return [{"chip": first_chip + rank, "addr": addr, "bytes": chip.type.nbytes, "shape": list(shape),
             "start": block_start(full.type.shape, shape, rank, tp)} for rank in range(tp)]
