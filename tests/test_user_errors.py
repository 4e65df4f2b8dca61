"""Every failure a user can cause, as one line: options that do nothing or cannot work, output files
that cannot be written, implausible inputs, and the last-resort handlers (internal errors, a closed
output pipe). Each case checks the exit code, exactly one line on stderr, no traceback, and that
nothing changed on disk around it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.frontend.size import largest_system
from tests.cli_errors import TINY, ok, refused, snapshot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shared") / "build"
    assert main(["compile", *TINY, "-o", str(out)]) == 0
    return out


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """An empty current directory with a sub-folder, watched by each case."""
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- inspect: views and their files

INSPECT = [
    (["--gantt", "missing/x.png"], "--gantt missing/x.png: the folder missing does not exist"),
    (["--gantt", "folder"], "--gantt folder: is a directory"),
    (["--gantt", "x.jpg"], "--gantt x.jpg: must end in .png"),
    (["--trace", "missing/x.json"], "--trace missing/x.json: the folder missing does not exist"),
    (["--trace", "folder"], "--trace folder: is a directory"),
    (["--trace", "x.png"], "--trace x.png: must end in .json"),
    (["--gantt", "g.png", "--cycles", "100000000:200000000"], "starts after the decode program ends"),
    (["--trace", "t.json", "--cycles", "100000000:200000000"], "starts after the decode program ends"),
    (["--asm", "--cycles", "100"], "--cycles: expected LO:HI"),
    (["--asm", "--cycles", "5:2"], "empty window"),
    (["--asm", "--cycles", "a:b"], "--cycles: expected LO:HI"),
    (["--asm", "--chip", "3-1"], "'3-1' is an empty range"),
    (["--asm", "--chip", "1,1"], "chip 1 is listed twice"),
    (["--asm", "--chip", "x"], "--chip: expected N, A-B or a comma list"),
    (["--asm", "--chip", "99"], "chip 99 is not in the program"),
    (["--chip", "1"], "--chip chooses what --asm, --gantt or --trace show"),
    (["--cycles", "0:10"], "--cycles chooses what --asm, --gantt or --trace show"),
    (["--phase", "prefill"], "--phase chooses what"),
    (["--asm", "--json"], "--json prints the summary"),
    (["--asm", "--trace", "t.json"], "--asm prints assembly and writes no file"),
]


@pytest.mark.parametrize(("args", "message"), INSPECT)
def test_inspect_refuses_views_that_cannot_be_made(capsys, here, build, args, message):
    before = snapshot(here)
    assert message in refused(capsys, "inspect", build, *args)
    assert snapshot(here) == before


def test_inspect_views_still_work_in_the_program(capsys, here, build):
    ok(capsys, "inspect", build, "--chip", "0-1", "--cycles", "0:3000", "--gantt", "folder/g.png")
    ok(capsys, "inspect", build, "--phase", "prefill", "--trace", "folder/t.json")
    assert sorted(p.name for p in (here / "folder").iterdir()) == ["g.png", "t.json"]


# ---------------------------------------------------------------- run


def test_run_refuses_options_and_prompts_that_cannot_work(capsys, here, build):
    before = snapshot(here)
    assert "--prompt is read by functional runs only" in refused(capsys, "run", build, "--prompt", "1 2")
    line = refused(capsys, "run", build, "--functional", "--prompt", "1 256")
    assert "token id 256 is outside the vocabulary (256 tokens: ids 0 to 255)" in line
    assert "--prompt: expected" in refused(capsys, "run", build, "--functional", "--prompt", "1 x")
    assert "--tokens must be a positive integer" in refused(capsys, "run", build, "--tokens", "0")
    assert snapshot(here) == before


def test_functional_runs_of_an_hbm_build_are_refused(capsys, tmp_path):
    """An HBM system (h100's memory kind, on lpu-mini's rules so it compiles in milliseconds)."""
    (tmp_path / "hbm.toml").write_text('base = "lpu-mini"\nname = "mini-hbm"\n[chip]\nmemory_kind = "hbm"\n')
    out = tmp_path / "hbm"
    ok(capsys, "compile", "tiny-llama", "--target", tmp_path / "hbm.toml", "-o", out)
    assert not (out / "sram.img").exists()  # auto: no SRAM image for an HBM system
    line = refused(capsys, "run", out, "--functional")
    assert "mini-hbm keeps weights in HBM; functional runs execute SRAM chips only" in line
    ok(capsys, "run", out)  # timing mode is fine
    assert "keeps weights in HBM" in refused(capsys, "compile", "tiny-llama", "--target", tmp_path / "hbm.toml",
                                             "--weights", "random", "-o", tmp_path / "h2")
    assert "h100: compile needs an instruction set" in refused(capsys, "compile", "tiny-llama", "--target", "h100",
                                                               "-o", tmp_path / "h2")


# ---------------------------------------------------------------- compile, plan and lower


def test_the_prompt_must_fit_the_context_in_plan_and_compile_alike(capsys, here):
    for command in (["plan"], ["compile", "-o", "b"]):
        line = refused(capsys, *command, *TINY, "--context", "64", "--prompt", "200")
        assert "--prompt 200 is longer than --context 64" in line
    plan = json.loads(ok(capsys, "plan", *TINY, "--context", "64", "--json"))
    assert plan["options"]["prompt"] == 64  # the default prompt is at most the context
    assert sorted(p.name for p in here.iterdir()) == ["folder"]


def test_random_weights_larger_than_a_quarter_of_memory_are_refused(capsys, here):
    before = snapshot(here)
    line = refused(capsys, "compile", "llama-3.1-8b", "--weights", "random", "-o", "b")
    assert "8,030,261,248 parameters take 32.1 GB as float32, more than 1/4 of this machine's" in line
    assert "use --weights none" in line
    assert "expected random, none, auto or an existing .npz" in refused(
        capsys, "compile", *TINY, "--weights", "nope.npz", "-o", "b")
    assert snapshot(here) == before


def test_a_config_no_target_could_hold_is_refused_before_its_graphs(capsys, here):
    config = json.loads((ROOT / "examples" / "models" / "llama-3.1-8b.json").read_text())
    (here / "folder" / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 10_000_000}))
    before = snapshot(here)
    for command in (["plan"], ["lower"], ["compile", "-o", "b"]):
        line = refused(capsys, *command, "folder")
        assert "10,000,000 layers of at least 117.4 MB each" in line
        name, _, how = largest_system()
        shown = f"largest shipped target holds ({name}: {how} = " if command == ["lower"] else "target holds (lpu: "
        assert f"more than the {shown}" in line  # plan and compile: the target asked for
    assert snapshot(here) == before


def test_a_config_its_target_could_never_hold_is_refused_before_planning(capsys, here):
    """25,000 layers of Llama-3.1-8B fit the largest shipped target (rubin) but could never fit the lpu's most
    chips, even at int4: one line at once, not minutes of partitioning first."""
    config = json.loads((ROOT / "examples" / "models" / "llama-3.1-8b.json").read_text())
    (here / "folder" / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 25_000}))
    line = refused(capsys, "plan", "folder", "--target", "lpu")
    assert "25,000 layers of at least 117.4 MB each" in line
    assert "more than the target holds (lpu: 10,440 chips x 225.4 MB = " in line


TARGET_FILES = [
    ('base = "lpu"\n[local_link]\nlatency_s = "240"\n', "t.toml:3: local_link.latency_s: '240' has no unit"),
    ('base = "lpu"\n[local_link]\nlatency_s = 240\n', "local_link.latency_s: 240 has no unit; give the time"),
    ('base = "lpu"\n[chip]\nsram_bytes = 230000000\n', "chip.sram_bytes: 230000000 has no unit; give the size"),
    ('base = "lpu"\n[chip]\nclock_hz = 9e8\n', "chip.clock_hz: 900000000.0 has no unit"),
]


@pytest.mark.parametrize(("text", "message"), TARGET_FILES)
def test_target_quantities_without_units_are_refused(capsys, here, text, message):
    (here / "t.toml").write_text(text)
    before = snapshot(here)
    assert message in refused(capsys, "plan", "tiny-llama", "--target", "t.toml")
    assert snapshot(here) == before


def test_compare_checks_its_plot_before_planning(capsys, here):
    before = snapshot(here)
    assert "--plot x.jpg: must end in .png" in refused(capsys, "compare", "tiny-llama", "--plot", "x.jpg")
    assert "the folder nope does not exist" in refused(capsys, "compare", "tiny-llama", "--plot", "nope/x.png")
    assert "is a directory" in refused(capsys, "compare", "tiny-llama", "--plot", "folder")
    assert snapshot(here) == before


def test_a_malformed_command_line_is_one_line_with_status_2(capsys, here):
    assert "unrecognized arguments: --frobnicate" in refused(capsys, "plan", "tiny-llama", "--frobnicate", code=2)
    assert "plan: the following arguments are required: model" in refused(capsys, "plan", code=2)
    assert "unrecognized arguments: --prefill-chunk" in refused(capsys, "lower", "tiny-llama", "--prefill-chunk", "16",
                                                                code=2)
    assert "argument --batch: expected B or a comma list" in refused(capsys, "compile", *TINY, "--batch", "x", "-o",
                                                                     "b", code=2)
    assert sorted(p.name for p in here.iterdir()) == ["folder"]


# ---------------------------------------------------------------- last resorts


def test_an_internal_error_is_one_line_and_a_saved_traceback(capsys, tmp_path, monkeypatch):
    import compiler.planner

    def broken(*_):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(compiler.planner, "make_plan", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    line = refused(capsys, "plan", "tiny-llama", code=70, start="sramflow: internal error: ZeroDivisionError: a bug")
    saved = Path(line.split("traceback saved to ")[1].split(";")[0])
    assert saved.parent == tmp_path and saved.name.startswith("sramflow-crash-") and line.endswith("please report it)")
    assert "Traceback" in saved.read_text() and "ZeroDivisionError: a bug" in saved.read_text()


def test_ctrl_c_while_an_extension_module_initialises_is_an_interrupt(capsys, monkeypatch):
    """pybind11 turns a KeyboardInterrupt during a module's initialisation into ImportError
    ("initialization failed") caused by it (seen with OR-Tools' cp_model_helper): still Ctrl-C."""
    import compiler.planner

    def importing(*_):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("initialization failed") from interrupt

    monkeypatch.setattr(compiler.planner, "make_plan", importing)
    assert refused(capsys, "plan", "tiny-llama", code=130, start="sramflow: interrupted") == "sramflow: interrupted"


@pytest.mark.parametrize("command", [["plan", "tiny-llama"], ["plan", "tiny-llama", "--json"], ["inspect", "BUILD"],
                                     ["inspect", "BUILD", "--asm", "--phase", "prefill"], ["lower", "llama-3.1-8b"]])
def test_a_closed_output_pipe_ends_quietly(build, command):
    """The reader is gone before sramflow writes (`sramflow ... | true`): exit 141, nothing on stderr."""
    args = [str(build) if a == "BUILD" else a for a in command]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-m", "compiler.cli", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait() == 141 and err == ""
