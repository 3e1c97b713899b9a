"""Reading published checkpoint files: tensors and plain data only, never pickled code.

A checkpoint downloaded from a paper's page is a pickle, and a pickle can run any code.
``torch.load(weights_only=True)`` accepts tensors and plain containers only; training
scripts often save a little more beside the weights. The few harmless objects such files
hold are allowed by name and rebuilt as inert stand-ins that keep their fields and run
nothing: TCLR's ``train_gen_all_step.py`` saves its ``torch.cuda.amp.GradScaler`` (a
dict of numbers, with a ``defaultdict`` whose factory is a torch function). Anything else
is refused with one line that says how to convert a file one trusts. safetensors files
hold tensors only and are read as such.
"""
from __future__ import annotations

import collections
import hashlib
import os
import pickle
import warnings

import torch

from vssl_cli.errors import VsslError, first_line
from vssl_cli.safe_io import check_regular

SAFETENSORS_HEADER_LIMIT = 100 << 20


class InertObject:
    """Stands in for an allowed class from a checkpoint: keeps its state, runs nothing."""

    def __setstate__(self, state):
        self.state = state


def inert_factory():
    """Stands in for an allowed function named in a checkpoint (never called)."""
    return None


_SCALER = ("torch.cuda.amp.grad_scaler", "torch.amp.grad_scaler")
ALLOWED = [*((InertObject, f"{m}.GradScaler") for m in _SCALER),
           *((inert_factory, f"{m}._refresh_per_optimizer_state") for m in _SCALER),
           collections.defaultdict]


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_safetensors(path: str | os.PathLike) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= SAFETENSORS_HEADER_LIMIT


def read_weights(path: str | os.PathLike) -> tuple[object, dict]:
    """(contents, safetensors metadata or {}) of a checkpoint file; one-line VsslError for
    a file that is not one, is damaged, or holds more than data."""
    check_regular(path, "weights file")
    if os.path.getsize(path) == 0:
        raise VsslError("the weights file is empty", path)
    if is_safetensors(path):
        return _read_safetensors(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):   # zip, pickle
        raise VsslError("not a PyTorch or safetensors checkpoint", path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(ALLOWED):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True), {}
    except pickle.UnpicklingError as e:
        name = _refused_global(str(e))
        if name:
            raise VsslError(
                f"refusing to load the weights file: it holds the pickled object {name}, "
                "which could run code; if you trust the file, convert it to plain tensors "
                "(python -c \"import torch; torch.save(torch.load('IN', weights_only=False)"
                "['state_dict'], 'OUT')\") and import that", path) from None
        raise VsslError("cannot read the weights file: not a PyTorch or safetensors "
                        "checkpoint", path) from None
    except Exception as e:      # zip damage, truncation, foreign data: many exception types
        raise VsslError(f"the weights file is damaged or truncated ({first_line(e, 100)})",
                        path) from None


def _refused_global(message: str) -> str | None:
    """The name in torch's "Unsupported global: GLOBAL x.y" or "... GLOBAL x.y was not
    an allowed global" message."""
    marker = "GLOBAL "
    if marker not in message:
        return None
    return message.split(marker, 1)[1].split()[0].rstrip(".,:")


def _read_safetensors(path) -> tuple[dict, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise VsslError(f"cannot read the safetensors file ({first_line(e, 160)})",
                        path) from None
