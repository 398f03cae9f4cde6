"""User-facing errors.

Anything a user can cause (a bad flag, a missing file, an undecodable line) raises
`UserError`. The CLI prints its message as one line and exits non-zero with no
traceback; library callers get an ordinary exception they can catch.
"""

from __future__ import annotations


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
