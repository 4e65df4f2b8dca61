"""`compile MODEL --prefill-target T1 --decode-target T2 -o DIR`: one replica of each pool and the hand-off.

DIR holds two normal builds, `prefill/` (T1, its caches sized for the prompt: context = --prompt) and
`decode/` (T2 at the options given), `handoff.json` (a request's cache bytes for the prompt, the
devices on each side, both pool links and the time: compiler.serving.handoff's model), `memory.json`
(every cache's layout in both builds: compiler.serving.layout) and `manifest.json` (ir.build_io's,
with `kind` "disaggregated" and the sub-builds under `builds` by their manifests' digests). It is
written under a temporary name and swapped into place (ir.build_io.build_writer): only a new, empty
or previous-build directory is replaced, an edited build only with --force.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from compiler.build import compile_model
from compiler.frontend.options import CompileOptions
from compiler.serving.handoff import plan_handoff
from compiler.serving.layout import cache_layout
from ir.build_io import build_writer, check_destination, write_manifest
from ir.errors import ConfigError
from ir.memory_map import MemoryMap
from ir.parser import parse_graph
from targets import load_target

KIND = "disaggregated"
POOLS = ("prefill", "decode")


def compile_disaggregated(model: str, prefill_target: str, decode_target: str, options: CompileOptions,
                          out: str | Path, weights: str = "auto", progress=lambda _: None, force: bool = False) -> dict:
    """Both pools' builds and the hand-off between them in `out`; returns the top-level manifest."""
    if options.kv_tier != "sram":
        raise ConfigError(f"--kv-tier {options.kv_tier}: a disaggregated build hands the KV cache over from SRAM; "
                          "plan tiers on one pool (plan --kv-tier), or leave --kv-tier out")
    out = check_request(prefill_target, decode_target, out, force)
    sub_options = {"prefill": replace(options, context=options.prompt), "decode": options}
    with build_writer(out, force) as tmp:
        for pool, target in zip(POOLS, (prefill_target, decode_target), strict=True):
            progress(f"compiling the {pool} pool's build on {target}")
            compile_model(model, target, sub_options[pool], tmp / pool, progress, weights=weights)
        manifest = _write_top(tmp, prefill_target, decode_target, options.prompt)
    return manifest


def check_request(prefill_target: str, decode_target: str, out: str | Path, force: bool = False) -> Path:
    """Refuse, before any work, targets that cannot be compiled and a destination that is not ours."""
    for flag, name in (("--prefill-target", prefill_target), ("--decode-target", decode_target)):
        _check_compilable(flag, name)
    return check_destination(out, force)


def _check_compilable(flag: str, name: str) -> None:
    """Only chip targets with an instruction set compile: wafers have no SRAM image to hand a cache
    from, HBM GPUs no Program (they are plan-only references)."""
    system = load_target(name)
    if system.is_mesh:
        raise ConfigError(f"{flag} {name}: a wafer build has no SRAM image to move a KV cache between; "
                          "disaggregated builds are for chip targets (plan takes wafers)")
    if system.chip.memory_kind == "hbm":
        raise ConfigError(f"{flag} {name}: an HBM GPU target is plan-only (no instruction set to compile to); "
                          "`plan --prefill-target` sizes its pools")


def _write_top(tmp: Path, prefill_target: str, decode_target: str, prompt: int) -> dict:
    plans = {pool: json.loads((tmp / pool / "plan.json").read_text()) for pool in POOLS}
    handoff = plan_handoff(plans["prefill"], plans["decode"], load_target(prefill_target), load_target(decode_target))
    record = {"prompt_tokens": prompt, "targets": {"prefill": prefill_target,
                                                                     "decode": decode_target},
              "bytes": handoff.bytes, "senders": handoff.senders, "receivers": handoff.receivers,
              "send_link": _link(handoff.send_link), "receive_link": _link(handoff.receive_link),
              "bw_bytes_per_s": handoff.bw_bytes_per_s, "latency_s": handoff.latency_s, "time_s": handoff.time_s,
              "binding": handoff.binding}
    (tmp / "handoff.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    layouts = {pool: {"caches": _layout(tmp / pool, plans[pool])} for pool in POOLS}
    (tmp / "memory.json").write_text(json.dumps(layouts, indent=1, sort_keys=True) + "\n")
    names = f"{plans['prefill']['target']} to {plans['decode']['target']}"
    return write_manifest(tmp, names, extra={"kind": KIND}, builds=POOLS)


def _layout(build: Path, plan: dict) -> list[dict]:
    graph = parse_graph((build / "decode.ir").read_text(), str(build / "decode.ir"))
    return cache_layout(graph, plan, MemoryMap.loads((build / "memory.json").read_text(), str(build / "memory.json")))


def _link(link) -> dict:
    return {"bw_bytes_per_s": link.bw_bytes_per_s, "latency_s": link.latency_s}


