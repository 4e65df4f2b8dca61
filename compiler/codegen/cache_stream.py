"""How a KV cache's rows stream through the MXM: their codes' format and bytes, their scales, and one
block of them multiplied into the chain of scores (keys) or of outputs (values). Shared by the SRAM
cache's lowering (attention.py) and the one split over tiers (tier_attention.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compiler.codegen.emit import FMT, Emitter
from compiler.codegen.template import Instr
from ir.isa import Fmt, Fn, Op
from ir.program import Flag
from ir.types import DType

Read = tuple[int, int]  # (instruction, stream) of a READ


@dataclass(frozen=True)
class CacheStream:
    """How one token's row of a cache is stored: its codes' format and bytes, and its scales."""

    dtype: DType
    width: int
    kv_heads: int

    @property
    def fmt(self) -> Fmt:
        return FMT[self.dtype]

    @property
    def row_bytes(self) -> int:
        return self.width * self.dtype.bits // 8

    @property
    def block(self):
        return self.dtype.block

    @property
    def scale_bytes(self) -> int:
        """One token's scales: a 16-bit one per kv head, or an e4m3 one per block of the row."""
        return self.block.scales(self.width) if self.block else self.kv_heads * 2


@dataclass(frozen=True)
class Block:
    """Tokens of a cache block, the first score column of its tokens, whether it ends the chain."""

    tokens: int
    column: int
    last: bool


def block_product(e: Emitter, kv: CacheStream, codes: Read, scales: Callable[[], Read] | None, act: Read, m: int,
                  b: Block, heads: dict, keys: bool, acc: int | None) -> int:
    """One block's codes through the MXM after the chain `acc`; returns the chain's new last instruction.
    Keys: the block's scores join the earlier blocks' (s_c). Values: its products add to the earlier
    blocks' (s_c), reading the probabilities of its tokens (offset: its first score column). A
    quantized cache's `scales` (read when called) multiply the scores (keys) or the probabilities
    (values) of its tokens, or ride on s_d beside block-scaled (NVFP4) codes."""
    k_dim, n_dim = (kv.width, b.tokens) if keys else (b.tokens, kv.width)
    step = act
    s_d, blocked = -1, scales is not None and kv.block is not None
    deps = ()
    if blocked:  # NVFP4: the block's e4m3 scales ride beside its codes
        sd = scales()
        s_d, deps = sd[1], ((sd[0], 0),)
    elif scales is not None and not keys:  # the block's probabilities, times its values' scales
        step = e.vop(Fn.SCALE, m, b.tokens, act, scales(), b.tokens * kv.scale_bytes,
                     args=heads | {"on": "probabilities", "from": b.column, "block": b.tokens})
    kind = Flag.KEYS if keys else Flag.VALUES
    flags = kind | (Flag.ACCUMULATE if acc is not None else 0) | (Flag.LAST if b.last else 0)
    cycles = e.t.timing.mxm(m, k_dim, n_dim, kv.fmt)
    paced = e.paced_lag(codes[0], cycles, e.t.timing.install(k_dim, n_dim, kv.fmt))
    deps += ((codes[0], paced), (step[0], 0)) + (((acc, 0),) if acc is not None else ())
    partial = e.t.instrs[acc].s_out if acc is not None else -1
    acc = e.t.add(Instr(Op.MXM, cycles, fmt=kv.fmt, m=m, k=k_dim,
                        n=n_dim, flags=int(flags), s_a=codes[1], s_b=step[1], s_c=partial, s_d=s_d,
                        s_out=e.t.stream(), offset=0 if keys or (scales is not None and not blocked) else b.column,
                        args=tuple(sorted(heads.items())), deps=deps))
    if scales is not None and keys and not blocked:  # the block's scores, times its keys' scale
        acc = e.vop(Fn.SCALE, m, b.tokens, (acc, e.t.instrs[acc].s_out), scales(), b.tokens * kv.scale_bytes,
                    args=heads | {"on": "scores", "block": b.tokens})[0]
    return acc
