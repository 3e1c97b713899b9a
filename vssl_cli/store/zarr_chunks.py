"""Direct reads and writes of the frame arrays of a local Zarr store, in Zarr v3 format.

Training reads a few frames of a random video per item, millions of times. zarr-python's
general read path (async codec pipeline, thread hand-offs, selection machinery) costs
~5x the work itself for such reads (bench/store.py: 16 frames at 128 px, 7-10 ms
through zarr vs 1.5 ms reading the chunk files and decoding them here). Extraction writes
each video once, a chunk at a time, in order; through zarr's append that cost ~50 ms of
CPU per 250-frame video beyond compressing and writing the bytes (temporary file and
rename per chunk, asyncio hand-offs, metadata rewrites), an eighth to a fifth of what
ffmpeg spends decoding it (bench/extract.py). Both sides handle exactly one layout (zarr
v3, uint8, a regular grid chunked along time only, bytes + at most one numcodecs
compressor, chunk files side by side); zarr-python reads it as any other array
(tests/test_store.py), and the reader returns None for any other layout, which then goes
through zarr.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numcodecs
import numpy as np

from vssl_cli.artifacts import write_json_atomic
from vssl_cli.store.base import chunk_frames_for

# zarr v3 codec name -> numcodecs class of its chunk bytes (zarr itself wraps these).
_DECODERS = {"blosc": numcodecs.Blosc, "zstd": numcodecs.Zstd, "gzip": numcodecs.GZip}
_SHUFFLES = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
             "bitshuffle": numcodecs.Blosc.BITSHUFFLE}
# `--codec` name -> its zarr v3 codec entry, as zarr writes it for the same settings.
CODECS = {
    "blosc-lz4": {"name": "blosc", "configuration": {
        "typesize": 1, "cname": "lz4", "clevel": 5, "shuffle": "shuffle", "blocksize": 0}},
    "blosc-zstd": {"name": "blosc", "configuration": {
        "typesize": 1, "cname": "zstd", "clevel": 3, "shuffle": "shuffle", "blocksize": 0}},
    "zstd": {"name": "zstd", "configuration": {"level": 3, "checksum": False}},
    "gzip": {"name": "gzip", "configuration": {"level": 4}},
    "none": None,
}
GROUP_METADATA = {"attributes": {}, "zarr_format": 3, "node_type": "group"}
# Chunks are decoded and encoded one at a time per process: Blosc's global thread pool would
# only add threads competing with training (or with ffmpeg, when extracting) for the cores,
# behind a process-wide lock (measured: 1.7 ms per read without it, 2.2-2.6 ms with it).
numcodecs.blosc.use_threads = False


def _encoder(entry: dict | None):
    """The numcodecs codec that writes chunks as ``entry`` (a zarr v3 codec) says."""
    if entry is None:
        return None
    config = entry["configuration"]
    if entry["name"] == "blosc":
        return numcodecs.Blosc(cname=config["cname"], clevel=config["clevel"],
                               shuffle=_SHUFFLES[config["shuffle"]],
                               blocksize=config["blocksize"])
    if entry["name"] == "zstd":
        return numcodecs.Zstd(level=config["level"], checksum=config["checksum"])
    return numcodecs.GZip(level=config["level"])


def write_json(path: Path, obj: dict) -> None:
    """Metadata inside a folder that is renamed into place when complete: no temp file."""
    path.write_text(json.dumps(obj, indent=2))


def ensure_group(folder: Path, attributes: dict | None = None) -> None:
    """Make ``folder`` a zarr v3 group (an existing one is kept as it is, with
    ``attributes`` added to its own). Its metadata is written atomically: groups live
    outside the staging area, for the store's lifetime."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "zarr.json"
    if not meta.exists():
        write_json_atomic(meta, {**GROUP_METADATA, "attributes": dict(attributes or {})})
    elif attributes:
        current = json.loads(meta.read_text())
        if any(current.get("attributes", {}).get(k) != v for k, v in attributes.items()):
            current["attributes"] = {**current.get("attributes", {}), **attributes}
            write_json_atomic(meta, current)


class ChunkWriter:
    """Writes one video's frames, appended in order, as a zarr v3 array in ``folder``.

    Full chunks are encoded and written as they fill; ``close`` pads the last one with
    zarr's fill value (0, as zarr stores an edge chunk) and writes ``zarr.json`` last.
    """

    def __init__(self, folder: Path, height: int, width: int, chunk_frames: int, codec: str):
        self.folder, self.codec = folder, CODECS[codec]
        self.encoder = _encoder(self.codec)
        chunk_frames = chunk_frames_for(chunk_frames, height, width)
        self.pending = np.empty((chunk_frames, height, width, 3), np.uint8)
        self.held = 0      # frames waiting in ``pending`` for their chunk to fill
        self.frames = self.chunks = 0
        folder.mkdir(parents=True)

    def append(self, frames: np.ndarray) -> None:
        size, start = len(self.pending), 0
        if self.held:
            start = min(size - self.held, len(frames))
            self.pending[self.held:self.held + start] = frames[:start]
            self.held += start
            if self.held == size:
                self._write(self.pending)
                self.held = 0
        whole = start + (len(frames) - start) // size * size
        for i in range(start, whole, size):
            self._write(frames[i:i + size])
        rest = len(frames) - whole
        if rest:
            self.pending[:rest] = frames[whole:]
            self.held = rest
        self.frames += len(frames)

    def _write(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk)
        data = chunk if self.encoder is None else self.encoder.encode(chunk)
        with open(self.folder / f"c.{self.chunks}.0.0.0", "wb") as f:
            f.write(data)
        self.chunks += 1

    def close(self, attributes: dict) -> None:
        if self.held:
            self.pending[self.held:] = 0
            self._write(self.pending)
            self.held = 0
        shape = [self.frames, *self.pending.shape[1:]]
        write_json(self.folder / "zarr.json", {
            "shape": shape, "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {
                "chunk_shape": [len(self.pending), *shape[1:]]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
            "fill_value": 0,
            "codecs": [{"name": "bytes"}, *([self.codec] if self.codec else [])],
            "attributes": attributes, "zarr_format": 3, "node_type": "array",
            "storage_transformers": []})


def write_vector(folder: Path, values: np.ndarray) -> None:
    """A small float64 vector (a video's timestamps) as a one-chunk zarr v3 array."""
    values = np.ascontiguousarray(values, dtype="<f8")
    folder.mkdir(parents=True)
    (folder / "c.0").write_bytes(values.tobytes())
    write_json(folder / "zarr.json", {
        "shape": [len(values)], "data_type": "float64",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [max(1, len(values))]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
        "fill_value": 0.0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {}, "zarr_format": 3, "node_type": "array", "storage_transformers": []})


def read_vector(folder: Path) -> np.ndarray | None:
    """What ``write_vector`` wrote, or None when there is none."""
    try:
        meta = json.loads((folder / "zarr.json").read_text())
        data = (folder / "c.0").read_bytes()
    except (OSError, ValueError):
        return None
    return np.frombuffer(data, "<f8")[:int(meta["shape"][0])].copy()


NO_CHUNK = 2 ** 64 - 1      # an index entry of a shard without that chunk


def _index_checked(index: np.ndarray) -> bytes:
    """A shard index with its crc32c (zarr's ``index_codecs``: bytes, then crc32c)."""
    return bytes(numcodecs.CRC32C().encode(index.astype("<u8").tobytes()))


class JpegShardWriter:
    """One video's frames as a time-sharded zarr v3 array of single-frame JPEG chunks
    (store/jpeg.py). Frames are encoded as they arrive; a shard file is written when its
    ``shard_frames`` are in (the last one holds the rest); ``zarr.json`` comes last.
    Every ``psnr_every``-th frame is decoded again to measure what the JPEG kept."""

    def __init__(self, folder: Path, height: int, width: int, shard_frames: int,
                 quality: int, psnr_every: int = 4):
        self.folder, self.shape = folder, (height, width)
        self.shard_frames, self.quality, self.psnr_every = shard_frames, quality, psnr_every
        self.blobs: list[bytes] = []
        self.frames = self.shards = self.bytes = 0
        self.psnr_sum, self.psnr_count = 0.0, 0
        folder.mkdir(parents=True)

    def append(self, frames: np.ndarray) -> None:
        from vssl_cli.store import jpeg
        for frame in frames:
            blob = jpeg.encode(frame, self.quality)
            if self.frames % self.psnr_every == 0:
                self.psnr_sum += min(jpeg.psnr(jpeg.decode(blob), frame), 99.0)
                self.psnr_count += 1
            self.blobs.append(blob)
            self.bytes += len(blob)
            self.frames += 1
            if len(self.blobs) == self.shard_frames:
                self._write_shard()

    def _write_shard(self) -> None:
        index = np.full((self.shard_frames, 2), NO_CHUNK, np.uint64)
        offset = 0
        for i, blob in enumerate(self.blobs):
            index[i] = (offset, len(blob))
            offset += len(blob)
        with open(self.folder / f"c.{self.shards}.0.0.0", "wb") as f:
            f.write(b"".join(self.blobs))
            f.write(_index_checked(index))
        self.blobs, self.shards = [], self.shards + 1

    @property
    def psnr(self) -> float | None:
        return round(self.psnr_sum / self.psnr_count, 2) if self.psnr_count else None

    def close(self, attributes: dict) -> None:
        from vssl_cli.store import jpeg
        if self.blobs:
            self._write_shard()
        h, w = self.shape
        write_json(self.folder / "zarr.json", {
            "shape": [self.frames, h, w, 3], "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {
                "chunk_shape": [self.shard_frames, h, w, 3]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
            "fill_value": 0,
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": [1, h, w, 3], "codecs": [jpeg.codec_entry(self.quality)],
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                 {"name": "crc32c"}],
                "index_location": "end"}}],
            "attributes": attributes, "zarr_format": 3, "node_type": "array",
            "storage_transformers": []})


class JpegShardLayout:
    """Direct reads of a sharded JPEG array: the shard's index (read once), then one
    range read and one decode per frame asked for."""

    def __init__(self, folder: Path, shape, shard_frames: int, separator: str):
        self.folder, self.shape, self.chunk_frames = folder, tuple(shape), shard_frames
        self.separator = separator
        self._index: dict[int, np.ndarray] = {}

    @property
    def chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_frames)

    def _name(self, shard: int) -> str:
        return self.separator.join(["c", str(shard), "0", "0", "0"])

    def _shard_index(self, shard: int, f) -> np.ndarray:
        if shard not in self._index:
            size = self.chunk_frames * 16 + 4
            f.seek(-size, os.SEEK_END)
            tail = f.read(size)
            if len(tail) != size or _index_checked(
                    np.frombuffer(tail[:-4], "<u8")) != tail:
                raise ChunkError(shard, f"shard {shard}'s index is damaged "
                                        f"({self._name(shard)})")
            self._index[shard] = np.frombuffer(tail[:-4], "<u8").reshape(-1, 2)
        return self._index[shard]

    def read(self, indices: np.ndarray) -> np.ndarray:
        from vssl_cli.store import jpeg
        out = np.empty((len(indices), *self.shape[1:]), np.uint8)
        which = indices // self.chunk_frames
        for shard in np.unique(which):
            shard = int(shard)
            try:
                f = open(self.folder / self._name(shard), "rb")
            except FileNotFoundError:
                raise ChunkError(shard, f"shard {shard} is missing "
                                        f"({self._name(shard)})") from None
            with f:
                index = self._shard_index(shard, f)
                for row in np.flatnonzero(which == shard):
                    frame = int(indices[row]) - shard * self.chunk_frames
                    offset, length = (int(v) for v in index[frame])
                    if offset == NO_CHUNK:
                        raise ChunkError(shard, f"frame {indices[row]} is missing from "
                                                f"shard {shard} ({self._name(shard)})")
                    f.seek(offset)
                    try:
                        jpeg.decode(f.read(length), out=out[row])
                    except Exception as e:   # imagecodecs raises its own JpegError
                        raise ChunkError(shard, f"frame {indices[row]} does not decode "
                                                f"({self._name(shard)}: {e})") from None
        return out

    def chunk(self, index: int) -> np.ndarray:
        """Every frame of shard ``index`` (verification)."""
        start = index * self.chunk_frames
        return self.read(np.arange(start, min(start + self.chunk_frames, self.shape[0])))


class ChunkError(Exception):
    """A chunk file that is missing or does not decode: the store is damaged."""

    def __init__(self, index: int, what: str):
        super().__init__(what)
        self.index, self.what = index, what


_SCRATCH = threading.local()


def _scratch(name: str, nbytes: int) -> np.ndarray:
    """``nbytes`` of this thread's buffer ``name``, reused by every chunk read. A fresh 1 MiB
    object per chunk made glibc grow and trim its heap on every read (page faults): random
    16-frame clips from 16-frame chunks ran at a fifth of the speed (bench/store.py)."""
    buffer = getattr(_SCRATCH, name, None)
    if buffer is None or len(buffer) < nbytes:
        buffer = np.empty(nbytes, np.uint8)
        setattr(_SCRATCH, name, buffer)
    return buffer[:nbytes]


def _blosc_whole(data: np.ndarray, nbytes: int) -> bool:
    """Whether ``data`` is a whole Blosc frame of ``nbytes``: its header's sizes (bytes
    4-8 uncompressed, 12-16 compressed) must match, or Blosc reads past a cut file."""
    if len(data) < 16:
        return False
    header = data[:16].tobytes()
    return (int.from_bytes(header[4:8], "little") == nbytes
            and int.from_bytes(header[12:16], "little") == len(data))


class ChunkLayout:
    """One array's geometry and codec, from its zarr.json."""

    def __init__(self, folder: Path, shape, chunk_frames: int, separator: str, decoder):
        self.folder, self.shape, self.chunk_frames = folder, tuple(shape), chunk_frames
        self.separator, self.decoder = separator, decoder
        self.chunk_bytes = chunk_frames * int(np.prod(shape[1:]))

    @classmethod
    def of(cls, folder: Path) -> "ChunkLayout | JpegShardLayout | None":
        """The layout of the array in ``folder``, or None when it is not one this reader
        knows (the caller then reads through zarr)."""
        try:
            meta = json.loads((folder / "zarr.json").read_text())
        except (OSError, ValueError):
            return None
        shape = meta.get("shape", [])
        chunks = meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape", [])
        names = [c.get("name") for c in meta.get("codecs", [])]
        encoding = meta.get("chunk_key_encoding", {})
        if names == ["sharding_indexed"] and len(shape) == 4 and len(chunks) == 4:
            inner = meta["codecs"][0].get("configuration", {})
            from vssl_cli.store.jpeg import ZARR_NAME
            if ([c.get("name") for c in inner.get("codecs", [])] == [ZARR_NAME]
                    and inner.get("index_location") == "end"
                    and list(inner.get("chunk_shape", [])) == [1, *shape[1:]]):
                separator = encoding.get("configuration", {}).get("separator", "/")
                return JpegShardLayout(folder, shape, int(chunks[0]), separator)
            return None
        if (meta.get("zarr_format") != 3 or meta.get("data_type") != "uint8"
                or meta.get("storage_transformers") or len(shape) != 4
                or len(chunks) != 4 or list(chunks[1:]) != list(shape[1:])
                or encoding.get("name") != "default" or not names or names[0] != "bytes"
                or len(names) > 2 or (len(names) == 2 and names[1] not in _DECODERS)):
            return None
        decoder = _DECODERS[names[1]]() if len(names) == 2 else None
        separator = encoding.get("configuration", {}).get("separator", "/")
        return cls(folder, shape, int(chunks[0]), separator, decoder)

    @property
    def chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_frames)

    def chunk(self, index: int) -> np.ndarray:
        """Frames of chunk ``index`` (a full chunk; the last one is padded). The frames live
        in this thread's scratch memory: valid until its next chunk read. Raises
        ChunkError when the file is missing (zarr would read zeros: extraction writes
        every chunk) or does not decode to a whole chunk."""
        name = self.separator.join(["c", str(index), "0", "0", "0"])
        try:
            file = open(self.folder / name, "rb", buffering=0)
        except FileNotFoundError:
            raise ChunkError(index, f"chunk {index} is missing ({name})") from None
        with file:
            data = _scratch("file", os.fstat(file.fileno()).st_size)
            got = 0
            while got < len(data) and (n := file.readinto(data[got:])):
                got += n
        data = data[:got]
        if isinstance(self.decoder, numcodecs.Blosc) and not _blosc_whole(data,
                                                                          self.chunk_bytes):
            raise ChunkError(index, f"chunk {index} is cut short or not a Blosc chunk "
                                    f"({name}: {got} bytes)")
        if self.decoder is not None:
            try:
                data = self.decoder.decode(data, out=_scratch("chunk", self.chunk_bytes))
            except Exception as e:    # numcodecs says RuntimeError, ValueError or worse
                raise ChunkError(index, f"chunk {index} does not decode ({name}: "
                                        f"{str(e) or type(e).__name__})") from None
        if len(data) != self.chunk_bytes:
            raise ChunkError(index, f"chunk {index} holds {len(data)} bytes, not "
                                    f"{self.chunk_bytes} ({name})")
        return np.frombuffer(data, np.uint8).reshape(self.chunk_frames, *self.shape[1:])

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Frames at sorted ``indices`` (all in range)."""
        out = np.empty((len(indices), *self.shape[1:]), np.uint8)
        which = indices // self.chunk_frames
        starts = np.flatnonzero(np.diff(which, prepend=-1))    # each chunk's first row
        for a, b in zip(starts, [*starts[1:], len(indices)]):
            c = int(which[a])
            out[a:b] = self.chunk(c)[indices[a:b] - c * self.chunk_frames]
        return out
