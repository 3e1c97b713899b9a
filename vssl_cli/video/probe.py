"""A video's geometry, rate, duration and rotation, read from ffmpeg's log header.

The decoding ffmpeg process prints this header anyway, so no separate ffprobe run is
needed (and the static ffmpeg that imageio-ffmpeg ships has no ffprobe).
"""
from __future__ import annotations

import dataclasses
import re
from fractions import Fraction


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    width: int          # as displayed, i.e. after applying rotation
    height: int
    fps: float
    duration: float     # seconds, 0.0 when the container does not say
    rotation: int       # degrees the player rotates the coded picture
    codec: str

    def expected_frames(self, fps: float | None = None, start: float | None = None,
                        end: float | None = None) -> int:
        """Frames a decode with these settings should yield (an estimate, for sanity checks)."""
        lo = max(0.0, start or 0.0)
        hi = self.duration if end is None else min(end, self.duration or end)
        return max(0, int(round((hi - lo) * (fps or self.fps))))


def _rate(text: str | None) -> float:
    try:
        value = float(Fraction(text)) if text else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value if 0 < value < 1000 else 0.0  # ffmpeg reports 90000/1 for broken streams


STREAM_LINE = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+).*?, (\d{1,5})x(\d{1,5})")
_FPS = re.compile(r"([\d.]+) (?:fps|tbr)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")
_ROTATE = re.compile(r"(?:rotate\s*:\s*(-?\d+))|(?:rotation of (-?[\d.]+) degrees)")


def info_from_header(text: str) -> VideoInfo | None:
    """The first video stream of ``ffmpeg -i`` style output (the input section of ffmpeg's
    own log); None when there is no video stream or no usable frame rate."""
    m = STREAM_LINE.search(text)
    if not m:
        return None
    fps_match = _FPS.search(text[m.start():].splitlines()[0])
    fps = _rate(fps_match.group(1) if fps_match else None)
    if fps <= 0:
        return None
    d = _DURATION.search(text)
    duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else 0.0
    rot = _ROTATE.search(text)
    rotation = int(float(rot.group(1) or rot.group(2))) if rot else 0
    width, height = int(m.group(2)), int(m.group(3))
    if rotation % 180:
        width, height = height, width
    return VideoInfo(width, height, fps, duration, rotation % 360, m.group(1))
