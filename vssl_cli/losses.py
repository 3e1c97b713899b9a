"""Contrastive losses shared by the methods.

Notation follows ../shared/METHODS.md: h(u, v) = exp(cos(u, v) / tau).
- ``info_nce``: one positive per anchor among given candidates (cross-entropy form).
- ``nt_xent``: SimCLR's loss over 2N views, each view's partner positive, the other 2N-2
  negatives.
- ``soft_info_nce``: cross-entropy against a soft target distribution over candidates
  (controllable augmentations' region contrast).
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
