"""What each stored format costs and how close it stays to fp16: prints two tables.

1. Formats: bits per weight of llama-3.1-70b's weights with every scale counted (the plan's
   weight bytes x 8 / parameters), and which preset runs each format's products natively
   (else: dequantised on the way in, at the rate targets.spec.DEQUANTISED_AT names).
2. Accuracy: relative RMS error of the logits against fp16 weights and cache, on tiny-llama and
   tiny-mixtral (random seeded weights, the numpy reference executor, the prompt's 16 rows),
   for every weight format (16-bit cache) and every KV format (16-bit weights), mean over 3
   seeds; and how many of the prompt's rows keep fp16's top token.

    python benchmarks/format_accuracy.py
"""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from compiler.frontend import build_graph, load_model_config
from compiler.frontend.options import CompileOptions
from compiler.image import random_weights
from compiler.plan import round_sig
from compiler.planner import lower
from targets import load_target
from tests.test_reference import generate

WEIGHT_FORMATS = ("fp8", "int8", "int4", "nvfp4", "mxfp4", "mxfp8")
KV_FORMATS = ("fp8", "int8", "nvfp4")
TARGETS = ("lpu", "lpu3", "h100", "b200", "rubin")
PROMPT = [1, 7, 42, 99, 3, 250, 17, 8, 200, 5, 66, 13, 90, 121, 31, 2]
SEEDS = (0, 1, 2)
CONTEXT = 32


def bits_per_weight(precision: str) -> float:
    _, graphs = lower("llama-3.1-70b", CompileOptions(precision=precision, context=1))
    params = [p for p in graphs.decode.params if not p.name.endswith((".scale", ".tensor_scale"))]
    return graphs.decode.param_bytes() * 8 / sum(p.type.numel for p in params)


def formats_table() -> Table:
    table = Table(title="formats (llama-3.1-70b: bits per weight, scales included; N = native on the preset)",
                  header_style="bold")
    for col in ("format", "bits/weight", *TARGETS):
        table.add_column(col, justify="right")
    for precision in ("fp16", *WEIGHT_FORMATS):
        chips = [load_target(t).chip for t in TARGETS]
        rates = ["N" if c.runs_natively(precision) else "deq" for c in chips]
        table.add_row(precision, f"{bits_per_weight(precision):.3f}", *rates)
    return table


def _errors(model: str, precision: str, kv: str) -> tuple[float, float]:
    """Mean relative RMS of the prompt's logits vs fp16, and the share of rows keeping fp16's top token."""
    rms, top = [], []
    config = load_model_config(model)
    for seed in SEEDS:
        weights = random_weights(build_graph(config, "decode", context=CONTEXT), seed)
        ref, _ = generate(config, weights, PROMPT, 1, context=CONTEXT)
        got, _ = generate(config, weights, PROMPT, 1, precision, context=CONTEXT, kv=kv)
        ref, got = ref[: len(PROMPT)], got[: len(PROMPT)]
        rms.append(np.sqrt(np.mean((got - ref) ** 2) / np.mean(ref**2)))
        top.append(np.mean(got.argmax(-1) == ref.argmax(-1)))
    return float(np.mean(rms)), float(np.mean(top))


def accuracy_table() -> Table:
    table = Table(title="accuracy vs fp16 (relative RMS of logits; rows keeping fp16's top token)", header_style="bold")
    for col in ("weights", "KV cache", "tiny-llama", "top-1", "tiny-mixtral", "top-1"):
        table.add_column(col, justify="right")
    cases = [(p, "fp16") for p in WEIGHT_FORMATS] + [("fp16", kv) for kv in KV_FORMATS]
    for precision, kv in cases:
        cells = []
        for model in ("tiny-llama", "tiny-mixtral"):
            rms, top = _errors(model, precision, kv)
            cells += [f"{round_sig(100 * rms):g}%", f"{100 * top:.0f}%"]
        table.add_row(precision, kv, *cells)
    return table


def main() -> None:
    console = Console(width=160)
    console.print(formats_table())
    console.print(accuracy_table())


if __name__ == "__main__":
    main()
