"""Sweep specs: each mistake named by file, line and field; ranges, target overrides, Pareto fronts as properties."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.planner import make_plan
from compiler.sweep.command import job_of
from compiler.sweep.pareto import Goal, front
from compiler.sweep.points import expand
from compiler.sweep.spec import load_spec
from compiler.sweep.task import run_job
from compiler.sweep.version import sramflow_version
from ir.errors import ConfigError
from targets import load_target
from targets.overrides import dump_toml, override

GOOD_AXES = 'model = ["tiny-llama"]\ntarget = ["lpu-mini"]\n'

# (spec text, the key the error names, the rest of the message, the line it names)
MISTAKES = [
    ('[axes]\nmodel = ["tiny-llama"]\ntarget = ["lpu-mini"]\ncontxt = [1024]\n', "axes.contxt",
     "unknown key; did you mean 'axes.context'?", 4),
    (f'[axes]\n{GOOD_AXES}context = ["4096"]\n', "axes.context", "expected a whole number, got '4096'", 4),
    (f"[axes]\n{GOOD_AXES}batch = [1, 2.5]\n", "axes.batch[1]", "expected a whole number, got 2.5", 4),
    (f'[axes]\n{GOOD_AXES}precision = ["fp16", "fp12"]\n', "axes.precision[1]",
     "--precision must be one of fp16, fp8, int8, int4, nvfp4, mxfp4, mxfp8, got 'fp12'", 4),
    ('[axes]\nmodel = ["tiny-llama"]\ntarget = ["lpu-mini", "lpx"]\n', "axes.target[1]",
     "unknown target preset 'lpx'; did you mean 'lpu'? (presets: b200, h100, lpu, lpu-mini, lpu3, rubin, wse3; "
     "or a .toml path relative to the spec)", 3),
    ('[axes]\nmodel = ["tiny-lama"]\ntarget = ["lpu-mini"]\n', "axes.model[0]", "unknown model preset 'tiny-lama'; "
     "did you mean 'tiny-llama'?", 2),
    (f'[axes]\n{GOOD_AXES}[axes.target_fields]\n"chip.sram" = ["1 MiB"]\n', "axes.target_fields.chip.sram",
     "lpu-mini (a chip target) has no field 'chip.sram'", 5),
    (f'[axes]\n{GOOD_AXES}[axes.target_fields]\n"chip.sram_bytes" = ["1 MiB", "lots"]\n',
     "axes.target_fields.chip.sram_bytes[1]", "on lpu-mini: expected a size like '230 MB', got 'lots'", 5),
    (f'[axes]\n{GOOD_AXES}[axes.target_fields]\n"chip.sram_bytes" = ["4 KiB"]\n', "axes.target_fields.chip.sram_bytes",
     "on lpu-mini: chip.program_reserve_bytes: must be less than chip.sram_bytes (4096)", 5),
    ('[axes]\nmodel = "tiny-llama"\ntarget = ["lpu-mini", "wse3"]\n[axes.target_fields]\nmesh_rows = [24]\n',
     "axes.target_fields.mesh_rows", "on lpu-mini: mesh_rows: only a mesh topology has a grid, not dragonfly", 5),
    ('[axes]\nmodel = "tiny-llama"\ntarget = ["lpu-mini", "wse3"]\n[axes.target_fields]\n'
     '"chip.sram_bytes" = ["220 MiB"]\n',
     "axes.target_fields.chip.sram_bytes", "a wafer's chip is one core and a chip target's is a whole chip, so "
     "chip.sram_bytes means two things in this spec; sweep wafers in a spec of their own", 5),
    (f"[axes]\n{GOOD_AXES}context = {{ from = 4096, to = 1024, times = 2 }}\n", "axes.context",
     "range 'from' (4096) is above 'to' (1024)", 4),
    (f"[axes]\n{GOOD_AXES}context = {{ from = 1024, to = 4096, tims = 2 }}\n", "axes.context",
     "unknown range key 'tims'; did you mean 'times'?", 4),
    (f"[axes]\n{GOOD_AXES}context = {{ from = 1024, to = 4096, times = 2, step = 8 }}\n", "axes.context",
     "a range needs from, to and exactly one of times or step", 4),
    (f'[sweep]\nrun = "compile"\n[axes]\n{GOOD_AXES}', "sweep.run",
     "must be one of 'plan', 'compile+run', got 'compile'; did you mean 'compile+run'?", 2),
    (f'[sweep]\ntokens = 4\n[axes]\n{GOOD_AXES}', "sweep.tokens", 'applies to run = "compile+run" only', 2),
    (f"[axes]\n{GOOD_AXES}context = [1024, 1024]\n", "axes.context[1]", "1024 is listed twice", 4),
    (f"[axes]\n{GOOD_AXES}batch = []\n", "axes.batch", "needs at least one value", 4),
    ('[axes]\nmodel = ["tiny-llama"]\n', "axes", "missing axis 'target'", 1),
    (f"[axis]\n{GOOD_AXES}", "axis", "unknown key; did you mean 'axes'?", 1),
]


@pytest.mark.parametrize(("text", "key", "message", "line"), MISTAKES, ids=[m[1] for m in MISTAKES])
def test_spec_mistakes_name_file_line_and_field(tmp_path, capsys, text, key, message, line):
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    assert main(["sweep", str(spec)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sramflow: error: {spec}:{line}: {key}: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # no sweep directory made


def test_invalid_toml_names_its_line(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text(f"[axes]\n{GOOD_AXES}context = [1024,, 2048]\n")
    assert main(["sweep", str(spec)]) == 1
    assert capsys.readouterr().err.startswith(f"sramflow: error: {spec}:4: invalid TOML")


def test_a_broken_target_file_is_named_with_the_spec_line(tmp_path, capsys):
    (tmp_path / "t.toml").write_text('base = "lpu"\n[chip]\nsram_bytes = "a lot"\n')
    spec = tmp_path / "s.toml"
    spec.write_text('[axes]\nmodel = "tiny-llama"\ntarget = ["lpu", "t.toml"]\n')
    assert main(["sweep", str(spec)]) == 1
    assert capsys.readouterr().err == (f"sramflow: error: {spec}:3: axes.target[1]: {tmp_path / 't.toml'}:3: "
                                       "chip.sram_bytes: expected a size like '230 MB', got 'a lot'\n")


def test_points_are_the_cross_product_in_the_documented_order(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[axes]\ncontext = [2048, 1024]\nprecision = ["int8", "fp16"]\nmodel = ["tiny-llama"]\n'
                    'target = ["lpu-mini", "lpu"]\n[axes.target_fields]\nmax_chips = [8, 4]\n')
    points = expand(load_spec(spec))
    # model, target, target fields, then options in CompileOptions' order (precision before context),
    # each axis in the spec's order, the last fastest; what a spec leaves out takes the defaults.
    order = [(p.target.label, dict(p.fields)["max_chips"], dict(p.options)["precision"], dict(p.options)["context"])
             for p in points]
    assert order == [(t, m, q, c) for t in ("lpu-mini", "lpu") for m in (8, 4) for q in ("int8", "fp16")
                     for c in (2048, 1024)]
    assert [p.index for p in points] == list(range(16))
    assert {dict(p.options)["batch"] for p in points} == {1} and points[0].system.max_chips == 8
    assert points[0].machine == "lpu-mini [max_chips=8]"


# ---------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(start=st.integers(1, 5000), span=st.integers(0, 200_000), times=st.integers(2, 5), step=st.integers(1, 9000))
def test_ranges_run_from_start_to_the_last_value_within_the_end(start, span, times, step):
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "s.toml"
        for how, by in (("times", times), ("step", step)):
            spec.write_text(f"[axes]\n{GOOD_AXES}context = {{ from = {start}, to = {start + span}, {how} = {by} }}\n")
            values = load_spec(spec).options[0].values
            assert values[0] == start and values[-1] <= start + span
            nxt = values[-1] * by if how == "times" else values[-1] + by
            assert nxt > start + span
            pairs = zip(values, values[1:], strict=False)
            assert all((b == a * by) if how == "times" else (b == a + by) for a, b in pairs)


_SIZES = st.integers(1, 4096).map(lambda k: f"{k} MiB")


@settings(max_examples=40, deadline=None)
@given(preset=st.sampled_from(["lpu", "lpu-mini", "h100"]), sram=_SIZES, bw=st.floats(1e9, 1e15),
       latency_ns=st.integers(0, 10_000), per_node=st.integers(1, 8))
def test_overridden_targets_validate_and_write_back_to_equal_toml(preset, sram, bw, latency_ns, per_node):
    fields = {"chip.sram_bytes": sram, "chip.mem_bw_bytes_per_s": f"{bw!r} B/s",
              "local_link.latency_s": f"{latency_ns} ns", "chips_per_node": per_node}
    try:
        spec = override(preset, fields, "test")
    except ConfigError as err:  # e.g. an SRAM under the program reserve, a node too big for its links
        assert str(err).startswith("test: on ")
        return
    assert spec.chip.sram_bytes == int(sram.split()[0]) * 2**20 and spec.chips_per_node == per_node
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.toml"
        path.write_text(dump_toml(spec))
        assert load_target(str(path)) == spec


def test_every_preset_writes_back_to_equal_toml(tmp_path):
    for name in ("lpu", "lpu-mini", "h100", "wse3"):
        path = tmp_path / f"{name}.toml"
        path.write_text(dump_toml(load_target(name)))
        assert load_target(str(path)) == load_target(name)


_ROWS = st.lists(st.tuples(st.integers(1, 20), st.integers(1, 20)), min_size=0, max_size=30).map(
    lambda pairs: [{"point": i, "x": x, "y": y} for i, (x, y) in enumerate(pairs)])


@settings(max_examples=100, deadline=None)
@given(rows=_ROWS, x_lower=st.booleans(), y_lower=st.booleans())
def test_a_front_holds_exactly_the_rows_nothing_dominates(rows, x_lower, y_lower):
    x, y = Goal("x", x_lower), Goal("y", y_lower)

    def dominates(a, b):
        return x.value(a) <= x.value(b) and y.value(a) <= y.value(b) and (x.value(a), y.value(a)) != (x.value(b),
                                                                                                     y.value(b))

    best = front(rows, x, y)
    assert sorted(r["point"] for r in best) == [r["point"] for r in rows if not any(dominates(o, r) for o in rows)]
    assert [x.value(r) for r in best] == sorted(x.value(r) for r in best)


def test_a_graph_ir_model_is_planned_as_plan_plans_it(tmp_path, capsys):
    assert main(["lower", "tiny-llama", "--layers", "1", "--context", "256"]) == 0
    (tmp_path / "one-layer.ir").write_text(capsys.readouterr().out)
    spec = tmp_path / "s.toml"
    spec.write_text('[axes]\nmodel = ["one-layer.ir", "tiny-llama"]\ntarget = "lpu-mini"\ncontext = 256\n')
    points = expand(load_spec(spec))
    version = sramflow_version()
    record = run_job(job_of(points[0], points[0].key(version), version))
    plan = make_plan(str(tmp_path / "one-layer.ir"), "lpu-mini", CompileOptions(context=256))
    assert record["status"] == "ok" and record["plan"] == json.loads(plan.to_json())
    assert points[0].model.name == plan.model and points[0].key(version) != points[1].key(version)
