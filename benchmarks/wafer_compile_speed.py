"""Wall time and peak memory of `sramflow compile --target wse3`, and the decode latency the interpreter finds.

Goal (issue 6): Llama-3.1-8B on wse3 compiled in under 60 s and 4 GB. Each case compiles in a
fresh process so peak RSS is its own; the build is then run in the timing interpreter. Prints
a table: instructions and role streams, the interpreted decode latency beside the plan's
estimate and bound, and the hazards found.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

CASES = [
    ("llama-3.1-8b", "wse3", ["--precision", "fp16"]),
    ("llama-3.1-8b", "wse3", ["--precision", "int8"]),
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
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall_s": wall, "rss": rss}))
"""


def _row(model: str, target: str, extra: list[str], out: str) -> list[str]:
    child = subprocess.run([sys.executable, "-c", CHILD, "compile", model, "--target", target, *extra, "-o", out],
                           capture_output=True, text=True, check=True)
    r = json.loads(child.stdout.strip().splitlines()[-1])
    from ir.program_io import load_program
    from targets.runner import run_build

    run = run_build(out)
    plan = json.loads(Path(out, "plan.json").read_text())
    decode = load_program(f"{out}/decode.prog")
    return [model, " ".join(extra), f"{r['wall_s']:.2f}", f"{r['rss'] / 1e6:.0f}", f"{decode.chips:,}",
            f"{decode.meta['cores']:,}", f"{len(decode):,}", f"{run['instructions_executed']:,}",
            f"{run['decode']['latency_us']:.1f}", f"{plan['decode']['latency_us']:.1f}",
            f"{plan['decode']['latency_bound_us']:.1f}", str(len(run["hazards"]))]


def main() -> None:
    table = Table(title="sramflow compile --target wse3: wall time, peak memory, streams and decode latency")
    for col in ("model", "options", "wall s", "peak MB", "streams", "cores", "instr decode", "instr both",
                "decode µs", "plan µs", "bound µs", "hazards"):
        table.add_column(col, justify="left" if col in ("model", "options") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, target, extra) in enumerate(CASES):
            table.add_row(*_row(model, target, extra, f"{tmp}/w{i}"))
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
