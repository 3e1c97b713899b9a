"""Rebuild a trained or imported encoder from a model artifact's ``outputs.encoder``
entry, and feed it clips the way that entry says."""
from __future__ import annotations

import os

from torch import nn

from vssl_cli.artifacts import artifact_file
from vssl_cli.errors import VsslError, first_line
from vssl_cli.models import build_backbone
from vssl_cli.models.weights_file import sha256_of
from vssl_cli.torch_io import load_plain


def weights_path(artifact: str, spec: dict) -> str:
    return os.path.join(artifact, artifact_file(spec["file"], artifact))


def weights_digest(artifact: str, spec: dict) -> str:
    """sha256 of the encoder's weights file, checked against the one its manifest
    records (artifacts made before it was recorded have none to check)."""
    path = weights_path(artifact, spec)
    try:
        found = sha256_of(path)
    except FileNotFoundError:
        raise VsslError("encoder weights are missing", path) from None
    except OSError as e:
        raise VsslError(f"cannot read the encoder weights: {e.strerror}", path) from None
    if spec.get("sha256") and spec["sha256"] != found:
        raise VsslError("the encoder weights are not the ones the manifest records (the "
                        "file was replaced or damaged); rerun or re-import the model", path)
    return found


def load_encoder(artifact: str, spec: dict) -> nn.Module:
    """The encoder described by ``spec`` with the weights stored beside its manifest."""
    strides = spec.get("temporal_strides")
    encoder = build_backbone(spec["backbone"], temporal_strides=tuple(strides) if strides
                             else None)
    path = weights_path(artifact, spec)
    state = load_plain(path, "encoder weights")
    if not isinstance(state, dict):
        raise VsslError("the encoder weights are not a state dict", path)
    try:
        encoder.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise VsslError(f"encoder weights do not fit {spec['backbone']}: {first_line(e)}",
                        path) from None
    return encoder


def input_convention(spec: dict) -> dict:
    """The ``AugConfig`` fields that feed clips as the encoder expects them: channel
    order, and mean and std for pixels scaled to [0, 1] (an encoder that takes
    [0, ``pixel_max``] gets its mean and std scaled instead). Absent fields: RGB, [0, 1]."""
    scale = float(spec.get("pixel_max") or 1)
    return {"size": int(spec["size"]), "mean": tuple(m / scale for m in spec["mean"]),
            "std": tuple(s / scale for s in spec["std"]),
            "channels": spec.get("channels") or "rgb"}
