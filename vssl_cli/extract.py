"""Extraction: sources -> frame store, incremental, parallel, resumable.

A video is redone only when its source changed (size/mtime, then content hash) or the
frame parameters changed; everything else is carried over. Each video lands atomically,
and the manifest is checkpointed while working, so a killed run loses at most the videos
in flight and a rerun finishes the rest.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from typing import Callable

from vssl_cli.artifacts import digest, exclusive_lock, file_digest, new_manifest
from vssl_cli.errors import DecodeError, UsageProblem, VsslError
from vssl_cli.store import backend_for, open_writer
from vssl_cli.store.base import StoreWriter
from vssl_cli.video.datasets import DatasetIndex, IndexOptions, VideoEntry, build_index
from vssl_cli.video.decode import DecodeParams, FrameDecoder
from vssl_cli.video.probe import probe

log = logging.getLogger("vssl.extract")
CHECKPOINT_SECONDS = 20.0
TRUNCATION_RATIO = 0.9   # fewer frames than this share of the expected count + ffmpeg errors


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    decode: DecodeParams = DecodeParams()
    codec: str = "auto"
    chunk_frames: int = 8
    index: IndexOptions = IndexOptions()

    def frame_params(self, backend: str) -> dict:
        """What determines the stored pixels; a store never mixes two of these."""
        from vssl_cli.store import DEFAULT_CODECS
        codec = DEFAULT_CODECS[backend] if self.codec == "auto" else self.codec
        return {**dataclasses.asdict(self.decode), "codec": codec,
                "chunk_frames": self.chunk_frames}


@dataclasses.dataclass
class ExtractResult:
    path: str
    manifest: dict
    built: bool          # False: nothing to do, the store was already up to date
    extracted: int = 0
    failed: list[dict] = dataclasses.field(default_factory=list)


class _Stopped(Exception):
    """Raised inside workers when the run is being interrupted."""


def _source_stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _labelled(record: dict, entry: VideoEntry) -> dict:
    return {**record, "id": entry.id, "key": entry.key, "label": entry.label,
            "split": entry.split}


def _reusable(record: dict | None, entry: VideoEntry, params_id: str) -> dict | None:
    """The previous record if the source and parameters are unchanged, else None."""
    if not record or record.get("params") != params_id:
        return None
    if (record.get("start"), record.get("end")) != (entry.start, entry.end):
        return None
    stat = _source_stat(entry.path)
    if stat is None:
        return None
    if stat == (record.get("source_size"), record.get("source_mtime_ns")):
        return record
    if stat[0] == record.get("source_size") and record.get("source_hash") == file_digest(entry.path):
        return {**record, "source_mtime_ns": stat[1]}   # touched, not changed
    return None


def extract_one(entry: VideoEntry, writer: StoreWriter, params: DecodeParams, params_id: str,
                threads: int, stop: threading.Event, lock: threading.Lock) -> dict:
    """Decode one video into the store; returns its record (status ok or error)."""
    base = {"id": entry.id, "key": entry.key, "source": entry.path, "label": entry.label,
            "split": entry.split, "start": entry.start, "end": entry.end, "params": params_id}
    stat = _source_stat(entry.path)
    if stat is None:
        return {**base, "status": "error", "error": "missing or unreadable file"}
    base.update(source_size=stat[0], source_mtime_ns=stat[1])
    sink = None
    try:
        base["source_hash"] = file_digest(entry.path)
        info = probe(entry.path)
        decoder = FrameDecoder(entry.path, info, params, entry.start, entry.end,
                               block=32, threads=threads)
        with lock:
            sink = writer.begin(entry.key, decoder.height, decoder.width)
        for block in decoder:
            if stop.is_set():
                raise _Stopped()
            with lock:
                sink.append(block)
        expected = info.expected_frames(params.fps, entry.start, entry.end)
        if params.max_frames:
            expected = min(expected, params.max_frames)
        if decoder.frames == 0:
            raise DecodeError("no frames decoded" + (f": {decoder.errors[-1]}"
                                                     if decoder.errors else ""), entry.path)
        if decoder.errors and decoder.frames < TRUNCATION_RATIO * expected:
            raise DecodeError(f"truncated or corrupt: decoded {decoder.frames} of about "
                              f"{expected} frames ({decoder.errors[-1]})", entry.path)
        record = {**base, "status": "ok", "frames": decoder.frames,
                  "fps": params.fps or info.fps, "height": decoder.height,
                  "width": decoder.width, "orig_width": info.width, "orig_height": info.height,
                  "orig_fps": info.fps, "rotation": info.rotation, "codec": info.codec,
                  "warnings": decoder.errors[-3:]}
        with lock:
            sink.commit(record)
        return record
    except DecodeError as e:
        if sink is not None:
            with lock:
                sink.abort()
        return {**base, "status": "error", "error": e.what}
    except BaseException:
        if sink is not None:
            with lock:
                sink.abort()
        raise


def _plan(index: DatasetIndex, done: dict[str, dict], previous: dict[str, dict],
          params_id: str, retry_errors: bool):
    """Split the index into (records to keep, entries to decode)."""
    keep, todo = {}, []
    for entry in index.entries:
        record = _reusable(done.get(entry.key), entry, params_id)
        if record is None and not retry_errors:
            old = previous.get(entry.id)
            if old and old.get("status") == "error":
                stat = _source_stat(entry.path)
                if stat is None or stat == (old.get("source_size"), old.get("source_mtime_ns")):
                    record = old    # same bad file as last time: don't fail on it again
        if record is None:
            todo.append(entry)
        else:
            keep[entry.id] = _labelled(record, entry)
    return keep, todo


def _manifest(config: dict, sources: list[str], table: list[dict], classes: list[str],
              layouts: list[str], complete: bool, seconds: float, results: dict) -> dict:
    ok = [r for r in table if r["status"] == "ok"]
    decoded = sum(r.get("frames", 0) for r in results.values() if r["status"] == "ok")
    identity = [(r["id"], r.get("source_hash"), r["label"], r["split"], r["status"])
                for r in table]
    return new_manifest(
        "frames", config, [{"path": os.path.abspath(s) if s != "-" else "-", "kind": "videos"}
                           for s in sources],
        id=digest({"frames": config["frames"], "videos": identity}),
        outputs={"videos": table, "classes": classes, "layouts": layouts,
                 "complete": complete},
        metrics={"videos": len(table), "videos_ok": len(ok), "videos_failed": len(table) - len(ok),
                 "frames": sum(r["frames"] for r in ok), "extracted_this_run": len(results),
                 "seconds_this_run": round(seconds, 3),
                 "frames_per_second": round(decoded / seconds, 1) if results and seconds else None})


def _previous_manifest(output: str) -> dict | None:
    from vssl_cli.artifacts import load_manifest
    if not os.path.exists(output):
        return None
    try:
        return load_manifest(output)
    except VsslError:
        return None


def extract(sources: list[str], output: str, cfg: ExtractConfig, *, workers: int = 1,
            force: bool = False, prune: bool = False, retry_errors: bool = False,
            dry_run: bool = False, stdin=None, on_plan: Callable[[int], None] | None = None,
            on_video: Callable[[dict], None] | None = None) -> ExtractResult:
    """Bring the store at ``output`` up to date with ``sources``.

    ``on_plan(n)`` is told how many videos will be decoded, ``on_video(record)`` hears
    about each one as it finishes (progress bars hang off these).
    """
    index = build_index(sources, cfg.index, stdin=stdin)
    if not index.entries:
        raise UsageProblem("no videos found in the given sources", " ".join(sources))
    backend = backend_for(output)
    frame_params = cfg.frame_params(backend)
    params_id = digest(frame_params)
    config = {"frames": frame_params, "index": dataclasses.asdict(cfg.index),
              "backend": backend}
    if os.path.exists(output) and not force:
        _check_compatible(output, frame_params)
    if dry_run:
        return ExtractResult(output, {"would_extract": [e.id for e in index.entries]}, False)

    with exclusive_lock(output):
        writer = open_writer(output, frame_params["codec"], cfg.chunk_frames, fresh=force)
        try:
            return _run(index, sources, output, writer, cfg, config, params_id, workers,
                        force, prune, retry_errors, on_plan, on_video)
        finally:
            writer.close()


def _check_compatible(output: str, frame_params: dict) -> None:
    previous = _previous_manifest(output)
    if previous is None:
        return
    if previous["kind"] != "frames":
        raise UsageProblem(f"output exists and is a {previous['kind']} artifact, "
                           "not a frame store", output)
    old = previous["config"].get("frames", {})
    diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in frame_params.items() if old.get(k) != v]
    if diff:
        raise UsageProblem("store was built with other frame parameters (" + ", ".join(diff)
                           + "); use --force to rebuild it or choose another output", output)


def _run(index, sources, output, writer, cfg, config, params_id, workers, force, prune,
         retry_errors, on_plan, on_video) -> ExtractResult:
    started = time.monotonic()
    previous_manifest = None if force else _previous_manifest(output)
    previous = {r["id"]: r for r in (previous_manifest or {}).get("outputs", {}).get("videos", [])}
    keep, todo = _plan(index, writer.completed(), previous, params_id, retry_errors)
    current_ids = {e.id for e in index.entries}
    carried = {i: r for i, r in previous.items() if i not in current_ids and not prune}
    if prune:
        for i, r in previous.items():
            if i not in current_ids and r.get("key"):
                writer.delete(r["key"])

    def table(results: dict) -> list[dict]:
        rows = {**carried, **keep, **results}
        order = [e.id for e in index.entries]
        return [rows[i] for i in order if i in rows] + [r for i, r in carried.items()]

    classes = sorted({*index.classes, *(r["label"] for r in carried.values() if r.get("label"))})
    if not todo and previous_manifest and previous_manifest["outputs"].get("complete"):
        manifest = _manifest(config, sources, table({}), classes, index.layouts, True, 0.0, {})
        if manifest["id"] == previous_manifest["id"]:
            return ExtractResult(output, previous_manifest, built=False)

    results: dict[str, dict] = {}

    def checkpoint(complete: bool) -> dict:
        manifest = _manifest(config, sources, table(results), classes, index.layouts, complete,
                             time.monotonic() - started, results)
        with lock:
            writer.write_manifest(manifest)
        return manifest

    stop, lock = threading.Event(), threading.Lock()
    if on_plan:
        on_plan(len(todo))
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    last_checkpoint = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))
    try:
        futures = {pool.submit(extract_one, e, writer, cfg.decode, params_id, threads, stop,
                               lock): e for e in todo}
        for fut in concurrent.futures.as_completed(futures):
            record = fut.result()
            results[record["id"]] = record
            if record["status"] != "ok":
                log.warning("skipped %s: %s", record["source"], record["error"])
            if on_video:
                on_video(record)
            if time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                checkpoint(complete=False)
                last_checkpoint = time.monotonic()
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        checkpoint(complete=False)   # keep what finished: the next run resumes from it
        raise
    pool.shutdown(wait=True)
    manifest = checkpoint(complete=True)
    writer.finish()
    failed = [r for r in manifest["outputs"]["videos"] if r["status"] != "ok"]
    return ExtractResult(output, manifest, True, len(results), failed)
