"""The graph IR verifier, generic over OPDEFS: arity, attributes, types, SSA order.

Run after every pass (compiler.passes.Pipeline); an error names the op by scope,
opcode and first result, so a broken pass is found where it broke the IR.
"""

from __future__ import annotations

from ir.errors import VerifyError
from ir.graph import Graph, Op, Value
from ir.ops import OPDEFS, TypeRuleError


def verify_graph(graph: Graph) -> None:
    defined: dict[str, Value] = {}
    for v in (*graph.inputs, *graph.params, *graph.state):
        _define(defined, v, f"graph {graph.name}")
    for op in graph.ops:
        where = describe(op)
        for v in op.operands:
            if defined.get(v.name) != v:
                why = "is used before it is defined" if v.name not in defined else (
                    f"has type {v.type} here but {defined[v.name].type} where defined")
                raise VerifyError(f"{where}: operand %{v.name} {why}")
        verify_op(op)
        for r in op.results:
            _define(defined, r, where)
    for v in graph.outputs:
        if defined.get(v.name) != v:
            raise VerifyError(f"graph {graph.name}: output %{v.name} is not defined")


def verify_op(op: Op) -> None:
    """One op against its OPDEFS row: operand count, attributes, and its type rule."""
    where = describe(op)
    opdef = OPDEFS[op.opcode]
    low, high = opdef.arity
    if not low <= len(op.operands) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise VerifyError(f"{where}: takes {want} operands, got {len(op.operands)}")
    allowed = {**opdef.attrs, **(opdef.optional or {})}
    attrs = op.attr
    for key in opdef.attrs:
        if key not in attrs:
            raise VerifyError(f"{where}: missing attribute {key!r}")
    for key, value in attrs.items():
        if key not in allowed:
            raise VerifyError(f"{where}: unknown attribute {key!r} (allowed: {', '.join(sorted(allowed)) or 'none'})")
        if not _is(value, allowed[key]):
            raise VerifyError(f"{where}: attribute {key!r} must be {allowed[key].__name__}, got {value!r}")
    try:
        expected = opdef.type_rule(tuple(v.type for v in op.operands), attrs)
    # Type rules index shapes and read attributes before all their checks can run, so a
    # malformed op (a 1-D rope input, a scalar allgather, recv shape "1xq") can fail inside them too.
    except (TypeRuleError, LookupError, ValueError, ArithmeticError) as e:
        raise VerifyError(f"{where}: {e if isinstance(e, TypeRuleError) else _malformed(e)}") from None
    got = tuple(r.type for r in op.results)
    if got != expected:
        raise VerifyError(f"{where}: results have types {_types(got)}, the op gives {_types(expected)}")


def describe(op: Op) -> str:
    result = f" %{op.results[0].name}" if op.results else ""
    return f"scope {op.scope or '(none)'}: {op.opcode.value}{result}"


def _define(defined: dict[str, Value], v: Value, where: str) -> None:
    if v.name in defined:
        raise VerifyError(f"{where}: %{v.name} is defined twice")
    defined[v.name] = v


def _is(value: object, kind: type) -> bool:
    """Exact types, so a bool is no int and a numpy scalar (which would not print) is
    caught here; an int is an acceptable float."""
    return type(value) is kind or (kind is float and type(value) is int)


def _malformed(e: Exception) -> str:
    return f"operands or attributes its type rule cannot read ({type(e).__name__}: {e})"


def _types(types) -> str:
    return "(" + ", ".join(map(str, types)) + ")"
