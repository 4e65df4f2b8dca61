"""`run --functional --check-reference` on every tiny model at every weight and KV format, batch 1 and 2.

Prints one row per build: the largest logit difference from the reference beside the tolerance,
and whether every sequence's tokens and logits agreed. Builds use lpu-mini with a 64-token context
and 16-token prefill chunks; prompts include one shorter than a chunk and one over two chunks.

    python benchmarks/reference_matrix.py [--models tiny-llama,tiny-mamba] [--batches 1,2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from compiler.build import compile_model
from compiler.frontend.options import CompileOptions
from ir.errors import SramflowError
from targets.runner import run_build

MODELS = ("tiny-llama", "tiny-mixtral", "tiny-mamba", "tiny-jamba", "tiny-deepseek-v3")
PRECISIONS = ("fp16", "int8", "fp8", "int4", "nvfp4", "mxfp4", "mxfp8")
KV = ("fp16", "int8", "fp8", "nvfp4")
PROMPTS = [[5, 17, 3], list(range(40, 59)), [200, 3, 99, 7, 1, 250, 13, 8], [9] * 33]
TOKENS = 4


def row(model: str, precision: str, kv: str, batch: int, root: Path) -> dict:
    out = root / f"{model}-{precision}-{kv}-b{batch}"
    options = CompileOptions(precision=precision, kv_precision=kv, context=64, prompt=48, prefill_chunk=16,
                             batch=batch)
    started = time.perf_counter()
    try:
        compile_model(model, "lpu-mini", options, out, weights="random")
    except SramflowError as e:
        return {"model": model, "precision": precision, "kv": kv, "batch": batch, "status": f"refused: {e}"}
    prompts = PROMPTS[: 2 * batch] if batch > 1 else PROMPTS
    try:
        f = run_build(out, TOKENS, prompt=prompts, check_reference=True)
        ref, status = f["reference"], "ok" if not f["hazards"] else f"{len(f['hazards'])} hazards"
        diff, tol = ref["max_abs_diff"], ref["tolerance"]
    except SramflowError as e:
        diff, tol, status = None, None, f"FAILED: {e}"
    return {"model": model, "precision": precision, "kv": kv, "batch": batch, "status": status, "max_abs_diff": diff,
            "tolerance": tol, "seconds": round(time.perf_counter() - started, 2)}


def _line(r: dict) -> str:
    tol = r.get("tolerance")
    diff = "" if r.get("max_abs_diff") is None else format(r["max_abs_diff"], ".4f")
    bound = "" if not tol else "{:g}+{:g}x".format(tol["absolute"], tol["relative"])
    return f"{r['model']:18} {r['precision']:5} kv {r['kv']:5} batch {r['batch']}  {diff:>7}  tol {bound:>12}  " \
        f"{r['status'][:110]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for precision in PRECISIONS:
                for kv in KV:
                    for batch in (int(b) for b in args.batches.split(",")):
                        rows.append(row(model, precision, kv, batch, Path(tmp)))
                        r = rows[-1]
                        if not args.json:
                            print(_line(r), flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
