"""Writing artifacts so that a failure never leaves a partial file behind, and checking where they go."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ir.errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.
    The file gets the permissions a plain open() would give (mkstemp's are 0600)."""
    path = Path(path)
    tmp = None
    try:
        with deferred_interrupts():  # a Ctrl-C between making it and knowing its name would leak it
            fd, tmp = _made(lambda: tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent), path)
            os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with deferred_interrupts():
                Path(tmp).unlink(missing_ok=True)
        raise


def atomic_dir(path: str | Path) -> Path:
    """A fresh temporary directory beside `path` (rename it onto `path` when complete)."""
    path = Path(path)
    tmp = sibling(path, "")
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def sibling(path: Path, tag: str) -> Path:
    """A new empty hidden directory beside `path`: `.NAME.[TAG.]XXXXXXXX`."""
    prefix = f".{path.name}.{tag + '.' if tag else ''}"
    return Path(_made(lambda: tempfile.mkdtemp(prefix=prefix, dir=path.parent), path))


def _made(make, path: Path):
    try:
        return make()
    except OSError as err:
        raise ConfigError(f"{path}: cannot write beside it in {path.parent}: {err.strerror}") from None


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C back while a few renames or a clean-up finish; raise KeyboardInterrupt after,
    if one came. (Blocking SIGINT would not do: another thread would take it.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def check_output_file(text: str, flag: str, suffix: str) -> Path:
    """The path of a file the user asked for (`--trace out.json`), or a one-line ConfigError:
    it must end in `suffix`, sit in an existing folder and not be a directory."""
    if not text.strip():
        raise ConfigError(f"{flag}: the file name is empty")
    path = Path(text)
    if path.is_dir():
        raise ConfigError(f"{flag} {text}: is a directory; give a file name")
    if path.suffix.lower() != suffix:
        raise ConfigError(f"{flag} {text}: must end in {suffix} (sramflow writes {suffix[1:].upper()} only)")
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist"
        raise ConfigError(f"{flag} {text}: the folder {path.parent} {what}")
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"{flag} {text}: the folder {path.parent} is not writable")
    return path
