"""`sramflow run` on a disaggregated build: prefill on the prefill pool's build, the KV hand-off, decode on
the decode pool's build.

Reads only the build's files and the two targets; never the compiler. The hand-off's time is derived
here, from the prefill build's graph (the caches and states one request fills for its prompt), the
chips each build keeps them on (its memory.json) and both targets' pool links: the larger latency
plus the bytes over the slower side's links (every chip holding a share sends or receives it over its
own). handoff.json's figure is checked against it (a mismatch is a hazard). Functional mode copies the
prompt's cache rows (and any recurrent state) from the prefill machine's SRAM into the decode build's
cache layout, both named in the top-level memory.json, then decodes greedily on the decode build.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

import numpy as np

from ir.build_io import BuildFiles
from ir.errors import ConfigError
from ir.graph import Graph
from ir.memory_map import MemoryMap
from ir.ops import Opcode
from ir.parser import parse_graph
from targets.build_dir import Build, load_build
from targets.functional import Machine
from targets.reference_check import Reference
from targets.runner import (
    _as_prompts,
    _batch,
    _check_functional,
    _check_prefill,
    _decode,
    _finish_prompts,
    _outputs_digest,
    _prefill,
    run_build,
)

KIND = "disaggregated"
POOLS = ("prefill", "decode")
HANDOFF_KEYS = ("prompt_tokens", "bytes", "senders", "receivers", "time_s")
CACHE_OPS = (Opcode.ATTENTION, Opcode.MLA_ATTENTION)  # their state operands hold a row per token


def is_disaggregated(path: str | Path) -> bool:
    """Whether `path` holds a disaggregated build (its manifest says so; anything unreadable is left to
    the ordinary build reader to name)."""
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("kind") == KIND
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def _load(path: Path) -> tuple[dict, dict, dict[str, Build]]:
    """handoff.json, memory.json and both sub-builds, each verified: files against the manifest,
    sub-builds against their own and against the digests the top-level manifest recorded."""
    files = BuildFiles(path)
    recorded = files.manifest.builds or {}
    if sorted(recorded) != sorted(POOLS):
        raise files.damaged(f"manifest.json records sub-builds {sorted(recorded)}, not {list(POOLS)}")
    builds = {pool: load_build(path / pool) for pool in POOLS}
    for pool in POOLS:
        if json.loads((path / pool / "manifest.json").read_text())["digest"] != recorded[pool]:
            raise files.damaged(f"{pool}/ is not the build it was written with")
    return files.json("handoff.json", HANDOFF_KEYS), files.json("memory.json", POOLS), builds


# ---------------------------------------------------------------- the hand-off, derived


def request_bytes(graph: Graph, prompt: int) -> float:
    """One sequence's caches for `prompt` tokens and its recurrent states, from a build's decode graph."""
    tokens = {v.name for op in graph.ops if op.opcode in CACHE_OPS for v in op.operands}
    total = 0.0
    for s in graph.state:
        per_sequence = s.type.nbytes / s.type.shape[0]
        total += per_sequence * prompt / s.type.shape[1] if s.name in tokens else per_sequence
    return total


def holding_chips(memory: MemoryMap) -> int:
    """Chips of a build that keep some cache or state."""
    return sum(s.tp for s in memory.stages if s.blocks("both", ("state",)))


def derive_handoff(builds: dict[str, Build], prompt: int) -> dict:
    """The hand-off's bytes, chips and time from the two builds and their targets alone."""
    prefill = builds["prefill"]
    graph = parse_graph(prefill.files.bytes("decode.ir").decode(), str(prefill.path / "decode.ir"))
    chips = {pool: holding_chips(b.memory) for pool, b in builds.items()}
    nbytes = request_bytes(graph, prompt)
    links = {pool: b.system.pool_link for pool, b in builds.items()}
    bandwidth = min(chips[p] * links[p].bw_bytes_per_s for p in POOLS)
    latency = max(links[p].latency_s for p in POOLS)
    return {"bytes": nbytes, "senders": chips["prefill"], "receivers": chips["decode"],
            "bw_bytes_per_s": bandwidth, "latency_s": latency, "time_s": latency + nbytes / bandwidth}


def _handoff_hazards(derived: dict, recorded: dict) -> list[dict]:
    """handoff.json against the derivation: any figure off is a hazard of the build."""
    off = [k for k in ("bytes", "senders", "receivers", "time_s")
           if not math.isclose(derived[k], recorded[k], rel_tol=1e-9)]
    return [{"phase": "handoff", "pool": "handoff", "chip": None, "unit": "link", "index": None, "cycle": None,
             "kind": "handoff", "detail": f"handoff.json says {k} = {recorded[k]!r}, the builds give {derived[k]!r}"}
            for k in off]


# ---------------------------------------------------------------- the run


def run_disaggregated(path: str | Path, tokens: int = 1, check_determinism: bool = False,
                      prompt: list[int] | list[list[int]] | None = None, check_reference: bool = False) -> dict:
    """The figures `sramflow run --json` prints for a disaggregated build (README: Serving)."""
    path = Path(path)
    recorded, layouts, builds = _load(path)
    derived = derive_handoff(builds, recorded["prompt_tokens"])
    pools = {"prefill": run_build(builds["prefill"], 1, check_determinism),
             "decode": run_build(builds["decode"], tokens, check_determinism)}
    hazards = [h | {"pool": pool} for pool, f in pools.items() for h in f["hazards"]]
    hazards += _handoff_hazards(derived, recorded)
    ttft_ms = pools["prefill"]["prefill"]["ttft_ms"] + derived["time_s"] * 1e3
    decode = pools["decode"]["decode"]
    figures = {"kind": KIND, "hazards": hazards, "handoff": _handoff_figures(derived),
               "prefill": pools["prefill"]["prefill"], "decode": decode, "ttft_ms": ttft_ms,
               "tokens": {"count": tokens, "total_ms": ttft_ms + (tokens - 1) * decode["latency_us"] / 1e3},
               "chips": {pool: f["chips"] for pool, f in pools.items()},
               "instructions_executed": sum(f["instructions_executed"] for f in pools.values())}
    if check_determinism:
        figures["determinism"] = _determinism(pools)
    if prompt is not None:
        prompts = _as_prompts(prompt)
        out = _run_functional(builds, layouts, prompts, tokens)
        figures["functional"] = _functional(builds, layouts, prompts, tokens, out, check_determinism)
        # a shuffled-order run executes the same instructions again
        figures["instructions_executed"] += out["instructions"] * (2 if check_determinism else 1)
        figures["tokens"]["generated"] = figures["functional"]["tokens"]
        if check_reference:  # the decode build's graph and weights: the co-located model's reference
            figures["reference"] = Reference.load(builds["decode"]).check(prompts, out["tokens"], out["logits"])
        if check_determinism:
            _fold_functional(figures)
    return figures


def _handoff_figures(derived: dict) -> dict:
    return {"bytes": round(derived["bytes"]), "senders": derived["senders"], "receivers": derived["receivers"],
            "bw_bytes_per_s": derived["bw_bytes_per_s"], "latency_s": derived["latency_s"],
            "time_ms": derived["time_s"] * 1e3}


def _determinism(pools: dict[str, dict]) -> dict:
    dets = {pool: f["determinism"] for pool, f in pools.items()}
    failures = [f"{pool}: {x}" for pool, d in dets.items() for x in d["failures"]]
    digest = hashlib.sha256("".join(d["digest"] for d in dets.values()).encode()).hexdigest()
    return {"passed": not failures, "failures": failures, "digest": digest}


def _fold_functional(figures: dict) -> None:
    det, fn = figures["determinism"], figures["functional"]
    if fn["digest"] != fn["digest_shuffled"]:
        det["failures"].append("functional: a run in another chip order gives other tokens or logits")
    det["passed"] = not det["failures"]


# ---------------------------------------------------------------- functional: prompt in, tokens out


def _functional(builds: dict[str, Build], layouts: dict, prompts: list[list[int]], tokens: int, out: dict,
                again: bool) -> dict:
    one = len(prompts) == 1
    result = {"prompt": prompts[0] if one else prompts, "tokens": out["tokens"][0] if one else out["tokens"],
              "prompts": prompts, "sequences": out["tokens"], "digest": _outputs_digest(out),
              "instructions_executed": out["instructions"], "copied_bytes": out["copied_bytes"]}
    if again:
        order = {pool: random.Random(f"handoff-{pool}").sample(range(n), n) for pool, n in out["chips"].items()}
        result["digest_shuffled"] = _outputs_digest(_run_functional(builds, layouts, prompts, tokens, order))
    return result


def run_functional_disaggregated(path: str | Path, prompts: list[list[int]], tokens: int,
                                 order: dict[str, list[int]] | None = None) -> dict:
    """Prefill the prompts (one per sequence of the builds' batch) on the prefill build's SRAM image, copy
    their cache rows into the decode build's, and decode greedily there until `tokens` tokens each:
    per sequence its tokens and their logits."""
    _, layouts, builds = _load(Path(path))
    return _run_functional(builds, layouts, prompts, tokens, order)


def _run_functional(builds: dict[str, Build], layouts: dict, prompts: list[list[int]], tokens: int,
                    order: dict[str, list[int]] | None = None) -> dict:
    pre, dec = builds["prefill"], builds["decode"]
    _check_prompts(builds, prompts, tokens)
    order = order or {}
    machines = {pool: _machine(build) for pool, build in builds.items()}
    seqs = _prefill(pre, machines["prefill"], prompts, order.get("prefill"))
    _finish_prompts(pre, machines["prefill"], seqs, order.get("prefill"))
    copied = copy_caches(machines["prefill"], layouts["prefill"]["caches"], machines["decode"],
                         layouts["decode"]["caches"], max(len(p) for p in prompts))
    while not all(len(s.tokens) >= tokens for s in seqs):
        _decode(dec, machines["decode"], seqs, tokens, order.get("decode"))
    return {"tokens": [s.tokens[:tokens] for s in seqs], "logits": [np.stack(s.logits[:tokens]) for s in seqs],
            "copied_bytes": copied, "instructions": sum(m.executed for m in machines.values()),
            "chips": {pool: b.programs["decode"].chips for pool, b in builds.items()}}


def _check_prompts(builds: dict[str, Build], prompts: list[list[int]], tokens: int) -> None:
    """One prompt per sequence of both builds' batch, each fitting the prefill build (its caches hold the
    prompt) and, with its tokens, the decode build."""
    batches = {pool: _batch(b) for pool, b in builds.items()}
    if len(set(batches.values())) > 1 or len(prompts) != batches["decode"]:
        raise ConfigError(f"--prompt: the builds decode {batches['decode']} sequences (prefill {batches['prefill']}), "
                          f"got {len(prompts)} prompts; give one per sequence, separated by ';'")
    for p in prompts:
        _check_functional(builds["prefill"], p, 1)
        _check_functional(builds["decode"], p, tokens)
    _check_prefill(builds["prefill"], prompts)


def _machine(build: Build) -> Machine:
    machine = Machine.blank(build.programs["decode"].chips, build.system.chip.usable_sram_bytes)
    machine.load(build.image())
    return machine


# ---------------------------------------------------------------- moving the rows


def copy_caches(source: Machine, sent: list[dict], target: Machine, received: list[dict], rows: int) -> int:
    """Every cache's first `rows` token rows (a state without a token axis whole) from the chips that
    hold it in `source` to the chips that hold it in `target`; returns the bytes written."""
    by_name = {c["name"]: c for c in received}
    written = 0
    for cache in sent:
        into = by_name.get(cache["name"])
        if into is None or into["dtype"] != cache["dtype"] or _fixed(into) != _fixed(cache):
            raise ConfigError(f"{cache['name']}: the prefill and decode builds hold different caches "
                              "(recompile both from one model and precision)")
        whole = _gather(source, cache, rows)
        for block in into["chips"]:
            written += _scatter(target, into, block, whole)
    return written


def _fixed(cache: dict) -> tuple:
    """A cache's shape but for its token axis (the two builds may hold different contexts)."""
    axis = cache["tokens_axis"]
    return tuple(n for i, n in enumerate(cache["shape"]) if i != axis), cache["tokens_axis"]


def _bytes_shape(shape: list[int], dtype: str) -> tuple[int, ...]:
    """A tensor's shape as bytes: the last axis counted in bytes (packed 4-bit codes two a byte)."""
    from ir.types import DType

    bits = DType(dtype).bits * shape[-1]
    if bits % 8:
        raise ConfigError(f"a cache block of {shape[-1]} {dtype} values does not fill whole bytes")
    return (*shape[:-1], bits // 8)


def _window(block: dict, dtype: str, whole: tuple[int, ...]) -> tuple[slice, ...]:
    """The block's place in the whole tensor of byte shape `whole` (its token rows already cut), clipped
    where a block is zero-padded past the end."""
    start = (*block["start"][:-1], _bytes_shape(block["start"], dtype)[-1])
    shape = _bytes_shape(block["shape"], dtype)
    return tuple(slice(min(s, w), min(s + n, w)) for s, n, w in zip(start, shape, whole, strict=True))


def _whole_shape(cache: dict, rows: int) -> tuple[int, ...]:
    shape = list(_bytes_shape(cache["shape"], cache["dtype"]))
    if cache["tokens_axis"] is not None:
        shape[cache["tokens_axis"]] = rows
    return tuple(shape)


def _gather(machine: Machine, cache: dict, rows: int) -> np.ndarray:
    """The whole tensor's first `rows` token rows, assembled from its blocks (copies agree; any will do)."""
    whole = np.zeros(_whole_shape(cache, rows), np.uint8)
    for block in cache["chips"]:
        window = _window(block, cache["dtype"], whole.shape)
        whole[window] = _region(machine, cache, block)[_local(window)]
    return whole


def _scatter(machine: Machine, cache: dict, block: dict, whole: np.ndarray) -> int:
    """Write the block's share of `whole` into its chip's region (token rows past `whole`'s untouched)."""
    region = _region(machine, cache, block)
    window = _window(block, cache["dtype"], whole.shape)
    region[_local(window)] = whole[window]
    machine.write(block["chip"], block["addr"], region.reshape(-1))
    return int(np.prod([w.stop - w.start for w in window]))


def _region(machine: Machine, cache: dict, block: dict) -> np.ndarray:
    data = machine.read(block["chip"], block["addr"], block["bytes"])
    return data.reshape(_bytes_shape(block["shape"], cache["dtype"]))


def _local(window: tuple[slice, ...]) -> tuple[slice, ...]:
    """The same window from the block's own origin."""
    return tuple(slice(0, w.stop - w.start) for w in window)
