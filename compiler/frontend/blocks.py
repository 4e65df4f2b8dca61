"""Layer blocks (attention mixer, gated MLP) and the BLOCKS table the layer plan is read against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compiler.frontend.config import ModelConfig
from ir.graph import Builder, Value
from ir.ops import Opcode
from ir.types import DType

# Weights, norms and biases are declared 16-bit; the Quantize pass changes what is stored.
WEIGHT_DTYPE = DType.F16
CACHE_DTYPE = DType.F16


@dataclass(frozen=True, slots=True)
class Layer:
    """What a block needs to emit one layer's ops: the builder (scope already set), the
    config, the layer's parameter prefix, the positions input and the KV cache shape."""

    b: Builder
    config: ModelConfig
    prefix: str  # "layers.3"
    pos: Value
    batch: int
    cache_tokens: int

    def param(self, name: str, *shape: int) -> Value:
        return self.b.param(f"{self.prefix}.{name}", WEIGHT_DTYPE, *shape)


# A block maps the residual stream to the residual stream (its norm and residual add included).
Block = Callable[[Layer, Value], Value]


def linear(layer: Layer, x: Value, name: str, out: int, split: str, *, heads: int | None = None,
           bias: bool = False) -> Value:
    """x @ W (+ b) with W stored [in, out] under the HF name `name.weight`."""
    b = layer.b
    attrs: dict[str, int | str] = {"split": split} | ({"heads": heads} if heads else {})
    y = b.op(Opcode.MATMUL, x, layer.param(f"{name}.weight", x.type.shape[1], out), **attrs)
    return b.op(Opcode.ADD, y, layer.param(f"{name}.bias", out)) if bias else y


def rmsnorm(layer: Layer, x: Value, name: str) -> Value:
    weight = layer.param(f"{name}.weight", x.type.shape[1])
    return layer.b.op(Opcode.RMSNORM, x, weight, eps=layer.config.rms_norm_eps)


def rope(layer: Layer, x: Value, heads: int) -> Value:
    c = layer.config
    scaling = c.rope_scaling.attrs() if c.rope_scaling else {}
    return layer.b.op(Opcode.ROPE, x, layer.pos, heads=heads, head_dim=c.head_dim, theta=c.rope_theta, **scaling)


def attention(layer: Layer, x: Value) -> Value:
    """Pre-norm grouped-query self-attention with RoPE; writes this step's k, v into the cache."""
    b, c = layer.b, layer.config
    h = rmsnorm(layer, x, "input_layernorm")
    q_width, kv_width = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    q = linear(layer, h, "self_attn.q_proj", q_width, "col", heads=c.num_heads, bias=c.attention_bias)
    k = linear(layer, h, "self_attn.k_proj", kv_width, "col", heads=c.num_kv_heads, bias=c.attention_bias)
    v = linear(layer, h, "self_attn.v_proj", kv_width, "col", heads=c.num_kv_heads, bias=c.attention_bias)
    q, k = rope(layer, q, c.num_heads), rope(layer, k, c.num_kv_heads)
    k_cache = b.new_state(f"{layer.prefix}.k_cache", CACHE_DTYPE, layer.batch, layer.cache_tokens, kv_width)
    v_cache = b.new_state(f"{layer.prefix}.v_cache", CACHE_DTYPE, layer.batch, layer.cache_tokens, kv_width)
    a = b.op(Opcode.ATTENTION, q, k, v, k_cache, v_cache, layer.pos,
             heads=c.num_heads, kv_heads=c.num_kv_heads, head_dim=c.head_dim)
    o = linear(layer, a, "self_attn.o_proj", c.hidden_size, "row", bias=c.attention_out_bias)
    return b.op(Opcode.ADD, x, o)


ACTIVATION_OPS = {"silu": Opcode.SILU, "gelu": Opcode.GELU}


def gated_mlp(layer: Layer, x: Value) -> Value:
    """Pre-norm SwiGLU MLP: down(act(gate(h)) * up(h)), Megatron-split col then row."""
    b, c = layer.b, layer.config
    h = rmsnorm(layer, x, "post_attention_layernorm")
    gate = linear(layer, h, "mlp.gate_proj", c.intermediate_size, "col", bias=c.mlp_bias)
    up = linear(layer, h, "mlp.up_proj", c.intermediate_size, "col", bias=c.mlp_bias)
    act = b.op(Opcode.MUL, b.op(ACTIVATION_OPS[c.hidden_act], gate), up)
    down = linear(layer, act, "mlp.down_proj", c.hidden_size, "row", bias=c.mlp_bias)
    return b.op(Opcode.ADD, x, down)


def moe_mlp(layer: Layer, x: Value) -> Value:
    """Mixtral's sparse MLP: a replicated router picks k of E experts per token; the experts
    (stacked [E, ...] under `block_sparse_moe.experts.*`) are spread over the group."""
    b, c = layer.b, layer.config
    h = rmsnorm(layer, x, "post_attention_layernorm")
    logits = b.op(Opcode.MATMUL, h, layer.param("block_sparse_moe.gate.weight", c.hidden_size, c.num_experts))
    weights, ids = b.op_n(Opcode.TOPK, logits, k=c.experts_per_token, scoring="softmax", normalize=True)
    e, inter = c.num_experts, c.moe_intermediate_size
    gate = layer.param("block_sparse_moe.experts.gate", e, c.hidden_size, inter)
    up = layer.param("block_sparse_moe.experts.up", e, c.hidden_size, inter)
    down = layer.param("block_sparse_moe.experts.down", e, inter, c.hidden_size)
    y = b.op(Opcode.EXPERTS, h, weights, ids, gate, up, down, experts=e, top_k=c.experts_per_token,
             act=c.hidden_act, split="expert")
    return b.op(Opcode.ADD, x, y)


# Block kind -> builder. The layer plan names kinds; new architectures add rows here
# (e.g. "moe", "mla", "mamba") rather than branches in the graph builder.
BLOCKS: dict[str, Block] = {
    "attention": attention,
    "mlp": gated_mlp,
    "moe": moe_mlp,
}
