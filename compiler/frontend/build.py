"""build_graph: a ModelConfig and a phase (decode or prefill) in, the model's graph IR out."""

from __future__ import annotations

import re

from compiler.frontend.blocks import DENSE_BLOCKS, Block, Layer
from compiler.frontend.config import ModelConfig
from compiler.frontend.size import SAMPLE_LAYERS, check_size
from compiler.frontend.ssm import SSM_BLOCKS
from ir.errors import ConfigError
from ir.graph import Builder, Graph, Value
from ir.ops import Opcode
from ir.types import DType, TensorType
from targets.spec import SystemSpec

PHASES = ("decode", "prefill", "verify")
BLOCKS: dict[str, Block] = {**DENSE_BLOCKS, **SSM_BLOCKS}  # every block kind a layer plan may name


def build_graph(config: ModelConfig, phase: str, *, context: int = 4096, prompt: int = 1024, batch: int = 1,
                layers: int | None = None, reach: int | None = None, holds: SystemSpec | None = None,
                hidden: bool = False, all_logits: bool = False, head_row: int | None = None) -> Graph:
    """The graph of one phase for `batch` sequences.

    decode: one new token per sequence against KV caches of `context` tokens
    (inputs `tokens`, `pos`: i32[B]; outputs `logits` [B,V] and `next_tokens` i32[B]).
    prefill: `prompt` tokens per sequence, rows of a sequence contiguous (inputs i32[B*prompt];
    output `logits` [B,V], each sequence's last row's, as HF's logits_to_keep=1: the final norm and
    LM head run on those rows only; `head_row`: that row of each sequence's instead (a chunk's row
    where the whole prompt ends); `all_logits`: every row's, [B*prompt,V]), caches of
    max(context, prompt) tokens. verify (speculative decoding): `prompt`
    rows per sequence, its current token then its drafts, at their own positions against caches of
    `context` tokens (a prefill-like chunk, causal through the positions); outputs `logits`,
    `next_tokens` (every row's argmax) and `accepted` i32[B] (drafts accepted). `hidden` adds the
    output `hidden`, every row's residual stream before the final norm (what DeepSeek's MTP module
    proposes from). `layers` keeps only the first that many decoder layers (for small golden files).
    `reach` (a causal prefill chunk): attention reads each sequence's cache only below that position
    (absent, or the cache's length or more: the whole cache). A full graph is built only for a config
    some shipped target (or `holds`, the target planned for) could hold (frontend.size)."""
    rows, cache_tokens = _shape(phase, context, prompt, batch)
    if reach is not None and (isinstance(reach, bool) or not isinstance(reach, int) or reach < 1):
        raise ConfigError(f"reach must be a positive integer, got {reach!r}")
    reach = reach if reach is not None and reach < cache_tokens else None
    if layers is None:
        sample = min(config.num_layers, SAMPLE_LAYERS)
        check_size(config, build_graph(config, "decode", context=cache_tokens, batch=batch, layers=sample), holds)
    plan = config.layer_plan[:_layer_count(config, layers)]
    b = Builder(_graph_name(config.name, phase))
    tokens = b.input("tokens", TensorType(DType.I32, (rows,)))
    pos = b.input("pos", TensorType(DType.I32, (rows,)))
    b.scope = "embed"
    table = b.param("embed_tokens.weight", config.dtype, config.vocab_size, config.hidden_size)
    x = b.op(Opcode.EMBED, tokens, table)
    for i, kinds in enumerate(plan):
        layer = Layer(b, config, f"layers.{i}", pos, batch, cache_tokens, reach)
        for j, kind in enumerate(kinds):
            b.scope = layer.prefix if j == 0 or not config.block_units else f"{layer.prefix}.{kind}"
            x = BLOCKS[kind](layer, x)
    b.scope = "head"
    row = _head_row(head_row, rows // batch)
    last = phase == "prefill" and not all_logits and rows > batch
    outputs = _head(b, config, b.op(Opcode.ROWS, x, every=rows // batch, row=row) if last else x,
                    table, phase, tokens, batch)
    if hidden:  # an identity slice names the residual stream as an output (data movement only)
        outputs = (*outputs, b.op(Opcode.SLICE, x, name="hidden", start=0, stop=config.hidden_size))
    return b.finish(*outputs)


def _head(b: Builder, config: ModelConfig, x: Value, table: Value, phase: str, tokens: Value,
          batch: int) -> tuple[Value, ...]:
    """Final norm, vocab-parallel LM head, and (decode, verify) greedy next-token ids; verify also
    counts each sequence's accepted drafts."""
    h = b.op(Opcode.RMSNORM, x, b.param("norm.weight", config.dtype, config.hidden_size), eps=config.rms_norm_eps)
    if config.tie_word_embeddings:
        # One stored table serves both ends: the head reads it as [V, H] (x @ table.T), so
        # the weight is declared once and counted once.
        logits = b.op(Opcode.MATMUL, h, table, name="logits", split="col", transpose_b=True, vocab=True)
    else:
        head = b.param("lm_head.weight", config.dtype, config.hidden_size, config.vocab_size)
        logits = b.op(Opcode.MATMUL, h, head, name="logits", split="col", vocab=True)
    if phase == "prefill":
        return (logits,)
    next_tokens = b.op(Opcode.ARGMAX, logits, name="next_tokens")
    if phase == "verify":
        steps = logits.type.shape[0] // batch
        return logits, next_tokens, b.op(Opcode.ACCEPT, next_tokens, tokens, name="accepted", steps=steps)
    return logits, next_tokens


def _head_row(row: int | None, per_sequence: int) -> int:
    """The row of each sequence's rows whose logits prefill keeps: `row`, or the last."""
    if row is None:
        return per_sequence - 1
    if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < per_sequence:
        raise ConfigError(f"head_row must be an integer from 0 to {per_sequence - 1}, got {row!r}")
    return row


def _shape(phase: str, context: int, prompt: int, batch: int) -> tuple[int, int]:
    """(rows, cache tokens) of a phase."""
    if phase not in PHASES:
        raise ConfigError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    for name, value in (("context", context), ("prompt", prompt), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if phase == "decode":
        return batch, context
    if phase == "verify":
        return batch * prompt, context
    return batch * prompt, max(context, prompt)


def _layer_count(config: ModelConfig, layers: int | None) -> int:
    if layers is None:
        return config.num_layers
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= config.num_layers:
        raise ConfigError(f"layers must be between 1 and {config.num_layers} for {config.name}, got {layers!r}")
    return layers


def _graph_name(model: str, phase: str) -> str:
    # Model names carry '-' and '.', which are not identifier characters in IR text.
    return re.sub(r"\W", "_", f"{model}_{phase}")
