"""The backend table: what each kind of machine plans and lowers with, keyed by (backend, opcode).

A backend is data the driver hands down (the plan and codegen layers never import this package):
its cost rules (how long an op takes where it is placed), its emission rules (the instructions an op
becomes), how it lays a model out (the candidate generator for the shared search), and the Program
dialect it writes. As JAX registers lowerings per platform, an op without a rule for the target's
backend stops the command before planning, in one line naming the op and the target; no default
rule ever runs in its place. A target with no instruction set (`chip.isa = "none"`: the GPUs) plans
and compares; `compile` refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from compiler.backends.chips import lower as chips_lower
from compiler.backends.chips.planner import ChipLayout
from compiler.backends.wafer import lower as wafer_lower
from compiler.backends.wafer.cost import LOWERED, WORK
from compiler.backends.wafer.planner import WaferLayout
from compiler.codegen.mla import refuse_block_scaled_kv_b
from compiler.codegen.rules import EMIT
from compiler.partition.shard_cost import COSTED
from ir.errors import ConfigError
from ir.graph import Graph, Op
from ir.ops import Opcode
from targets.spec import SystemSpec

# Lowered by the collectives engine and the stage builder rather than an op rule.
_STRUCTURAL = frozenset({Opcode.ALLREDUCE, Opcode.ALLGATHER, Opcode.SEND, Opcode.RECV})


@dataclass(frozen=True)
class Backend:
    """One kind of machine's rules (see the module docstring)."""

    name: str
    cost_rules: Collection[Opcode]
    emit_rules: Collection[Opcode]
    layout: Callable  # (decode, prefill, system, options) -> a plan.search.Layout
    lower: Callable  # (plan, decode, prefill, each variant's chunk graph, system, options, progress) -> Lowering
    dialect: str  # the Program dialect its lowering writes (ir.isa.DIALECTS)
    # Causal prefill: each chunk's attention streams only the cache it can see (its reach), so the plan
    # costs, and the lowering builds, one chunk graph per reach variant (compiler.plan.reach); false:
    # every chunk streams the whole cache, in the cost model as in the lowering.
    causal: bool
    refuse: Callable[[Op], None] = lambda op: None  # an emission rule's own refusal of one op's form
    # Prefill's LM head over every prompt row (True) or only each sequence's last row (False: the
    # rows op picks them first, so the head's work and activations are one row a sequence a chunk).
    all_logits: bool = False
    # Its layout can run a tied table's lookup on the head's chips (layout(..., embedding=True), Stage.embedding).
    embeddings: bool = False

    def check(self, graph: Graph, system: SystemSpec) -> None:
        """Every op has a cost rule here, or one line names the first that does not."""
        _refuse_missing(graph, system, self.cost_rules, f"{self.name} backend has no cost rule")

    def check_lowerable(self, graph: Graph, system: SystemSpec) -> None:
        """The target has an instruction set, and every op an emission rule for it."""
        if system.chip.isa == "none":
            raise ConfigError(f"{system.name}: compile needs an instruction set, and {system.chip.name} has none "
                              "(chip.isa = \"none\"): plan and compare it instead")
        _refuse_missing(graph, system, set(self.emit_rules) | _STRUCTURAL, f"{self.name} backend cannot lower")
        for op in graph.ops:
            self.refuse(op)


def _refuse_missing(graph: Graph, system: SystemSpec, rules: Collection[Opcode], what: str) -> None:
    first: dict[Opcode, Op] = {}
    for op in graph.ops:
        if op.opcode not in rules:
            first.setdefault(op.opcode, op)
    if first:
        ops = ", ".join(f"{code.value} ({_where(op)})" for code, op in first.items())
        raise ConfigError(f"{system.name}: the {what} {ops}; the model cannot run on this target")


def _where(op: Op) -> str:
    name = f"%{op.results[0].name}" if op.results else op.opcode.value
    return f"{name} in scope {op.scope}" if op.scope else name


def _chip_refusals(op: Op) -> None:
    if op.opcode is Opcode.MLA_ATTENTION:
        refuse_block_scaled_kv_b(op)


BACKENDS: dict[str, Backend] = {
    "chips": Backend("chips", COSTED, EMIT, ChipLayout.of, chips_lower.lower, "queues", True, _chip_refusals,
                     embeddings=True),
    "wafer": Backend("wafer", WORK, LOWERED, WaferLayout.of, wafer_lower.lower, "roles", False,
                     all_logits=True),  # no wafer rule for the rows op yet
}


def backend_for(system: SystemSpec) -> Backend:
    """A mesh of cores takes the wafer backend; every other topology the chip backend."""
    return BACKENDS["wafer" if system.is_mesh else "chips"]
