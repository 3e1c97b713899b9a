"""Does what the photo benchmark's encoders learned tell the classes without the per-frame
cue? (issue 26)

On ``vssl synth --appearance photo`` a video's place and size follow from its class (a
MoveRight starts on the left, a ZoomOut large), so one frame hints at the class.
``--placement free`` draws them alike for every class on a wrapping frame: only motion
is left. This probes encoders trained on the first (bench/methods.py's photo run) on the
second, with the benchmark's own linear probe (10 clips of 8 frames at stride 2, the
classifier fitted on the free set's train split): features that carry motion keep their
class information there, features of place and size lose it.

    python bench/placement.py --store /tmp/vssl-bench-photo-free/frames.zarr \\
        /tmp/vssl-bench-photo/{supervised,ctrlaug,random-simclr,random-ctrlaug}{,-s1,-s2}

Writes bench/results/placement[_TAG].json (a later run adds its models to the file's
rows) and prints a markdown table of the means over seeds.
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import earlier_rows, save, threads_per_job
from methods import EVAL, metrics, vssl
from shortcut import seed_means


def probe(model: str, store: str, jobs: int) -> dict:
    """The linear probe of ``model`` on ``store``, kept beside the model's own probes."""
    out = Path(model) / "probe-free-placement"
    threads = threads_per_job(jobs)
    m = metrics(vssl("probe", model, "--data", store, "-o", out, "-j", "1", *EVAL,
                     threads=threads))
    return {"top1": m["top1"], "top1_1clip": m["top1_1clip"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="model artifacts (vssl pretrain / finetune)")
    ap.add_argument("--store", required=True, help="the frame store of the free-placement set")
    ap.add_argument("--jobs", type=int, default=2, help="probes run at once")
    ap.add_argument("--tag", default="", help="bench/results/placement_TAG.json")
    args = ap.parse_args()
    name = "placement" + (f"_{args.tag}" if args.tag else "")
    rows = earlier_rows(name, args.store, {})
    with ThreadPoolExecutor(args.jobs) as pool:
        found = pool.map(lambda m: probe(m, args.store, args.jobs), args.models)
        for model, row in zip(args.models, found):
            rows[Path(model).name] = row
            print(Path(model).name, json.dumps(row), flush=True)
    means = seed_means(rows)
    print(save(name, {"store": args.store, "eval": "linear probe, " + " ".join(EVAL),
                      "means": means, "rows": rows}))
    print("| encoder | seeds | probe top-1, free placement | 1 clip |\n|---|---|---|---|")
    for model in sorted(means, key=lambda n: n.startswith("random-")):
        r = means[model]
        print(f"| {model} | {r['seeds']} | {r['top1']:.3f} | {r['top1_1clip']:.3f} |")


if __name__ == "__main__":
    main()
