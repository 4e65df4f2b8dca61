"""`sramflow compare`: one model on several targets as a table, JSON and a PNG, with one-line errors."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from compiler.cli import main
from compiler.compare import DECODE_BINDS, DEVICES_BIND, Row, compare, parse_targets, render_compare, write_plot
from compiler.frontend.options import CompileOptions
from ir.errors import ConfigError

TARGETS = "lpu-mini,wse3,h100"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return compare("tiny-llama", parse_targets(TARGETS), CompileOptions())


def test_one_row_per_target_in_order_with_consistent_figures(rows):
    assert [r.target for r in rows] == TARGETS.split(",")
    assert [r.device for r in rows] == ["chip", "wafer", "GPU"]
    for r in rows:
        assert not r.error
        assert r.devices >= r.devices_lower_bound >= 1
        assert 0 < r.memory_used_bytes <= r.memory_capacity_bytes
        assert 0 < r.decode_latency_bound_us <= r.decode_latency_us
        assert r.tokens_per_s == pytest.approx(1e6 / r.decode_latency_us, rel=1e-3)
        assert 0 < r.ttft_bound_ms <= r.ttft_ms
        assert r.devices_binds in DEVICES_BIND.values()
        assert r.decode_binds in DECODE_BINDS.values()


def test_table_names_every_target_and_column(rows):
    console = Console(record=True, width=140)
    render_compare("tiny-llama", CompileOptions(), rows, console)
    out = console.export_text()
    for word in ("lpu-mini", "wse3", "h100", "tokens/s", "TTFT", "bound", "binds"):
        assert word in out


def test_cli_json_and_png(capsys, tmp_path):
    png = tmp_path / "cmp.png"
    png.write_bytes(b"old")  # replaced whole, never half-written
    assert main(["compare", "tiny-llama", "--targets", TARGETS, "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "tiny-llama" and [r["target"] for r in out["rows"]] == TARGETS.split(",")
    assert {"devices", "memory_used_bytes", "decode_latency_us", "decode_latency_bound_us", "tokens_per_s",
            "ttft_ms", "decode_binds", "devices_binds"} <= out["rows"][0].keys()
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.png"]  # no temporary file left behind


def test_json_is_identical_run_to_run(capsys):
    outs = []
    for _ in range(2):
        assert main(["compare", "tiny-llama", "--targets", "wse3,lpu-mini", "--json"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]


def test_a_model_that_does_not_fit_gets_a_row_not_a_crash(capsys):
    assert main(["compare", "llama-3.1-8b", "--targets", "lpu-mini", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["devices_binds"] == "does not fit" and "lpu-mini" in row["error"]


def test_plot_with_nothing_fitted_is_a_clear_error(tmp_path):
    row = Row("x", "chip", 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "does not fit", "", "too big")
    with pytest.raises(ConfigError, match="fits none of the targets"):
        write_plot("m", CompileOptions(), [row], tmp_path / "p.png")
    assert not list(tmp_path.iterdir())


def _error(capsys, *args) -> str:
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("sramflow: error:")
    return err


def test_unknown_target_fails_before_planning(capsys):
    err = _error(capsys, "compare", "llama-3.1-70b", "--targets", "lpu,wse4")
    assert "wse4" in err and "did you mean 'wse3'" in err


def test_bad_target_lists_and_models(capsys, tmp_path):
    assert "--targets" in _error(capsys, "compare", "tiny-llama", "--targets", " , ")
    assert "twice" in _error(capsys, "compare", "tiny-llama", "--targets", "wse3,wse3")
    assert "nope" in _error(capsys, "compare", "nope", "--targets", "wse3")
    unwritable = tmp_path / "missing" / "p.png"
    assert "--plot" in _error(capsys, "compare", "tiny-llama", "--targets", "wse3", "--plot", str(unwritable))
