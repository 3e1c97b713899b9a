"""Direct reads of the frame arrays that `vssl extract` writes to a local Zarr store.

Training reads a few frames of a random video per item, millions of times. zarr-python's
general read path (async codec pipeline, thread hand-offs, selection machinery) costs
~5x the work itself for such reads (bench/store.py: 16 frames at 128 px, 7-10 ms
through zarr vs 1.5 ms reading the chunk files and decoding them here). This reader
handles exactly the layout extract writes (zarr v3, a regular grid chunked along time
only, bytes + one numcodecs compressor) and says so by returning None for anything else,
which then goes through zarr as before.
"""
from __future__ import annotations

import json
from pathlib import Path

import numcodecs
import numpy as np

# zarr v3 codec name -> decoder of its chunk bytes (zarr itself wraps these numcodecs).
_DECODERS = {"blosc": numcodecs.Blosc, "zstd": numcodecs.Zstd, "gzip": numcodecs.GZip}
# Chunks are decoded one at a time per loader process: Blosc's global thread pool would
# only add threads competing with training for the cores, behind a process-wide lock
# (measured: 1.7 ms per read without it, 2.2-2.6 ms with it). Zarr's own writes already
# decode and encode off the main thread, where Blosc never uses the pool.
numcodecs.blosc.use_threads = False


class ChunkLayout:
    """One array's geometry and codec, from its zarr.json."""

    def __init__(self, folder: Path, shape, chunk_frames: int, separator: str, decoder):
        self.folder, self.shape, self.chunk_frames = folder, tuple(shape), chunk_frames
        self.separator, self.decoder = separator, decoder

    @classmethod
    def of(cls, folder: Path) -> "ChunkLayout | None":
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
        if (meta.get("zarr_format") != 3 or meta.get("data_type") != "uint8"
                or meta.get("storage_transformers") or len(shape) != 4
                or len(chunks) != 4 or list(chunks[1:]) != list(shape[1:])
                or encoding.get("name") != "default" or not names or names[0] != "bytes"
                or len(names) > 2 or (len(names) == 2 and names[1] not in _DECODERS)):
            return None
        decoder = _DECODERS[names[1]]() if len(names) == 2 else None
        separator = encoding.get("configuration", {}).get("separator", "/")
        return cls(folder, shape, int(chunks[0]), separator, decoder)

    def chunk(self, index: int) -> np.ndarray | None:
        """Frames of chunk ``index`` (a full chunk; the last one is padded), or None when
        its file is missing (never written: zarr would fill it)."""
        name = self.separator.join(["c", str(index), "0", "0", "0"])
        try:
            data = (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None
        if self.decoder is not None:
            data = self.decoder.decode(data)
        return np.frombuffer(data, np.uint8).reshape(self.chunk_frames, *self.shape[1:])

    def read(self, indices: np.ndarray) -> np.ndarray | None:
        """Frames at sorted ``indices`` (all in range), or None if a chunk is missing."""
        out = np.empty((len(indices), *self.shape[1:]), np.uint8)
        which = indices // self.chunk_frames
        starts = np.flatnonzero(np.diff(which, prepend=-1))    # each chunk's first row
        for a, b in zip(starts, [*starts[1:], len(indices)]):
            c = int(which[a])
            frames = self.chunk(c)
            if frames is None:
                return None
            out[a:b] = frames[indices[a:b] - c * self.chunk_frames]
        return out
