"""Heads shared by the methods."""
from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """Linear-BN-ReLU-Linear on pooled features: the contrastive embedding (SimCLR style)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int | None = None):
        hidden = hidden or in_dim
        super().__init__(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
