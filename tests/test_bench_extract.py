"""bench/extract.py's real-footage comparison: the ffmpeg side writes what mmaction2 users
keep, and the clips are the packaged ones, damaged file left out."""
from __future__ import annotations

import sys

from conftest import ROOT, make_video

sys.path.insert(0, str(ROOT / "bench"))
import extract as bench_extract  # noqa: E402  (bench/ is scripts, not a package)


def test_ffmpeg_rawframes_writes_one_jpeg_per_frame_at_the_short_side(tmp_path):
    from PIL import Image
    video = make_video(tmp_path / "src" / "clip.mp4", frames=5, size="320x240")
    bench_extract.ffmpeg_rawframes([video], tmp_path / "raw", parallel=1)
    files = sorted((tmp_path / "raw" / "clip").iterdir())
    assert [f.name for f in files] == [f"img_{i:05d}.jpg" for i in range(1, 6)]
    assert Image.open(files[0]).size == (170, bench_extract.SHORT_SIDE)   # -2: even width


def test_real_clips_are_the_packaged_ones_repeated_without_the_damaged_file(tmp_path,
                                                                           monkeypatch):
    sources = []
    for name in ("Megamind.avi", "Megamind_bugy.avi", "bikes.mp4"):
        sources.append(tmp_path / "pkg" / name)
        sources[-1].parent.mkdir(exist_ok=True)
        sources[-1].write_bytes(name.encode())
    monkeypatch.setattr(bench_extract, "real_footage", lambda: sources)
    clips = bench_extract.real_clips(tmp_path / "set", copies=2)
    assert [c.name for c in clips] == ["c0_Megamind.avi", "c0_bikes.mp4", "c1_Megamind.avi",
                                       "c1_bikes.mp4"]
    assert clips[1].read_bytes() == b"bikes.mp4"
