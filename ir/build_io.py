"""Build directories on disk: the manifest, where a build may be written, and verified reading.

A build's manifest.json says it is sramflow's (`tool`), which layout it has (`format`), the
target's name (for display) and the sha256 of every other file; its own `digest` covers the
rest of the manifest, so an edited manifest is caught like an edited file. A build made of
builds (a disaggregated build's prefill/ and decode/) names each sub-directory under `builds`
with its manifest's digest, so it is whole only when each of them is. A reader gets a
file's bytes only after they match the manifest; every failure is one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ir.errors import ConfigError
from ir.files import atomic_dir, deferred_interrupts, sibling

TOOL = "sramflow"
FORMAT = 4  # bumped when the layout of a build directory changes (2: target.toml, manifest digest; 3: memory.json
#            outputs carry their rows, programs SRAMPRG6 with grouped experts' s_e column; 4: SRAMPRG7, 16-bit flags)
MANIFEST = "manifest.json"
RECOMPILE = "recompile it"


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed manifest: the target's name and each listed file's sha256."""

    target: str
    files: dict[str, str]
    format: int
    builds: dict[str, str] | None = None  # sub-build directory -> its manifest's digest


# ---------------------------------------------------------------- writing


def write_manifest(directory: Path, target: str, extra: dict | None = None, builds: tuple[str, ...] = ()) -> dict:
    """List every file of `directory` (but the manifest) with its sha256 and write manifest.json;
    `builds` are sub-directories holding builds of their own (recorded by their manifests' digests),
    `extra` further keys (a disaggregated build's `kind`). Tests call it after editing a build on
    purpose, to make the edit part of the build."""
    directory = Path(directory)
    files = {p.name: file_sha256(p) for p in sorted(directory.iterdir()) if p.name != MANIFEST and p.name not in builds}
    body = {"tool": TOOL, "format": FORMAT, "target": target, "files": files} | (extra or {})
    if builds:
        body["builds"] = {name: json.loads((directory / name / MANIFEST).read_text())["digest"] for name in builds}
    manifest = body | {"digest": _digest(body)}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------- where a build may go


def check_destination(out: str | Path, force: bool = False) -> Path:
    """The build directory `out` if sramflow may write it: absent, empty, or an unedited sramflow
    build (an edited one with `force`). Anything else is a one-line ConfigError."""
    text = str(out)
    if not text.strip():
        raise ConfigError("-o: the build directory is empty text; give a directory name")
    path = Path(text)
    _refuse_enclosing(path, text)
    if path.is_symlink():
        raise ConfigError(f"-o {text}: is a symbolic link; give the directory itself")
    _check_parent(path, text)
    if not path.exists():
        return path
    if not path.is_dir():
        raise ConfigError(f"-o {text}: is a file, not a build directory; sramflow never replaces it")
    if not any(path.iterdir()):
        return path
    problem = _build_problem(path)
    if problem == "not a build":
        raise ConfigError(f"-o {text}: holds files and is not a sramflow build; sramflow writes only into a new, "
                          "empty or previous-build directory (--force replaces only builds)")
    if problem and not force:
        raise ConfigError(f"-o {text}: an edited sramflow build ({problem}); --force replaces it")
    return path


def _refuse_enclosing(path: Path, text: str) -> None:
    """The current directory or one of its ancestors would take the user's work with it."""
    try:
        resolved, here = path.resolve(), Path.cwd().resolve()
    except OSError as err:
        raise ConfigError(f"-o {text}: cannot resolve the path: {err.strerror}") from None
    if resolved == here or resolved in here.parents:
        raise ConfigError(f"-o {text}: is the current directory or one of its parents; give a new directory")


def _check_parent(path: Path, text: str) -> None:
    parent = path.parent
    if parent.is_file() or any(p.is_file() for p in parent.parents):
        raise ConfigError(f"-o {text}: {_first_file(parent)} is a file, so no directory can be made under it")
    if not parent.is_dir():
        raise ConfigError(f"-o {text}: the folder {parent} does not exist; create it first")


def _first_file(path: Path) -> Path:
    return next(p for p in (*reversed(path.parents), path) if p.is_file())


def _build_problem(path: Path) -> str | None:
    """None for an unedited build; what is wrong otherwise ("not a build" for other directories)."""
    try:
        raw = json.loads((path / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return "not a build"
    # Builds of format 1 have no `tool` marker; their `format` and `files` say what they are.
    if not isinstance(raw, dict) or not (raw.get("tool") == TOOL or {"format", "files"} <= set(raw)):
        return "not a build"
    files, builds = raw.get("files"), raw.get("builds") or {}
    if not isinstance(files, dict) or not isinstance(builds, dict):
        return "manifest.json lists no files"
    extra = sorted(p.name for p in path.iterdir() if p.name not in (MANIFEST, *files, *builds))
    if extra:
        return f"{extra[0]} is not part of it"
    for name, digest in sorted(files.items()):
        target = path / str(name)
        if not _plain(name) or not target.is_file() or file_sha256(target) != digest:
            return f"{name} differs from its manifest"
    return next((f"{name}/ differs from its manifest" for name, digest in sorted(builds.items())
                 if not _plain(name) or _sub_build_problem(path / str(name), digest)), None)


def _sub_build_problem(path: Path, digest: str) -> bool:
    """Whether a sub-build is missing, edited, or not the one its parent recorded."""
    if not path.is_dir() or _build_problem(path) is not None:
        return True
    return json.loads((path / MANIFEST).read_text()).get("digest") != digest


# ---------------------------------------------------------------- writing a build in place


@contextmanager
def build_writer(out: Path, force: bool = False) -> Iterator[Path]:
    """A temporary sibling of `out` to write a build into. On success it replaces `out`, checked
    again first (callers check before they start work, so a bad `out` costs nothing; the second
    check catches what changed meanwhile); on any exception, Ctrl-C included, the temporary is
    removed and `out` is as it was."""
    out = Path(out)
    tmp = None
    try:
        with deferred_interrupts():  # a Ctrl-C between making it and knowing its name would leak it
            tmp = atomic_dir(out)
        yield tmp
        check_destination(out, force)
        _swap_in(tmp, out)
    except BaseException:
        if tmp is not None:
            with deferred_interrupts():
                shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the old build aside, the new one into place, then delete the old one; undo on failure."""
    with deferred_interrupts():
        if not out.exists():
            os.rename(tmp, out)
            return
        aside = sibling(out, "old")
        os.rename(out, aside)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(aside, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)


# ---------------------------------------------------------------- reading a build


class BuildFiles:
    """A build directory whose manifest has been checked; `bytes(name)` returns a file's
    contents only if they match the manifest's sha256."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        for name in self.manifest.files:
            if not (self.path / name).is_file():
                raise self.damaged(f"{name} is missing (listed in {MANIFEST})")

    def damaged(self, what: str) -> ConfigError:
        return ConfigError(f"{self.path}: damaged or edited build: {what}; {RECOMPILE}")

    def has(self, name: str) -> bool:
        return name in self.manifest.files

    def bytes(self, name: str) -> bytes:
        if name not in self.manifest.files:
            raise self.damaged(f"{MANIFEST} does not list {name}")
        data = (self.path / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != self.manifest.files[name]:
            raise self.damaged(f"{name} (sha256 differs from {MANIFEST})")
        return data

    def json(self, name: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """A verified JSON object holding at least `keys`."""
        doc = _parse_json(self.bytes(name), self.path / name)
        missing = [k for k in keys if k not in doc]
        if missing:
            raise self.damaged(f"{name} has no '{missing[0]}'")
        return doc


def read_manifest(path: Path) -> Manifest:
    """The manifest of build directory `path`, or a one-line ConfigError saying what is wrong."""
    if not path.exists():
        raise ConfigError(f"{path}: no such build directory")
    if not path.is_dir():
        raise ConfigError(f"{path}: not a directory; give a build directory written by `sramflow compile`")
    file = path / MANIFEST
    if not file.is_file():
        raise ConfigError(f"{path}: not a build directory (no {MANIFEST}); make one with `sramflow compile`")
    raw = _parse_json(_read(file), file)
    if raw.get("tool") != TOOL and not {"format", "files"} <= set(raw):
        raise ConfigError(f"{file}: not a sramflow manifest (no 'tool' or 'files'); {RECOMPILE}")
    if raw.get("format") != FORMAT:
        raise ConfigError(f"{path}: a build of format {raw.get('format')!r}; this sramflow reads format {FORMAT}: "
                          f"{RECOMPILE}")
    manifest = _manifest(raw, file)
    body = {k: v for k, v in raw.items() if k != "digest"}
    if raw.get("digest") != _digest(body):
        raise ConfigError(f"{path}: damaged or edited build: {MANIFEST} (its digest does not match its contents); "
                          f"{RECOMPILE}")
    return manifest


def _manifest(raw: dict, file: Path) -> Manifest:
    files, target = raw.get("files"), raw.get("target")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ConfigError(f"{file}: 'files' must map file names to sha256 digests; {RECOMPILE}")
    bad = next((name for name in files if not _plain(name)), None)
    if bad is not None:
        raise ConfigError(f"{file}: lists {bad!r}, which is not a file of the build directory; {RECOMPILE}")
    if not isinstance(target, str):
        raise ConfigError(f"{file}: no 'target' name; {RECOMPILE}")
    builds = raw.get("builds")
    if builds is not None and (not isinstance(builds, dict) or not all(map(_plain, builds))):
        raise ConfigError(f"{file}: 'builds' must map sub-directories of the build to digests; {RECOMPILE}")
    return Manifest(target, dict(files), raw["format"], dict(builds) if builds is not None else None)


def _plain(name: object) -> bool:
    """A bare file name: the manifest may not point outside its directory."""
    return isinstance(name, str) and name not in ("", ".", "..", MANIFEST) and "/" not in name and "\\" not in name


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as err:
        raise ConfigError(f"{file}: cannot read: {err.strerror}") from None


def _parse_json(data: bytes, file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not valid JSON (not UTF-8 text); {RECOMPILE}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}; {RECOMPILE}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{file}: expected a JSON object, got {type(doc).__name__}; {RECOMPILE}")
    return doc
