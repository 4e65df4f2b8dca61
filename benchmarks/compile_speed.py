"""Wall time, peak memory and size of `sramflow compile` (plan + both phases scheduled and written).

Goals (issue 3): Llama-3.1-70B int8 on lpu in under 60 s and 4 GB; Llama-3.1-8B in under 10 s.
Each case runs in a fresh process so peak RSS is its own. Prints a table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from rich.console import Console
from rich.table import Table

CASES = [
    ("llama-3.1-8b", "lpu", ["--precision", "int8"]),
    ("llama-3.1-8b", "lpu", ["--precision", "fp16"]),
    ("llama-3.1-70b", "lpu", ["--precision", "int8"]),
    ("llama-3.1-70b", "lpu", ["--precision", "fp16"]),
    ("mixtral-8x7b", "lpu", ["--precision", "int8"]),
    ("llama-3.1-8b", "lpu", ["--precision", "int8", "--context", "32768", "--prompt", "32768"]),
]

CHILD = """
import json, resource, sys, time
from pathlib import Path
from compiler.cli import _options, _parser
args = _parser().parse_args(sys.argv[1:])
start = time.perf_counter()
from compiler.build import compile_model
compile_model(args.model, args.target, _options(args), Path(args.output))
wall = time.perf_counter() - start
from compiler.inspect import summary
from targets.build_dir import load_build
build = load_build(Path(args.output))
decode, prefill = build.programs["decode"], build.programs["prefill"]
s = summary(build.plan, decode, prefill)
size = sum(p.stat().st_size for p in Path(args.output).iterdir())
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall_s": wall, "rss": rss, "chips": s["chips"], "decode": len(decode), "prefill": len(prefill),
                  "bytes": size, "us": s["decode"]["latency_us"], "est": s["decode"]["estimate_us"],
                  "bound": s["decode"]["bound_us"], "ttft": s["prefill"]["ttft_ms"]}))
"""


def main() -> None:
    table = Table(title="sramflow compile: wall time, peak memory, program size and scheduled latency")
    for col in ("model", "options", "wall s", "peak MB", "chips", "instr decode", "instr prefill", "build MB",
                "decode µs", "estimate µs", "bound µs", "TTFT ms"):
        table.add_column(col, justify="left" if col in ("model", "options") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, target, extra) in enumerate(CASES):
            out = subprocess.run([sys.executable, "-c", CHILD, "compile", model, "--target", target, *extra,
                                  "-o", f"{tmp}/b{i}"], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            table.add_row(model, " ".join(extra), f"{r['wall_s']:.2f}", f"{r['rss'] / 1e6:.0f}", str(r["chips"]),
                          f"{r['decode']:,}", f"{r['prefill']:,}", f"{r['bytes'] / 1e6:.1f}", f"{r['us']:.1f}",
                          f"{r['est']:.1f}", f"{r['bound']:.1f}", f"{r['ttft']:.2f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
