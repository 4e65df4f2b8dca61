"""How the command line ends: one line on stderr for every failure, and the exit status.

0 success, 1 an error in the input, 2 a malformed command line (or a `run` that found
hazards), 70 an internal error, 130 Ctrl-C, 141 standard output closed by its reader.
Imports only the standard library, so it is in place before anything slow is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import traceback

EX_USAGE, EX_SOFTWARE, EX_INTERRUPTED, EX_PIPE = 2, 70, 130, 141


def exit_with(status: int) -> None:
    """End the process with `status`. After a Ctrl-C leave at once, streams flushed: a signal that landed
    in Python code an extension module runs as it initialises (pybind11 runs it through PyRun_String)
    leaves CPython's "unhandled KeyboardInterrupt" flag set, and the interpreter would end by raising
    SIGINT on itself (status -2) even though the command reported it and returned 130."""
    if status == EX_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(status)
    sys.exit(status)


def fail(message: str, status: int) -> int:
    print("sramflow: " + " ".join(message.split()), file=sys.stderr)
    return status


def closed_pipe() -> int:
    """The reader went away (`sramflow inspect B --asm | head`): stop quietly. Standard output
    points at /dev/null from here on, so the flush at exit cannot fail again."""
    with contextlib.suppress(OSError, ValueError):  # not a file descriptor (a caller's capture): nothing to do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EX_PIPE


def interrupted_by(error: BaseException) -> bool:
    """True when a Ctrl-C is behind `error`: an extension module interrupted while it initialises
    reports ImportError("initialization failed") caused by the KeyboardInterrupt (pybind11 does)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def crash(error: BaseException) -> int:
    """A bug in sramflow: one line, and the traceback in a file for the report."""
    text = "".join(traceback.format_exception(error))
    try:
        fd, path = tempfile.mkstemp(prefix="sramflow-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        saved = f"traceback saved to {path}"
    except OSError:
        saved = "no traceback file could be written"
    return fail(f"internal error: {type(error).__name__}: {error} ({saved}; please report it)", EX_SOFTWARE)


class UsageError(Exception):
    """A malformed command line (argparse's complaint)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as one line (`main` prints it) rather than usage and exit."""

    def error(self, message: str):
        command = self.prog.removeprefix("sramflow").strip()
        raise UsageError(f"{command + ': ' if command else ''}{message} (see `{self.prog} --help`)")
