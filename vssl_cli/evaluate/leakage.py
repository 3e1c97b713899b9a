"""The leakage guard: an evaluation never tests on a video its model trained on, unless
asked to.

A model artifact lists the videos it trained on (``train_videos.txt``: its pretraining
set, and a finetuned model's finetuning set with the set of the model it started from).
An evaluation compares that list with its test videos by id: pretraining on UCF101 split
1's train videos and probing split 2's test videos overlaps (most of split 2's test
videos are in split 1's train list); Kinetics pretraining and a UCF101 test set do not.
A model that does not say what it trained on (imported weights without
``--train-videos``, or made before the list was kept) is "unknown": said on stderr and in
the manifest, never refused.
"""
from __future__ import annotations

import logging
import os

from vssl_cli.artifacts import artifact_file
from vssl_cli.errors import UsageProblem, VsslError
from vssl_cli.safe_io import read_text

TRAIN_VIDEOS = "train_videos.txt"
log = logging.getLogger("vssl")


def write_train_videos(folder, ids, earlier: set[str] | None, known: bool) -> dict:
    """Write the training set into the run folder; returns the manifest's entry."""
    every = sorted(set(ids) | (earlier or set()))
    (folder / TRAIN_VIDEOS).write_text("".join(f"{i}\n" for i in every))
    return {"file": TRAIN_VIDEOS, "count": len(every), "complete": bool(known)}


def trained_on(model_path: str, manifest: dict) -> tuple[set[str], bool] | None:
    """(video ids, whether the list is complete) of a model artifact, None when unknown."""
    entry = manifest.get("outputs", {}).get("train_videos")
    if not isinstance(entry, dict):
        return None
    name = artifact_file(entry.get("file"), model_path)
    try:
        text = read_text(os.path.join(model_path, name), "training video list", 1 << 30)
    except VsslError:
        return None
    return {line for line in text.splitlines() if line}, entry.get("complete") is True


def guard(model, test_ids: list[str], allow_overlap: bool) -> dict:
    """What the evaluation's manifest records of the overlap between its test videos and
    the model's training set; refuses an overlap unless ``allow_overlap``."""
    known = trained_on(model.path, model.manifest)
    if known is None:
        log.warning("the model does not record which videos it trained on (imported "
                    "weights, or made before vssl kept the list): test videos it trained "
                    "on cannot be ruled out")
        return {"train_overlap": "unknown"}
    seen, complete = known
    overlap = sorted(set(test_ids) & seen)
    if overlap and not allow_overlap:
        raise UsageProblem(f"{len(overlap)} of the {len(test_ids)} test videos were in the "
                           f"model's training set (e.g. {overlap[0]!r}); evaluate on the "
                           "official split it trained on, or pass --allow-overlap",
                           model.path)
    if overlap:
        log.warning("%d of the %d test videos were in the model's training set "
                    "(--allow-overlap): these figures are not comparable with published "
                    "ones", len(overlap), len(test_ids))
        return {"train_overlap": len(overlap)}
    return {} if complete else {"train_overlap": "unknown"}   # a list missing a part
