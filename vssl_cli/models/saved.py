"""Rebuild a trained encoder from a model artifact's ``outputs.encoder`` entry."""
from __future__ import annotations

import os

from torch import nn

from vssl_cli.artifacts import artifact_file
from vssl_cli.errors import VsslError
from vssl_cli.models import build_backbone
from vssl_cli.torch_io import load_plain


def load_encoder(artifact: str, spec: dict) -> nn.Module:
    """The encoder described by ``spec`` with the weights stored beside its manifest."""
    strides = spec.get("temporal_strides")
    encoder = build_backbone(spec["backbone"], temporal_strides=tuple(strides) if strides
                             else None)
    path = os.path.join(artifact, artifact_file(spec["file"], artifact))
    state = load_plain(path, "encoder weights")
    if not isinstance(state, dict):
        raise VsslError("the encoder weights are not a state dict", path)
    try:
        encoder.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise VsslError(f"encoder weights do not fit {spec['backbone']}: "
                        f"{str(e).strip().splitlines()[0][:200]}", path) from None
    return encoder
