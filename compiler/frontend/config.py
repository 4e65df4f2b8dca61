"""Model configs: a preset name or a Hugging Face config.json, read into a normalised ModelConfig."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ir.errors import ConfigError
from ir.types import DType

PRESETS_DIR = Path(__file__).resolve().parents[2] / "examples" / "models"

# One (mixer kind, ffn kind) pair per layer; each kind is a row of build.BLOCKS.
LayerPlan = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RopeScaling:
    """Rotary-embedding frequency scaling. `kind` is HF's `rope_type`; fields a kind
    does not use are None."""

    kind: str
    factor: float
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position: int | None = None
    beta_fast: float | None = None  # yarn: the ramp between interpolated and original frequencies
    beta_slow: float | None = None
    mscale: float | None = None  # yarn: attention temperature terms (DeepSeek's softmax scale uses mscale_all_dim)
    mscale_all_dim: float | None = None

    def attrs(self) -> dict[str, str | float | int]:
        """The rope op's optional attributes."""
        extra = {"low_freq_factor": self.low_freq_factor, "high_freq_factor": self.high_freq_factor,
                 "original_max_position": self.original_max_position, "beta_fast": self.beta_fast,
                 "beta_slow": self.beta_slow, "mscale": self.mscale, "mscale_all_dim": self.mscale_all_dim}
        return {"scaling": self.kind, "factor": self.factor} | {k: v for k, v in extra.items() if v is not None}


@dataclass(frozen=True, slots=True)
class MLAShape:
    """DeepSeek's multi-head latent attention. q_lora_rank 0: q comes straight from the
    hidden state (no low-rank q). Each query/key head is [nope | rope] features."""

    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    rope_interleave: bool


@dataclass(frozen=True, slots=True)
class Router:
    """DeepSeek-V3 routing: sigmoid scores, bias-corrected choice among the best
    `topk_groups` of `groups` expert groups, normalised weights times `scale`; plus
    always-on shared experts of total width `shared_intermediate_size`."""

    groups: int
    topk_groups: int
    scale: float
    normalize: bool
    shared_intermediate_size: int


@dataclass(frozen=True, slots=True)
class SsmShape:
    """A Mamba mixer's sizes: `inner` channels (expand x hidden), `state` per channel, a
    causal conv of `conv_kernel` taps, dt through a rank-`dt_rank` bottleneck. `inner_norms`:
    Jamba's RMS norms on dt, B and C."""

    inner: int
    state: int
    conv_kernel: int
    dt_rank: int
    conv_bias: bool
    proj_bias: bool
    inner_norms: bool


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """What the frontend needs to know about a model, in one spelling whatever the family.

    `attention_bias` means q/k/v projections carry a bias; `attention_out_bias` the
    o projection (Llama's `attention_bias` sets both, Qwen2 has only the first).
    `layer_plan` lists each layer's (mixer, ffn) block kinds."""

    name: str
    family: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    attention_bias: bool
    attention_out_bias: bool
    mlp_bias: bool
    hidden_act: str
    max_position_embeddings: int
    sliding_window: int | None
    torch_dtype: str
    layer_plan: LayerPlan = field(repr=False)
    source: str = ""
    num_experts: int = 0  # routed experts per MoE layer (0: dense)
    experts_per_token: int = 0
    moe_intermediate_size: int = 0  # each expert's MLP width
    ssm: SsmShape | None = None  # Mamba mixers' shape (Mamba, Jamba); None without them
    mla: MLAShape | None = None  # multi-head latent attention (DeepSeek); None for the other families
    router: Router | None = None  # DeepSeek-style routing and shared experts; None: Mixtral's softmax top-k
    # Each block of a layer is its own scope (`layers.3`, then `layers.3.moe_shared`), so the
    # planner may give the two halves different groups and stages.
    block_units: bool = False
    mtp_layers: int = 0  # DeepSeek's multi-token-prediction depth (num_nextn_predict_layers): built with --mtp

    @property
    def dtype(self) -> DType:
        """The 16-bit type weights, caches and activations are declared in (TORCH_DTYPES)."""
        return TORCH_DTYPES[self.torch_dtype]


def load_model_config(name_or_path: str) -> ModelConfig:
    """A preset (`examples/models/NAME.json`) or a path to a config.json (or its folder)."""
    path = _resolve(name_or_path)
    reader = _Reader(path, _read_json(path))
    family = _family(reader)
    fields = family.parse(reader)
    _check_shapes(reader, fields)
    name = path.parent.name if path.name == "config.json" else path.stem
    return ModelConfig(name=name, family=family.name, source=str(path), **fields)


def _resolve(name_or_path: str) -> Path:
    given = Path(name_or_path)
    preset = PRESETS_DIR / f"{name_or_path}.json"
    if given.is_dir():
        given = given / "config.json"
    if given.is_file():
        return given
    if "/" not in name_or_path and preset.is_file():
        return preset
    names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.json")))
    raise ConfigError(f"{name_or_path}: no such config file, and not a preset (presets: {names})")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level, got {type(raw).__name__}")
    return raw


class _Reader:
    """Typed access to one config file's fields; every error names the file and the field."""

    def __init__(self, path: Path, raw: dict[str, Any], prefix: str = ""):
        self.path, self.raw, self.prefix = path, raw, prefix

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: field '{self.prefix}{key}' {problem}")

    def _get(self, key: str, default: Any) -> Any:
        if self.has(key):
            return self.raw[key]
        if default is _REQUIRED:
            raise self.fail(key, "is required but missing")
        return default

    def integer(self, key: str, default: Any = None) -> int:
        value = self._get(key, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, f"must be a positive integer, got {value!r}")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        value = self._get(key, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise self.fail(key, f"must be a positive number, got {value!r}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def text(self, key: str, default: str) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {value!r}")
        return value

    def sub(self, key: str) -> _Reader | None:
        """A nested object (e.g. rope_scaling), or None when absent or null."""
        if not self.has(key):
            return None
        value = self.raw[key]
        if not isinstance(value, dict):
            raise self.fail(key, f"must be an object or null, got {value!r}")
        return _Reader(self.path, value, f"{self.prefix}{key}.")


_REQUIRED = object()


# ---- families: each parses its config fields; new families add rows ----------------------------

@dataclass(frozen=True, slots=True)
class Family:
    """How one architecture's config.json reads into ModelConfig fields."""

    name: str
    parse: Callable[[_Reader], dict[str, Any]]


def _dense_plan(layers: int) -> LayerPlan:
    return (("attention", "mlp"),) * layers


def _common_fields(r: _Reader) -> dict[str, Any]:
    """Fields every Llama-like family spells the same way."""
    hidden, heads = r.integer("hidden_size"), r.integer("num_attention_heads")
    layers = r.integer("num_hidden_layers")
    head_dim = r.integer("head_dim") if r.has("head_dim") else _derived_head_dim(r, hidden, heads)
    return {
        "hidden_size": hidden,
        "intermediate_size": r.integer("intermediate_size"),
        "num_layers": layers,
        "num_heads": heads,
        "num_kv_heads": r.integer("num_key_value_heads", heads),  # absent: plain multi-head attention
        "head_dim": head_dim,
        "vocab_size": r.integer("vocab_size"),
        "tie_word_embeddings": r.flag("tie_word_embeddings", False),
        "rms_norm_eps": r.number("rms_norm_eps"),
        "rope_theta": r.number("rope_theta", 10000.0),  # HF's default; Llama 2 configs omit it
        "rope_scaling": _rope_scaling(r),
        "hidden_act": _activation(r),
        "max_position_embeddings": r.integer("max_position_embeddings"),
        "torch_dtype": _torch_dtype(r, "float16"),
        "layer_plan": _dense_plan(layers),
        "sliding_window": None,
    }


def _derived_head_dim(r: _Reader, hidden: int, heads: int) -> int:
    if hidden % heads:
        raise r.fail("hidden_size", f"{hidden} is not divisible by num_attention_heads {heads}")
    return hidden // heads


def _llama(r: _Reader) -> dict[str, Any]:
    bias = r.flag("attention_bias", False)
    return _common_fields(r) | {"attention_bias": bias, "attention_out_bias": bias,
                                "mlp_bias": r.flag("mlp_bias", False)}


def _mistral(r: _Reader) -> dict[str, Any]:
    window = r.integer("sliding_window") if r.has("sliding_window") else None
    return _common_fields(r) | {"attention_bias": False, "attention_out_bias": False, "mlp_bias": False,
                                "sliding_window": window}


def _qwen2(r: _Reader) -> dict[str, Any]:
    # Qwen2 always has q/k/v biases and no o/mlp bias; its window only applies when enabled.
    window = r.integer("sliding_window") if r.flag("use_sliding_window", False) else None
    return _common_fields(r) | {"attention_bias": True, "attention_out_bias": False, "mlp_bias": False,
                                "sliding_window": window}


def _mixtral(r: _Reader) -> dict[str, Any]:
    """Mistral attention; every layer's MLP is a mixture of `num_local_experts` gated MLPs of
    `intermediate_size`, `num_experts_per_tok` routed per token (softmax, renormalised)."""
    fields = _mistral(r)
    experts, k = r.integer("num_local_experts"), r.integer("num_experts_per_tok")
    if k > experts:
        raise r.fail("num_experts_per_tok", f"{k} exceeds num_local_experts {experts}")
    return fields | {"num_experts": experts, "experts_per_token": k,
                     "moe_intermediate_size": fields["intermediate_size"],
                     "layer_plan": (("attention", "moe"),) * fields["num_layers"]}


def _deepseek_v3(r: _Reader) -> dict[str, Any]:
    """DeepSeek-V3 (and R1): multi-head latent attention in every layer; the first
    `first_k_dense_replace` layers have a dense MLP, the rest routed experts plus shared
    ones. The multi-token-prediction layers (`num_nextn_predict_layers`) only serve
    speculative decoding: decode does not build them; `--mtp` builds them as the proposer
    (frontend.mtp)."""
    fields = _common_fields(r)
    mla = MLAShape(_count(r, "q_lora_rank", 0), r.integer("kv_lora_rank"), r.integer("qk_nope_head_dim"),
                   r.integer("qk_rope_head_dim"), r.integer("v_head_dim"),
                   r.flag("rope_interleave", True))  # HF's default: DeepSeek checkpoints pair rope features
    _deepseek_only(r, ("scoring_func", "sigmoid"), ("topk_method", "noaux_tc"), ("moe_layer_freq", 1),
                   ("attention_bias", False))
    experts, k = r.integer("n_routed_experts"), r.integer("num_experts_per_tok")
    inter = r.integer("moe_intermediate_size")
    router = Router(r.integer("n_group", 1), r.integer("topk_group", 1), r.number("routed_scaling_factor", 1.0),
                    r.flag("norm_topk_prob", True), _count(r, "n_shared_experts", 0) * inter)
    _check_groups(r, experts, k, router)
    dense = _count(r, "first_k_dense_replace", 0)
    plan = tuple(("mla", "mlp" if i < dense else "moe_shared") for i in range(fields["num_layers"]))
    return fields | {"attention_bias": False, "attention_out_bias": False,
                     "mlp_bias": False, "num_kv_heads": fields["num_heads"],
                     "head_dim": mla.qk_nope_head_dim + mla.qk_rope_head_dim, "num_experts": experts,
                     "experts_per_token": k, "moe_intermediate_size": inter, "mla": mla, "router": router,
                     "layer_plan": plan, "block_units": True, "mtp_layers": _count(r, "num_nextn_predict_layers", 0)}


def _count(r: _Reader, key: str, default: int) -> int:
    """A non-negative integer field (0 allowed: DeepSeek's "none of these")."""
    value = r.raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise r.fail(key, f"must be a non-negative integer, got {value!r}")
    return value


def _deepseek_only(r: _Reader, *expected: tuple[str, Any]) -> None:
    """Fields read only at one value: Hugging Face's DeepseekV3 ignores the routing ones (it
    always routes as noaux_tc with sigmoid scores, every layer past the dense ones), and
    attention biases are not built. Refuse other values rather than plan something else."""
    for key, value in expected:
        if r.has(key) and r.raw[key] != value:
            raise r.fail(key, f"is {r.raw[key]!r}; the deepseek_v3 family supports only {value!r}")


def _check_groups(r: _Reader, experts: int, k: int, router: Router) -> None:
    """Group-limited routing: equal groups of at least two experts (a group scores by its
    best two), and the kept groups hold at least k experts."""
    if experts % router.groups or experts // router.groups < 2:
        raise r.fail("n_group", f"{router.groups} does not split n_routed_experts {experts} into groups of 2 or more")
    if router.topk_groups > router.groups:
        raise r.fail("topk_group", f"{router.topk_groups} exceeds n_group {router.groups}")
    if k > router.topk_groups * (experts // router.groups):
        raise r.fail("num_experts_per_tok", f"{k} exceeds the {router.topk_groups} kept groups' experts")


def _dt_rank(r: _Reader, key: str, hidden: int) -> int:
    """HF's "auto" rank is ceil(hidden / 16)."""
    return math.ceil(hidden / 16) if r.raw.get(key) in (None, "auto") else r.integer(key)


def _mamba(r: _Reader) -> dict[str, Any]:
    """Mamba (1): every layer is an RMS-normed Mamba mixer and no MLP; no attention, so no
    heads, KV cache or positions. HF derives intermediate_size = expand x hidden_size."""
    hidden, layers = r.integer("hidden_size"), r.integer("num_hidden_layers")
    inner = r.integer("expand", 2) * hidden
    if r.has("intermediate_size") and r.integer("intermediate_size") != inner:
        raise r.fail("intermediate_size", f"{r.raw['intermediate_size']} != expand x hidden_size = {inner}")
    ssm = SsmShape(inner, r.integer("state_size", 16), r.integer("conv_kernel", 4),
                   _dt_rank(r, "time_step_rank", hidden), r.flag("use_conv_bias", True),
                   r.flag("use_bias", False), inner_norms=False)
    return {"hidden_size": hidden, "intermediate_size": inner, "num_layers": layers, "num_heads": 0,
            "num_kv_heads": 0, "head_dim": 0, "vocab_size": r.integer("vocab_size"),
            "tie_word_embeddings": r.flag("tie_word_embeddings", True),  # HF MambaConfig's default
            "rms_norm_eps": r.number("layer_norm_epsilon", 1e-5), "rope_theta": 0.0, "rope_scaling": None,
            "attention_bias": False, "attention_out_bias": False, "mlp_bias": False,
            "hidden_act": _activation(r), "max_position_embeddings": 0,  # no positional limit
            "sliding_window": None, "torch_dtype": _torch_dtype(r, "float32"),
            "layer_plan": (("mamba", "none"),) * layers, "ssm": ssm}


def _jamba(r: _Reader) -> dict[str, Any]:
    """Jamba: attention (no RoPE) where i % attn_layer_period == attn_layer_offset, a Mamba
    mixer elsewhere; a mixture of experts where i % expert_layer_period == expert_layer_offset
    (softmax top-k, not renormalised), a gated MLP elsewhere."""
    fields = _common_fields(r)
    hidden, layers = fields["hidden_size"], fields["num_layers"]
    attn = _period(r, "attn_layer_period", "attn_layer_offset")
    moe = _period(r, "expert_layer_period", "expert_layer_offset")
    experts, k = r.integer("num_experts", 16), r.integer("num_experts_per_tok", 2)
    if k > experts:
        raise r.fail("num_experts_per_tok", f"{k} exceeds num_experts {experts}")
    ssm = SsmShape(r.integer("mamba_expand", 2) * hidden, r.integer("mamba_d_state", 16),
                   r.integer("mamba_d_conv", 4), _dt_rank(r, "mamba_dt_rank", hidden),
                   r.flag("mamba_conv_bias", True), r.flag("mamba_proj_bias", False), inner_norms=True)
    plan = tuple(("jamba_attention" if attn(i) else "jamba_mamba",
                  "jamba_moe" if moe(i) and experts > 1 else "jamba_mlp") for i in range(layers))
    return fields | {"attention_bias": False, "attention_out_bias": False, "mlp_bias": False,
                     "num_experts": experts, "experts_per_token": k,
                     "moe_intermediate_size": fields["intermediate_size"], "layer_plan": plan, "ssm": ssm}


def _period(r: _Reader, period_key: str, offset_key: str) -> Callable[[int], bool]:
    """Which layers a (period, offset) pair picks, as HF's JambaConfig reads them."""
    period, offset = r.integer(period_key), _count(r, offset_key, 0)
    if offset >= period:
        raise r.fail(offset_key, f"{offset} must be smaller than {period_key} {period}")
    return lambda i: i % period == offset


FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": Family("llama", _llama),
    "MistralForCausalLM": Family("mistral", _mistral),
    "Qwen2ForCausalLM": Family("qwen2", _qwen2),
    "MixtralForCausalLM": Family("mixtral", _mixtral),
    "MambaForCausalLM": Family("mamba", _mamba),
    "JambaForCausalLM": Family("jamba", _jamba),
    "DeepseekV3ForCausalLM": Family("deepseek_v3", _deepseek_v3),
}
MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
               "mixtral": "MixtralForCausalLM", "mamba": "MambaForCausalLM",
               "jamba": "JambaForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM"}


def _family(r: _Reader) -> Family:
    supported = ", ".join(FAMILIES)
    archs = r.raw.get("architectures")
    if archs is not None:
        if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
            raise r.fail("architectures", f"must be a non-empty list of names, got {archs!r}")
        if archs[0] not in FAMILIES:
            raise r.fail("architectures", f"names {archs[0]!r}, which is not supported (supported: {supported})")
        return FAMILIES[archs[0]]
    if not r.has("model_type"):
        raise r.fail("architectures", "is required but missing (and there is no 'model_type' to fall back on)")
    model_type = r.raw["model_type"]
    if model_type not in MODEL_TYPES:
        raise r.fail("model_type", f"is {model_type!r}, which is not supported (supported: {', '.join(MODEL_TYPES)})")
    return FAMILIES[MODEL_TYPES[model_type]]


ACTIVATIONS = ("silu", "gelu")


# A checkpoint's torch_dtype -> the 16-bit type its weights, caches and activations are held in.
# bf16 stays bf16 (its 8-bit exponent: a bf16 value above 65,504 is no f16 number). float32
# checkpoints are held in f16, which keeps more of their precision than bf16; image.load_weights
# refuses a checkpoint value f16 cannot hold rather than store an infinity.
TORCH_DTYPES = {"bfloat16": DType.BF16, "float16": DType.F16, "float32": DType.F16}


def _torch_dtype(r: _Reader, default: str) -> str:
    name = r.text("torch_dtype", default)
    if name not in TORCH_DTYPES:
        raise r.fail("torch_dtype", f"is {name!r}, which is not supported (supported: {', '.join(TORCH_DTYPES)})")
    return name


def _activation(r: _Reader) -> str:
    act = r.text("hidden_act", "silu")
    if act not in ACTIVATIONS:
        raise r.fail("hidden_act", f"is {act!r}, which is not supported (supported: {', '.join(ACTIVATIONS)})")
    return act


# rope_type -> the fields it needs besides `factor`.
ROPE_SCALINGS: dict[str, tuple[str, ...]] = {
    "linear": (),
    "llama3": ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("original_max_position_embeddings",),  # beta_fast/slow and mscale(_all_dim) are optional
}


def _rope_scaling(r: _Reader) -> RopeScaling | None:
    sub = r.sub("rope_scaling")
    if sub is None:
        return None
    key = "rope_type" if sub.has("rope_type") else "type"  # older configs spell it `type`
    kind = sub.text(key, "default")
    if kind == "default":
        return None
    if kind not in ROPE_SCALINGS:
        raise sub.fail(key, f"is {kind!r}, which is not supported (supported: {', '.join(ROPE_SCALINGS)})")
    need = ROPE_SCALINGS[kind]

    def optional(key: str) -> float | None:
        return sub.number(key) if key in need else None

    original = "original_max_position_embeddings"
    scaling = RopeScaling(kind, sub.number("factor"), optional("low_freq_factor"), optional("high_freq_factor"),
                          sub.integer(original) if original in need else None)
    return _yarn(sub, scaling) if kind == "yarn" else scaling


def _yarn(sub: _Reader, scaling: RopeScaling) -> RopeScaling:
    """YaRN's optional fields, with Hugging Face's defaults (beta 32 and 1; mscale terms
    absent mean the plain log-factor temperature)."""
    def number(key: str, default: float | None) -> float | None:
        return sub.number(key) if sub.has(key) and sub.raw[key] != 0 else default

    return RopeScaling(scaling.kind, scaling.factor, original_max_position=scaling.original_max_position,
                       beta_fast=number("beta_fast", 32.0), beta_slow=number("beta_slow", 1.0),
                       mscale=number("mscale", None), mscale_all_dim=number("mscale_all_dim", None))


def _check_shapes(r: _Reader, f: dict[str, Any]) -> None:
    if f["num_kv_heads"] and f["num_heads"] % f["num_kv_heads"]:  # 0: no attention (Mamba)
        raise r.fail("num_key_value_heads",
                     f"{f['num_kv_heads']} does not divide num_attention_heads {f['num_heads']}")
