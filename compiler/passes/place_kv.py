"""PlaceKV: split every attention cache over two memories, a ring of the newest positions in SRAM and the older
ones in a tier below."""

from __future__ import annotations

from dataclasses import dataclass

from ir.errors import ConfigError
from ir.graph import Graph, Op, Value, sorted_attrs
from ir.ops import KV_TIERS, Opcode

# A tier moves a cache's positions in blocks of at most this many (one fetch instruction each), and
# at least MIN_BLOCK: large enough that a transfer's fixed latency is a small share of it, small
# enough that two staging blocks are a sliver of SRAM.
MAX_BLOCK = 1024
MIN_BLOCK = 16
SPLIT_BLOCKS = 4  # a short cold range still moves in a few blocks, so fetches overlap the MXM


def tier_block(cold: int) -> int:
    """Positions one tier transfer moves for a cold range of `cold` positions."""
    quarter = -(-cold // SPLIT_BLOCKS)
    return max(MIN_BLOCK, min(MAX_BLOCK, -(-quarter // MIN_BLOCK) * MIN_BLOCK))


@dataclass(frozen=True, slots=True)
class PlaceKV:
    """Keep the `hot` newest positions of every attention cache in SRAM and the older ones in `tier`.

    Requires: attention ops with k and v caches [B, C, D] (state; a quantized cache's scales [B, C, X]
    beside them). Produces: for each cache (and scale) with C > hot, the SRAM part [B, hot, ...] under
    its own name and a cold part `<name>.cold` [B, C - hot, ...] right after it in `state`; attention
    takes the cold parts after its other operands (ir.ops.tier_operands) with attrs tier, cold
    (positions below SRAM) and block (positions a transfer moves). The SRAM part is a ring (position
    p in row p mod hot) and the cold part holds positions 0..cold-1, each written as it is made
    (ir.ops._tiered). `tier` "sram" (or hot None) returns the graph unchanged. Latent attention
    (DeepSeek) is refused."""

    tier: str = "sram"
    hot: int | None = None

    def __call__(self, graph: Graph) -> Graph:
        if self.tier == "sram" or self.hot is None:
            return graph
        if self.tier not in KV_TIERS:
            raise ConfigError(f"--kv-tier must be one of sram, {', '.join(KV_TIERS)}, got {self.tier!r}")
        self._refuse(graph)
        caches = {op.operands[i].name for op in graph.ops if op.opcode is Opcode.ATTENTION
                  for i in ((3, 4, 6, 7) if len(op.operands) == 8 else (3, 4))}
        state, split = [], {}
        for s in graph.state:
            batch, tokens, width = s.type.shape if s.name in caches else (0, 0, 0)
            if s.name not in caches or tokens <= self.hot:
                state.append(s)
                continue
            split[s.name] = (Value(s.name, s.type.with_shape(batch, self.hot, width)),
                             Value(f"{s.name}.cold", s.type.with_shape(batch, tokens - self.hot, width)))
            state.extend(split[s.name])
        ops = tuple(self._rewrite(op, split) for op in graph.ops)
        return Graph(graph.name, graph.inputs, graph.params, tuple(state), ops, graph.outputs)

    def _refuse(self, graph: Graph) -> None:
        for op in graph.ops:
            if op.opcode is Opcode.MLA_ATTENTION:
                raise ConfigError(f"--kv-tier {self.tier}: the latent cache of multi-head latent attention (DeepSeek) "
                                  "stays in SRAM; use --kv-tier sram")

    def _rewrite(self, op: Op, split: dict[str, tuple[Value, Value]]) -> Op:
        if op.opcode is not Opcode.ATTENTION or op.operands[3].name not in split:
            return op
        parts = [split[op.operands[i].name] for i in ((3, 4, 6, 7) if len(op.operands) == 8 else (3, 4))]
        cold = parts[0][1].type.shape[1]
        # A tiered cache is streamed whole (masked), so a causal chunk's `reach` does not apply to it.
        attrs = {k: v for k, v in op.attr.items() if k != "reach"} | {"tier": self.tier, "cold": cold,
                                                                        "block": tier_block(cold)}
        hot = [p[0] for p in parts]
        operands = (*op.operands[:3], *hot[:2], op.operands[5], *hot[2:], *(p[1] for p in parts))
        return Op(op.opcode, operands, op.results, sorted_attrs(attrs), op.scope)
