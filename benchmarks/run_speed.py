"""Wall time and peak memory of `sramflow run` (the interpreter's timing mode, both phases, with
the determinism re-run in a shuffled chip order); prints a table. Each case compiles first."""

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
print(json.dumps({"wall_s": f["wall_s"], "rss": rss, "n": f["instructions_simulated"], "hazards": len(f["hazards"]),
                  "us": f["decode"]["latency_us"], "ttft": f["prefill"]["ttft_ms"],
                  "det": f["determinism"]["passed"]}))
"""


def main() -> None:
    table = Table(title="sramflow run: interpreter wall time (two runs of each phase) and peak memory")
    for col in ("model", "options", "instructions", "wall s", "peak MB", "hazards", "deterministic", "decode µs",
                "TTFT ms"):
        table.add_column(col, justify="left" if col in ("model", "options") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, extra) in enumerate(CASES):
            build = f"{tmp}/b{i}"
            subprocess.run([sys.executable, "-m", "compiler.cli", "compile", model, *extra, "-o", build],
                           check=True, capture_output=True)
            out = subprocess.run([sys.executable, "-c", CHILD, build], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            table.add_row(model, " ".join(extra), f"{r['n']:,}", f"{r['wall_s']:.2f}", f"{r['rss'] / 1e6:.0f}",
                          str(r["hazards"]), str(r["det"]), f"{r['us']:.1f}", f"{r['ttft']:.2f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
