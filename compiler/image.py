"""Weights for a build, and the SRAM image they become: each chip's shard of every resident tensor
at the address the layout gave it, in the format the Program reads it in.

Weights come from a checkpoint (a .npz of float arrays under sramflow's parameter names and
[in, out] layouts, as `lower` prints them) or are random (seeded: matrices ~ N(0, 1/fan_in),
norms near 1), so the interpreter's functional mode runs without downloading anything.
Caches start as zeros. A chip's shard is read off the per-chip parameter shapes the
ShardTensorParallel pass gives: the one axis that shrank is split across the group, and a
group wider than a tensor's heads keeps whole heads (rank r holds block r // (t / parts)).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from compiler.codegen.stage import StageCode
from compiler.passes.fuse import parts
from compiler.passes.quantize import quantize_weights
from compiler.passes.shard import head_pads, shard_unit
from compiler.passes.subset import EXTRA, ZEROS, attention_split, shard_subset
from compiler.plan import Stage
from ir.errors import ConfigError
from ir.graph import Graph, Value
from ir.weights import random_weights

__all__ = ["RANDOM", "load_weights", "random_weights", "shard_of", "sram_image"]

RANDOM = "random"
AUTO_LIMIT_BYTES = 256 * 2**20  # `auto` lays out random weights for models up to this size
FLOAT_BYTES = 4  # weights are held as float32 while they are quantized and laid out
HOST_MEMORY_SHARE = 4  # the float weights may take at most this share (1/4) of this machine's memory


def check_weights_fit(source: str, graph: Graph) -> None:
    """Refuse, before any work, weights that would crowd this machine's memory."""
    if source == "none":
        return
    params = sum(p.type.numel for p in graph.params)
    need, have = params * FLOAT_BYTES, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have // HOST_MEMORY_SHARE:
        flag = "random" if source == RANDOM else source
        raise ConfigError(f"--weights {flag}: {params:,} parameters take {need / 1e9:,.1f} GB as float32, more than "
                          f"1/{HOST_MEMORY_SHARE} of this machine's {have / 1e9:,.1f} GB of memory; use --weights "
                          "none (timing runs need no weights)")


def load_weights(source: str, graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Float weights for every param of `graph` (before quantization): random, or a checkpoint."""
    if source == RANDOM:
        return random_weights(graph, seed)
    path = Path(source)
    try:
        with np.load(path) as data:
            given = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read weights (a .npz of arrays by parameter name): {e}") from None
    out = {}
    for p in graph.params:
        if p.name not in given:
            raise ConfigError(f"{path}: no array for parameter '{p.name}'")
        if tuple(given[p.name].shape) != p.type.shape:
            raise ConfigError(f"{path}: parameter '{p.name}' has shape {tuple(given[p.name].shape)}, "
                              f"the model needs {p.type.shape}")
        out[p.name] = given[p.name].astype(np.float32)
    return out


def sram_image(codes: list[StageCode], stages: Sequence[Stage], graph: Graph, weights: dict[str, np.ndarray],
               precision: str) -> dict[int, np.ndarray]:
    """Every chip's resident bytes from address 0: its shard of each param, zeroed caches.
    `graph` is the quantized decode graph the build was lowered from."""
    from ir.numerics import encode  # ml_dtypes: half a second to import, only an image needs it

    stored = quantize_weights(weights, graph, precision)
    image = {}
    scopes = graph.scopes()
    for code, stage in zip(codes, stages, strict=True):
        owned = scopes[scopes.index(stage.first_unit): scopes.index(stage.last_unit) + 1]
        chip_values, shard = _shards(graph, owned, code, stored)
        resident = [r for r in code.memory_map if r[0] in ("param", "state")]
        top = max((addr + size for _, _, addr, size in resident), default=0)
        for rank in range(code.tp):
            buf = np.zeros(top, np.uint8)
            for kind, name, addr, size in resident:
                shards = [shard(p, rank) for p in parts(name)] if kind == "param" else [None]
                if shards[0] is not None:  # a fused matmul's param: its parts' shards side by side (passes.fuse)
                    whole = np.concatenate(shards, axis=-1) if len(shards) > 1 else shards[0]
                    buf[addr: addr + size] = encode(whole, chip_values[parts(name)[0]].type.dtype)
            image[code.first_chip + rank] = buf
    return image


Shard = Callable[[str, int], np.ndarray | None]


def _shards(graph: Graph, scopes: list[str], code: StageCode, stored: dict[str, np.ndarray]
            ) -> tuple[dict[str, Value], Shard]:
    """A stage's per-chip params and caches, and each param's shard on a rank (None: a param only other ranks
    hold, at an address this rank gives its own: passes.subset)."""
    t, a = code.tp, code.attention_tp
    if not a:
        pads = {n: pad for sc in scopes for n, pad in head_pads(list(graph.ops_in(sc)), t, code.split).items()}
        values = _per_chip(graph, scopes, t, code.split)
        return values, lambda p, rank: shard_of(_padded(stored, p, pads), values[p].type.shape, rank, t, p)
    values, pads, spans = {}, {}, {}
    for sc in scopes:
        ops = list(graph.ops_in(sc))
        end = attention_split(ops) or 0  # (0: a unit without attention, every rank's)
        sub = shard_subset(ops, t, a, split=code.split, share=code.mlp_share)
        values |= {v.name: v for part in sub.parts for op in getattr(sub, part) for v in op.operands}
        pads |= head_pads(ops[:end], a, code.split) | head_pads(ops[end:], t, code.split)
        spans |= {v.name: (0, a) for op in sub.head for v in op.operands}
        spans |= {v.name: (a, t) for op in (*sub.zeros, *sub.extra) for v in op.operands}

    def shard(p: str, rank: int) -> np.ndarray | None:
        lo, hi = spans.get(p, (0, t))
        if not lo <= rank < hi:
            return None
        if p.endswith(ZEROS):  # what the others' zero partial sum is the residual row times
            return np.zeros(values[p].type.shape, np.float32)
        name = p.removesuffix(EXTRA)
        full, shape = _padded(stored, name, pads), values[p].type.shape
        axis = next((i for i, (x, y) in enumerate(zip(full.shape, shape, strict=True)) if x != y), None)
        if p != name:  # an extra feature block: past every rank's body (passes.subset's layout)
            return _cut(full, shape, axis, values[name].type.shape[axis] * t + (rank - a) * shape[axis])
        if hi - lo == t and axis is not None and shape[axis] * t < full.shape[axis]:  # a body's uneven share
            return _cut(full, shape, axis, rank * shape[axis])
        return shard_of(full, shape, rank - lo, hi - lo, p)

    return values, shard


def _padded(stored: dict[str, np.ndarray], name: str, pads: dict[str, tuple[int, ...]]) -> np.ndarray:
    return pad_heads(stored[name], *pads[name]) if name in pads else stored[name]


def _cut(full: np.ndarray, shape: tuple[int, ...], axis: int, start: int) -> np.ndarray:
    """`shape`'s block of `full` from `start` along `axis`, zero-padded past its end."""
    piece = np.take(full, range(min(start, full.shape[axis]), min(start + shape[axis], full.shape[axis])), axis=axis)
    pad = [(0, 0)] * full.ndim
    pad[axis] = (0, shape[axis] - piece.shape[axis])
    return np.pad(piece, pad)


def _per_chip(graph: Graph, scopes: list[str], tp: int, split: bool) -> dict[str, Value]:
    """Per-chip params and caches of a stage's scopes on a group of tp chips (in the split layout or not)."""
    ops = [op for scope in scopes for op in shard_unit(list(graph.ops_in(scope)), tp, split=split)[0]]
    return {v.name: v for op in ops for v in op.operands}


def pad_heads(full: np.ndarray, axis: int, groups: int, members: int, slots: int, size: int,
              repeat: int = 1) -> np.ndarray:
    """`full` with each of its `groups` runs of `members` heads (`size` elements each along `axis`)
    repeated `repeat` times each and padded with zero heads to `slots` (passes.shard.head_pads)."""
    moved = np.moveaxis(full, axis, 0)
    runs = np.repeat(moved.reshape(groups, members, size, *moved.shape[1:]), repeat, axis=1)
    pad = [(0, 0), (0, slots - members * repeat)] + [(0, 0)] * moved.ndim
    padded = np.pad(runs, pad).reshape(groups * slots * size, *moved.shape[1:])
    return np.moveaxis(padded, 0, axis)


def shard_of(full: np.ndarray, shape: tuple[int, ...], rank: int, tp: int, name: str) -> np.ndarray:
    """Rank `rank`'s block of `full` given the per-chip `shape` (zero-padded past the end).
    Split axes number the blocks outermost first (experts, then each expert's features); a
    group wider than the blocks keeps whole blocks, tp / blocks ranks each; blocks along one axis that
    do not divide the group leave its last ranks spare, all zeros (passes.shard.feature_width's `spare`)."""
    axes = [i for i, (a, b) in enumerate(zip(full.shape, shape, strict=True)) if a != b]
    parts = [-(-full.shape[i] // shape[i]) for i in axes]
    total = math.prod(parts)
    if total < tp and tp % total and len(axes) == 1:
        if rank >= total:
            return np.zeros(shape, full.dtype)
        tp = total
    if total > tp or tp % total:
        raise ConfigError(f"parameter '{name}': {total} blocks do not spread over {tp} chips")
    index = rank // (tp // total)
    piece = full
    for axis, count in zip(reversed(axes), reversed(parts), strict=True):  # innermost digit first
        block, index = index % count, index // count
        size = shape[axis]
        piece = np.take(piece, range(block * size, min((block + 1) * size, full.shape[axis])), axis=axis)
        pad = [(0, 0)] * full.ndim
        pad[axis] = (0, size - piece.shape[axis])
        piece = np.pad(piece, pad)
    return piece
