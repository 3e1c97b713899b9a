"""Sharded extraction: ``vssl extract SOURCES -o OUT --shard K/N`` on N machines at once.

Shard K takes the videos whose id hashes to K - 1 modulo N (the same split on every
machine, whatever the order of the sources) and extracts them into a store of its own,
``OUT.shards/K-of-N.zarr`` (or ``.h5``), with every guarantee of a plain run (atomic
videos, resume after a kill, no-op reruns, its own lock): shards never share a lock or a
file, so they never wait for each other on a shared file system. A run without
``--shard`` merges every finished shard into ``OUT`` (Zarr: the video folders are
renamed in; HDF5: the chunks are copied as stored) and writes the one manifest; the
result equals a single-machine run. A shard that is still running, or was killed before
it finished, is left for later (its videos are extracted by the plain run if it needs
them now).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from vssl_cli.artifacts import digest, exclusive_lock, load_manifest
from vssl_cli.errors import UsageProblem, VsslError
from vssl_cli.store import backend_for
from vssl_cli.store.base import StoreWriter
from vssl_cli.video.datasets import DatasetIndex

log = logging.getLogger("vssl.extract")


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N), e.g. a SLURM array's ``$SLURM_ARRAY_TASK_ID/16``."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageProblem(f"--shard expects K/N such as 3/16, got {text!r}") from None
    if not 1 <= k <= n <= 100000:
        raise UsageProblem(f"--shard {text}: K must be between 1 and N")
    return k, n


def shard_of(video_id: str, n: int) -> int:
    """The shard (1..n) a video belongs to: a hash of its id, stable across machines."""
    return int(digest(video_id, 12), 16) % n + 1


def in_shard(index: DatasetIndex, k: int, n: int) -> DatasetIndex:
    return DatasetIndex([e for e in index.entries if shard_of(e.id, n) == k], index.layouts,
                        index.classes)


def shards_folder(target: str) -> Path:
    return Path(f"{target}.shards")


def shard_store(target: str, k: int, n: int) -> Path:
    suffix = ".h5" if backend_for(target) == "hdf5" else ".zarr"
    return shards_folder(target) / f"{k}-of-{n}{suffix}"


def shard_stores(target: str) -> list[Path]:
    folder = shards_folder(target)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".zarr", ".h5")
                  and not p.name.startswith("."))


def merge_shards(target: str, writer: StoreWriter, frame_params: dict) -> dict[str, list]:
    """Move every finished shard's videos into ``writer``'s store; returns the merged
    shards' records by path. A shard still running (its lock held), unfinished, or made
    with other frame parameters is said on stderr and left alone."""
    merged = {}
    for store in shard_stores(target):
        try:
            with exclusive_lock(store):
                manifest = load_manifest(store)
                if not manifest["outputs"].get("complete"):
                    log.warning("shard %s did not finish (rerun it); its videos are "
                                "extracted here if needed", store.name)
                    continue
                if manifest["config"].get("frames") != frame_params:
                    log.warning("shard %s was made with other frame parameters; left out",
                                store.name)
                    continue
                records = manifest["outputs"].get("videos", [])
                for record in records:
                    if record.get("status") == "ok":
                        writer.take(str(store), record["key"])
                merged[str(store)] = records
                log.info("merged shard %s (%d videos)", store.name, len(records))
        except VsslError as e:
            log.warning("shard %s is not merged: %s", store.name, e)
    return merged


def remove_merged(target: str, merged: dict) -> None:
    """The merged shard stores, once the merged manifest is written (and their folder
    when nothing else is left in it)."""
    for store in merged:
        path = Path(store)
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
            missing_ok=True)
    folder = shards_folder(target)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
