"""Rich rendering of a Plan for people; scripts read `--json` instead."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from compiler.plan import Plan, Stage
from compiler.plan.figures import GAP_PARTS
from compiler.plan.tier_report import crossover, sweep_cells, sweep_columns, tier_section
from ir.memory_map import MemoryMap, StageMemory


def render_plan(plan: Plan, console: Console) -> None:
    console.print(_summary(plan))
    console.print(_wafer_stages(plan) if plan.on_wafers else _stages(plan))
    console.print(memory_table(plan.stages, "core" if plan.on_wafers else "chip"))
    tiers = tier_section(plan)
    if tiers is not None:
        console.print(tiers)


def render_sweep(plans: list[Plan], console: Console) -> None:
    """`plan --context A,B,...`: one row per context."""
    first = plans[0]
    o = first.options
    console.print(Text.assemble((first.model, "bold"), " on ", (first.target, "bold"),
                                f"  {o['precision']} weights, prompt {o['prompt']}, batch {o['batch']}"))
    table = Table(header_style="bold", box=None)
    tiered = sweep_columns(plans)
    for col in ("context", "KV GB", "SSM MB", "weights GB", "chips", "bound", "µs/token", "bound µs", "tokens/s",
                "TTFT ms", "binds") + (("KV in", "SRAM-only chips", "tier / token") if tiered else ()):
        table.add_column(col, justify="right")
    for p in plans:
        t, d = p.totals, p.decode
        table.add_row(f"{p.options['context']:,}", f"{t['kv_cache_bytes'] / 1e9:,.2f}",
                      f"{t.get('ssm_state_bytes', 0) / 1e6:,.1f}",
                      f"{t['weight_bytes'] / 1e9:,.2f}", f"{p.chips:,}", f"{p.chips_lower_bound:,}",
                      f"{d['latency_us']:,.1f}", f"{d['latency_bound_us']:,.1f}", f"{d['tokens_per_s']:,.0f}",
                      f"{p.prefill['ttft_ms']:,.2f}", d["binding"], *(sweep_cells(p) if tiered else ()))
    console.print(table)
    line = crossover(plans)
    if line is not None:
        console.print(line)


def _summary(plan: Plan) -> Group:
    d, p = plan.decode, plan.prefill
    o = plan.options
    shape = f"{o['precision']} weights, context {o['context']}, prompt {o['prompt']}, batch {o['batch']}"
    title = Text.assemble((plan.model, "bold"), " on ", (plan.target, "bold"), "  ", shape)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("figure", "predicted", "bound", "binds"):
        table.add_column(col, justify="left" if col in ("figure", "binds") else "right")
    table.add_row(f"{plan.device}s", f"{plan.chips}", f"{plan.chips_lower_bound} (capacity)", plan.binding["chips"])
    if plan.on_wafers:
        m = plan.extra["mesh"]
        table.add_row("cores used", f"{m['cores_used']:,}", f"of {plan.chips * m['cores_per_wafer']:,} on the wafers",
                      "")
    table.add_row("decode latency / token", f"{d['latency_us']:,.2f} µs", f"{d['latency_bound_us']:,.2f} µs",
                  d["binding"])
    table.add_row("decode tokens/s per user", f"{d['tokens_per_s']:,.0f}", f"{d['tokens_per_s_bound']:,.0f}", "")
    table.add_row("time to first token", f"{p['ttft_ms']:,.3f} ms", f"{p['ttft_bound_ms']:,.3f} ms", p["binding"])
    return Group(title, table, _footer(plan), *_formats(d.get("formats", ())), *_experts(plan), *_embedding(plan),
                 *_layer_units(plan))


def _embedding(plan: Plan) -> list[Text]:
    """One line where the head reads the embedding's table (tied): which chips look rows up, and each layout's
    figures where the plan chose between them."""
    head = next((s for s in plan.stages if s.embedding), None)
    choice = plan.extra.get("embedding")
    if head is None and choice is None:
        return []
    where = (f"on the head's chips (stage {head.index}, its shard of the tied table; rows handed to stage 0)"
             if head else "on stage 0")
    layouts = choice["layouts"] if choice else {}
    said = "; ".join(f"{'head' if k == 'head' else 'stage 0'}: {v['footprint_chips']} chips, {v['decode_us']:,.2f} µs, "
                     f"TTFT {v['ttft_ms']:,.3f} ms" for k, v in layouts.items())
    o = plan.options
    rule = "fewest chips, then decode" if o.get("objective") == "chips" and o.get("chips") is None else \
        "decode, then fewest chips"  # planner._embedding_choice's key
    return [Text(f"embedding: {where}" + (f" ({rule}: {said})" if said else ""), style="dim")]


def _layer_units(plan: Plan) -> list[Text]:
    """One line where the planner weighed stages that end inside layers (planner._layer_choice), or a plan file
    asked for them: whole layers or split, why, and each layout's figures."""
    said = plan.extra.get("layer_units")
    if said is None:
        return []
    where = "stages may end between a layer's attention and its MLP" if said["split"] else "stages hold whole layers"
    names = {"layers": "whole layers", "blocks": "split"}
    figures = "; ".join(f"{names[k]}: {v['footprint_chips']} chips, {v['decode_us']:,.2f} µs, "
                        f"TTFT {v['ttft_ms']:,.3f} ms"
                        for k, v in said.get("layouts", {}).items())
    return [Text(f"layers: {where} ({said['why']}" + (f"; {figures})" if figures else ")"), style="dim")]


def _experts(plan: Plan) -> list[Text]:
    """One line: how the MoE stages spread their experts, and by what rule (--experts)."""
    placements = sorted({(s.experts, s.tp) for s in plan.stages if s.experts}, key=lambda p: -p[1])
    if not placements:
        return []
    asked = plan.options.get("experts", "auto")
    why = ("the static timing rule: fewest expert tiles a decode step streams, then a prefill chunk installs; "
           "--experts plans another" if asked == "auto" else f"as --experts {asked} asks")
    where = ", ".join(f"{name} on {tp} chips" for name, tp in placements)
    return [Text(f"experts: {where} ({why})", style="dim")]


def _footer(plan: Plan) -> Text:
    s, solver = plan.solver, f"solver {plan.solver['status']}"
    searched = f"{solver} over {s['candidates']} candidates in {plan.wall_s:.2f} s wall"
    if not plan.on_wafers:
        return Text(f"pipeline stages {len(plan.stages)}, footprint {plan.footprint_chips} chips{_idle(plan)}; "
                    f"{_chunks(plan)}; {searched}", style="dim")
    b, m = plan.decode["breakdown_us"], plan.extra["mesh"]
    return Text(f"decode split: fabric links {b['links']:,.1f} µs, message steps {b['pipeline_latency']:,.1f} µs, "
                f"compute {b['compute']:,.1f} µs, SRAM {b['sram_bandwidth']:,.1f} µs; prefill chunk "
                f"{plan.prefill['chunk_tokens']} tokens\n{len(plan.stages)} regions on {plan.chips} wafer(s) of "
                f"{m['mesh_rows']}x{m['mesh_cols']} cores; {searched}", style="dim")


def _idle(plan: Plan) -> str:
    """The chips inside the footprint no stage holds (the gaps node and group alignment leave), if any."""
    gaps, cursor = [], 0
    for r in sorted((s.placement for s in plan.stages), key=lambda r: r.first_chip):
        if r.first_chip > cursor:
            gaps.append(f"{cursor}" if r.first_chip - cursor == 1 else f"{cursor}..{r.first_chip - 1}")
        cursor = max(cursor, r.first_chip + r.tp)
    if not gaps:
        return ""
    idle = plan.footprint_chips - plan.chips
    return f", {idle} of them idle (chip{'s' if idle > 1 else ''} {', '.join(gaps)} hold no stage)"


def _chunks(plan: Plan) -> str:
    """How the prompt flows: its chunks, and how much cache each reads (compiler.plan.reach)."""
    p = plan.prefill
    runs = p["variants"]
    reads = (f"each reads the cache up to its own position ({len(runs)} variants)" if len(runs) > 1
             else f"each reads {runs[0]['reach']:,} cache positions")
    return f"prefill {p['chunks']} chunk{'s' if p['chunks'] > 1 else ''} of {p['chunk_tokens']} tokens, {reads}"


def _formats(rows) -> list[Text]:
    """One line: what each stored format's products run at, natively or dequantised on the way in."""
    if not rows:
        return []
    parts = [f"{r['tensor'].replace('_', ' ')} {r['format']} at the {r['mxm_rate']} rate "
             f"({r['peak_ops_per_s'] / 1e12:,.0f} TOPS, {r['rule']})" for r in rows]
    return [Text("formats: " + "; ".join(parts), style="dim")]


def _attention_text(s) -> str:
    """A subset stage's attention chips (and the MLP features each of them keeps), or every chip."""
    if not s.attention_tp:
        return "all"
    return f"first {s.attention_tp}" + (f", MLP {s.mlp_share}" if s.mlp_share else "")


def _stages(plan: Plan) -> Table:
    table = Table(title="pipeline stages", header_style="bold")
    experts = any(s.experts for s in plan.stages)
    kv = any(s.kv_layout for s in plan.stages)  # some group could split its caches (or latent projections)
    subset = any(s.attention_tp for s in plan.stages)  # some stage's attention on its first chips only
    cols = ("stage", "units", "layers", "tp", "chips", "decode µs", "bound µs", "hops in", "binds")
    left = ("units", "binds", "experts", "kv", "attention")
    for col in cols + (("experts",) if experts else ()) + (("kv",) if kv else ()) + (("attention",) if subset else ()):
        table.add_column(col, justify="right" if col not in left else "left")
    for s in plan.stages:
        table.add_row(str(s.index), units_text(s), layer_text(s), str(s.tp),
                      f"{s.first_chip}–{s.first_chip + s.tp - 1}", f"{s.decode_us:,.2f}",
                      f"{s.decode_bound_us:,.2f}", str(s.hops_in), s.binding,
                      *((s.experts or "-",) if experts else ()), *((s.kv_layout or "-",) if kv else ()),
                      *((_attention_text(s),) if subset else ()))
    return table


def _wafer_stages(plan: Plan) -> Table:
    table = Table(title="pipeline stages (one region of cores each)", header_style="bold")
    for col in ("stage", "units", "layers", "wafer", "region", "cores", "decode µs", "bound µs", "binds"):
        table.add_column(col, justify="left" if col in ("units", "region", "binds") else "right")
    for s in plan.stages:
        r = s.region
        table.add_row(str(s.index), units_text(s), layer_text(s), str(r.wafer),
                      f"{r.rows}x{r.cols} @ ({r.row},{r.col})", f"{s.cores:,}", f"{s.decode_us:,.2f}",
                      f"{s.decode_bound_us:,.2f}", s.binding)
    return table


def memory_table(stages, device: str) -> Table:
    """Each stage's memory on one of its devices (a chip, or a core of a wafer region)."""
    unit, scale = _byte_unit(max(s.memory.capacity for s in stages))
    table = Table(title=f"memory per {device} ({unit})", header_style="bold")
    for col in ("stage", "weights", "KV/state", "activations", "program", "headroom", "used"):
        table.add_column(col, justify="right")
    for s in stages:
        m = s.memory
        table.add_row(str(s.index), *(f"{b / scale:,.1f}" for b in (m.weights, m.kv_cache, m.activations, m.program,
                                                                     m.headroom)),
                      f"{100 * m.total / m.capacity:.0f}%")
    return table


def _byte_unit(largest: int) -> tuple[str, float]:
    """MB for real chips, KB for the tiny test targets, so figures keep their digits."""
    return ("MB", 1e6) if largest >= 10e6 else ("KB", 1e3)


def units_text(s: Stage) -> str:
    """A stage's units, first … last (a wafer stage reads the same)."""
    return s.first_unit if s.first_unit == s.last_unit else f"{s.first_unit} … {s.last_unit}"


def layer_text(s: Stage) -> str:
    if s.layers is None:
        return "—"
    a, b = s.layers
    return str(a) if a == b else f"{a}–{b}"


def render_summary(figures: dict, memory: MemoryMap, console: Console) -> None:
    """`sramflow inspect`: the schedule's figures beside the plan's, then each stage's SRAM map."""
    d, p = figures["decode"], figures["prefill"]
    devices = "wafers" if memory.wafer else "chips"
    console.print(f"[bold]{figures['model']}[/] on [bold]{figures['target']}[/]  {figures['chips']} {devices}, "
                  f"{figures['instructions']:,} instructions (decode {d['instructions']:,}, "
                  f"prefill {p['instructions']:,})")
    table = Table(box=None, header_style="bold")
    for col in ("figure", "scheduled", "plan estimate", "bound"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    table.add_row("decode latency / token", f"{d['latency_us']:,.2f} µs ({d['makespan_cycles']:,} cycles)",
                  f"{d['estimate_us']:,.2f} µs", f"{d['bound_us']:,.2f} µs")
    table.add_row("decode tokens/s per user", f"{d['tokens_per_s']:,.0f}", "", "")
    table.add_row("time to first token", f"{p['ttft_ms']:,.3f} ms", f"{p['estimate_ms']:,.3f} ms", "")
    console.print(table)
    console.print(f"efficiency (bound / scheduled) {d['efficiency']:.1%}; scheduled vs estimate "
                  f"{d['vs_estimate']:+.1%}")
    if d.get("gap_us"):
        console.print(_gap_line(d["gap_us"], d["latency_us"] - d["bound_us"]))
    console.print("unit busy (mean over units): " + ", ".join(f"{k} {v:.0%}" for k, v in d["busy"].items()))
    console.print("critical path: " + ", ".join(f"{k} {v:.0%}" for k, v in d["critical_path"].items()))
    console.print(_region_map(memory) if memory.wafer else _memory_map(memory))


def _gap_line(gap: dict[str, float], total_us: float) -> str:
    """scheduled - bound by cause, largest first, naming the largest share."""
    largest = max(gap, key=lambda k: (gap[k], k))
    shares = ", ".join(f"{k.replace('_', ' ')} {v:,.2f}" for k, v in sorted(gap.items(), key=lambda kv: -kv[1]))
    return (f"gap to the bound {total_us:,.2f} µs: {shares} µs; largest: {largest.replace('_', ' ')} "
            f"({GAP_PARTS[largest]})")


def _region_map(memory: MemoryMap) -> Table:
    """A wafer build: each stage's region of cores, its role streams, and SRAM per core."""
    table = Table(title="regions (every core of a role stream alike)", header_style="bold")
    for col in ("stage", "wafer", "region", "cores", "streams", "KB per core (decode / prefill)"):
        table.add_column(col, justify="right")
    for s in memory.stages:
        r = s.region
        table.add_row(str(s.index), str(r["wafer"]), f"{r['rows']}x{r['cols']} @ ({r['row']},{r['col']})",
                      f"{r['rows'] * r['cols']:,}", str(s.streams),
                      f"{s.resident_bytes_per_core / 1e3:,.1f} / {s.prefill_resident_bytes_per_core / 1e3:,.1f}")
    return table


def _memory_map(memory: MemoryMap) -> Table:
    """One row per run of consecutive stages on consecutive chips with the same layout sizes; inputs, ports and
    activations are the larger of the two phases' (they share the space above the weights)."""
    unit, scale = _byte_unit(max(b.addr + b.bytes for s in memory.stages for b in s.regions))
    table = Table(title=f"SRAM map per chip, {unit} (every chip of a stage alike, or its fullest)", header_style="bold")
    kinds = ("param", "state", "input", "port", "arena")
    for col in ("stages", "chips", "tp", "weights", "KV/state", "inputs", "ports", "acts", "top"):
        table.add_column(col, justify="right")
    runs: list[tuple[list[StageMemory], tuple]] = []
    for s in memory.stages:
        sizes = max(_chip_sizes(s, kinds, rank) for rank in s.rank_classes())
        sizes += (s.tp,)
        last = runs[-1][0][-1] if runs else None
        if last is not None and runs[-1][1] == sizes and s.first_chip == last.first_chip + last.tp:  # chips in a row
            runs[-1][0].append(s)
        else:
            runs.append(([s], sizes))
    for stages, sizes in runs:
        first, last = stages[0], stages[-1]
        table.add_row(_span(first.index, last.index),
                      _span(first.first_chip, last.first_chip + last.tp - 1), str(first.tp),
                      *(f"{b / scale:,.2f}" for b in sizes[:-1]))
    return table


def _chip_sizes(s: StageMemory, kinds: tuple[str, ...], rank: int) -> tuple[int, ...]:
    """What the stage's chip of `rank` holds of each kind (the larger of the two phases'), then its top address;
    ordered so that max() takes the chip of most weights (a subset stage's blocks of ranks differ)."""
    sizes = tuple(max(sum(b.bytes for b in s.blocks(ph, (k,), rank)) for ph in ("decode", "prefill")) for k in kinds)
    return (*sizes, max(b.addr + b.bytes for b in s.regions if b.on(rank)))


def _span(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}–{b}"
