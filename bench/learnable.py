"""Can the labels teach the tiny encoder a synth set, and what keeps them from it? (issue 26)

A benchmark that ranks self-supervised methods must first be learnable with the labels.
This finetunes r3d18-tiny from random init (bench/methods.py's supervised row: the demo
recipe, 30 epochs) on one frame store under a few training variants, and reports each
one's own 10-clip test top-1 and its last training loss and accuracy. A variant that fits
the training videos (low loss) but stays at chance on the test videos learned what tells
videos apart, not classes; one that fits neither learned nothing.

    python bench/learnable.py --store /tmp/vssl-bench-photo-free/frames.zarr \\
        --variants cvrl-aug,no-aug,crop-0.8,stride-4 --seeds 0 --tag photo_free

Writes bench/results/learnable[_TAG].json (a later run on the same store adds its rows).
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import earlier_rows, last_record, save, threads_per_job
from methods import metrics, supervised_run

# Overrides of the finetune's config per variant, on top of bench/methods.py's supervised
# row (its SUPERVISED_SETS: flips off).
VARIANTS = {
    "cvrl-aug": [],       # the recipe's augmentation: crops of 30-100% of the frame, jitter
    "no-aug": ["aug.scale=[1.0,1.0]", "aug.jitter_p=0", "aug.gray_p=0", "aug.blur_p=0"],
    "crop-0.8": ["aug.scale=[0.8,1.0]"],   # crops that rarely lose a freely placed sprite
    "stride-4": ["params.stride=4"],        # twice the motion between the frames it sees
}


def finetune(store: str, work: Path, variant: str, seed: int, epochs: int,
             threads: int) -> dict:
    """Random init (zero steps of the demo recipe) finetuned with the labels."""
    run = supervised_run(store, work / variant / f"random-s{seed}",
                         work / variant / f"sup-{epochs}ep-s{seed}", seed, epochs, threads,
                         finetune_sets=VARIANTS[variant], loader=["-j", "1"])
    m, last = metrics(run), last_record(run)
    return {"variant": variant, "seed": seed, "epochs": epochs, "test_top1": m["test_top1"],
            "train_loss": m["final_loss"], "train_acc": last.get("train_acc"),
            "steps": m["steps"], "train_videos": m["train_videos"],
            "train_seconds": m["wall_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a frame store of a labelled synth set")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated: " + ", ".join(VARIANTS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--work", default="/tmp/vssl-bench-learnable")
    ap.add_argument("--jobs", type=int, default=2, help="finetunes run at once")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    name = "learnable" + (f"_{args.tag}" if args.tag else "")
    rows = earlier_rows(name, args.store, [])
    threads = threads_per_job(args.jobs)
    store = Path(args.store).resolve()
    work = Path(args.work) / f"{store.parent.name}-{store.stem}"   # one folder per store
    jobs = [(v, int(s), args.epochs) for v in variants for s in args.seeds.split(",")]
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(lambda j: finetune(args.store, work, *j, threads), jobs):
            key = (row["variant"], row["seed"], row["epochs"])     # a rerun replaces its row
            rows = [r for r in rows if (r["variant"], r["seed"], r["epochs"]) != key] + [row]
            print(json.dumps(row), flush=True)
    print(save(name, {"store": args.store, "model": "r3d18-tiny from random init, "
                      "recipes/demo-tiny.toml, labels (bench/methods.py's supervised row)",
                      "rows": rows}))
    print("| variant | epochs | seed | test top-1 (10 clips) | train loss | train acc |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['epochs']} | {r['seed']} | {r['test_top1']:.3f} | "
              f"{r['train_loss']:.2f} | {r['train_acc']:.2f} |")


if __name__ == "__main__":
    main()
