"""The chip backend's Layout: units on tensor-parallel groups of chips, placed on the network.

Candidates are contiguous runs of units on groups of t chips (compiler/partition/candidates.py);
a chosen path is placed node-aligned by CP-SAT (compiler/partition/placement.py), or where the footprint DP
laid it out when it packs small stages into nodes' free tails (dp.Packing); each stage is timed
by the op-level rules (compiler/partition/cost.py) plus its hand-off from the previous stage.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from compiler.backends.chips.subsets import shares, subset_candidates
from compiler.codegen.phase import embedding_refusal
from compiler.frontend.options import CompileOptions
from compiler.partition.candidates import (
    Candidate,
    can_straddle,
    capacity_lower_bound,
    cost_tables,
    enumerate_candidates,
    resident_total,
)
from compiler.partition.chaining import lowered_together
from compiler.partition.cost import (
    Breakdown,
    StageBound,
    boundary_time,
    handoff,
    handoff_trails,
    handoff_wire_s,
    hop_s,
    hop_send_s,
    hop_trailing_s,
    staging_rule,
    unit_bound,
    unit_time,
)
from compiler.partition.dp import Packing
from compiler.partition.placement import next_start, place, straddle_start
from compiler.partition.shard_cost import ShardCost, align
from compiler.partition.subset_cost import SubsetCost, subset_cost
from compiler.partition.units import Unit, at_reach, boundary_bytes, build_units, prefill_costs, repeated_params
from compiler.passes.shard import expert_placement
from compiler.passes.subset import has_attention, mlp_features
from compiler.plan.reader import PinnedStage, PlanFile, unit_ranges
from compiler.plan.records import ChipRange, Memory, round_sig
from compiler.plan.search import Layout, Timed
from ir.errors import ConfigError, VerifyError
from ir.graph import Graph
from ir.ops import Opcode
from targets.spec import SystemSpec
from targets.topology import chip_hops

# No stage is wider than this: beyond it, collectives cost more than sharding saves on every target we ship.
MAX_GROUP = 2048

# A stage's prefill sums are kept every this many units from its first (ChipLayout._prefill_sums): a sum
# at every stop costs ~0.5 KB each, and one every 16 leaves at most 15 units to add again.
SUMS_EVERY = 16


@dataclass(frozen=True, slots=True)
class Run:
    """A chosen candidate placed on chips first_chip .. first_chip + tp - 1."""

    cand: Candidate
    first_chip: int


@dataclass
class ChipLayout(Layout):
    """The search's view of a model on a chip system (plan.search.Layout)."""

    system: SystemSpec
    decode: Graph
    prefill: Graph
    options: CompileOptions
    device: str = "chip"
    units_: list[Unit] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    lower_bound: int = 0
    embedding: bool = False  # the first unit (a tied table's lookup) runs on the last stage's chips
    _prefill: dict = field(default_factory=dict)
    _sharded: dict = field(default_factory=dict)  # per-chip prefill ops by (unit kind, group size)
    _figures: dict = field(default_factory=dict)  # a unit cost's time and bound, by the cost's identity

    @classmethod
    def of(cls, decode: Graph, prefill: Graph, system: SystemSpec, options: CompileOptions,
           every: bool = False, embedding: bool = False) -> ChipLayout:
        """`every`: keep candidates another dominates (a pinned plan may ask for any of them); `embedding`: the
        embedding runs on the head's chips (partition.candidates.enumerate_candidates, Stage.embedding)."""
        units = build_units(decode, prefill, options, min(system.max_chips, MAX_GROUP), system.chips_per_node,
                            system.chip.vector_bytes, system.chip.matrix_dim, system.chip.mxm_panel,
                            staging_rule(system, options.precision))
        tables = cost_tables(units, system, options.precision)
        reserved = max(input_bytes(decode, options.batch, system), input_bytes(decode, options.min_chunk_rows, system))
        cands = enumerate_candidates(units, tables, boundary_bytes(decode), system,
                                     keep_dominated=every or options.chips is not None, reserved_bytes=reserved,
                                     embedding=embedding)
        total = resident_total(units, repeated_params(decode, system.chip.vector_bytes))
        layout = cls(system, decode, prefill, options, units_=units, candidates=cands,
                     lower_bound=capacity_lower_bound(total, system.chip.usable_sram_bytes), embedding=embedding)
        usable = system.chip.usable_sram_bytes - reserved
        more = subset_candidates(units, decode, cands, system.chips_per_node, usable,
                                 lambda c: layout._sized(c, usable))
        if more:  # in (first, stop, tp) order, as enumerate_candidates gives them
            layout.candidates = sorted(cands + more, key=lambda c: (c.first, c.stop, c.tp))
        return layout

    @property
    def max_devices(self) -> int:
        return self.system.max_chips

    @property
    def units(self) -> int:
        return len(self.units_)

    def unplaceable(self, unit: int) -> str:
        u = self.units_[unit]
        return (f"no chip of {self.system.name} can hold unit {u.scope} even split as far as it divides "
                f"({max(u.sizes)} ways): give the target more SRAM per chip")

    def place(self, path: Sequence[Candidate], options: CompileOptions) -> list[Run]:
        footprint = options.objective == "chips" and options.chips is None  # search.choose's smallest footprint
        starts = place([c.tp for c in path], [c.straddle_ps for c in path], self.system, options.solver_seed,
                       across=footprint)
        return [Run(c, s) for c, s in zip(path, starts, strict=True)]

    def stage_start(self, cursor: int, tp: int) -> int:
        return next_start(cursor, tp, self.system)

    def straddle_start(self, cursor: int, tp: int) -> int | None:
        return straddle_start(cursor, tp, self.system)

    @functools.cached_property
    def pack(self) -> Packing:
        """Stages below a node may fill a node's free tail (dp.Packing), each hop past the first a hand-off
        then takes costing a global link's latency (the hops over the target's wiring, chip_hops)."""
        system = self.system
        hop_ps = round(system.global_link.latency_s * 1e12)
        return Packing(system.chips_per_node, lambda a, b: max(0, chip_hops(system, a, b) - 1) * hop_ps)

    def at(self, path: Sequence[Candidate], starts: Sequence[int]) -> list[Run]:
        return [Run(c, s) for c, s in zip(path, starts, strict=True)]

    def in_order(self, path: Sequence[Candidate]) -> list[Run]:
        """The path laid out soonest: each stage at its soonest_start (the layout dp.footprint_states' ends
        are reached by)."""
        runs, cursor = [], 0
        for c in path:
            runs.append(Run(c, self.soonest_start(cursor, c.tp)))
            cursor = runs[-1].first_chip + c.tp
        return runs

    def pin(self, plan: PlanFile) -> tuple[list[Candidate], list[Run]]:
        why = embedding_refusal(self.decode, len(plan.stages), [i for i, s in enumerate(plan.stages) if s.embedding])
        if plan.embedding and why:
            raise ConfigError(f"{plan.path}: stages[].embedding: {why}")
        path = []
        for i, (s, (first, stop)) in enumerate(zip(plan.stages, unit_ranges(plan, [u.scope for u in self.units_]),
                                                   strict=True)):
            if s.attention_tp:
                path.append(self._subset_candidate(f"{plan.path}: stages[{i}]", first, stop, s))
                continue
            cand = _pinned(self.candidates, first, stop, s)
            if cand is None and s.split is not None and _pinned(self.candidates, first, stop, replace(s, split=None)):
                other = "whole" if s.split else "split"
                raise ConfigError(f"{plan.path}: stages[{i}].kv_layout: units {self.units_[first].scope} .. "
                                  f"{self.units_[stop - 1].scope} on {s.tp} chips take only the {other} layout here")
            if cand is None:
                raise ConfigError(f"{plan.path}: stages[{i}]: {self._refusal(first, stop, s.tp)}")
            path.append(cand)
        runs = [Run(c, s.first_chip) for c, s in zip(path, plan.stages, strict=True)]
        _check_ranges(plan, runs, self.system)
        return path, runs

    def _refusal(self, first: int, stop: int, tp: int) -> str:
        units = self.units_[first:stop]
        for u in units:
            if tp not in u.sizes:
                return f"{tp} chips do not split unit {u.scope} (it splits {', '.join(map(str, u.sizes))} ways)"
        return (f"units {units[0].scope} .. {units[-1].scope} on {tp} chips do not fit a {self.system.name} chip's "
                f"{self.system.chip.usable_sram_bytes:,} usable bytes of SRAM")

    def fits(self, run: Run, chunk: int) -> bool:
        return self.room(run, chunk) >= 0

    def room(self, run: Run, chunk: int) -> float:
        """Bytes of a stage chip's usable SRAM left beside its weights, caches and a chunk's activations.
        Activations are affine in the rows (fixed buffers plus a share a token), measured at the
        smallest and the largest chunk the units were costed at."""
        c, o = self._own(run.cand), self.options
        units = self.units_[c.first:c.stop] + self._lookup(c)
        largest, smallest = o.chunk_rows // o.batch, o.min_chunk_rows // o.batch
        if c.attention_tp:
            acts = [max(p.act_bytes for p in self._subset_costs(c, "prefill", rows / o.prompt, None))
                    for rows in (smallest, largest)]
        else:
            acts = [max(u.prefill_min_act[u.group(c.tp, c.split)] for u in units),
                    max(u.prefill[u.group(c.tp, c.split)].act_bytes for u in units)]
        # the inputs' regions, as bytes a row plus at most a vector each
        low = acts[0] + input_bytes(self.decode, smallest * o.batch, self.system)
        high = acts[1] + input_bytes(self.decode, largest * o.batch, self.system)
        per_token = (high - low) / (largest - smallest) if largest > smallest else 0
        return self.system.chip.usable_sram_bytes - (c.resident_bytes + low + per_token * (chunk - smallest))

    def time(self, index: int, run: Run, runs: list[Run], chunk: int, reach: int | None = None) -> Timed:
        if run.cand.attention_tp:
            return self._subset_time(index, run, runs, chunk, reach)
        c, system = self._own(run.cand), self.system
        units = self.units_[c.first:c.stop]
        pre = self._prefill_costs(c, chunk, reach)
        across = spans_groups(run, system)
        decode_costs = [u.decode[u.group(c.tp, c.split)] for u in units]
        decode_parts = [self._unit_figures(cost, across) for cost in decode_costs]
        decode = Breakdown.sum_of(t for t, _ in decode_parts) + _boundaries(decode_costs, self._run_starts(units),
                                                                              system)
        prev = self._prev(index, runs)
        entry = StageBound(wire_s=handoff_wire_s(system)) if prev else StageBound()
        bound = sum((b for _, b in decode_parts), entry)
        prefill_bound = sum((self._unit_figures(p, across)[1] for p in pre), entry)
        lookup = self._lookup(c)  # the embedding, where this stage's chips run it: its decode, and early in prefill
        early = [self._unit_figures(u.decode[c.tp, False], across) for u in lookup]
        early_pre = [self._unit_figures(p, across) for p in self._lookup_prefill(c, chunk, reach)]
        decode = Breakdown.sum_of([decode, *(t for t, _ in early)]) if early else decode
        bound = sum((b for _, b in early), bound)
        hops = 0
        if prev:
            hops = chip_hops(system, prev.first_chip + prev.cand.tp - 1, run.first_chip)
            h = handoff(prev.cand.tp, c.tp, hops, system)
            decode += Breakdown(link_s=hop_s(self._crossing[0][c.first], hops, h, system, across))
        prefill = self._prefill_time(c, chunk, reach, hops, prev.cand.tp if prev else 0, across)
        o = self.options
        inputs = max(input_bytes(self.decode, o.batch, system), input_bytes(self.decode, chunk * o.batch, system))
        memory = _memory(units, pre, c, system, inputs)
        if lookup:  # its activations beside the stage's (its table is the head's, held once)
            lookup_act = max(u.decode[c.tp, False].act_bytes for u in lookup)
            lookup_act = max([lookup_act, *(p.act_bytes for p in self._lookup_prefill(c, chunk, reach))]) + inputs
            memory = replace(memory, activations=max(memory.activations, lookup_act))
        trails = bool(index) and self._trails(prev, run)
        trailing = (self._trailing_s(prev, run, chunk, hops), entry.wire_s) if trails else (0.0, 0.0)
        hold = self._hold_s(prev, run, chunk, hops) if prev and not trails else 0.0
        return Timed.of(index, [u.scope for u in self.units_[run.cand.first:run.cand.stop]],
                        ChipRange(run.first_chip, c.tp), memory, decode,
                        bound.total_s, prefill, prefill_bound.total_s, hops, trailing, hold,
                        early=(sum(t.total_s for t, _ in early_pre), sum(b.total_s for _, b in early_pre)),
                        bound_terms=bound.to_dict(),
                        decode_tiles_us=decode.tiles_s * 1e6, experts=self._experts(c.first, c.stop, c.tp),
                        tier=_tier(units, c, decode), kv_layout=_kv_layout(units, c), embedding=bool(lookup))

    def _own(self, c: Candidate) -> Candidate:
        """The candidate as the units its chips run themselves: the first stage's past the embedding where the
        head's chips run it (its first unit's index, 0, then names the stage's units, not its work)."""
        return replace(c, first=1) if self.embedding and c.first == 0 else c

    def _lookup(self, c: Candidate) -> list[Unit]:
        """The embedding unit where this stage's chips run it (the last stage's, in the embedding layout)."""
        return [self.units_[0]] if self.embedding and c.stop == len(self.units_) and c.first > 0 else []

    def _lookup_prefill(self, c: Candidate, chunk: int, reach: int | None) -> list[ShardCost]:
        """_lookup's unit's prefill chunk cost on the stage's group."""
        if not self._lookup(c):
            return []
        return self._prefill_costs(replace(c, first=0, stop=1, split=False), chunk, reach)

    def _prev(self, index: int, runs: list[Run]) -> Run | None:
        """The stage the hand-off into stage `index` comes from: the one before, or into the first stage the
        last (whose chips run the embedding), or None."""
        if index:
            return runs[index - 1]
        return runs[-1] if self.embedding and len(runs) > 1 else None

    def prefill_s(self, index: int, run: Run, runs: list[Run], chunk: int, reach: int | None = None
                  ) -> tuple[float, float, float, float]:
        if run.cand.attention_tp:
            t = self._subset_time(index, run, runs, chunk, reach)
            return t.prefill.total_s, t.prefill_trailing_s, t.prefill_hold_s, t.prefill_early_s
        c, prev = run.cand, self._prev(index, runs)
        # All it reads: the stage, where it lies, where the stage before ends and how wide it is, chunk and reach
        # (the TTFT search of every front point asks again for the same stages after the same hand-offs).
        key = ("prefill_s", c.first, c.stop, c.tp, c.split, run.first_chip, chunk, reach,
               (prev.first_chip, prev.cand.tp) if prev else None)
        if key not in self._figures:
            self._figures[key] = self._prefill_s(run, prev, chunk, reach)
        return self._figures[key]

    def _prefill_s(self, run: Run, prev: Run | None, chunk: int, reach: int | None
                   ) -> tuple[float, float, float, float]:
        """prefill_s of a stage placed after `prev` (None: a first stage no hand-off enters), and its early part
        (Timed.prefill_early_s: the embedding, where its chips run it)."""
        c, across = self._own(run.cand), spans_groups(run, self.system)
        early = sum(self._unit_figures(p, across)[0].total_s for p in self._lookup_prefill(c, chunk, reach))
        if prev is None:
            return self._prefill_time(c, chunk, reach, 0, 0, across).total_s, 0.0, 0.0, early
        hops = chip_hops(self.system, prev.first_chip + prev.cand.tp - 1, run.first_chip)
        total = self._prefill_time(c, chunk, reach, hops, prev.cand.tp, across).total_s
        if run.cand.first and self._trails(prev, run):
            return total, self._trailing_s(prev, run, chunk, hops), 0.0, early
        return total, 0.0, self._hold_s(prev, run, chunk, hops), early

    def _trails(self, prev: Run, run: Run) -> bool:
        """Whether the hand-off from `prev` into `run` trails (cost.handoff_trails: the lowering's rule)."""
        return handoff_trails((prev.first_chip, prev.cand.tp), (run.first_chip, run.cand.tp), self.system)

    def _trailing_s(self, prev: Run, run: Run, chunk: int, hops: int) -> float:
        """The part of a prefill chunk's hand-off from `prev` into `run` on the wires alone (hop_trailing_s)."""
        nbytes = math.ceil(self._crossing[1][self._own(run.cand).first] * chunk / self.options.prompt)
        return hop_trailing_s(nbytes, hops, handoff(prev.cand.tp, run.cand.tp, hops, self.system), self.system)

    def _hold_s(self, prev: Run, run: Run, chunk: int, hops: int) -> float:
        """How long a prefill chunk's hand-off from `prev` into `run` that does not trail holds `prev` (hop_send_s)."""
        nbytes = math.ceil(self._crossing[1][self._own(run.cand).first] * chunk / self.options.prompt)
        return hop_send_s(nbytes, hops, handoff(prev.cand.tp, run.cand.tp, hops, self.system), self.system)

    def chunk_s(self, cand: Candidate, chunk: int, reach: int | None = None) -> float:
        """A candidate stage's seconds for one prefill chunk, handed over one hop from a stage as wide (as
        the candidates' decode assumes, partition.candidates._entry), by the rule `time` costs a placed
        stage with."""
        if cand.attention_tp:
            return self._subset_decode(cand, self._subset_costs(cand, "prefill", chunk / self.options.prompt, reach),
                                       math.ceil(self._crossing[1][cand.first] * chunk / self.options.prompt)).total_s
        c = self._own(cand)
        return self._prefill_time(c, chunk, reach, 1 if c.first else 0, c.tp).total_s

    def _prefill_time(self, c: Candidate, chunk: int, reach: int | None, hops: int, sender_tp: int,
                      across: bool = False) -> Breakdown:
        """A stage's prefill chunk: its units' figures (inside one group or `across` two), then the chunk's
        hand-off `hops` away from a stage of `sender_tp` chips (none into the first stage)."""
        prefill = self._units_prefill(c, chunk, reach, across)
        if not c.first:
            return prefill
        system, scale = self.system, chunk / self.options.prompt
        h = handoff(sender_tp, c.tp, hops, system)
        return prefill + Breakdown(link_s=hop_s(math.ceil(self._crossing[1][c.first] * scale), hops, h, system, across))

    def _units_prefill(self, c: Candidate, chunk: int, reach: int | None, across: bool) -> Breakdown:
        """The stage's units' part of a prefill chunk, from _prefill_sums (not kept: prefill_s keeps what the TTFT
        search asks again, and 93% of 405B h100's 67k asks here were new)."""
        units, boundaries = self._prefill_sums(c, chunk, reach, across)
        return units + boundaries

    def _prefill_sums(self, c: Candidate, chunk: int, reach: int | None, across: bool) -> tuple[Breakdown, Breakdown]:
        """The stage's units' prefill figures and what its boundaries save (_boundaries), each summed in unit
        order, built on from the sums kept for the stage of the same first unit and group that is longest and
        no longer than this one (the same additions, so the same floats; lowered_together's runs of a stage's
        first units are those of the shorter stage). Kept: the sums every SUMS_EVERY units from the first and
        the last built (chunk_s asks for one first unit's candidates in rising stops); a sum at every stop, for
        every chunk and reach the TTFT search tries, held most of the planner's memory (405B on h100: 0.75M)."""
        every, last = self._figures.setdefault(("prefill sums", c.first, c.tp, c.split, chunk, reach, across),
                                               ([], [c.first, Breakdown(), Breakdown()]))
        n = min((c.stop - c.first) // SUMS_EVERY, len(every))
        stop, units, boundaries = c.first + n * SUMS_EVERY, *(every[n - 1] if n else (Breakdown(), Breakdown()))
        if stop < last[0] <= c.stop:
            stop, units, boundaries = last
        base = max(c.first, stop - 1)  # the unit before the first added, for its boundary
        pre = self._prefill_costs(c, chunk, reach, base)
        starts = self._run_starts(self.units_[c.first:c.stop])
        for u in range(stop, c.stop):
            cost, i = pre[u - base], u - c.first
            units = units + self._unit_figures(cost, across)[0]
            if i:
                boundaries = boundaries + boundary_time(pre[u - 1 - base], cost, i not in starts, self.system)
            if (i + 1) % SUMS_EVERY == 0 and len(every) == i // SUMS_EVERY:
                every.append((units, boundaries))
        last[:] = c.stop, units, boundaries
        return units, boundaries

    def _run_starts(self, units: Sequence) -> frozenset[int]:
        """Where lowered_together's runs of a stage's units start, once per stage shape and plan (the rule reads
        chaining.UNITS_TOGETHER, so the memo lives no longer than the layout)."""
        kinds = tuple(u.kind for u in units)
        key = ("run starts", kinds)
        if key not in self._figures:
            self._figures[key] = frozenset(run.start for run in lowered_together(kinds))
        return self._figures[key]

    def _unit_figures(self, cost: ShardCost, across: bool) -> tuple[Breakdown, StageBound]:
        """unit_time and unit_bound of one unit's cost on a stage inside one group or `across` two, once:
        every chunk size and reach variant the chunk search tries asks again for the same decode costs and
        the same kinds of layer."""
        hit = self._figures.get((id(cost), across))
        if hit is None or hit[0] is not cost:
            precision, system = self.options.precision, self.system
            hit = (cost, unit_time(cost, system, precision, across), unit_bound(cost, system, precision, across))
            self._figures[id(cost), across] = hit
        return hit[1], hit[2]

    @functools.cached_property
    def _crossing(self) -> tuple[list[int], list[int]]:
        """Bytes crossing each cut between units, in decode and in the whole prompt's prefill."""
        return boundary_bytes(self.decode), boundary_bytes(self.prefill)

    def _prefill_costs(self, c: Candidate, chunk: int, reach: int | None, first: int | None = None
                       ) -> list[ShardCost]:
        """The prefill costs of a candidate's units (from unit `first` on, if given) at a chunk and reach, each
        (unit kind, group) once: the chunk search and the TTFT front ask again for the same kinds of layer on
        the same groups."""
        units = self.units_[c.first if first is None else first:c.stop]
        needed = {(u.kind, *u.group(c.tp, c.split)) for u in units}
        missing = {k for k in needed if (chunk, reach, k) not in self._prefill}
        if missing:
            costs = prefill_costs(self.prefill, self.units_, missing, chunk / self.options.prompt,
                                  self.system.chip.vector_bytes, reach, self._sharded, self.system.chip.matrix_dim,
                                  self.system.chip.mxm_panel, staging_rule(self.system, self.options.precision))
            self._prefill.update({(chunk, reach, k): v for k, v in costs.items()})
        return [self._prefill[chunk, reach, (u.kind, *u.group(c.tp, c.split))] for u in units]

    def _experts(self, first: int, stop: int, tp: int) -> str | None:
        """The expert placement of a stage of units first..stop-1 (every MoE layer of a model has the same
        shape), once per stage shape."""
        key = ("experts", first, stop, tp)
        if key not in self._figures:
            scopes = [u.scope for u in self.units_[first:stop]]
            moe = next((op for sc in scopes for op in self.decode.ops_in(sc) if op.opcode is Opcode.EXPERTS), None)
            self._figures[key] = expert_placement(moe, tp) if moe is not None and tp > 1 else None
        return self._figures[key]

    def footprint(self, timed: list[Timed]) -> int:
        return max(t.stage.first_chip + t.stage.tp for t in timed)  # a packed stage may end before the last

    def _subset_candidate(self, at: str, first: int, stop: int, s: PinnedStage) -> Candidate:
        """A plan file's stage whose layers' attention runs on its first attention_tp chips (passes.subset):
        costed as lowered (partition.subset_cost); one line where the lowering cannot run it or it does not fit."""
        tp, node = s.tp, self.system.chips_per_node
        for width, what in ((tp, "tp"), (s.attention_tp, "attention_tp"), (tp - s.attention_tp, "tp - attention_tp")):
            if width > node and width % node:
                raise ConfigError(f"{at}.{what}: a block of {width} chips wider than a node must be whole nodes of "
                                  f"{node}")
        if not any(has_attention(list(self.decode.ops_in(u.scope))) for u in self.units_[first:stop]):
            raise ConfigError(f"{at}.attention_tp: units {self.units_[first].scope} .. {self.units_[stop - 1].scope} "
                              "have no attention to run on some of the stage's chips")
        cand = Candidate(first, stop, tp, 0, 0, Breakdown(), split=bool(s.split), attention_tp=s.attention_tp,
                         mlp_share=s.mlp_share)
        try:
            costs = self._subset_costs(cand, "decode", 1.0, None)
        except VerifyError as err:
            raise ConfigError(f"{at}.attention_tp: {err}") from None
        (mine, theirs) = zip(*(c.held() for c in costs), strict=True)
        resident = max(sum(map(sum, mine)), sum(map(sum, theirs)))
        act = max(c.act_bytes for c in costs)
        if resident + act > self.system.chip.usable_sram_bytes:
            raise ConfigError(f"{at}: units {self.units_[first].scope} .. {self.units_[stop - 1].scope} with the "
                              f"attention on {s.attention_tp} of {tp} chips need {resident + act:,} bytes of SRAM a "
                              f"chip; a {self.system.name} chip has {self.system.chip.usable_sram_bytes:,} usable")
        return replace(cand, resident_bytes=resident, act_bytes=act, decode=self._subset_decode(cand, costs))

    def _sized(self, c: Candidate, usable: int) -> Candidate | None:
        """A subset candidate (subsets.subset_candidates) with the attention chips' MLP share that fits (the
        most), its memory and its decode; None where no share fits `usable` bytes a chip."""
        features = mlp_features(list(self.decode.ops_in(self.units_[c.first].scope)))
        for share in shares(features, c.tp) if features else [None]:  # (None: no MLP beside its attention)
            cand = replace(c, mlp_share=share)
            try:
                costs = self._subset_costs(cand, "decode", 1.0, None)
            except VerifyError:
                continue
            mine, theirs = (sum(map(sum, side)) for side in zip(*(cost.held() for cost in costs), strict=True))
            act = max(cost.act_bytes for cost in costs)
            if mine + act <= usable:
                if theirs + act > usable:
                    return None  # a smaller share only fills the others more
                return replace(cand, resident_bytes=max(mine, theirs), act_bytes=act, decode=self._subset_decode(
                    cand, costs))
        return None

    def _subset_decode(self, c: Candidate, costs: list[SubsetCost], crossing: int | None = None) -> Breakdown:
        """A subset candidate's decode (or with `costs` a prefill chunk's, `crossing` its bytes handed in): its
        parts in turn, plus the hand-off into it from a stage as wide one hop away (candidates._entry's
        assumption)."""
        system = self.system
        parts = [self._unit_figures(p, False)[0] for cost in costs for p in cost.parts]
        nbytes = self._crossing[0][c.first] if crossing is None else crossing
        entry = [Breakdown(link_s=hop_s(nbytes, 1, handoff(c.tp, c.tp, 1, system), system))] if c.first else []
        return Breakdown.sum_of(parts + entry)

    def _subset_costs(self, c: Candidate, phase: str, rows_scale: float, reach: int | None) -> list[SubsetCost]:
        """Each of a subset candidate's units' SubsetCost in `phase` ("decode" or "prefill", whose graph at
        `rows_scale` of its rows and `reach`), once per unit kind."""
        out = []
        for u in self.units_[c.first:c.stop]:
            key = ("subset", phase, u.kind, c.tp, c.split, c.attention_tp, c.mlp_share, rows_scale, reach)
            if key not in self._figures:
                graph, chip = (self.decode if phase == "decode" else self.prefill), self.system.chip
                ops = list(graph.ops_in(u.scope)) if phase == "decode" else at_reach(list(graph.ops_in(u.scope)),
                                                                                     reach)
                self._figures[key] = subset_cost(ops, c.tp, c.attention_tp, c.mlp_share, rows_scale,
                                                 chip.vector_bytes, c.split, chip.matrix_dim, chip.mxm_panel,
                                                 staging_rule(self.system, self.options.precision))
            out.append(self._figures[key])
        return out

    def _subset_time(self, index: int, run: Run, runs: list[Run], chunk: int, reach: int | None) -> Timed:
        """time() of a subset candidate: its units' parts in turn (no run of units lowered together), as
        codegen.phase lowers them."""
        c, system, o = run.cand, self.system, self.options
        across = spans_groups(run, system)
        hops = chip_hops(system, runs[index - 1].first_chip + runs[index - 1].cand.tp - 1, run.first_chip) \
            if index else 0
        entry = StageBound(wire_s=handoff_wire_s(system)) if index else StageBound()
        phases = []
        for phase, scale in (("decode", 1.0), ("prefill", chunk / o.prompt)):
            costs = self._subset_costs(c, phase, scale, reach if phase == "prefill" else None)
            figures = [self._unit_figures(p, across) for cost in costs for p in cost.parts]
            time = Breakdown.sum_of([t for t, _ in figures])
            if index:
                crossing = self._crossing[phase == "prefill"][c.first]
                nbytes = crossing if phase == "decode" else math.ceil(crossing * scale)
                h = handoff(runs[index - 1].cand.tp, c.tp, hops, system)
                time += Breakdown(link_s=hop_s(nbytes, hops, h, system, across))
            phases.append((time, sum((b for _, b in figures), entry), costs))
        (decode, bound, costs), (prefill, prefill_bound, pre) = phases
        inputs = max(input_bytes(self.decode, o.batch, system), input_bytes(self.decode, chunk * o.batch, system))
        mine, theirs = ([sum(x) for x in zip(*side, strict=True)] for side in zip(*(cost.held() for cost in costs),
                                                                                   strict=True))
        weights, kv = max(mine, theirs, key=sum)
        memory = Memory(weights=weights, kv_cache=kv, activations=max(x.act_bytes for x in (*costs, *pre)) + inputs,
                        program=system.chip.program_reserve_bytes, capacity=system.chip.sram_bytes)
        trails = index and self._trails(runs[index - 1], run)
        trailing = (self._trailing_s(runs[index - 1], run, chunk, hops), entry.wire_s) if trails else (0.0, 0.0)
        hold = self._hold_s(runs[index - 1], run, chunk, hops) if index and not trails else 0.0
        units = self.units_[c.first:c.stop]
        return Timed.of(index, [u.scope for u in units], ChipRange(run.first_chip, c.tp), memory, decode,
                        bound.total_s, prefill, prefill_bound.total_s, hops, trailing, hold,
                        bound_terms=bound.to_dict(), decode_tiles_us=decode.tiles_s * 1e6,
                        kv_layout="split" if c.split else "whole", attention_tp=c.attention_tp, mlp_share=c.mlp_share,
                        experts=self._experts(c.first, c.stop, c.tp))


def spans_groups(run: Run, system: SystemSpec) -> bool:
    """Whether a stage that fits one group lies across two (its collectives pay the links between them)."""
    group, first = system.chips_per_group, run.first_chip
    return can_straddle(run.cand.tp, system) and first // group != (first + run.cand.tp - 1) // group


def _boundaries(costs: Sequence[ShardCost], starts: frozenset[int], system: SystemSpec) -> Breakdown:
    """What the stage's units chained across their runs' boundaries (`starts`: where runs begin) save
    (cost.boundary_time)."""
    return Breakdown.sum_of(boundary_time(a, b, i + 1 not in starts, system)
                            for i, (a, b) in enumerate(itertools.pairwise(costs)))


def _check_ranges(plan: PlanFile, runs: list[Run], system: SystemSpec) -> None:
    """Pinned stages lie on the machine's chips and no two share one."""
    taken = sorted((r.first_chip, r.first_chip + r.cand.tp, i) for i, r in enumerate(runs))
    for (a0, a1, i), (b0, _, j) in itertools.pairwise(taken):
        if b0 < a1:
            raise ConfigError(f"{plan.path}: stages[{j}].chip_range starts at chip {b0}, inside stages[{i}]'s "
                              f"{a0}..{a1 - 1}")
    end = max(a1 for _, a1, _ in taken)
    if end > system.max_chips:
        raise ConfigError(f"{plan.path}: the stages reach chip {end - 1}; {system.name} joins at most "
                          f"{system.max_chips} chips")


def input_bytes(decode: Graph, rows: int, system: SystemSpec) -> int:
    """SRAM every stage's chips give the phase's inputs (token ids, positions) at `rows` rows: one
    region each, from a vector boundary, as the layout places them (decode's inputs have one row a
    sequence)."""
    batch = max(1, decode.inputs[0].type.shape[0]) if decode.inputs and decode.inputs[0].type.shape else 1
    return sum(align(math.ceil(v.type.nbytes * rows / batch), system.chip.vector_bytes) for v in decode.inputs)


def _memory(units: list[Unit], pre: list[ShardCost], c: Candidate, system: SystemSpec, inputs: int) -> Memory:
    decode = [u.decode[u.group(c.tp, c.split)] for u in units]
    return Memory(
        weights=sum(d.weight_bytes for d in decode),
        kv_cache=sum(d.state_bytes for d in decode),
        activations=max(max(d.act_bytes, p.act_bytes) for d, p in zip(decode, pre, strict=True)) + inputs,
        program=system.chip.program_reserve_bytes,
        capacity=system.chip.sram_bytes,
    )


def _kv_layout(units: list[Unit], c: Candidate) -> str | None:
    """"split" or "whole" where the stage's group could take either layout (passes.shard.splits_kv),
    else None."""
    if not any(u.splits(c.tp) for u in units):
        return None
    return "split" if c.split else "whole"


def _pinned(cands: list[Candidate], first: int, stop: int, stage: PinnedStage) -> Candidate | None:
    """A plan file's stage as a candidate: in the layout it names (kv_layout), or else the faster one
    (the whole on a tie), as the search would keep."""
    match = [c for c in cands if (c.first, c.stop, c.tp) == (first, stop, stage.tp)
             and (stage.split is None or c.split == stage.split)]
    return min(match, key=lambda c: (c.latency_ps, c.split), default=None)


def _tier(units: list[Unit], c: Candidate, decode: Breakdown) -> dict | None:
    """A stage's cold KV per chip: which tier, the bytes it holds there, and a decode step's fetch time
    (all of it, and what the stage's other work does not hide)."""
    tiers = [t for t in (u.decode[u.group(c.tp, c.split)].tier for u in units) if t]
    if not tiers:
        return None
    return {"name": tiers[0].name, "bytes": sum(t.bytes for t in tiers), "fetches": sum(t.fetches for t in tiers),
            "stores": sum(t.stores for t in tiers), "store_bytes": sum(t.store_bytes for t in tiers),
            "fetch_us": round_sig(decode.tier_fetch_s * 1e6), "exposed_us": round_sig(decode.tier_s * 1e6)}

