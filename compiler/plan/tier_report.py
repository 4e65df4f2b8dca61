"""Rich rendering of a plan's KV placement: where the cache lives, the tier table, and --idle's answer."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from compiler.plan import Plan


def tier_section(plan: Plan) -> Group | None:
    """The placement line, the tier table and the idle answer, when the plan has them."""
    t = plan.kv_tiers
    if not t:
        return None
    parts = [_placement(t["placement"]), _table(t["tiers"])]
    if "idle" in t:
        parts.append(_idle(t["idle"]))
    return Group(*parts)


def _placement(p: dict) -> Text:
    if p["tier"] == "sram":
        where = "KV cache: all in SRAM"
    else:
        where = (f"KV cache: the newest {p['hot_tokens']:,} positions in SRAM, the older {p['cold_tokens']:,} in "
                 f"{p['tier']}: {p['fetch_us_per_token'] / 1e3:,.3f} ms a token fetching them, "
                 f"{p['exposed_us_per_token'] / 1e3:,.3f} ms of it not hidden")
    return Text.assemble((where, "bold"), f"  (--kv-tier {p['requested']}: {p['why']})")


def _table(rows: list[dict]) -> Table:
    table = Table(title="memory tiers", header_style="bold")
    for col in ("tier", "per", "used / capacity", "bandwidth", "drain", "read / token", "time / token", "binds"):
        table.add_column(col, justify="left" if col in ("tier", "per", "binds") else "right")
    for r in rows:
        bw = f"{r['bw_bytes_per_s'] / 1e9:,.1f} GB/s" + (
            f" ({r['chip_bw_bytes_per_s'] / 1e9:,.1f} a chip)" if "chip_bw_bytes_per_s" in r else "")
        table.add_row(r["tier"], r["per"], f"{_bytes(r['used_bytes'])} / {_bytes(r['capacity_bytes'])}", bw,
                      seconds(r["drain_s"]), _bytes(r["read_bytes_per_token"]), seconds(r["us_per_token"] / 1e6),
                      r["binds"])
    return table


def _idle(i: dict) -> Text:
    """The chosen tier, its drain time and what resuming costs, then why."""
    drain = seconds(i["drain_s"][i["tier"]])
    resume = "resuming pulls nothing back" if i["tier"] == "sram" else (
        f"resuming pulls {_bytes(i['sequence_bytes'])} back, {_bytes(i['chip_share_bytes'])} a chip at once, in "
        f"{seconds(i['resume_s'])}")
    return Text(f"idle {seconds(i['idle_s'])}: keep the conversation's KV in {i['tier']} (drains in {drain}); "
                f"{resume} ({i['why']})")


def _bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"


def seconds(s: float) -> str:
    """A duration in the unit that keeps its digits: µs, ms, s or min."""
    if s == 0:
        return "0"
    if s < 1e-3:
        return f"{s * 1e6:,.2f} µs"
    if s < 1:
        return f"{s * 1e3:,.2f} ms"
    return f"{s:,.2f} s" if s < 120 else f"{s / 60:,.1f} min"


def sweep_columns(plans: list[Plan]) -> bool:
    """Whether a --context sweep shows where each plan keeps its KV."""
    return any(p.kv_tiers for p in plans)


def sweep_cells(plan: Plan) -> list[str]:
    """A sweep row's placement cells: where the KV lives, SRAM alone's chips, the tier's time a token."""
    p = plan.kv_tiers["placement"]
    where = "sram" if p["tier"] == "sram" else f"{p['tier']} (hot {p['hot_tokens']:,})"
    sram = p.get("sram_chips")
    return [where, f"{sram:,}" if sram else "—", seconds(p["fetch_us_per_token"] / 1e6)]


def crossover(plans: list[Plan]) -> Text | None:
    """The first context at which auto moves KV below SRAM (the rows are in the sweep's order)."""
    auto = [p for p in plans if p.kv_tiers and p.kv_tiers["placement"]["requested"] == "auto"]
    below = [p for p in auto if p.kv_tiers["placement"]["tier"] != "sram"]
    if not auto:
        return None
    if not below:
        return Text("auto keeps the KV cache in SRAM at every context swept", style="dim")
    first = below[0]
    p = first.kv_tiers["placement"]
    return Text(f"crossover: from context {first.options['context']:,} moving KV to {p['tier']} beats adding chips "
                f"({p['why']})", style="dim")
