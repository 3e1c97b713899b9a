"""A video's geometry, pixel shape, rate, duration and rotation, from the demuxer and the
decoder's own fields (PyAV), never from text a file can put in its metadata.

``open_video`` opens the file and its first video stream; ``VideoInfo`` describes what it
declares. Output sizes are computed here from the *display* geometry: the coded size
stretched by the sample aspect ratio (anamorphic DV, broadcast and phone files), then
turned by the display matrix, so a circle in the source stays a circle in the store.
"""
from __future__ import annotations

import dataclasses
import math
import os
from fractions import Fraction

import av

from vssl_cli.errors import DecodeError


ATTACHED_PIC = 0x400    # AV_DISPOSITION_ATTACHED_PIC


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    width: int          # coded picture, before the sample aspect ratio and rotation
    height: int
    sar: Fraction       # sample (pixel) aspect ratio; 1 when the file does not say
    rotation: int       # degrees the player turns the picture clockwise: 0, 90, 180, 270
    fps: float          # the container's average rate, 0.0 when unknown
    duration: float     # seconds of the video stream, 0.0 when unknown
    frames: int         # frames the container declares, 0 when unknown
    codec: str

    @property
    def display_size(self) -> tuple[float, float]:
        """(width, height) a player shows: SAR applied, then the rotation."""
        w, h = self.width * float(self.sar), float(self.height)
        return (h, w) if self.rotation % 180 else (w, h)


def _even(x: float) -> int:
    """Nearest even integer, halves away from zero (ffmpeg's ``-2`` in scale)."""
    return max(2, 2 * math.floor(x / 2 + 0.5))


def _nearest(x: float) -> int:
    return max(1, math.floor(x + 0.5))


def output_size(info: VideoInfo, short_side: int | None, size: tuple[int, int] | None,
                even_long_side: bool = True) -> tuple[int, int]:
    """(width, height) of the stored frames.

    ``size``: exactly that. ``short_side``: the shorter display side exactly that, the
    longer one at the display aspect, rounded to an even number (``even_long_side``; the
    nearest pixel for stores made before it). Neither: the display size, which is the
    coded size unless pixels are not square (then the width is stretched, to an even
    number, and the height kept).
    """
    if size:
        return size
    dw, dh = info.display_size
    round_long = _even if even_long_side else _nearest
    if short_side:
        if dw >= dh:
            return round_long(short_side * dw / dh), short_side
        return short_side, round_long(short_side * dh / dw)
    if info.sar == 1:
        return (info.height, info.width) if info.rotation % 180 else (info.width, info.height)
    if info.rotation % 180:
        return info.height, _even(dh)          # turned: the stretched side is the height
    return _even(dw), info.height


def rotation_of(display_rotation: float | None) -> int:
    """PyAV's rotation (counter-clockwise degrees of the display matrix) as the clockwise
    quarter turn a player applies."""
    if not display_rotation:
        return 0
    return int(round(-display_rotation / 90.0)) % 4 * 90


def _fraction(value) -> Fraction:
    try:
        f = Fraction(value) if value is not None else Fraction(0)
    except (TypeError, ValueError, ZeroDivisionError):
        return Fraction(1)
    return f if 0.01 < f < 100 else Fraction(1)   # 0/1 means "unknown" in ffmpeg


def _seconds(ticks, time_base) -> float:
    if ticks is None or time_base is None:
        return 0.0
    return max(0.0, float(ticks * time_base))


def stream_info(stream, rotation: int = 0) -> VideoInfo:
    """What the container and decoder say about ``stream`` before any frame is decoded."""
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate and 0 < float(rate) < 1000 else 0.0
    duration = _seconds(stream.duration, stream.time_base)
    if not duration and stream.container.duration:
        duration = stream.container.duration / av.time_base
    return VideoInfo(ctx.width, ctx.height, _fraction(ctx.sample_aspect_ratio
                                                      or stream.sample_aspect_ratio),
                     rotation, fps, duration, int(stream.frames or 0), ctx.name)


def _mp4_lacks_index(path: str) -> bool:
    """An MP4/MOV whose top-level boxes have no ``moov`` (its index): cut before the index
    was written, so nothing in it can be located. Reads only box headers."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[4:8] not in (b"ftyp", b"mdat", b"free", b"wide"):
            return False
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            header = f.read(16)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if kind == b"moov":
                return False
            if length == 1 and len(header) == 16:
                length = int.from_bytes(header[8:16], "big")
            if length < 8:
                break
            offset += length
    return True


def open_video(path: str):
    """(container, first video stream), or DecodeError saying why not in a few words."""
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as e:
        if isinstance(e, av.InvalidDataError) and _mp4_lacks_index(path):
            raise DecodeError("truncated MP4: its index (moov atom) is missing, so no frame "
                              "can be located", path) from None
        if isinstance(e, av.InvalidDataError):
            raise DecodeError("not a video or corrupt (Invalid data found when processing "
                              "input)", path) from None
        raise DecodeError(f"cannot open: {e.strerror or e}", path) from None
    # A cover picture (an attached picture: album art, a thumbnail) is a "video" stream of
    # one image, not video: never taken for one, as ffmpeg's own stream choice skips it.
    videos = [s for s in container.streams.video
              if not int(getattr(s, "disposition", 0)) & ATTACHED_PIC]
    if not videos:
        container.close()
        raise DecodeError("no video stream (audio-only, a cover picture only, or not a "
                          "video)", path)
    return container, videos[0]
