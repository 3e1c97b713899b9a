"""Rebuild a trained encoder from a model artifact's ``outputs.encoder`` entry."""
from __future__ import annotations

import os

import torch
from torch import nn

from vssl_cli.errors import VsslError
from vssl_cli.models import build_backbone


def load_encoder(artifact: str, spec: dict) -> nn.Module:
    """The encoder described by ``spec`` with the weights stored beside its manifest."""
    strides = spec.get("temporal_strides")
    encoder = build_backbone(spec["backbone"], temporal_strides=tuple(strides) if strides
                             else None)
    path = os.path.join(artifact, spec["file"])
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise VsslError("model artifact lacks its encoder weights", path) from None
    except Exception as e:
        raise VsslError(f"cannot read encoder weights: {e}", path) from None
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        raise VsslError(f"encoder weights do not fit {spec['backbone']}: "
                        f"{str(e).splitlines()[0]}", path) from None
    return encoder
