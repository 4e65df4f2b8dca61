"""CompileOptions: every knob of plan/compile in one frozen record."""

from __future__ import annotations

from dataclasses import dataclass

from ir.errors import ConfigError

PRECISIONS = ("fp16", "fp8", "int8", "int4")
OBJECTIVES = ("chips", "latency")


@dataclass(frozen=True, slots=True)
class CompileOptions:
    """What the user asked for. `chips` pins the chip count; `max_chips` caps it.

    `prefill_chunk` is the number of prompt rows that flow through the pipeline
    at once: it bounds activation memory and sets the prefill pipeline's grain.
    """

    precision: str = "fp16"
    context: int = 4096
    prompt: int = 1024
    batch: int = 1
    chips: int | None = None
    max_chips: int | None = None
    objective: str = "chips"
    prefill_chunk: int = 256
    solver_seed: int = 0
    solver_deterministic_time: float = 20.0

    def __post_init__(self) -> None:
        _choice("--precision", self.precision, PRECISIONS)
        _choice("--objective", self.objective, OBJECTIVES)
        for flag, value in (("--context", self.context), ("--prompt", self.prompt), ("--batch", self.batch),
                            ("--chips", self.chips), ("--max-chips", self.max_chips)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value}")
        if self.chips and self.max_chips and self.chips > self.max_chips:
            raise ConfigError(f"--chips {self.chips} exceeds --max-chips {self.max_chips}")

    @property
    def chunk_rows(self) -> int:
        """Rows of one prefill chunk across the batch."""
        return self.batch * min(self.prompt, self.prefill_chunk)


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
