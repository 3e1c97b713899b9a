"""The frame store interface shared by the Zarr and HDF5 backends.

A store holds, per video, a uint8 array (T, H, W, 3) chunked along time, and a manifest
whose ``videos`` table gives every video's id, storage key, label, split and geometry.
Readers fetch any list of frame indices of one video with one call; nothing ever loads a
whole dataset. Writers add one video at a time, atomically: a video is either complete
in the store or absent, whatever kills the process.
"""
from __future__ import annotations

import abc
import os
import re
import shutil
from typing import Iterable

import numpy as np

from vssl_cli.errors import DiskFull, VsslError

# Chosen with bench/store.py (results in bench/results/store.json; docs/extract.md "Frame store").
DEFAULT_CODECS = {"zarr": "blosc-lz4", "hdf5": "lzf"}
DEFAULT_CHUNK_FRAMES = {"zarr": 16, "hdf5": 4}
# --codec jpeg: frames per shard file (Zarr; every frame is its own chunk inside it).
JPEG_SHARD_FRAMES = 256
# A chunk holds fewer frames when its frames are large (4K at --short-side 0 is 25 MB a
# frame): the writer keeps one chunk in memory, so this bounds extraction's memory.
CHUNK_BYTES = 16 << 20
# Written into a store's root (Zarr group attribute, HDF5 file attribute) when vssl creates
# it, before any video lands: a store killed before its first manifest is still known as
# ours by it, while another tool's group that merely has a ``videos`` member is not.
OWNER_ATTR, OWNER_VALUE = "vssl", "frames store"
# What a storage key may look like: one path component, nothing hidden, nothing special.
# Keys come from manifests, which anyone can edit; no read, write or delete may leave the
# store because of one.
KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


def check_key(key, where: str) -> str:
    """``key`` if it names a video inside the store, else a one-line error."""
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise VsslError(f"invalid video key {key!r} in the manifest (keys are plain names "
                        "inside the store)", where)
    return key


# Room kept free beyond what a write needs: HDF5 writes its metadata (chunk indexes, the
# manifest attribute) when it flushes, and a write that fails inside HDF5 leaves its cache
# out of step with the file (and has crashed the interpreter at exit).
SPACE_MARGIN = 4 << 20


def ensure_space(path: str | os.PathLike, nbytes: int) -> None:
    """Refuse a write of ``nbytes`` into ``path`` before it starts when the file system
    holding it has not that much room (plus a margin): a full disk is then one line, and
    what was written before stays sound to resume from."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < nbytes + SPACE_MARGIN:
        raise DiskFull(f"no space left on the device ({free >> 20} MB free, "
                       f"{(nbytes + SPACE_MARGIN) >> 20} MB needed for the next write); "
                       "free space and rerun: what is finished is kept and resumed", path)


def chunk_frames_for(chunk_frames: int, height: int, width: int) -> int:
    """Frames per chunk for one video: the store's setting, fewer for huge frames."""
    return max(1, min(chunk_frames, CHUNK_BYTES // (height * width * 3)))


def even_timestamps(record: dict) -> np.ndarray:
    """Presentation times of a video stored before timestamps were kept: its frames were
    resampled to a constant rate, so they are evenly spaced."""
    return np.arange(int(record["frames"])) / float(record.get("fps") or 25.0)


def slab_plan(indices: np.ndarray, slabs: bool = True
              ) -> tuple[slice | np.ndarray, np.ndarray | None]:
    """How to read ``indices``: one contiguous slab when they are dense (and ``slabs``),
    else sorted unique. A store whose chunks are single frames (JPEG) reads only the
    frames asked for: a slab would decode the ones between them too.

    Returns (selection, take) where the caller reads ``selection`` and then, if ``take`` is
    not None, indexes the result with ``take`` to get frames in the requested order.
    """
    lo, hi = int(indices.min()), int(indices.max()) + 1
    if slabs and hi - lo <= 4 * len(indices):
        return slice(lo, hi), indices - lo
    unique, inverse = np.unique(indices, return_inverse=True)
    return unique, (None if np.array_equal(unique, indices) else inverse)


class FrameStore(abc.ABC):
    """Read side. ``videos`` lists the usable (status ok) records, in manifest order."""

    backend: str

    def __init__(self, path: str, manifest: dict):
        self.path, self.manifest = path, manifest
        table = manifest.get("outputs", {}).get("videos", [])
        self.videos = [r for r in table if r.get("status") == "ok"]
        for r in self.videos:
            check_key(r.get("key"), path)
        self._by_id = {r["id"]: r for r in self.videos}
        self.classes = manifest.get("outputs", {}).get("classes", [])
        self._checked: set[str] = set()   # keys whose arrays were found as the manifest says

    def record(self, video_id: str) -> dict:
        try:
            return self._by_id[video_id]
        except KeyError:
            raise VsslError(f"no video {video_id!r} in this store", self.path) from None

    def num_frames(self, video_id: str) -> int:
        """Frames of the video, as its array holds them (checked once against the record)."""
        self.checked_key(video_id)
        return int(self.record(video_id)["frames"])

    def checked_key(self, video_id: str) -> str:
        """The video's storage key, once its array is found to be what vssl writes and what
        the manifest says: uint8 (T, H, W, 3) of the recorded geometry. A store edited by
        another tool (an array rewritten as float32, a frame count raised in the manifest)
        is then one line, not a silent wrong result or a huge allocation."""
        record = self.record(video_id)
        key = record["key"]
        if key not in self._checked:
            shape, dtype = self._geometry(key)
            expected = (int(record["frames"]), int(record["height"]), int(record["width"]), 3)
            if dtype != "uint8" or tuple(shape) != expected:
                raise VsslError(f"video {video_id!r}: the store holds a {dtype} array of shape "
                                f"{tuple(shape)} where the manifest says uint8 {expected}; "
                                "extract it again (vssl extract --verify)", self.path)
            self._checked.add(key)
        return key

    @abc.abstractmethod
    def _geometry(self, key: str) -> tuple[tuple, str]:
        """(shape, dtype name) of the frames the store holds for ``key``; a store of one
        JPEG per frame gives the decoded frames' shape and uint8."""

    def split(self, name: str | None) -> list[dict]:
        """The usable videos of a split: ``train``, ``test``, ... as the store was extracted
        (its ``split`` field), or ``ROLE@N`` for the role in official split N of a UCF101 or
        HMDB51 store, which records all three (see ``official_split``)."""
        if name is None:
            return list(self.videos)
        role, _, official = name.partition("@")
        if not official:
            return [r for r in self.videos if r.get("split") == role]
        n = self.check_official_split(official)
        if n == self.extracted_split() and not any("splits" in r for r in self.videos):
            return [r for r in self.videos if r.get("split") == role]   # an older store
        return [r for r in self.videos if (r.get("splits") or [None] * 3)[n - 1] == role]

    def extracted_split(self) -> int | None:
        """The official split whose roles fill the records' ``split`` field (extract's
        ``--split``), None for a layout without official splits."""
        index = self.manifest.get("config", {}).get("index", {})
        layouts = self.manifest.get("outputs", {}).get("layouts", [])
        official = any(r.get("splits") for r in self.videos) or any(
            layout in ("ucf101", "hmdb51") for layout in layouts)
        split = index.get("split", 1) if isinstance(index, dict) else 1
        return split if official and isinstance(split, int) else None

    def check_official_split(self, official) -> int:
        """``official`` as a split number this store can serve, else one line."""
        try:
            n = int(official)
        except (TypeError, ValueError):
            n = 0
        if not 1 <= n <= 3:
            raise VsslError(f"official split {official!r}: UCF101 and HMDB51 have splits "
                            "1, 2 and 3", self.path)
        extracted = self.extracted_split()
        if extracted is None:
            raise VsslError(f"official split {n}: this store's layout has no official "
                            "splits (UCF101 and HMDB51 do)", self.path)
        if n != extracted and not any("splits" in r for r in self.videos):
            raise VsslError(f"official split {n}: this store records split {extracted} only "
                            "(made before stores kept all three); extract it again",
                            self.path)
        return n

    def read(self, video_id: str, indices: Iterable[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 (N, H, W, 3)."""
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices,
                         dtype=np.int64)
        n = self.num_frames(video_id)
        if idx.size == 0:
            r = self.record(video_id)
            return np.zeros((0, r["height"], r["width"], 3), np.uint8)
        if idx.min() < 0 or idx.max() >= n:
            raise VsslError(f"frame index out of range 0..{n - 1} for {video_id!r}", self.path)
        key = self.checked_key(video_id)
        selection, take = slab_plan(idx, not self._frame_chunks(key))
        frames = self._read(key, selection)
        return frames if take is None else frames[take]

    def _frame_chunks(self, key: str) -> bool:
        """Whether every frame of the video is a chunk of its own (a JPEG)."""
        return False

    def timestamps(self, video_id: str) -> np.ndarray:
        """Each frame's presentation time in seconds (float64, one per frame): as decoded
        for a store of native timing (uneven for variable-frame-rate sources), evenly
        spaced for one resampled with ``--fps``."""
        record = self.record(video_id)
        times = self._timestamps(record["key"])
        if times is None:
            return even_timestamps(record)
        if len(times) != int(record["frames"]):
            raise VsslError(f"video {video_id!r} has {len(times)} timestamps for "
                            f"{record['frames']} frames", self.path)
        return times

    @abc.abstractmethod
    def _read(self, key: str, selection) -> np.ndarray: ...

    def _timestamps(self, key: str) -> np.ndarray | None:
        """The stored timestamps, None for a store made before they were kept."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        # DataLoader workers get a fresh handle: HDF5 and zarr handles don't cross fork safely.
        state = self.__dict__.copy()
        state["_handle"] = None
        return state


class VideoSink(abc.ABC):
    """One video being written; invisible to readers until ``commit``."""

    def measures(self) -> dict:
        """Figures of what was stored (a lossy codec's PSNR and bytes per frame)."""
        return {}

    @abc.abstractmethod
    def append(self, frames: np.ndarray) -> None: ...

    @abc.abstractmethod
    def commit(self, record: dict, timestamps: np.ndarray | None = None) -> None:
        """Make the video visible, with its frames' presentation times (seconds)."""

    @abc.abstractmethod
    def abort(self) -> None: ...


class StoreWriter(abc.ABC):
    """Write side: resumable, one atomic video at a time, manifest written atomically.

    ``concurrent_videos``: whether sinks of different videos may be written from several
    threads at once (Zarr: separate arrays; HDF5: one file, writes must be serialised).
    ``worker_processes``: whether extraction workers in other processes can write videos
    (``store.attach_writer``), each of which the writer then ``adopt``s.
    """

    concurrent_videos = False
    worker_processes = False

    def __init__(self, path: str, codec: str, chunk_frames: int, quality: int | None = None):
        self.path, self.codec, self.chunk_frames = os.fspath(path), codec, chunk_frames
        self.quality = quality   # lossy codecs only
        self.final = self.path   # where the finished store must end up

    @abc.abstractmethod
    def completed(self) -> dict[str, dict]:
        """key -> record of every video intact on disk (from a previous or killed run)."""

    @abc.abstractmethod
    def begin(self, key: str, height: int, width: int) -> VideoSink: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def verify(self, key: str, record: dict) -> str | None:
        """None when the video's frames are all there and decode, else what is wrong."""

    def adopt(self, key: str) -> None:
        """Take in a video that a worker process's writer committed."""

    @abc.abstractmethod
    def take(self, store: str, key: str) -> None:
        """Take in a video committed to another finished store of this backend and these
        frame parameters (a shard of a sharded extraction)."""

    @abc.abstractmethod
    def write_manifest(self, manifest: dict) -> None: ...

    def finish(self) -> None:
        """Make everything written visible at ``path`` (HDF5 swaps its working copy in)."""

    def discard(self) -> None:
        """Nothing changed: drop any working copy, leave the store as it was."""

    def write_failed(self) -> None:
        """A write failed (a full disk): drop whatever cannot be trusted to resume from.
        Zarr's videos are files renamed into place when complete: nothing to drop."""

    def close(self) -> None:
        pass
