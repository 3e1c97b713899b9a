"""HDF5 backend: one file, for people who prefer a single file to a directory.

HDF5 is not crash-safe when a process dies mid-write, so the writer never touches the
finished file: it works on ``OUT.h5.partial`` (a copy of ``OUT.h5`` when adding to one),
flushing after every video, and renames it over ``OUT.h5`` when done. A killed run leaves
the previous ``OUT.h5`` untouched and the partial file for the rerun to resume from.

A file has one writer, and h5py compresses inside it, one chunk at a time under its own
lock. Extraction workers in other processes therefore write each video to a file of its own
in ``OUT.h5.parts/`` (compressing in parallel), and the writer adopts it: HDF5 copies the
stored chunks into the partial file without decompressing them.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np

from vssl_cli.artifacts import parse_manifest
from vssl_cli.errors import VsslError
from vssl_cli.safe_io import finite
from vssl_cli.store.base import (OWNER_ATTR, OWNER_VALUE, FrameStore, StoreWriter, VideoSink,
                                 check_key, chunk_frames_for, ensure_space)

CODECS = {"lzf": {"compression": "lzf"}, "gzip": {"compression": "gzip", "compression_opts": 4},
          "none": {}}
MANIFEST_ATTR = "manifest"
TIMESTAMPS = "timestamps"   # timestamps/<key>: each frame's presentation time (float64)
ORIGIN_ATTR = "vssl_partial_of"   # on OUT.h5.partial: what it was started from
JPEG_ROWS = 64                     # frames per HDF5 chunk of a JPEG dataset


def _file_state(path: str) -> str:
    """Size and modification time of the finished file ("" when there is none)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def read_manifest(path: str) -> dict:
    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get(MANIFEST_ATTR)
    except OSError as e:
        raise VsslError(f"not a readable HDF5 file: {e}", path) from None
    if text is None:
        raise VsslError("HDF5 file has no vssl manifest attribute", path)
    return parse_manifest(text, path)


def marked_as_ours(path: str) -> bool:
    """Whether the HDF5 file at ``path`` carries the mark vssl writes when it creates a
    store (see base.OWNER_ATTR)."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get(OWNER_ATTR) == OWNER_VALUE
    except (OSError, ValueError, TypeError):
        return False


class Hdf5FrameStore(FrameStore):
    backend = "hdf5"

    def __init__(self, path: str, manifest: dict | None = None):
        super().__init__(path, manifest or read_manifest(path))
        self._handle = None

    def _file(self):
        if self._handle is None:
            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as e:
                raise VsslError(f"not a readable HDF5 file: {str(e).splitlines()[0]}",
                                self.path) from None
        return self._handle

    def _dataset(self, key):
        videos = self._file()["videos"]
        if key not in videos:
            raise VsslError(f"the frames of video {self._video_of(key)!r} are missing "
                            f"(videos/{key}); repair with vssl extract --verify", self.path)
        return videos[key]

    def _frame_chunks(self, key):
        return self._dataset(key).dtype == object

    def _geometry(self, key):
        dataset = self._dataset(key)
        if not isinstance(dataset, h5py.Dataset):
            return (), "group"
        if dataset.dtype == object:      # one JPEG per frame
            vlen = h5py.check_vlen_dtype(dataset.dtype)
            frame = dataset.attrs.get("frame_shape")
            if vlen != np.uint8 or frame is None or dataset.ndim != 1:
                return tuple(dataset.shape), str(vlen or dataset.dtype)
            return (dataset.shape[0], *(int(n) for n in frame)), "uint8"
        return tuple(dataset.shape), str(dataset.dtype)

    def _video_of(self, key: str) -> str:
        return next((r["id"] for r in self.videos if r["key"] == key), key)

    def _read(self, key, selection):
        dataset = self._dataset(key)
        try:
            return read_frames(dataset, selection)
        except (OSError, ValueError) as e:   # a chunk that does not decode
            raise VsslError(f"video {self._video_of(key)!r}: a chunk does not decode "
                            f"({str(e).splitlines()[0]}); repair with vssl extract "
                            "--verify", f"{self.path}:videos/{key}") from None

    def _timestamps(self, key):
        group = self._file().get(TIMESTAMPS)
        return group[key][:] if group is not None and key in group else None



class _Frames:
    """A video's frames in HDF5: a uint8 (T, H, W, 3) dataset chunked along time, or with
    ``--codec jpeg`` one JPEG per frame in a variable-length uint8 dataset (store/jpeg.py),
    every ``psnr_every``-th frame decoded again to measure what the JPEG kept."""

    def __init__(self, group: h5py.Group, name: str, height: int, width: int,
                 chunk_frames: int, codec: str, quality: int | None, psnr_every: int = 4):
        self.codec, self.quality, self.psnr_every = codec, quality, psnr_every
        self.frames, self.bytes, self.psnr_sum, self.psnr_count = 0, 0, 0.0, 0
        if codec == "jpeg":
            self.dataset = group.create_dataset(
                name, shape=(0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8),
                chunks=(JPEG_ROWS,))
            self.dataset.attrs["codec"] = "jpeg"
            self.dataset.attrs["frame_shape"] = [height, width, 3]
            return
        chunk = chunk_frames_for(chunk_frames, height, width)
        # Fletcher-32 checksums every chunk: LZF has none, so a damaged chunk would
        # otherwise decode into garbage frames without a word.
        self.dataset = group.create_dataset(
            name, shape=(0, height, width, 3), maxshape=(None, height, width, 3),
            dtype="uint8", chunks=(chunk, height, width, 3), fletcher32=True,
            **CODECS[codec])

    def append(self, frames) -> None:
        ensure_space(self.dataset.file.filename, np.asarray(frames).nbytes)
        n = self.dataset.shape[0]
        self.dataset.resize(n + len(frames), axis=0)
        if self.codec != "jpeg":
            self.dataset[n:] = frames
            return
        from vssl_cli.store import jpeg
        blobs = np.empty(len(frames), dtype=object)
        for i, frame in enumerate(frames):
            blob = jpeg.encode(frame, self.quality)
            if self.frames % self.psnr_every == 0:
                self.psnr_sum += min(jpeg.psnr(jpeg.decode(blob), frame), 99.0)
                self.psnr_count += 1
            blobs[i] = np.frombuffer(blob, np.uint8)
            self.bytes += len(blob)
            self.frames += 1
        self.dataset[n:] = blobs

    def measures(self) -> dict:
        if self.codec != "jpeg" or not self.frames:
            return {}
        return {"psnr": round(self.psnr_sum / max(1, self.psnr_count), 2),
                "bytes_per_frame": round(self.bytes / self.frames, 1)}


def read_frames(dataset: h5py.Dataset, selection) -> np.ndarray:
    """Frames of a frames dataset (raw, or one JPEG per frame)."""
    if dataset.dtype != object:
        return dataset[selection]
    from vssl_cli.store import jpeg
    blobs = dataset[selection]
    out = np.empty((len(blobs), *dataset.attrs["frame_shape"]), np.uint8)
    for i, blob in enumerate(blobs):
        jpeg.decode(blob.tobytes(), out=out[i])
    return out


def _put_timestamps(group: h5py.Group, name: str, timestamps) -> None:
    if name in group:
        del group[name]
    group.create_dataset(name, data=np.asarray(timestamps, dtype="<f8"))


def parts_folder(path: str) -> Path:
    """Where worker processes leave finished videos for the writer of ``path``."""
    return Path(f"{path}.parts")


class _FramesSink(VideoSink):
    """A sink that writes through ``self.frames`` (a ``_Frames``)."""

    frames: _Frames

    def append(self, frames):
        self.frames.append(frames)

    def measures(self):
        return self.frames.measures()


class _Hdf5Sink(_FramesSink):
    def __init__(self, writer: "Hdf5StoreWriter", key, height, width):
        self.writer, self.key = writer, key
        self.frames = _Frames(writer.incoming(key), key, height, width, writer.chunk_frames,
                              writer.codec, writer.quality)

    def commit(self, record, timestamps=None):
        self.frames.dataset.attrs["record"] = json.dumps(record)
        if timestamps is not None:
            _put_timestamps(self.writer.file.require_group(TIMESTAMPS), self.key, timestamps)
        self.writer.publish(self.key)

    def abort(self):
        incoming = self.writer.file.get("incoming")
        if incoming is not None and self.key in incoming:
            del incoming[self.key]


class _PartSink(_FramesSink):
    """One video in a file of its own, renamed into place when complete."""

    def __init__(self, folder: Path, key: str, height: int, width: int, chunk_frames: int,
                 codec: str, quality: int | None):
        self.final, self.temp = folder / f"{key}.h5", folder / f"{key}.h5.tmp"
        folder.mkdir(exist_ok=True)   # made by the first worker that needs it
        self.file = h5py.File(self.temp, "w")
        self.frames = _Frames(self.file, "frames", height, width, chunk_frames, codec, quality)

    def commit(self, record, timestamps=None):
        self.frames.dataset.attrs["record"] = json.dumps(record)
        if timestamps is not None:
            _put_timestamps(self.file, "timestamps", timestamps)
        self.file.close()
        os.replace(self.temp, self.final)

    def abort(self):
        self.file.close()
        self.temp.unlink(missing_ok=True)


class Hdf5PartWriter:
    """An extraction worker's writer: ``begin`` a video, and it lands in ``OUT.h5.parts/``
    for the store's writer to ``adopt``."""

    def __init__(self, path: str, codec: str, chunk_frames: int, quality: int | None = None):
        self.folder, self.codec, self.chunk_frames = parts_folder(path), codec, chunk_frames
        self.quality = quality

    def begin(self, key, height, width):
        return _PartSink(self.folder, check_key(key, str(self.folder)), height, width,
                         self.chunk_frames, self.codec, self.quality)


class Hdf5StoreWriter(StoreWriter):
    worker_processes = True

    def __init__(self, path, codec, chunk_frames, fresh=False, identity="", quality=None):
        """``identity``: the frame parameters' digest. A partial file is resumed only when
        it was made with the same ones, from the finished file as it is now."""
        if codec not in CODECS and codec != "jpeg":
            raise VsslError(f"codec {codec!r} is not available for HDF5; choose from "
                            f"{', '.join([*CODECS, 'jpeg'])}", path)
        super().__init__(path, codec, chunk_frames, quality)
        self.work = f"{self.path}.partial"
        self.origin = f"{identity}|{'' if fresh else _file_state(self.path)}"
        if fresh and os.path.exists(self.work):
            os.unlink(self.work)
        self.file = self._open_work(fresh)
        self.file.require_group("videos")
        if "incoming" in self.file:
            del self.file["incoming"]
        self.parts = parts_folder(self.path)
        shutil.rmtree(self.parts, ignore_errors=True)   # a killed run's: redone

    def _open_work(self, fresh: bool) -> h5py.File:
        """Resume a partial file when it is sound and of the same origin, else start from
        the finished file (or from nothing)."""
        if os.path.exists(self.work):
            work = _sound_partial(self.work)
            if work is not None and work.attrs.get(ORIGIN_ATTR) == self.origin:
                return work
            if work is not None:
                work.close()          # other settings, or the store changed since
            os.unlink(self.work)      # killed mid-write: its videos are simply redone
        if os.path.exists(self.path) and not fresh:
            shutil.copyfile(self.path, self.work)
        work = h5py.File(self.work, "a")
        work.attrs[ORIGIN_ATTR] = self.origin
        work.attrs[OWNER_ATTR] = OWNER_VALUE
        return work

    def completed(self):
        found = {}
        for key, ds in self.file["videos"].items():
            try:
                found[key] = json.loads(ds.attrs["record"])
            except (KeyError, ValueError):
                continue
        return found

    def begin(self, key, height, width):
        return _Hdf5Sink(self, check_key(key, self.path), height, width)

    def verify(self, key, record):
        return verify_video(self.file["videos"], check_key(key, self.path),
                            int(record["frames"]))

    def incoming(self, key: str) -> h5py.Group:
        """The group a video is built in before ``publish``, with no leftover ``key``."""
        incoming = self.file.require_group("incoming")
        if key in incoming:
            del incoming[key]
        return incoming

    def adopt(self, key):
        part = self.parts / f"{key}.h5"
        ensure_space(self.work, part.stat().st_size)
        with h5py.File(part, "r") as source:   # chunks copied as stored
            source.copy(source["frames"], self.incoming(key), name=key)
            if "timestamps" in source:
                _put_timestamps(self.file.require_group(TIMESTAMPS), key,
                                source["timestamps"][:])
        self.publish(key)
        part.unlink()

    def take(self, store, key):
        """Copied in as stored (no recompression)."""
        check_key(key, self.path)
        ensure_space(self.work, os.path.getsize(store) // 4)
        with h5py.File(store, "r") as source:
            if "videos" not in source or key not in source["videos"]:
                raise VsslError(f"its manifest lists videos/{key}, which it does not hold",
                                store)
            source.copy(source["videos"][key], self.incoming(key), name=key)
            if TIMESTAMPS in source and key in source[TIMESTAMPS]:
                _put_timestamps(self.file.require_group(TIMESTAMPS), key,
                                source[TIMESTAMPS][key][:])
        self.publish(key)

    def publish(self, key: str) -> None:
        """Move a complete video from ``incoming`` to ``videos`` and make it durable."""
        if key in self.file["videos"]:
            del self.file["videos"][key]
        self.file.move(f"incoming/{key}", f"videos/{key}")
        self.file.flush()

    def delete(self, key):
        check_key(key, self.path)
        for name in ("videos", TIMESTAMPS):
            group = self.file.get(name)
            if group is not None and key in group:
                del group[key]

    def write_manifest(self, manifest):
        text = json.dumps(finite(manifest), default=str)
        ensure_space(self.work, 2 * len(text))
        self.file.attrs[MANIFEST_ATTR] = text
        self.file.flush()

    def finish(self):
        del self.file.attrs[ORIGIN_ATTR]
        self.file.close()
        _repack_if_wasteful(self.work)
        os.replace(self.work, self.path)

    def discard(self):
        self.file.close()
        os.unlink(self.work)

    def write_failed(self):
        """HDF5 keeps metadata in a cache that a failed write leaves out of step with the
        file: the working copy cannot be resumed from, so it goes (the finished file was
        never touched), and the next run starts it again."""
        with contextlib.suppress(Exception):   # "Can't destroy cache" on a full disk
            if self.file.id.valid:
                self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.work)

    def close(self):
        try:
            if self.file.id.valid:
                self.file.close()
        except RuntimeError as e:   # the cache could not be written back: a damaged copy
            self.write_failed()
            raise VsslError(f"the working copy could not be written ({str(e).splitlines()[0]}"
                            "); rerun to start it again", self.work) from None
        finally:
            shutil.rmtree(self.parts, ignore_errors=True)


def _sound_partial(path: str) -> h5py.File | None:
    """The partial file open for appending, or None when it does not open and read back
    whole (its metadata and every video's record): a killed or failed write."""
    try:
        work = h5py.File(path, "a")
    except (OSError, RuntimeError):
        return None
    try:
        for group in ("videos", TIMESTAMPS):
            for ds in (work[group].values() if group in work else ()):
                ds.attrs.get("record")
                _ = ds.shape, ds.dtype
        return work
    except Exception:
        with contextlib.suppress(Exception):
            work.close()
        return None


def _repack_if_wasteful(path: str) -> None:
    """Deleted or replaced videos leave holes in HDF5 files; h5repack reclaims them when
    more than a quarter of the file is dead space. Without h5repack we keep the holes."""
    if not shutil.which("h5repack"):
        return
    with h5py.File(path, "r") as f:
        used = sum(ds.id.get_storage_size() for ds in f["videos"].values())
    if used < 0.75 * os.path.getsize(path):
        tmp = f"{path}.repack"
        done = subprocess.run(["h5repack", path, tmp], capture_output=True).returncode == 0
        if done:
            os.replace(tmp, path)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def verify_file(path: str, records: list[dict]) -> list[str]:
    """What is wrong with each stored video of the finished file at ``path`` (read only)."""
    with h5py.File(path, "r") as f:
        return [p for r in records if (p := verify_video(
            f.get("videos"), check_key(r.get("key"), path), int(r["frames"])))]


def verify_video(videos: h5py.Group | None, key: str, frames: int) -> str | None:
    """None when ``videos/key`` holds ``frames`` frames whose chunks all decode, else what
    is wrong."""
    if videos is None or key not in videos:
        return f"videos/{key} is missing"
    return verify_dataset(videos[key], frames)


def verify_dataset(dataset: h5py.Dataset, frames: int) -> str | None:
    """None when ``dataset`` holds ``frames`` frames whose chunks all decode, else what is
    wrong."""
    if dataset.shape[0] != frames:
        return f"holds {dataset.shape[0]} frames, the manifest says {frames}"
    step = dataset.chunks[0] if dataset.chunks else 1
    for start in range(0, frames, step):
        try:
            read_frames(dataset, slice(start, start + step))
        except Exception as e:       # h5py's OSError, imagecodecs' JpegError
            return f"the chunk at frame {start} does not decode ({str(e).splitlines()[0]})"
    return None
