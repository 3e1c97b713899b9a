"""VTHCL: visual tempo consistency (Yang et al. 2020), ``--method vthcl``.

One raw window of ``clip_len * stride`` frames per video gives a slow clip (``clip_len``
frames every ``stride``) and a fast clip (``alpha`` times the frames at ``stride /
alpha``) of the same moment. A slow encoder g_s (the one kept) and a fast encoder g_f of a
different width see them. At every level k (``levels``, e.g. res3,res4,res5) each
pathway has a projection phi (MLP on the pooled map) and an EMA memory bank of its
videos. L_f^k: fast query vs the slow bank, the same video's entry positive, ``negatives``
sampled entries of other videos negative (tau 0.07); L_s^k the mirror image. Total:
sum_k lambda_k (L_f^k + L_s^k). The banks are buffers, so checkpoints carry them and a
resumed run is exact; under DDP every process applies every process's update.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from vssl_cli.data.augment import apply
from vssl_cli.data.samplers import clip_indices
from vssl_cli.methods.base import Method
from vssl_cli.models import STAGES, ProjectionHead, build_backbone

PATHWAYS = ("slow", "fast")


@dataclasses.dataclass
class VTHCLParams:
    clip_len: int = 8                 # slow frames
    stride: int = 8                   # tau_s
    alpha: int = 2                    # fast clip: alpha x frames at stride / alpha
    fast_width: float = 0.5           # g_f's channel multiplier relative to g_s
    levels: tuple[str, ...] = ("res3", "res4", "res5")
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    tau: float = 0.07
    proj_dim: int = 128
    negatives: int = 16384            # sampled from the bank; all others if the bank is smaller
    bank_momentum: float = 0.5        # m in x_bank = m x_bank + (1 - m) x_current
    positive: str = "bank"            # bank: the counterpart's bank entry (CMC); current: its
    #                                   embedding in this batch (gradient to both encoders)
    # SlowFast-style pathways keep time (TPN's r50f8s8: no temporal downsampling), so the
    # 8-frame slow clip has 8 steps at res5 instead of one.
    temporal_strides: tuple[int, ...] = (1, 1, 1, 1)
    # Sec. 5.3: at alpha = 1 "both encoders see exactly the same input": the two clips share
    # one augmentation (crop, flip, colour, blur) and differ only in tempo.
    shared_aug: bool = True

    def check_maps(self, factors: dict[str, int], backbone: str) -> None:
        short = [lv for lv in self.levels if self.clip_len // factors[lv] < 1]
        if short:
            raise ValueError(
                f"{backbone} makes one time step of {short[0]} from {factors[short[0]]} "
                f"frames, more than the {self.clip_len}-frame slow clip: lengthen "
                "params.clip_len or drop the level from params.levels")

    def validate(self):
        if self.alpha < 1 or self.stride % self.alpha:
            raise ValueError(f"stride {self.stride} must be a multiple of alpha {self.alpha}")
        bad = [lv for lv in self.levels if lv not in STAGES]
        if bad or not self.levels:
            raise ValueError(f"levels must be some of {', '.join(STAGES)}")
        if len(self.level_weights) != len(self.levels):
            raise ValueError("level_weights needs one weight per level")
        if self.positive not in ("bank", "current"):
            raise ValueError("positive must be bank or current")


def tempo_views(num_frames: int, clip_len: int, stride: int, alpha: int,
                rng: np.random.Generator) -> list[np.ndarray]:
    """[slow, fast] over one raw window of ``clip_len * stride`` frames."""
    window = clip_len * stride
    start = int(rng.integers(0, num_frames - window + 1)) if num_frames > window else 0
    return [clip_indices(num_frames, clip_len, stride, start),
            clip_indices(num_frames, clip_len * alpha, stride // alpha, start)]


def bank_contrast(query: torch.Tensor, bank: torch.Tensor, index: torch.Tensor,
                  negatives: int, tau: float, gen: torch.Generator | None,
                  positive: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each query against its positive and bank negatives.

    query (B, D) normalised; bank (N, D) normalised; ``index`` (B,) the queries' own rows.
    The positive is ``positive`` (B, D) if given, else ``bank[index]``. With ``negatives``
    >= N - 1 every other row is a negative; otherwise rows are drawn uniformly (with
    replacement, as CMC does), any draw of the query's own row being masked out.
    """
    pos = bank[index] if positive is None else positive
    pos_logit = (query * pos).sum(1, keepdim=True)
    n = bank.shape[0]
    if negatives >= n - 1:
        neg_logits = query @ bank.clone().T     # a copy: the bank is updated in place later
        own = F.one_hot(index, n).bool()
    else:
        draw = torch.randint(0, n, (query.shape[0], negatives), generator=gen,
                             device=gen.device if gen is not None else bank.device)
        draw = draw.to(bank.device)
        neg_logits = torch.einsum("bd,bkd->bk", query, bank[draw])
        own = draw == index[:, None]
    logits = torch.cat([pos_logit, neg_logits.masked_fill(own, float("-inf"))], 1) / tau
    return F.cross_entropy(logits, torch.zeros_like(index))


class VTHCL(Method):
    name = "vthcl"
    Params = VTHCLParams

    def __init__(self, params: VTHCLParams, backbone, aug, temporal_strides=None):
        strides = tuple(temporal_strides or params.temporal_strides)
        super().__init__(params, backbone, aug, strides)
        base_width = 0.25 if backbone.endswith("-tiny") else 1.0
        self.fast_encoder = build_backbone(backbone, width=base_width * params.fast_width,
                                           temporal_strides=strides)
        self.heads = torch.nn.ModuleDict({
            f"{path}_{level}": ProjectionHead(enc.stage_dims[level], params.proj_dim)
            for path, enc in zip(PATHWAYS, (self.encoder, self.fast_encoder))
            for level in params.levels})
        self.bank_size = 0

    def attach_dataset(self, size: int) -> None:
        """One bank row per training video, per pathway and level (random unit vectors)."""
        self.bank_size = size
        for key in self.heads:
            self.register_bank(f"bank_{key}", size, self.params.proj_dim)

    @staticmethod
    def sample_views(p, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        return tempo_views(num_frames, p.clip_len, p.stride, p.alpha, rng)

    def embed(self, maps: dict, path: str) -> dict[str, torch.Tensor]:
        """Normalised phi(GAP(res_k)) for every level."""
        return {lv: F.normalize(self.heads[f"{path}_{lv}"](maps[lv].mean(dim=(2, 3, 4))).float(),
                                dim=1) for lv in self.params.levels}

    def loss(self, batch, gen):
        p = self.params
        if not self.bank_size:
            raise RuntimeError("vthcl needs attach_dataset() before training")
        slow, drawn = self.augmented(batch["clips"][0], batch, gen)
        if p.shared_aug:
            fast = apply(batch["clips"][1], drawn, self.aug, batch["valid_hw"].to(slow.device))
            if self.channels_last:
                fast = fast.contiguous(memory_format=torch.channels_last_3d)
        else:
            fast, _ = self.augmented(batch["clips"][1], batch, gen)
        z = {"slow": self.embed(self.encoder(slow), "slow"),
             "fast": self.embed(self.fast_encoder(fast), "fast")}
        index = batch["index"].to(slow.device)
        parts, total = {}, slow.new_zeros((), dtype=torch.float32)
        for lv, weight in zip(p.levels, p.level_weights):
            for query, other in (("fast", "slow"), ("slow", "fast")):
                bank = getattr(self, f"bank_{other}_{lv}")
                positive = z[other][lv] if p.positive == "current" else None
                term = bank_contrast(z[query][lv], bank, index, p.negatives, p.tau, gen,
                                     positive)
                parts[f"{query[0]}_{lv}"] = term.detach()
                total = total + weight * term
        self._update_banks(z, index)
        return total, parts

    def _update_banks(self, z: dict, index: torch.Tensor) -> None:
        for path in PATHWAYS:
            for lv in self.params.levels:
                self.update_bank(f"bank_{path}_{lv}", index, z[path][lv],
                                 self.params.bank_momentum)

    @torch.no_grad()
    def correspondence_map(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        """VTHCL's Instance Correspondence Map: the slow res5 map, projected by phi at every
        position (phi as a 1x1 conv), against the fast clip's final representation.
        Inputs are augmented/normalised clips; returns cosine maps (B, T, h, w)."""
        level = self.params.levels[-1]
        maps = self.encoder(slow)[level]                              # (B, C, T, h, w)
        b, c, t, h, w = maps.shape
        cells = maps.permute(0, 2, 3, 4, 1).reshape(-1, c)
        local = F.normalize(self.heads[f"slow_{level}"](cells).float(), dim=1)
        reference = self.embed(self.fast_encoder(fast), "fast")[level]
        return torch.einsum("bnd,bd->bn", local.view(b, t * h * w, -1),
                            reference).view(b, t, h, w)
