"""`plan --batch LIST` and `compare --batch LIST` as a user runs them: one row per batch, the batch where the
decode step turns compute-bound (found by the planner), the rule of thumb beside it, and the picture."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.cli import main
from compiler.frontend.options import CompileOptions
from compiler.planner import lower_one
from compiler.serving.curves import BatchPoint, find_crossover
from compiler.serving.rule import active_params

# An lpu-mini whose fp16 products run at 20 TFLOPS: 2.2 ops per weight byte, so tiny-llama's step
# turns compute-bound at a batch of a few (on lpu-mini itself its 64-wide layers never do).
SLOW = 'base = "lpu-mini"\nname = "mini-slow"\n[chip.peak_ops_per_s]\nfp16 = "20 TFLOPS"\nfp8 = "20 TFLOPS"\n' \
       'int8 = "80 TOPS"\nint4 = "80 TOPS"\n'
TINY = ["tiny-llama", "--context", "64", "--prompt", "16"]


@pytest.fixture(scope="module")
def slow_target(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("target") / "mini-slow.toml"
    path.write_text(SLOW)
    return str(path)


@pytest.fixture(scope="module")
def sweep(slow_target) -> dict:
    return _json(["plan", *TINY, "--target", slow_target, "--batch", "1,2,8"])["batch_sweep"]


def _json(argv: list[str]) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--json"]) == 0
    return json.loads(out.getvalue())


def test_one_row_per_batch_with_the_plans_own_figures(sweep):
    (curve,) = sweep["curves"]
    assert [r["batch"] for r in curve["rows"]] == sweep["batches"] == [1, 2, 8]
    for row, plan in zip(curve["rows"], curve["plans"], strict=True):
        d = plan["decode"]
        assert plan["options"]["batch"] == row["batch"]
        assert row["devices"] == plan["chips"]
        assert row["tokens_per_s"] == d["tokens_per_s"]
        assert row["throughput_tokens_per_s"] == d["throughput_tokens_per_s"]
        assert math.isclose(row["tokens_per_s_per_device"], row["throughput_tokens_per_s"] / row["devices"])
        assert row["binding"] == d["binding"]
        assert row["compute_bound"] == (d["breakdown_us"]["compute"] > d["breakdown_us"]["sram_bandwidth"])


def test_a_point_plans_exactly_as_plan_does(sweep, slow_target):
    alone = _json(["plan", *TINY, "--target", slow_target, "--batch", "8"])
    assert sweep["curves"][0]["plans"][2] == alone


def test_crossover_is_the_smallest_compute_bound_batch(sweep, slow_target):
    found = sweep["curves"][0]["compute_bound"]
    b = found["batch"]
    assert b is not None and b > 1
    at, below = (_json(["plan", *TINY, "--target", slow_target, "--batch", str(x)])["decode"]["breakdown_us"]
                 for x in (b, b - 1))
    assert at["compute"] > at["sram_bandwidth"]
    assert below["compute"] <= below["sram_bandwidth"]


def test_rule_of_thumb_and_the_machine_figures_beside_it(sweep):
    r = sweep["curves"][0]["compute_bound"]["explanation"]
    assert r["params"] == r["active_params"] and r["rule_batch"] == 300
    # 20 TFLOPS over lpu-mini's install path (10,240 B/cycle at 900 MHz), 2 bytes and 2 flops a weight.
    assert math.isclose(r["ops_per_weight_byte"], 20e12 / (10_240 * 900e6))
    assert math.isclose(r["weights_only_batch"], round(20e12 / (10_240 * 900e6), 1))
    # tiny-llama: 2 layers x (k + v) x 32 wide x 64 tokens x 2 bytes per sequence.
    assert r["kv_bytes_per_sequence"] == 2 * 2 * 32 * 64 * 2


def test_table_names_the_turn_and_the_rule(capsys, slow_target):
    assert main(["plan", *TINY, "--target", slow_target, "--batch", "1,2,8"]) == 0
    out = capsys.readouterr().out
    assert "mini-slow: compute-bound from batch" in out
    assert "rule of thumb 300 x total/active parameters: batch 300" in out
    assert "ops per byte of its weight path" in out


def test_a_batch_that_does_not_fit_is_a_row_not_a_failure(capsys):
    sweep = _json(["plan", *TINY, "--target", "lpu-mini", "--batch", "1,100000"])["batch_sweep"]
    rows = sweep["curves"][0]["rows"]
    assert rows[0]["devices"] >= 1
    assert set(rows[1]) == {"batch", "error"} and "lpu-mini" in rows[1]["error"]


def test_moe_counts_active_experts_by_hand():
    graph = lower_one("tiny-mixtral", "decode", CompileOptions(context=64))
    total, active = active_params(graph)
    experts = [op for op in graph.ops if op.opcode.value == "experts"]
    stacked = sum(v.type.numel for op in experts for v in op.operands[3:6])
    share = 1 - experts[0].attr["top_k"] / experts[0].attr["experts"]
    assert active == round(total - share * stacked)
    assert total == sum(p.type.numel for p in graph.params)


@given(st.integers(1, 5000), st.integers(1, 6000))
def test_search_finds_any_threshold(threshold, fits_to):
    """A step compute-bound from `threshold` on, fitting up to `fits_to`: the search returns the
    threshold when it fits (and is within the limit), else says how far it looked."""
    calls = []

    def at(b: int) -> BatchPoint:
        calls.append(b)
        if b > fits_to:
            return BatchPoint(b, error="does not fit")
        return BatchPoint(b, 1, compute_us=float(b >= threshold), streaming_us=0.5)

    found = find_crossover(at, limit=4096)
    if threshold <= min(fits_to, 4096):
        assert found.batch == threshold
    else:
        assert found.batch is None and found.searched_to <= min(fits_to, 4096)
    assert len(calls) == len(set(calls)) and len(calls) <= 2 * 13 + 1


def test_compare_draws_one_curve_per_target(tmp_path, slow_target):
    png = tmp_path / "curves.png"
    body = _json(["compare", *TINY, "--targets", f"lpu-mini,{slow_target}", "--batch", "1,4", "--plot", str(png)])
    assert [c["target"] for c in body["batch_sweep"]["curves"]] == ["lpu-mini", "mini-slow"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary left behind


def test_malformed_batch_lists_are_usage_errors(capsys):
    for text, message in (("1,x", "expected B or a comma list"), ("4,4", "a batch is named twice"),
                          ("0,4", "batches must be positive")):
        assert main(["plan", *TINY, "--batch", text]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"sramflow: error: plan: argument --batch: {message}") and err.count("\n") == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["plan", *TINY, "--batch", "1,4", "--context", "64,128"], "--context and --batch: sweep one of them"),
    (["plan", *TINY, "--batch", "1,4", "--plot", "out.jpg"], "--plot out.jpg: must end in .png"),
    (["plan", *TINY, "--plot", "out.png"], "--plot: `plan` draws a batch curve"),
    (["plan", "k.ir", "--batch", "1,4"], "--batch: k.ir is a graph IR file"),
    (["compile", *TINY, "--target", "lpu-mini", "--batch", "1,4", "-o", "x"], "--batch: a comma list draws"),
])
def test_mistakes_are_one_line(capsys, argv, message):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sramflow: error: {message}") and err.count("\n") == 1
