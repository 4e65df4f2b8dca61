"""Quantize: weight storage per precision, scales per output channel, and sharding of quantized weights."""

import pytest

from compiler.frontend import build_graph, load_model_config
from compiler.passes.quantize import Quantize
from compiler.passes.shard import shard_graph
from ir.errors import ConfigError, VerifyError
from ir.ops import Opcode
from ir.types import DType


@pytest.fixture(scope="module")
def graph():
    return build_graph(load_model_config("llama-3.1-8b"), "decode", layers=1)


def _by_name(g):
    return {p.name: p for p in g.params}


@pytest.mark.parametrize(("precision", "dtype", "bits"), [("fp8", DType.FP8, 8), ("int8", DType.I8, 8),
                                                          ("int4", DType.I4, 4)])
def test_weights_stored_narrow_with_per_channel_scales(graph, precision, dtype, bits):
    q = Quantize(precision)(graph)
    params = _by_name(q)
    w = params["layers.0.mlp.gate_proj.weight"]
    assert w.type.dtype is dtype and w.type.shape == (4096, 14336)
    assert params["layers.0.mlp.gate_proj.weight.scale"].type.shape == (14336,)
    assert params["embed_tokens.weight.scale"].type.shape == (128256,)
    # llama-3.1-8b is a bfloat16 checkpoint: norms stay bf16, and so do the per-channel scales
    assert params["layers.0.input_layernorm.weight"].type.dtype is DType.BF16
    assert params["layers.0.mlp.gate_proj.weight.scale"].type.dtype is DType.BF16
    weights = sum(p.type.numel for p in graph.params if p.name.endswith("proj.weight") or "embed" in p.name
                  or "lm_head" in p.name)
    scales = sum(p.type.nbytes for p in q.params if p.name.endswith(".scale"))
    norms = sum(p.type.nbytes for p in graph.params if "norm" in p.name)
    assert q.param_bytes() == weights * bits // 8 + scales + norms


def test_matmuls_take_the_scale_and_results_stay_16_bit(graph):
    q = Quantize("int8")(graph)
    for op in q.ops:
        if op.opcode in (Opcode.MATMUL, Opcode.EMBED):
            assert op.operands[2].name == op.operands[1].name + ".scale"
            assert op.results[0].type.dtype is DType.BF16  # the model's own 16-bit type


def test_fp16_is_identity(graph):
    assert Quantize("fp16")(graph) is graph


def test_twice_is_an_error(graph):
    with pytest.raises(VerifyError, match="without scales"):
        Quantize("int8")(Quantize("int8")(graph))


def test_unknown_precision():
    with pytest.raises(ConfigError, match="precision must be one of"):
        Quantize("int3")


def test_quantized_weights_and_scales_shard_together(graph):
    chip = shard_graph(Quantize("int8")(graph), 4)
    params = _by_name(chip)
    assert params["layers.0.self_attn.q_proj.weight"].type.shape == (4096, 1024)
    assert params["layers.0.self_attn.q_proj.weight.scale"].type.shape == (1024,)
    assert params["layers.0.self_attn.o_proj.weight"].type.shape == (1024, 4096)
    assert params["layers.0.self_attn.o_proj.weight.scale"].type.shape == (4096,)  # row split: whole
    assert params["embed_tokens.weight"].type.shape == (32064, 4096)
    assert params["embed_tokens.weight.scale"].type.shape == (32064,)


def test_tied_head_shards_the_table_by_vocabulary_rows(tmp_path):
    import json
    from pathlib import Path
    config = json.loads(Path("examples/models/tiny-llama.json").read_text()) | {"tie_word_embeddings": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    chip = shard_graph(Quantize("int8")(build_graph(load_model_config(str(path)), "decode")), 2)
    head = next(op for op in chip.ops if op.results[0].name == "logits")
    assert head.operands[1].type.shape == (128, 64) and head.operands[2].type.shape == (128,)
    assert head.results[0].type.shape == (1, 128)
