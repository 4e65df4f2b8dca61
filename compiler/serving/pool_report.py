"""Pools for people: each pool's replicas, devices and service, the hand-off, and the co-located pool."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from compiler.serving.pools import Deployment


def render_deployment(model: str, d: Deployment, console: Console) -> None:
    load = d.load
    console.print(Text.assemble((model, "bold"), f"  {load.rate_per_s:g} requests/s, prompt {load.prompt:,}, "
                                f"output {load.output:,} tokens; per-user floor {d.floor_tokens_per_s:,.1f} tokens/s"))
    table = Table(header_style="bold", box=None)
    for col in ("pool", "target", "batch", "replicas", "devices", "utilisation", "TTFT ms", "tokens/s per user",
                "aggregate tokens/s (served / capacity)"):
        table.add_column(col, justify="left" if col in ("pool", "target") else "right")
    p, dec, c = d.prefill, d.decode, d.colocated
    pr = p.replica
    table.add_row("prefill", pr.system.name, f"{pr.batch:,}", f"{p.replicas:,}", _devices(p.devices, pr),
                  f"{p.utilisation:.0%}", _ms(pr.ttft_s), "—",
                  f"{p.demand_tokens_per_s:,.0f} / {p.replicas * pr.prompt_tokens_per_s:,.0f} prompt")
    dr = dec.replica
    table.add_row("decode", dr.system.name, f"{dr.batch:,}", f"{dec.replicas:,}", _devices(dec.devices, dr),
                  f"{dec.utilisation:.0%}", _ms(d.ttft_s), f"{dr.tokens_per_s:,.1f}",
                  f"{dec.served_tokens_per_s:,.0f} / {dec.replicas * dr.batch * dr.tokens_per_s:,.0f}")
    if c.error:
        table.add_row("co-located", dr.system.name, "—", "—", "—", "—", "—", "—", "cannot meet the load")
    else:
        cr = c.replica
        table.add_row("co-located", cr.system.name, f"{cr.batch:,}", f"{c.replicas:,}", _devices(c.devices, cr),
                      f"{c.concurrent / (c.replicas * cr.batch):.0%}", _ms(cr.ttft_s),
                      f"{c.tokens_per_s:,.1f}", f"{dec.served_tokens_per_s:,.0f} / "
                      f"{c.replicas * cr.batch * c.tokens_per_s:,.0f}")
    console.print(table)
    for line in _notes(d):
        console.print(line, style="dim", markup=False, highlight=False)


def _devices(n: int, replica) -> str:
    from compiler.serving.rule import device_name

    name = device_name(replica.system)
    return f"{n:,} {name}{'s' if n != 1 else ''}"


def _notes(d: Deployment) -> list[str]:
    h, p, dec, c = d.decode.handoff, d.prefill, d.decode, d.colocated
    lines = [f"KV hand-off: {_size(h.bytes)} a request in {_ms(h.time_s)} ms "
             f"({_count(h.senders, 'sender')}, {_count(h.receivers, 'receiver')}, {h.bw_bytes_per_s / 1e9:,.1f} GB/s, "
             f"the {h.binding} side's links binding, +{h.latency_s * 1e6:,.1f} µs); decode TTFT = prefill "
             f"{_ms(p.replica.ttft_s)} ms + hand-off",
             f"prefill replica: {_count(p.replica.batch, 'prompt')} per {_ms(p.replica.prefill_period_s)} ms "
             f"period (pipelined chunks), {p.replica.prompt_tokens_per_s:,.0f} prompt tokens/s",
             f"decode pool: {dec.concurrent:,.1f} sequences in flight (rate x (hand-off + output / tokens/s per user))"]
    if c.error:
        lines.append(f"co-located on {d.decode.replica.system.name}: {c.error}")
    else:
        lines.append(f"co-located: each replica spends {c.prefill_share:.0%} of its time prefilling "
                     f"({_count(c.replica.batch, 'prompt')} at a time), {c.concurrent:,.1f} sequences in flight")
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' if n != 1 else ''}"


def _ms(seconds: float) -> str:
    """Milliseconds: two decimals, or three significant digits below one (the tiny test models)."""
    ms = seconds * 1e3
    return f"{ms:,.2f}" if ms >= 1 else f"{ms:.3g}"


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f} MB" if nbytes >= 1e5 else f"{nbytes:,.0f} bytes"
