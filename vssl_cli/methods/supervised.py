"""The supervised objective ``vssl finetune`` trains with the shared engine.

The whole encoder plus a linear classifier, cross-entropy on one random clip per video
with the usual spatial augmentation. Not a pretraining method, so not in the registry.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch.nn.functional as F
from torch import nn

from vssl_cli.data.samplers import random_clip
from vssl_cli.errors import UsageProblem
from vssl_cli.methods.base import Method


@dataclasses.dataclass
class SupervisedParams:
    clip_len: int = 16
    stride: int = 2
    num_classes: int = 0
    dropout: float = 0.5
    label_smoothing: float = 0.0


class Supervised(Method):
    name = "supervised"
    Params = SupervisedParams

    def __init__(self, params: SupervisedParams, backbone, aug, temporal_strides=None):
        super().__init__(params, backbone, aug, temporal_strides)
        if params.num_classes < 2:
            raise UsageProblem("finetuning needs at least 2 classes")
        self.classifier = nn.Sequential(nn.Dropout(params.dropout),
                                        nn.Linear(self.encoder.out_dim, params.num_classes))

    @staticmethod
    def sample_views(p, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        return [random_clip(num_frames, p.clip_len, p.stride, rng)]

    def logits(self, x):
        return self.classifier(self.encoder(x)["pooled"])

    def loss(self, batch, gen):
        x, _ = self.augmented(batch["clips"][0], batch, gen)
        labels = batch["labels"].to(x.device)
        logits = self.logits(x).float()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.params.label_smoothing)
        acc = (logits.argmax(1) == labels).float().mean()
        return loss, {"ce": loss.detach(), "train_acc": acc}
