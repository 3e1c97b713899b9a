"""Contrastive losses shared by the methods.

Notation follows ../shared/METHODS.md: h(u, v) = exp(cos(u, v) / tau).
- ``info_nce``: one positive per anchor among given candidates (cross-entropy form).
- ``nt_xent``: SimCLR's loss over 2N views, each view's partner positive, the other 2N-2
  negatives.
- ``soft_info_nce``: cross-entropy against a soft target distribution over candidates
  (controllable augmentations' region contrast).
- ``MemoryBank``: EMA feature bank with sampled negatives (VTHCL).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """cos(a_i, b_j) / tau for all pairs: (N, D) x (M, D) -> (N, M)."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau


def info_nce(anchors: torch.Tensor, candidates: torch.Tensor, positive: torch.Tensor,
             tau: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over anchors of -log h(a, c_pos) / sum_{c not masked} h(a, c).

    ``positive[i]`` indexes anchor i's positive in ``candidates``; ``mask[i, j]`` True
    removes candidate j from anchor i's denominator (e.g. the anchor itself).
    """
    logits = similarity(anchors, candidates, tau)
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, positive)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent for views z1[i] <-> z2[i], averaged over all 2N anchors."""
    n = z1.shape[0]
    z = torch.cat([z1, z2])
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    return info_nce(z, z, positive, tau, self_mask)


def soft_info_nce(anchors: torch.Tensor, candidates: torch.Tensor, target: torch.Tensor,
                  tau: float) -> torch.Tensor:
    """Mean over anchors of -sum_j target[i, j] log softmax_j(cos(a_i, c_j) / tau).

    Rows of ``target`` sum to 1; zero columns act as pure negatives.
    """
    log_p = F.log_softmax(similarity(anchors, candidates, tau), dim=1)
    return -(target * log_p).sum(1).mean()


class MemoryBank:
    """One L2-normalised feature per dataset item, updated as an exponential moving average
    x_bank = m * x_bank + (1 - m) * x_current, and a source of random negatives."""

    def __init__(self, size: int, dim: int, momentum: float = 0.5, device=None,
                 generator: torch.Generator | None = None):
        self.momentum, self.generator = momentum, generator
        self.bank = F.normalize(torch.randn(size, dim, generator=generator).to(device), dim=1)

    @torch.no_grad()
    def update(self, index: torch.Tensor, features: torch.Tensor) -> None:
        mixed = self.momentum * self.bank[index] + (1 - self.momentum) * features.detach()
        self.bank[index] = F.normalize(mixed, dim=1)

    def negatives(self, count: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """``count`` random entries (with replacement), avoiding ``exclude`` indices."""
        idx = torch.randint(0, self.bank.shape[0], (count,), generator=self.generator)
        idx = idx.to(self.bank.device)
        if exclude is not None and len(exclude):
            clash = torch.isin(idx, exclude)
            while clash.any():
                idx[clash] = torch.randint(0, self.bank.shape[0], (int(clash.sum()),),
                                           generator=self.generator).to(self.bank.device)
                clash = torch.isin(idx, exclude)
        return self.bank[idx]
