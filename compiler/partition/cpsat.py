"""The CP-SAT stage model: choose a path of candidate stages through the units.

Formulation (a shortest path with a side constraint). Boundaries 0..U sit between
units; candidate c covers units [a_c, b_c) on t_c chips with decode time l_c.

    x_c in {0, 1}
    sum_{c: a_c = k} x_c - sum_{c: b_c = k} x_c = [k = 0] - [k = U]   for every k
    C = sum_c t_c x_c,   C = N (--chips) or C <= M (--max-chips, target size)
    minimise  W * C + sum_c l_c x_c      (objective "chips"; W > any latency sum)
    minimise  sum_c l_c x_c + C / (M+1)  (objective "latency"; scaled to integers)

The flow constraints make the chosen stages tile the units exactly once in
order; stage hand-offs are part of l_c. Solving is deterministic: a fixed seed,
one worker and a deterministic time limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from compiler.partition.candidates import Candidate


@dataclass(frozen=True, slots=True)
class Solution:
    """The chosen stages, in order, and how the solver got there."""

    stages: tuple[Candidate, ...]
    status: str  # "OPTIMAL" | "FEASIBLE"
    wall_s: float
    deterministic_s: float
    candidates: int


def build_model(cands: list[Candidate], num_units: int, objective: str, exact_chips: int | None,
                max_chips: int) -> tuple[cp_model.CpModel, list[cp_model.IntVar]]:
    """The model above, as a pure function of its inputs."""
    model = cp_model.CpModel()
    x = [model.new_bool_var(f"x{i}") for i in range(len(cands))]
    out: list[list[cp_model.IntVar]] = [[] for _ in range(num_units + 1)]
    into: list[list[cp_model.IntVar]] = [[] for _ in range(num_units + 1)]
    for c, v in zip(cands, x, strict=True):
        out[c.first].append(v)
        into[c.stop].append(v)
    for k in range(num_units + 1):
        model.add(sum(out[k]) - sum(into[k]) == (k == 0) - (k == num_units))
    chips = sum(c.tp * v for c, v in zip(cands, x, strict=True))
    if exact_chips is not None:
        model.add(chips == exact_chips)
    else:
        model.add(chips <= max_chips)
    latency = sum(c.latency_ps * v for c, v in zip(cands, x, strict=True))
    if objective == "chips":
        weight = 1 + sum(max_latency_per_unit(cands, num_units))
        model.minimize(weight * chips + latency)
    else:
        model.minimize((max_chips + 1) * latency + chips)
    return model, x


def max_latency_per_unit(cands: list[Candidate], num_units: int) -> list[int]:
    """An upper bound on any path's latency, split by first unit (for weighting)."""
    worst = [0] * num_units
    for c in cands:
        worst[c.first] = max(worst[c.first], c.latency_ps)
    return worst


def solve(cands: list[Candidate], num_units: int, objective: str, exact_chips: int | None, max_chips: int,
          seed: int, deterministic_s: float, hint: list[Candidate] | None = None) -> Solution | None:
    """Solve the model; None when no path exists."""
    model, x = build_model(cands, num_units, objective, exact_chips, max_chips)
    if hint:
        chosen = set(hint)
        for c, v in zip(cands, x, strict=True):
            model.add_hint(v, c in chosen)
    solver = cp_model.CpSolver()
    solver.parameters.random_seed = seed
    solver.parameters.num_workers = 1
    solver.parameters.max_deterministic_time = deterministic_s
    start = time.perf_counter()
    status = solver.solve(model)
    wall = time.perf_counter() - start
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    stages = tuple(sorted((c for c, v in zip(cands, x, strict=True) if solver.value(v)), key=lambda c: c.first))
    return Solution(stages, solver.status_name(status), wall, solver.deterministic_time, len(cands))
