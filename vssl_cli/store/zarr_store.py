"""Zarr backend: a directory store (or any fsspec URL for reading).

Layout: ``manifest.json`` and ``videos/<key>`` arrays at the root. A video is written
under ``incoming/<key>`` and renamed into ``videos/`` when complete, so a killed
extraction leaves only complete videos visible. Writes and local reads go straight to the
chunk files (zarr_chunks.py); zarr-python is imported only to read other layouts or URLs.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vssl_cli.artifacts import MANIFEST_NAME, parse_manifest, replace_path, umask, write_json_atomic
from vssl_cli.errors import VsslError
from vssl_cli.safe_io import read_bytes
from vssl_cli.store.base import (OWNER_ATTR, OWNER_VALUE, FrameStore, StoreWriter, VideoSink,
                                 check_key, ensure_space)
from vssl_cli.store.zarr_chunks import (CODECS, ChunkError, ChunkLayout, ChunkWriter,
                                        JpegShardLayout, JpegShardWriter, ensure_group,
                                        read_vector, write_vector)

TIMESTAMPS = "timestamps"   # timestamps/<key>: each frame's presentation time (float64)


def read_manifest(path: str) -> dict:
    if "://" in path:
        import fsspec
        with fsspec.open(f"{path.rstrip('/')}/{MANIFEST_NAME}", "rb") as f:
            return parse_manifest(f.read(), path)
    target = Path(path) / MANIFEST_NAME
    if not target.exists():
        raise VsslError("frame store has no manifest.json (not extracted, or extraction "
                        "never finished a checkpoint)", path)
    return parse_manifest(read_bytes(target, "manifest"), str(target))


class ZarrFrameStore(FrameStore):
    backend = "zarr"

    def __init__(self, path: str, manifest: dict | None = None):
        super().__init__(path, manifest or read_manifest(path))
        self._handle = None
        self._layouts: dict[str, ChunkLayout | None] = {}   # key -> direct reader, if any

    def _group(self):
        if self._handle is None:
            import zarr  # ~0.2 s to import; local stores of extract's layout never need it
            self._handle = zarr.open_group(self.path, mode="r")
        return self._handle

    @property
    def local(self) -> bool:
        return "://" not in self.path

    def _layout(self, key: str) -> ChunkLayout | None:
        if key not in self._layouts:
            folder = Path(self.path) / "videos" / key
            if self.local and not (folder / "zarr.json").exists():
                raise VsslError(f"the frames of video {self._video_of(key)!r} are missing "
                                f"(videos/{key}); repair with vssl extract --verify",
                                self.path)
            self._layouts[key] = ChunkLayout.of(folder) if self.local else None
        return self._layouts[key]

    def _frame_chunks(self, key):
        return isinstance(self._layout(key), JpegShardLayout)

    def _geometry(self, key):
        layout = self._layout(key)
        if layout is not None:          # only uint8 arrays of 4 dimensions have one
            return layout.shape, "uint8"
        try:
            array = self._group()["videos"][key]
        except KeyError:
            raise VsslError(f"the frames of video {self._video_of(key)!r} are missing "
                            f"(videos/{key})", self.path) from None
        if not hasattr(array, "dtype"):
            return (), "group"
        return tuple(array.shape), str(array.dtype)

    def _video_of(self, key: str) -> str:
        return next((r["id"] for r in self.videos if r["key"] == key), key)

    def _read(self, key, selection):
        layout = self._layout(key)
        if layout is not None:
            indices = np.arange(selection.start, selection.stop) \
                if isinstance(selection, slice) else selection
            try:
                return layout.read(indices)
            except ChunkError as e:
                raise VsslError(f"video {self._video_of(key)!r}: {e.what}; repair with "
                                "vssl extract --verify", f"{self.path}/videos/{key}") from None
        array = self._group()["videos"][key]
        if isinstance(selection, slice):
            return array[selection]
        return array.get_orthogonal_selection((selection,))

    def _timestamps(self, key):
        if not self.local:
            group = self._group()
            return np.asarray(group[TIMESTAMPS][key][:]) if TIMESTAMPS in group and \
                key in group[TIMESTAMPS] else None
        return read_vector(Path(self.path) / TIMESTAMPS / key)

class _ZarrSink(VideoSink):
    def __init__(self, writer: "ZarrStoreWriter", key: str, height: int, width: int):
        self.writer, self.key = writer, key
        self.staging = Path(writer.path) / writer.staging / key
        shutil.rmtree(self.staging, ignore_errors=True)
        if writer.codec == "jpeg":
            self.array = JpegShardWriter(self.staging, height, width, writer.chunk_frames,
                                         writer.quality)
        else:
            self.array = ChunkWriter(self.staging, height, width, writer.chunk_frames,
                                     writer.codec)

    def measures(self) -> dict:
        """What a lossy codec kept: PSNR against the decoded frames, bytes per frame."""
        if not isinstance(self.array, JpegShardWriter) or not self.array.frames:
            return {}
        return {"psnr": self.array.psnr,
                "bytes_per_frame": round(self.array.bytes / self.array.frames, 1)}

    def append(self, frames):
        ensure_space(self.staging, frames.nbytes)
        self.array.append(frames)

    def commit(self, record, timestamps=None):
        """Timestamps land first: a video in ``videos/`` always has them."""
        self.array.close({"record": record})
        root = Path(self.writer.path)
        if timestamps is not None:
            staged = root / self.writer.staging / f"{self.key}.t"
            shutil.rmtree(staged, ignore_errors=True)
            write_vector(staged, timestamps)
            replace_path(staged, root / TIMESTAMPS / self.key)
        replace_path(self.staging, root / "videos" / self.key)

    def abort(self):
        shutil.rmtree(self.staging, ignore_errors=True)


def _check_group(root: Path) -> None:
    """Refuse to write videos into a Zarr array or into a file."""
    if root.exists() and not root.is_dir():
        raise VsslError("exists and is not a directory (a Zarr store is one)", str(root))
    with contextlib.suppress(OSError, ValueError):
        kind = json.loads((root / "zarr.json").read_text()).get("node_type")
        if kind != "group":
            raise VsslError(f"exists and is a Zarr {kind}, not a group", str(root))


class ZarrStoreWriter(StoreWriter):
    concurrent_videos = True
    worker_processes = True   # a worker's video is committed into the store itself

    def __init__(self, path, codec, chunk_frames, fresh=False, attach=False, quality=None,
                 staging="incoming"):
        """``attach``: another process's writer is working on this store (extraction worker
        processes); use its staging area as it is. ``staging``: the folder videos are built
        in (one per shard when several machines fill the store at once)."""
        if codec not in CODECS and codec != "jpeg":
            raise VsslError(f"codec {codec!r} is not available for Zarr; choose from "
                            f"{', '.join([*CODECS, 'jpeg'])}", path)
        super().__init__(path, codec, chunk_frames, quality)
        self.staging = staging
        if attach:
            return
        if fresh:
            final = Path(self.final)
            final.parent.mkdir(parents=True, exist_ok=True)
            self.path = tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial",
                                         dir=final.parent)
            os.chmod(self.path, 0o777 & ~umask())
        root = Path(self.path)
        _check_group(root)
        ensure_group(root, {OWNER_ATTR: OWNER_VALUE})
        ensure_group(root / "videos")
        ensure_group(root / TIMESTAMPS)
        shutil.rmtree(root / staging, ignore_errors=True)
        # Made once here: sinks of parallel workers creating it themselves would race.
        ensure_group(root / staging)

    def completed(self):
        return completed_videos(self.path)

    def verify(self, key, record):
        return verify_video(Path(self.path) / "videos" / check_key(key, self.path),
                            int(record["frames"]))

    def begin(self, key, height, width):
        return _ZarrSink(self, check_key(key, self.path), height, width)

    def take(self, store, key):
        """Renamed in (the shard sits beside the store: the same file system)."""
        check_key(key, self.path)
        if not (Path(store) / "videos" / key / "zarr.json").is_file():
            raise VsslError(f"its manifest lists videos/{key}, which it does not hold", store)
        for folder in (TIMESTAMPS, "videos"):          # timestamps first, as commit does
            source = Path(store) / folder / key
            if source.exists():
                replace_path(source, Path(self.path) / folder / key)

    def delete(self, key):
        check_key(key, self.path)
        for folder in ("videos", TIMESTAMPS):
            shutil.rmtree(Path(self.path) / folder / key, ignore_errors=True)

    def write_manifest(self, manifest):
        write_json_atomic(Path(self.path) / MANIFEST_NAME, manifest)

    def discard(self):
        if self.path != self.final:
            shutil.rmtree(self.path, ignore_errors=True)

    def finish(self):
        if self.path != self.final:
            replace_path(Path(self.path), Path(self.final))
            self.path = self.final


def marked_as_ours(path: str) -> bool:
    """Whether the Zarr group at ``path`` carries the mark vssl writes when it creates a
    store (see base.OWNER_ATTR)."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
        return meta["attributes"].get(OWNER_ATTR) == OWNER_VALUE
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def completed_videos(path: str) -> dict[str, dict]:
    """key -> record of every video committed to the store at ``path`` (read only)."""
    found = {}
    videos = Path(path) / "videos"
    if not videos.is_dir():
        return found
    for entry in sorted(os.listdir(videos)):
        meta = videos / entry / "zarr.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            found[entry] = json.loads(meta.read_text())["attributes"]["record"]
    return found


def verify_video(folder: Path, frames: int) -> str | None:
    """None when the array in ``folder`` holds ``frames`` frames in chunks that are all
    there and all decode, else what is wrong."""
    layout = ChunkLayout.of(folder)
    if layout is None:
        return f"{folder.name} is missing or not an array this store writes"
    if layout.shape[0] != frames:
        return f"holds {layout.shape[0]} frames, the manifest says {frames}"
    try:
        for c in range(layout.chunks):
            layout.chunk(c)
    except ChunkError as e:
        return e.what
    return None
