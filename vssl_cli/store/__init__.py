"""Frame stores: ``open_store`` for readers, ``open_writer`` for extraction.

The backend follows the path: ``.h5``/``.hdf5`` is HDF5, anything else is Zarr.
"""
from __future__ import annotations

import os

from vssl_cli.errors import VsslError
from vssl_cli.store.base import DEFAULT_CHUNK_FRAMES, DEFAULT_CODECS, FrameStore, StoreWriter

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def backend_for(path: str | os.PathLike) -> str:
    return "hdf5" if os.fspath(path).lower().endswith(HDF5_SUFFIXES) else "zarr"


def open_store(path: str | os.PathLike, manifest: dict | None = None) -> FrameStore:
    """Open a finished frame store for reading (checks that it is one)."""
    path = os.fspath(path)
    if "://" not in path and not os.path.exists(path):
        raise VsslError("no such frame store", path)
    if backend_for(path) == "hdf5":
        from vssl_cli.store.hdf5_store import Hdf5FrameStore
        store = Hdf5FrameStore(path, manifest)
    else:
        from vssl_cli.store.zarr_store import ZarrFrameStore
        store = ZarrFrameStore(path, manifest)
    if store.manifest["kind"] != "frames":
        from vssl_cli.errors import UsageProblem
        raise UsageProblem(f"expected a frames artifact, got a {store.manifest['kind']} "
                           "artifact", path)
    return store


def open_writer(path: str | os.PathLike, codec: str = "auto", chunk_frames: int | None = None,
                fresh: bool = False, identity: str = "", quality: int | None = None,
                staging: str = "incoming") -> StoreWriter:
    """A writer that resumes/extends the store at ``path``; ``fresh`` builds a new one
    beside it and swaps it in only on ``finish`` (``--force`` never loses the old store
    to an interrupted rebuild). ``identity`` (the frame parameters' digest) keeps a
    half-built HDF5 file of other settings from being resumed. ``quality``: the JPEG
    quality of ``codec`` jpeg; ``staging``: the Zarr folder videos are built in."""
    backend = backend_for(path)
    codec = DEFAULT_CODECS[backend] if codec == "auto" else codec
    chunk_frames = chunk_frames or DEFAULT_CHUNK_FRAMES[backend]
    if backend == "hdf5":
        from vssl_cli.store.hdf5_store import Hdf5StoreWriter
        return Hdf5StoreWriter(os.fspath(path), codec, chunk_frames, fresh, identity, quality)
    from vssl_cli.store.zarr_store import ZarrStoreWriter
    return ZarrStoreWriter(os.fspath(path), codec, chunk_frames, fresh, quality=quality,
                           staging=staging)


def read_file_manifest(path: str) -> dict:
    """Manifest of a single-file artifact (HDF5)."""
    if backend_for(path) != "hdf5":
        raise VsslError("not a vssl artifact (expected a directory or an .h5 file)", path)
    from vssl_cli.store.hdf5_store import read_manifest
    return read_manifest(path)


def attach_writer(path: str, codec: str, chunk_frames: int, quality: int | None = None,
                  staging: str = "incoming"):
    """A writer in an extraction worker process, beside the one that opened the store at
    ``path`` (backends with ``worker_processes``): Zarr's commits into the store, HDF5's
    into a part file that the store's writer adopts."""
    if backend_for(path) == "hdf5":
        from vssl_cli.store.hdf5_store import Hdf5PartWriter
        return Hdf5PartWriter(path, codec, chunk_frames, quality)
    from vssl_cli.store.zarr_store import ZarrStoreWriter
    return ZarrStoreWriter(path, codec, chunk_frames, attach=True, quality=quality,
                           staging=staging)


def codecs_of(backend: str) -> list[str]:
    """The ``--codec`` names a backend writes."""
    if backend == "hdf5":
        from vssl_cli.store.hdf5_store import CODECS
    else:
        from vssl_cli.store.zarr_chunks import CODECS
    return [*CODECS, "jpeg"]
