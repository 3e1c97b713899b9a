"""The feature of one query video for ``vssl retrieve --query``: a video already in the
evaluation, any video of the frame store, or a video file decoded like the store was."""
from __future__ import annotations

import os

import numpy as np
import torch

from vssl_cli.data.samplers import uniform_clips
from vssl_cli.errors import UsageProblem
from vssl_cli.evaluate.features import encode_clips
from vssl_cli.store import open_store
from vssl_cli.video.decode import DecodeParams, decode_all


def _frames_of(query: str, frames_path: str, frames_manifest: dict) -> np.ndarray:
    with open_store(frames_path, frames_manifest) as store:
        if any(r["id"] == query for r in store.videos):
            return store.read(query, np.arange(store.num_frames(query)))
    if not os.path.isfile(query):
        raise UsageProblem("--query is neither a video id of --data nor a video file", query)
    return decode_all(query, DecodeParams.of_store(frames_manifest["config"]["frames"]))


def embed_query(query: str, model, frames_path: str, frames_manifest: dict, saved,
                config: dict, device: torch.device) -> np.ndarray:
    for ids, vectors in (("query_ids", "query"), ("gallery_ids", "gallery")):
        hit = np.flatnonzero(saved[ids] == query)
        if hit.size:
            return saved[vectors][hit[0]]
    frames = _frames_of(query, frames_path, frames_manifest)
    if len(frames) == 0:
        raise UsageProblem("the query video has no frames", query)
    idx = uniform_clips(len(frames), config["clip_len"], config["stride"], config["clips"])
    clip = torch.from_numpy(frames).permute(3, 0, 1, 2)           # (3, T, H, W)
    views = [clip[:, i].unsqueeze(0) for i in idx]
    hw = torch.tensor([frames.shape[1:3]])
    feats = encode_clips(model.encoder().eval().to(device), views, hw, model.spec, device)
    return feats[0].mean(0).cpu().numpy()
