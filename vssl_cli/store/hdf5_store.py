"""HDF5 backend: one file, for people who prefer a single file to a directory.

HDF5 is not crash-safe when a process dies mid-write, so the writer never touches the
finished file: it works on ``OUT.h5.partial`` (a copy of ``OUT.h5`` when adding to one),
flushing after every video, and renames it over ``OUT.h5`` when done. A killed run leaves
the previous ``OUT.h5`` untouched and the partial file for the rerun to resume from.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import h5py

from vssl_cli.artifacts import parse_manifest
from vssl_cli.errors import VsslError
from vssl_cli.store.base import FrameStore, StoreWriter, VideoSink

CODECS = {"lzf": {"compression": "lzf"}, "gzip": {"compression": "gzip", "compression_opts": 4},
          "none": {}}
MANIFEST_ATTR = "manifest"


def read_manifest(path: str) -> dict:
    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get(MANIFEST_ATTR)
    except OSError as e:
        raise VsslError(f"not a readable HDF5 file: {e}", path) from None
    if text is None:
        raise VsslError("HDF5 file has no vssl manifest attribute", path)
    return parse_manifest(text, path)


class Hdf5FrameStore(FrameStore):
    backend = "hdf5"

    def __init__(self, path: str, manifest: dict | None = None):
        super().__init__(path, manifest or read_manifest(path))
        self._handle = None

    def _file(self):
        if self._handle is None:
            self._handle = h5py.File(self.path, "r")
        return self._handle

    def _read(self, key, selection):
        return self._file()["videos"][key][selection]

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _Hdf5Sink(VideoSink):
    def __init__(self, writer: "Hdf5StoreWriter", key, height, width):
        self.writer, self.key = writer, key
        incoming = writer.file.require_group("incoming")
        if key in incoming:
            del incoming[key]
        self.dataset = incoming.create_dataset(
            key, shape=(0, height, width, 3), maxshape=(None, height, width, 3), dtype="uint8",
            chunks=(writer.chunk_frames, height, width, 3), **CODECS[writer.codec])

    def append(self, frames):
        n = self.dataset.shape[0]
        self.dataset.resize(n + len(frames), axis=0)
        self.dataset[n:] = frames

    def commit(self, record):
        f = self.writer.file
        self.dataset.attrs["record"] = json.dumps(record)
        if self.key in f["videos"]:
            del f["videos"][self.key]
        f.move(f"incoming/{self.key}", f"videos/{self.key}")
        f.flush()

    def abort(self):
        incoming = self.writer.file.get("incoming")
        if incoming is not None and self.key in incoming:
            del incoming[self.key]


class Hdf5StoreWriter(StoreWriter):
    def __init__(self, path, codec, chunk_frames, fresh=False):
        if codec not in CODECS:
            raise VsslError(f"codec {codec!r} is not available for HDF5; choose from "
                            f"{', '.join(CODECS)}", path)
        super().__init__(path, codec, chunk_frames)
        self.work = f"{self.path}.partial"
        if fresh and os.path.exists(self.work):
            os.unlink(self.work)
        self.file = h5py.File(self.work, "a") if fresh else self._open_work()
        self.file.require_group("videos")
        if "incoming" in self.file:
            del self.file["incoming"]

    def _open_work(self) -> h5py.File:
        """Resume a partial file when it is sound, else start from the finished file."""
        if os.path.exists(self.work):
            try:
                return h5py.File(self.work, "a")
            except OSError:
                os.unlink(self.work)  # killed mid-write: its videos are simply redone
        if os.path.exists(self.path):
            shutil.copyfile(self.path, self.work)
        return h5py.File(self.work, "a")

    def completed(self):
        found = {}
        for key, ds in self.file["videos"].items():
            try:
                found[key] = json.loads(ds.attrs["record"])
            except (KeyError, ValueError):
                continue
        return found

    def begin(self, key, height, width):
        return _Hdf5Sink(self, key, height, width)

    def delete(self, key):
        if key in self.file["videos"]:
            del self.file["videos"][key]

    def write_manifest(self, manifest):
        self.file.attrs[MANIFEST_ATTR] = json.dumps(manifest, default=str)
        self.file.flush()

    def finish(self):
        self.file.close()
        _repack_if_wasteful(self.work)
        os.replace(self.work, self.path)

    def close(self):
        if self.file.id.valid:
            self.file.close()


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
