"""Wall time and peak memory of `make_plan` for the shipped models; prints a table.

Goal (issue 2): Llama-3.1-405B plans for lpu in under 10 s on a 2-core machine.
Each case runs in a fresh process so peak RSS is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys

from rich.console import Console
from rich.table import Table

CASES = [
    ("llama-3.1-8b", "lpu", ["--precision", "int8"]),
    ("llama-3.1-70b", "lpu", ["--precision", "int8"]),
    ("llama-3.1-70b", "lpu", ["--precision", "int8", "--objective", "latency", "--max-chips", "1000"]),
    ("llama-3.1-405b", "lpu", ["--precision", "int8"]),
    ("llama-3.1-405b", "lpu", ["--precision", "fp16"]),
    ("llama-3.1-405b", "lpu", ["--precision", "int8", "--objective", "latency", "--max-chips", "10000"]),
    ("deepseek-v3", "lpu", []),  # packed into nodes' free tails: the packed DP pass and its front
    ("llama-3.1-70b", "h100", ["--precision", "fp16"]),
    ("llama-3.1-405b", "h100", ["--precision", "fp16"]),  # 31k candidates: the footprint DP's largest case
    ("llama-3.1-8b", "wse3", ["--precision", "fp16"]),
    ("llama-3.1-70b", "wse3", ["--precision", "fp16"]),
    ("llama-3.1-405b", "wse3", ["--precision", "fp16"]),
]

CHILD = """
import json, resource, sys, time
from compiler.cli import _options, _parser
args = _parser().parse_args(sys.argv[1:])
start = time.perf_counter()
from compiler.planner import make_plan
plan = make_plan(args.model, args.target, _options(args))
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall_s": wall, "rss": rss, "chips": plan.chips, "lb": plan.chips_lower_bound,
                  "status": plan.solver["status"], "cands": plan.solver["candidates"],
                  "us": plan.decode["latency_us"]}))
"""


def main() -> None:
    table = Table(title="sramflow plan: wall time and peak memory")
    for col in ("model", "target", "options", "wall s", "peak MB", "chips", "bound", "solver", "candidates",
                "decode µs"):
        table.add_column(col)
    for model, target, extra in CASES:
        out = subprocess.run([sys.executable, "-c", CHILD, "plan", model, "--target", target, *extra],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        table.add_row(model, target, " ".join(extra), f"{r['wall_s']:.2f}", f"{r['rss'] / 1e6:.0f}",
                      str(r["chips"]), str(r["lb"]), r["status"], str(r["cands"]), f"{r['us']:.1f}")
    Console(width=170).print(table)


if __name__ == "__main__":
    main()
