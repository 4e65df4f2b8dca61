"""The graph IR as text (grammar: ir/graph.lark). Canonical: parse(print(g)) prints the same text."""

from __future__ import annotations

import json
import re

from ir.graph import Graph, Op, Value

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def print_graph(graph: Graph) -> str:
    lines = [f"graph {_name(graph.name)} {{"]
    for keyword, values in (("input", graph.inputs), ("param", graph.params), ("state", graph.state)):
        lines.extend(f"  {keyword} {_value(v)}: {v.type}" for v in values)
    scope = None
    for op in graph.ops:
        if op.scope != scope:
            if scope is not None:
                lines.append("  }")
            lines.append(f"  scope {_name(op.scope)} {{")
            scope = op.scope
        lines.append("    " + print_op(op))
    if scope is not None:
        lines.append("  }")
    lines.append(" ".join(["  output", ", ".join(map(_value, graph.outputs))]).rstrip())
    lines.append("}")
    return "\n".join(lines) + "\n"


def print_op(op: Op) -> str:
    results = ", ".join(f"{_value(r)}: {r.type}" for r in op.results)
    text = f"{results} = {op.opcode.value}" if results else op.opcode.value
    if op.operands:
        text += " " + ", ".join(map(_value, op.operands))
    if op.attrs:
        text += " {" + ", ".join(f"{k} = {_literal(v)}" for k, v in op.attrs) + "}"
    return text


def _literal(v: int | float | str | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)


def _value(v: Value) -> str:
    return "%" + _name(v.name)


def _name(name: str) -> str:
    return name if _PLAIN.fullmatch(name) else json.dumps(name)
