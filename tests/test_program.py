"""The Program container, its binary file and its assembly text: exact round trips and clear errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ir.asm import parse_asm, print_asm
from ir.errors import ParseError
from ir.isa import UNIT_OF, Fmt, Fn, Op
from ir.program import DTYPES, NAMES, Flag, Program, empty_columns
from ir.program_io import dumps, load_program, loads, save_program


def _bounded(name: str) -> st.SearchStrategy[int]:
    info = np.iinfo(DTYPES[name])
    return st.integers(int(info.min), int(info.max))


@st.composite
def programs(draw, valid_enums: bool = True) -> Program:
    """Random programs: any column value the binary holds; opcodes, fns, formats and
    flags drawn from the ISA (or, with valid_enums off, any byte)."""
    chips = draw(st.integers(1, 6))
    rows = draw(st.integers(0, 30))
    cols = empty_columns(rows)
    for name in NAMES:
        cols[name] = np.array(draw(st.lists(_bounded(name), min_size=rows, max_size=rows)), DTYPES[name])
    cols["chip"] = np.array(draw(st.lists(st.integers(0, chips - 1), min_size=rows, max_size=rows)), np.int32)
    if valid_enums:
        ops = draw(st.lists(st.sampled_from(list(Op)), min_size=rows, max_size=rows))
        cols["op"] = np.array(ops, np.uint8)
        cols["kind"] = np.array([UNIT_OF[o] for o in ops], np.uint8)
        cols["fn"] = np.array(draw(st.lists(st.sampled_from(list(Fn)), min_size=rows, max_size=rows)), np.uint8)
        cols["dtype"] = np.array(draw(st.lists(st.sampled_from(list(Fmt)), min_size=rows, max_size=rows)), np.uint8)
        cols["flags"] = np.array(draw(st.lists(st.integers(0, 7), min_size=rows, max_size=rows)), np.uint8)
    meta = draw(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=8), max_size=3))
    clock = draw(st.floats(1e3, 1e12, allow_nan=False))
    phase = draw(st.sampled_from(["decode", "prefill"]))
    return Program.build(phase, draw(st.sampled_from(["lpu", "lpu-mini", "x\"y"])), chips, clock, cols, meta)


@settings(max_examples=100, deadline=None)
@given(programs(valid_enums=False))
def test_binary_round_trip_is_exact(program):
    data = dumps(program)
    assert loads(data) == program
    assert dumps(loads(data)) == data


@settings(max_examples=100, deadline=None)
@given(programs())
def test_assembly_round_trip_is_exact(program):
    text = print_asm(program)
    back = parse_asm(text)
    assert back == program
    assert print_asm(back) == text


@settings(max_examples=50, deadline=None)
@given(programs(valid_enums=False))
def test_assembly_spells_unknown_enum_values_as_numbers(program):
    assert parse_asm(print_asm(program)) == program


def test_build_sorts_rows_into_queues_stably():
    cols = empty_columns(4)
    cols["chip"][:] = [1, 0, 0, 0]
    cols["kind"][:] = [0, 2, 0, 0]
    cols["issue"][:] = [0, 0, 9, 9]
    cols["tag"][:] = [0, 1, 2, 3]
    p = Program.build("decode", "lpu", 2, 9e8, cols)
    assert p.cols["tag"].tolist() == [2, 3, 1, 0]  # chip 0 mem (issue 9, ties in input order), chip 0 vxm, chip 1
    assert [(c, k, u, s.stop - s.start) for c, k, u, s in p.queues()] == [(0, 0, 0, 2), (0, 2, 0, 1), (1, 0, 0, 1)]
    assert p.chip_slice(0) == slice(0, 3) and p.chip_slice(1) == slice(3, 4)


def test_build_rejects_bad_columns():
    cols = empty_columns(2)
    with pytest.raises(ValueError, match="chip ids"):
        Program.build("decode", "lpu", 1, 9e8, dict(cols, chip=np.array([0, 1], np.int32)))
    with pytest.raises(ValueError, match="missing"):
        Program.build("decode", "lpu", 1, 9e8, {k: v for k, v in cols.items() if k != "tag"})
    with pytest.raises(ValueError, match="do not fit"):
        Program.build("decode", "lpu", 1, 9e8, dict(cols, unit=np.array([0, 300])))


def test_makespan_is_the_last_end():
    cols = empty_columns(2)
    cols["issue"][:] = [10, 4]
    cols["cycles"][:] = [5, 20]
    assert Program.build("decode", "lpu", 1, 9e8, cols).makespan == 24


def test_save_is_atomic_and_load_names_the_file(tmp_path):
    cols = empty_columns(3)
    p = Program.build("decode", "lpu", 1, 9e8, cols, {"stages": []})
    path = tmp_path / "decode.prog"
    save_program(p, path)
    assert load_program(path) == p
    assert [f.name for f in tmp_path.iterdir()] == ["decode.prog"]  # no temporary left behind
    data = path.read_bytes()
    for broken, why in ((b"NOTAPROG" + data[8:], "magic"), (data[:-5], "corrupt"), (data[:10], "truncated")):
        path.write_bytes(broken)
        with pytest.raises(ParseError, match=f"decode.prog: .*{why}"):
            load_program(path)
    with pytest.raises(ParseError, match="cannot read"):
        load_program(tmp_path / "missing.prog")


def test_assembly_errors_name_line_and_column():
    good = print_asm(Program.build("decode", "lpu", 1, 9e8, empty_columns(1)))
    assert "@0 +0 read" in good
    with pytest.raises(ParseError, match=r"x.s:6:\d+: unknown Op 'jump'"):
        parse_asm(good.replace("read", "jump"), "x.s")
    with pytest.raises(ParseError, match=r"x.s:6:\d+: bad field 'peer=x'"):
        parse_asm(good.replace("read", "read peer=x"), "x.s")
    with pytest.raises(ParseError, match=r"x.s:6: m=.*does not fit"):
        parse_asm(good.replace("read", "read m=99999999999"), "x.s")
    with pytest.raises(ParseError, match=r"x.s:\d+:\d+: unexpected"):
        parse_asm(good.replace("chip 0 {", "chip zero {"), "x.s")


def test_a_window_prints_only_overlapping_instructions():
    cols = empty_columns(3)
    cols["chip"][:] = [0, 0, 1]
    cols["issue"][:] = [0, 100, 50]
    cols["cycles"][:] = [10, 10, 10]
    p = Program.build("decode", "lpu", 2, 9e8, cols)
    part = parse_asm(print_asm(p, chips=[0], cycles=(5, 100)))
    assert part.cols["issue"].tolist() == [0]
    assert len(parse_asm(print_asm(p, cycles=(55, 101)))) == 2


def test_flags_print_by_name():
    cols = empty_columns(1)
    cols["op"][:] = Op.MXM
    cols["kind"][:] = UNIT_OF[Op.MXM]
    cols["flags"][:] = Flag.ACCUMULATE | Flag.LAST
    cols["dtype"][:] = Fmt.I8
    assert "mxm fmt=i8 flags=accumulate|last" in print_asm(Program.build("decode", "lpu", 1, 9e8, cols))
