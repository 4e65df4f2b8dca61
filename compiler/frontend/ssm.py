"""Mamba and Jamba blocks: the selective state-space mixer, and Jamba's attention and MLPs.

Params carry Hugging Face's names under the layer prefix (`layers.3.mixer.*` for Mamba,
`layers.3.mamba.*`, `layers.3.feed_forward.*` for Jamba), matrices stored [in, out]. Two
departures, both so tensor parallelism can split the inner channels: HF's `in_proj.weight`
[2*inner, hidden] is declared as its halves `in_proj_x.weight` and `in_proj_z.weight` (a column
split of the fused matrix would hand a chip x channels of one half and z channels of the
other), and `conv1d.weight` [inner, 1, K] drops its middle axis.
"""

from __future__ import annotations

from compiler.frontend.blocks import ACTIVATION_OPS, Block, Layer, linear, rmsnorm, sparse_mlp
from ir.graph import Value
from ir.ops import Opcode
from ir.types import DType

# The recurrence h = exp(dt*A) * h + dt*B*x runs over the whole context, so rounding h to 16
# bits every step would compound; it is kept in f32 (as mamba_ssm does). The conv state only
# holds the last K-1 inputs, which are 16-bit activations already.
SSM_STATE_DTYPE = DType.F32


def mamba_mixer(layer: Layer, h: Value, name: str) -> Value:
    """in_proj -> causal conv + act -> x_proj (dt, B, C) -> dt_proj -> selective scan, gated by
    silu(z) -> out_proj. Inner channels are split over the group (col, then row at out_proj);
    x_proj is row-split, so its small dt/B/C output is one allreduce."""
    b, s = layer.b, layer.config.ssm
    act = ACTIVATION_OPS[layer.config.hidden_act]
    x = linear(layer, h, f"{name}.in_proj_x", s.inner, "col", bias=s.proj_bias)
    z = linear(layer, h, f"{name}.in_proj_z", s.inner, "col", bias=s.proj_bias)
    x = b.op(act, _conv(layer, x, name))
    dbc = linear(layer, x, f"{name}.x_proj", s.dt_rank + 2 * s.state, "row")
    bounds = (0, s.dt_rank, s.dt_rank + s.state, s.dt_rank + 2 * s.state)
    dt, bs, cs = (b.op(Opcode.SLICE, dbc, start=lo, stop=hi) for lo, hi in zip(bounds, bounds[1:], strict=False))
    if s.inner_norms:  # Jamba normalises dt, B and C before use
        dt, bs, cs = (rmsnorm(layer, v, f"{name}.{n}_layernorm") for v, n in ((dt, "dt"), (bs, "b"), (cs, "c")))
    dt = linear(layer, dt, f"{name}.dt_proj", s.inner, "col", bias=True)
    state = b.new_state(f"{layer.prefix}.ssm_state", SSM_STATE_DTYPE, layer.batch, s.inner, s.state)
    a_log, d = layer.param(f"{name}.A_log", s.inner, s.state), layer.param(f"{name}.D", s.inner)
    y = b.op(Opcode.SELECTIVE_SCAN, x, dt, a_log, bs, cs, d, state)
    y = b.op(Opcode.MUL, y, b.op(Opcode.SILU, z))  # HF gates with silu whatever hidden_act says
    return linear(layer, y, f"{name}.out_proj", layer.config.hidden_size, "row", bias=s.proj_bias)


def _conv(layer: Layer, x: Value, name: str) -> Value:
    s = layer.config.ssm
    state = layer.cache("conv_state", layer.batch, s.inner, s.conv_kernel - 1)
    weight = layer.param(f"{name}.conv1d.weight", s.inner, s.conv_kernel)
    bias = (layer.param(f"{name}.conv1d.bias", s.inner),) if s.conv_bias else ()
    return layer.b.op(Opcode.CONV1D, x, weight, state, *bias)


def mamba(layer: Layer, x: Value) -> Value:
    """Mamba's block: x + mixer(rmsnorm(x)), names `norm` and `mixer.*`."""
    return layer.b.op(Opcode.ADD, x, mamba_mixer(layer, rmsnorm(layer, x, "norm"), "mixer"))


def jamba_mamba(layer: Layer, x: Value) -> Value:
    return layer.b.op(Opcode.ADD, x, mamba_mixer(layer, rmsnorm(layer, x, "input_layernorm"), "mamba"))


def jamba_attention(layer: Layer, x: Value) -> Value:
    """Grouped-query attention with no positional encoding: Jamba's Mamba layers carry
    position, so its attention layers use none (no RoPE)."""
    b, c = layer.b, layer.config
    h = rmsnorm(layer, x, "input_layernorm")
    q_width, kv_width = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    q = linear(layer, h, "self_attn.q_proj", q_width, "col", heads=c.num_heads)
    k = linear(layer, h, "self_attn.k_proj", kv_width, "col", heads=c.num_kv_heads)
    v = linear(layer, h, "self_attn.v_proj", kv_width, "col", heads=c.num_kv_heads)
    k_cache = layer.cache("k_cache", layer.batch, layer.cache_tokens, kv_width)
    v_cache = layer.cache("v_cache", layer.batch, layer.cache_tokens, kv_width)
    a = b.op(Opcode.ATTENTION, q, k, v, k_cache, v_cache, layer.pos,
             heads=c.num_heads, kv_heads=c.num_kv_heads, head_dim=c.head_dim, **layer.reach_attrs())
    return b.op(Opcode.ADD, x, linear(layer, a, "self_attn.o_proj", c.hidden_size, "row"))


def jamba_mlp(layer: Layer, x: Value) -> Value:
    """The SwiGLU MLP under Jamba's names (`pre_ff_layernorm`, `feed_forward.*`)."""
    b, c = layer.b, layer.config
    h = rmsnorm(layer, x, "pre_ff_layernorm")
    gate = linear(layer, h, "feed_forward.gate_proj", c.intermediate_size, "col")
    up = linear(layer, h, "feed_forward.up_proj", c.intermediate_size, "col")
    down = linear(layer, b.op(Opcode.MUL, b.op(ACTIVATION_OPS[c.hidden_act], gate), up), "feed_forward.down_proj",
                  c.hidden_size, "row")
    return b.op(Opcode.ADD, x, down)


def jamba_moe(layer: Layer, x: Value) -> Value:
    """Jamba's sparse MLP: softmax over all experts, the k best kept with their softmax
    weights as they are (HF's JambaTopKRouter does not renormalise)."""
    return sparse_mlp(layer, x, "pre_ff_layernorm", "feed_forward.router", "feed_forward.experts", normalize=False)


SSM_BLOCKS: dict[str, Block] = {
    "mamba": mamba,
    "none": lambda layer, x: x,  # Mamba layers have no MLP
    "jamba_mamba": jamba_mamba,
    "jamba_attention": jamba_attention,
    "jamba_mlp": jamba_mlp,
    "jamba_moe": jamba_moe,
}
