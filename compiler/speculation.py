"""Speculative decoding's plan figures: a proposer's steps and the target's verify step, per K.

A step of speculative decoding: the proposer (a draft model on chips of its own, or DeepSeek's MTP
module) runs K decode steps, the target checks the K drafts in one verify step (K + 1 rows at their
own positions, weights streamed once), and every accepted draft is a token for free. The proposer
runs one more step meanwhile (its own cache row for the last draft, in case every draft is
accepted), hidden behind the verify step unless it is the longer. Timing never depends on what is
accepted, so a step's time is fixed; what varies is the tokens it emits, on average
(1 - A^(K+1)) / (1 - A) at a per-token acceptance rate A.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from compiler.frontend import build_graph, load_model_config
from compiler.frontend.config import ModelConfig
from compiler.frontend.mtp import build_mtp_graph
from compiler.frontend.options import MAX_SPECULATE, CompileOptions, Speculation
from compiler.plan import Plan
from compiler.plan.reader import PinnedStage, PlanFile
from compiler.planner import Lowered, graph_passes, lower, make_plan_on, plan_graphs
from ir.errors import ConfigError
from ir.graph import Graph
from targets import load_target
from targets.spec import SystemSpec

HANDOFF_BYTES = 4 * (MAX_SPECULATE + 1)  # token ids a step sends each way (at most K + 1 of them)


@dataclass(frozen=True, slots=True)
class Proposer:
    """What proposes: its name, its plan (on chips of its own) and the steps it may take."""

    kind: str  # "draft" or "mtp"
    name: str
    plan: Plan
    depth: int | None = None  # MTP: the module's prediction depth (its K)
    shared_params: int = 0  # parameters the proposer shares with the target (MTP: the embedding table)


def check_speculation(config: ModelConfig, options: CompileOptions, spec: Speculation) -> None:
    """What a proposer needs of the target, refused in one line."""
    if options.kv_tier != "sram":
        raise ConfigError(f"--speculate with --kv-tier {options.kv_tier}: a verify step writes its drafts' rows "
                          "into the SRAM ring of the newest positions, and a rejected one would overwrite a row the "
                          "next step still needs; use --kv-tier sram")
    if config.ssm is not None:
        raise ConfigError(f"--speculate: {config.name} keeps a recurrent (Mamba) state, which a rejected draft "
                          "would leave advanced; speculative decoding needs caches that positions overwrite")
    if spec.mtp and not config.mtp_layers:
        raise ConfigError(f"--mtp: {config.name} has no multi-token-prediction layers (num_nextn_predict_layers "
                          f"is 0 or absent in {config.source})")
    if spec.mtp and spec.steps not in ("auto", config.mtp_layers):
        raise ConfigError(f"--speculate {spec.steps}: {config.name}'s MTP module predicts {config.mtp_layers} "
                          f"token(s) ahead; give --speculate {config.mtp_layers} or auto")
    if spec.draft is not None:
        draft = load_model_config(spec.draft)
        if draft.vocab_size != config.vocab_size:
            raise ConfigError(f"--draft {spec.draft}: its vocabulary has {draft.vocab_size:,} tokens, "
                              f"{config.name}'s {config.vocab_size:,}; a draft must share the target's vocabulary")
        if draft.ssm is not None:
            raise ConfigError(f"--draft {spec.draft}: a draft with a recurrent (Mamba) state cannot roll back "
                              "rejected drafts")


def proposer_options(options: CompileOptions) -> CompileOptions:
    """The proposer's own plan: the target's shape (context, batch, formats), the fewest chips."""
    return replace(options, chips=None, max_chips=None, objective="chips")


def plan_proposer(config: ModelConfig, system: SystemSpec, options: CompileOptions, spec: Speculation) -> Proposer:
    popts = proposer_options(options)
    if spec.draft is not None:
        return Proposer("draft", spec.draft, make_plan_on(spec.draft, system, popts))
    graph = mtp_graph(config, popts, config.mtp_layers + 1)
    plan = plan_graphs(graph.name, Lowered(graph, graph), system, replace(popts, prompt=1, prefill_chunk=1))
    return Proposer("mtp", f"{config.name} MTP", plan, config.mtp_layers, config.vocab_size * config.hidden_size)


def mtp_graph(config: ModelConfig, options: CompileOptions, rows: int) -> Graph:
    """The MTP module's step over the `rows` rows of a verify step (K + 1)."""
    return graph_passes(options)(build_mtp_graph(config, context=options.context, batch=options.batch, rows=rows))


def verify_graph(config: ModelConfig, options: CompileOptions, steps: int, hidden: bool = False,
                 holds: SystemSpec | None = None) -> Graph:
    """The target's verify step for K = `steps` drafts: K + 1 rows per sequence against the cache (and,
    for an MTP proposer, every row's hidden state); `holds`: the target (build_graph's size check)."""
    return graph_passes(options)(build_graph(config, "verify", context=options.context, prompt=steps + 1,
                                             batch=options.batch, hidden=hidden, holds=holds))


def plan_verify(name: str, config: ModelConfig, graphs: Lowered, plan: Plan, system: SystemSpec,
                options: CompileOptions, steps: int, hidden: bool = False) -> Plan:
    """The verify step costed on the target plan's own stages (its chips hold the weights once)."""
    pinned = PlanFile("the target plan", name, system.name, asdict(options),
                      tuple(PinnedStage(s.first_unit, s.last_unit, s.tp, s.first_chip) for s in plan.stages))
    verify = verify_graph(config, options, steps, hidden, system)
    return plan_graphs(name, Lowered(verify, graphs.prefill), system, options, pinned)


def speculative_figures(name: str, config: ModelConfig, graphs: Lowered, plan: Plan, system: SystemSpec,
                        options: CompileOptions, spec: Speculation) -> dict:
    """The plan's `speculative` section: the K chosen (or given), and per K the step's time beside its
    bound and the expected tokens/s, beside plain decode."""
    check_speculation(config, options, spec)
    proposer = plan_proposer(config, system, options, spec)
    if proposer.depth is not None:
        candidates = [proposer.depth]
    else:
        candidates = list(range(1, MAX_SPECULATE + 1)) if spec.steps == "auto" else [spec.steps]
    handoff_us = 2 * _handoff_s(system) * 1e6
    wire_us = 2 * system.global_link.latency_s * 1e6  # the bound's share: one hop each way, no bytes
    rows = [_row(k, plan_verify(name, config, graphs, plan, system, options, k, spec.mtp), proposer,
                 (handoff_us, wire_us), spec) for k in candidates]
    best = max(rows, key=lambda r: (r["tokens_per_s"], -r["steps"]))
    d, p = plan.decode, proposer.plan.decode
    return {
        "proposer": proposer.kind, "proposer_model": proposer.name, "placement": "own chips",
        "sharing": _sharing(plan, proposer.plan),
        "steps": best["steps"], "chosen": "auto" if spec.steps == "auto" else "given", "acceptance": spec.acceptance,
        "target_chips": plan.chips, "proposer_chips": proposer.plan.chips, "chips": plan.chips + proposer.plan.chips,
        "proposer_step_us": p["latency_us"], "proposer_step_bound_us": p["latency_bound_us"],
        "proposer_params": _own_params(proposer), "proposer_weight_bytes": proposer.plan.totals["weight_bytes"],
        "params": plan.totals["params"] + _own_params(proposer), "handoff_us": round(handoff_us, 4),
        "plain": {"latency_us": d["latency_us"], "latency_bound_us": d["latency_bound_us"],
                  "tokens_per_s": d["tokens_per_s"], "tokens_per_s_bound": round(1e6 / d["latency_bound_us"], 1)},
        **{k: v for k, v in best.items() if k != "steps"},
        "speedup": round(best["tokens_per_s"] / d["tokens_per_s"], 3),
        "candidates": rows,
    }


def _sharing(target: Plan, proposer: Plan) -> dict:
    """Whether the target's stages could hold the proposer instead: its resident bytes (weights and
    caches, on its own chips' layout) against the SRAM the target's chips leave free. Builds place the
    proposer on chips of its own either way (co-located Programs are not built yet)."""
    need = sum(s.memory.weights + s.memory.kv_cache + s.memory.activations for s in proposer.stages
               for _ in range(s.tp))
    free = sum(max(0, s.memory.headroom) * s.tp for s in target.stages)
    return {"fits": need <= free, "proposer_bytes": need, "target_free_bytes": free}


def _row(k: int, verify: Plan, proposer: Proposer, handoff: tuple[float, float], spec: Speculation) -> dict:
    """One K: a draft's K steps, then the verify step (the draft's extra step alongside it); or the verify
    step, then the MTP module over its rows (it proposes from the verify step's hidden states); and the
    token ids' two hand-offs (`handoff`: their time, and the wire latency the bound keeps of it)."""
    handoff_us, wire_us = handoff
    draft_us, draft_bound = proposer.plan.decode["latency_us"], proposer.plan.decode["latency_bound_us"]
    verify_us, verify_bound = verify.decode["latency_us"], verify.decode["latency_bound_us"]
    if proposer.kind == "mtp":
        step_us, bound_us = verify_us + draft_us + handoff_us, verify_bound + draft_bound + wire_us
    else:
        step_us = k * draft_us + max(verify_us, draft_us) + handoff_us
        bound_us = k * draft_bound + max(verify_bound, draft_bound) + wire_us
    tokens = spec.expected_tokens(k)
    return {"steps": k, "verify_us": verify_us, "verify_bound_us": verify_bound, "step_us": round(step_us, 4),
            "step_bound_us": round(bound_us, 4), "expected_tokens_per_step": round(tokens, 4),
            "tokens_per_s": round(tokens / step_us * 1e6, 1), "tokens_per_s_bound": round(tokens / bound_us * 1e6, 1)}


def _handoff_s(system: SystemSpec) -> float:
    """One way between the proposer's chips and the target's: the token ids over one global link."""
    link = system.global_link
    return link.latency_s + HANDOFF_BYTES / link.bw_bytes_per_s


def with_speculation(plan: Plan, figures: dict) -> Plan:
    return replace(plan, extra=plan.extra | {"speculative": figures})


def _own_params(proposer: Proposer) -> int:
    """The proposer's parameters; the MTP module shares the model's embedding (its chips hold a copy)."""
    return proposer.plan.totals["params"] - proposer.shared_params


def make_speculative_plan(model: str, target: str, options: CompileOptions, spec: Speculation) -> Plan:
    """`plan MODEL --draft D | --mtp`: the target's plan with its `speculative` section."""
    system = load_target(target)
    config = load_model_config(model)
    check_speculation(config, options, spec)
    name, graphs = lower(model, options, system)
    plan = plan_graphs(name, graphs, system, options)
    return with_speculation(plan, speculative_figures(name, config, graphs, plan, system, options, spec))


def render_speculative(plan: Plan, console) -> None:
    """The speculative section of `sramflow plan`: K, chips, the step's time, tokens/s beside plain decode."""
    from rich.table import Table

    s = plan.extra["speculative"]
    clock = load_target(plan.target).chip.clock_hz
    what = f"draft {s['proposer_model']}" if s["proposer"] == "draft" else f"MTP module of {plan.model}"
    share = s["sharing"]
    console.print(f"sharing the target's stages: the proposer needs {share['proposer_bytes'] / 1e6:,.1f} MB, the "
                  f"target's chips leave {share['target_free_bytes'] / 1e6:,.1f} MB free"
                  f"{'' if share['fits'] else ': it does not fit'}; placed on chips of its own", soft_wrap=True)
    console.print(f"speculative decoding: {what} on {s['proposer_chips']:,} chips of its own "
                  f"({_count(s['proposer_params'])} parameters), target {s['target_chips']:,} chips: "
                  f"{s['chips']:,} in all; K = {s['steps']} ({s['chosen']}), acceptance {s['acceptance']:g}",
                  soft_wrap=True)
    table = Table(header_style="bold", box=None)
    for col in ("K", "step µs", "cycles", "bound µs", "verify µs", "tokens/step", "tokens/s", "bound tokens/s"):
        table.add_column(col, justify="right")
    for r in s["candidates"]:
        mark = " *" if r["steps"] == s["steps"] else ""
        table.add_row(f"{r['steps']}{mark}", f"{r['step_us']:,.2f}", f"{round(r['step_us'] * clock / 1e6):,}",
                      f"{r['step_bound_us']:,.2f}", f"{r['verify_us']:,.2f}", f"{r['expected_tokens_per_step']:.3f}",
                      f"{r['tokens_per_s']:,.0f}", f"{r['tokens_per_s_bound']:,.0f}")
    console.print(table)
    p = s["plain"]
    console.print(f"proposer step {s['proposer_step_us']:,.2f} µs (bound {s['proposer_step_bound_us']:,.2f}), "
                  f"hand-offs {s['handoff_us']:,.2f} µs a step; plain decode {p['tokens_per_s']:,.0f} tokens/s "
                  f"(bound {p['tokens_per_s_bound']:,.0f}); speculative {s['tokens_per_s']:,.0f} tokens/s "
                  f"(bound {s['tokens_per_s_bound']:,.0f}): x{s['speedup']:.2f}", soft_wrap=True)
    if s["speedup"] < 1:
        console.print(f"at acceptance {s['acceptance']:g} speculation loses to plain decode: no K's expected tokens "
                      "pay for its proposer and verify steps", soft_wrap=True)


def _count(n: int) -> str:
    return f"{n / 1e9:,.2f}B" if n >= 1e9 else f"{n / 1e6:,.2f}M"
