"""TeG: temporal granularity (Qian et al. 2022), ``--method teg``.

Long-short sampling: a long clip (``long_len`` frames) and a short clip (``clip_len``
frames, same ``stride``) lying inside it, the short clip's offset a whole number of
feature-map time steps so that steps line up. Two embedding spaces on the encoder's
last map:
- coarse (persistent): the pooled clip embedding, NT-Xent between the short and long
  clip of each video across the batch;
- fine-grained: one embedding per time step (spatially pooled map, its own head); a short
  step and the long step covering the same moment are positives, the video's other steps
  negatives, in both directions (short -> long steps, overlapping long -> short steps).
Loss = (1 - alpha) * coarse + alpha * fine: TeG-PS alpha = 0, TeG-FG alpha = 0.9.
Temporal strides (1,2,2,1) keep a step per 4 frames, as TCLR does.
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
class TeGParams:
    clip_len: int = 16             # short clip (and evaluation clip)
    long_len: int = 32
    stride: int = 2
    alpha: float = 0.9             # TeG-FG; 0 for TeG-PS
    tau: float = 0.1
    proj_dim: int = 128
    step_frames: int = 4           # frames per time step of the final map (strides 1,2,2,1)
    temporal_strides: tuple[int, ...] = (1, 2, 2, 1)

    def check_maps(self, factors: dict[str, int], backbone: str) -> None:
        if factors["res5"] != self.step_frames:
            raise ValueError(
                f"{backbone} with temporal_strides {list(self.temporal_strides)} makes one "
                f"time step of res5 from {factors['res5']} frames, but params.step_frames is "
                f"{self.step_frames}: set params.step_frames = {factors['res5']} (or change "
                "params.temporal_strides)")

    def validate(self):
        if not 0 <= self.alpha <= 1:
            raise ValueError("alpha must be between 0 and 1")
        if self.long_len < self.clip_len:
            raise ValueError("long_len must be at least clip_len")
        if self.clip_len % self.step_frames or self.long_len % self.step_frames:
            raise ValueError("clip_len and long_len must be multiples of step_frames")


def long_short_views(num_frames: int, clip_len: int, long_len: int, stride: int,
                     step_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """[short, long]: the short clip starts a whole number of steps into the long one
    (at step 0 when the video is too short for the long clip, so nothing wraps)."""
    span = long_len * stride
    start = int(rng.integers(0, num_frames - span + 1)) if num_frames >= span else 0
    offsets = (long_len - clip_len) // step_frames
    k = int(rng.integers(0, offsets + 1)) if num_frames >= span else 0
    return [clip_indices(num_frames, clip_len, stride, start + k * step_frames * stride),
            clip_indices(num_frames, long_len, stride, start)]


def fine_grained_loss(short: torch.Tensor, long: torch.Tensor, offset: torch.Tensor,
                      tau: float) -> torch.Tensor:
    """short (B, Ts, D), long (B, Tl, D), offset (B,) in steps: short step j <-> long step
    j + offset; negatives are the video's other steps. Mean of both directions."""
    b, ts, _ = short.shape
    steps = torch.arange(ts, device=short.device)
    losses = []
    for i in range(b):
        aligned = steps + offset[i]
        losses.append(info_nce(short[i], long[i], aligned, tau)
                      + info_nce(long[i, aligned], short[i], steps, tau))
    return torch.stack(losses).mean() / 2


class TeG(Method):
    name = "teg"
    Params = TeGParams

    def leaves_parameters_unused(self) -> bool:
        """TeG-PS (alpha 0) never uses the fine-grained head, alpha 1 the coarse one."""
        return self.params.alpha in (0, 1)

    def __init__(self, params: TeGParams, backbone, aug, temporal_strides=None):
        super().__init__(params, backbone, aug,
                         tuple(temporal_strides or params.temporal_strides))
        dim = self.encoder.out_dim
        self.coarse_head = ProjectionHead(dim, params.proj_dim)
        self.fine_head = ProjectionHead(dim, params.proj_dim)

    @staticmethod
    def sample_views(p, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        return long_short_views(num_frames, p.clip_len, p.long_len, p.stride, p.step_frames,
                                rng)

    def _steps(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) -> fine embeddings (B, T, D)."""
        b, c, t = maps.shape[:3]
        cells = maps.mean(dim=(3, 4)).transpose(1, 2).reshape(b * t, c)
        return F.normalize(self.fine_head(cells).float(), dim=1).view(b, t, -1)

    def loss(self, batch, gen):
        p = self.params
        short, _ = self.augmented(batch["clips"][0], batch, gen)
        long, _ = self.augmented(batch["clips"][1], batch, gen)
        s_maps, l_maps = self.encoder(short)["res5"], self.encoder(long)["res5"]
        ts, tl = s_maps.shape[2], l_maps.shape[2]
        if ts * p.step_frames != p.clip_len or tl * p.step_frames != p.long_len:
            raise ValueError(f"the encoder gives {ts} steps for {p.clip_len} frames; set "
                             "step_frames to the product of its temporal strides")
        parts, total = {}, s_maps.new_zeros((), dtype=torch.float32)
        if p.alpha < 1:
            pooled = torch.cat([s_maps.mean(dim=(2, 3, 4)), l_maps.mean(dim=(2, 3, 4))])
            zs, zl = self.coarse_head(pooled).float().chunk(2)
            parts["coarse"] = nt_xent(self.gather(zs), self.gather(zl), p.tau)
            total = total + (1 - p.alpha) * parts["coarse"]
        if p.alpha > 0:
            idx = batch["indices"]
            first = (idx[0][:, 0] - idx[1][:, 0]).to(short.device)
            offset = first // (p.stride * p.step_frames)
            parts["fine"] = fine_grained_loss(self._steps(s_maps), self._steps(l_maps),
                                              offset.clamp(0, tl - ts), p.tau)
            total = total + p.alpha * parts["fine"]
        return total, {k: v.detach() for k, v in parts.items()}
