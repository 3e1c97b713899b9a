"""Options and set-up shared by the evaluation commands (probe, retrieve)."""
from __future__ import annotations

import os

import click

from vssl_cli.artifacts import resolve_input
from vssl_cli.engine.device import autocast_dtype, resolve_device


def eval_options(default_name: str):
    def wrap(f):
        for opt in reversed([
            click.argument("run"),
            click.option("--data", "frames", required=True,
                         help="Frame store with the labelled videos to evaluate on."),
            click.option("-o", "--output", default=None, type=click.Path(file_okay=False),
                         help=f"Evaluation directory [default: RUN/{default_name}]."),
            click.option("--clips", type=click.IntRange(1, 1000), default=10, show_default=True,
                         help="Uniformly spaced clips per test video."),
            click.option("--clip-len", type=click.IntRange(1, 4096), default=None,
                         help="Frames per clip [default: as in training]."),
            click.option("--stride", type=click.IntRange(1, 1024), default=None,
                         help="Frame stride within a clip [default: as in training]."),
            click.option("--train-split", default="train", show_default=True,
                         help="Split the classifier/gallery is built from."),
            click.option("--test-split", default="test", show_default=True,
                         help="Split evaluated (queries)."),
            click.option("--official-split", type=click.IntRange(1, 3), default=None,
                         help="Which official UCF101/HMDB51 split's train and test videos "
                              "to use: 1, 2 or 3 [default: extract's --split]."),
            click.option("--allow-overlap", is_flag=True,
                         help="Evaluate even when test videos were in the model's training "
                              "set (marked in the manifest; not comparable with papers)."),
            click.option("--batch-size", type=click.IntRange(1, 65536), default=8,
                         show_default=True, help="Videos per encoder batch."),
            click.option("-j", "--workers", type=click.IntRange(0, 1024), default=2,
                         show_default=True, help="DataLoader worker processes."),
            click.option("--device", default="auto", show_default=True,
                         help="auto (CUDA when present), cpu, cuda, cuda:N."),
            click.option("--force", is_flag=True, help="Evaluate again even if up to date."),
            click.option("--json", "as_json", is_flag=True,
                         help="Print the manifest as JSON instead of the artifact path."),
        ]):
            f = opt(f)
        return f
    return wrap


def setup(run: str, frames: str, output: str | None, name: str, device: str):
    from vssl_cli.evaluate.artifact import open_frames, open_model
    run = resolve_input(run)
    model = open_model(run)
    frames_manifest = open_frames(frames)
    dev = resolve_device(device)
    return model, frames_manifest, output or os.path.join(run, name), dev, \
        autocast_dtype("auto", dev)


def base_config(task: str, model, clips, clip_len, stride, train_split, test_split,
                official_split: int | None = None) -> dict:
    """The settings every evaluation records: its clips and which splits it compares."""
    return {"task": task, "clips": clips, "clip_len": clip_len or model.spec["clip_len"],
            "stride": stride or model.spec["stride"], "train_split": train_split,
            "test_split": test_split,
            **({"official_split": official_split} if official_split else {})}


def split_names(config: dict) -> tuple[str, str]:
    """The store splits of the train and test videos (``ROLE@N`` in an official split)."""
    from vssl_cli.data.dataset import in_official_split
    return tuple(in_official_split(config[k], config.get("official_split"))
                 for k in ("train_split", "test_split"))


def guard_overlap(model, frames: str, frames_manifest: dict, config: dict,
                  allow_overlap: bool) -> dict:
    """Refuse test videos the model trained on (see evaluate/leakage.py); returns what the
    evaluation's config records of it."""
    from vssl_cli.evaluate.leakage import guard
    from vssl_cli.store import open_store
    with open_store(frames, frames_manifest) as store:
        test_ids = [r["id"] for r in store.split(split_names(config)[1])]
        official = config.get("official_split") or store.extracted_split()
    return {**guard(model, test_ids, allow_overlap),
            **({"_official_split": official} if official else {})}


def recorded(compute, config: dict):
    """``compute`` whose metrics also say which official split was evaluated (the
    config names it only when given, so evaluations made before keep their ids)."""
    official = config.pop("_official_split", None)

    def run(tmp):
        metrics = compute(tmp)
        return {**metrics, "official_split": official} if official else metrics
    return run


def train_test_features(model, frames: str, config: dict, dev, amp, batch_size: int,
                        workers: int):
    """Frozen features of the train and test splits (each with a progress bar)."""
    from vssl_cli.cli.common import progress_bar
    from vssl_cli.evaluate.features import split_features
    encoder = model.encoder()
    out = []
    train_name, test_name = split_names(config)
    for split in (train_name, test_name):
        crops = config.get("crops", 1) if split == test_name else 1
        with progress_bar(0, f"features {split}") as bar:
            out.append(split_features(encoder, model.spec, frames, split, config["clips"], dev,
                                      batch_size, workers, bar, config["clip_len"],
                                      config["stride"], amp, crops))
    return out
