"""Training data-path benchmark.

1. Data-path overhead: clips/s of the full pretrain step (DataLoader workers reading the
   frame store, batched augmentation on the device, forward, backward, optimiser step;
   the engine's own loop) against the model's forward+backward+step alone on tensors that
   are already augmented and on the device. Overhead = 1 - full / alone (target < 10%).
2. Cache read vs decode: random training clips (clip_len frames at stride 2) read from
   the frame store against decoding the same clips from the mp4 files with ffmpeg (seek
   to the clip, decode, scale like the store). Target: 10x or more.
3. Where the overhead goes: the batched augmentation's time per step on the device
   (on a CPU it competes with the model for the same cores, so it is the floor of the
   overhead there) and the share of the run the loop waited for a batch (reads hidden
   behind compute leave this near 0).

Writes bench/results/train.json (or train_<tag>.json) and prints the ratios.
Usage: python bench/train.py [--backbone r3d18-tiny] [--size 64] [--batch 16] [--steps 20]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import make_videos, save

from vssl_cli.data.dataset import ClipDataset
from vssl_cli.engine.config import default_config
from vssl_cli.engine.device import autocast_dtype, loader_workers, resolve_device
from vssl_cli.engine.trainer import build_optimizer, train
from vssl_cli.extract import ExtractConfig, extract
from vssl_cli.losses import nt_xent
from vssl_cli.methods.simclr import SimCLR
from vssl_cli.store import open_store
from vssl_cli.video.decode import DecodeParams, FrameDecoder


def make_store(work: Path, videos: int, frames: int, codec: str = "auto"
               ) -> tuple[Path, list[Path]]:
    paths = make_videos(work / "videos", videos, frames)
    store = work / "frames.zarr"
    extract([str(work / "videos")], str(store),
            ExtractConfig(DecodeParams(short_side=128), codec=codec), workers=2)
    return store, paths


def config_for(args) -> dict:
    config = default_config(SimCLR.Params)
    config.update(backbone=args.backbone, batch_size=args.batch, workers=args.workers,
                  device=args.device, warmup_epochs=0, log_every=args.steps,
                  checkpoint_every=10**9, max_steps=2 * args.steps, epochs=10**6)
    config["params"].update(clip_len=args.clip_len, stride=2)
    config["aug"]["size"] = args.size
    return config


def full_step_rate(store: Path, config: dict) -> tuple[float, float]:
    """The engine's clips/s and the share of time it waited for data, over the second
    half of the run (the first half warms up)."""
    torch.manual_seed(0)
    method = SimCLR.from_config(config)
    dataset = ClipDataset(str(store), method.view_sampler(), "all", 0)
    records = []
    train(method, dataset, config, None, on_log=records.append)
    return records[-1]["clips_per_s"], records[-1]["data_wait"]


def _timed_steps(fn, steps: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` after 3 warm-up calls."""
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def compute_only_rate(store: Path, config: dict, steps: int) -> tuple[float, float, float]:
    """Forward+backward+step of the same model on one pre-augmented batch on the device,
    as clips/s and s per step; and the augmentation of that batch's views alone, in s per
    step."""
    device = resolve_device(config["device"])
    torch.manual_seed(0)
    method = SimCLR.from_config(config).to(device).train()
    dataset = ClipDataset(str(store), method.view_sampler(), "all", 0)
    from vssl_cli.data.dataset import collate_clips
    batch = collate_clips([dataset[i % len(dataset)] for i in range(config["batch_size"])])
    batch = {**batch, "clips": [c.to(device) for c in batch["clips"]]}

    def augment():
        with torch.no_grad():
            return torch.cat([method.augmented(c, batch, None)[0] for c in batch["clips"]])

    x = augment()
    optimizer = build_optimizer(method.parameters(), config)
    amp = autocast_dtype(config["amp"], device)

    def step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            z1, z2 = method.head(method.encoder(x)["pooled"]).float().chunk(2)
            loss = nt_xent(z1, z2, 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    per_step = _timed_steps(step, steps, device)
    return x.shape[0] / per_step, per_step, _timed_steps(augment, steps, device)


def read_vs_decode(store: Path, paths: list[Path], clip_len: int, clips: int) -> dict:
    rng = np.random.default_rng(0)
    s = open_store(str(store))
    by_source = {Path(r["source"]).name: r for r in s.videos}
    plan = []
    for _ in range(clips):
        path = paths[rng.integers(len(paths))]
        record = by_source[path.name]
        start = int(rng.integers(0, record["frames"] - 2 * clip_len))
        plan.append((path, record, start))
    t0 = time.perf_counter()
    for _, record, start in plan:
        s.read(record["id"], np.arange(start, start + 2 * clip_len, 2))
    read = clips / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for path, record, start in plan:
        fps = record.get("fps") or 25
        decoder = FrameDecoder(path, DecodeParams(short_side=128), start=start / fps,
                               end=(start + 2 * clip_len) / fps)
        frames = np.concatenate(list(decoder))[::2]
        assert len(frames) >= clip_len - 1
    decode = clips / (time.perf_counter() - t0)
    return {"store_read_clips_per_s": read, "mp4_decode_clips_per_s": decode,
            "read_vs_decode": read / decode}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="r3d18-tiny")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--clip-len", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=-1, help="-1: the engine's auto choice")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--read-clips", type=int, default=200)
    ap.add_argument("--tag", default="")
    ap.add_argument("--codec", default="auto", help="the store's codec (e.g. jpeg)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store, paths = make_store(Path(tmp), args.videos, args.frames, args.codec)
        config = config_for(args)
        full, data_wait = full_step_rate(store, config)
        alone, compute_s, augment_s = compute_only_rate(store, config, args.steps)
        io = read_vs_decode(store, paths, args.clip_len, args.read_clips)
    result = {"config": {k: v for k, v in vars(args).items()},
              "device": str(resolve_device(args.device)),
              "loader_workers": loader_workers(args.workers, resolve_device(args.device)),
              "full_step_clips_per_s": full, "compute_only_clips_per_s": alone,
              "data_path_overhead": 1 - full / alone,
              "augment_ms_per_step": 1000 * augment_s,
              "compute_ms_per_step": 1000 * compute_s,
              "data_wait_share": data_wait, **io}
    path = save("train" + (f"_{args.tag}" if args.tag else ""), result)
    print(f"full step {full:.1f} clips/s vs compute alone {alone:.1f} clips/s: "
          f"data-path overhead {100 * (1 - full / alone):.1f}% (target < 10%)")
    print(f"of which: augmentation {1000 * augment_s:.1f} ms per step "
          f"({100 * augment_s / (augment_s + compute_s):.1f}% of augment+compute);"
          f" waiting for batches {100 * data_wait:.1f}% of the run")
    print(f"clip read from store {io['store_read_clips_per_s']:.1f}/s vs decode from mp4 "
          f"{io['mp4_decode_clips_per_s']:.1f}/s: {io['read_vs_decode']:.1f}x (target >= 10x)")
    print(path)


if __name__ == "__main__":
    main()
