"""Heads shared by the methods."""
from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """(Linear-BN-ReLU) x (layers - 1), then Linear, on pooled features: the contrastive
    embedding. 2 layers is SimCLR's head; CVRL uses 3 of 2048; 1 is a single linear
    layer (TCE's official code)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int | None = None,
                 layers: int = 2):
        hidden = hidden or in_dim
        blocks, width = [], in_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            width = hidden
        super().__init__(*blocks, nn.Linear(width, out_dim))
