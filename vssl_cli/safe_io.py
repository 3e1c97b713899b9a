"""Reading the small files users and artifacts name (recipes, lists, CSVs, split files,
boundaries, manifests, metrics logs): regular files only, of bounded size.

A FIFO would block the command forever and ``/dev/zero`` would fill memory; both are
refused with one line before they are opened. JSON nested deeper than the parser's
recursion limit is a corrupt file, not a crash.
"""
from __future__ import annotations

import json
import os
import stat
from typing import Any

from vssl_cli.errors import VsslError

SMALL = 64 << 20        # recipes, lists, CSVs, split files, boundaries, manifests
LOG = 1 << 30           # metrics logs of long runs


def check_regular(path: str | os.PathLike, what: str) -> os.stat_result:
    """The file's status when it is a regular file (links followed), else one line."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VsslError(f"{what}: no such file", path) from None
    except OSError as e:
        raise VsslError(f"{what}: cannot read it ({e.strerror})", path) from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "not a regular file")
        raise VsslError(f"{what} is {kind}, not a file", path)
    return st


def read_bytes(path: str | os.PathLike, what: str, limit: int = SMALL) -> bytes:
    """The whole file, refused when it is not a regular file or exceeds ``limit``."""
    check_regular(path, what)
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise VsslError(f"{what} is larger than {limit >> 20} MB; not a file vssl wrote or "
                        "reads", path)
    return data


def read_text(path: str | os.PathLike, what: str, limit: int = SMALL) -> str:
    """As ``read_bytes``, decoded as UTF-8; bytes that are not UTF-8 become U+FFFD."""
    return read_bytes(path, what, limit).decode("utf-8", errors="replace")


def loads(text: str | bytes) -> Any:
    """``json.loads`` that turns absurd nesting into the ValueError bad JSON gives."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinity as None: what JSON can say of a score that does
    not exist (``json.dumps`` would write ``NaN``, which no JSON reader accepts)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
