"""Controllable augmentations (Qian et al.), ``--method ctrlaug``.

Views of one video: a global video (``global_len`` frames spread over the whole video,
weak crop) and ``n_local`` local clips (``clip_len`` frames at ``stride``), clip k centred
in the k-th of n equal parts of the video, each with a strong crop inside the global crop.
The global view runs through the same weights with temporal stride 1 in the last three
stages, so its map keeps more time steps.

- L_rc, soft region contrast: S_k(i, j) is the share of local cell i's spatio-temporal
  tube (from the recorded crop, flip and frame indices) that global cell j's tube covers;
  rows sum to 1. Cross-entropy between S_k(i, :) and the softmax over local cell i's
  similarities to the video's global cells plus every other video's (negatives).
- L_mi, low-level shortcut removal: the colour jitter and blur strengths come from
  discrete intensity groups (``mi_groups`` per step). A MINE estimator G (2-layer MLP on a
  pair of clip features) learns E_joint[G] - log E_marginal[e^G] with joint pairs sharing
  a group; the encoder sees it through gradient reversal, so it removes what G finds.
  The frozen estimator is also applied to local-global pairs of a video (joint) against
  other videos' (marginal), and the encoder minimises that estimate.
- L_td, temporal dependency: a GRU (or MLP, or GRU then MLP) over the local clip features
  in temporal order, compared by cosine with the global feature; the correct order is the
  joint sample, shuffled orders the marginal; the MINE-style bound is maximised.
Loss = w_rc L_rc + w_mi L_mi + w_td L_td; a weight of 0 switches a term off.
"""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vssl_cli.data.augment import AugConfig, AugParams, apply, sample_boxes
from vssl_cli.data.samplers import clip_indices
from vssl_cli.losses import soft_info_nce
from vssl_cli.methods.base import Method
from vssl_cli.models import ProjectionHead, build_backbone

# The intensity groups of the supplement, as its ranges: a strength is drawn inside its
# group's band. Brightness, contrast and saturation: 4 bands in [0, 0.4]; hue: 2 bands in
# [0, 0.1]; blur: kernel radius 3 or 5 pixels (sizes 7 and 11) x sigma in [0.1, 0.5] or
# [0.5, 2]. 4 x 4 x 4 x 2 x 4 = 512 groups.
JITTER_BANDS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4))
HUE_BANDS = ((0.0, 0.05), (0.05, 0.1))
BLUR_BANDS = ((3, 0.1, 0.5), (3, 0.5, 2.0), (5, 0.1, 0.5), (5, 0.5, 2.0))  # radius, sigma
GROUPS = list(itertools.product(range(4), range(4), range(4), range(2), range(4)))


@dataclasses.dataclass
class CtrlAugParams:
    clip_len: int = 16               # local clip (and evaluation clip)
    stride: int = 1
    n_local: int = 4
    global_len: int = 16
    global_scale: tuple[float, float] = (0.8, 1.0)
    local_scale: tuple[float, float] = (0.4, 0.8)      # of the global crop's area
    tau: float = 0.1
    proj_dim: int = 128
    mi_groups: int = 32
    td_head: str = "gru"             # gru | mlp | gru+mlp
    td_shuffles: int = 4
    w_rc: float = 1.0
    w_mi: float = 1.0
    w_td: float = 1.0
    # Sec. 4.2's maps at 112 px: local 2x4x4, global 8x4x4 (T_v / (K T_c) = 1). Temporal
    # strides 2,2,2,1 give 16 frames 2 steps (the global view, strides 2,1,1,1: 8); res5 is
    # pooled to region_grid x region_grid cells (the paper's R3D-18 reaches 4x4 with a stem
    # max-pool; ours has none and would give 7x7). 0 keeps the map as it is.
    temporal_strides: tuple[int, ...] = (2, 2, 2, 1)
    region_grid: int = 4

    def check_maps(self, factors: dict[str, int], backbone: str) -> None:
        if self.clip_len // factors["res5"] < 1:
            raise ValueError(
                f"{backbone} makes one time step of res5 from {factors['res5']} frames, more "
                f"than a {self.clip_len}-frame local clip: lengthen params.clip_len")

    def validate(self):
        if self.td_head not in ("gru", "mlp", "gru+mlp"):
            raise ValueError("td_head must be gru, mlp or gru+mlp")
        if self.n_local < 2 and self.w_td:
            raise ValueError("the temporal dependency loss needs n_local >= 2")
        if not 1 <= self.mi_groups <= len(GROUPS):
            raise ValueError(f"mi_groups must be between 1 and {len(GROUPS)}")


def local_global_views(num_frames: int, clip_len: int, stride: int, n_local: int,
                       global_len: int, rng: np.random.Generator) -> list[np.ndarray]:
    """[global, local_1 .. local_n]; local k's centre lies in [(k-1)T/n, kT/n)."""
    glob = np.linspace(0, num_frames - 1, global_len).round().astype(int)
    length = (clip_len - 1) * stride + 1
    local = []
    for k in range(n_local):
        centre = rng.uniform(k * num_frames / n_local, (k + 1) * num_frames / n_local)
        start = int(np.clip(round(centre - length / 2), 0, max(0, num_frames - length)))
        local.append(clip_indices(num_frames, clip_len, stride, start))
    return [glob, *local]


def cell_edges(start: torch.Tensor, end: torch.Tensor, cells: int) -> torch.Tensor:
    """(B,) intervals split into ``cells`` equal parts: (B, cells, 2) [lo, hi)."""
    t = torch.linspace(0, 1, cells + 1, device=start.device, dtype=torch.float64)
    edges = start[:, None].double() + (end - start)[:, None].double() * t
    return torch.stack([edges[:, :-1], edges[:, 1:]], -1)


def _box_cells(boxes: torch.Tensor, flip: torch.Tensor, cells: int, axis: int) -> torch.Tensor:
    """Cell intervals of each box along x (axis 0) or y (axis 1) in frame fractions; a
    flipped clip's first column shows the box's right edge."""
    lo, hi = boxes[:, axis].double(), boxes[:, axis + 2].double()
    edges = cell_edges(lo, hi, cells)
    if axis == 0:
        edges = torch.where(flip.view(-1, 1, 1), edges.flip(1), edges)
    return edges


def _overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (B, I, 2), b (B, J, 2) intervals -> (B, I, J) overlap lengths."""
    lo = torch.maximum(a[:, :, None, 0], b[:, None, :, 0])
    hi = torch.minimum(a[:, :, None, 1], b[:, None, :, 1])
    return (hi - lo).clamp(min=0)


def correspondence(local_time, local_boxes, local_flip, local_shape,
                   global_time, global_boxes, global_flip, global_shape) -> torch.Tensor:
    """S (B, I, J): share of local cell i's tube inside global cell j's tube.

    ``*_time`` (B, 2) frame intervals [start, end); boxes (B, 4) frame fractions;
    ``*_shape`` the maps' (T, h, w). Cells are ordered (t, y, x)."""
    (lt, lh, lw), (gt, gh, gw) = local_shape, global_shape
    ot = _overlap(cell_edges(local_time[:, 0], local_time[:, 1], lt),
                  cell_edges(global_time[:, 0], global_time[:, 1], gt))
    oy = _overlap(_box_cells(local_boxes, local_flip, lh, 1),
                  _box_cells(global_boxes, global_flip, gh, 1))
    ox = _overlap(_box_cells(local_boxes, local_flip, lw, 0),
                  _box_cells(global_boxes, global_flip, gw, 0))
    vol = torch.einsum("bij,bkl,bmn->bikmjln", ot, oy, ox).reshape(
        ot.shape[0], lt * lh * lw, gt * gh * gw)
    local_vol = ((local_time[:, 1] - local_time[:, 0]).double() / lt
                 * (local_boxes[:, 3] - local_boxes[:, 1]).double() / lh
                 * (local_boxes[:, 2] - local_boxes[:, 0]).double() / lw)
    return (vol / local_vol.view(-1, 1, 1)).float()


def _time_spans(indices: list[torch.Tensor], device) -> list[torch.Tensor]:
    """Frame intervals (B, 2) per view: a local clip covers [first, last + 1); the global
    video's last sample stands for the frames up to where the next sample would be."""
    spans = [torch.stack([v[:, 0], v[:, -1] + 1], 1).double().to(device) for v in indices]
    g = indices[0].double()
    gap = ((g[:, -1] - g[:, 0]) / max(1, g.shape[1] - 1)).clamp(min=1).to(device)
    spans[0][:, 1] = spans[0][:, 1] - 1 + gap
    return spans


class GradReverse(torch.autograd.Function):
    """Identity forward, negated gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def mine_bound(joint: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan lower bound E_joint[T] - log E_marginal[e^T]."""
    return joint.mean() - (torch.logsumexp(marginal, 0) - math.log(marginal.numel()))


class PairCritic(nn.Module):
    """G_theta: a 2-layer MLP scoring a pair of features."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 1))

    def forward(self, a, b):
        return self.net(torch.cat([a, b], -1)).squeeze(-1)


class OrderHead(nn.Module):
    """Scores ordered local features against the global feature f'(v), as Table 6's heads:
    ``gru``: cosine (over tau) between the GRU's output and f'(v); ``mlp``: an MLP on the
    concatenation of f'(v) and the ordered features; ``gru+mlp``: an MLP on f'(v) and the
    GRU's output."""

    def __init__(self, kind: str, dim: int, n: int):
        super().__init__()
        self.kind = kind
        self.gru = nn.GRU(dim, dim, batch_first=True) if "gru" in kind else None
        width = dim + (dim if self.gru is not None else dim * n)
        self.mlp = (nn.Sequential(nn.Linear(width, dim), nn.ReLU(inplace=True),
                                  nn.Linear(dim, 1)) if "mlp" in kind else None)

    def forward(self, seq: torch.Tensor, g: torch.Tensor, tau: float) -> torch.Tensor:
        """seq (B, n, D), g (B, D) -> (B,) scores."""
        summary = self.gru(seq)[1][-1] if self.gru is not None else seq.flatten(1)
        if self.mlp is None:
            return (F.normalize(summary, dim=1) * F.normalize(g, dim=1)).sum(1) / tau
        return self.mlp(torch.cat([g, summary], 1)).squeeze(1)


class CtrlAug(Method):
    name = "ctrlaug"
    Params = CtrlAugParams

    def leaves_parameters_unused(self) -> bool:
        """A term weighted 0 is not computed: its head (region, MINE critic, order) is idle."""
        p = self.params
        return not (p.w_rc and p.w_mi and p.w_td)

    def __init__(self, params: CtrlAugParams, backbone, aug, temporal_strides=None):
        strides = tuple(temporal_strides or params.temporal_strides)
        super().__init__(params, backbone, aug, strides)
        # Same weights, temporal stride 1 in the last three stages. Only parameters are
        # shared: the global view keeps its own BatchNorm statistics.
        self.global_encoder = build_backbone(backbone, temporal_strides=(strides[0], 1, 1, 1))
        for mine, theirs in zip(self.global_encoder.modules(), self.encoder.modules()):
            for key, value in theirs._parameters.items():
                mine._parameters[key] = value
        dim, d = self.encoder.out_dim, params.proj_dim
        self.region_head = ProjectionHead(dim, d)            # applied to every map cell
        self.clip_head = ProjectionHead(dim, d)
        self.critic = PairCritic(d)
        self.order_head = OrderHead(params.td_head, d, params.n_local)

    @staticmethod
    def sample_views(p, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        return local_global_views(num_frames, p.clip_len, p.stride, p.n_local, p.global_len,
                                  rng)

    # --- augmentation with recorded parameters -------------------------------------------
    def _intensity(self, n: int, gen, device) -> tuple[torch.Tensor, dict]:
        """Group id per clip (from ``mi_groups`` groups drawn for this step) and the colour
        and blur parameters the groups imply."""
        chosen = torch.randperm(len(GROUPS), generator=gen, device=device)[:self.params.mi_groups]
        group = chosen[torch.randint(0, len(chosen), (n,), generator=gen, device=device)]
        levels = torch.tensor(GROUPS, device=device)[group]          # (n, 5)

        def within(bands, index, size):
            lo, hi = torch.tensor(bands, device=device)[index].unbind(-1)
            return lo + (hi - lo) * torch.rand(size, generator=gen, device=device)

        def signed(size):
            return torch.where(torch.rand(size, generator=gen, device=device) < 0.5, -1.0, 1.0)

        factors = 1 + signed((n, 3)) * within(JITTER_BANDS, levels[:, :3], (n, 3))
        hue = signed(n) * within(HUE_BANDS, levels[:, 3], n)
        blur = torch.tensor(BLUR_BANDS, device=device)[levels[:, 4]]
        sigma = blur[:, 1] + (blur[:, 2] - blur[:, 1]) * torch.rand(n, generator=gen,
                                                                     device=device)
        return group, {"brightness": factors[:, 0], "contrast": factors[:, 1],
                       "saturation": factors[:, 2], "hue": hue, "blur_sigma": sigma,
                       "blur_radius": blur[:, 0]}

    def _params(self, boxes, flip, intensity) -> AugParams:
        n = boxes.shape[0]
        return AugParams(boxes=boxes, flip=flip, gray=torch.zeros(n, dtype=torch.bool,
                                                                 device=boxes.device),
                         **intensity)

    def loss(self, batch, gen):
        p, k = self.params, self.params.n_local
        clips = batch["clips"]
        b = clips[0].shape[0]
        device = clips[0].device
        hw = batch["valid_hw"].to(device)
        aspect = (hw[:, 1] / hw[:, 0]).float()
        g_boxes = sample_boxes(b, aspect, p.global_scale, self.aug.ratio, gen, device)
        g_flip = torch.rand(b, generator=gen, device=device) < self.aug.flip_p
        rel = sample_boxes(b * k, aspect.repeat(k), p.local_scale, self.aug.ratio, gen, device)
        gb = g_boxes.repeat(k, 1)                                     # local inside global
        size = torch.cat([gb[:, 2:] - gb[:, :2]] * 2, 1)
        l_boxes = gb[:, :2].repeat(1, 2) + rel * size
        l_flip = torch.rand(b * k, generator=gen, device=device) < self.aug.flip_p
        group, intensity = self._intensity(b * (k + 1), gen, device)
        g_int = {key: v[:b] for key, v in intensity.items()}
        l_int = {key: v[b:] for key, v in intensity.items()}
        cfg = AugConfig(size=self.aug.size, mean=self.aug.mean, std=self.aug.std)
        xg = apply(clips[0], self._params(g_boxes, g_flip, g_int), cfg, hw)
        xl = apply(torch.cat(clips[1:]), self._params(l_boxes, l_flip, l_int), cfg,
                   hw.repeat(k, 1))
        if self.channels_last:
            xg = xg.contiguous(memory_format=torch.channels_last_3d)
            xl = xl.contiguous(memory_format=torch.channels_last_3d)

        g_map = self._grid(self.global_encoder(xg)["res5"])           # (B, C, Tg, h, w)
        l_map = self._grid(self.encoder(xl)["res5"])                  # (K*B, C, Tl, h, w)
        g_vec = F.normalize(self.clip_head(g_map.mean(dim=(2, 3, 4))).float(), dim=1)
        l_vec = F.normalize(self.clip_head(l_map.mean(dim=(2, 3, 4))).float(), dim=1)
        parts, total = {}, g_vec.new_zeros(())
        if p.w_rc:
            parts["rc"] = self._region_loss(g_map, l_map, _time_spans(batch["indices"], device),
                                            g_boxes, g_flip, l_boxes, l_flip)
            total = total + p.w_rc * parts["rc"]
        if p.w_mi:
            parts["mi"] = self._mi_loss(torch.cat([g_vec, l_vec]), group, g_vec, l_vec, gen)
            total = total + p.w_mi * parts["mi"]
        if p.w_td:
            parts["td"] = self._order_loss(g_vec, l_vec.view(k, b, -1).transpose(0, 1), gen)
            total = total + p.w_td * parts["td"]
        return total, {key: v.detach() for key, v in parts.items()}

    def _grid(self, maps: torch.Tensor) -> torch.Tensor:
        """res5 pooled to region_grid x region_grid spatial cells (time kept)."""
        g = self.params.region_grid
        if not g or tuple(maps.shape[3:]) == (g, g):
            return maps
        return F.adaptive_avg_pool3d(maps, (maps.shape[2], g, g))

    # --- the three terms ------------------------------------------------------------------
    def _cells(self, maps: torch.Tensor) -> torch.Tensor:
        n, c = maps.shape[:2]
        cells = maps.flatten(2).transpose(1, 2)                        # (N, T*h*w, C)
        z = self.region_head(cells.reshape(-1, c)).float()
        return F.normalize(z, dim=1).view(n, cells.shape[1], -1)

    def _region_loss(self, g_map, l_map, times, g_boxes, g_flip, l_boxes, l_flip):
        b, k = g_map.shape[0], self.params.n_local
        g_cells, l_cells = self._cells(g_map), self._cells(l_map)      # (B, J, D), (KB, I, D)
        j = g_cells.shape[1]
        s = correspondence(torch.cat(times[1:]), l_boxes, l_flip, tuple(l_map.shape[2:]),
                           times[0].repeat(k, 1), g_boxes.repeat(k, 1), g_flip.repeat(k),
                           tuple(g_map.shape[2:]))                     # (KB, I, J)
        video = torch.arange(b, device=g_map.device).repeat(k)        # local clip -> video
        target = torch.zeros(k * b, s.shape[1], b * j, device=s.device)
        cols = video[:, None] * j + torch.arange(j, device=s.device)
        target.scatter_(2, cols[:, None, :].expand(-1, s.shape[1], -1), s)
        anchors = l_cells.reshape(-1, l_cells.shape[-1])
        return soft_info_nce(anchors, g_cells.reshape(b * j, -1),
                             target.reshape(-1, b * j), self.params.tau)

    def _mi_loss(self, feats, group, g_vec, l_vec, gen):
        """Estimator ascends the bound on reversed features (the encoder descends it);
        then the frozen estimator's local-global estimate is minimised by the encoder."""
        n = feats.shape[0]
        x = GradReverse.apply(feats)
        perm = torch.randperm(n, generator=gen, device=feats.device)
        same = group[:, None] == group[None, :]
        same.fill_diagonal_(False)
        partner = torch.where(same.any(1), same.float().argmax(1), perm)
        has = same.any(1)
        if not bool(has.any()):
            return feats.new_zeros(())
        joint = self.critic(x[has], x[partner[has]])
        marginal = self.critic(x, x[perm])       # arbitrary pairs: the product of marginals
        loss = -mine_bound(joint, marginal)
        b, k = g_vec.shape[0], self.params.n_local
        if b > 1:                                  # frozen critic on local-global pairs
            frozen = {name: w.detach() for name, w in self.critic.named_parameters()}
            critic = torch.func.functional_call
            g_rep = g_vec.repeat(k, 1)
            shift = torch.arange(b, device=g_vec.device).roll(1).repeat(k)   # another video
            lg_joint = critic(self.critic, frozen, (l_vec, g_rep))
            lg_marg = critic(self.critic, frozen, (l_vec, g_vec[shift]))
            loss = loss + mine_bound(lg_joint, lg_marg)
        return loss

    def _order_loss(self, g_vec, seq, gen):
        """seq (B, n, D) in temporal order with the global feature is the joint sample,
        shuffled orders the marginal ones (Sec. 3.3); the head scores each pair."""
        b, n, _ = seq.shape
        joint = self.order_head(seq, g_vec, self.params.tau)
        marginal = []
        for _ in range(self.params.td_shuffles):
            perm = torch.randperm(n, generator=gen, device=seq.device)
            if bool((perm == torch.arange(n, device=seq.device)).all()):
                perm = perm.roll(1)
            marginal.append(self.order_head(seq[:, perm], g_vec, self.params.tau))
        return -mine_bound(joint, torch.cat(marginal))
