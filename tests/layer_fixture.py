"""A hand-built Llama-style decoder layer (and embed/head units) for tests that must not
depend on the frontend: the partitioner and shard pass are checked against it."""

from ir.graph import Builder, Graph
from ir.ops import Opcode
from ir.types import DType, TensorType


def llama_like(hidden=64, inter=176, heads=4, kv=2, head_dim=16, vocab=256, layers=2, rows=1, cache=32,
               wdtype=DType.F16) -> Graph:
    b = Builder("fixture")
    tokens = b.input("tokens", TensorType(DType.I32, (rows,)))
    pos = b.input("pos", TensorType(DType.I32, (rows,)))
    b.scope = "embed"
    x = b.op(Opcode.EMBED, tokens, b.param("embed_tokens.weight", wdtype, vocab, hidden))
    for i in range(layers):
        b.scope = f"layers.{i}"
        x = _layer(b, x, pos, f"layers.{i}", hidden, inter, heads, kv, head_dim, cache, wdtype)
    b.scope = "head"
    h = b.op(Opcode.RMSNORM, x, b.param("norm.weight", DType.F16, hidden), eps=1e-5)
    logits = b.op(Opcode.MATMUL, h, b.param("lm_head.weight", wdtype, hidden, vocab), split="col")
    return b.finish(logits, b.op(Opcode.ARGMAX, logits))


def _layer(b, x, pos, p, hidden, inter, heads, kv, hd, cache, wdtype):
    h = b.op(Opcode.RMSNORM, x, b.param(f"{p}.input_layernorm.weight", DType.F16, hidden), eps=1e-5)
    q = b.op(Opcode.MATMUL, h, b.param(f"{p}.q_proj.weight", wdtype, hidden, heads * hd), split="col", heads=heads)
    k = b.op(Opcode.MATMUL, h, b.param(f"{p}.k_proj.weight", wdtype, hidden, kv * hd), split="col", heads=kv)
    v = b.op(Opcode.MATMUL, h, b.param(f"{p}.v_proj.weight", wdtype, hidden, kv * hd), split="col", heads=kv)
    q = b.op(Opcode.ROPE, q, pos, heads=heads, head_dim=hd, theta=10000.0)
    k = b.op(Opcode.ROPE, k, pos, heads=kv, head_dim=hd, theta=10000.0)
    kc = b.new_state(f"{p}.k_cache", DType.F16, 1, cache, kv * hd)
    vc = b.new_state(f"{p}.v_cache", DType.F16, 1, cache, kv * hd)
    a = b.op(Opcode.ATTENTION, q, k, v, kc, vc, pos, heads=heads, kv_heads=kv, head_dim=hd)
    o = b.op(Opcode.MATMUL, a, b.param(f"{p}.o_proj.weight", wdtype, heads * hd, hidden), split="row")
    x = b.op(Opcode.ADD, x, o)
    h = b.op(Opcode.RMSNORM, x, b.param(f"{p}.post_attention_layernorm.weight", DType.F16, hidden), eps=1e-5)
    g = b.op(Opcode.MATMUL, h, b.param(f"{p}.gate_proj.weight", wdtype, hidden, inter), split="col")
    u = b.op(Opcode.MATMUL, h, b.param(f"{p}.up_proj.weight", wdtype, hidden, inter), split="col")
    d = b.op(Opcode.MATMUL, b.op(Opcode.MUL, b.op(Opcode.SILU, g), u),
             b.param(f"{p}.down_proj.weight", wdtype, inter, hidden), split="row")
    return b.op(Opcode.ADD, x, d)
