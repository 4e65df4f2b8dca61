"""Programs that scale (issue 14): compile and timing-run the largest cases, wall time and peak memory.

Goals: llama-3.1-405b int8 compile <= 30 s / 3 GB, run <= 20 s; deepseek-v3 fp8 <= 60 s / 4 GB, run <= 30 s;
llama-3.1-70b int8 <= 5 s / 1 GB, run <= 3 s; llama-3.1-8b int8 at a 32K prompt and context <= 10 s / 1.5 GB,
run <= 5 s; llama-3.1-70b fp16 on wse3 <= 60 s / 4 GB, run <= 30 s. Each command runs as `sramflow` in a
fresh process (peak RSS is its own, memory capped at 16 GiB so a blow-up fails the case, not the machine).
Prints a table; `python benchmarks/scale.py 70b` runs the cases whose name contains "70b".
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

CASES = [
    ("llama-3.1-405b int8", ["llama-3.1-405b", "--precision", "int8"]),
    ("deepseek-v3 fp8", ["deepseek-v3", "--precision", "fp8"]),
    ("llama-3.1-70b int8", ["llama-3.1-70b", "--precision", "int8"]),
    ("llama-3.1-8b int8 32K", ["llama-3.1-8b", "--precision", "int8", "--prompt", "32768", "--context", "32768"]),
    ("llama-3.1-70b fp16 wse3", ["llama-3.1-70b", "--precision", "fp16", "--target", "wse3"]),
]
CAP = 16 * 2**30


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def timed(args: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS bytes, output) of one sramflow command in its own process. CPU
    time is what the command costs when the machine is shared (wall time then counts the others' work too)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_limit)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    cpu = usage.ru_utime + usage.ru_stime
    if os.waitstatus_to_exitcode(status) != 0:
        why = "FAILED: " + out.strip().splitlines()[-1][:80] if out.strip() else "FAILED"
        return wall, cpu, usage.ru_maxrss * 1024, why
    return wall, cpu, usage.ru_maxrss * 1024, out


def main(which: str = "") -> None:
    table = Table(title="sramflow at scale: compile and timing run")
    for col in ("case", "compile s", "CPU s", "compile MB", "run s", "CPU s", "run MB", "instructions", "program MB",
                "hazards"):
        table.add_column(col, justify="left" if col == "case" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, args) in enumerate(CASES):
            if which not in name:
                continue
            build = Path(tmp) / f"b{i}"
            c_wall, c_cpu, c_rss, c_out = timed(["compile", *args, "-o", str(build)])
            if c_out.startswith("FAILED"):
                table.add_row(name, f"{c_wall:.1f}", f"{c_cpu:.1f}", f"{c_rss / 1e6:.0f}", *["-"] * 5, c_out)
                continue
            r_wall, r_cpu, r_rss, r_out = timed(["run", str(build)])
            simulated = next((ln.split()[0] for ln in r_out.splitlines() if "instructions executed" in ln), "?")
            hazards = next((ln.split(":", 1)[1].strip() for ln in r_out.splitlines() if ln.startswith("hazards")), "?")
            size = sum(p.stat().st_size for p in build.glob("*.prog")) / 1e6
            table.add_row(name, f"{c_wall:.1f}", f"{c_cpu:.1f}", f"{c_rss / 1e6:.0f}", f"{r_wall:.1f}", f"{r_cpu:.1f}",
                          f"{r_rss / 1e6:.0f}",
                          simulated, f"{size:.1f}", hazards if not r_out.startswith("FAILED") else r_out)
    Console(width=170).print(table)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
