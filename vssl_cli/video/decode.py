"""Streaming decode of one video into RGB frame blocks through an ffmpeg subprocess.

Memory stays bounded by one block whatever the video's length: frames are read from
ffmpeg's pipe ``block`` at a time and handed to the caller, never accumulated here.
"""
from __future__ import annotations

import collections
import dataclasses
import fcntl
import os
import subprocess
import threading
from typing import Iterator

import ffmpeg
import numpy as np

from vssl_cli.errors import DecodeError
from vssl_cli.video.probe import VideoInfo
from vssl_cli.video.tools import ffmpeg_exe

PIPE_BYTES = 1 << 20
BLOCK_BYTES = 16 << 20   # frames handed over per block: bounds memory whatever the size


@dataclasses.dataclass(frozen=True)
class DecodeParams:
    """What determines the decoded frames; part of every frame store's identity."""
    fps: float | None = None          # None keeps the native rate
    short_side: int | None = 128      # resize so min(H, W) == short_side, aspect kept
    size: tuple[int, int] | None = None  # (width, height); overrides short_side
    max_frames: int | None = None

    def output_size(self, info: VideoInfo) -> tuple[int, int]:
        """(width, height) of decoded frames for a video of this geometry."""
        if self.size:
            return tuple(self.size)
        if not self.short_side:
            return info.width, info.height
        scale = self.short_side / min(info.width, info.height)
        return max(1, round(info.width * scale)), max(1, round(info.height * scale))


class _StderrTail(threading.Thread):
    """Drain ffmpeg's stderr so it can never block on a full pipe; keep the last lines."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.lines = stream, collections.deque(maxlen=20)

    def run(self):
        for raw in self.stream:
            line = raw.decode(errors="replace").strip()
            if line:
                self.lines.append(line)


class FrameDecoder:
    """Iterate uint8 blocks of shape (n <= block, H, W, 3) in display orientation.

    Rotation metadata is honoured (ffmpeg autorotates before our filters run).
    ``start``/``end`` in seconds trim the video (Kinetics segments). After iteration,
    ``frames`` counts what was produced and ``errors`` holds ffmpeg's complaints, which
    the caller weighs (a truncated file decodes partly and complains).
    Raises DecodeError if ffmpeg fails before producing any frame.
    """

    def __init__(self, path: str | os.PathLike, info: VideoInfo, params: DecodeParams,
                 start: float | None = None, end: float | None = None, block: int = 32,
                 threads: int = 0):
        self.path, self.block = os.fspath(path), block
        self.width, self.height = params.output_size(info)
        self.frames, self.errors = 0, []
        input_args = {"threads": threads}
        if start:
            input_args["ss"] = start
        if end is not None:
            input_args["t"] = max(0.0, end - (start or 0.0))
        stream = ffmpeg.input(self.path, **input_args)
        if params.fps:
            stream = stream.filter("fps", fps=params.fps)
        if (self.width, self.height) != (info.width, info.height):
            stream = stream.filter("scale", self.width, self.height, flags="area")
        out_args = {"format": "rawvideo", "pix_fmt": "rgb24"}
        if params.max_frames:
            out_args["frames:v"] = params.max_frames
        self.command = (stream.output("pipe:", **out_args)
                        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
                        .compile(cmd=ffmpeg_exe()))

    def __iter__(self) -> Iterator[np.ndarray]:
        proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _widen_pipe(proc.stdout)
        tail = _StderrTail(proc.stderr)
        tail.start()
        frame_bytes = self.width * self.height * 3
        want = frame_bytes * self.block
        try:
            while True:
                data = proc.stdout.read(want)
                n = len(data) // frame_bytes
                if n:
                    self.frames += n
                    yield np.frombuffer(data, np.uint8, n * frame_bytes).reshape(
                        n, self.height, self.width, 3)
                if len(data) < want:
                    break
            code = proc.wait()
            tail.join(timeout=5)
            self.errors = list(tail.lines)
            if code != 0 and self.frames == 0 and not self.errors:
                raise DecodeError(f"ffmpeg failed with exit code {code}", self.path)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def _widen_pipe(stream) -> None:
    """Let ffmpeg decode ahead while we store the previous block: a 64 KiB pipe holds less
    than one frame, so without this the two processes take turns instead of overlapping."""
    try:
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default still works


def decode_all(path, info, params, **kw) -> np.ndarray:
    """Whole video in memory: for tests and tiny clips only."""
    decoder = FrameDecoder(path, info, params, **kw)
    blocks = list(decoder)
    if not blocks:
        return np.zeros((0, decoder.height, decoder.width, 3), np.uint8)
    return np.concatenate(blocks)
