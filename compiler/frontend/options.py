"""CompileOptions: every knob of plan/compile in one frozen record."""

from __future__ import annotations

from dataclasses import dataclass

from ir.errors import ConfigError

PRECISIONS = ("fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4", "mxfp8")
KV_PRECISIONS = ("fp16", "fp8", "int8", "nvfp4")
OBJECTIVES = ("chips", "latency")
# Where a plan keeps the KV cache: all in SRAM, its older positions in a tier below (host DRAM or
# flash, targets.spec.TIER_NAMES), or whichever the objective favours.
KV_TIERS = ("auto", "sram", "dram", "flash")
# How a MoE stage spreads its experts (passes.shard.expert_splits): the static timing rule's choice, whole
# experts a chip, every expert's features over the stage, or N groups of experts each sliced tp / N ways.
EXPERT_PLACEMENTS = ("auto", "parallel", "sliced")
MIN_PREFILL_CHUNK = 16  # tokens; one tile of rows
DEFAULT_PROMPT = 1024  # tokens, or the whole context when it is shorter


@dataclass(frozen=True, slots=True)
class CompileOptions:
    """What the user asked for. `chips` pins the chip count; `max_chips` caps it.

    `prefill_chunk` is the most prompt tokens (per sequence) that flow through the
    pipeline at once. The plan reserves activation space for only MIN_PREFILL_CHUNK
    of them and then uses the largest chunk its stages have room for, so prefill
    never costs a chip that decode does not need.

    `kv_tier` places the KV cache: "sram", or "dram"/"flash" with the `kv_hot` newest positions of
    every cache in SRAM and the older ones in that tier (compiler/plan/kv_tiers.py picks the window when
    it is None), or "auto": the placement the objective favours.

    `experts` spreads every MoE stage's experts: "auto" (passes.shard.expert_split's static timing rule),
    "parallel", "sliced", or a number N of expert groups (each sliced over tp / N chips); a stage whose
    chips allow no such split is not offered (passes.shard.expert_splits).

    `context` counts every token a sequence holds, its prompt included, so `prompt` may not
    exceed it; left out, `prompt` is DEFAULT_PROMPT or the context, whichever is shorter.
    """

    precision: str = "fp16"
    kv_precision: str = "fp16"
    context: int = 4096
    prompt: int | None = None
    batch: int = 1
    chips: int | None = None
    max_chips: int | None = None
    objective: str = "chips"
    prefill_chunk: int = 256
    embed_on_host: bool = False  # wafers: the host looks up each token's embedding row and streams it in
    kv_tier: str = "sram"  # KV_TIERS
    kv_hot: int | None = None  # with kv_tier dram/flash: the newest positions kept in SRAM (None: the plan chooses)
    experts: str = "auto"  # EXPERT_PLACEMENTS, or a number of expert groups
    solver_seed: int = 0
    solver_deterministic_time: float = 20.0

    def __post_init__(self) -> None:
        if self.prompt is None:
            context = self.context if isinstance(self.context, int) and self.context > 0 else DEFAULT_PROMPT
            object.__setattr__(self, "prompt", min(DEFAULT_PROMPT, context))
        _choice("--precision", self.precision, PRECISIONS)
        _choice("--kv-precision", self.kv_precision, KV_PRECISIONS)
        _choice("--objective", self.objective, OBJECTIVES)
        _choice("--kv-tier", self.kv_tier, KV_TIERS)
        if self.experts not in EXPERT_PLACEMENTS and not (self.experts.isdigit() and int(self.experts) > 0):
            raise ConfigError(f"--experts must be one of {', '.join(EXPERT_PLACEMENTS)} or a positive number of expert "
                              f"groups, got {self.experts!r}")
        for flag, value in (("--context", self.context), ("--prompt", self.prompt), ("--batch", self.batch),
                            ("--chips", self.chips), ("--max-chips", self.max_chips),
                            ("--prefill-chunk", self.prefill_chunk)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value}")
        if self.prompt > self.context:
            raise ConfigError(f"--prompt {self.prompt} is longer than --context {self.context}: the context holds the "
                              f"prompt too; give --context {self.prompt} or more, or a shorter --prompt")
        if self.kv_hot is not None and self.kv_tier not in ("dram", "flash"):
            raise ConfigError(f"--kv-hot needs --kv-tier dram or flash (it sizes the SRAM window above a tier), "
                              f"not --kv-tier {self.kv_tier}")
        if self.kv_hot is not None and not 0 <= self.kv_hot < self.context:
            raise ConfigError(f"--kv-hot {self.kv_hot} must be at least 0 and below --context {self.context} "
                              "(the positions kept in SRAM; the rest live in the tier)")
        if self.chips and self.max_chips and self.chips > self.max_chips:
            raise ConfigError(f"--chips {self.chips} exceeds --max-chips {self.max_chips}")

    @property
    def chunk_rows(self) -> int:
        """Rows of the largest prefill chunk across the batch."""
        return self.batch * min(self.prompt, self.prefill_chunk)

    @property
    def min_chunk_rows(self) -> int:
        """Rows of the smallest prefill chunk a plan must have room for."""
        return self.batch * min(self.prompt, self.prefill_chunk, MIN_PREFILL_CHUNK)


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")


MAX_SPECULATE = 15  # drafts a verify step checks: K + 1 rows stay within one 16-row tile of prefill rows
DEFAULT_ACCEPTANCE = 0.7
PLACEMENTS = ("auto", "own", "shared")  # a draft on chips of its own, or on the target's stages


@dataclass(frozen=True, slots=True)
class Speculation:
    """Speculative decoding: a proposer (`draft`, a model of the target's vocabulary, or `mtp`, the
    target's own multi-token-prediction module) guesses `steps` tokens ("auto": the K with the most
    tokens/s), the target checks them in one verify step. `acceptance` is the per-token rate the plan's
    expected figures assume (a functional run measures its own). `placement`: a draft on chips of its
    own, on the target's stages (its weights in their spare SRAM), or "auto" (the plan's choice)."""

    draft: str | None = None
    mtp: bool = False
    steps: int | str = "auto"
    acceptance: float = DEFAULT_ACCEPTANCE
    placement: str = "auto"

    def __post_init__(self) -> None:
        if self.draft is not None and self.mtp:
            raise ConfigError("--draft and --mtp: give one proposer (a draft model, or the model's own MTP module)")
        if self.draft is None and not self.mtp:
            raise ConfigError("--speculate needs a proposer: --draft MODEL or --mtp")
        if self.steps != "auto" and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                     or not 1 <= self.steps <= MAX_SPECULATE):
            raise ConfigError(f"--speculate must be auto or a number of drafts from 1 to {MAX_SPECULATE}, got "
                              f"{self.steps!r}")
        if not isinstance(self.acceptance, int | float) or not 0 < self.acceptance <= 1:
            raise ConfigError(f"--acceptance must be a rate in (0, 1], got {self.acceptance!r}")
        _choice("--draft-placement", self.placement, PLACEMENTS)
        if self.mtp and self.placement == "shared":
            raise ConfigError("--draft-placement shared: the MTP module is built on chips of its own (only a --draft "
                              "shares the target's stages)")

    def expected_tokens(self, steps: int) -> float:
        """Tokens a step emits on average when each draft is accepted with probability `acceptance`
        (independently, until the first rejection), the target's own token included."""
        a = self.acceptance
        return float(steps + 1) if a == 1 else (1 - a ** (steps + 1)) / (1 - a)
