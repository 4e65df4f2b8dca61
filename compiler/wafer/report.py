"""Rich rendering of a WaferPlan for people; scripts read `--json` instead."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from compiler.report import layer_text, memory_table, units_text
from compiler.wafer.plan import WaferPlan


def render_wafer_plan(plan: WaferPlan, console: Console) -> None:
    console.print(_summary(plan))
    console.print(_stages(plan))
    console.print(_memory(plan))


def _summary(plan: WaferPlan) -> Group:
    d, p, m = plan.decode, plan.prefill, plan.mesh
    o = plan.options
    shape = f"{o['precision']} weights, context {o['context']}, prompt {o['prompt']}, batch {o['batch']}"
    title = Text.assemble((plan.model, "bold"), " on ", (plan.target, "bold"), "  ", shape)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("figure", "predicted", "bound", "binds"):
        table.add_column(col, justify="left" if col in ("figure", "binds") else "right")
    table.add_row("wafers", f"{plan.chips}", f"{plan.chips_lower_bound} (capacity)", plan.binding["chips"])
    table.add_row("cores used", f"{m['cores_used']:,}", f"of {plan.chips * m['cores_per_wafer']:,} on the wafers", "")
    table.add_row("decode latency / token", f"{d['latency_us']:,.2f} µs", f"{d['latency_bound_us']:,.2f} µs",
                  d["binding"])
    table.add_row("decode tokens/s per user", f"{d['tokens_per_s']:,.0f}", f"{d['tokens_per_s_bound']:,.0f}", "")
    table.add_row("time to first token", f"{p['ttft_ms']:,.3f} ms", f"{p['ttft_bound_ms']:,.3f} ms", p["binding"])
    b = d["breakdown_us"]
    s = plan.solver
    footer = Text(f"decode split: fabric links {b['links']:,.1f} µs, message steps {b['pipeline_latency']:,.1f} µs, "
                  f"compute {b['compute']:,.1f} µs, SRAM {b['sram_bandwidth']:,.1f} µs; prefill chunk "
                  f"{p['chunk_tokens']} tokens\n{len(plan.stages)} regions on {plan.chips} wafer(s) of "
                  f"{m['mesh_rows']}x{m['mesh_cols']} cores; solver {s['status']} over {s['candidates']} "
                  f"candidates in {plan.wall_s:.2f} s wall", style="dim")
    return Group(title, table, footer)


def _stages(plan: WaferPlan) -> Table:
    table = Table(title="pipeline stages (one region of cores each)", header_style="bold")
    for col in ("stage", "units", "layers", "wafer", "region", "cores", "decode µs", "bound µs", "binds"):
        table.add_column(col, justify="left" if col in ("units", "region", "binds") else "right")
    for s in plan.stages:
        r = s.region
        table.add_row(str(s.index), units_text(s), layer_text(s), str(r.wafer),
                      f"{r.rows}x{r.cols} @ ({r.row},{r.col})", f"{s.cores:,}", f"{s.decode_us:,.2f}",
                      f"{s.decode_bound_us:,.2f}", s.binding)
    return table


def _memory(plan: WaferPlan) -> Table:
    return memory_table(plan.stages, "core")
