"""What finetuning needs besides the engine: the labelled subset and the N-clip test."""
from __future__ import annotations

import math

import numpy as np
import torch

from vssl_cli.data.dataset import split_name
from vssl_cli.evaluate.features import split_features
from vssl_cli.evaluate.probe import confusion_matrix, topk_accuracy
from vssl_cli.store import open_store


def label_subset(store_path: str, split: str, fraction: float, classes: list[str],
                 seed: int, official_split: int | None = None) -> list[str]:
    """Video ids of ``split`` (of official split ``official_split``): a share ``fraction``
    of every class (at least one each), drawn with ``seed``; unlabelled videos are left
    out."""
    with open_store(store_path) as store:
        videos = store.split(split_name(store.videos, split, official_split))
    rng = np.random.default_rng([seed, 11])
    chosen = []
    for label in classes:
        ids = sorted(r["id"] for r in videos if r.get("label") == label)
        if not ids:
            continue
        take = max(1, math.ceil(fraction * len(ids))) if fraction < 1 else len(ids)
        chosen += [ids[i] for i in sorted(rng.choice(len(ids), take, replace=False))]
    return chosen


@torch.no_grad()
def clip_test(method, spec: dict, store_path: str, split: str, n_clips: int,
              device: torch.device, classes: list[str], batch_size: int = 8,
              workers: int = 0, crops: int = 1) -> dict:
    """Top-1/top-5 of the finetuned classifier, softmax averaged over ``n_clips`` clips
    (x ``crops`` spatial crops each)."""
    feats = split_features(method.encoder, spec, store_path, split, n_clips, device,
                           batch_size, workers, crops=crops)
    keep = feats.labels >= 0
    method.classifier.eval().to(device)
    x = torch.from_numpy(feats.clips[keep]).to(device)
    probs = torch.softmax(method.classifier(x), -1).cpu().numpy()    # (N, clips, C)
    labels = feats.labels[keep]
    video = probs.mean(1)
    confusion = confusion_matrix(video.argmax(1), labels, len(classes))
    return {"test_top1": topk_accuracy(video, labels, 1),
            "test_top5": topk_accuracy(video, labels, 5),
            "test_top1_1clip": topk_accuracy(probs[:, feats.middle_view], labels, 1),
            "test_clips": n_clips, "test_crops": crops, "test_videos": int(keep.sum()),
            "confusion": confusion.tolist()}
