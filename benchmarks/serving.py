"""The serving figures README quotes: each batch curve's compute-bound turn beside the rule of thumb, and the
pools for the 70B load of issue 18, with the wall time of each; prints two tables.

    python benchmarks/serving.py [--quick]      # --quick: the 8B curves and one pool case only
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

from compiler.frontend.options import CompileOptions
from compiler.serving.curves import batch_curve
from compiler.serving.pools import Load, size_deployment
from ir.errors import DoesNotFitError
from targets import load_target

BATCHES = [1, 4, 16, 64, 256]
CURVES = [(model, target) for model in ("llama-3.1-8b", "llama-3.1-70b") for target in ("lpu", "wse3", "h100")]
POOLS = [("rubin", "lpu3", "fp8"), ("h100", "lpu", "fp16"), ("rubin", "lpu3", "fp16")]
LOAD = Load(rate_per_s=10, prompt=4096, output=512)


def curves(cases: list[tuple[str, str]]) -> Table:
    table = Table(title="where the decode step turns compute-bound (context 4096, fp16)", header_style="bold")
    for col in ("model", "target", "turn", "searched to", "compute/streaming", "weights alone", "rule", "plans",
                "wall s"):
        table.add_column(col, justify="left" if col in ("model", "target") else "right")
    for model, target in cases:
        start = time.perf_counter()
        curve = batch_curve(model, load_target(target), CompileOptions(), BATCHES)
        c, r = curve.crossover, curve.rule
        share = c.point.compute_us / c.point.streaming_us if c.point and c.point.streaming_us else float("nan")
        table.add_row(model, target, str(c.batch) if c.batch else "—", f"{c.searched_to:,}", f"{share:.2f}",
                      f"{r['weights_only_batch']:,.1f}", f"{r['rule_batch']:,.0f}", str(c.plans),
                      f"{time.perf_counter() - start:.1f}")
    return table


def pools(cases: list[tuple[str, str, str]]) -> Table:
    table = Table(title="llama-3.1-70b, 10 requests/s, 4096 in, 512 out", header_style="bold")
    for col in ("prefill", "decode", "precision", "prefill devices", "TTFT ms", "hand-off ms", "decode devices",
                "tokens/s per user", "co-located devices", "wall s"):
        table.add_column(col, justify="left" if col in ("prefill", "decode", "precision") else "right")
    for prefill, decode, precision in cases:
        start = time.perf_counter()
        try:
            d = size_deployment("llama-3.1-70b", load_target(prefill), load_target(decode),
                                CompileOptions(precision=precision, context=LOAD.prompt + LOAD.output,
                                               prompt=LOAD.prompt), LOAD)
        except DoesNotFitError as err:
            wall = f"{time.perf_counter() - start:.1f}"
            table.add_row(prefill, decode, precision, str(err), "", "", "", "", "", wall)
            continue
        c = d.colocated
        table.add_row(prefill, decode, precision, f"{d.prefill.devices:,}", f"{d.ttft_s * 1e3:,.1f}",
                      f"{d.decode.handoff.time_s * 1e3:,.2f}", f"{d.decode.devices:,}",
                      f"{d.decode.replica.tokens_per_s:,.0f}", "—" if c.error else f"{c.devices:,}",
                      f"{time.perf_counter() - start:.1f}")
    return table


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    console = Console(width=200)
    console.print(curves(CURVES[:3] if quick else CURVES))
    console.print(pools(POOLS[:1] if quick else POOLS))


if __name__ == "__main__":
    main()
