"""User-facing errors.

Anything a user can cause (a bad flag, a missing file, an undecodable line) raises
`UserError`. The CLI prints its message as one line and exits non-zero with no
traceback; library callers get an ordinary exception they can catch.
"""

from __future__ import annotations

import shutil
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input, reported as one line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ConfigError(UserError):
    """A bad configuration key or value."""


EXIT_USER_ERROR = 2  # the exit status of every one-line user error


def write_problem(exc: BaseException, folder: str | Path) -> str:
    """Why writing into `folder` failed, in a few words. Call it before removing the partial
    output: torch and safetensors report a full disk as their own errors (torch.save: "unexpected
    pos 576 vs 534"), so a nearly full filesystem is named as such."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    try:
        full = shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        full = False
    if full or "No space left" in text:
        return "No space left on device"
    return f"{type(exc).__name__}: {text}"


def os_error_line(exc: OSError) -> str:
    """An OSError that reached the command line, as one line: the file and the system's reason."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason
