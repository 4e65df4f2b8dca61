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
from ir.errors import ConfigError, DoesNotFitError
from ir.graph import Graph
from targets import load_target
from targets.spec import SystemSpec

HANDOFF_BYTES = 4 * (MAX_SPECULATE + 1)  # token ids a step sends each way (at most K + 1 of them)
OWN, SHARED, NO_SPECULATION = "own chips", "target's stages", "none"
PLACEMENT_RULE = "more tokens/s per chip; on a tie, fewer chips"


@dataclass(frozen=True, slots=True)
class Proposer:
    """What proposes: its name, its plan (on chips of its own, or on the target's) and the steps it may take."""

    kind: str  # "draft" or "mtp"
    name: str
    plan: Plan
    depth: int | None = None  # MTP: the module's prediction depth (its K)
    shared_params: int = 0  # parameters the proposer shares with the target (MTP: the embedding table)
    placement: str = OWN


def check_speculation(config: ModelConfig, system: SystemSpec, options: CompileOptions, spec: Speculation) -> None:
    """What a proposer needs of the model, the machine and the cache's placement, refused in one line."""
    if system.is_mesh:
        raise ConfigError(f"--draft/--mtp: speculative decoding is built for chip targets; {system.name} is a wafer "
                          "(its plans place regions of cores, which the verify step's and a proposer's plans do not "
                          "pin yet)")
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
        # a draft keeps its embedding on its first stage: speculative runs were not checked with it on the head's
        return Proposer("draft", spec.draft, make_plan_on(spec.draft, system, popts, embeddings=False))
    graph = mtp_graph(config, popts, config.mtp_layers + 1, system)
    plan = plan_graphs(graph.name, Lowered(graph, graph), system, replace(popts, prompt=1, prefill_chunk=1))
    return Proposer("mtp", f"{config.name} MTP", plan, config.mtp_layers, config.vocab_size * config.hidden_size)


def free_per_chip(target: Plan) -> int:
    """SRAM every chip of the target leaves free (its fullest chip's headroom): what a shared draft may
    take on any chip it lands on."""
    return max(0, min(s.memory.headroom for s in target.stages))


def sharing_system(system: SystemSpec, free_bytes: int) -> SystemSpec:
    """The target's chips as a draft on its stages sees them: only `free_bytes` of SRAM each (the
    draft's layout starts above the target's, compiler.build)."""
    chip = system.chip
    return replace(system, chip=replace(chip, program_reserve_bytes=chip.sram_bytes - free_bytes))


def sharing_options(options: CompileOptions, target_chips: int) -> CompileOptions:
    """A shared draft's plan: the fewest chips, at most the target's (its chip i is the target's chip i)."""
    return replace(proposer_options(options), max_chips=target_chips)


def plan_shared(target: Plan, system: SystemSpec, options: CompileOptions, spec: Speculation
                ) -> tuple[Proposer | None, str]:
    """The draft planned on the target's first chips, in the SRAM they leave free; or None and why not."""
    if spec.draft is None:
        return None, "the MTP module is built on chips of its own (only a --draft shares the target's stages)"
    free = free_per_chip(target)
    if free == 0:
        return None, "the target's fullest chip leaves no SRAM free"
    try:
        plan = make_plan_on(spec.draft, sharing_system(system, free), sharing_options(options, target.chips),
                            embeddings=False)
    except DoesNotFitError:
        chips = f"{target.chips:,} chips"
        return None, f"the draft does not fit in the {_bytes(free)} each of the target's {chips} leaves free"
    return Proposer("draft", spec.draft, plan, placement=SHARED), ""


def mtp_graph(config: ModelConfig, options: CompileOptions, rows: int, system: SystemSpec | None = None) -> Graph:
    """The MTP module's step over the `rows` rows of a verify step (K + 1), for `system`."""
    graph = build_mtp_graph(config, context=options.context, batch=options.batch, rows=rows)
    return graph_passes(options, system)(graph)


def verify_graph(config: ModelConfig, options: CompileOptions, steps: int, hidden: bool = False,
                 holds: SystemSpec | None = None) -> Graph:
    """The target's verify step for K = `steps` drafts: K + 1 rows per sequence against the cache (and,
    for an MTP proposer, every row's hidden state); `holds`: the target (build_graph's size check)."""
    return graph_passes(options, holds)(build_graph(config, "verify", context=options.context, prompt=steps + 1,
                                             batch=options.batch, hidden=hidden, holds=holds))


def plan_verify(name: str, config: ModelConfig, graphs: Lowered, plan: Plan, system: SystemSpec,
                options: CompileOptions, steps: int, hidden: bool = False) -> Plan:
    """The verify step costed on the target plan's own stages (its chips hold the weights once)."""
    pinned = PlanFile("the target plan", name, system.name, asdict(options),
                      tuple(PinnedStage(s.first_unit, s.last_unit, s.tp, s.first_chip,
                                        split=None if s.kv_layout is None else s.split) for s in plan.stages))
    verify = verify_graph(config, options, steps, hidden, system)
    return plan_graphs(name, Lowered(verify, graphs.prefill), system, options, pinned)


def speculative_figures(name: str, config: ModelConfig, graphs: Lowered, plan: Plan, system: SystemSpec,
                        options: CompileOptions, spec: Speculation) -> dict:
    """The plan's `speculative` section: the placement and K chosen (or given; K = 0 when auto finds no
    K faster than plain decode), per K the step's time beside its bound and the expected tokens/s,
    beside plain decode."""
    check_speculation(config, system, options, spec)
    proposers, why, fits = _proposers(config, plan, system, options, spec)
    if proposers[0].depth is not None:
        candidates = [proposers[0].depth]
    else:
        candidates = list(range(1, MAX_SPECULATE + 1)) if spec.steps == "auto" else [spec.steps]
    handoff_us = 2 * _handoff_s(system) * 1e6
    wire_us = 2 * system.global_link.latency_s * 1e6  # the bound's share: one hop each way, no bytes
    verifies = {k: plan_verify(name, config, graphs, plan, system, options, k, spec.mtp) for k in candidates}
    per = [(p, [_row(k, verifies[k], p, (handoff_us, wire_us), spec) for k in candidates]) for p in proposers]
    d = plan.decode
    proposer, rows = _choose(per, plan.chips, d["tokens_per_s"] if spec.steps == "auto" else 0.0)
    best = _best(rows)
    p = proposer.plan.decode
    none = spec.steps == "auto" and best["tokens_per_s"] <= d["tokens_per_s"]
    chosen = _plain_row(d) if none else best
    proposer_chips = 0 if none else proposer.plan.chips
    return {
        "proposer": proposer.kind, "proposer_model": proposer.name,
        "placement": NO_SPECULATION if none else proposer.placement, "placement_rule": PLACEMENT_RULE,
        "placement_why": why, "placements": [_placement(q, r, plan.chips) for q, r in per],
        "sharing": _sharing(plan, proposers[0].plan, fits),
        "steps": chosen["steps"], "chosen": "auto" if spec.steps == "auto" else "given",
        "acceptance": spec.acceptance,
        "no_speculation": _no_speculation(best, d, spec) if none else None,
        "target_chips": plan.chips, "proposer_chips": proposer_chips,
        "chips": plan.chips + (proposer_chips if proposer.placement == OWN else 0),
        "proposer_step_us": p["latency_us"], "proposer_step_bound_us": p["latency_bound_us"],
        "proposer_params": _own_params(proposer), "proposer_weight_bytes": proposer.plan.totals["weight_bytes"],
        "params": plan.totals["params"] + (0 if none else _own_params(proposer)), "handoff_us": round(handoff_us, 4),
        "plain": {"latency_us": d["latency_us"], "latency_bound_us": d["latency_bound_us"],
                  "tokens_per_s": d["tokens_per_s"], "tokens_per_s_bound": round(1e6 / d["latency_bound_us"], 1)},
        **{k: v for k, v in chosen.items() if k != "steps"},
        "speedup": round(chosen["tokens_per_s"] / d["tokens_per_s"], 3),
        "candidates": rows,
    }


def _proposers(config: ModelConfig, plan: Plan, system: SystemSpec, options: CompileOptions, spec: Speculation
               ) -> tuple[list[Proposer], str, bool]:
    """The placements to weigh (`--draft-placement`: both, or the one asked for), one line on why, and
    whether the target's stages can hold the draft."""
    shared, why = plan_shared(plan, system, options, spec)
    if spec.placement == "shared":
        if shared is None:
            raise ConfigError(f"--draft-placement shared: {why}")
        return [shared], "--draft-placement shared", True
    own = plan_proposer(config, system, options, spec)
    if spec.placement == "own":
        return [own], "--draft-placement own", shared is not None
    if shared is None:
        return [own], f"not on the target's stages: {why}", False
    return [own, shared], f"both weighed: {PLACEMENT_RULE}", True


def _best(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: (r["tokens_per_s"], -r["steps"]))


def _chips(proposer: Proposer, target_chips: int) -> int:
    return target_chips + (proposer.plan.chips if proposer.placement == OWN else 0)


def _choose(per: list[tuple[Proposer, list[dict]]], target_chips: int, plain_tokens_per_s: float
            ) -> tuple[Proposer, list[dict]]:
    """The placement by PLACEMENT_RULE among those whose best K beats plain decode (all of them, when
    none does: the K = 0 answer then reports the best of those)."""
    faster = [(q, r) for q, r in per if _best(r)["tokens_per_s"] > plain_tokens_per_s] or per
    return max(faster, key=lambda qr: (_best(qr[1])["tokens_per_s"] / _chips(qr[0], target_chips),
                                       -_chips(qr[0], target_chips)))


def _placement(proposer: Proposer, rows: list[dict], target_chips: int) -> dict:
    best, chips = _best(rows), _chips(proposer, target_chips)
    return {"placement": proposer.placement, "chips": chips, "proposer_chips": proposer.plan.chips,
            "steps": best["steps"], "step_us": best["step_us"], "tokens_per_s": best["tokens_per_s"],
            "tokens_per_s_per_chip": round(best["tokens_per_s"] / chips, 1)}


def _plain_row(decode: dict) -> dict:
    """K = 0: no proposer, every step a plain decode step of one token."""
    return {"steps": 0, "verify_us": None, "verify_bound_us": None, "step_us": decode["latency_us"],
            "step_bound_us": decode["latency_bound_us"], "expected_tokens_per_step": 1.0,
            "tokens_per_s": decode["tokens_per_s"], "tokens_per_s_bound": round(1e6 / decode["latency_bound_us"], 1)}


def _no_speculation(best: dict, decode: dict, spec: Speculation) -> str:
    return (f"no speculation (K = 0): at acceptance {spec.acceptance:g} no K beats plain decode's "
            f"{decode['tokens_per_s']:,.0f} tokens/s (the best, K = {best['steps']}, gives "
            f"{best['tokens_per_s']:,.0f}); a compile builds plain decode")


def _sharing(target: Plan, proposer: Plan, fits: bool) -> dict:
    """The target's spare SRAM beside the proposer's resident bytes (weights, caches and activations),
    and whether a plan on the target's stages exists."""
    need = sum(s.memory.weights + s.memory.kv_cache + s.memory.activations for s in proposer.stages
               for _ in range(s.tp))
    free = sum(max(0, s.memory.headroom) * s.tp for s in target.stages)
    return {"fits": fits, "proposer_bytes": need, "target_free_bytes": free,
            "free_bytes_per_chip": free_per_chip(target)}


def _row(k: int, verify: Plan, proposer: Proposer, handoff: tuple[float, float], spec: Speculation) -> dict:
    """One K: a draft's K steps, then the verify step (the draft's extra step alongside it on chips of
    its own, after it on the target's); or the verify step, then the MTP module over its rows (it
    proposes from the verify step's hidden states); and the token ids' two hand-offs (`handoff`: their
    time, and the wire latency the bound keeps of it)."""
    handoff_us, wire_us = handoff
    draft_us, draft_bound = proposer.plan.decode["latency_us"], proposer.plan.decode["latency_bound_us"]
    verify_us, verify_bound = verify.decode["latency_us"], verify.decode["latency_bound_us"]
    if proposer.kind == "mtp":
        step_us, bound_us = verify_us + draft_us + handoff_us, verify_bound + draft_bound + wire_us
    elif proposer.placement == SHARED:  # one set of chips: the draft's steps and the verify step in turn
        step_us = (k + 1) * draft_us + verify_us + handoff_us
        bound_us = (k + 1) * draft_bound + verify_bound + wire_us
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
    check_speculation(config, system, options, spec)
    name, graphs = lower(model, options, system)
    plan = plan_graphs(name, graphs, system, options)
    return with_speculation(plan, speculative_figures(name, config, graphs, plan, system, options, spec))


def render_speculative(plan: Plan, console) -> None:
    """The speculative section of `sramflow plan`: placement, K, chips, the step's time, tokens/s beside
    plain decode."""
    from rich.table import Table

    s = plan.extra["speculative"]
    clock = load_target(plan.target).chip.clock_hz
    console.print(_placement_line(s), soft_wrap=True)
    what = f"draft {s['proposer_model']}" if s["proposer"] == "draft" else f"MTP module of {plan.model}"
    where = {OWN: "chips of its own", SHARED: "of the target's chips"}.get(s["placement"])
    on = f"on {s['proposer_chips']:,} {where}" if where else "not built"
    console.print(f"speculative decoding: {what} {on} "
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
    if s["no_speculation"]:
        console.print(f"auto: {s['no_speculation']}", soft_wrap=True)
    elif s["speedup"] < 1:
        console.print(f"at acceptance {s['acceptance']:g} speculation loses to plain decode: no K's expected tokens "
                      "pay for its proposer and verify steps", soft_wrap=True)


def _placement_line(s: dict) -> str:
    """One line: where the proposer goes and why (the rule's two figures, or why sharing is out)."""
    share = s["sharing"]
    room = "" if not share["fits"] else (f"; the target's chips leave {_bytes(share['free_bytes_per_chip'])} each "
                                         f"free, the proposer needs {_bytes(share['proposer_bytes'])}")
    figures = "; ".join(f"{q['placement']}: {q['tokens_per_s']:,.0f} tokens/s on {q['chips']:,} chips"
                        f"{_draft_on(q)}, {_rate(q['tokens_per_s_per_chip'])} per chip" for q in s["placements"])
    chosen = "none (no speculation; weighed " if s["placement"] == NO_SPECULATION else f"{s['placement']} ("
    return f"placement: {chosen}{figures}; {s['placement_why']}{room})"


def _draft_on(q: dict) -> str:
    return f" (the draft on {q['proposer_chips']:,} of them)" if q["placement"] == SHARED else ""


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def _bytes(n: int) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e9 else f"{n / 1e6:,.2f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} KB"


def _count(n: int) -> str:
    return f"{n / 1e9:,.2f}B" if n >= 1e9 else f"{n / 1e6:,.2f}M"
