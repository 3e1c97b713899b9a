"""TCLR: temporal contrastive learning (Dave et al. 2021), ``--method tclr``.

Views of one video: ``n_local`` local clips from consecutive, non-overlapping segments
(each ``clip_len`` frames at ``stride``), each augmented twice, and one global clip of
``clip_len`` frames spanning the same time (stride ``n_local * stride``), augmented twice.

- L_IC: NT-Xent between the two global augmentations across the batch (instance contrast).
- L_LL (local-local): per video, NT-Xent over its 2 x n_local local embeddings: the other
  augmentation of the same clip is the positive, the video's other local clips the
  negatives. Averaged over videos. Pushes features of different times apart.
- L_GL (global-local): the global clip's last feature map is split along time into
  n_local parts (one per local segment), each pooled and projected; part k and local
  clip k are positives, parts/clips q != k of the same video negatives; both directions,
  for both augmentations of each.
Each loss has a weight; 0 switches it off (the paper's ablation). ``loss_scale`` sets how
the terms add up: the paper sums L_LL and L_GL over the local clips (default), the
official code sums them over the batch and the pairings and adds ``w_local_ic``. The encoder keeps
temporal resolution to the end (strides 1,2,2,1: a 16-frame clip ends with 4 steps), so
the global map has a step per local clip, as in the official code.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from vssl_cli.data.samplers import clip_indices
from vssl_cli.losses import info_nce, nt_xent
from vssl_cli.methods.base import Method
from vssl_cli.models import ProjectionHead


@dataclasses.dataclass
class TCLRParams:
    clip_len: int = 16
    stride: int = 1                  # within a local clip
    n_local: int = 4                 # N_T
    tau: float = 0.1
    proj_dim: int = 128
    w_ic: float = 1.0
    w_ll: float = 1.0
    w_gl: float = 1.0
    # How the terms add up, per anchor, in units of one contrastive term:
    # paper: L_LL and L_GL summed over the n_local clips (1 : n : 2n, 1 : 4 : 8 at n = 4);
    # official: DAVEISHAN/TCLR's sums (L_LL over the batch, L_GL over its four pairings:
    # 1 : B : 16); mean: every term a mean (1 : 1 : 2, vssl before this setting).
    loss_scale: str = "paper"
    # The official code's extra term (loss_ic1): NT-Xent across the batch between every
    # pair of local clips, weight 1 there; 0 leaves it out, as the paper does.
    w_local_ic: float = 0.0
    temporal_strides: tuple[int, ...] = (1, 2, 2, 1)

    def validate(self):
        if self.loss_scale not in ("paper", "official", "mean"):
            raise ValueError("loss_scale must be paper, official or mean")

    def check_maps(self, factors: dict[str, int], backbone: str) -> None:
        steps = self.clip_len // factors["res5"]
        if steps < self.n_local:
            raise ValueError(
                f"{backbone} with temporal_strides {list(self.temporal_strides)} leaves the "
                f"{self.clip_len}-frame global clip {steps} time step(s) at res5, fewer than "
                f"params.n_local = {self.n_local}: lengthen params.clip_len, lower "
                "params.n_local or params.temporal_strides")


def tclr_views(num_frames: int, clip_len: int, stride: int, n_local: int,
               rng: np.random.Generator) -> list[np.ndarray]:
    """[global, local_1 .. local_n]: the global clip covers exactly the local segments."""
    segment = clip_len * stride
    total = segment * n_local
    start = int(rng.integers(0, num_frames - total + 1)) if num_frames > total else 0
    glob = clip_indices(num_frames, clip_len, n_local * stride, start)
    local = [clip_indices(num_frames, clip_len, stride, start + k * segment)
             for k in range(n_local)]
    return [glob, *local]


def local_local_loss(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """z1, z2: (B, N, D) the two augmentations of each video's N local clips."""
    return torch.stack([nt_xent(a, b, tau) for a, b in zip(z1, z2)]).mean()


def global_local_loss(parts: torch.Tensor, local: torch.Tensor, tau: float) -> torch.Tensor:
    """parts, local: (B, N, D). Part k vs clip k positive within each video, both ways."""
    b, n, _ = parts.shape
    target = torch.arange(n, device=parts.device)
    losses = [info_nce(p, c, target, tau) + info_nce(c, p, target, tau)
              for p, c in zip(parts, local)]
    return torch.stack(losses).mean()


def local_instance_loss(zl: torch.Tensor, gather, tau: float) -> tuple[torch.Tensor, int]:
    """The official code's loss_ic1: NT-Xent across the batch between local clip k of one
    augmentation and clip q of another (or the same, q != k), the same video positive.
    ``zl`` (2, B, N, D). Returns (the mean over the pairs, the number of pairs); the
    official code sums the pairs and divides by 4."""
    n = zl.shape[2]
    pairs = [(a, k, c, q) for a in range(2) for c in range(2) for k in range(n)
             for q in range(n) if (a, k) != (c, q)]
    loss = sum(nt_xent(gather(zl[a][:, k]), gather(zl[c][:, q]), tau) for a, k, c, q in pairs)
    return loss / len(pairs), len(pairs)


class TCLR(Method):
    name = "tclr"
    Params = TCLRParams

    def __init__(self, params: TCLRParams, backbone, aug, temporal_strides=None):
        super().__init__(params, backbone, aug,
                         tuple(temporal_strides or params.temporal_strides))
        dim = self.encoder.out_dim
        self.head = ProjectionHead(dim, params.proj_dim, dim)

    @staticmethod
    def sample_views(p, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        return tclr_views(num_frames, p.clip_len, p.stride, p.n_local, rng)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(x).float(), dim=-1)

    def loss(self, batch, gen):
        p, n = self.params, self.params.n_local
        b = batch["clips"][0].shape[0]
        globals_ = [self.augmented(batch["clips"][0], batch, gen)[0] for _ in range(2)]
        locals_ = [torch.cat([self.augmented(c, batch, gen)[0] for c in batch["clips"][1:]])
                   for _ in range(2)]
        g_maps = self.encoder(torch.cat(globals_))["res5"]             # (2B, C, T, h, w)
        if g_maps.shape[2] < n:
            raise ValueError(f"the global clip's feature map has {g_maps.shape[2]} time "
                             f"steps, fewer than n_local={n}; use longer clips or smaller "
                             "temporal strides")
        g_pooled = g_maps.mean(dim=(2, 3, 4))
        g_parts = F.adaptive_avg_pool3d(g_maps, (n, 1, 1)).flatten(2).transpose(1, 2)
        l_pooled = self.encoder(torch.cat(locals_))["pooled"]           # (2 * N * B, C)
        zg = self._project(g_pooled).view(2, b, -1)
        zparts = self._project(g_parts.reshape(2 * b * n, -1)).view(2, b, n, -1)
        zl = self._project(l_pooled).view(2, n, b, -1).transpose(1, 2)  # (2, B, N, D)
        parts = {}
        total = zg.new_zeros(())
        ll_scale, gl_scale = {"paper": (n, n), "official": (b, 8),
                              "mean": (1, 1)}[p.loss_scale]
        if p.w_ic:
            parts["ic"] = nt_xent(self.gather(zg[0]), self.gather(zg[1]), p.tau)
            total = total + p.w_ic * parts["ic"]
        if p.w_ll:
            parts["ll"] = local_local_loss(zl[0], zl[1], p.tau)
            total = total + p.w_ll * ll_scale * parts["ll"]
        if p.w_gl:
            parts["gl"] = sum(global_local_loss(zparts[i], zl[j], p.tau)
                              for i in range(2) for j in range(2)) / 4
            total = total + p.w_gl * gl_scale * parts["gl"]
        if p.w_local_ic:
            parts["local_ic"], pairs = local_instance_loss(zl, self.gather, p.tau)
            total = total + p.w_local_ic * pairs / 4 * parts["local_ic"]
        return total, {k: v.detach() for k, v in parts.items()}
