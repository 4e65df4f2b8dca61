"""The graph IR: SSA values, params (weights), state (KV caches) and ops.

A Graph is immutable. Passes build new graphs with a `Builder`. Every op has a
`scope` (``embed``, ``layers.3``, ``head``): the unit the partitioner cuts along.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ir.ops import OPDEFS, Attrs, Cost, Opcode
from ir.types import DType, TensorType


@dataclass(frozen=True, slots=True)
class Value:
    """An SSA name with its type. Params and state are values too."""

    name: str
    type: TensorType

    def __str__(self) -> str:
        return f"%{self.name}"


@dataclass(frozen=True, slots=True)
class Op:
    """One operation. `attrs` is a sorted tuple of (key, value) pairs so ops hash."""

    opcode: Opcode
    operands: tuple[Value, ...]
    results: tuple[Value, ...]
    attrs: tuple[tuple[str, int | float | str | bool], ...] = ()
    scope: str = ""

    @property
    def attr(self) -> Attrs:
        return dict(self.attrs)

    @property
    def cost(self) -> Cost:
        ins = tuple(v.type for v in self.operands)
        outs = tuple(v.type for v in self.results)
        return OPDEFS[self.opcode].cost(ins, outs, self.attr)


@dataclass(frozen=True, slots=True)
class Graph:
    """A whole model phase (decode or prefill) or one chip's share of it."""

    name: str
    inputs: tuple[Value, ...]
    params: tuple[Value, ...]
    state: tuple[Value, ...]
    ops: tuple[Op, ...]
    outputs: tuple[Value, ...]

    def scopes(self) -> list[str]:
        """Scope names in first-use order."""
        return list(dict.fromkeys(op.scope for op in self.ops))

    def ops_in(self, scope: str) -> Iterator[Op]:
        return (op for op in self.ops if op.scope == scope)

    def param_bytes(self) -> int:
        return sum(p.type.nbytes for p in self.params)

    def state_bytes(self) -> int:
        return sum(s.type.nbytes for s in self.state)


def sorted_attrs(attrs: Attrs) -> tuple[tuple[str, int | float | str | bool], ...]:
    return tuple(sorted(attrs.items()))


@dataclass
class Builder:
    """Appends ops in SSA order; fresh result names come from a counter."""

    name: str
    scope: str = ""
    inputs: list[Value] = field(default_factory=list)
    params: list[Value] = field(default_factory=list)
    state: list[Value] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    _next: int = 0

    def input(self, name: str, type: TensorType) -> Value:
        value = Value(name, type)
        self.inputs.append(value)
        return value

    def param(self, name: str, dtype: DType, *shape: int) -> Value:
        value = Value(name, TensorType(dtype, shape))
        self.params.append(value)
        return value

    def new_state(self, name: str, dtype: DType, *shape: int) -> Value:
        value = Value(name, TensorType(dtype, shape))
        self.state.append(value)
        return value

    def op(self, opcode: Opcode, *operands: Value, name: str | None = None, **attrs) -> Value:
        """Append an op with one result whose type the op's type rule infers."""
        (result,) = self.op_n(opcode, *operands, names=None if name is None else (name,), **attrs)
        return result

    def op_n(self, opcode: Opcode, *operands: Value, names: tuple[str, ...] | None = None,
             **attrs) -> tuple[Value, ...]:
        types = OPDEFS[opcode].type_rule(tuple(v.type for v in operands), attrs)
        names = names or tuple(self._fresh() for _ in types)
        results = tuple(Value(n, t) for n, t in zip(names, types, strict=True))
        self.ops.append(Op(opcode, operands, results, sorted_attrs(attrs), self.scope))
        return results

    def _fresh(self) -> str:
        self._next += 1
        return str(self._next - 1)

    def finish(self, *outputs: Value) -> Graph:
        return Graph(self.name, tuple(self.inputs), tuple(self.params), tuple(self.state), tuple(self.ops), outputs)
