"""Training data-path benchmark.

1. The full step against the model alone, per method (TCLR and controllable augmentations
   build several views): the engine's own loop (the store read in the training process or
   DataLoader workers, the batched augmentation on the device, forward, backward, optimiser
   step) against the same method's step with reading and the augmentation's pixel work
   taken out (one batch on the device; every ``augment.apply`` returns the tensors it
   returned the first time). Each engine step is followed at once by a step of the model
   alone, so each pair shares the machine's state; ratio = alone / full step time, median
   and range over the pairs (target >= 0.95).
2. Cache read vs decode: random training clips (clip_len frames at stride 2) read from
   the frame store against decoding the same clips from the mp4 files with ffmpeg (seek
   to the clip, decode, scale like the store). Target: 10x or more.
3. Where the rest goes: the augmentation's time per step (on a CPU it competes with the
   model for the same cores, so it is the floor of the overhead there) and the share of
   the step the loop waited for a batch (reads hidden behind compute leave this near 0).

Methods train with bench/methods.py's settings over recipes/demo-tiny.toml (8-frame clips)
at ``--size`` px. Writes bench/results/train.json (or train_<tag>.json) and prints ratios.
Usage: python bench/train.py [--methods simclr,tclr,ctrlaug] [--steps 12]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import make_videos, save
from methods import RECIPE, RUNNABLE, method_of

from vssl_cli.data import augment
from vssl_cli.data.dataset import ClipDataset, collate_clips
from vssl_cli.engine.config import resolve
from vssl_cli.engine.device import autocast_dtype, loader_workers, resolve_device
from vssl_cli.engine.trainer import build_optimizer, train
from vssl_cli.extract import ExtractConfig, extract
from vssl_cli.methods import method_class
from vssl_cli.store import open_store
from vssl_cli.video.decode import DecodeParams, FrameDecoder

WARMUP_STEPS = 2       # steps of each engine run left out (first batches, allocator growth)
AUGMENT_PASSES = 3     # passes that time the augmentation alone


def make_store(work: Path, videos: int, frames: int, codec: str = "auto"
               ) -> tuple[Path, list[Path]]:
    paths = make_videos(work / "videos", videos, frames)
    store = work / "frames.zarr"
    extract([str(work / "videos")], str(store),
            ExtractConfig(DecodeParams(short_side=128), codec=codec), workers=2)
    return store, paths


def config_for(name: str, args) -> dict:
    flags = RUNNABLE[name]
    sets = [flags[i + 1] for i, flag in enumerate(flags) if flag == "--set"]
    method = method_of(name)
    config = resolve(method_class(method).Params, str(RECIPE), {"backbone": args.backbone},
                     sets)
    config.update(method=method, batch_size=args.batch, workers=args.workers,
                  device=args.device, warmup_epochs=0, log_every=1,
                  checkpoint_every=10**9, max_steps=WARMUP_STEPS + args.steps, epochs=10**6)
    config["aug"]["size"] = args.size
    return config


class ReplayedAugmentation:
    """While active, every ``augment.apply`` (the augmentation's pixel work, wherever a
    method imported it) returns, call by call, what it returned while recording; the
    recorded calls' seconds add up in ``seconds``."""

    def __init__(self):
        self.real, self.outputs, self.seconds = augment.apply, [], 0.0
        self.recording, self.call = True, 0

    def __call__(self, clips, params, cfg, valid_hw=None):
        if not self.recording:
            self.call += 1
            return self.outputs[(self.call - 1) % len(self.outputs)]
        t0 = time.perf_counter()
        out = self.real(clips, params, cfg, valid_hw)
        self.seconds += time.perf_counter() - t0
        self.outputs.append(out)
        return out

    @contextlib.contextmanager
    def active(self):
        modules = [m for n, m in sys.modules.items()
                   if n.startswith("vssl_cli") and getattr(m, "apply", None) is self.real]
        for m in modules:
            m.apply = self
        try:
            yield self
        finally:
            for m in modules:
                m.apply = self.real


class ModelAlone:
    """The method's step with the data path taken out: its loss, backward and optimiser
    step on one batch already on the device, the augmentation replayed."""

    def __init__(self, store: Path, config: dict):
        self.device = resolve_device(config["device"])
        torch.manual_seed(0)
        self.method = method_class(config["method"]).from_config(config).to(self.device)
        dataset = ClipDataset(str(store), self.method.view_sampler(), "all", 0)
        batch = collate_clips([dataset[i % len(dataset)] for i in range(config["batch_size"])])
        self.batch = {**batch, "clips": [c.to(self.device) for c in batch["clips"]],
                      "labels": batch["labels"].to(self.device)}
        self.optimizer = build_optimizer(self.method.parameters(), config)
        self.amp = autocast_dtype(config["amp"], self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(0)
        self.replay = ReplayedAugmentation()
        with self.replay.active(), torch.no_grad():     # record, and time the augmentation
            for _ in range(AUGMENT_PASSES):
                self.method(self.batch, self.gen)
        self.augment_s = self.replay.seconds / AUGMENT_PASSES
        self.replay.outputs = self.replay.outputs[:len(self.replay.outputs) // AUGMENT_PASSES]
        self.replay.recording = False

    def step(self) -> float:
        """Seconds of one step."""
        self._sync()
        t0 = time.perf_counter()
        with self.replay.active(), torch.autocast(self.device.type, dtype=self.amp,
                                                  enabled=self.amp is not None):
            loss, _ = self.method(self.batch, self.gen)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._sync()
        return time.perf_counter() - t0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def measure_method(store: Path, name: str, args) -> dict:
    """The engine's steps, each followed at once by a step of the model alone: the pairs
    share the machine's state of the moment (on a shared machine, runs minutes apart
    differ by more than the overhead measured). The engine times a step from one record
    to the next, which includes the previous record's callback: that callback's own
    duration is taken off again."""
    config = config_for(name, args)
    alone = ModelAlone(store, config)
    torch.manual_seed(0)
    method = method_class(config["method"]).from_config(config)
    dataset = ClipDataset(str(store), method.view_sampler(), "all", 0)
    clips = sum(c.shape[0] for c in alone.batch["clips"])
    pairs, last_callback = [], [0.0]

    def after_step(record):
        t0 = time.perf_counter()
        full = clips / record["clips_per_s"] - last_callback[0]
        alone_s = alone.step()
        if record["step"] > WARMUP_STEPS:
            pairs.append({"full_s": full, "alone_s": alone_s,
                          "data_wait_s": record["data_wait"] * (full + last_callback[0])})
        last_callback[0] = time.perf_counter() - t0

    train(method, dataset, config, None, on_log=after_step)
    ratios = sorted(p["alone_s"] / p["full_s"] for p in pairs)
    full_s = statistics.median(p["full_s"] for p in pairs)
    alone_s = statistics.median(p["alone_s"] for p in pairs)
    result = {"ratio": {"median": statistics.median(ratios), "min": ratios[0],
                        "max": ratios[-1], "quartiles": statistics.quantiles(ratios, n=4)},
              "full_clips_per_s": clips / full_s, "alone_clips_per_s": clips / alone_s,
              "augment_ms_per_step": 1000 * alone.augment_s,
              "compute_ms_per_step": 1000 * alone_s,
              "data_wait_share": statistics.median(p["data_wait_s"] / p["full_s"]
                                                   for p in pairs),
              "pairs": pairs}
    r = result["ratio"]
    print(f"{name}: {len(pairs)} paired steps, full {1000 * full_s:.0f} ms, alone "
          f"{1000 * alone_s:.0f} ms: {r['median']:.3f}x ({r['min']:.3f}-{r['max']:.3f}); "
          f"augmentation {1000 * alone.augment_s:.0f} ms, waiting "
          f"{100 * result['data_wait_share']:.1f}%", file=sys.stderr)
    return result


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
    ap.add_argument("--methods", default="simclr,tclr,ctrlaug")
    ap.add_argument("--backbone", default="r3d18-tiny")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12, help="paired steps per method")
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
        methods = {name: measure_method(store, name, args) for name in args.methods.split(",")}
        io = read_vs_decode(store, paths, 8, args.read_clips)
    device = resolve_device(args.device)
    result = {"config": vars(args), "device": str(device),
              "loader_workers": loader_workers(args.workers, device), "methods": methods, **io}
    path = save("train" + (f"_{args.tag}" if args.tag else ""), result)
    for name, m in methods.items():
        r = m["ratio"]
        print(f"{name}: full step {m['full_clips_per_s']:.1f} clips/s vs the model alone "
              f"{m['alone_clips_per_s']:.1f}: {r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f}"
              f"; target >= 0.95); augmentation {m['augment_ms_per_step']:.0f} ms per step, "
              f"waiting for batches {100 * m['data_wait_share']:.1f}%")
    print(f"clip read from store {io['store_read_clips_per_s']:.1f}/s vs decode from mp4 "
          f"{io['mp4_decode_clips_per_s']:.1f}/s: {io['read_vs_decode']:.1f}x (target >= 10x)")
    print(path)


if __name__ == "__main__":
    main()
