"""Reading and writing PyTorch files: plain data only, atomically, with one-line errors.

Checkpoints, encoder weights and the like travel between machines with the runs they
belong to, so a file read here may come from anyone. ``torch.load`` unpickles, and a
pickle can run any code; with ``weights_only=True`` it accepts tensors and plain
containers only, which is all vssl ever writes (state dicts, numbers, strings, the
resolved config). A write goes to a temporary file that replaces the old one only when
complete, so a full disk or a kill keeps the previous file.
"""
from __future__ import annotations

import errno
import os
import pickle
import resource
import shutil
import warnings
from pathlib import Path

import torch

from vssl_cli.artifacts import temp_beside
from vssl_cli.errors import VsslError, first_line


def load_plain(path: str | os.PathLike, what: str):
    """The contents of a file that ``save_atomic`` wrote; anything that is not plain data
    (a pickle that would run code, a damaged or foreign file) is a one-line VsslError."""
    try:
        with warnings.catch_warnings():     # e.g. about pickle protocols: not for users
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise VsslError(f"{what} is missing", path) from None
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):      # "Trying to load unsupported GLOBAL posix.system ..."
            raise VsslError(f"refusing to load the {what}: it holds more than tensors and "
                            "plain data (a pickle that could run code)", path) from None
        raise VsslError(f"cannot read the {what}: not a file of tensors and plain data",
                        path) from None
    except Exception as e:   # torch says RuntimeError, EOFError, ValueError... for damage
        raise VsslError(f"cannot read the {what}: {first_line(e)}", path) from None


def save_atomic(obj, path: str | os.PathLike, what: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.
    Out of space is said as such (torch's own writer reports it as "[enforce fail ...]
    file write failed"; through a file object it is the OSError), and the previous file
    is kept."""
    path = Path(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        reason = _no_room(e, path)
        if reason:
            raise VsslError(f"{reason} while writing the {what}; the previous one is kept",
                            path) from None
        raise


def _no_room(error: BaseException, path: Path) -> str | None:
    """Why a write ran out of room, or None when it was something else. torch's zip
    writer may see a short write as "[enforce fail ...] unexpected pos" instead of the
    OSError; the disk and the file size limit tell which it was."""
    if isinstance(error, OSError):
        return _NO_ROOM.get(error.errno)
    if not isinstance(error, RuntimeError) or not any(
            s in str(error) for s in ("unexpected pos", "write failed")):
        return None
    if shutil.disk_usage(path.parent).free < 64 << 20:
        return _NO_ROOM[errno.ENOSPC]
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return _NO_ROOM[errno.EFBIG]
    return "a write failed"


_NO_ROOM = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file size limit reached"}
