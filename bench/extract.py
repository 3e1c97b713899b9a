"""`vssl extract` throughput against plain ffmpeg, worker scaling, and peak memory.

Limits compared against:
- plain ffmpeg decoding the same videos with the same filters to `-f null`, at equal
  threads (sequential with all threads, and one process per core with one thread each);
- `vssl extract -j 1` for worker scaling;
- peak RSS on a short and a 10x longer video (must not grow with length).

Usage: python bench/extract.py [--videos 8] [--frames 250]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, ffmpeg_exe, make_videos, save, timed

SHORT_SIDE = 128


def plain_ffmpeg(paths, threads: int, parallel: int) -> None:
    def one(path):
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-threads", str(threads),
                        "-i", str(path), "-vf",
                        f"scale=-2:{SHORT_SIDE}:flags=area,format=rgb24", "-f", "null", "-"],
                       check=True)
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, paths))


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
    args = ap.parse_args()
    cores = args.workers
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
