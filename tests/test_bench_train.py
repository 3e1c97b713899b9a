"""bench/train.py: the "model alone" step replays the augmentation it measures the full
step with, and every method it measures resolves at the benchmark's settings."""
from __future__ import annotations

import argparse
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import train as bench_train  # noqa: E402  (bench/ is scripts, not a package)

from vssl_cli.data import augment  # noqa: E402
from vssl_cli.methods import ctrlaug  # noqa: E402


def test_replayed_augmentation_returns_the_recorded_tensors_wherever_apply_was_imported():
    clips = torch.randint(0, 256, (2, 3, 4, 16, 16), dtype=torch.uint8)
    cfg = augment.AugConfig(size=8)
    first, second = (augment.AugParams.identity(2), augment.sample_params(
        2, (16, 16), cfg, torch.Generator().manual_seed(0)))
    real, replay = augment.apply, bench_train.ReplayedAugmentation()
    with replay.active():
        a = augment.apply(clips, first, cfg)            # recorded, in call order
        b = ctrlaug.apply(clips, second, cfg)
    assert replay.seconds > 0 and torch.equal(a, real(clips, first, cfg))
    assert augment.apply is real and ctrlaug.apply is real
    replay.recording = False
    with replay.active():
        assert augment.apply(clips, second, cfg) is a and ctrlaug.apply(clips, first, cfg) is b
        assert augment.apply(clips, second, cfg) is a


@pytest.mark.parametrize("name", ["simclr", "tclr", "ctrlaug", "teg-ps"])
def test_measured_methods_resolve_with_one_record_per_step(name):
    args = argparse.Namespace(backbone="r3d18-tiny", batch=4, workers=0, device="cpu",
                              steps=3, size=32)
    config = bench_train.config_for(name, args)
    assert config["method"] == {"teg-ps": "teg"}.get(name, name) and config["log_every"] == 1
    assert config["max_steps"] == bench_train.WARMUP_STEPS + 3 and config["aug"]["size"] == 32
