"""Extraction: sources -> frame store, incremental, parallel, resumable.

A video is redone only when its source changed (size/mtime, then content hash) or the
frame parameters changed; everything else is carried over. Each video lands atomically,
and the manifest is checkpointed while working, so a killed run loses at most the videos
in flight and a rerun finishes the rest.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Callable

from vssl_cli.artifacts import (digest, exclusive_lock, file_digest, load_manifest,
                                new_manifest)
from vssl_cli.errors import DecodeError, UsageProblem, VsslError
from vssl_cli.store import backend_for, open_writer
from vssl_cli.store.base import StoreWriter
from vssl_cli.video.datasets import DatasetIndex, IndexOptions, VideoEntry, build_index
from vssl_cli.video.decode import DecodeParams, FrameDecoder, describe_failure

log = logging.getLogger("vssl.extract")
CHECKPOINT_COST_SHARE = 0.05  # manifest checkpoints may take at most this share of the time
TRUNCATION_RATIO = 0.9   # fewer frames than this share of the expected count + ffmpeg errors


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    decode: DecodeParams = DecodeParams()
    codec: str = "auto"
    chunk_frames: int | None = None   # None: the measured default of the backend
    index: IndexOptions = IndexOptions()

    def frame_params(self, backend: str) -> dict:
        """What determines the stored pixels; a store never mixes two of these."""
        from vssl_cli.store import DEFAULT_CHUNK_FRAMES, DEFAULT_CODECS
        codec = DEFAULT_CODECS[backend] if self.codec == "auto" else self.codec
        decode = dataclasses.asdict(self.decode)
        if not decode["even_long_side"]:
            del decode["even_long_side"]   # the older rounding: as stores made before it say
        return {**decode, "codec": codec,
                "chunk_frames": self.chunk_frames or DEFAULT_CHUNK_FRAMES[backend]}

    def keeping_rounding_of(self, previous: dict | None) -> "ExtractConfig":
        """A store made before ``even_long_side`` keeps its nearest-pixel rounding when it is
        extended, so its videos are reused and never mixed with even-rounded ones; --force
        (no ``previous``) rebuilds it with even sides."""
        if previous is None or previous.get("kind") != "frames":
            return self   # nothing to keep; a wrong kind is refused by _check_compatible
        if DecodeParams.of_store(previous["config"].get("frames", {})).even_long_side:
            return self
        return dataclasses.replace(
            self, decode=dataclasses.replace(self.decode, even_long_side=False))


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
    same_size = stat[0] == record.get("source_size")
    if same_size and record.get("source_hash") == file_digest(entry.path):
        return {**record, "source_mtime_ns": stat[1]}   # touched, not changed
    return None


def extract_one(entry: VideoEntry, writer: StoreWriter, params: DecodeParams, params_id: str,
                threads: int, stop: threading.Event, lock) -> dict:
    """Decode one video into the store; returns its record (status ok or error).

    ``lock`` serialises store writes for backends that need it.
    """
    base = {"id": entry.id, "key": entry.key, "source": entry.path, "label": entry.label,
            "split": entry.split, "start": entry.start, "end": entry.end, "params": params_id}
    stat = _source_stat(entry.path)
    if stat is None:
        return {**base, "status": "error", "error": "missing or unreadable file"}
    base.update(source_size=stat[0], source_mtime_ns=stat[1])
    sink = None
    try:
        if stat[0] == 0:
            raise DecodeError("empty file (0 bytes)", entry.path)
        base["source_hash"] = file_digest(entry.path)
        decoder = FrameDecoder(entry.path, params, entry.start, entry.end,
                               multiple=writer.chunk_frames, threads=threads, reuse=True)
        for frames in decoder:
            if stop.is_set():
                raise _Stopped()
            with lock:
                if sink is None:
                    sink = writer.begin(entry.key, decoder.height, decoder.width)
                sink.append(frames)
        info = decoder.info
        if decoder.frames == 0 or info is None:
            raise DecodeError(f"no frames decoded: {describe_failure(decoder.errors)}",
                              entry.path)
        expected = info.expected_frames(params.fps, entry.start, entry.end)
        if params.max_frames:
            expected = min(expected, params.max_frames)
        if decoder.errors and decoder.frames < TRUNCATION_RATIO * expected:
            raise DecodeError(f"decoded {decoder.frames} of about {expected} frames: "
                              f"{describe_failure(decoder.errors)}", entry.path)
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
    if "://" in output:
        raise UsageProblem("extract writes a local store; copy it to a URL afterwards "
                           "(readers open URLs)", output)
    index = build_index(sources, cfg.index, stdin=stdin)
    if not index.entries:
        raise UsageProblem("no videos found in the given sources", " ".join(sources))
    backend = backend_for(output)
    previous = None if force else _previous_manifest(output)
    cfg = cfg.keeping_rounding_of(previous)
    frame_params = cfg.frame_params(backend)
    params_id = digest(frame_params)
    config = {"frames": frame_params, "index": dataclasses.asdict(cfg.index),
              "backend": backend}
    if previous is not None:
        _check_compatible(output, previous, frame_params)
    if dry_run:
        return ExtractResult(output, {"would_extract": [e.id for e in index.entries]}, False)

    with exclusive_lock(output):
        writer = open_writer(output, frame_params["codec"], frame_params["chunk_frames"],
                             fresh=force)
        try:
            return _run(index, sources, output, writer, cfg, config, params_id, workers,
                        previous, prune, retry_errors, on_plan, on_video)
        finally:
            writer.close()


def _check_compatible(output: str, previous: dict, frame_params: dict) -> None:
    if previous["kind"] != "frames":
        raise UsageProblem(f"output exists and is a {previous['kind']} artifact, "
                           "not a frame store", output)
    old = previous["config"].get("frames", {})
    diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in frame_params.items() if old.get(k) != v]
    if diff:
        raise UsageProblem("store was built with other frame parameters (" + ", ".join(diff)
                           + "); use --force to rebuild it or choose another output", output)


_WORKER: dict = {}


def _init_worker(path: str, codec: str, chunk_frames: int) -> None:
    """Set up an extraction worker process: its own store handle; it dies with its parent
    (no orphans after a SIGKILL) and leaves Ctrl-C to the parent, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # not the CLI's handler (fork keeps it)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)   # 1: PR_SET_PDEATHSIG
    from vssl_cli.store import attach_writer
    _WORKER["writer"] = attach_writer(path, codec, chunk_frames)


def worker_start_method() -> str:
    """fork on Linux: a worker is ready in milliseconds instead of re-importing numpy and
    the store's libraries (~0.4 s of CPU each, a sixth of a 16-video run on 2 cores). Safe
    here: a worker touches no parent state. It writes chunk files or HDF5 part files of
    its own, Blosc runs without its global thread pool, and the parent's open HDF5 file is
    never used in a worker, which leaves through os._exit (multiprocessing), so HDF5's
    exit handler never flushes that file from a worker. spawn elsewhere (macOS, Windows)."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def _extract_in_worker(entry: VideoEntry, params: DecodeParams, params_id: str,
                       threads: int) -> dict:
    return extract_one(entry, _WORKER["writer"], params, params_id, threads,
                       threading.Event(), contextlib.nullcontext())


class _Run:
    """One extraction run over a writer: what to keep, what to decode, checkpoints."""

    def __init__(self, index: DatasetIndex, sources, writer: StoreWriter,
                 cfg: ExtractConfig, config: dict, params_id: str, previous_manifest: dict | None,
                 prune: bool, retry_errors: bool):
        self.index, self.sources, self.writer = index, sources, writer
        self.cfg, self.config, self.params_id = cfg, config, params_id
        self.started = time.monotonic()
        self.previous_manifest = previous_manifest
        previous = {r["id"]: r for r in
                    (self.previous_manifest or {}).get("outputs", {}).get("videos", [])}
        self.keep, self.todo = _plan(index, writer.completed(), previous, params_id,
                                     retry_errors)
        current = {e.id for e in index.entries}
        stale = {i: r for i, r in previous.items() if i not in current}
        if prune:
            for r in stale.values():
                if r.get("key"):
                    writer.delete(r["key"])
            stale = {}
        self.carried = stale   # videos from earlier runs that these sources don't mention
        self.classes = sorted({*index.classes,
                               *(r["label"] for r in stale.values() if r.get("label"))})
        self.results: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.last_checkpoint, self.checkpoint_seconds = 0.0, 0.0

    def table(self) -> list[dict]:
        rows = {**self.keep, **self.results}
        listed = [rows[e.id] for e in self.index.entries if e.id in rows]
        return listed + list(self.carried.values())

    def manifest(self, complete: bool) -> dict:
        return _manifest(self.config, self.sources, self.table(), self.classes,
                         self.index.layouts, complete, time.monotonic() - self.started,
                         self.results)

    def up_to_date(self) -> bool:
        prev = self.previous_manifest
        return (not self.todo and prev is not None and prev["outputs"].get("complete", False)
                and self.manifest(True)["id"] == prev["id"])

    def checkpoint(self, complete: bool) -> dict:
        t0 = time.monotonic()
        manifest = self.manifest(complete)
        with self.lock:
            self.writer.write_manifest(manifest)
        self.last_checkpoint = time.monotonic()
        self.checkpoint_seconds = self.last_checkpoint - t0
        return manifest

    def checkpoint_due(self) -> bool:
        """Often enough that a SIGKILL loses little; rarely enough to stay cheap for huge
        tables (each checkpoint rewrites the whole manifest)."""
        since = time.monotonic() - self.last_checkpoint
        return since >= self.checkpoint_seconds / CHECKPOINT_COST_SHARE

    def decode_pending(self, workers: int, on_plan, on_video) -> None:
        if on_plan:
            on_plan(len(self.todo))
        stop = threading.Event()
        threads = max(1, (os.cpu_count() or 1) // workers)
        pool, futures, in_processes = self._start(workers, threads, stop)
        try:
            for fut in concurrent.futures.as_completed(futures):
                record = fut.result()
                if in_processes and record["status"] == "ok":
                    self.writer.adopt(record["key"])
                self.results[record["id"]] = record
                if record["status"] != "ok":
                    log.debug("skipped %s: %s", record["source"], record["error"])
                if on_video:
                    on_video(record)
                if self.checkpoint_due():
                    self.checkpoint(complete=False)
        except BaseException:
            stop.set()
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)   # forgets its processes
            for process in processes:
                process.terminate()   # a video in flight is simply redone next run
                process.join(timeout=10)
            pool.shutdown(wait=True)   # threads: they see ``stop`` and return
            self.checkpoint(complete=False)   # keep what finished: the next run resumes
            raise
        pool.shutdown(wait=True)

    def _start(self, workers: int, threads: int, stop: threading.Event):
        """Worker processes for -j 2 and up: the Python side of each video (pipe reads,
        chunking, compression) then scales with cores instead of sharing one interpreter
        lock. A thread for -j 1. Returns (pool, futures, whether they are processes)."""
        if workers > 1 and self.writer.worker_processes:
            pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context(worker_start_method()),
                initializer=_init_worker,
                initargs=(self.writer.path, self.writer.codec, self.writer.chunk_frames))
            return pool, [pool.submit(_extract_in_worker, e, self.cfg.decode, self.params_id,
                                      threads) for e in self.todo], True
        pool = concurrent.futures.ThreadPoolExecutor(workers)
        lock = contextlib.nullcontext() if self.writer.concurrent_videos else self.lock
        return pool, [pool.submit(extract_one, e, self.writer, self.cfg.decode, self.params_id,
                                  threads, stop, lock) for e in self.todo], False


def _run(index, sources, output, writer, cfg, config, params_id, workers, previous, prune,
         retry_errors, on_plan, on_video) -> ExtractResult:
    run = _Run(index, sources, writer, cfg, config, params_id, previous, prune, retry_errors)
    if run.up_to_date():
        return ExtractResult(output, run.previous_manifest, built=False)
    run.decode_pending(max(1, workers), on_plan, on_video)
    manifest = run.checkpoint(complete=True)
    writer.finish()
    failed = [r for r in manifest["outputs"]["videos"] if r["status"] != "ok"]
    return ExtractResult(output, manifest, True, len(run.results), failed)
