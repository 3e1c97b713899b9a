"""Backbones by name, each returning per-stage feature maps and a pooled vector.

``build_backbone("r3d18")``; a ``-tiny`` suffix (``r3d18-tiny``) gives the quarter-width
variant used for CPU runs and tests. A new backbone is one entry in ``BACKBONES``.
"""
from __future__ import annotations

from torch import nn

from vssl_cli.errors import UsageProblem
from vssl_cli.models.c3d import C3D
from vssl_cli.models.heads import ProjectionHead
from vssl_cli.models.resnet import SPECS, STAGES, ResNet

TINY_WIDTH = 0.25
BACKBONES = {**{name: (lambda spec: lambda **kw: ResNet(spec, **kw))(spec)
                for name, spec in SPECS.items()},
             "c3d": lambda **kw: C3D(**kw)}
FRAME_BACKBONES = {"resnet18", "resnet50"}   # 2D: every frame on its own (TCE)

__all__ = ["BACKBONES", "FRAME_BACKBONES", "STAGES", "ProjectionHead", "build_backbone",
           "backbone_names", "is_frame_backbone", "temporal_factors"]


def is_frame_backbone(name: str) -> bool:
    """A 2D backbone that sees every frame on its own (``resnet18-tiny`` too)."""
    return name.partition("-")[0] in FRAME_BACKBONES


def backbone_names() -> list[str]:
    return sorted([*BACKBONES, *(f"{n}-tiny" for n in BACKBONES)])


def build_backbone(name: str, width: float | None = None,
                   temporal_strides: tuple[int, int, int, int] | None = None) -> nn.Module:
    """A randomly initialised backbone; ``width`` overrides the channel multiplier."""
    base, _, variant = name.partition("-")
    if base not in BACKBONES or variant not in ("", "tiny"):
        raise UsageProblem(f"unknown backbone {name!r}; choose from "
                           f"{', '.join(backbone_names())}")
    kwargs = {"width": width if width is not None else (TINY_WIDTH if variant else 1.0)}
    if temporal_strides is not None:
        kwargs["temporal_strides"] = tuple(temporal_strides)
    return BACKBONES[base](**kwargs)


def temporal_factors(name: str, temporal_strides=None) -> dict[str, int]:
    """Input frames per time step of each stage's map for backbone ``name`` (stem and stage
    strides), known without building it: configurations are checked against it when they
    are resolved."""
    base = name.partition("-")[0]
    if base not in SPECS:                      # C3D: the classic 1,2,2,2 after no stem stride
        return dict(zip(STAGES, (1, 2, 4, 8)))
    return SPECS[base].temporal_factors(tuple(temporal_strides) if temporal_strides else None)
