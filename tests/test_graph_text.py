"""The graph IR's text form: exact round trips, golden files, and errors that name the line."""

import difflib
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.planner import lower_one
from ir.errors import ParseError, VerifyError
from ir.graph import Builder, Graph, Op, Value
from ir.ops import Opcode
from ir.parser import parse_graph
from ir.printer import print_graph
from ir.types import DType, TensorType
from ir.verify import verify_graph

GOLDENS = Path(__file__).parent / "goldens"


def same(a: Graph, b: Graph) -> bool:
    """Equal, with attribute values of the same Python type (True == 1 would hide a bool read as int)."""
    types = [[type(v) for _, v in op.attrs] for op in a.ops] == [[type(v) for _, v in op.attrs] for op in b.ops]
    return a == b and types


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_real_graphs_round_trip_exactly(phase, precision):
    graph = lower_one("llama-3.1-8b", phase, CompileOptions(precision=precision), layers=1)
    verify_graph(graph)
    text = print_graph(graph)
    back = parse_graph(text, "llama.ir")
    assert same(back, graph)
    assert print_graph(back) == text


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_golden_decode_layer(precision, request):
    """One decoder layer of Llama-3.1-8B, as `sramflow lower --layers 1` prints it."""
    suffix = "" if precision == "fp16" else f".{precision}"
    golden = GOLDENS / f"llama-3.1-8b.decode.1layer{suffix}.ir"
    text = print_graph(lower_one("llama-3.1-8b", "decode", CompileOptions(precision=precision), layers=1))
    if request.config.getoption("--update-goldens"):
        golden.write_text(text)
    expected = golden.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(golden), "now"))
    assert not diff, f"graph IR changed (rerun with --update-goldens if intended):\n{diff}"


# ---------------------------------------------------------------- generated graphs

NAMES = st.text("abcxyz019_.-", min_size=1, max_size=8) | st.sampled_from(
    ["0", "x y", 'q"uote', "é", "%", "", "input", "scope", "output", "true", "nan", "inf", "f16", "1e5", "-1"])
FLOATS = st.sampled_from([1e-05, 0.1, 1e300, 5e-324, -0.0, 0.0, 500000.0, math.inf, -math.inf, 2.5, -3e-7]) | \
    st.floats(allow_nan=False)
DTYPES = st.sampled_from([DType.F16, DType.BF16, DType.F32])
SCOPES = st.sampled_from(["", "embed", "layers.0", "a b", "head", "scope"])


@st.composite
def graphs(draw) -> Graph:
    """Small valid graphs: a chain of element-wise, norm, matmul, gather, topk, argmax, send/recv
    ops beside unused inputs and state of any type, over odd-but-legal names, attributes and
    scope changes."""
    names = iter(draw(st.lists(NAMES, min_size=60, max_size=60, unique=True)))
    b = Builder(draw(NAMES))
    for _ in range(draw(st.integers(0, 3))):  # any dtype and rank, scalars included
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        b.input(next(names), TensorType(draw(st.sampled_from(list(DType))), tuple(shape)))
    if draw(st.booleans()):
        b.new_state(next(names), DType.F16, 1, 2, 3)
    dtype = draw(DTYPES)
    rows, width = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    x = b.input(next(names), TensorType(dtype, (rows, width)))
    for _ in range(draw(st.integers(0, 8))):
        b.scope = draw(SCOPES)
        x, width = _chain_op(draw, b, names, x, rows, width, dtype)
    ids = b.op(Opcode.ARGMAX, x, name=next(names))
    return b.finish(*draw(st.sampled_from([(x, ids), (ids,), ()])))


def _chain_op(draw, b: Builder, names, x: Value, rows: int, width: int, dtype: DType) -> tuple[Value, int]:
    """One random op on the chain's value x[rows, width]; returns the new chain value and width."""
    kind = draw(st.sampled_from(["add", "mul", "silu", "rmsnorm", "matmul", "allgather", "recv", "send", "topk"]))
    name = next(names)
    if kind in ("add", "mul"):
        return b.op(Opcode(kind), x, x, name=name), width
    if kind == "silu":
        return b.op(Opcode.SILU, x, name=name), width
    if kind == "rmsnorm":
        return b.op(Opcode.RMSNORM, x, b.param(next(names), dtype, width), name=name, eps=draw(FLOATS)), width
    if kind == "matmul":
        out, transpose = draw(st.integers(1, 6)), draw(st.booleans())
        w = b.param(next(names), dtype, *((out, width) if transpose else (width, out)))
        extra = draw(st.dictionaries(st.sampled_from(["split", "heads"]), st.just(1)))
        if "split" in extra:
            extra["split"] = draw(st.sampled_from(["col", "row", 'we"ird\n']))
        if transpose or draw(st.booleans()):
            extra["transpose_b"] = transpose
        return b.op(Opcode.MATMUL, x, w, name=name, **extra), out
    if kind == "allgather":
        group = draw(st.integers(1, 3))
        return b.op(Opcode.ALLGATHER, x, name=name, group=group), width * group
    if kind == "recv":
        return b.op(Opcode.RECV, name=name, peer=draw(st.integers(-2, 9)), shape=f"{rows}x{width}",
                    dtype=dtype.value), width
    if kind == "topk":  # two results; the chain goes on from x
        b.op_n(Opcode.TOPK, x, names=(name, next(names)), k=draw(st.integers(1, width)))
        return x, width
    b.op_n(Opcode.SEND, x, peer=draw(st.integers(0, 9)))
    return x, width


@settings(max_examples=100, deadline=None)
@given(graphs())
def test_generated_graphs_round_trip_exactly(graph):
    verify_graph(graph)
    text = print_graph(graph)
    back = parse_graph(text)
    assert print_graph(back) == text
    assert same(back, graph)


def test_nan_attributes_print_and_parse():
    b = Builder("g")
    x = b.input("x", TensorType(DType.F16, (1, 4)))
    w = b.param("w", DType.F16, 4)
    b.op(Opcode.RMSNORM, x, w, eps=math.nan)
    text = print_graph(b.finish())
    assert "eps = nan" in text and print_graph(parse_graph(text)) == text


# ---------------------------------------------------------------- errors

GOOD = """\
graph g {
  input %x: f16[1,4]
  param %w: f16[4]
  scope layers.0 {
    %y: f16[1,4] = rmsnorm %x, %w {eps = 1e-05}
  }
  output %y
}
"""


def test_the_example_parses_and_comments_are_ignored():
    g = parse_graph(GOOD.replace("  output", "  // a comment\n  output"))
    assert [op.opcode for op in g.ops] == [Opcode.RMSNORM] and g.outputs[0].name == "y"


@pytest.mark.parametrize(("edit", "message"), [
    (("%x, %w", "%x %w"), r"g.ir:5:\d+: unexpected"),
    (("%x, %w", "%x, %v"), r"g.ir:5:\d+: %v is used before it is defined"),
    (("%y: f16[1,4] =", "%x: f16[1,4] ="), r"g.ir:5:\d+: %x is defined twice"),
    (("f16[4]", "f17[4]"), r"g.ir:3:\d+: unknown element type 'f17'"),
    (("%y: f16[1,4] =", "%y: f16[1,5] ="), r"g.ir:5:\d+: .*results have types \(f16\[1,5\]\), the op gives"),
    (("rmsnorm", "rmsnorn"), r"g.ir:5:\d+: unknown opcode 'rmsnorn'"),
    (("{eps = 1e-05}", ""), r"g.ir:5:\d+: .*missing attribute 'eps'"),
    (("{eps = 1e-05}", "{eps = 1e-05, bad = 1}"), r"g.ir:5:\d+: .*unknown attribute 'bad'"),
    (("output %y", "output %z"), r"g.ir:7:\d+: %z is used before it is defined"),
    (("{eps = 1e-05}", "{eps = 1e-05, eps = 1}"), r"g.ir:5:\d+: attribute 'eps' is given twice"),
    (("  output", "  output %y\n  output"), r"g.ir:8:3: unexpected 'output', expected '}'"),
    (("output %y\n}", "output %y"), r"g.ir:7:\d+: unexpected end of input, expected '}'"),
    (("rmsnorm %x, %w {eps = 1e-05}", 'recv {dtype = "f16", peer = 1, shape = "1xq"}'),
     r"g.ir:5:\d+: .*recv %y: .*type rule cannot read"),
    (("rmsnorm %x, %w {eps = 1e-05}", "allgather %x, %w {group = 2}"), r"g.ir:5:\d+: .*takes 1 operands, got 2"),
])
def test_errors_name_file_line_and_column(edit, message):
    with pytest.raises(ParseError, match=message):
        parse_graph(GOOD.replace(*edit), "g.ir")


def test_verifier_names_the_broken_op():
    x = Value("x", TensorType(DType.F16, (1, 4)))
    w = Value("w", TensorType(DType.F16, (4,)))
    y = Value("y", x.type)
    norm = Op(Opcode.RMSNORM, (x, w), (y,), (("eps", 1e-5),), "layers.0")
    ok = Graph("g", (x,), (w,), (), (norm,), (y,))
    verify_graph(ok)
    cases = [
        (Graph("g", (x,), (w,), (), (Op(Opcode.RMSNORM, (x, w), (y,), (), "layers.0"),), (y,)), "missing attribute"),
        (Graph("g", (x,), (w,), (), (Op(Opcode.SILU, (x, w), (y,), (), "layers.0"),), (y,)), "takes 1 operands"),
        (Graph("g", (x,), (), (), (norm,), (y,)), "%w is used before it is defined"),
        (Graph("g", (x,), (w,), (), (Op(Opcode.RMSNORM, (x, w), (y,), (("eps", True),), "layers.0"),), (y,)),
         "must be float"),
        (Graph("g", (x,), (w, x), (), (norm,), (y,)), "%x is defined twice"),
        (Graph("g", (x,), (w,), (), (norm,), (w, x, Value("z", x.type))), "output %z is not defined"),
        (Graph("g", (x,), (w,), (), (Op(Opcode.RMSNORM, (x, w), (y,), (("eps", np.float64(1e-5)),), "layers.0"),),
               (y,)), "must be float"),
        (Graph("g", (x,), (w,), (), (Op(Opcode.ALLGATHER, (w,), (y,), (("group", 2),), "layers.0"),), (y,)),
         "results have types"),
    ]
    for graph, message in cases:
        with pytest.raises(VerifyError, match=f"scope layers.0: .*{message}|graph g: .*{message}"):
            verify_graph(graph)


def test_lower_prints_text_that_parses(capsys):
    assert main(["lower", "llama-3.1-8b", "--layers", "1", "--precision", "int8"]) == 0
    graph = parse_graph(capsys.readouterr().out, "<stdout>")
    assert any(p.type.dtype is DType.I8 for p in graph.params)
    assert main(["lower", "llama-3.1-8b", "--layers", "1", "--phase", "prefill", "--prompt", "32"]) == 0
    assert parse_graph(capsys.readouterr().out).inputs[0].type.shape == (32,)
