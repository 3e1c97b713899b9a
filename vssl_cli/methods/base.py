"""What every pretraining method provides to the shared engine.

A method is an ``nn.Module`` holding the encoder (the part that is kept and evaluated)
plus its own heads. It says which frames to read for one video (``views``, run in
DataLoader workers) and computes its loss on a batch that is already on the training
device (``loss``), where it also runs the batched augmentations. The engine sets
``gather`` under DDP so contrastive losses can see negatives from every process.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vssl_cli.data.augment import AugConfig, AugParams, augment
from vssl_cli.models import build_backbone, is_frame_backbone


def no_gather(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclasses.dataclass(frozen=True)
class ViewSampler:
    """What DataLoader workers need to sample views: the method's class and params, not
    its weights (pickling a model with hundreds of tensors to each worker fails)."""
    method: type
    params: object

    def __call__(self, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        return self.method.sample_views(self.params, num_frames, rng)


class Method(nn.Module):
    name: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, params, backbone: str, aug: AugConfig,
                 temporal_strides: tuple[int, int, int, int] | None = None):
        super().__init__()
        validate = getattr(params, "validate", None)
        if validate is not None:
            validate()
        if getattr(params, "frame_backbone", False) and not is_frame_backbone(backbone):
            raise ValueError(f"{self.name} needs a 2D frame backbone, not {backbone}")
        self.params, self.aug, self.backbone_name = params, aug, backbone
        self.temporal_strides = temporal_strides
        self.encoder = build_backbone(backbone, temporal_strides=temporal_strides)
        self.gather: Callable[[torch.Tensor], torch.Tensor] = no_gather
        self.channels_last = False
        self.progress = 0.0        # share of training done; the engine sets it every step

    def forward(self, batch: dict, gen: torch.Generator | None):
        """The loss; DDP wraps ``forward``, so the engine calls the method through it."""
        return self.loss(batch, gen)

    @classmethod
    def from_config(cls, config: dict) -> "Method":
        return cls(cls.Params(**config["params"]), config["backbone"],
                   AugConfig(**config["aug"]))

    @property
    def frame_model(self) -> bool:
        return is_frame_backbone(self.backbone_name)

    def leaves_parameters_unused(self) -> bool:
        """Whether a training step leaves some parameters without a gradient (a head whose
        term this config switches off). DDP must then search the autograd graph for them
        at every step (``find_unused_parameters``), a cost every other method is spared.
        tests/test_methods.py checks each method's answer against a real step."""
        return False

    def encoder_spec(self) -> dict:
        """How to rebuild and feed the encoder: stored in the model manifest so that
        probe, retrieve, finetune and export use the clips it was trained on."""
        return {"backbone": self.backbone_name,
                "temporal_strides": list(self.temporal_strides or []) or None,
                "frame_model": self.frame_model,
                "clip_len": int(self.params.clip_len), "stride": int(self.params.stride),
                "size": int(self.aug.size), "mean": list(self.aug.mean),
                "std": list(self.aug.std), "channels": self.aug.channels}

    def attach_dataset(self, size: int) -> None:
        """Called with the number of training videos before training or resuming (methods
        with per-video state, such as memory banks, size it here)."""

    def register_bank(self, name: str, size: int, dim: int) -> None:
        """A memory bank: one random unit row per training video, kept as a buffer so that
        checkpoints carry it and a resumed run continues exactly."""
        rows = F.normalize(torch.randn(size, dim), dim=1)
        self.register_buffer(name, rows.to(next(self.parameters()).device))

    @torch.no_grad()
    def update_bank(self, name: str, index: torch.Tensor, features: torch.Tensor,
                    momentum: float = 0.0) -> None:
        """bank[i] = normalise(m bank[i] + (1 - m) x_i) (m = 0 replaces); under DDP every
        process applies every process's rows, so the banks stay identical."""
        from vssl_cli.engine.device import all_gather_detached
        bank = getattr(self, name)
        index, features = all_gather_detached(index), all_gather_detached(features)
        bank[index] = F.normalize(momentum * bank[index] + (1 - momentum) * features, dim=1)

    def views(self, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        return self.sample_views(self.params, num_frames, rng)

    @staticmethod
    def sample_views(params, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Frame indices of every view of one video (runs in DataLoader workers)."""
        raise NotImplementedError

    def view_sampler(self) -> "ViewSampler":
        return ViewSampler(type(self), self.params)

    def loss(self, batch: dict, gen: torch.Generator | None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """The loss and its named parts to log: detached tensors (``float()`` of each would
        wait for the device every step; the trainer reads them all at once when it logs)."""
        raise NotImplementedError

    def augmented(self, clips: torch.Tensor, batch: dict, gen, cfg: AugConfig | None = None,
                  geometry_of: AugParams | None = None):
        """Augment one view of the batch; returns (float clips, AugParams). ``geometry_of``:
        reuse that view's crops and flips."""
        x, params = augment(clips, cfg or self.aug, gen, batch["valid_hw"].to(clips.device),
                            geometry_of)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x, params

