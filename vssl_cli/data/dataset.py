"""A torch Dataset over a frame store: each item is the raw clips one method asks for.

Workers only read: a ``views`` function (a method's sampler) turns a video's length and a
per-item random generator into frame-index arrays, the union of those frames is read with
one store call, and the uint8 clips go back as tensors. Augmentation happens later, batched
on the training device. Item randomness is seeded by (seed, epoch, item), so results do
not depend on how many workers there are or which one read the item.
Videos in one store may differ in size (aspect ratios); ``collate_clips`` pads them to a
common size and reports each clip's valid region so crops stay inside the real pixels.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from vssl_cli.errors import VsslError
from vssl_cli.store import open_store

Views = Callable[[int, np.random.Generator], list[np.ndarray]]


def resolve_split(videos: list[dict], split: str | None) -> str | None:
    """``auto``: the train split when the store has splits, else every video; ``all``: every
    video."""
    if split == "auto":
        return "train" if any(r.get("split") == "train" for r in videos) else None
    return None if split in (None, "all") else split


def in_official_split(name: str | None, official: int | None) -> str | None:
    """``name`` (``train``, ``test``) in official split ``official`` of a UCF101/HMDB51
    store when given (``train@2``: split 2's train videos); a name that already says its
    split, or none, is kept."""
    return name if not official or name is None or "@" in name else f"{name}@{official}"


def split_name(videos: list[dict], split: str | None, official: int | None = None
               ) -> str | None:
    """The store split a run uses: ``split`` resolved (``auto``, ``all``), in official split
    ``official`` when given."""
    return in_official_split(resolve_split(videos, split), official)


class ClipDataset(Dataset):
    def __init__(self, store_path: str, views: Views, split: str | None = None, seed: int = 0,
                 ids: list[str] | None = None, official_split: int | None = None):
        self.store = open_store(store_path)
        self.videos = self.store.split(split_name(self.store.videos, split, official_split))
        if ids is not None:
            wanted = set(ids)
            self.videos = [r for r in self.videos if r["id"] in wanted]
        if not self.videos:
            raise VsslError(f"no usable videos in split {split!r}", store_path)
        self.classes = self.store.classes
        self.views, self.seed, self.epoch = views, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos)

    def label(self, i: int) -> int:
        label = self.videos[i].get("label")
        return self.classes.index(label) if label in self.classes else -1

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key`` is an item index, or (epoch, item) from ``EpochBatches``."""
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        record = self.videos[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        frames_in_video = self.store.num_frames(record["id"])
        views = [np.asarray(v, dtype=np.int64) for v in self.views(frames_in_video, rng)]
        wanted = np.unique(np.concatenate(views))
        frames = self.store.read(record["id"], wanted)                     # (N, H, W, 3)
        # Gathered in numpy: indexing a uint8 torch tensor with an index array takes ~25x
        # longer (0.2 ms per clip in a one-thread loader worker).
        clips = [torch.from_numpy(frames[np.searchsorted(wanted, v)]).permute(3, 0, 1, 2)
                 for v in views]
        return {"clips": clips, "indices": views, "label": self.label(i), "index": i}


def collate_clips(batch: list[dict]) -> dict:
    """Stack each view over the batch, zero-padding frames to the largest H and W.

    Returns clips (a list, one (B, 3, T, H, W) uint8 tensor per view), valid_hw (B, 2),
    labels (B,), index (B,), and indices (a list, one (B, T) tensor per view).
    The clips keep the store's channel-last memory (``torch.channels_last_3d``): copying
    each clip in as it was read is a plain copy, where a channel-first batch cost a
    transpose per clip (2x the copy on a CPU); the crop reads this layout directly.
    """
    n_views = len(batch[0]["clips"])
    hw = torch.tensor([item["clips"][0].shape[-2:] for item in batch])
    height, width = (int(v) for v in hw.max(0).values)
    views = []
    for k in range(n_views):
        clips = [item["clips"][k] for item in batch]
        out = torch.zeros((len(batch), clips[0].shape[1], height, width, 3), dtype=torch.uint8)
        for b, clip in enumerate(clips):
            out[b, :, : clip.shape[-2], : clip.shape[-1]] = clip.permute(1, 2, 3, 0)
        views.append(out.permute(0, 4, 1, 2, 3))
    return {"clips": views, "valid_hw": hw,
            "labels": torch.tensor([item["label"] for item in batch]),
            "index": torch.tensor([item["index"] for item in batch]),
            "indices": [torch.from_numpy(np.stack([item["indices"][k] for item in batch]))
                        for k in range(n_views)]}
