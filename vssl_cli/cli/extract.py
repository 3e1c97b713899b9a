"""`vssl extract`: decode videos into a frame store with labels and splits."""
from __future__ import annotations

import os
import sys

import click

from vssl_cli.cli.common import (MAX_SIDE, FiniteFloat, SizeType, dry_run_option, emit,
                                 force_option, json_option, log, progress_bar, workers_option)
from vssl_cli.errors import VsslError
from vssl_cli.extract import ExtractConfig, extract
from vssl_cli.shards import parse_shard
from vssl_cli.store import DEFAULT_CHUNK_FRAMES
from vssl_cli.video.datasets import LAYOUTS, IndexOptions
from vssl_cli.video.decode import DecodeParams


@click.command("extract")
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=True),
              help="Frame store to create or update: DIR.zarr (Zarr) or FILE.h5 (HDF5).")
@click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True,
              help="Dataset layout of directory/list sources.")
@click.option("--annotations", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder with UCF101/HMDB51 split files if not inside the source folder.")
@click.option("--split", type=click.IntRange(1, 3), default=1, show_default=True,
              help="Official split to use for UCF101/HMDB51.")
@click.option("--video-root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder that relative paths in list/CSV files refer to "
                   "[default: the list file's folder].")
@click.option("--test-fraction", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Share of each class held out as test when labelled data has no splits.")
@click.option("--fps", type=FiniteFloat(0, 1000, min_open=True), default=None,
              help="Resample to this frame rate [default: keep the native rate].")
@click.option("--short-side", type=click.IntRange(0, MAX_SIDE), default=128,
              show_default=True,
              callback=lambda ctx, param, v: _short_side(v),
              help="Resize so the shorter side has this many pixels, the longer one even "
                   "at the source's aspect (0 keeps the size).")
@click.option("--size", type=SizeType(), default=None,
              help="Resize to exactly WxH (overrides --short-side).")
@click.option("--max-frames", type=click.IntRange(1, 10**9), default=None,
              help="Keep at most this many frames per video [default: all].")
@click.option("--codec", default="auto", show_default=True,
              help="Compression: Zarr blosc-lz4|blosc-zstd|zstd|gzip|none, HDF5 "
                   "lzf|gzip|none, both jpeg (lossy, about the size of JPEG frame folders); "
                   "auto keeps the store's, else the measured best lossless one.")
@click.option("--quality", type=click.IntRange(1, 100), default=None,
              help="JPEG quality of --codec jpeg [default: 90].")
@click.option("--chunk-frames", type=click.IntRange(1, 65536), default=None,
              help="Frames per storage chunk (jpeg: per shard file, each frame its own "
                   "chunk; default 256) [default: measured best per backend: "
                   + ", ".join(f"{b} {n}" for b, n in DEFAULT_CHUNK_FRAMES.items()) + "].")
@workers_option(default=os.cpu_count() or 1, help="Videos decoded in parallel.")
@click.option("--prune", is_flag=True, help="Remove videos no longer among the sources.")
@click.option("--retry-errors", is_flag=True,
              help="Try again videos that failed before although unchanged.")
@click.option("--strict", is_flag=True,
              help="Exit non-zero if any video failed or was damaged (partial).")
@click.option("--reject-partial", is_flag=True,
              help="Do not store damaged files (truncated, read or decoding errors); by "
                   "default their readable frames are kept and marked partial.")
@click.option("--verify", is_flag=True,
              help="Read every chunk of every stored video and extract again those whose "
                   "frames are missing or do not decode.")
@click.option("--shard", default=None, metavar="K/N",
              help="Extract only the K-th of N deterministic parts of the sources (N "
                   "machines at once, e.g. a SLURM array), into OUTPUT.shards/; a run "
                   "without --shard merges the finished parts into OUTPUT.")
@click.option("-0", "--null", "null_separated", is_flag=True,
              help="The list on standard input is NUL-separated paths (find -print0).")
@force_option
@dry_run_option
@json_option
def extract_command(sources, output, layout, annotations, split, video_root, test_fraction,
                    fps, short_side, size, max_frames, codec, quality, chunk_frames, workers,
                    prune,
                    retry_errors, strict, reject_partial, verify, shard, null_separated,
                    force, dry_run, as_json):
    """Decode SOURCES into a frame store at OUTPUT and print its path.

    SOURCES are video files, folders (searched recursively; UCF101, HMDB51 and
    class-per-folder layouts are recognised), list files (`path [label [split]]` per
    line; a line naming an existing file is that file, spaces and all; tabs separate
    fields otherwise), Kinetics CSVs (label,youtube_id,time_start,time_end,split), or
    `-` for a list on standard input (`-0`: NUL-separated). Every decoded frame is
    stored once with its presentation time (--fps resamples to a constant rate), at the
    display aspect. Rerunning adds new videos and skips unchanged ones; an interrupted
    run resumes where it stopped. Videos that fail to decode are listed in the manifest
    and skipped; damaged ones keep their readable frames, marked partial.
    """
    if sources.count("-") > 1:
        raise click.UsageError("'-' (standard input) may be given once")
    if null_separated and "-" not in sources:
        raise click.UsageError("-0/--null reads a list on standard input: give '-' as a "
                               "source")
    cfg = ExtractConfig(
        decode=DecodeParams(fps=fps, short_side=short_side or None, size=size,
                            max_frames=max_frames),
        codec=codec, quality=quality, chunk_frames=chunk_frames,
        reject_partial=reject_partial,
        index=IndexOptions(layout=layout, annotations=annotations, split=split,
                           video_root=video_root, test_fraction=test_fraction))
    with progress_bar(total=0, desc="extract") as bar:
        def on_video(record):
            bar.update(1)
            bar.set_postfix_str(record["id"][-30:])

        stdin = _NullList(sys.stdin.buffer) if null_separated else sys.stdin
        result = extract(list(sources), output, cfg, workers=workers, force=force, prune=prune,
                         retry_errors=retry_errors, verify=verify, dry_run=dry_run,
                         stdin=stdin, null_separated=null_separated,
                         shard=parse_shard(shard) if shard else None,
                         on_plan=lambda n: bar.reset(total=n), on_video=on_video)
    if dry_run:
        ids = result.manifest["would_extract"]
        log.info("would consider %d videos for %s", len(ids), output)
        emit(result.path if shard else output, result.manifest, as_json)
        return
    metrics = result.manifest["metrics"]
    table = result.manifest["outputs"]["videos"]
    partial = [r for r in table if r.get("status") == "ok" and r.get("partial")]
    if not result.built:
        log.info("%s is up to date (%d videos)", output, metrics["videos_ok"])
    else:
        rate = metrics.get("frames_per_second")
        log.info("extracted %d videos this run%s; store holds %d usable videos, %d frames; "
                 "%d failed, %d damaged (partial)", result.extracted,
                 f" ({rate:.0f} frames/s)" if rate else "", metrics["videos_ok"],
                 metrics["frames"], metrics["videos_failed"], len(partial))
        for r in result.failed[:20]:
            log.warning("  failed: %s: %s", r["source"], r["error"])
        if len(result.failed) > 20:
            log.warning("  ... and %d more (see the manifest)", len(result.failed) - 20)
        fresh = [r for r in partial if r["id"] in result.extracted_ids]
        for r in fresh[:20]:
            log.warning("  partial: %s: kept %d frames: %s", r["source"], r["frames"],
                        "; ".join(r.get("warnings", [])[:2]))
    # stdout carries the path only when the command succeeds (a failed run prints nothing).
    if metrics["videos_ok"] == 0:
        raise VsslError(f"no video could be decoded ({metrics['videos_failed']} failed)", output)
    if strict and (metrics["videos_failed"] or partial):
        raise VsslError(f"{metrics['videos_failed']} video(s) failed, {len(partial)} damaged "
                        "(--strict)", output)
    emit(result.path if shard else output, result.manifest, as_json)


class _NullList:
    """Standard input read as text for a NUL-separated list (names in any bytes)."""

    def __init__(self, stream):
        self.stream = stream

    def read(self) -> str:
        return self.stream.read().decode(errors="surrogateescape")



def _short_side(value: int) -> int:
    if 0 < value < 8:
        raise click.BadParameter(f"{value} pixels is too small to learn from; use 0 (keep "
                                 "the size) or at least 8")
    return value
