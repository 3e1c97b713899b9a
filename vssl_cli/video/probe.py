"""Read a video's geometry, rate, duration and rotation before decoding it."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from fractions import Fraction

from vssl_cli.errors import DecodeError
from vssl_cli.video.tools import ffmpeg_exe, ffprobe_exe


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


_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+).*?, (\d{1,5})x(\d{1,5})")
_FPS = re.compile(r"([\d.]+) (?:fps|tbr)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")
_ROTATE = re.compile(r"(?:rotate\s*:\s*(-?\d+))|(?:rotation of (-?[\d.]+) degrees)")


def parse_ffmpeg_header(text: str) -> dict | None:
    """Fallback parser for ``ffmpeg -i`` output, for when there is no ffprobe."""
    m = _STREAM.search(text)
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


def _run_probe(path: str) -> dict | None:
    probe = ffprobe_exe()
    if probe:
        proc = subprocess.run([probe, "-v", "error", "-show_streams", "-show_format",
                               "-select_streams", "v:0", "-of", "json", path],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise DecodeError(_last_line(proc.stderr) or "ffprobe failed", path)
        return json.loads(proc.stdout or "{}")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path],
                          capture_output=True, text=True)
    parsed = parse_ffmpeg_header(proc.stderr)
    if parsed is None and "Invalid data" in proc.stderr:
        raise DecodeError(_last_line(proc.stderr), path)
    return parsed


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def probe(path: str | os.PathLike) -> VideoInfo:
    """Probe ``path``; raise DecodeError for empty, non-video or audio-only files."""
    path = os.fspath(path)
    if os.path.getsize(path) == 0:
        raise DecodeError("empty file (0 bytes)", path)
    data = _run_probe(path) or {}
    streams = [s for s in data.get("streams", []) if s.get("codec_type", "video") == "video"
               and s.get("width")]
    if not streams:
        raise DecodeError("no video stream (audio-only or not a video)", path)
    info = _from_stream(streams[0], data.get("format") or {})
    if info.fps <= 0:
        raise DecodeError("video stream has no usable frame rate", path)
    return info
