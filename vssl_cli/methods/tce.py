"""TCE: temporally coherent embeddings (Knights et al. 2020), ``--method tce``.

A 2D CNN embeds single frames. The anchor is a random frame, its positive another frame of
the same video at most ``window`` frames away (the world is smooth in time); negatives
are other videos, taken from a memory bank holding each video's latest anchor embedding.
As in the official code, anchor and positive share their crop and flip and differ only in
colour, grayscale and blur (``shared_geometry``), so the one geometric change between
them is the world's own motion, not an invariance to where the crop fell.
Hard negative mining: only bank entries whose cosine to the anchor is below a threshold
may be negatives, the hardest of them first (up to ``max_hard`` of the ``negatives``),
the rest random. The threshold rises over training from ``threshold_low`` to
``threshold_high`` as lo + (hi - lo)(1 - exp(-rate * progress)), so negatives start random
and end up close to the anchor, as the paper describes (the official code's exponent has
the opposite sign, which holds its threshold below -1, so it never mines). Evaluation
averages frame embeddings over the video (``clip_len`` frames per clip, ``stride`` apart).
The loss is the official code's NCE with a constant partition (``loss="nce"``): on synth,
the softmax (InfoNCE) form, also offered, collapsed within ~60 steps (all embeddings one
point, the loss at log(1 + negatives)), which NCE did not. The official code's auxiliary
rotation-prediction loss is not part of the method as METHODS.md describes it and is left
out.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from vssl_cli.engine.device import mean_over_processes
from vssl_cli.methods.base import Method
from vssl_cli.models import ProjectionHead


@dataclasses.dataclass
class TCEParams:
    default_backbone: ClassVar[str] = "resnet18"
    frame_backbone: ClassVar[bool] = True
    clip_len: int = 8              # frames per evaluation clip (averaged)
    stride: int = 4
    # The official code pairs the anchor with the frame FRAME_PADDING = 0 away: the same
    # frame, coloured anew; window 8 is the paper's temporal neighbourhood.
    window: int = 0                # positive: a frame at most this far from the anchor
    head: str = "linear"           # linear (official: Linear(512, 128)) | mlp (2 layers)
    tau: float = 0.07
    proj_dim: int = 128
    negatives: int = 8192
    max_hard: float = 1.0          # share of the negatives that may be mined
    threshold_low: float = -1.0
    threshold_high: float = 1.0
    threshold_rate: float = 5.0
    loss: str = "nce"              # nce (the official code's) or softmax (InfoNCE)
    shared_geometry: bool = True   # anchor and positive share crop and flip (official code)

    def validate(self):
        if self.window < 0:
            raise ValueError("window must be 0 (the same frame) or more")
        if self.head not in ("linear", "mlp"):
            raise ValueError("head must be linear or mlp")
        if self.loss not in ("nce", "softmax"):
            raise ValueError("loss must be nce or softmax")
        if not 0 <= self.max_hard <= 1:
            raise ValueError("max_hard must be between 0 and 1")


def nearby_pair(num_frames: int, window: int, rng: np.random.Generator) -> list[np.ndarray]:
    """[anchor], [positive]: two distinct frames at most ``window`` apart when possible
    (window 0: the anchor itself, as the official code pairs frames)."""
    anchor = int(rng.integers(num_frames))
    lo, hi = max(0, anchor - window), min(num_frames - 1, anchor + window)
    choices = [f for f in range(lo, hi + 1) if f != anchor] or [anchor]
    return [np.array([anchor]), np.array([choices[int(rng.integers(len(choices)))]])]


def nce_loss(logits: torch.Tensor, valid: torch.Tensor, log_partition: torch.Tensor,
             bank_size: int) -> torch.Tensor:
    """Noise-contrastive estimation (Wu et al. 2018) on ``logits`` = cosine / tau, the
    positive first: each column is a binary guess, "data or noise", between the model
    exp(logit) / Z and uniform noise over the bank's ``bank_size`` rows drawn ``m`` times.
    Unlike the softmax form, it charges every negative for its own similarity, so moving
    all embeddings together (a collapse) does not lower it. ``valid`` masks negatives
    that are not there (the anchor's own row); ``m`` counts the columns."""
    log_p = logits - log_partition
    log_noise = math.log((logits.shape[1] - 1) / bank_size)
    positive = F.softplus(log_noise - log_p[:, 0])     # -log(p / (p + m Pn))
    negative = F.softplus(log_p[:, 1:] - log_noise)    # -log(m Pn / (p + m Pn))
    return positive.mean() + (negative * valid).sum(1).mean()


def mining_threshold(progress: float, low: float, high: float, rate: float) -> float:
    return low + (high - low) * (1 - math.exp(-rate * progress))


def mine_negatives(anchor: torch.Tensor, bank: torch.Tensor, own: torch.Tensor, count: int,
                   threshold: float, max_hard: float, gen: torch.Generator | None
                   ) -> torch.Tensor:
    """(B, count) bank rows: the hardest rows with cosine < threshold (at most
    ``max_hard * count``), then random rows. A random draw may hit the anchor's own row;
    the loss masks those."""
    b, n = anchor.shape[0], bank.shape[0]
    draw = torch.randint(0, n, (b, count), generator=gen,
                         device=gen.device if gen is not None else bank.device).to(bank.device)
    hard_count = min(int(max_hard * count), n - 1)
    if hard_count == 0:
        return draw
    with torch.no_grad():
        sims = anchor.detach() @ bank.T
        blocked = (sims >= threshold) | F.one_hot(own, n).bool()
        scores, hardest = sims.masked_fill(blocked, -math.inf).topk(hard_count, dim=1)
    usable = torch.isfinite(scores)
    draw[:, :hard_count] = torch.where(usable, hardest, draw[:, :hard_count])
    return draw


class TCE(Method):
    name = "tce"
    Params = TCEParams

    def __init__(self, params: TCEParams, backbone, aug, temporal_strides=None):
        super().__init__(params, backbone, aug, temporal_strides)
        self.head = ProjectionHead(self.encoder.out_dim, params.proj_dim,
                                   layers=1 if params.head == "linear" else 2)
        self.bank_size = 0

    def attach_dataset(self, size: int) -> None:
        self.bank_size = size
        self.register_bank("bank", size, self.params.proj_dim)
        # NCE's log Z, fixed on the first step; NaN until then (a buffer, so a resumed
        # run keeps it).
        self.register_buffer("log_partition", torch.tensor(math.nan, device=self.bank.device))

    @torch.no_grad()
    def _fix_partition(self, logits: torch.Tensor) -> None:
        """log Z = log(mean exp(logit) * bank size) over the first step's logits (the
        official code's estimate), the same on every process."""
        log_mean = logits.logsumexp(0) - math.log(logits.numel())
        self.log_partition.fill_(float(mean_over_processes(log_mean)) + math.log(self.bank_size))

    @staticmethod
    def sample_views(p, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        return nearby_pair(num_frames, p.window, rng)

    def loss(self, batch, gen):
        p = self.params
        if not self.bank_size:
            raise RuntimeError("tce needs attach_dataset() before training")
        x1, view1 = self.augmented(batch["clips"][0], batch, gen)
        x2, _ = self.augmented(batch["clips"][1], batch, gen,
                               geometry_of=view1 if p.shared_geometry else None)
        z = F.normalize(self.head(self.encoder(torch.cat([x1, x2]))["pooled"]).float(), dim=1)
        anchor, positive = z.chunk(2)
        index = batch["index"].to(anchor.device)
        count = min(p.negatives, self.bank_size - 1)
        threshold = mining_threshold(self.progress, p.threshold_low, p.threshold_high,
                                     p.threshold_rate)
        neg = mine_negatives(anchor, self.bank, index, count, threshold, p.max_hard, gen)
        neg_logits = torch.einsum("bd,bkd->bk", anchor, self.bank[neg])
        own = neg == index[:, None]                   # a random draw of the anchor's row
        neg_logits = neg_logits.masked_fill(own, -math.inf)
        logits = torch.cat([(anchor * positive).sum(1, keepdim=True), neg_logits], 1) / p.tau
        if p.loss == "softmax":
            loss = F.cross_entropy(logits, torch.zeros_like(index))
        else:
            if torch.isnan(self.log_partition):
                self._fix_partition(logits.detach()[torch.isfinite(logits)])
            loss = nce_loss(logits.masked_fill(torch.isinf(logits), 0.0), (~own).float(),
                            self.log_partition, self.bank_size)
        self.update_bank("bank", index, anchor)       # each video's latest anchor
        # Mean cosine to the positive and to the negatives: both near 1 means the embedding
        # has collapsed (the loss then sits at log(1 + negatives)).
        with torch.no_grad():
            pos_cos = (anchor * positive).sum(1).mean()
            neg_cos = neg_logits[~own].mean()
        return loss, {"nce": loss.detach(), "threshold": threshold,
                      "pos_cos": pos_cos.detach(), "neg_cos": neg_cos.detach()}
