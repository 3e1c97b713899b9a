"""Errors the user can act on.

The CLI renders them as one line, ``vssl <cmd>: error: <what> (<file>)``, and exits with
``exit_code``: 2 for usage problems, 1 for failures.
"""
from __future__ import annotations

import os


class VsslError(Exception):
    exit_code = 1

    def __init__(self, what: str, path: str | os.PathLike | None = None):
        super().__init__(what)
        self.what = what
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return f"{self.what} ({self.path})" if self.path else self.what


class UsageProblem(VsslError):
    """Bad arguments or an input of the wrong kind: the command was asked the wrong thing."""

    exit_code = 2


class DecodeError(VsslError):
    """A video could not be probed or decoded; extraction records it and moves on."""
