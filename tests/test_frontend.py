"""The frontend: shipped configs read into the right shapes, and bad configs name their field."""

import json
from pathlib import Path

import pytest

from compiler.frontend import build_graph, load_model_config
from ir.errors import ConfigError
from ir.ops import Opcode

# Published parameter counts (Hugging Face model cards / safetensors metadata).
PARAMS = {
    "llama-3.1-8b": 8.030e9,
    "llama-3.1-70b": 70.554e9,
    "llama-3.1-405b": 405.853e9,
    "llama-2-70b": 68.977e9,
    "mistral-7b": 7.242e9,
    "qwen2-7b": 7.616e9,
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count_matches_the_model_card(name):
    graph = build_graph(load_model_config(name), "decode")
    assert sum(p.type.numel for p in graph.params) == pytest.approx(PARAMS[name], rel=1e-3)


@pytest.mark.parametrize(("name", "layers", "kv_width"), [
    ("llama-3.1-8b", 32, 8 * 128), ("llama-3.1-70b", 80, 8 * 128), ("llama-3.1-405b", 126, 8 * 128),
    ("llama-2-70b", 80, 8 * 128), ("qwen2-7b", 28, 4 * 128),
])
def test_kv_cache_bytes_per_token_by_hand(name, layers, kv_width):
    """layers x (k and v) x kv heads x head_dim x 2 bytes."""
    graph = build_graph(load_model_config(name), "decode", context=1000)
    assert graph.state_bytes() == 1000 * layers * 2 * kv_width * 2


def test_decode_graph_shape():
    config = load_model_config("llama-3.1-8b")
    graph = build_graph(config, "decode", batch=2, context=64)
    assert [v.name for v in graph.outputs] == ["logits", "next_tokens"]
    assert graph.outputs[0].type.shape == (2, 128256)
    assert graph.scopes() == ["embed", *(f"layers.{i}" for i in range(32)), "head"]
    attention = next(op for op in graph.ops if op.opcode is Opcode.ATTENTION)
    assert attention.attr == {"heads": 32, "kv_heads": 8, "head_dim": 128}
    assert attention.operands[3].type.shape == (2, 64, 1024)
    rope = next(op for op in graph.ops if op.opcode is Opcode.ROPE)
    assert rope.attr["scaling"] == "llama3" and rope.attr["original_max_position"] == 8192


def test_prefill_rows_and_cache():
    graph = build_graph(load_model_config("tiny-llama"), "prefill", prompt=32, batch=3, context=16)
    assert graph.inputs[0].type.shape == (96,)
    assert [v.name for v in graph.outputs] == ["logits"]
    assert graph.outputs[0].type.shape == (3, 256)  # each sequence's last row only
    assert graph.state[0].type.shape[1] == 32  # the cache holds at least the prompt


def test_qwen2_has_qkv_biases_only():
    graph = build_graph(load_model_config("qwen2-7b"), "decode", layers=1)
    biases = sorted(p.name for p in graph.params if p.name.endswith(".bias"))
    assert biases == [f"layers.0.self_attn.{x}_proj.bias" for x in "kqv"]


def test_layers_keeps_a_prefix():
    graph = build_graph(load_model_config("llama-3.1-70b"), "decode", layers=2)
    assert graph.scopes() == ["embed", "layers.0", "layers.1", "head"]


def test_tied_embeddings_share_one_table(tmp_path):
    config = json.loads(Path("examples/models/tiny-llama.json").read_text()) | {"tie_word_embeddings": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    graph = build_graph(load_model_config(str(path)), "decode")
    assert "lm_head.weight" not in {p.name for p in graph.params}
    head = next(op for op in graph.ops if op.results[0].name == "logits")
    assert head.operands[1].name == "embed_tokens.weight" and head.attr["transpose_b"] is True


def _write(tmp_path, **changes):
    config = json.loads(Path("examples/models/llama-3.1-8b.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return str(path)


@pytest.mark.parametrize(("changes", "message"), [
    ({"hidden_size": None}, "field 'hidden_size' is required"),
    ({"num_hidden_layers": -3}, "field 'num_hidden_layers' must be a positive integer"),
    ({"architectures": ["GPT2LMHeadModel"]}, "field 'architectures' names 'GPT2LMHeadModel'"),
    ({"num_key_value_heads": 5}, "field 'num_key_value_heads' 5 does not divide"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "field 'rope_scaling.low_freq_factor'"),
    ({"rope_scaling": {"rope_type": "longrope", "factor": 8.0}}, "field 'rope_scaling.rope_type' is 'longrope'"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 8.0}}, "field 'rope_scaling.original_max_position_embeddings'"),
    ({"hidden_act": "relu"}, "field 'hidden_act' is 'relu'"),
    ({"tie_word_embeddings": "yes"}, "field 'tie_word_embeddings' must be true or false"),
])
def test_bad_config_names_the_field(tmp_path, changes, message):
    path = _write(tmp_path, **changes)
    with pytest.raises(ConfigError) as e:
        load_model_config(path)
    assert path in str(e.value) and message in str(e.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="presets: .*llama-3.1-70b"):
        load_model_config("llama-9")


def test_model_type_stands_in_for_architectures(tmp_path):
    path = _write(tmp_path, architectures=None)
    assert load_model_config(path).family == "llama"
