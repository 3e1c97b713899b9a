"""Instance contrast, SimCLR/CVRL style (the baseline, ``--method simclr``).

Two clips of the same video at different times (CVRL's decreasing gap distribution, or
uniform), each with its own temporally consistent augmentation; NT-Xent over the 2N
views of the (global) batch, tau 0.1, on a Linear-BN-ReLU-Linear projection.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vssl_cli.data.samplers import cvrl_pair, random_clip
from vssl_cli.losses import nt_xent
from vssl_cli.methods.base import Method
from vssl_cli.models import ProjectionHead


@dataclasses.dataclass
class SimCLRParams:
    clip_len: int = 16
    stride: int = 2
    tau: float = 0.1
    proj_dim: int = 128
    proj_hidden: int = 0          # 0: the encoder's width
    gap: str = "cvrl"             # cvrl (decreasing) | uniform (independent starts)

    def validate(self):
        if self.gap not in ("cvrl", "uniform"):
            raise ValueError("gap must be cvrl or uniform")


class SimCLR(Method):
    name = "simclr"
    Params = SimCLRParams

    def __init__(self, params: SimCLRParams, backbone, aug, temporal_strides=None):
        super().__init__(params, backbone, aug, temporal_strides)
        dim = self.encoder.out_dim
        self.head = ProjectionHead(dim, params.proj_dim, params.proj_hidden or dim)

    @staticmethod
    def sample_views(p, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        if p.gap == "cvrl":
            a, b, _ = cvrl_pair(num_frames, p.clip_len, p.stride, rng)
            return [a, b]
        return [random_clip(num_frames, p.clip_len, p.stride, rng) for _ in range(2)]

    def loss(self, batch, gen):
        x1, _ = self.augmented(batch["clips"][0], batch, gen)
        x2, _ = self.augmented(batch["clips"][1], batch, gen)
        z = self.head(self.encoder(torch.cat([x1, x2]))["pooled"])
        z1, z2 = z.float().chunk(2)
        loss = nt_xent(self.gather(z1), self.gather(z2), self.params.tau)
        return loss, {"nt_xent": float(loss.detach())}
