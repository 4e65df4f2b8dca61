"""Graph IR text to a Graph (grammar: ir/graph.lark), checked as it is read.

Every error is a ParseError naming file, line and column: syntax errors from lark,
and meaning errors (unknown opcode or dtype, undefined or redefined value, a result
type that disagrees with the op's type rule) from the tree walk below.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from lark import Lark, Token, Tree, UnexpectedInput

from ir.errors import ParseError, VerifyError
from ir.graph import Graph, Op, Value, sorted_attrs
from ir.ops import Opcode
from ir.types import DType, TensorType
from ir.verify import verify_op

_DECLS = ("input", "param", "state")


@cache
def _parser() -> Lark:
    return Lark((Path(__file__).parent / "graph.lark").read_text(), parser="lalr", propagate_positions=True)


def parse_graph(text: str, filename: str = "<string>") -> Graph:
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise ParseError(f"{filename}:{e.line}:{e.column}: {_expected(e)}") from None
    return _Reader(filename).graph(tree)


class _Reader:
    """Walks the parse tree once, keeping the values defined so far."""

    def __init__(self, filename: str):
        self.filename = filename
        self.defined: dict[str, Value] = {}

    def graph(self, tree: Tree) -> Graph:
        name, *items = tree.children
        decls: dict[str, list[Value]] = {k: [] for k in _DECLS}
        ops: list[Op] = []
        outputs: tuple[Value, ...] = ()
        for item in items:
            if item.data == "decl":
                kind, value, type_ = item.children
                decls[str(kind)].append(self.define(_text(value), self.type(type_), value))
            elif item.data == "block":
                scope, *body = item.children
                ops.extend(self.op(op, _text(scope)) for op in body)
            else:
                outputs = tuple(self.use(v) for v in item.children)
        return Graph(_text(name), *(tuple(decls[k]) for k in _DECLS), tuple(ops), outputs)

    def op(self, tree: Tree, scope: str) -> Op:
        *results, opcode, operands = tree.children
        attrs = None
        if operands.data == "attrs":
            *results, opcode, operands, attrs = tree.children
        try:
            code = Opcode(str(opcode))
        except ValueError:
            raise self.error(opcode, f"unknown opcode {str(opcode)!r}") from None
        values = tuple(self.use(v) for v in operands.children)
        literal = self.attrs(attrs.children if attrs else [])
        typed = tuple(Value(_text(r.children[0]), self.type(r.children[1])) for r in results)
        op = Op(code, values, typed, sorted_attrs(literal), scope)
        try:
            verify_op(op)
        except VerifyError as e:
            raise self.error(opcode, str(e)) from None
        for r, v in zip(results, typed, strict=True):
            self.define(v.name, v.type, r.children[0])
        return op

    def attrs(self, trees: list[Tree]) -> dict[str, int | float | str | bool]:
        out: dict[str, int | float | str | bool] = {}
        for key, value in (a.children for a in trees):
            if str(key) in out:  # a dict would silently keep the last one
                raise self.error(key, f"attribute {str(key)!r} is given twice")
            out[str(key)] = _literal(value)
        return out

    def type(self, tree: Tree) -> TensorType:
        dtype, *dims = tree.children
        try:
            return TensorType(DType(str(dtype)), tuple(int(d) for d in dims))
        except ValueError:
            choices = ", ".join(d.value for d in DType)
            raise self.error(dtype, f"unknown element type {str(dtype)!r} (one of {choices})") from None

    def define(self, name: str, type_: TensorType, at: Tree) -> Value:
        if name in self.defined:
            raise self.error(at, f"%{name} is defined twice")
        self.defined[name] = Value(name, type_)
        return self.defined[name]

    def use(self, tree: Tree) -> Value:
        name = _text(tree)
        if name not in self.defined:
            raise self.error(tree, f"%{name} is used before it is defined")
        return self.defined[name]

    def error(self, at: Tree | Token, message: str) -> ParseError:
        line, column = (at.line, at.column) if isinstance(at, Token) else (at.meta.line, at.meta.column)
        return ParseError(f"{self.filename}:{line}:{column}: {message}")


def _text(tree: Tree) -> str:
    """A name or value: plain, or a JSON-quoted string."""
    (token,) = tree.children
    return json.loads(token) if token.type == "STRING" else str(token)


def _literal(tree: Tree) -> int | float | str | bool:
    if tree.data in ("true", "false"):
        return tree.data == "true"
    (token,) = tree.children
    if tree.data == "string":
        return json.loads(token)
    text = str(token)
    return float(text) if any(c in text for c in ".eEn") else int(text)


# How the grammar's pattern terminals read in a message; string terminals are shown quoted.
_TERMINALS = {"_NL": "end of line", "NAME": "a name", "STRING": "a quoted string", "NUMBER": "a number",
              "INT": "an integer", "OPCODE": "an opcode", "DECL": "input, param or state"}


def _expected(e: UnexpectedInput) -> str:
    names = getattr(e, "expected", None) or getattr(e, "allowed", None) or ()
    expected = sorted({_terminal(n) for n in names})
    token = getattr(e, "token", None)
    if token is not None and token.type == "$END":
        got = "end of input"
    else:
        got = token if token is not None else getattr(e, "char", "")
        got = "end of line" if str(got).strip() == "" else repr(str(got))
    if len(expected) > 1:
        return f"unexpected {got}, expected one of {', '.join(expected)}"
    return f"unexpected {got}" + "".join(f", expected {x}" for x in expected)


def _terminal(name: str) -> str:
    if name in _TERMINALS:
        return _TERMINALS[name]
    pattern = _parser().get_terminal(name).pattern
    return repr(pattern.value) if pattern.type == "str" else name
