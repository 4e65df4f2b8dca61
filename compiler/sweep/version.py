"""Which sramflow computed a result: the package version and a hash of its source files."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import compiler
import ir
import targets

# The packages whose code decides a plan or a run (target presets are Python modules in targets/).
_PACKAGES = (compiler, ir, targets)
_SUFFIXES = (".py", ".lark")


def sramflow_version() -> dict[str, str]:
    """`version`: the installed distribution's version; `source`: sha256 of every source file of
    the running packages. The source hash makes a point's key change whenever the code does, so a
    sweep never reuses a result computed by other code (during development the version alone
    would not change)."""
    try:
        version = importlib.metadata.version("sramflow")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"version": version, "source": source_hash()}


def source_hash() -> str:
    digest = hashlib.sha256()
    for package in _PACKAGES:
        root = Path(package.__file__).resolve().parent
        files = sorted(p for p in root.rglob("*") if p.suffix in _SUFFIXES and "__pycache__" not in p.parts)
        for path in files:
            digest.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()
