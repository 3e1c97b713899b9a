"""Frozen-encoder features for every video of a split, from N uniformly spaced clips.

The evaluation protocol of every method's paper: N clips (default 10) spread evenly over
the video, each centre-cropped (or, for the N x 3 test, cropped at the start, centre and end
of its longer side) and resized to the training size, encoded on their own;
probe averages the classifier's softmax over them, retrieval averages the embeddings.
2D frame encoders (TCE) see each clip as a stack of frames and pool over time, which is
video-level averaging of frame embeddings.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import DataLoader

from vssl_cli.data.augment import AugConfig, AugParams, apply
from vssl_cli.data.dataset import ClipDataset, collate_clips
from vssl_cli.data.readers import reader_options
from vssl_cli.data.samplers import uniform_clips
from vssl_cli.models.saved import input_convention


@dataclasses.dataclass
class Features:
    ids: list[str]
    labels: np.ndarray          # (N,) class index, -1 when unlabelled
    clips: np.ndarray           # (N, n_clips * crops, D) float32, clip-major
    crops: int = 1              # spatial crops per clip (1: centre; 3: + both ends)

    def mean(self, n_clips: int | None = None) -> np.ndarray:
        """Per-video embedding: the mean over all views, or over the centre crops of the
        middle clip(s)."""
        if n_clips is None:
            return self.clips.mean(1)
        per_clip = self.clips.reshape(len(self.clips), -1, self.crops, self.clips.shape[-1])
        return per_clip[:, _middle(per_clip.shape[1], n_clips), self.crops // 2].mean(1)

    @property
    def middle_view(self) -> int:
        """Index of the centre crop of the middle clip: the 1-clip test."""
        return self.clips.shape[1] // self.crops // 2 * self.crops + self.crops // 2


@dataclasses.dataclass(frozen=True)
class UniformViews:
    """The test clips of one video (picklable, for DataLoader worker processes)."""
    clip_len: int
    stride: int
    n_clips: int

    def __call__(self, num_frames: int, rng=None) -> list[np.ndarray]:
        return list(uniform_clips(num_frames, self.clip_len, self.stride, self.n_clips))


def _middle(total: int, n: int) -> slice:
    start = max(0, (total - n) // 2)
    return slice(start, start + n)


def centre_params(batch: int, valid_hw: torch.Tensor, device, position: float = 0.5,
                  fraction: float = 1.0) -> AugParams:
    """A square of ``fraction`` of the short side of each clip's valid region (1: the
    largest), nothing else: centred, or at ``position`` along the longer side (0 the
    start, 1 the end: the 3-crop test)."""
    p = AugParams.identity(batch, device)
    h, w = valid_hw[:, 0].float().to(device), valid_hw[:, 1].float().to(device)
    side = torch.minimum(h, w) * fraction
    fx, fy = side / w, side / h
    along_w = (w >= h).float()              # the crops move along the longer side
    px, py = 0.5 + (position - 0.5) * along_w, 0.5 + (position - 0.5) * (1 - along_w)
    x0, y0 = px * (1 - fx), py * (1 - fy)
    p.boxes = torch.stack([x0, y0, x0 + fx, y0 + fy], 1)
    return p


def crop_positions(crops: int) -> list[float]:
    """1: the centre; 3: start, centre, end of the longer side (PySlowFast, MMAction2)."""
    return [0.5] if crops == 1 else [i / (crops - 1) for i in range(crops)]


def preprocess(clips: torch.Tensor, valid_hw: torch.Tensor, spec: dict,
               position: float = 0.5) -> torch.Tensor:
    """Clips as the encoder takes them: the convention its manifest names (models/saved.py),
    a centre square (of ``crop_fraction`` of the short side) resized to its size."""
    cfg = AugConfig(**input_convention(spec))
    params = centre_params(clips.shape[0], valid_hw, clips.device, position,
                           float(spec.get("crop_fraction") or 1.0))
    return apply(clips, params, cfg, valid_hw)


@torch.no_grad()
def encode_clips(encoder, clips: list[torch.Tensor], valid_hw, spec: dict, device,
                 autocast_dtype=None, crops: int = 1) -> torch.Tensor:
    """Pooled features for a list of n clips, each (B, 3, T, H, W) uint8, each seen through
    ``crops`` square crops: (B, n * crops, D), clip-major."""
    x = torch.cat([c.to(device, non_blocking=True) for c in clips])
    hw = valid_hw.repeat(len(clips), 1)
    views = torch.stack([preprocess(x, hw, spec, pos) for pos in crop_positions(crops)], 1)
    x = views.flatten(0, 1)                                  # (n*B*crops, ...) clip-major
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        pooled = encoder(x)["pooled"].float()
    b = clips[0].shape[0]
    return pooled.view(len(clips), b, crops, -1).transpose(0, 1).reshape(b, len(clips) * crops,
                                                                         -1)


def split_features(encoder: torch.nn.Module, spec: dict, store_path: str, split: str | None,
                   n_clips: int, device: torch.device, batch_size: int = 8, workers: int = 0,
                   progress=None, clip_len: int | None = None, stride: int | None = None,
                   autocast_dtype=None, crops: int = 1) -> Features:
    clip_len, stride = clip_len or spec["clip_len"], stride or spec["stride"]

    dataset = ClipDataset(store_path, UniformViews(clip_len, stride, n_clips), split)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_clips, pin_memory=device.type == "cuda",
                        **reader_options(workers))
    encoder.eval().to(device)
    out, labels, ids = [], [], []
    for batch in loader:
        out.append(encode_clips(encoder, batch["clips"], batch["valid_hw"], spec, device,
                                autocast_dtype, crops).cpu())
        labels.append(batch["labels"])
        ids += [dataset.videos[int(i)]["id"] for i in batch["index"]]
        if progress is not None:
            progress.update(len(batch["index"]))
    return Features(ids, torch.cat(labels).numpy(), torch.cat(out).numpy(), crops)
