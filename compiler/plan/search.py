"""The search every backend shares: candidates to a path of stages (exact DP bounds, then CP-SAT; under
--objective chips on a backend whose placement aligns stages, an exact DP over where each stage ends, so
the plan spans the fewest devices), the prefill chunk, and the Plan.

A backend (compiler/backends) describes its machine as a `Layout`: the units a path must cover,
candidate stages (a chip backend's run of units on t chips; a wafer backend's run of units on one
wafer, cut into regions), how to place a chosen path, whether a prefill chunk fits a placed stage,
and how long each placed stage takes. Everything else is here, once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from compiler.frontend.options import MIN_PREFILL_CHUNK, CompileOptions
from compiler.partition import dp
from compiler.partition.candidates import Candidate
from compiler.partition.cost import Breakdown
from compiler.partition.cpsat import Solution, solve
from compiler.plan.figures import decode_figures, prefill_figures
from compiler.plan.reach import chunk_variants, pipelined, variants
from compiler.plan.reader import PlanFile
from compiler.plan.records import Memory, Plan, Stage, round_sig
from ir.errors import ConfigError, DoesNotFitError
from targets.spec import SystemSpec

# Under --objective chips, stages that split caches by sequence (or latent down projections by column)
# only to fit fewer chips are taken when the plan then needs more than this fraction fewer chips than
# with every such stage whole: a split's gathers make larger programs and slower prefill, worth it for
# the memory a long context frees (70B int8 at 128K: 651 -> 523 chips) and not for a few chips
# (70B int8 at 4K: 331 -> 328, on 64-chip stages four times the instructions).
SEQUENCE_SAVING = 0.02

# Under --objective chips, among the layouts of the fewest chips spanned, those whose decode latency is within
# this fraction of the fastest are taken as equal for decode, and the shortest time to first token among
# them is chosen (then the faster decode). A request waits for its first token once and for every other at
# the decode latency, so a layout 5% slower to decode is worth a first token several times sooner (70B
# int8: 1,223 -> 1,265 us, 13.9 -> 7.1 ms), and not one a few percent sooner.
DECODE_SLACK = 0.05

# Under --objective chips, a layout whose small stages fill earlier nodes' free tails (dp.Packing) is taken
# over the fewest-spanning layout in order only where its decode latency is within this fraction of that
# layout's, or where no layout in order fits --max-chips: packing trades a stage's chips for its speed, a
# fair trade for llama-2-70b's head and embedding (651 -> 648 chips, 1,526 -> 1,528 us), not for DeepSeek-V3's
# attention on 2 chips a layer (6,528 -> 6,184 chips at 2,033 -> 3,412 us; --max-chips 6184 asks for it).
PACKED_SLACK = DECODE_SLACK

# Likewise a layout with subset stages (a layer's attention on some of a stage's chips, its MLP on all:
# backends.chips.subsets) is taken only where it decodes within this fraction of the fewest-spanning layout
# without them, or where none without them fits --max-chips: 405B fp16's 4,080 -> 3,704 chips decode faster
# (3,148 -> 2,620 us), 405B int8's 2,048 -> 1,904 slower (2,050 -> 2,394 us; --max-chips 1904 asks for it).
SUBSET_SLACK = DECODE_SLACK


@dataclass(frozen=True, slots=True)
class Timed:
    """A placed stage with the unrounded figures the totals are summed from."""

    stage: Stage
    decode: Breakdown
    decode_bound_s: float
    prefill: Breakdown
    prefill_bound_s: float
    prefill_trailing_s: float = 0.0  # of prefill, a trailing hand-off in on the wires alone (reach.pipelined)
    prefill_bound_trailing_s: float = 0.0  # of prefill_bound_s, likewise
    prefill_hold_s: float = 0.0  # a hand-off in that does not trail: how long it holds the stage before
    # A chunk's work the stage runs for every chunk before its first (the embedding on the head's chips:
    # reach.pipelined's early_s), and its bound.
    prefill_early_s: float = 0.0
    prefill_early_bound_s: float = 0.0

    @classmethod
    def of(cls, index: int, scopes: list[str], placement, memory: Memory, decode: Breakdown, bound_s: float,
           prefill: Breakdown, prefill_bound_s: float, hops: int, trailing: tuple[float, float] = (0.0, 0.0),
           hold_s: float = 0.0, early: tuple[float, float] = (0.0, 0.0), **more) -> Timed:
        """Any backend's stage of units `scopes` on `placement` (a ChipRange or a Region); `trailing`: the
        trailing parts of prefill and its bound; `hold_s`: prefill_hold_s; `early`: prefill_early_s and its
        bound; `more`: the backend's own Stage fields."""
        stage = Stage(index, scopes[0], scopes[-1], layers_of(scopes), placement, memory, decode.total_s * 1e6,
                      bound_s * 1e6, prefill.total_s * 1e6, hops, decode.binding, **more)
        return cls(stage, decode, bound_s, prefill, prefill_bound_s, *trailing, hold_s, *early)


def layers_of(scopes: list[str]) -> tuple[int, int] | None:
    """The inclusive range of decoder layers among `scopes`, if any."""
    numbers = [int(s.split(".")[1]) for s in scopes if s.startswith("layers.")]
    return (numbers[0], numbers[-1]) if numbers else None


class Layout(Protocol):
    """What a backend tells the search about one model on one machine (a backend's layout subclasses it
    for the defaults)."""

    system: SystemSpec
    device: str  # "chip" or "wafer": what the path model counts
    max_devices: int
    units: int  # units the path covers, in model order
    candidates: list[Candidate]
    lower_bound: int  # capacity bound, in devices

    def unplaceable(self, unit: int) -> str:
        """Why no candidate holds unit `unit` (a one-line error)."""

    def place(self, path: Sequence[Candidate], options: CompileOptions) -> list[Any]:
        """The chosen path's stages on the machine, in order (backend records)."""

    def pin(self, plan: PlanFile) -> tuple[list[Candidate], list[Any]]:
        """A plan file's stages as a path and its placed stages (ConfigError naming the stage that the
        machine cannot hold as given)."""

    def fits(self, run: Any, chunk: int) -> bool:
        """Whether a prefill chunk of `chunk` tokens a sequence fits beside the placed stage's residents."""

    def time(self, index: int, run: Any, runs: list[Any], chunk: int, reach: int | None = None) -> Timed:
        """A placed stage's figures for decode and for one prefill chunk whose attention reads `reach`
        cache positions a sequence (None: the whole cache)."""

    @property
    def machine(self) -> str:
        """The target's name, for messages."""
        return self.system.name

    def memory(self, timed: list[Timed]) -> Memory:
        """The fullest device the plan reports: the fullest stage's, unless the device holds several."""
        return fullest(t.stage.memory for t in timed)

    def extra(self, path: Sequence[Candidate], timed: list[Timed]) -> dict:
        """The backend's own JSON keys (none unless it has some)."""
        return {}

    def footprint(self, timed: list[Timed]) -> int:
        """Devices the placed stages span."""

    # The first device a stage of tp devices may take at or after a cursor, when the placement keeps such
    # rules (a chip backend's nodes and groups): then --objective chips minimises the devices the stages
    # span, not only those with work. None: the devices counted are the devices spanned.
    stage_start: Callable[[int, int], int] | None = None
    # An earlier first device for such a stage that lies across two groups (None: none), the stage then
    # slower by its candidate's straddle_ps; None: stages never straddle groups to span fewer devices.
    straddle_start: Callable[[int, int], int | None] | None = None
    # With stage_start: how stages narrower than a node may fill a node's free tail out of pipeline order
    # (dp.Packing), taken where that spans fewer devices than every layout in order; None: never.
    pack: dp.Packing | None = None

    def soonest_start(self, cursor: int, tp: int) -> int:
        """With stage_start: the first device a stage of `tp` may take at or after the cursor, across two
        groups where that is sooner (the start dp.footprint_states takes when it ends a path soonest)."""
        start = self.stage_start(cursor, tp)
        across = self.straddle_start(cursor, tp) if self.straddle_start else None
        return start if across is None else min(start, across)

    def in_order(self, path: Sequence[Candidate]) -> list[Any]:
        """With stage_start: the path's stages laid out in order, each at the first device it may take."""
        raise NotImplementedError(f"{self.machine}: stages are not laid out by a rule")

    def at(self, path: Sequence[Candidate], starts: Sequence[int]) -> list[Any]:
        """With pack: the path's stages at the first devices the DP gave them (a packed layout)."""
        raise NotImplementedError(f"{self.machine}: stages are not packed")

    def prefill_s(self, index: int, run: Any, runs: list[Any], chunk: int, reach: int | None
                  ) -> tuple[float, float, float, float]:
        """`time(...)`'s prefill.total_s, prefill_trailing_s, prefill_hold_s and prefill_early_s, which a
        backend may compute without the rest of the stage's figures."""
        t = self.time(index, run, runs, chunk, reach)
        return t.prefill.total_s, t.prefill_trailing_s, t.prefill_hold_s, t.prefill_early_s

    def chunk_s(self, cand: Candidate, chunk: int, reach: int | None) -> float:
        """With stage_start: a candidate stage's seconds for one prefill chunk reading `reach` positions."""
        raise NotImplementedError(f"{self.machine}: candidates carry no prefill time")


def plan_from_layout(name: str, target: str, options: CompileOptions, layout: Layout, totals: dict,
                     pinned: PlanFile | None = None, causal: bool = False) -> Plan:
    """The plan the search chooses, or with `pinned` the layout a plan file gives, costed afresh.
    `causal`: the backend lowers each prefill chunk to read only the cache it can see (plan.reach);
    otherwise every chunk streams the whole cache."""
    if pinned is None:
        solution = choose(layout, options, causal)
        runs = (layout.at(solution.stages, solution.starts) if solution.starts
                else layout.place(solution.stages, options))
    else:
        path, runs = layout.pin(pinned)
        solution = Solution(tuple(path), "PINNED", 0.0, 0.0, len(layout.candidates))
    chunk, by_variant, reaches, largest = prefill_of(layout, runs, options, causal)
    timed = by_variant[-1]  # the stages as their last (widest-reaching) chunks run
    stages = tuple(t.stage for t in timed)
    prefill = prefill_figures(by_variant, reaches, chunk) | {"largest_chunk_tokens": largest}
    return Plan(
        model=name, target=target, options=asdict(options), chips=sum(c.tp for c in solution.stages),
        chips_lower_bound=layout.lower_bound, footprint_chips=layout.footprint(timed), stages=stages,
        memory=layout.memory(timed), decode=decode_figures(timed, options),
        prefill=prefill, binding=_binding(timed, options, prefill["binding"]),
        solver={"status": solution.status, "objective": options.objective, "candidates": solution.candidates,
                "wall_s": round(solution.deterministic_s, 3)} | ({"front": list(solution.front)} if solution.front
                                                                 else {}),
        totals=totals, device=layout.device, extra=layout.extra(solution.stages, timed))


def prefill_of(layout: Layout, runs: list[Any], options: CompileOptions, causal: bool
               ) -> tuple[int, list[list[Timed]], list, int]:
    """Placed stages' prefill: the chunk that minimises TTFT (fastest_ttft's, from the stages' prefill times
    alone, which time()'s figures equal), the stages timed at each of its variants' reaches, the variants, and
    the largest chunk every stage has room for."""
    chunk, _, largest = _chunk_search(layout, runs, options, causal, layout.prefill_s, tuple)
    by_variant, reaches = _variant_rows(layout, runs, options, causal, layout.time, chunk)
    return chunk, by_variant, reaches, largest


def fastest_ttft(layout: Layout, runs: list[Any], options: CompileOptions, causal: bool) -> tuple[int, float]:
    """prefill_of's chunk and TTFT in seconds, from the stages' prefill times alone (Layout.prefill_s)."""
    chunk, (seconds, reaches), _ = _chunk_search(layout, runs, options, causal, layout.prefill_s, tuple)
    return chunk, _pipelined(seconds, reaches)


def _pipelined(rows: list[list[tuple[float, float, float, float]]], reaches: list) -> float:
    """reach.pipelined over (time, trailing part, hold, early part) of each stage of each variant."""
    return pipelined([[t for t, _, _, _ in row] for row in rows], chunk_variants(reaches),
                     [[w for _, w, _, _ in row] for row in rows], [[h for _, _, h, _ in row] for row in rows],
                     [row[-1][3] for row in rows])


def _chunk_search(layout: Layout, runs: list[Any], options: CompileOptions, causal: bool,
                  stage: Callable[..., Any], seconds: Callable[[Any], tuple[float, float, float, float]]
                  ) -> tuple[int, tuple[list, list], int]:
    """fastest_chunk over the chunks every stage has room for, each stage of each of a chunk's variants
    `stage(index, run, runs, chunk, reach)` and its `seconds` (its time and that time's trailing part)
    through the pipeline (figures.ttft_s): the chunk, (the stages by variant, the variants) at it, and the
    largest chunk."""
    largest = prefill_chunk(options, lambda c: all(layout.fits(run, c) for run in runs))

    def at_chunk(c: int) -> tuple[float, tuple[list, list]]:
        rows, reaches = _variant_rows(layout, runs, options, causal, stage, c)
        return _pipelined([[seconds(x) for x in row] for row in rows], reaches), (rows, reaches)

    chunk, found = fastest_chunk(options, largest, at_chunk)
    return chunk, found, largest


def _variant_rows(layout: Layout, runs: list[Any], options: CompileOptions, causal: bool,
                  stage: Callable[..., Any], chunk: int) -> tuple[list[list], list]:
    """`stage(index, run, runs, chunk, reach)` of each stage at each of the chunk's variants, and the variants."""
    reaches = variants(options.prompt, chunk, max(options.context, options.prompt), causal)
    return [[stage(i, run, runs, chunk, v.reach if causal else None) for i, run in enumerate(runs)]
            for v in reaches], reaches


def choose(layout: Layout, options: CompileOptions, causal: bool = True) -> Solution:
    """The fewest-devices path bounds the search (dp.prune is exact), then CP-SAT picks the path by
    the objective; DoesNotFitError says how many devices would do."""
    devices = f"{layout.device}s"
    if options.chips and options.chips > layout.max_devices:
        raise ConfigError(f"--chips {options.chips}: the target joins at most {layout.max_devices} {devices}")
    cands, units = layout.candidates, layout.units
    fewest = dp.fewest_chips(cands, units)
    if fewest is None:
        covered = {u for c in cands for u in range(c.first, c.stop)}
        raise DoesNotFitError(layout.unplaceable(next((u for u in range(units) if u not in covered), 0)), None)
    needed = sum(c.tp for c in fewest)
    budget = options.chips or options.max_chips or layout.max_devices
    if needed > budget:
        raise DoesNotFitError(f"the model needs at least {needed} {devices} of {layout.machine} (capacity bound "
                              f"{layout.lower_bound}); {budget} allowed", needed)
    exact = options.chips is not None
    if not exact and options.objective == "chips":
        cands, fewest = _split_where_it_pays(cands, units, fewest, budget)
        needed = sum(c.tp for c in fewest)
    # The fewest-devices path is feasible, so its figures bound the search, except when the count is
    # pinned: a path of exactly --chips devices may be slower.
    slowest = 2**62 if exact else sum(c.latency_ps for c in fewest)
    limit = needed if options.objective == "chips" and not exact else budget
    if layout.stage_start is not None and not exact and options.objective == "chips":
        solution = _fewest_spanned(layout, cands, fewest, options, causal)
        if solution is not None and any(c.attention_tp for c in solution.stages):
            solution = _subsets_where_they_pay(layout, cands, solution, options, causal)
        if solution is not None:
            return solution
    usable = dp.prune(cands, units, limit, slowest)
    solution = solve(usable, units, options.objective, options.chips, budget, options.solver_seed,
                     options.solver_deterministic_time, None if exact else fewest)
    if solution is None:
        raise DoesNotFitError(f"no layout uses exactly {options.chips} {devices}; {needed} is the fewest that fit "
                              "and stage sizes must divide the work", needed)
    return solution


def _fewest_spanned(layout: Layout, cands: list[Candidate], fewest: list[Candidate], options: CompileOptions,
                    causal: bool) -> Solution | None:
    """The path whose stages, laid out in order by the layout's rules, span the fewest devices within the
    budget (a user owns every device the plan spans, idle or not), then by what a request costs
    (_by_request over dp.footprint_front, exact in span, decode and the slowest stage's prefill chunk);
    None when every layout by those rules runs past the machine (then the fewest-devices path is placed as
    placement.greedy allows, stages straddling groups if it must). Where small stages packed into nodes'
    free tails span fewer (_packed_span), the layouts of that span instead where they decode about as fast
    or no layout in order fits (PACKED_SLACK). A --max-chips no layout by those
    rules fits, packed or not, is refused, naming the fewest devices one spans."""
    start = time.perf_counter()
    cap = min(options.max_chips or layout.max_devices, layout.max_devices)
    limit = min(_span(fewest, layout), cap)
    usable = dp.prune(cands, layout.units, limit, 2**62)  # a path spans at least the devices it uses
    chunk = options.min_chunk_rows // options.batch  # the chunk every stage has room for
    reach = variants(options.prompt, chunk, max(options.context, options.prompt), causal)[-1].reach if causal else None

    def chunk_s(c: Candidate) -> float:
        return layout.chunk_s(c, chunk, reach)

    front = dp.footprint_front(usable, layout.units, layout.stage_start, limit, chunk_s, layout.straddle_start)
    packed = _packed_span(layout, usable, limit, front[0].end if front else limit + 1)
    if not front and packed is None:
        if options.max_chips is None:
            return None
        ends = dp.footprint_states(cands, layout.units, layout.stage_start, layout.max_devices,
                                   layout.straddle_start, layout.pack)
        spans = f"{min(ends)}" if ends else f"more than {layout.max_devices}"
        raise DoesNotFitError(f"--max-chips {options.max_chips}: every layout of the model spans at least {spans} "
                              f"{layout.device}s of {layout.machine} (stages of a node or more start on whole "
                              "nodes)", min(ends) if ends else None)
    rows = [_request_figures(layout, p, options, causal) for p in front]
    if packed is not None:  # the layouts of that span, taken where they decode about as fast (PACKED_SLACK)
        span, ends = packed
        packed_front = dp.footprint_front(usable, layout.units, layout.stage_start, span, chunk_s,
                                          layout.straddle_start, layout.pack, {span: ends[span]})
        if not front or _may_decode_as_fast(layout, packed_front, rows, options):
            packed_rows = [_request_figures(layout, p, options, causal) for p in packed_front]
            if not front or _decodes_as_fast(packed_rows, rows):
                front, rows = packed_front, packed_rows
    chosen = _by_request(rows)
    shown = [r | {"chosen": i == chosen} for i, r in enumerate(rows) if i == chosen or not _beaten(r, rows)]
    point = front[chosen]
    return Solution(point.path, "OPTIMAL", time.perf_counter() - start, 0.0, len(usable), tuple(shown),
                    point.starts if point.packed else None)


def _subsets_where_they_pay(layout: Layout, cands: list[Candidate], subset: Solution, options: CompileOptions,
                            causal: bool) -> Solution:
    """The fewest-spanning solution with subset stages, or the one without them where that fits the budget and
    the subset one does not decode within SUBSET_SLACK of it."""
    plain = [c for c in cands if not c.attention_tp]
    fewest = dp.fewest_chips(plain, layout.units)
    if fewest is None or sum(c.tp for c in fewest) > min(options.max_chips or layout.max_devices, layout.max_devices):
        return subset
    try:
        without = _fewest_spanned(layout, plain, fewest, options, causal)
    except DoesNotFitError:  # no layout without them spans within --max-chips
        return subset
    if without is None:
        return subset
    return subset if _chosen_decode(subset) <= (1 + SUBSET_SLACK) * _chosen_decode(without) else without


def _chosen_decode(solution: Solution) -> float:
    return next(r["decode_us"] for r in solution.front if r["chosen"])


def _decodes_as_fast(packed: list[dict], in_order: list[dict]) -> bool:
    """Whether the packed layout a request would take decodes within PACKED_SLACK of the in-order one's."""
    return packed[_by_request(packed)]["decode_us"] <= (1 + PACKED_SLACK) * in_order[_by_request(in_order)]["decode_us"]


def _may_decode_as_fast(layout: Layout, packed: list[dp.FrontPoint], in_order: list[dict], options: CompileOptions
                        ) -> bool:
    """Whether some packed point decodes within PACKED_SLACK of the in-order layout a request takes: else the one
    a request would take does not (_decodes_as_fast), and no packed point's TTFT is searched. A stage's decode
    figures do not hang on the prefill chunk, so a point's are known before its chunk is."""
    bar = (1 + PACKED_SLACK) * in_order[_by_request(in_order)]["decode_us"]
    chunk = options.min_chunk_rows // options.batch
    return any(_decode_us(layout, _laid_out(layout, p), chunk) <= bar for p in packed)


def _packed_span(layout: Layout, cands: list[Candidate], limit: int, in_order: int) -> tuple[int, dict] | None:
    """The fewest devices a layout spans with small stages filling nodes' free tails (Layout.pack), if fewer
    than `in_order`, the fewest any layout in order spans: only then are layouts packed (one pass of the DP
    to know; a layout in order keeps every hand-off one hop forward, and its plan is the one before packing).
    With that pass's ends (dp.footprint_states)."""
    if layout.pack is None:
        return None
    ends = dp.footprint_states(cands, layout.units, layout.stage_start, min(limit, in_order - 1),
                               layout.straddle_start, layout.pack)
    return (min(ends), ends) if ends else None


def _beaten(row: dict, rows: list[dict]) -> bool:
    """Whether another layout spans no more, decodes no slower and gives its first token no later (a point
    of the DP's front can be beaten on TTFT itself: the DP weighs only its slowest stage's chunk)."""
    keys = ("footprint_chips", "decode_us", "ttft_ms")
    return any(r is not row and all(r[k] <= row[k] for k in keys) and any(r[k] < row[k] for k in keys) for r in rows)


def _request_figures(layout: Layout, point: dp.FrontPoint, options: CompileOptions, causal: bool) -> dict:
    """A front point's figures, its stages laid out in order: devices spanned and with work, decode
    latency, TTFT at its fastest chunk (the plan's own rules, prefill_of)."""
    runs = _laid_out(layout, point)
    chunk, ttft = fastest_ttft(layout, runs, options, causal)
    return {"footprint_chips": point.end, "chips": point.devices, "stages": len(point.path),
            "decode_us": _decode_us(layout, runs, chunk), "ttft_ms": round_sig(ttft * 1e3), "chunk_tokens": chunk}


def _laid_out(layout: Layout, point: dp.FrontPoint) -> list[Any]:
    """A front point's stages where the DP laid them: packed at its starts, else in order."""
    return layout.at(point.path, point.starts) if point.packed else layout.in_order(point.path)


def _decode_us(layout: Layout, runs: list[Any], chunk: int) -> float:
    """Placed stages' decode latency in us, as the front's rows show it (time() at a prefill chunk: its decode
    figures are the same at any)."""
    return round_sig(sum(layout.time(i, run, runs, chunk).decode.total_s for i, run in enumerate(runs)) * 1e6)


def _by_request(rows: list[dict]) -> int:
    """The front point a request is best served by: the smallest footprint; among its points those whose
    decode is within DECODE_SLACK of the fastest; of those the shortest TTFT, then the faster decode."""
    least = min(r["footprint_chips"] for r in rows)
    spans = [i for i, r in enumerate(rows) if r["footprint_chips"] == least]
    fastest = min(rows[i]["decode_us"] for i in spans)
    within = [i for i in spans if rows[i]["decode_us"] <= (1 + DECODE_SLACK) * fastest]
    return min(within, key=lambda i: (rows[i]["ttft_ms"], rows[i]["decode_us"], rows[i]["chips"], i))


def _span(path: Sequence[Candidate], layout: Layout) -> int:
    """Devices a path spans laid out in order by the layout's rules, each stage at its soonest start: both
    rules are monotone in the cursor, so this is the soonest end of the path."""
    end = 0
    for c in path:
        end = layout.soonest_start(end, c.tp) + c.tp
    return end


def _split_where_it_pays(cands: list[Candidate], units: int, fewest: list[Candidate], budget: int
                         ) -> tuple[list[Candidate], list[Candidate]]:
    """The candidates without the split stages that only save room (Candidate.room) unless those save
    more than SEQUENCE_SAVING of the chips (or the whole layouts do not fit the budget), and the
    fewest-chips path through what is kept."""
    if not any(c.room for c in fewest):
        return cands, fewest
    whole = [c for c in cands if not c.room]
    path = dp.fewest_chips(whole, units)
    if path is None or sum(c.tp for c in path) > budget:
        return cands, fewest
    if sum(c.tp for c in fewest) < (1 - SEQUENCE_SAVING) * sum(c.tp for c in path):
        return cands, fewest
    return whole, path


def chunk_sizes(options: CompileOptions) -> list[int]:
    """The chunks (tokens a sequence) a plan may take: up to --prefill-chunk (and the prompt), a multiple
    of MIN_PREFILL_CHUNK or below it any count."""
    largest = options.chunk_rows // options.batch
    return sorted({largest, *range(MIN_PREFILL_CHUNK, largest + 1, MIN_PREFILL_CHUNK),
                   *range(1, min(largest, MIN_PREFILL_CHUNK) + 1)})


def prefill_chunk(options: CompileOptions, fits: Callable[[int], bool]) -> int:
    """The largest chunk of chunk_sizes that every stage has room for (one token when none does).
    `fits` is monotone in the chunk, so the search is a bisection."""
    sizes = chunk_sizes(options)
    lo, hi = 0, len(sizes) - 1  # sizes[lo] is taken when nothing larger fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(sizes[mid]) else (lo, mid - 1)
    return sizes[lo]


def fastest_chunk(options: CompileOptions, largest: int, at_chunk: Callable[[int], tuple[float, Any]]
                  ) -> tuple[int, Any]:
    """The chunk that minimises time to first token among those every stage has room for (chunk_sizes
    up to `largest`, prefill_chunk's), each costed by the plan's own prefill figure (`at_chunk`: its TTFT,
    figures.ttft_s over the prompt's chunks at their reaches, and what it was computed from); a tie goes
    to the larger chunk (fewer chunks to schedule). A small chunk fills the pipeline sooner; a large one
    uses the matrix unit's rows and pays each stage's fixed costs fewer times: the best lies between.
    The sizes are tried at powers of two (and the largest), then every size between the best one's
    neighbours: TTFT falls, then rises, with the chunk."""
    sizes = [c for c in chunk_sizes(options) if c <= largest]
    tried: dict[int, tuple[float, Any]] = {}

    def cost(chunk: int) -> float:
        if chunk not in tried:
            tried[chunk] = at_chunk(chunk)
        return tried[chunk][0]

    coarse = [c for c in sizes if c & (c - 1) == 0 or c == largest]
    best = min(coarse, key=lambda c: (cost(c), -c))
    at = coarse.index(best)
    low, high = coarse[max(0, at - 1)], coarse[min(len(coarse) - 1, at + 1)]
    best = min((c for c in sizes if low <= c <= high), key=lambda c: (cost(c), -c))
    return best, tried[best][1]


def fullest(memories) -> Memory:
    """The fullest of some devices' memories (the most bytes, then the most weights)."""
    return max(memories, key=lambda m: (m.total, m.weights))


def _binding(timed: list[Timed], options: CompileOptions, prefill: str) -> dict:
    chips = "sram-capacity" if options.objective == "chips" and options.chips is None else "chip-budget"
    return {"chips": chips, "decode": sum((t.decode for t in timed), Breakdown()).binding,
            "prefill": prefill}
