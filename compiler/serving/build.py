"""`compile MODEL --prefill-target T1 --decode-target T2 -o DIR`: one replica of each pool and the hand-off.

DIR holds two normal builds, `prefill/` (T1, its caches sized for the prompt: context = --prompt) and
`decode/` (T2 at the options given), `handoff.json` (a request's cache bytes for the prompt, the
devices on each side, both pool links and the time: compiler.serving.handoff's model), `memory.json`
(every cache's layout in both builds: compiler.serving.layout) and `manifest.json` (`kind`
"disaggregated", the sha256 of each file, the sub-builds' by their manifests). The directory is
written under a temporary name and renamed into place; only a new, empty or previous build
directory is replaced.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

from compiler.build import compile_model
from compiler.options import CompileOptions
from compiler.serving.handoff import plan_handoff
from compiler.serving.layout import cache_layout
from ir.errors import ConfigError
from ir.files import atomic_dir
from ir.parser import parse_graph
from targets import WaferSpec, load_target

FORMAT = 1
KIND = "disaggregated"
POOLS = ("prefill", "decode")


def compile_disaggregated(model: str, prefill_target: str, decode_target: str, options: CompileOptions,
                          out: str | Path, weights: str = "auto", progress=lambda _: None) -> dict:
    """Both pools' builds and the hand-off between them in `out`; returns the top-level manifest."""
    out = Path(out)
    check_request(prefill_target, decode_target, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_dir(out)
    try:
        sub_options = {"prefill": replace(options, context=options.prompt), "decode": options}
        for pool, target in zip(POOLS, (prefill_target, decode_target), strict=True):
            progress(f"compiling the {pool} pool's build on {target}")
            compile_model(model, target, sub_options[pool], tmp / pool, progress, weights=weights)
        manifest = _write_top(tmp, prefill_target, decode_target, options.prompt)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def check_request(prefill_target: str, decode_target: str, out: Path) -> None:
    """Refuse, before any work, targets that cannot be compiled and a destination that is not ours."""
    for flag, name in (("--prefill-target", prefill_target), ("--decode-target", decode_target)):
        _check_compilable(flag, name)
    _check_destination(out)


def _check_compilable(flag: str, name: str) -> None:
    """Only chip targets with an instruction set compile: wafers have no SRAM image to hand a cache
    from, HBM GPUs no Program (they are plan-only references)."""
    system = load_target(name)
    if isinstance(system, WaferSpec):
        raise ConfigError(f"{flag} {name}: a wafer build has no SRAM image to move a KV cache between; "
                          "disaggregated builds are for chip targets (plan takes wafers)")
    if system.chip.memory_kind == "hbm":
        raise ConfigError(f"{flag} {name}: an HBM GPU target is plan-only (no instruction set to compile to); "
                          "`plan --prefill-target` sizes its pools")


def _check_destination(out: Path) -> None:
    """Replace only a build (a manifest.json inside), an empty directory, or nothing."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise ConfigError(f"-o {out}: exists and is not a sramflow build; give a new or empty directory")


def _write_top(tmp: Path, prefill_target: str, decode_target: str, prompt: int) -> dict:
    plans = {pool: json.loads((tmp / pool / "plan.json").read_text()) for pool in POOLS}
    handoff = plan_handoff(plans["prefill"], plans["decode"], load_target(prefill_target), load_target(decode_target))
    record = {"format": FORMAT, "prompt_tokens": prompt, "targets": {"prefill": prefill_target,
                                                                     "decode": decode_target},
              "bytes": handoff.bytes, "senders": handoff.senders, "receivers": handoff.receivers,
              "send_link": _link(handoff.send_link), "receive_link": _link(handoff.receive_link),
              "bw_bytes_per_s": handoff.bw_bytes_per_s, "latency_s": handoff.latency_s, "time_s": handoff.time_s,
              "binding": handoff.binding}
    (tmp / "handoff.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    layouts = {pool: {"caches": _layout(tmp / pool, plans[pool])} for pool in POOLS}
    (tmp / "memory.json").write_text(json.dumps(layouts, indent=1, sort_keys=True) + "\n")
    names = ("handoff.json", "memory.json", "prefill/manifest.json", "decode/manifest.json")
    manifest = {"format": FORMAT, "kind": KIND, "files": {name: _sha256(tmp / name) for name in names}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _layout(build: Path, plan: dict) -> list[dict]:
    graph = parse_graph((build / "decode.ir").read_text(), str(build / "decode.ir"))
    return cache_layout(graph, plan, json.loads((build / "memory.json").read_text()))


def _link(link) -> dict:
    return {"bw_bytes_per_s": link.bw_bytes_per_s, "latency_s": link.latency_s}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
