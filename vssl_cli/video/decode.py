"""Streaming decode of one video into RGB frame blocks through one ffmpeg process.

The same process that decodes also reports the input's geometry, rate and rotation in
its log header, so extraction needs no separate ffprobe run (a process start costs
~50 ms of CPU per video; see bench/extract.py). Memory stays bounded by a few blocks
whatever the video's length: frames are read from ffmpeg's pipe a block at a time and
handed to the caller, never accumulated here.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import mmap
import os
import queue
import re
import subprocess
import threading
from typing import Iterator

import ffmpeg
import numpy as np

from vssl_cli.errors import DecodeError
from vssl_cli.video.probe import STREAM_LINE, VideoInfo, info_from_header
from vssl_cli.video.tools import ffmpeg_exe

PIPE_BYTES = 1 << 20
BLOCK_BYTES = 16 << 20   # frames handed over per block: bounds memory whatever the size
# Blocks of BLOCK_BYTES given back by ``reuse`` decoders, for the next video in this process:
# a fresh block faults in 4,096 zeroed pages, ~20 ms of kernel time per 250-frame video at
# 128 px (a sixth of the CPU extraction spent beside ffmpeg, bench/extract.py). A few
# blocks cover the ones a decoder has in flight; more are dropped.
_SPARE_BLOCKS: queue.Queue = queue.Queue(maxsize=4)
_LEVEL = re.compile(r"\[(panic|fatal|error|warning|info)\] ?")
_COMPLAINTS = ("panic", "fatal", "error")


def _mapped_block(nbytes: int) -> np.ndarray:
    """A frame block in its own anonymous mapping, returned to the OS when the last view
    of it is dropped. Blocks are allocated by the reader thread and freed by another;
    from malloc, glibc would raise its mmap threshold after the first free and serve later
    blocks from per-thread arenas that fragment, so peak memory crept up with video length
    (bench/extract.py). A process-wide mallopt fixed that too, but made every large
    tensor in the process (training, `retrieve --query`) fault in fresh pages: 3x slower
    augmentation in a process that had imported this module."""
    return np.frombuffer(mmap.mmap(-1, nbytes), np.uint8)


@dataclasses.dataclass(frozen=True)
class DecodeParams:
    """What determines the decoded frames; part of every frame store's identity."""
    fps: float | None = None          # None keeps the native rate
    short_side: int | None = 128      # resize so min(H, W) == short_side, aspect kept
    size: tuple[int, int] | None = None  # (width, height); overrides short_side
    max_frames: int | None = None
    # Long side rounded to an even width (swscale spends ~8% more CPU on odd widths, timed
    # with ffmpeg alone); False is the nearest-pixel rounding of stores made before it.
    even_long_side: bool = True

    @classmethod
    def of_store(cls, frames: dict) -> "DecodeParams":
        """The parameters a store's manifest records (``config.frames``); a store made
        before ``even_long_side`` lacks it and has the nearest-pixel rounding."""
        size = frames.get("size")
        return cls(fps=frames.get("fps"), short_side=frames.get("short_side"),
                   size=tuple(size) if size else None, max_frames=frames.get("max_frames"),
                   even_long_side=bool(frames.get("even_long_side")))


class _LogReader(threading.Thread):
    """Drain ffmpeg's stderr (it must never block on a full pipe), split it into the input
    header, the decoded output size, and complaints (error level and worse)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.header_lines: list[str] = []
        self.errors: collections.deque = collections.deque(maxlen=20)
        self.output_size: tuple[int, int] | None = None
        self.header_done = threading.Event()

    def run(self):
        section, level = "input", "info"
        try:
            for raw in self.stream:
                line = raw.decode(errors="replace").rstrip()
                found = _LEVEL.search(line)
                if found:   # continuation lines keep the previous line's level
                    level, line = found.group(1), line[found.end():]
                if level in _COMPLAINTS:
                    self.errors.append(line.strip())
                elif section == "input":
                    if line.startswith("Output #0"):
                        section = "output"
                    else:
                        self.header_lines.append(line)
                elif section == "output" and self.output_size is None:
                    match = STREAM_LINE.search(line)
                    if match:
                        self.output_size = int(match.group(2)), int(match.group(3))
                        self.header_done.set()
        finally:
            self.header_done.set()


def _scale_filter(stream, params: DecodeParams):
    if params.size:
        return stream.filter("scale", params.size[0], params.size[1], flags="area")
    if params.short_side:
        side = params.short_side
        if params.even_long_side:
            # The shorter side is exactly S; -2 keeps the aspect with an even long side.
            landscape = "gte(iw,ih)"
            return stream.filter("scale", f"if({landscape},-2,{side})",
                                 f"if({landscape},{side},-2)", flags="area")
        # Both sides at least S with the aspect kept: the shorter side is exactly S.
        return stream.filter("scale", side, side, force_original_aspect_ratio="increase",
                             flags="area")
    return stream


class FrameDecoder:
    """Iterate uint8 blocks of shape (n <= block, H, W, 3) in display orientation.

    Rotation metadata is honoured (ffmpeg autorotates before our filters run).
    ``start``/``end`` in seconds trim the video (Kinetics segments). Once iteration has
    begun, ``info`` describes the source and ``width``/``height`` the frames; afterwards
    ``frames`` counts what was produced and ``errors`` holds ffmpeg's complaints, which the
    caller weighs (a truncated file decodes partly and complains). Blocks hold ``block``
    frames, or by default as many whole multiples of ``multiple`` as fit in 16 MiB.
    ``reuse``: a yielded block is only valid until the next one is asked for, and its memory
    is read into again, by this decoder or the next one in the process (extraction stores
    each block before asking for the next).
    Raises DecodeError when ffmpeg cannot start decoding (no video stream, not a video).
    """

    def __init__(self, path: str | os.PathLike, params: DecodeParams,
                 start: float | None = None, end: float | None = None,
                 block: int | None = None, multiple: int = 1, threads: int = 0,
                 reuse: bool = False):
        self.path, self.block, self.multiple = os.fspath(path), block, multiple
        self.reuse = reuse
        self._free: queue.SimpleQueue = queue.SimpleQueue()   # buffers given back
        self.info: VideoInfo | None = None
        self.width = self.height = 0
        self.frames, self.errors = 0, []
        input_args = {"threads": threads}
        if start:
            input_args["ss"] = start
        if end is not None:
            input_args["t"] = max(0.0, end - (start or 0.0))
        stream = ffmpeg.input(self.path, **input_args)["v:0"]
        if params.fps:
            stream = stream.filter("fps", fps=params.fps)
        stream = _scale_filter(stream, params)
        out_args = {"format": "rawvideo", "pix_fmt": "rgb24"}
        if params.max_frames:
            out_args["frames:v"] = params.max_frames
        # The filter graph gets the decoder's thread budget too: by default it starts a
        # thread per core and hands each small frame between them (3,400 futex calls per
        # 250-frame video instead of 1,200 with one worker per core).
        graph_threads = ("-filter_complex_threads", str(threads)) if threads else ()
        self.command = (stream.output("pipe:", **out_args)
                        .global_args("-nostdin", "-hide_banner", "-nostats",
                                     "-loglevel", "level+info", *graph_threads)
                        .compile(cmd=ffmpeg_exe()))

    def __iter__(self) -> Iterator[np.ndarray]:
        proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _widen_pipe(proc.stdout)
        log = _LogReader(proc.stderr)
        log.start()
        reader = None
        blocks: queue.Queue = queue.Queue(maxsize=2)
        try:
            log.header_done.wait()
            if log.output_size is None:
                proc.wait()
                log.join(timeout=5)
                raise DecodeError(describe_failure(list(log.errors), proc.returncode),
                                  self.path)
            self.width, self.height = log.output_size
            self.info = info_from_header("\n".join(log.header_lines))
            # A reader thread drains the pipe while the caller stores the previous block,
            # so ffmpeg never waits on our writes (two blocks in flight bound the memory).
            reader = threading.Thread(target=self._pump, args=(proc.stdout, blocks),
                                      daemon=True)
            reader.start()
            while (item := blocks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                self.frames += len(item)
                yield item
                if self.reuse:
                    self._free.put(item.base)
            proc.wait()
            log.join(timeout=5)
            self.errors = list(log.errors)
            self._give_back()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            while reader is not None and reader.is_alive():  # unblock a reader on a full queue
                with contextlib.suppress(queue.Empty):
                    blocks.get_nowait()
                reader.join(timeout=0.01)
            proc.stdout.close()

    def _give_back(self) -> None:
        """Hand this decoder's blocks to the next decoder (the reader has finished)."""
        while True:
            try:
                buffer = self._free.get_nowait()
                if len(buffer) == BLOCK_BYTES:
                    _SPARE_BLOCKS.put_nowait(buffer)
            except (queue.Empty, queue.Full):
                return

    def _new_block(self, nbytes: int) -> np.ndarray:
        """A block of ``nbytes``: a spare one when the size allows, else freshly mapped."""
        if self.reuse and nbytes <= BLOCK_BYTES:
            try:
                return _SPARE_BLOCKS.get_nowait()[:nbytes]
            except queue.Empty:
                return _mapped_block(BLOCK_BYTES)[:nbytes]
        return _mapped_block(nbytes)

    def _block_frames(self, frame_bytes: int) -> int:
        if self.block:
            return self.block
        return max(1, BLOCK_BYTES // frame_bytes // self.multiple) * self.multiple

    def _pump(self, stdout, blocks: queue.Queue) -> None:
        frame_bytes = self.width * self.height * 3
        want = frame_bytes * self._block_frames(frame_bytes)
        try:
            while True:
                try:
                    buffer = self._free.get_nowait()[:want]
                except queue.Empty:
                    buffer = self._new_block(want)
                got = stdout.readinto(buffer)   # fills it unless the stream ends first
                n = got // frame_bytes
                if n:
                    blocks.put(buffer[:n * frame_bytes].reshape(n, self.height, self.width, 3))
                if got < want:
                    break
        except (OSError, ValueError) as e:   # pipe closed under us: the consumer stopped
            blocks.put(e)
        blocks.put(None)


def describe_failure(errors: list[str], code: int | None = None) -> str:
    """The most telling of ffmpeg's complaints, worded for a person."""
    text = " ".join(errors)
    if "matches no streams" in text or "does not contain any stream" in text:
        return "no video stream (audio-only or not a video)"
    if "partial file" in text:
        return "truncated file"
    if "moov atom not found" in text:   # an mp4 cut before its index, or not an mp4 at all
        return "truncated or not a video (no moov atom)"
    if "Invalid data found" in text:
        return "not a video or corrupt (Invalid data found when processing input)"
    informative = [ln for ln in errors if "corrupt" in ln.lower()]
    fallback = [f"ffmpeg failed with exit code {code}"] if code else ["unknown ffmpeg error"]
    return (informative or errors or fallback)[-1]


def _widen_pipe(stream) -> None:
    """Let ffmpeg decode ahead while we store the previous block: a 64 KiB pipe holds less
    than one frame, so without this the two processes take turns instead of overlapping."""
    try:
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default still works


def decode_all(path, params: DecodeParams, **kw) -> np.ndarray:
    """Whole video in memory: for tests and tiny clips only."""
    decoder = FrameDecoder(path, params, **kw)
    blocks = list(decoder)
    if not blocks:
        return np.zeros((0, decoder.height, decoder.width, 3), np.uint8)
    return np.concatenate(blocks)
