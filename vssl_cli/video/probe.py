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
    num_frames: int     # container's count or duration * fps; an estimate
    rotation: int       # degrees the player rotates the coded picture
    codec: str

    def expected_frames(self, fps: float | None = None, start: float | None = None,
                        end: float | None = None) -> int:
        """Frames a decode with these settings should yield (an estimate, for sanity checks)."""
        duration = self.duration or (self.num_frames / self.fps if self.fps else 0.0)
        lo = max(0.0, start or 0.0)
        hi = duration if end is None else min(end, duration or end)
        rate = fps or self.fps
        return max(0, int(round((hi - lo) * rate)))


def _rate(text: str | None) -> float:
    try:
        value = float(Fraction(text)) if text else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value if 0 < value < 1000 else 0.0  # ffmpeg reports 90000/1 for broken streams


def _from_stream(stream: dict, fmt: dict) -> VideoInfo:
    rotation = 0
    tags = stream.get("tags") or {}
    if "rotate" in tags:
        rotation = int(float(tags["rotate"]))
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            rotation = int(float(side["rotation"]))
    width, height = int(stream["width"]), int(stream["height"])
    if rotation % 180:
        width, height = height, width
    fps = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate"))
    duration = float(stream.get("duration") or fmt.get("duration") or 0.0)
    frames = int(stream.get("nb_frames") or 0) or int(round(duration * fps))
    return VideoInfo(width, height, fps, duration, frames, rotation % 360,
                     stream.get("codec_name", "?"))


STREAM_LINE = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+).*?, (\d{1,5})x(\d{1,5})")
_FPS = re.compile(r"([\d.]+) (?:fps|tbr)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")
_ROTATE = re.compile(r"(?:rotate\s*:\s*(-?\d+))|(?:rotation of (-?[\d.]+) degrees)")


def parse_ffmpeg_header(text: str) -> dict | None:
    """The first video stream and the duration from ``ffmpeg -i`` style output, shaped
    like ffprobe's JSON (streams, format)."""
    m = STREAM_LINE.search(text)
    if not m:
        return None
    line = text[m.start():].splitlines()[0]
    fps = _FPS.search(line)
    d = _DURATION.search(text)
    rot = _ROTATE.search(text)
    stream = {"codec_name": m.group(1), "width": m.group(2), "height": m.group(3),
              "avg_frame_rate": fps.group(1) if fps else None}
    if rot:
        stream["tags"] = {"rotate": rot.group(1) or rot.group(2)}
    fmt = {"duration": int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
           if d else 0.0}
    return {"streams": [stream], "format": fmt}


def info_from_header(text: str) -> VideoInfo | None:
    """VideoInfo from the input section of ffmpeg's own log (what ``ffmpeg -i`` prints)."""
    parsed = parse_ffmpeg_header(text)
    if parsed is None:
        return None
    info = _from_stream(parsed["streams"][0], parsed["format"])
    return info if info.fps > 0 else None
