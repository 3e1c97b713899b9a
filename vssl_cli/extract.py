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
from pathlib import Path
from typing import Callable

import numpy as np

from vssl_cli.artifacts import (check_output, digest, exclusive_lock, file_digest, load_manifest,
                                new_manifest, remove_stale_partials)
from vssl_cli.errors import DecodeError, UsageProblem, VsslError
from vssl_cli.shards import (in_shard, merge_shards, remove_merged, shard_store,
                             shard_stores)
from vssl_cli.store import backend_for, open_writer
from vssl_cli.store.base import StoreWriter, check_key
from vssl_cli.video.datasets import DatasetIndex, IndexOptions, VideoEntry, build_index
from vssl_cli.video.decode import DecodeParams, FrameDecoder

log = logging.getLogger("vssl.extract")
CHECKPOINT_COST_SHARE = 0.05  # manifest checkpoints may take at most this share of the time
# What the stored frames are, as a frame parameter: 2 = every decoded frame once, with its
# presentation time, at the display aspect. Stores without it were made by the earlier
# decoder, which padded variable-frame-rate videos to a nominal rate with copies and
# ignored non-square pixels; they are read as before but never extended.
DECODER = 2
VFR_SPREAD = 0.02   # frame intervals differing by more than this share: variable rate


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    decode: DecodeParams = DecodeParams()
    codec: str = "auto"
    chunk_frames: int | None = None   # None: the measured default of the backend
    index: IndexOptions = IndexOptions()
    reject_partial: bool = False      # damaged files: store their readable prefix, or not
    quality: int | None = None        # --codec jpeg: its quality (default 90)

    def frame_params(self, backend: str) -> dict:
        """What determines the stored pixels; a store never mixes two of these."""
        from vssl_cli.store import DEFAULT_CHUNK_FRAMES, DEFAULT_CODECS, codecs_of
        from vssl_cli.store.base import JPEG_SHARD_FRAMES
        from vssl_cli.store.jpeg import DEFAULT_QUALITY
        codec = DEFAULT_CODECS[backend] if self.codec == "auto" else self.codec
        if codec not in codecs_of(backend):
            raise UsageProblem(f"codec {codec!r} is not available for {backend}; choose from "
                               f"{', '.join(codecs_of(backend))}")
        if self.quality is not None and codec != "jpeg":
            raise UsageProblem(f"--quality is for --codec jpeg; {codec} is lossless")
        lossy = {"quality": self.quality or DEFAULT_QUALITY} if codec == "jpeg" else {}
        default_chunk = JPEG_SHARD_FRAMES if codec == "jpeg" else DEFAULT_CHUNK_FRAMES[backend]
        return {**dataclasses.asdict(self.decode), "codec": codec, **lossy,
                "chunk_frames": self.chunk_frames or default_chunk, "decoder": DECODER}

    def storing_as(self, previous: dict | None) -> "ExtractConfig":
        """Codec and chunk length the user left to us are the existing store's."""
        frames = (previous or {}).get("config", {}).get("frames", {})
        if previous is None or previous.get("kind") != "frames":
            return self
        codec = frames.get("codec", self.codec) if self.codec == "auto" else self.codec
        return dataclasses.replace(
            self, codec=codec, chunk_frames=self.chunk_frames or frames.get("chunk_frames"),
            quality=self.quality or (frames.get("quality") if codec == "jpeg" else None))


@dataclasses.dataclass
class ExtractResult:
    path: str
    manifest: dict
    built: bool          # False: nothing to do, the store was already up to date
    extracted: int = 0
    failed: list[dict] = dataclasses.field(default_factory=list)
    extracted_ids: set[str] = dataclasses.field(default_factory=set)


class _Stopped(Exception):
    """Raised inside workers when the run is being interrupted."""


def _source_stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _labelled(record: dict, entry: VideoEntry) -> dict:
    record = {**record, "id": entry.id, "key": entry.key, "label": entry.label,
              "split": entry.split, **_splits(entry)}
    if not entry.splits:
        record.pop("splits", None)
    return record


def _splits(entry: VideoEntry) -> dict:
    """The record's roles in the three official splits (UCF101, HMDB51), when it has them."""
    return {"splits": list(entry.splits)} if entry.splits else {}


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


def _describe(decoder: FrameDecoder, params: DecodeParams) -> dict:
    """A stored video's geometry and timing as the manifest records them."""
    info, times = decoder.info, np.asarray(decoder.timestamps)
    steps = np.diff(times)
    span = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    mean_rate = (len(times) - 1) / span if span > 0 else (params.fps or info.fps)
    # Steps are whole ticks of the stream's time base: a millisecond base (Matroska) makes
    # a constant 30 fps 33 and 34 ms. Rounding moves a step by up to one tick each way.
    rounding = 0.0 if params.fps else 2 * decoder.tick
    variable = bool(len(steps) > 1 and steps.min() > 0
                    and steps.max() - steps.min() > VFR_SPREAD * steps.mean() + rounding)
    return {"frames": decoder.frames, "fps": round(float(mean_rate), 6),
            "timing": "resampled" if params.fps else "decoded", "vfr": variable,
            "start_time": round(float(times[0]), 6), "height": decoder.height,
            "width": decoder.width, "orig_width": info.width, "orig_height": info.height,
            "sar": f"{info.sar.numerator}:{info.sar.denominator}",
            "orig_fps": round(info.fps, 6), "orig_duration": round(info.duration, 6),
            "rotation": info.rotation, "codec": info.codec, "partial": decoder.partial,
            "warnings": decoder.warnings,
            **({"clock_resets": decoder.clock_resets} if decoder.clock_resets else {})}


def extract_one(entry: VideoEntry, writer: StoreWriter, params: DecodeParams, params_id: str,
                threads: int, stop: threading.Event, lock,
                reject_partial: bool = False) -> dict:
    """Decode one video into the store; returns its record (status ok or error).

    ``lock`` serialises store writes for backends that need it. A damaged file keeps its
    readable prefix (``partial`` in the record) unless ``reject_partial``.
    """
    base = {"id": entry.id, "key": entry.key, "source": entry.path, "label": entry.label,
            "split": entry.split, **_splits(entry), "start": entry.start, "end": entry.end,
            "params": params_id}
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
        if decoder.frames == 0:
            said = f": {'; '.join(decoder.warnings)}" if decoder.warnings else ""
            raise DecodeError(f"no frames decoded{said}", entry.path)
        if decoder.partial and reject_partial:
            raise DecodeError(f"damaged ({decoder.warnings[0]}); rejected with "
                              "--reject-partial", entry.path)
        record = {**base, "status": "ok", **_describe(decoder, params), **sink.measures()}
        with lock:
            sink.commit(record, np.asarray(decoder.timestamps))
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
    identity = [(r["id"], r.get("source_hash"), r["label"], r["split"], r["status"],
                 *([r["splits"]] if r.get("splits") else [])) for r in table]
    return new_manifest(
        "frames", config, [{"path": os.path.abspath(s) if s != "-" else "-", "kind": "videos"}
                           for s in sources],
        id=digest({"frames": config["frames"], "videos": identity}),
        outputs={"videos": table, "classes": classes, "layouts": layouts,
                 "complete": complete},
        metrics={"videos": len(table), "videos_ok": len(ok), "videos_failed": len(table) - len(ok),
                 "frames": sum(r["frames"] for r in ok), "extracted_this_run": len(results),
                 "seconds_this_run": round(seconds, 3),
                 "frames_per_second": round(decoded / seconds, 1) if results and seconds else None,
                 **_lossy_metrics(ok)})


def _lossy_metrics(ok: list[dict]) -> dict:
    """A lossy store's frame-weighted mean PSNR and bytes per frame."""
    measured = [r for r in ok if r.get("bytes_per_frame") is not None]
    if not measured:
        return {}
    frames = sum(r["frames"] for r in measured)
    return {"psnr": round(sum(r["psnr"] * r["frames"] for r in measured) / frames, 2),
            "bytes_per_frame": round(sum(r["bytes_per_frame"] * r["frames"]
                                         for r in measured) / frames, 1)}


def _previous_manifest(output: str) -> dict | None:
    """The store's manifest; when it is damaged or fails its checks, None, and the store is
    rebuilt from the videos' own records (nothing the bad manifest says is acted on)."""
    if not os.path.exists(output):
        return None
    try:
        return load_manifest(output)
    except VsslError as e:
        if os.path.exists(os.path.join(output, "manifest.json")) or os.path.isfile(output):
            log.warning("ignoring the store's manifest (%s); rebuilding it from the videos' "
                        "own records", e)
        return None


def _is_store_without_manifest(path) -> bool:
    """A store of ours killed before its first manifest checkpoint (or whose manifest was
    damaged): extract may take it over. Ours only by the mark vssl writes into a store
    it creates: another tool's group or file with a ``videos`` member is not."""
    if backend_for(path) == "hdf5":
        from vssl_cli.store.hdf5_store import marked_as_ours
    else:
        from vssl_cli.store.zarr_store import marked_as_ours
    return marked_as_ours(os.fspath(path))


def extract(sources: list[str], output: str, cfg: ExtractConfig, *, workers: int = 1,
            force: bool = False, prune: bool = False, retry_errors: bool = False,
            verify: bool = False, dry_run: bool = False, stdin=None,
            null_separated: bool = False, shard: tuple[int, int] | None = None,
            on_plan: Callable[[int], None] | None = None,
            on_video: Callable[[dict], None] | None = None) -> ExtractResult:
    """Bring the store at ``output`` up to date with ``sources``.

    ``verify`` reads every chunk of every stored video and extracts again the videos
    whose frames are missing or damaged. ``shard`` (k, n): extract only the k-th of n
    deterministic parts of the sources, into a store of its own beside ``output``
    (shards.py), so n machines fill one store at once; a run without ``shard`` merges
    the finished parts. ``on_plan(n)`` is told how many videos will be decoded,
    ``on_video(record)`` hears about each one as it finishes (progress bars hang off
    these).
    """
    if "://" in output:
        raise UsageProblem("extract writes a local store; copy it to a URL afterwards "
                           "(readers open URLs)", output)
    if shard is not None and (force or prune):
        raise UsageProblem("--shard extracts one part of the sources; --force and --prune "
                           "apply to the whole store (run them without --shard)")
    check_output(output, "frames", sources, also_ours=_is_store_without_manifest)
    target = os.path.realpath(output)   # a symlinked store is updated where it lives
    if shard is not None:
        part = shard_store(target, *shard)
        check_output(part, "frames", sources, also_ours=_is_store_without_manifest)
        output = target = str(part)
    backend = backend_for(output)
    previous = None if force else _previous_manifest(target)
    cfg = cfg.storing_as(previous)
    frame_params = cfg.frame_params(backend)
    params_id = digest(frame_params)
    config = {"frames": frame_params, "index": dataclasses.asdict(cfg.index),
              "backend": backend}
    if previous is not None:
        _check_compatible(output, previous, frame_params)
    index = build_index(sources, cfg.index, stdin=stdin, null_separated=null_separated)
    if shard is not None:
        index = in_shard(index, *shard)
    if not index.entries:
        raise UsageProblem("no videos found in the given sources", " ".join(sources))
    if dry_run:
        return ExtractResult(output, {"would_extract": [e.id for e in index.entries]}, False)
    waiting = shard is None and bool(shard_stores(target))
    # Decided before any writer opens the store (an HDF5 writer works on a copy of it): an
    # up-to-date store has nothing to prune, and --verify reads it where it lies.
    if not waiting and _up_to_date(index, previous, config, sources, params_id,
                                   retry_errors) and not (verify and _damaged(target, previous)):
        return ExtractResult(output, previous, built=False)   # nothing is touched

    with exclusive_lock(target):
        remove_stale_partials(target)    # of killed --force rebuilds
        writer = open_writer(target, frame_params["codec"], frame_params["chunk_frames"],
                             fresh=force, identity=params_id,
                             quality=frame_params.get("quality"))
        try:
            merged = merge_shards(target, writer, frame_params) if waiting else {}
            result = _run(index, sources, output, writer, cfg, config, params_id, workers,
                          previous, prune, retry_errors, verify, on_plan, on_video, merged)
        except (OSError, RuntimeError) as e:   # a write failed (a full disk): nothing
            writer.write_failed()              # half-written may be resumed from
            if isinstance(e, RuntimeError):    # HDF5: its cache could not be written back
                raise VsslError(f"could not write the store ({str(e).splitlines()[0]}); "
                                "free space and rerun", output) from None
            raise
        finally:
            writer.close()
        if merged:
            remove_merged(target, merged)
        return result


def _up_to_date(index, previous, config, sources, params_id, retry_errors) -> bool:
    """Whether a finished store already holds exactly these sources: decided from its
    manifest and the sources' sizes and times, before any writer opens it."""
    if previous is None or not previous["outputs"].get("complete", False):
        return False
    table = previous["outputs"].get("videos", [])
    done = {r["key"]: r for r in table if r.get("status") == "ok" and "key" in r}
    keep, todo = _plan(index, done, {r["id"]: r for r in table if "id" in r}, params_id,
                       retry_errors)
    if todo or len(keep) != len(table):
        return False
    rows = [keep[e.id] for e in index.entries]
    return _manifest(config, sources, rows, previous["outputs"].get("classes", []),
                     index.layouts, True, 0.0, {})["id"] == previous["id"]


def _damaged(target: str, previous: dict) -> bool:
    """--verify on a finished store, read in place: whether any stored video's frames are
    missing or do not decode (the run then repairs them through a writer)."""
    records = [r for r in previous["outputs"].get("videos", []) if r.get("status") == "ok"]
    if backend_for(target) == "hdf5":
        from vssl_cli.store.hdf5_store import verify_file
        problems = verify_file(target, records)
    else:
        from vssl_cli.store.zarr_store import verify_video
        problems = [p for r in records if (p := verify_video(
            Path(target) / "videos" / check_key(r.get("key"), target), int(r["frames"])))]
    log.info("verify: %d of %d stored videos are sound", len(records) - len(problems),
             len(records))
    return bool(problems)


def _check_compatible(output: str, previous: dict, frame_params: dict) -> None:
    if previous["kind"] != "frames":
        raise UsageProblem(f"output exists and is a {previous['kind']} artifact, "
                           "not a frame store", output)
    old = previous["config"].get("frames", {})
    if old.get("decoder") != frame_params["decoder"]:
        raise UsageProblem("this store was made by an earlier vssl, whose decoder padded "
                           "variable-frame-rate videos to a nominal rate with copies and "
                           "squeezed non-square pixels; it can still be read, but to add "
                           "to it rebuild it with --force (or extract to a new store)",
                           output)
    diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in frame_params.items() if old.get(k) != v]
    if diff:
        raise UsageProblem("store was built with other frame parameters (" + ", ".join(diff)
                           + "); use --force to rebuild it or choose another output", output)


_WORKER: dict = {}


def _init_worker(path: str, codec: str, chunk_frames: int, quality: int | None,
                 staging: str) -> None:
    """Set up an extraction worker process: its own store handle; it dies with its parent
    (no orphans after a SIGKILL) and leaves Ctrl-C to the parent, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # not the CLI's handler (fork keeps it)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)   # 1: PR_SET_PDEATHSIG
    from vssl_cli.store import attach_writer
    _WORKER["writer"] = attach_writer(path, codec, chunk_frames, quality, staging)


def worker_start_method() -> str:
    """fork on Linux: a worker is ready in milliseconds instead of re-importing numpy and
    the store's libraries (~0.4 s of CPU each, a sixth of a 16-video run on 2 cores). Safe
    here: a worker touches no parent state. It writes chunk files or HDF5 part files of
    its own, Blosc runs without its global thread pool, and the parent's open HDF5 file is
    never used in a worker, which leaves through os._exit (multiprocessing), so HDF5's
    exit handler never flushes that file from a worker. spawn elsewhere (macOS, Windows)."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def largest_first(entries: list[VideoEntry]) -> list[VideoEntry]:
    """The biggest source files first: with several workers, a long video handed out last
    keeps one busy while the others have nothing left (largest-first scheduling: 21
    packaged camera clips of 120-795 frames at -j 2 went from 0.91x to 0.97x of ffmpeg's
    throughput, bench/extract.py --real). Order within a run changes nothing stored."""
    def size(entry):
        stat = _source_stat(entry.path)
        return stat[0] if stat else 0
    return sorted(entries, key=size, reverse=True)


def _extract_in_worker(entry: VideoEntry, params: DecodeParams, params_id: str,
                       threads: int, reject_partial: bool) -> dict:
    return extract_one(entry, _WORKER["writer"], params, params_id, threads,
                       threading.Event(), contextlib.nullcontext(), reject_partial)


class _Run:
    """One extraction run over a writer: what to keep, what to decode, checkpoints."""

    def __init__(self, index: DatasetIndex, sources, writer: StoreWriter,
                 cfg: ExtractConfig, config: dict, params_id: str, previous_manifest: dict | None,
                 prune: bool, retry_errors: bool, verify: bool = False,
                 merged: dict | None = None):
        """``merged``: shard stores merged into this one (path -> their records), whose
        failures count as this store's own (not retried)."""
        self.index, self.sources, self.writer = index, sources, writer
        self.cfg, self.config, self.params_id = cfg, config, params_id
        self.started = time.monotonic()
        self.previous_manifest = previous_manifest
        previous = {r["id"]: r for r in
                    (self.previous_manifest or {}).get("outputs", {}).get("videos", [])}
        for records in (merged or {}).values():
            previous.update({r["id"]: r for r in records if r.get("status") != "ok"})
        done = writer.completed()
        if verify:
            done = self._verified(done)
        self.keep, self.todo = _plan(index, done, previous, params_id, retry_errors)
        current = {e.id for e in index.entries}
        stale = {i: r for i, r in previous.items() if i not in current}
        self.pruned = bool(prune and stale)
        if prune:
            in_use = {r.get("key") for r in self.keep.values()} | {e.key for e in self.todo}
            for r in stale.values():
                if r.get("key") and r["key"] not in in_use:   # never a live video's frames
                    writer.delete(r["key"])
            stale = {}
        self.carried = stale   # videos from earlier runs that these sources don't mention
        self.classes = sorted({*index.classes,
                               *(r["label"] for r in stale.values() if r.get("label"))})
        self.results: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.last_checkpoint, self.checkpoint_seconds = 0.0, 0.0

    def _verified(self, done: dict[str, dict]) -> dict[str, dict]:
        """The stored videos whose chunks are all there and decode; the others are said
        on stderr and extracted again."""
        sound = {}
        for key, record in done.items():
            problem = self.writer.verify(key, record)
            if problem is None:
                sound[key] = record
            else:
                log.warning("verify: %s: %s; extracting it again", record.get("id", key),
                            problem)
        log.info("verify: %d of %d stored videos are sound", len(sound), len(done))
        return sound

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
        return (not self.todo and not self.pruned and prev is not None
                and prev["outputs"].get("complete", False)
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
            try:
                self.checkpoint(complete=False)   # keep what finished: the next run resumes
            except Exception as e:   # e.g. the disk that failed the video is still full
                log.debug("no checkpoint after the failure: %s", e)
            raise
        pool.shutdown(wait=True)

    def _start(self, workers: int, threads: int, stop: threading.Event):
        """Worker processes for -j 2 and up: the Python side of each video (pipe reads,
        chunking, compression) then scales with cores instead of sharing one interpreter
        lock. A thread for -j 1. Returns (pool, futures, whether they are processes)."""
        todo = largest_first(self.todo) if workers > 1 else self.todo
        if workers > 1 and self.writer.worker_processes:
            pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context(worker_start_method()),
                initializer=_init_worker,
                initargs=(self.writer.path, self.writer.codec, self.writer.chunk_frames,
                          self.writer.quality, getattr(self.writer, "staging", "incoming")))
            return pool, [pool.submit(_extract_in_worker, e, self.cfg.decode, self.params_id,
                                      threads, self.cfg.reject_partial)
                          for e in todo], True
        pool = concurrent.futures.ThreadPoolExecutor(workers)
        lock = contextlib.nullcontext() if self.writer.concurrent_videos else self.lock
        return pool, [pool.submit(extract_one, e, self.writer, self.cfg.decode, self.params_id,
                                  threads, stop, lock, self.cfg.reject_partial)
                      for e in todo], False


def _run(index, sources, output, writer, cfg, config, params_id, workers, previous, prune,
         retry_errors, verify, on_plan, on_video, merged=None) -> ExtractResult:
    run = _Run(index, sources, writer, cfg, config, params_id, previous, prune, retry_errors,
               verify, merged)
    if run.up_to_date():    # --verify or --prune found nothing to change
        writer.discard()
        return ExtractResult(output, run.previous_manifest, built=False)
    run.decode_pending(max(1, workers), on_plan, on_video)
    manifest = run.checkpoint(complete=True)
    writer.finish()
    failed = [r for r in manifest["outputs"]["videos"] if r["status"] != "ok"]
    return ExtractResult(output, manifest, True, len(run.results), failed, set(run.results))
