"""DeepSeek-V3's multi-token-prediction (MTP) module as a graph: the proposer of speculative decoding.

Per depth d (`num_nextn_predict_layers` of them, chained): the next token's embedding (the model's own
table) and the previous depth's hidden state (the main model's last, before its final norm), each
rms-normed, projected together by `eh_proj` (declared as its two halves, so no concatenation is
needed: [e | h] @ W = e @ W_e + h @ W_h), one decoder layer like the model's last (latent attention,
routed and shared experts, its own cache), and its own head (`shared_head`: a norm and [H, V]).
Inputs `tokens`, `pos` i32[B*S] and `hidden` [B*S, H] (S rows a sequence: the module runs beside a
verify step over its rows); outputs `logits` (the last depth's), per depth its argmax (`next_tokens`,
then `next_tokens_2`, ...) and `hidden` (the last depth's). Row i of a sequence takes token t(i+1) and
the target's hidden state at i, at position i: depth 1 predicts t(i+2); depth d + 1 takes depth d's
hidden state and the embedding of depth d's prediction (DeepSeek-V3 embeds t(i+d+1) there; at the row
that proposes it is not known yet) and predicts t(i+d+2).
"""

from __future__ import annotations

from compiler.frontend.blocks import DENSE_BLOCKS, Layer
from compiler.frontend.config import ModelConfig
from ir.graph import Builder, Graph
from ir.ops import Opcode
from ir.types import DType, TensorType


def build_mtp_graph(config: ModelConfig, *, context: int = 4096, batch: int = 1, rows: int = 1) -> Graph:
    """The MTP module's step for `batch` sequences of `rows` rows against caches of `context` tokens."""
    b = Builder(f"{config.name}_mtp".replace("-", "_").replace(".", "_"))
    tokens = b.input("tokens", TensorType(DType.I32, (batch * rows,)))
    pos = b.input("pos", TensorType(DType.I32, (batch * rows,)))
    hidden = b.input("hidden", TensorType(config.dtype, (batch * rows, config.hidden_size)))
    b.scope = "embed"
    table = b.param("embed_tokens.weight", config.dtype, config.vocab_size, config.hidden_size)
    e = b.op(Opcode.EMBED, tokens, table)
    h, logits, proposals = hidden, None, []
    for depth in range(config.mtp_layers):
        prefix = f"mtp.{depth}"
        layer = Layer(b, config, prefix, pos, batch, context)
        kinds = config.layer_plan[-1]
        b.scope = prefix
        if depth:  # this depth's next token: the previous depth's prediction (the row's only one known)
            e = b.op(Opcode.EMBED, proposals[-1], table)
        x = b.op(Opcode.ADD, _projected(b, config, layer, e, "enorm", "eh_proj.embed"),
                 _projected(b, config, layer, h, "hnorm", "eh_proj.hidden"))
        for j, kind in enumerate(kinds):
            b.scope = prefix if j == 0 or not config.block_units else f"{prefix}.{kind}"
            x = DENSE_BLOCKS[kind](layer, x)
        b.scope = f"{prefix}.head"
        n = b.op(Opcode.RMSNORM, x, layer.param("shared_head.norm.weight", config.hidden_size),
                 eps=config.rms_norm_eps)
        last = depth == config.mtp_layers - 1
        head = layer.param("shared_head.head.weight", config.hidden_size, config.vocab_size)
        logits = b.op(Opcode.MATMUL, n, head, name="logits" if last else None, split="col", vocab=True)
        proposals.append(b.op(Opcode.ARGMAX, logits, name=proposal_name(depth)))
        h = x
    return b.finish(logits, *proposals, h)


def proposal_name(depth: int) -> str:
    """The output of depth `depth` (0-based): `next_tokens`, then `next_tokens_2`, `next_tokens_3`, ..."""
    return "next_tokens" if depth == 0 else f"next_tokens_{depth + 1}"


def _projected(b: Builder, config: ModelConfig, layer: Layer, x, norm: str, proj: str):
    n = b.op(Opcode.RMSNORM, x, layer.param(f"{norm}.weight", config.hidden_size), eps=config.rms_norm_eps)
    return b.op(Opcode.MATMUL, n, layer.param(f"{proj}.weight", config.hidden_size, config.hidden_size))
