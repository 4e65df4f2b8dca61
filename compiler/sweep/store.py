"""A sweep's own directory: its marker, one record file per finished point (the resumable state), atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from compiler.sweep.task import INTERNAL
from ir.errors import ConfigError
from ir.files import atomic_write

MARKER = "sweep.json"
FORMAT = 1  # bumped when the layout of a sweep directory changes


class Store:
    """`<out>/sweep.json` marks the directory as a sweep's; `<out>/points/<key>.json` holds one
    point's record, written atomically (temporary file, fsync, rename) as soon as it arrives, so a
    killed sweep loses only the points in flight. Records of internal errors are kept for people
    but do not count as done: the next run retries them."""

    def __init__(self, root: Path):
        self.root = root
        self.points = root / "points"

    @classmethod
    def open(cls, root: str | Path) -> Store:
        """The sweep directory `root`, created if missing; refuses a directory that is not a sweep's."""
        root = Path(root)
        foreign = root.exists() and not (root / MARKER).is_file() and (not root.is_dir() or any(root.iterdir()))
        if foreign:  # never write into a directory that is not a sweep's own (an empty one is fine)
            raise ConfigError(f"{root}: exists and is not a sweep directory (no {MARKER}); choose another --out")
        store = cls(root)
        store.points.mkdir(parents=True, exist_ok=True)
        if not (root / MARKER).is_file():
            write_text(root / MARKER, json.dumps({"format": FORMAT, "written_by": "sramflow sweep"}) + "\n")
        return store

    def done(self, key: str) -> dict[str, Any] | None:
        """The point's record if it finished (ok or error); None if it is to be run."""
        record = self.load(key)
        return record if record is not None and record["status"] != INTERNAL else None

    def load(self, key: str) -> dict[str, Any] | None:
        try:
            record = json.loads((self.points / f"{key}.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def save(self, record: dict[str, Any]) -> None:
        write_text(self.points / f"{record['key']}.json", json.dumps(record, indent=1) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write atomically and durably: a reader sees the old file or the whole new one."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)
