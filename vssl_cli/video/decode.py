"""Streaming decode of one video into RGB frame blocks, in this process, with PyAV.

Every frame the decoder produces is kept once, in order, with its presentation time: a
variable-frame-rate file (phones, screen captures, AVI files with dropped frames) is
stored as it plays, never padded to a nominal rate with copies. ``fps`` resamples to a
constant rate on purpose (ffmpeg's ``fps`` filter, as ``ffmpeg -vf fps=R`` does).
Pictures go through one ffmpeg filter graph: the display matrix's quarter turns, then
``scale`` with area averaging to the display aspect (non-square pixels stretched, see
``probe.output_size``) and RGB conversion.

Geometry, rate, rotation and pixel shape come from the decoder's own fields, so nothing a
file writes into its metadata can fake them. Decoding in-process needs no pipe and no
process per video: on 320x240 H.264 it is faster than ``ffmpeg -f null`` with the same
filters (bench/extract.py). Memory stays bounded by one block (at most 16 MiB, or one
frame when a frame is larger) whatever the video's length or size.

A damaged file keeps its decodable prefix: a read error, a decoding error or a stream
that ends before the length its container declares marks the result ``partial`` with the
decoder's words, and the caller decides what to do with it.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from typing import Iterator

import av
import numpy as np
from av.filter import Graph

from vssl_cli.errors import DecodeError
from vssl_cli.video.probe import VideoInfo, open_video, output_size, rotation_of, stream_info

BLOCK_BYTES = 16 << 20   # frames handed over per block: bounds memory whatever the length
MAX_WARNINGS = 5
# Each thread keeps the block memory of its last ``reuse`` decoder for the next video: a
# fresh 16 MiB block faults in 4,096 zeroed pages, ~20 ms of kernel time per 250-frame
# video at 128 px (measured with the earlier pipe decoder, bench/extract.py).
_SCRATCH = threading.local()


@dataclasses.dataclass(frozen=True)
class DecodeParams:
    """What determines the decoded frames; part of every frame store's identity."""
    fps: float | None = None          # None: every decoded frame once (native timing)
    short_side: int | None = 128      # resize so min(H, W) == short_side, display aspect kept
    size: tuple[int, int] | None = None  # (width, height); overrides short_side
    max_frames: int | None = None

    @classmethod
    def of_store(cls, frames: dict) -> "DecodeParams":
        """The parameters a store's manifest records (``config.frames``)."""
        size = frames.get("size")
        return cls(fps=frames.get("fps"), short_side=frames.get("short_side"),
                   size=tuple(size) if size else None, max_frames=frames.get("max_frames"))


def _turn_filters(rotation: int) -> list[tuple[str, str | None]]:
    """ffmpeg's autorotation: the filters that show the picture as a player would."""
    return {90: [("transpose", "clock")], 180: [("hflip", None), ("vflip", None)],
            270: [("transpose", "cclock")]}.get(rotation, [])


class _BestEffortClock:
    """ffmpeg's ``guess_correct_pts`` (libavcodec's best-effort timestamp, which its
    command line uses): a frame's own pts unless those have run backwards more often than
    the packets' decode times, as in AVI files with B-frames, whose pts arrive in decode
    order. PyAV hands out the raw pts."""

    def __init__(self, prefer_dts: bool = False):
        """``prefer_dts``: the container keeps no presentation times (AVI: a frame's time
        is its index; pts there are copies that B-frames put out of order)."""
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts = self.last_dts = None
        self.prefer_dts = prefer_dts
        self.last = None

    def __call__(self, pts, dts, step: int):
        """The frame's time in stream ticks; one ``step`` after the previous frame when
        the file gives none (the last frame out of an AVI decoder has no dts)."""
        guess = dts if self.prefer_dts else self._guess(pts, dts)
        if guess is None and self.last is not None:
            guess = self.last + step
        if guess is not None:
            self.last = guess
        return guess

    def _guess(self, pts, dts):
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        elif pts is not None:
            self.last_dts = pts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        elif dts is not None:
            self.last_pts = dts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts


class _Pictures:
    """The filter graph from decoded frames to stored RGB frames of one fixed size."""

    def __init__(self, frame: av.VideoFrame, time_base, rotation: int, width: int,
                 height: int, fps: float | None):
        self.shape = (frame.width, frame.height, frame.format.name)
        self.graph = Graph()
        nodes = [self.graph.add_buffer(width=frame.width, height=frame.height,
                                       format=frame.format.name, time_base=time_base)]
        chain = [*_turn_filters(rotation), *([("fps", str(fps))] if fps else []),
                 ("scale", f"{width}:{height}:flags=area"), ("format", "rgb24")]
        for name, args in chain:
            nodes.append(self.graph.add(name, args) if args else self.graph.add(name))
        nodes.append(self.graph.add("buffersink"))
        for a, b in zip(nodes, nodes[1:]):
            a.link_to(b)
        self.graph.configure()

    def fits(self, frame: av.VideoFrame) -> bool:
        return self.shape == (frame.width, frame.height, frame.format.name)

    def push(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """Frames out for ``frame`` in (None: end of stream, flush what is held)."""
        self.graph.push(frame)
        out = []
        while True:
            try:
                out.append(self.graph.pull())
            except (av.BlockingIOError, av.EOFError):
                return out


class FrameDecoder:
    """Iterate uint8 blocks of shape (n <= block, H, W, 3) in display orientation.

    ``start``/``end`` in seconds trim the video (Kinetics segments). After iteration:
    ``info`` describes the source, ``width``/``height`` the frames, ``frames`` counts them,
    ``timestamps`` holds each one's presentation time in seconds (the container's clock,
    as ffprobe's pts_time), ``partial`` says whether the file was damaged (its readable
    prefix was kept) and ``warnings`` what the decoder said. Blocks hold ``block``
    frames, or by default as many as fit in 16 MiB (whole multiples of ``multiple`` when
    at least that many fit). ``reuse``: a yielded block is valid only until the next one
    is asked for; its memory is filled again (extraction stores each block first).
    ``threads``: the decoder's threads (0: one per core).
    Raises DecodeError when the file cannot be opened as a video.
    """

    def __init__(self, path: str | os.PathLike, params: DecodeParams,
                 start: float | None = None, end: float | None = None,
                 block: int | None = None, multiple: int = 1, threads: int = 0,
                 reuse: bool = False):
        self.path, self.params = os.fspath(path), params
        self.start, self.end = start, end
        self.block, self.multiple, self.threads, self.reuse = block, multiple, threads, reuse
        self.info: VideoInfo | None = None
        self.width = self.height = 0
        self.frames = 0
        self.timestamps: list[float] = []
        self.warnings: list[str] = []
        self.partial = False
        self.corrupt_frames = 0
        self.decode_errors = 0
        self.clock_resets = 0     # times the source's clock ran backwards (joined segments)
        self.tick = 0.0           # the stream's time base in seconds (timestamp rounding)

    # -- what went wrong, in the decoder's words -------------------------------------
    def _damaged(self, what: str) -> None:
        self.partial = True
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(what)

    def _packets(self, container, stream):
        """Demuxed packets; a read error ends the stream early and marks it damaged."""
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.FFmpegError as e:
                self._damaged(f"read error after {self._last_time():.2f} s: "
                              f"{e.strerror or e}")
                return
            yield packet

    def _last_time(self) -> float:
        return self.timestamps[-1] if self.timestamps else 0.0

    # -- blocks ------------------------------------------------------------------------
    def _block_frames(self, frame_bytes: int) -> int:
        if self.block:
            return self.block
        fit = max(1, BLOCK_BYTES // frame_bytes)
        return fit // self.multiple * self.multiple if fit >= self.multiple else fit

    def _new_block(self, n: int) -> np.ndarray:
        nbytes = n * self.height * self.width * 3
        if not self.reuse:
            return np.empty(nbytes, np.uint8)
        buffer = getattr(_SCRATCH, "block", None)
        if buffer is None or len(buffer) < nbytes:
            buffer = np.empty(max(nbytes, BLOCK_BYTES), np.uint8)
            _SCRATCH.block = buffer
        return buffer[:nbytes]

    def __iter__(self) -> Iterator[np.ndarray]:
        container, stream = open_video(self.path)
        try:
            yield from self._decode(container, stream)
        finally:
            container.close()

    def _decode(self, container, stream) -> Iterator[np.ndarray]:
        p = self.params
        ctx = stream.codec_context
        ctx.thread_type = "AUTO"
        ctx.thread_count = self.threads
        origin = (container.start_time or 0) / av.time_base   # ffmpeg's -ss counts from here
        first = origin + (self.start or 0.0)
        last = origin + self.end if self.end is not None else None
        if self.start:
            try:
                container.seek(int(first * av.time_base), backward=True)
            except av.FFmpegError as e:
                raise DecodeError(f"cannot seek to {self.start} s: {e.strerror or e}",
                                  self.path) from None
        pictures: _Pictures | None = None
        block, n, per_block = None, 0, 0
        fallback = None          # the first kept frame, should --fps give none at all
        packet_end = 0.0         # where the demuxed stream got to (incl. empty AVI frames)
        frame_step = 0.0         # one frame's duration, to guess missing timestamps
        clock = _BestEffortClock(prefer_dts="avi" in container.format.name.split(","))
        nominal = stream.average_rate or stream.guessed_rate or 25
        default_step = max(1, round(1 / (float(nominal) * stream.time_base)))
        self.tick = float(stream.time_base)
        done = False
        shift, last_pts = 0, None   # ticks added after a clock reset; the last frame's pts

        def decoded(packet):
            nonlocal done
            try:
                frames = ctx.decode(packet)
            except av.FFmpegError as e:
                self.decode_errors += 1
                self._damaged(f"decoding error near {self._last_time():.2f} s: "
                              f"{e.strerror or e}")
                return []
            nonlocal shift, last_pts
            kept = []
            for frame in frames:
                pts = clock(frame.pts, frame.dts, frame.duration or default_step)
                if pts is not None:
                    # A clock that runs backwards (MPEG-TS segments joined byte for byte, a
                    # recorder restarted): the frames go on one step after the last, so
                    # times never go back; the record says how often this happened.
                    if last_pts is not None and pts + shift < last_pts:
                        shift = last_pts + (frame.duration or default_step) - pts
                        self.clock_resets += 1
                    pts += shift
                    last_pts = pts
                frame.pts = pts
                t = frame.time
                if t is not None and t < first - 1e-6:
                    continue                     # before the trim window (after a seek)
                if last is not None and t is not None and t >= last - 1e-6:
                    done = True
                    break
                if frame.is_corrupt:
                    self.corrupt_frames += 1
                kept.append(frame)
            return kept

        def stored(frames):
            """RGB frames out of the graph into blocks; yields full blocks."""
            nonlocal block, n, per_block
            for out in frames:
                if p.max_frames and self.frames >= p.max_frames:
                    return
                if block is None:
                    per_block = self._block_frames(self.width * self.height * 3)
                    block = self._new_block(per_block).reshape(
                        per_block, self.height, self.width, 3)
                    n = 0
                plane = out.planes[0]
                row = self.width * 3
                data = np.frombuffer(plane, np.uint8, count=plane.line_size * self.height)
                block[n] = data.reshape(self.height, plane.line_size)[:, :row].reshape(
                    self.height, self.width, 3)
                t = out.time
                if t is None:   # no timestamp in the file: one frame after the previous
                    t = self.timestamps[-1] + frame_step if self.timestamps else first
                self.timestamps.append(float(t))
                self.frames += 1
                n += 1
                if n == per_block:
                    yield block
                    block = None

        def through(frames):
            nonlocal pictures, fallback, frame_step
            for frame in frames:
                if pictures is None:
                    self.info = stream_info(stream, rotation_of(frame.rotation))
                    self.width, self.height = output_size(self.info, p.short_side, p.size)
                    frame_step = 1.0 / (p.fps or self.info.fps or 25.0)
                    pictures = _Pictures(frame, stream.time_base, self.info.rotation,
                                         self.width, self.height, p.fps)
                    fallback = frame
                elif not pictures.fits(frame):   # the stream changed size mid-way
                    yield from stored(pictures.push(None))
                    pictures = _Pictures(frame, stream.time_base, self.info.rotation,
                                         self.width, self.height, p.fps)
                yield from stored(pictures.push(frame))

        held = None              # a packet the demuxer flagged corrupt, decoded if more follow
        for packet in self._packets(container, stream):
            if packet.pts is not None or packet.dts is not None:
                ticks = packet.pts if packet.pts is not None else packet.dts
                end_ticks = ticks + (packet.duration or 0)
                packet_end = max(packet_end, float(end_ticks * stream.time_base))
            if packet.size == 0:
                continue        # an AVI "dropped frame" (or the end marker): nothing to decode
            if held is not None:
                # Flagged but followed by more of the stream: a continuity glitch (MPEG-TS
                # segments joined byte for byte flag the last packet before the joint),
                # which ffmpeg decodes like any packet; real damage shows in the frame.
                yield from through(decoded(held))
                held = None
            if packet.is_corrupt:
                held = packet
                continue
            yield from through(decoded(packet))
            if done or (p.max_frames and self.frames >= p.max_frames):
                break
        else:
            if held is not None:
                # The stream's last packet, torn by a truncation or a read error. Decoding
                # it gives at most a half-concealed picture, and with frame threads its
                # error surfaces later and costs PyAV the frames decoded beside it.
                self._damaged(f"corrupt packet near {self._last_time():.2f} s left out")
            yield from through(decoded(None))          # frames the decoder still holds
        if pictures is not None:
            yield from stored(pictures.push(None))    # and the filter graph
            if self.frames == 0 and p.fps and fallback is not None:
                # A clip shorter than one output frame interval: --fps still keeps one.
                single = _Pictures(fallback, stream.time_base, self.info.rotation,
                                   self.width, self.height, None)
                yield from stored(single.push(fallback) + single.push(None))
        if block is not None and n:
            yield block[:n]
        self._check_length(stream, container, packet_end, done)
        if self.corrupt_frames:
            self._damaged(f"{self.corrupt_frames} frame(s) decoded with errors "
                          "(concealed by the decoder)")

    def _check_length(self, stream, container, packet_end: float, stopped: bool) -> None:
        """A stream whose packets end well before the length its container declares was
        cut short (an AVI or MP4 truncated in a copy or a download)."""
        if stopped or (self.params.max_frames
                                       and self.frames >= self.params.max_frames):
            return
        declared = None
        if stream.duration:
            declared = float((stream.start_time or 0) * stream.time_base
                             + stream.duration * stream.time_base)
        elif container.duration and len(container.streams) == 1:
            declared = (container.start_time or 0) / av.time_base \
                + container.duration / av.time_base
        if declared is None or self.end is not None and declared > \
                (container.start_time or 0) / av.time_base + self.end:
            return
        fps = self.info.fps if self.info and self.info.fps else 25.0
        slack = max(2.0 / fps, 0.01 * declared)
        if packet_end + slack < declared:
            self._damaged(f"truncated: the stream ends at {packet_end:.2f} s of the "
                          f"{declared:.2f} s its container declares")


def decode_all(path, params: DecodeParams, **kw) -> np.ndarray:
    """Whole video in memory: for tests, queries and tiny clips only."""
    decoder = FrameDecoder(path, params, **kw)
    blocks = [b.copy() if decoder.reuse else b for b in decoder]
    if not blocks:
        return np.zeros((0, decoder.height, decoder.width, 3), np.uint8)
    return np.concatenate(blocks)
