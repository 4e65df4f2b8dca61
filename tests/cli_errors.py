"""Helpers for the user-error suites: run the CLI in-process, require one line, snapshot a file tree."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from compiler.cli import main

TINY = ["tiny-llama", "--target", "lpu-mini"]


def refused(capsys, *args: str, code: int = 1, start: str = "sramflow: error: ") -> str:
    """Run `sramflow ARGS`; require exit `code`, exactly one line on stderr starting `start`, no
    traceback anywhere; return that line."""
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(start), lines[0]
    assert status == code, lines[0]
    return lines[0]


def ok(capsys, *args: str) -> str:
    """Run `sramflow ARGS`, require exit 0; its standard output."""
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "Traceback" not in out + err
    return out


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: kind, size, mtime and (files) sha256, by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            stat = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
            out[str(path.relative_to(root))] = (stat.st_mode, stat.st_size, stat.st_mtime_ns, digest)
    return out


def copy_build(build: Path, to: Path) -> Path:
    shutil.copytree(build, to)
    return to


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def layers_then_head(plan: dict, tp: int) -> dict:
    """A 2-layer model's plan edited to two stages: the embedding and layers on chips 0..tp-1, the head
    on chip tp (the head takes no kv layout)."""
    first = plan["stages"][0]
    head = {k: v for k, v in first.items() if k != "kv_layout"}
    return plan | {"stages": [dict(first, units=["embed", "layers.1"], tp=tp, chip_range=[0, tp - 1]),
                              dict(head, units=["head", "head"], tp=1, chip_range=[tp, tp])]}
