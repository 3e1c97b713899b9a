"""Errors the user can act on.

The CLI renders them as one line, ``vssl <cmd>: error: <what> (<file>)``, and exits with
``exit_code``: 2 for usage problems, 1 for failures.
"""
from __future__ import annotations

import errno
import os
import re


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


class DiskFull(VsslError):
    """A write would not fit on its file system; refused before it started."""


class DecodeError(VsslError):
    """A video could not be probed or decoded; extraction records it and moves on."""


def first_line(error: BaseException, limit: int | None = 200) -> str:
    """The first line of an exception's message (libraries put tracebacks and advice in
    the lines after it), at most ``limit`` characters; its type's name when it says
    nothing."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def os_error_line(e: OSError) -> str:
    """One line for an operating-system failure. HDF5 reports a failed write as an OSError
    without ``errno`` whose text spans lines ("... errno = 28, error message = 'No space
    left on device' ..."): its errno and file name are read from that text."""
    text = str(e)
    code = e.errno
    if code is None and (m := re.search(r"errno = (\d+)", text)):
        code = int(m.group(1))
    filename = e.filename
    if filename is None and (m := re.search(r"filename = '([^']*)'", text)):
        filename = m.group(1)
    what = e.strerror or (os.strerror(code) if code else first_line(e, None))
    if code == errno.ENOSPC:
        what += ": free space and rerun (finished work is kept and resumed)"
    return f"{what} ({filename})" if filename else what
