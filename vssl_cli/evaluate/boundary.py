"""Event boundary detection from feature change (``vssl probe --task boundary``).

Each video is encoded as clips starting every ``hop`` frames. The boundary score at frame
t is 1 - cos(f(clip ending at t), f(clip starting at t)): how much the content before t
differs from the content after it. Predicted boundaries are local maxima of the score
above a threshold, which is chosen on the train split (best F1) and then applied to the
test split. F1 follows the GEBD convention: a prediction matches an unmatched ground-truth
boundary at most ``rel_dis`` x the video's length away (default 0.05).
Ground truth is a JSON file: synth's ``synth.json``, or {video id or file stem: [frames]}
in source frames (rescaled when the store resampled the frame rate).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vssl_cli.data.samplers import clip_indices, span
from vssl_cli.errors import VsslError
from vssl_cli.safe_io import loads, read_bytes
from vssl_cli.evaluate.features import preprocess


def load_boundaries(path: str) -> dict[str, list[float]]:
    """{key: [source frames]}; keys are ids or file stems (both are tried)."""
    try:
        doc = loads(read_bytes(path, "boundaries file"))
    except (OSError, ValueError) as e:
        raise VsslError(f"cannot read boundaries: {e}", path) from None
    if isinstance(doc, dict) and isinstance(doc.get("videos"), list):     # synth.json
        if all(isinstance(v, dict) and isinstance(v.get("video"), str)
               and _frames(v.get("boundaries", [])) for v in doc["videos"]):
            return {Path(v["video"]).stem: list(v.get("boundaries", [])) for v in doc["videos"]}
    elif isinstance(doc, dict) and all(_frames(v) for v in doc.values()):
        return {str(k): list(v) for k, v in doc.items()}
    raise VsslError("boundaries must be synth.json or {video: [frame numbers]}", path)


def _frames(value) -> bool:
    """A list of frame numbers (finite, not negative)."""
    return isinstance(value, list) and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and 0 <= f < 1e12
        for f in value)


def truth_for(record: dict, table: dict[str, list[float]]) -> list[float] | None:
    found = table.get(record["id"], table.get(Path(record["id"]).name))
    if found is None:
        return None
    if record.get("timing") == "decoded":     # stored frame i is the source's frame i
        return list(found)
    scale = record.get("fps", 1.0) / (record.get("orig_fps") or record.get("fps", 1.0))
    return [b * scale for b in found]


@torch.no_grad()
def score_video(encoder, spec: dict, store, video_id: str, clip_len: int, stride: int,
                hop: int, device, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(frames t, scores) for t where a whole clip fits on both sides."""
    n = store.num_frames(video_id)
    length = span(clip_len, stride)
    starts = np.arange(0, n - length + 1, hop)
    if len(starts) < 2:
        return np.zeros(0), np.zeros(0)
    frames = torch.from_numpy(store.read(video_id, np.arange(n))).permute(3, 0, 1, 2)
    hw = torch.tensor([frames.shape[-2:]])
    feats = []
    for i in range(0, len(starts), batch):
        clips = torch.stack([frames[:, clip_indices(n, clip_len, stride, int(s))]
                             for s in starts[i:i + batch]]).to(device)
        x = preprocess(clips, hw.repeat(len(clips), 1), spec)
        feats.append(torch.nn.functional.normalize(encoder(x)["pooled"].float(), dim=1).cpu())
    f = torch.cat(feats)
    step = max(1, round(length / hop))            # clips starting at t - length and at t
    if len(f) <= step:
        return np.zeros(0), np.zeros(0)
    scores = 1 - (f[:-step] * f[step:]).sum(1)
    return starts[step:].astype(float), scores.numpy()


def peaks(times: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Times of local maxima of ``scores`` above ``threshold``."""
    if len(scores) == 0:
        return np.zeros(0)
    padded = np.concatenate([[-np.inf], scores, [-np.inf]])
    top = (scores >= padded[:-2]) & (scores > padded[2:]) & (scores > threshold)
    return times[top]


def match_counts(pred: np.ndarray, truth: list[float], tolerance: float) -> tuple[int, int, int]:
    """(matched, predicted, true) with each truth matched at most once, nearest first."""
    used, hits = set(), 0
    for p in sorted(pred):
        free = [(abs(p - t), i) for i, t in enumerate(truth) if i not in used
                and abs(p - t) <= tolerance]
        if free:
            used.add(min(free)[1])
            hits += 1
    return hits, len(pred), len(truth)


def f1_at(videos: list[dict], threshold: float, rel_dis: float) -> dict:
    hits = pred = true = 0
    for v in videos:
        h, p, t = match_counts(peaks(v["times"], v["scores"], threshold), v["truth"],
                               rel_dis * v["frames"])
        hits, pred, true = hits + h, pred + p, true + t
    precision = hits / pred if pred else 0.0
    recall = hits / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "predicted": pred,
            "boundaries": true}


def best_threshold(videos: list[dict], rel_dis: float) -> float:
    """The threshold with the best F1 among the score quantiles (ties: the higher one)."""
    pooled = np.concatenate([v["scores"] for v in videos if len(v["scores"])] or [np.zeros(1)])
    candidates = np.unique(np.quantile(pooled, np.linspace(0, 1, 101)))
    best = max(candidates, key=lambda c: (f1_at(videos, c, rel_dis)["f1"], c))
    return float(best)
