"""Build directories as a careless user meets them: `-o` never destroys a user's files, `run` and
`inspect` never believe a damaged or edited build, and a build never depends on its target file.

Every refusal is exactly one line on stderr with a non-zero exit and no traceback, and the file
tree around it is unchanged (names, sizes, mtimes and contents, directories included).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from compiler.cli import main
from ir.build_io import FORMAT, write_manifest
from targets.build_dir import load_build
from tests.cli_errors import TINY, copy_build, flip_byte, ok, refused, snapshot


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """One tiny-llama build on lpu-mini (with its SRAM image), copied by every damage case."""
    out = tmp_path_factory.mktemp("shared") / "build"
    assert main(["compile", *TINY, "-o", str(out)]) == 0
    return out


@pytest.fixture
def area(tmp_path, monkeypatch) -> Path:
    """A user's folder: files of theirs beside the current directory `work`, which holds more."""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("my notes\n")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "a.txt").write_text("keep me\n")
    (tmp_path / "precious" / "sub").mkdir()
    (tmp_path / "precious" / "sub" / "b.txt").write_text("and me\n")
    (tmp_path / "afile").write_text("a file\n")
    os.symlink(tmp_path / "precious", tmp_path / "link")
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


# ---------------------------------------------------------------- -o: where a build may be written

DESTINATIONS = [
    ("../precious", [], "holds files and is not a sramflow build"),
    ("../precious", ["--force"], "holds files and is not a sramflow build"),
    (".", [], "is the current directory or one of its parents"),
    ("..", [], "is the current directory or one of its parents"),
    ("", [], "the build directory is empty text"),
    ("../work", [], "is the current directory or one of its parents"),
    ("/", [], "is the current directory or one of its parents"),
    ("../afile", [], "is a file, not a build directory"),
    ("../afile/sub", [], "is a file, so no directory can be made under it"),
    ("../missing/sub", [], "the folder ../missing does not exist"),
    ("../link", [], "is a symbolic link"),
]


@pytest.mark.parametrize(("out", "extra", "message"), DESTINATIONS)
def test_compile_refuses_every_destination_that_is_not_a_build(capsys, area, out, extra, message):
    before = snapshot(area)
    line = refused(capsys, "compile", *TINY, "-o", out, *extra)
    assert message in line
    assert snapshot(area) == before


def test_an_edited_build_is_replaced_only_with_force(capsys, area, build):
    target = copy_build(build, area / "b")
    (target / "mine.txt").write_text("a file the user put in the build\n")
    before = snapshot(area)
    assert "(mine.txt is not part of it); --force replaces it" in refused(capsys, "compile", *TINY, "-o", target)
    assert snapshot(area) == before
    flip_byte(target / "plan.json", 10)
    (target / "mine.txt").unlink()
    assert "plan.json differs from its manifest" in refused(capsys, "compile", *TINY, "-o", target)
    ok(capsys, "compile", *TINY, "-o", target, "--force")
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in build.iterdir())
    assert load_build(target).system.name == "lpu-mini"
    assert sorted(p.name for p in area.iterdir()) == ["afile", "b", "link", "precious", "work"]


def _outside(tree: dict, name: str) -> dict:
    return {k: v for k, v in tree.items() if k != name and not k.startswith(name + "/")}


@pytest.mark.parametrize("state", ["absent", "empty", "previous build", "format-1 build"])
def test_compile_writes_a_new_empty_or_previous_build_and_nothing_else(capsys, area, build, state):
    target = area / "b"
    if state == "empty":
        target.mkdir()
    elif state == "previous build":
        copy_build(build, target)
        (target / "prefill.ir").unlink()  # a previous build of another shape: prefill.ir not in it
        write_manifest(target, "lpu-mini")
    elif state == "format-1 build":
        copy_build(build, target)
        manifest = json.loads((target / "manifest.json").read_text())
        old = {"format": 1, "target": "lpu-mini", "files": manifest["files"]}
        (target / "manifest.json").write_text(json.dumps(old))
    before = _outside(snapshot(area), "b")
    ok(capsys, "compile", *TINY, "-o", target)
    assert _outside(snapshot(area), "b") == before
    assert (target / "prefill.ir").is_file() and load_build(target).plan["model"] == "tiny-llama"
    assert json.loads((target / "manifest.json").read_text())["format"] == FORMAT


def test_a_failed_compile_leaves_the_previous_build_as_it_was(capsys, area, build):
    target = copy_build(build, area / "b")
    before = snapshot(area)
    assert "needs at least" in refused(capsys, "compile", "llama-3.1-70b", "--chips", "8", "-o", target)
    assert snapshot(area) == before


# ---------------------------------------------------------------- run and inspect verify first


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _reseal(build: Path) -> None:
    write_manifest(build, "lpu-mini")


DAMAGE = {
    "flipped program byte": (lambda b: flip_byte(b / "decode.prog", 100), "decode.prog (sha256 differs from"),
    "flipped weight bytes": (lambda b: flip_byte(b / "sram.img", 5000), "sram.img (sha256 differs from"),
    "edited plan": (lambda b: _edit(b / "plan.json", '"chips": 4', '"chips": 5'), "plan.json (sha256 differs"),
    "edited manifest target": (lambda b: _edit(b / "manifest.json", '"target": "lpu-mini"', '"target": "lpu"'),
                               "manifest.json (its digest does not match"),
    "edited target file": (lambda b: _edit(b / "target.toml", "max_chips = 256", "max_chips = 8"),
                           "target.toml (sha256 differs"),
    "deleted target file": (lambda b: (b / "target.toml").unlink(), "target.toml is missing"),
    "missing plan": (lambda b: (b / "plan.json").unlink(), "plan.json is missing (listed in manifest.json)"),
    "missing memory map": (lambda b: (b / "memory.json").unlink(), "memory.json is missing"),
    "missing manifest": (lambda b: (b / "manifest.json").unlink(), "not a build directory (no manifest.json)"),
    "malformed manifest": (lambda b: (b / "manifest.json").write_text("{\n"), "manifest.json:2:1: not valid JSON"),
    "manifest not an object": (lambda b: (b / "manifest.json").write_text("[1]"), "expected a JSON object"),
    "malformed plan, resealed": (lambda b: ((b / "plan.json").write_text("{oops"), _reseal(b)),
                                 "plan.json:1:2: not valid JSON"),
    "malformed memory map, resealed": (lambda b: ((b / "memory.json").write_text("[1,"), _reseal(b)),
                                       "memory.json:1:4: not valid JSON"),
    "memory map of the wrong shape, resealed": (
        lambda b: ((b / "memory.json").write_text((b / "memory.json").read_text().replace('"tp": 2', '"tp": "two"')),
                   _reseal(b)), "memory.json: stages[0].tp: must be an integer of at least 1, got 'two'"),
    "plan without figures, resealed": (lambda b: ((b / "plan.json").write_text('{"model": "x"}'), _reseal(b)),
                                       "plan.json has no 'target'"),
    "truncated program, resealed": (lambda b: ((b / "prefill.prog").write_bytes(b"SRAMPRG2"), _reseal(b)),
                                    "not a readable sramflow program"),
    "older format": (lambda b: _edit(b / "manifest.json", f'"format": {FORMAT}', '"format": 1'),
                     f"reads format {FORMAT}"),
    "manifest pointing outside": (lambda b: _edit(b / "manifest.json", '"decode.ir"', '"../decode.ir"'),
                                  "which is not a file of the build directory"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_run_and_inspect_refuse_a_damaged_build_in_one_line(capsys, tmp_path, build, case):
    damage, message = DAMAGE[case]
    broken = copy_build(build, tmp_path / "broken")
    damage(broken)
    before = snapshot(tmp_path)
    assert message in refused(capsys, "run", broken, "--functional", "--prompt", "1 2")
    if "sram.img" in message:  # inspect never reads the image, so it need not hash it
        ok(capsys, "inspect", broken)
    else:
        assert message in refused(capsys, "inspect", broken)
    assert snapshot(tmp_path) == before


def test_damage_is_named_for_the_first_damaged_file_with_the_recompile_hint(capsys, tmp_path, build):
    broken = copy_build(build, tmp_path / "broken")
    flip_byte(broken / "decode.prog", 7)
    line = refused(capsys, "run", broken)
    assert line == (f"sramflow: error: {broken}: damaged or edited build: decode.prog (sha256 differs from "
                    "manifest.json); recompile it")


def test_run_and_inspect_refuse_what_is_not_a_build(capsys, area):
    assert "no such build directory" in refused(capsys, "run", area / "nothing")
    assert "not a directory" in refused(capsys, "inspect", area / "afile")
    assert "not a build directory" in refused(capsys, "run", area / "precious")


# ---------------------------------------------------------------- a build is self-contained


def test_a_build_does_not_depend_on_the_target_file_it_was_compiled_for(capsys, area):
    mine = area / "my.toml"
    mine.write_text('base = "lpu-mini"\nname = "mine"\n')
    ok(capsys, "compile", "tiny-llama", "--target", mine, "-o", area / "b")
    first = json.loads(ok(capsys, "run", area / "b", "--json"))
    mine.write_text('base = "lpu-mini"\nname = "mine"\n[local_link]\nlatency_s = "5 us"\n')
    again = json.loads(ok(capsys, "run", area / "b", "--json"))
    mine.unlink()
    gone = json.loads(ok(capsys, "run", area / "b", "--json", "--functional", "--prompt", "3 4"))
    for f in (first, again, gone):
        f.pop("wall_s")
        f.pop("functional", None)
        f.pop("instructions_executed")  # the functional run executes more
        f["tokens"].pop("generated", None)
    assert first == again == gone and first["hazards"] == []
    assert load_build(area / "b").system.name == "mine"
