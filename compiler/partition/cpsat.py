"""The CP-SAT stage model: choose a path of candidate stages through the units.

Formulation (a shortest path with a side constraint). Boundaries 0..U sit between
units; candidate c covers units [a_c, b_c) on t_c chips with decode time l_c.

    x_c in {0, 1}
    sum_{c: a_c = k} x_c - sum_{c: b_c = k} x_c = [k = 0] - [k = U]   for every k
    C = sum_c t_c x_c,   C = N (--chips) or C <= M (--max-chips, target size)
    L = sum_c l_c x_c
    objective "chips":    minimise C, then, with C at that minimum, minimise L (a chip backend's plan
                          minimises the chips its stages span instead: dp.smallest_footprint)
    objective "latency":  minimise L, then, with L at that minimum, minimise C

The two objectives are solved one after the other (lexicographically) rather than
as one weighted sum: the weight that makes a chip outweigh every latency sum is
~1e14, which leaves CP-SAT unable to prove optimality on models of a few hundred
candidates, while each phase alone is proved in milliseconds. The flow
constraints make the chosen stages tile the units exactly once in order; stage
hand-offs are part of l_c. Solving is deterministic: a fixed seed, one worker
and a deterministic time limit per phase; Ctrl-C stops the command, never just
the search (compiler.partition.solving).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from compiler.partition.candidates import Candidate
from compiler.partition.solving import run_solver


@dataclass(frozen=True, slots=True)
class Solution:
    """The chosen stages, in order, and how the solver got there."""

    stages: tuple[Candidate, ...]
    status: str  # "OPTIMAL" | "FEASIBLE" | "PINNED" (a plan file's layout, not searched)
    wall_s: float
    deterministic_s: float
    candidates: int
    front: tuple[dict, ...] = ()  # the layouts the chips objective chose among (plan.search._fewest_spanned)
    starts: tuple[int, ...] | None = None  # a packed layout's first devices (dp.Packing), else the placement's


def build_model(cands: list[Candidate], num_units: int, exact_chips: int | None, max_chips: int
                ) -> tuple[cp_model.CpModel, list[cp_model.IntVar], cp_model.LinearExpr, cp_model.LinearExpr]:
    """The constraints above, as a pure function of its inputs: (model, x, C, L)."""
    model = cp_model.CpModel()
    x = [model.new_bool_var(f"x{i}") for i in range(len(cands))]
    out: list[list[cp_model.IntVar]] = [[] for _ in range(num_units + 1)]
    into: list[list[cp_model.IntVar]] = [[] for _ in range(num_units + 1)]
    for c, v in zip(cands, x, strict=True):
        out[c.first].append(v)
        into[c.stop].append(v)
    for k in range(num_units + 1):
        model.add(sum(out[k]) - sum(into[k]) == (k == 0) - (k == num_units))
    chips = cp_model.LinearExpr.weighted_sum(x, [c.tp for c in cands])
    if exact_chips is not None:
        model.add(chips == exact_chips)
    else:
        model.add(chips <= max_chips)
    latency = cp_model.LinearExpr.weighted_sum(x, [c.latency_ps for c in cands])
    return model, x, chips, latency


def solve(cands: list[Candidate], num_units: int, objective: str, exact_chips: int | None, max_chips: int,
          seed: int, deterministic_s: float, hint: list[Candidate] | None = None) -> Solution | None:
    """Solve the model, first objective then second; None when no path exists."""
    model, x, chips, latency = build_model(cands, num_units, exact_chips, max_chips)
    first, second = (chips, latency) if objective == "chips" else (latency, chips)
    chosen = set(hint or ())
    start, work, statuses = time.perf_counter(), 0.0, []
    for goal in (first, second):
        model.clear_hints()
        if chosen:
            for c, v in zip(cands, x, strict=True):
                model.add_hint(v, c in chosen)
        model.minimize(goal)
        solver = _solver(seed, deterministic_s)
        status = run_solver(solver, model)
        work += solver.deterministic_time
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        statuses.append(status)
        chosen = {c for c, v in zip(cands, x, strict=True) if solver.value(v)}
        model.add(goal <= round(solver.objective_value))  # keep the first objective where it is
    stages = tuple(sorted(chosen, key=lambda c: c.first))
    status = "OPTIMAL" if all(st == cp_model.OPTIMAL for st in statuses) else "FEASIBLE"
    return Solution(stages, status, time.perf_counter() - start, work, len(cands))


def _solver(seed: int, deterministic_s: float) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.random_seed = seed
    solver.parameters.num_workers = 1
    solver.parameters.max_deterministic_time = deterministic_s
    return solver
