"""DDP step time: the engine's wrapping (trainer.ddp_options: ``find_unused_parameters``
only for a config that leaves parameters unused) against ``find_unused_parameters=True``
for every method, the search of the autograd graph at every step that vssl made before.

Both run the same pretraining under ``torchrun --nproc-per-node 2`` on CPU (gloo, one
thread each), in pairs back to back (alternating which goes first). Each is timed over
--steps and over 2 steps: the difference over the extra steps is what a step costs, with
start-up and the first step left out.

Writes bench/results/ddp.json. Usage: python bench/ddp.py [--method simclr] [--steps 20]
[--pairs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, make_videos, save

ENTRY = """
import sys
from vssl_cli.engine import trainer
if sys.argv.pop(1) == "find_unused":
    trainer.ddp_options = lambda method: {"find_unused_parameters": True,
                                          "broadcast_buffers": False}
from vssl_cli.cli import main
main(sys.argv[1:])
"""


def timed_run(mode: str, store: Path, out: Path, steps: int, method: str, port: int) -> float:
    entry = out.parent / "entry.py"
    entry.write_text(ENTRY)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                    "--master-port", str(port), str(entry), mode, "-q", "pretrain", str(store),
                    "-o", str(out), *(["--recipe", "recipes/teg-ps-ucf101.toml"]
                                      if method == "teg-ps" else ["--method", method]),
                    "--backbone", "r3d18-tiny",
                    "--batch-size", "8", "-j", "0", "--set", "aug.size=64", "--set",
                    "clip_len=8", "--max-steps", str(steps), "--force"],
                   check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   capture_output=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_videos(tmp / "src" / "a", 8, 64, size="160x120")
        make_videos(tmp / "src" / "b", 8, 64, size="160x120")
        store = tmp / "s.zarr"
        subprocess.run([sys.executable, "-m", "vssl_cli", "-q", "extract", str(tmp / "src"),
                        "-o", str(store), "--short-side", "64"], check=True, cwd=ROOT)
        per_step = {"engine": [], "find_unused": []}
        for pair in range(args.pairs):
            for mode in (("engine", "find_unused") if pair % 2 == 0
                         else ("find_unused", "engine")):
                long = timed_run(mode, store, tmp / f"{mode}-long", args.steps, args.method,
                                 29600 + pair)
                short = timed_run(mode, store, tmp / f"{mode}-short", 2, args.method,
                                  29650 + pair)
                per_step[mode].append((long - short) / (args.steps - 2))
    ms = {k: [round(1000 * v, 1) for v in vals] for k, vals in per_step.items()}
    ratios = [f / s for f, s in zip(per_step["find_unused"], per_step["engine"])]
    result = {"method": args.method, "steps": args.steps, "pairs": args.pairs,
              "world_size": 2, "device": "cpu", "ms_per_step": ms,
              "speedup_engine_vs_find_unused": {"median": round(statistics.median(ratios), 3),
                                                "min": round(min(ratios), 3),
                                                "max": round(max(ratios), 3)}}
    path = save(f"ddp_{args.method}", result)
    print(path, result["ms_per_step"], result["speedup_engine_vs_find_unused"])


if __name__ == "__main__":
    main()
