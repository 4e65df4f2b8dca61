"""Layer blocks (attention mixer, gated MLP) and the BLOCKS table the layer plan is read against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compiler.frontend.config import ModelConfig
from ir.graph import Builder, Value
from ir.ops import Opcode
from ir.rope import yarn_mscale

# Weights, norms, biases and caches are declared in the model's 16-bit type (ModelConfig.dtype:
# bf16 for a bfloat16 checkpoint); the Quantize passes change what is stored.


@dataclass(frozen=True, slots=True)
class Layer:
    """What a block needs to emit one layer's ops: the builder (scope already set), the
    config, the layer's parameter prefix, the positions input, the KV cache shape and the cache
    positions attention reads (`reach`; None: all of them)."""

    b: Builder
    config: ModelConfig
    prefix: str  # "layers.3"
    pos: Value
    batch: int
    cache_tokens: int
    reach: int | None = None

    def reach_attrs(self) -> dict[str, int]:
        return {} if self.reach is None else {"reach": self.reach}

    def param(self, name: str, *shape: int) -> Value:
        return self.b.param(f"{self.prefix}.{name}", self.config.dtype, *shape)

    def cache(self, name: str, *shape: int) -> Value:
        """A state (KV cache, conv state) in the model's 16-bit type."""
        return self.b.new_state(f"{self.prefix}.{name}", self.config.dtype, *shape)


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
    k_cache = layer.cache("k_cache", layer.batch, layer.cache_tokens, kv_width)
    v_cache = layer.cache("v_cache", layer.batch, layer.cache_tokens, kv_width)
    a = b.op(Opcode.ATTENTION, q, k, v, k_cache, v_cache, layer.pos,
             heads=c.num_heads, kv_heads=c.num_kv_heads, head_dim=c.head_dim, **layer.reach_attrs())
    o = linear(layer, a, "self_attn.o_proj", c.hidden_size, "row", bias=c.attention_out_bias)
    return b.op(Opcode.ADD, x, o)


ACTIVATION_OPS = {"silu": Opcode.SILU, "gelu": Opcode.GELU}


def gated_mlp(layer: Layer, x: Value) -> Value:
    """Pre-norm SwiGLU MLP: down(act(gate(h)) * up(h)), Megatron-split col then row."""
    h = rmsnorm(layer, x, "post_attention_layernorm")
    return layer.b.op(Opcode.ADD, x, swiglu(layer, h, "mlp", layer.config.intermediate_size))


def swiglu(layer: Layer, h: Value, name: str, width: int) -> Value:
    """down(act(gate(h)) * up(h)) under `name.{gate,up,down}_proj`; the result is a row-split partial sum."""
    b, c = layer.b, layer.config
    gate = linear(layer, h, f"{name}.gate_proj", width, "col", bias=c.mlp_bias)
    up = linear(layer, h, f"{name}.up_proj", width, "col", bias=c.mlp_bias)
    act = b.op(Opcode.MUL, b.op(ACTIVATION_OPS[c.hidden_act], gate), up)
    return linear(layer, act, f"{name}.down_proj", c.hidden_size, "row", bias=c.mlp_bias)


def moe_mlp(layer: Layer, x: Value) -> Value:
    """Mixtral's sparse MLP: a replicated router picks k of E experts per token (their softmax
    weights renormalised); the experts (stacked [E, ...] under `block_sparse_moe.experts.*`)
    are spread over the group."""
    return sparse_mlp(layer, x, "post_attention_layernorm", "block_sparse_moe.gate", "block_sparse_moe.experts",
                      normalize=True)


def sparse_mlp(layer: Layer, x: Value, norm: str, router: str, experts: str, normalize: bool) -> Value:
    """Pre-norm top-k mixture of experts under the given parameter names."""
    b, c = layer.b, layer.config
    h = rmsnorm(layer, x, norm)
    logits = b.op(Opcode.MATMUL, h, layer.param(f"{router}.weight", c.hidden_size, c.num_experts))
    weights, ids = b.op_n(Opcode.TOPK, logits, k=c.experts_per_token, scoring="softmax", normalize=normalize)
    e, inter = c.num_experts, c.moe_intermediate_size
    gate = layer.param(f"{experts}.gate", e, c.hidden_size, inter)
    up = layer.param(f"{experts}.up", e, c.hidden_size, inter)
    down = layer.param(f"{experts}.down", e, inter, c.hidden_size)
    y = b.op(Opcode.EXPERTS, h, weights, ids, gate, up, down, experts=e, top_k=c.experts_per_token,
             act=c.hidden_act, split="expert")
    return b.op(Opcode.ADD, x, y)


def replicated(layer: Layer, x: Value, name: str, out: int) -> Value:
    """x @ W with W [in, out] whole on every chip (a small projection not worth a collective)."""
    return layer.b.op(Opcode.MATMUL, x, layer.param(f"{name}.weight", x.type.shape[1], out))


def mla_attention(layer: Layer, x: Value) -> Value:
    """DeepSeek's multi-head latent attention, pre-norm. The cache holds one compressed row
    per token, [c_kv (kv_lora_rank) | k_pe (rope dim)], instead of per-head keys and values.

    Hugging Face's q_b_proj (q_proj without a q rank) and kv_a_proj_with_mqa are stored
    split by their output features, so each part is a plain matmul: `*.nope`/`*.rope` (each
    head's first nope and last rope features) and `*.latent`/`*.rope`. Sharding: q_b and
    kv_b by head, o_proj by rows; the low-rank down-projections stay whole, and so does the
    latent cache, which every head reads (each chip of a group keeps a full copy)."""
    b, c, m = layer.b, layer.config, layer.config.mla
    heads = c.num_heads
    h = rmsnorm(layer, x, "input_layernorm")
    q_in, q_name = h, "self_attn.q_proj"
    if m.q_lora_rank:
        q_in = rmsnorm(layer, replicated(layer, h, "self_attn.q_a_proj", m.q_lora_rank), "self_attn.q_a_layernorm")
        q_name = "self_attn.q_b_proj"
    q_nope = linear(layer, q_in, f"{q_name}.nope", heads * m.qk_nope_head_dim, "col", heads=heads)
    q_pe = _mla_rope(layer, linear(layer, q_in, f"{q_name}.rope", heads * m.qk_rope_head_dim, "col", heads=heads))
    latent = replicated(layer, h, "self_attn.kv_a_proj_with_mqa.latent", m.kv_lora_rank)
    c_kv = rmsnorm(layer, latent, "self_attn.kv_a_layernorm")
    k_pe = _mla_rope(layer, replicated(layer, h, "self_attn.kv_a_proj_with_mqa.rope", m.qk_rope_head_dim))
    cache = layer.cache("latent_cache", layer.batch, layer.cache_tokens, m.kv_lora_rank + m.qk_rope_head_dim)
    kv_b = layer.param("self_attn.kv_b_proj.weight", m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim))
    a = b.op(Opcode.MLA_ATTENTION, q_nope, q_pe, c_kv, k_pe, cache, layer.pos, kv_b, heads=heads,
             nope_dim=m.qk_nope_head_dim, rope_dim=m.qk_rope_head_dim, v_dim=m.v_head_dim, scale=mla_scale(c),
             **layer.reach_attrs())
    return b.op(Opcode.ADD, x, linear(layer, a, "self_attn.o_proj", c.hidden_size, "row"))


def _mla_rope(layer: Layer, x: Value) -> Value:
    """RoPE over the rope dims of each head (one head for the shared k_pe)."""
    c, dim = layer.config, layer.config.mla.qk_rope_head_dim
    scaling = c.rope_scaling.attrs() if c.rope_scaling else {}
    interleave = {"interleave": True} if c.mla.rope_interleave else {}
    return layer.b.op(Opcode.ROPE, x, layer.pos, heads=x.type.shape[1] // dim, head_dim=dim, theta=c.rope_theta,
                      **scaling, **interleave)


def mla_scale(c: ModelConfig) -> float:
    """Softmax scale: 1/sqrt(nope + rope), times YaRN's mscale(factor, mscale_all_dim)^2 when
    the context is stretched (Hugging Face's yarn_apply_mscale)."""
    scale = (c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim) ** -0.5
    r = c.rope_scaling
    if r is not None and r.mscale_all_dim:
        scale *= yarn_mscale(r.factor, r.mscale_all_dim) ** 2
    return scale


def moe_shared_mlp(layer: Layer, x: Value) -> Value:
    """DeepSeek-V3's MoE: `topk` picks experts by sigmoid score plus a correction bias within
    the best expert groups, weights them by their unbiased scores (normalised, scaled); the
    shared experts are one always-on SwiGLU split like a dense MLP. Both outputs are partial
    sums over the group, added before the one allreduce."""
    b, c, r = layer.b, layer.config, layer.config.router
    e, k = c.num_experts, c.experts_per_token
    h = rmsnorm(layer, x, "post_attention_layernorm")
    logits = b.op(Opcode.MATMUL, h, layer.param("mlp.gate.weight", c.hidden_size, e))
    groups = {"groups": r.groups, "topk_groups": r.topk_groups} if r.groups > 1 else {}
    weights, ids = b.op_n(Opcode.TOPK, logits, layer.param("mlp.gate.e_score_correction_bias", e), k=k,
                          scoring="sigmoid", normalize=r.normalize, scale=r.scale, **groups)
    gate, up = (layer.param(f"mlp.experts.{n}", e, c.hidden_size, c.moe_intermediate_size) for n in ("gate", "up"))
    down = layer.param("mlp.experts.down", e, c.moe_intermediate_size, c.hidden_size)
    y = b.op(Opcode.EXPERTS, h, weights, ids, gate, up, down, experts=e, top_k=k, act=c.hidden_act, split="expert")
    if r.shared_intermediate_size:
        y = b.op(Opcode.ADD, y, swiglu(layer, h, "mlp.shared_experts", r.shared_intermediate_size))
    return b.op(Opcode.ADD, x, y)


# Block kind -> builder for the attention and feed-forward kinds; compiler/frontend/build.py joins
# them with the Mamba blocks (compiler/frontend/ssm.py, which builds on the helpers above). The layer
# plan names kinds; new architectures add rows rather than branches in the graph builder.
DENSE_BLOCKS: dict[str, Block] = {
    "attention": attention,
    "mlp": gated_mlp,
    "moe": moe_mlp,
    "mla": mla_attention,
    "moe_shared": moe_shared_mlp,
}

