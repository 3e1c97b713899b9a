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
            click.option("--clips", type=click.IntRange(1), default=10, show_default=True,
                         help="Uniformly spaced clips per test video."),
            click.option("--clip-len", type=click.IntRange(1), default=None,
                         help="Frames per clip [default: as in training]."),
            click.option("--stride", type=click.IntRange(1), default=None,
                         help="Frame stride within a clip [default: as in training]."),
            click.option("--train-split", default="train", show_default=True,
                         help="Split the classifier/gallery is built from."),
            click.option("--test-split", default="test", show_default=True,
                         help="Split evaluated (queries)."),
            click.option("--batch-size", type=click.IntRange(1), default=8,
                         show_default=True, help="Videos per encoder batch."),
            click.option("-j", "--workers", type=click.IntRange(0), default=2,
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


def base_config(task: str, model, clips, clip_len, stride, train_split, test_split) -> dict:
    """The settings every evaluation records: its clips and which splits it compares."""
    return {"task": task, "clips": clips, "clip_len": clip_len or model.spec["clip_len"],
            "stride": stride or model.spec["stride"], "train_split": train_split,
            "test_split": test_split}


def train_test_features(model, frames: str, config: dict, dev, amp, batch_size: int,
                        workers: int):
    """Frozen features of the train and test splits (each with a progress bar)."""
    from vssl_cli.cli.common import progress_bar
    from vssl_cli.evaluate.features import split_features
    encoder = model.encoder()
    out = []
    for split in (config["train_split"], config["test_split"]):
        crops = config.get("crops", 1) if split == config["test_split"] else 1
        with progress_bar(0, f"features {split}") as bar:
            out.append(split_features(encoder, model.spec, frames, split, config["clips"], dev,
                                      batch_size, workers, bar, config["clip_len"],
                                      config["stride"], amp, crops))
    return out
