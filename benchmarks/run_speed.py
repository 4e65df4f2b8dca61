"""Wall time and peak memory of `sramflow run`: the interpreter's timing mode (both phases, with
the determinism re-run in a shuffled chip order) on real models, and its functional mode
(every instruction executed on data) on tiny ones; prints two tables. Each case compiles first."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from rich.console import Console
from rich.table import Table

CASES = [
    ("llama-3.1-8b", ["--precision", "int8"]),
    ("llama-3.1-70b", ["--precision", "int8"]),
    ("mixtral-8x7b", ["--precision", "int8"]),
]

CHILD = """
import json, resource, sys
from targets.runner import run_build
f = run_build(sys.argv[1], tokens=1, check_determinism=True)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall_s": f["wall_s"], "rss": rss, "n": f["instructions_executed"], "hazards": len(f["hazards"]),
                  "us": f["decode"]["latency_us"], "ttft": f["prefill"]["ttft_ms"],
                  "det": f["determinism"]["passed"]}))
"""

FUNCTIONAL_CASES = [
    ("tiny-llama", ["--target", "lpu-mini"]),
    ("tiny-llama", ["--target", "lpu-mini", "--precision", "int8"]),
    ("tiny-mixtral", ["--target", "lpu-mini"]),
]

FUNCTIONAL = """
import json, resource, sys, time
from targets.build_dir import load_build
from targets.runner import run_functional
t = time.perf_counter()
out = run_functional(sys.argv[1], [1, 2, 3, 4], 16)
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
chips = load_build(sys.argv[1]).programs["decode"].chips
print(json.dumps({"wall_s": wall, "rss": rss, "n": out["instructions"], "chips": chips}))
"""


def main() -> None:
    console = Console(width=160)
    table = Table(title="sramflow run: interpreter wall time (two runs of each phase) and peak memory")
    for col in ("model", "options", "instructions", "wall s", "instr/s", "peak MB", "hazards", "deterministic",
                "decode µs", "TTFT ms"):
        table.add_column(col, justify="left" if col in ("model", "options") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, extra) in enumerate(CASES):
            r = _measure(f"{tmp}/b{i}", model, extra, CHILD)
            rate = 2 * r["n"] / r["wall_s"]  # each phase runs twice (the determinism re-run)
            table.add_row(model, " ".join(extra), f"{r['n']:,}", f"{r['wall_s']:.2f}", f"{rate:,.0f}",
                          f"{r['rss'] / 1e6:.0f}", str(r["hazards"]), str(r["det"]), f"{r['us']:.1f}",
                          f"{r['ttft']:.2f}")
        console.print(table)
        table = Table(title="sramflow run --functional: prompt of 4 tokens, 16 generated (prefill of the whole "
                            "compiled prompt, then 15 decode steps)")
        for col in ("model", "options", "chips", "instructions executed", "wall s", "instr/s", "peak MB"):
            table.add_column(col, justify="left" if col in ("model", "options") else "right")
        for i, (model, extra) in enumerate(FUNCTIONAL_CASES):
            r = _measure(f"{tmp}/f{i}", model, extra, FUNCTIONAL)
            table.add_row(model, " ".join(extra), str(r["chips"]), f"{r['n']:,}", f"{r['wall_s']:.2f}",
                          f"{r['n'] / r['wall_s']:,.0f}", f"{r['rss'] / 1e6:.0f}")
        console.print(table)


def _measure(build: str, model: str, extra: list[str], child: str) -> dict:
    subprocess.run([sys.executable, "-m", "compiler.cli", "compile", model, *extra, "-o", build],
                   check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", child, build], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
