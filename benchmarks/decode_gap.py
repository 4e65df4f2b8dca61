"""Decode latency against its physical bound (issue 16's goal: scheduled <= 1.25 x bound), int8 on lpu.

For 8B, 70B, 405B and Mixtral: compiles each (`--weights none`), times the decode Program with
`sramflow run`'s interpreter, and prints the plan's estimate, the scheduled latency, the bound, the
ratio, the estimate's breakdown (SRAM/stream, pipeline latency, links, whole-tile rounding) and the
gap to the bound split as `sramflow inspect` splits it (per-op latency, collectives beyond their
wire, tiles, serialisation, drains). The gauge for closing the gap.

`links floor` is the bound with its wire replaced by the estimate's links: every stage's slowest resource
(exact weights, no tile rounding, no pipeline latency) plus the collectives and hand-offs at the best forms
the link model has (partition.mesh). Where it is above 1.25 x the bound, no schedule of these stages reaches
the goal until the collectives themselves get faster.

    python benchmarks/decode_gap.py [MODEL ...]     # default: the four models
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

MODELS = ["llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "mixtral-8x7b"]


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"sramflow {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def measure(model: str) -> dict:
    """One model's plan figures and its scheduled decode, from a fresh build."""
    with tempfile.TemporaryDirectory() as tmp:
        build = str(Path(tmp) / "b")
        _cli("compile", model, "--target", "lpu", "--precision", "int8", "--weights", "none", "-o", build)
        plan = json.loads((Path(build) / "plan.json").read_text())
        decode = json.loads(_cli("inspect", build, "--json"))["decode"]
    tiles = sum(s["decode_tiles_us"] for s in plan["stages"])
    resources = sum(s["decode_bound_us"] - s["decode_bound_terms"]["wire_us"] for s in plan["stages"])
    return {"model": model, "chips": plan["chips"], "stages": len(plan["stages"]),
            "tp": sorted({s["tp"] for s in plan["stages"]}), "estimate": decode["estimate_us"],
            "scheduled": decode["latency_us"], "bound": decode["bound_us"],
            "breakdown": plan["decode"]["breakdown_us"], "tiles": tiles, "gap": decode["gap_us"],
            "floor": resources + plan["decode"]["breakdown_us"]["links"]}


def table(rows: list[dict]) -> Table:
    t = Table(title="int8 on lpu: decode µs, scheduled vs bound (goal <= 1.25x)")
    for col in ("model", "chips", "stages", "tp", "estimate", "scheduled", "bound", "ratio", "links floor",
                "est: sram", "pipeline", "links", "tiles", "gap: op latency", "collectives", "tiles",
                "serial", "drains"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        b, g = r["breakdown"], r["gap"]
        t.add_row(r["model"], str(r["chips"]), str(r["stages"]), ",".join(map(str, r["tp"])),
                  f"{r['estimate']:,.1f}", f"{r['scheduled']:,.1f}", f"{r['bound']:,.1f}",
                  f"{r['scheduled'] / r['bound']:.2f}x", f"{r['floor']:,.1f} ({r['floor'] / r['bound']:.2f}x)",
                  f"{b['sram_bandwidth'] + b['compute']:,.1f}",
                  f"{b['pipeline_latency']:,.1f}", f"{b['links']:,.1f}", f"{r['tiles']:,.1f}",
                  f"{g['per_op_latency']:,.1f}", f"{g['collectives']:,.1f}", f"{g['tiles']:,.1f}",
                  f"{g['serialisation']:,.1f}", f"{g['drains']:,.1f}")
    return t


def main() -> None:
    models = sys.argv[1:] or MODELS
    Console(width=200).print(table([measure(m) for m in models]))


if __name__ == "__main__":
    main()
