"""Instance contrast, SimCLR/CVRL style (the baseline, ``--method simclr``).

Two clips of the same video at different times (CVRL's decreasing gap distribution, or
uniform), each with its own temporally consistent augmentation; NT-Xent over the 2N
views of the (global) batch, tau 0.1, on an MLP projection (2 layers by default, CVRL's 3 of
2048 in its recipe), with CVRL's asymmetric blur and solarisation when asked for.
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
    proj_layers: int = 2          # CVRL: 3 layers of 2048
    gap: str = "cvrl"             # cvrl (decreasing) | uniform (independent starts)
    # Per view (first, second); empty: aug.blur_p / aug.solarize_p for both. CVRL's views
    # are asymmetric: blur p 1.0 / 0.1, solarize p 0 / 0.2.
    view_blur_p: tuple[float, ...] = ()
    view_solarize_p: tuple[float, ...] = ()
    # None: the backbone's own temporal downsampling; (1, 2, 2, 1), TCLR's, keeps time to the
    # last stage (the ablation that tells TCLR's encoder from its temporal terms)
    temporal_strides: tuple[int, ...] | None = None

    def validate(self):
        if self.gap not in ("cvrl", "uniform"):
            raise ValueError("gap must be cvrl or uniform")
        for name in ("view_blur_p", "view_solarize_p"):
            if len(getattr(self, name)) not in (0, 2):
                raise ValueError(f"{name} needs one value per view, or none")
        if self.proj_layers < 1:
            raise ValueError("proj_layers must be at least 1")


class SimCLR(Method):
    name = "simclr"
    Params = SimCLRParams

    def __init__(self, params: SimCLRParams, backbone, aug, temporal_strides=None):
        super().__init__(params, backbone, aug, temporal_strides or params.temporal_strides)
        dim = self.encoder.out_dim
        self.head = ProjectionHead(dim, params.proj_dim, params.proj_hidden or dim,
                                   params.proj_layers)
        p = params
        self.view_aug = [dataclasses.replace(
            aug, **({"blur_p": p.view_blur_p[v]} if p.view_blur_p else {}),
            **({"solarize_p": p.view_solarize_p[v]} if p.view_solarize_p else {}))
            for v in range(2)]

    @staticmethod
    def sample_views(p, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        if p.gap == "cvrl":
            a, b, _ = cvrl_pair(num_frames, p.clip_len, p.stride, rng)
            return [a, b]
        return [random_clip(num_frames, p.clip_len, p.stride, rng) for _ in range(2)]

    def loss(self, batch, gen):
        x1, _ = self.augmented(batch["clips"][0], batch, gen, self.view_aug[0])
        x2, _ = self.augmented(batch["clips"][1], batch, gen, self.view_aug[1])
        z = self.head(self.encoder(torch.cat([x1, x2]))["pooled"])
        z1, z2 = z.float().chunk(2)
        loss = nt_xent(self.gather(z1), self.gather(z2), self.params.tau)
        return loss, {"nt_xent": loss.detach()}
