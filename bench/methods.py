"""Every pretraining method against random initialisation on the synth dataset.

For each method: pretrain a tiny model (recipes/demo-tiny.toml plus the method's synth
settings below), then linear probe, retrieval (10 clips and 1 clip) and event boundary
F1, all with the same evaluation clips (8 frames at stride 2). Each method is compared
with a randomly initialised encoder of the same architecture (same backbone and temporal
strides, zero training steps), which is what "beats random init" means.

Frame methods (TCE) train EPOCH_SCALE times --epochs, for about the frames a clip method sees.
Writes bench/results/methods.json (or methods_<tag>.json) and prints a markdown table.
Usage: python bench/methods.py [--epochs 30] [--videos-per-class 40] [--methods a,b]
       [--seeds 0,1,2] [--jobs 2]     (the defaults are the README's table, ~2.5 h on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from common import RESULTS, ROOT, save, threads_per_job, top1_text

# Synth videos have 48 frames: settings that fit them, per method (2 local clips for TCLR
# and ctrlaug keep their cost per step within ~3x of SimCLR's on 2 CPU cores).
SETTINGS = {
    "supervised": [],      # not pretraining: the simclr encoder finetuned with the labels
    "simclr": [],
    "tclr": ["--set", "n_local=2", "--set", "stride=1", "--set", "temporal_strides=[1,2,2,1]"],
    # DAVEISHAN/TCLR's scaling (sums over batch and pairings) and its extra local NT-Xent
    "tclr-official": ["--method", "tclr", "--set", "n_local=2", "--set", "stride=1",
                      "--set", "temporal_strides=[1,2,2,1]", "--set", 'loss_scale="official"',
                      "--set", "w_local_ic=1"],
    "vthcl": ["--set", "stride=4", "--set", "alpha=2", "--set", "negatives=4096"],
    "ctrlaug": ["--set", "global_len=16", "--set", "n_local=2", "--set", "stride=1"],
    "teg": ["--set", "long_len=16", "--set", "alpha=0.9"],
    "teg-ps": ["--method", "teg", "--set", "long_len=16", "--set", "alpha=0.0"],
    "tce": ["--backbone", "resnet18-tiny", "--set", "negatives=64", "--set", "window=4"],
}
# Issue 26's ablations: a method with one loss term switched off (weight 0), run by name
# (--methods ctrlaug-no-td,...); each has its own run folders and row. TeG-PS is TeG
# without its fine-grained term; teg-fine keeps only that term.
ABLATIONS = {
    **{f"tclr-no-{t}": ["--method", "tclr", *SETTINGS["tclr"], "--set", f"w_{t}=0"]
       for t in ("ic", "ll", "gl")},
    # TCLR's instance term alone: its architecture and clips, without its temporal terms
    "tclr-ic-only": ["--method", "tclr", *SETTINGS["tclr"], "--set", "w_ll=0", "--set", "w_gl=0"],
    # SimCLR on TCLR's encoder (temporal strides 1,2,2,1: time kept to the last stage)
    "simclr-tclr-strides": ["--method", "simclr", "--set", "temporal_strides=[1,2,2,1]"],
    **{f"ctrlaug-no-{t}": ["--method", "ctrlaug", *SETTINGS["ctrlaug"], "--set", f"w_{t}=0"]
       for t in ("rc", "mi", "td")},
    "teg-fine": ["--method", "teg", "--set", "long_len=16", "--set", "alpha=1.0"],
    # VTHCL's contrast at res5 only (its levels res3 and res4 weighted 0)
    "vthcl-res5": ["--method", "vthcl", *SETTINGS["vthcl"], "--set", "level_weights=[0,0,1]"],
    # VTHCL's positive as the counterpart's embedding in this batch instead of its bank entry
    # (a random vector until the video's first visit, one epoch stale after)
    "vthcl-current": ["--method", "vthcl", *SETTINGS["vthcl"], "--set", 'positive="current"'],
}
RUNNABLE = {**SETTINGS, **ABLATIONS}


def method_of(name: str) -> str:
    """The vssl method a setting runs (teg-ps is teg with alpha 0)."""
    flags = RUNNABLE[name]
    return flags[flags.index("--method") + 1] if "--method" in flags else name


def set_flags(values) -> list[str]:
    """KEY=VALUE settings as vssl arguments, each after its ``--set``."""
    return [a for kv in values for a in ("--set", kv)]


EVAL = ["--clip-len", "8", "--stride", "2"]
# Epochs relative to --epochs, so that every method puts about as many frames through its
# encoder: a TCE step sees 2 frames of each video (anchor and positive), a SimCLR step 2
# clips of 8. At 8x the epochs TCE still trains for less time than SimCLR (2D convolutions
# on single frames); at 1x it had seen an eighth of the frames (450 steps, 20 s).
EPOCH_SCALE = {"tce": 8}


def mean_of(metrics: list[dict]) -> dict:
    return {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}


def summary(args, seeds: list[int], rows: dict) -> dict:
    return {"epochs": args.epochs, "videos_per_class": args.videos_per_class,
            "appearance": args.appearance, "order_free": args.order_free, "seeds": seeds,
            # only when free, so that the files of earlier runs still match their settings
            **({"placement": args.placement} if args.placement != "class" else {}),
            "eval": "probe/retrieve 10 clips of 8 frames at stride 2; boundary F1 at 0.05",
            "methods": rows}


def earlier_rows(tag: str, args, seeds: list[int]) -> dict:
    """The rows of an earlier run of the same setting, kept when this run covers other
    methods (a run of one method must not erase the table's other rows)."""
    path = RESULTS / f"{tag}.json"
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    same = {k: v for k, v in summary(args, seeds, {}).items() if k != "methods"}
    if any(old.get(k) != v for k, v in same.items()):
        print(f"{path.name}: an earlier run with other settings; its rows are replaced",
              file=sys.stderr)
        return {}
    return old["methods"]


def code_version() -> str:
    """The commit a row was measured with (``-dirty`` with uncommitted changes)."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout
    return git("rev-parse", "--short", "HEAD").strip() + ("-dirty" if git("status", "-s",
                                                                          "vssl_cli") else "")


def method_row(per_seed: list[dict], randoms: list[tuple[str, dict]], epochs: int) -> dict:
    """One method's figures from its seeds' runs (``epochs`` each) and the (encoder key,
    metrics) of the random encoders of the same seeds."""
    for r, (_, rand) in zip(per_seed, randoms):
        r["random"] = rand
    trained, rand = (mean_of([r[k] for r in per_seed]) for k in ("pretrained", "random"))
    # The fastest seed, like timed()'s best of n: the run least disturbed by the machine.
    row = {"encoder": randoms[0][0], "epochs": epochs, "commit": code_version(),
           "train_seconds": min(r["train_seconds"] for r in per_seed),
           "pretrained": trained, "random": rand, "seeds": per_seed,
           "beats_random_top1": trained["top1"] > rand["top1"],
           "retrieval_gain_1_to_10": trained["R@1"] - trained["R@1_1clip"]}
    if len(per_seed) > 1:
        row["top1_std"] = {k: float(np.std([r[k]["top1"] for r in per_seed]))
                           for k in ("pretrained", "random")}
    return row


def markdown_table(rows: dict, epochs: int) -> str:
    """The table docs/benchmarks.md shows; "probe top-1" averages each video's 10 clips, "probe 1
    clip" the middle clip alone; "wins" counts the seeds whose pretrained probe beats the
    random encoder of the same seed; a row trained for other than ``epochs`` says so."""
    lines = ["| method | encoder | probe top-1 | random init | wins | probe 1 clip (random) | "
             "R@1, 1 clip -> 10 | boundary F1 (random) | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        p, q = r["pretrained"], r["random"]
        wins = sum(s["pretrained"]["top1"] > s["random"]["top1"] for s in r["seeds"])
        label = f"{name}, {r['epochs']} epochs" if r.get("epochs", epochs) != epochs else name
        lines.append(f"| {label} | {r['encoder']} | {top1_text(r, 'pretrained')} | "
                     f"{top1_text(r, 'random')} | {wins} of {len(r['seeds'])} | "
                     f"{p['top1_1clip']:.3f} ({q['top1_1clip']:.3f}) | "
                     f"{p['R@1_1clip']:.3f} -> {p['R@1']:.3f} | {p['boundary_f1']:.3f} "
                     f"({q['boundary_f1']:.3f}) | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def vssl(*args, threads: int = 0) -> str:
    """Run one vssl command; ``threads`` > 0 caps its PyTorch threads (for parallel jobs)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    proc = subprocess.run([sys.executable, "-m", "vssl_cli", "-q", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"vssl {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip()


def metrics(path) -> dict:
    return json.loads(Path(path, "manifest.json").read_text())["metrics"]


def evaluate(run: Path, frames: Path, synth: Path, threads: int = 0) -> dict:
    probe = metrics(vssl("probe", run, "--data", frames, *EVAL, threads=threads))
    retrieve = metrics(vssl("retrieve", run, "--data", frames, *EVAL, threads=threads))
    gebd = metrics(vssl("probe", run, "--data", frames, "--task", "boundary", "--boundaries",
                        synth / "synth.json", "--hop", "2", *EVAL, threads=threads))
    return {"top1": probe["top1"], "top5": probe["top5"], "top1_1clip": probe["top1_1clip"],
            "R@1": retrieve["R@1"], "R@5": retrieve["R@5"],
            "R@1_1clip": retrieve["1clip"]["R@1"], "boundary_f1": gebd["f1"]}


RECIPE = ROOT / "recipes" / "demo-tiny.toml"
SUPERVISED_SETS = ["aug.flip_p=0"]   # the supervised row's finetune: synth's classes are directions


def supervised_run(frames, start: Path, out: Path, seed: int, epochs: int, threads: int = 0,
                   pretrain_args=(), finetune_sets=(), loader=()) -> Path:
    """The supervised row: the SimCLR encoder at random init (zero steps of the demo
    recipe, written to ``start``) finetuned with the labels into ``out`` under
    SUPERVISED_SETS. Shared with bench/learnable.py."""
    init = vssl("pretrain", frames, "--recipe", RECIPE, "--method", "simclr", *pretrain_args,
                "--seed", seed, *loader, "-o", start, "--epochs", 0, threads=threads)
    sets = set_flags([*SUPERVISED_SETS, *finetune_sets])
    return Path(vssl("finetune", init, "--data", frames, "-o", out, "--epochs", epochs,
                     "--seed", seed, *sets, *loader, threads=threads))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/vssl-bench-methods")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--videos-per-class", type=int, default=40)
    ap.add_argument("--methods", default=",".join(m for m in SETTINGS if m != "supervised"),
                    help="comma-separated; 'supervised' adds the same encoder trained with "
                         "the labels (what the data allows); ablations (one loss term off): "
                         + ", ".join(ABLATIONS))
    ap.add_argument("--appearance", choices=["plain", "varied", "photo"], default="plain",
                    help="plain: one background, shape and colour pair for every video, so "
                         "only motion tells videos apart; varied: synth's defaults; photo: "
                         "real photographs under a drifting camera and sprites of any "
                         "colour (vssl synth --appearance photo): appearance misleads")
    ap.add_argument("--order-free", action="store_true",
                    help="only synth's order-free classes (vssl synth --order-free): the "
                         "test for a frame model such as TCE, which averages over time")
    ap.add_argument("--placement", choices=["class", "free"], default="class",
                    help="free: every video's mean place and size drawn alike for all "
                         "classes on a wrapping frame (vssl synth --placement free), so a "
                         "clip shows its class only by its motion")
    ap.add_argument("--seeds", default="0,1,2",
                    help="comma-separated seeds (pretraining and random init); figures are "
                         "means over them, with the spread of top-1")
    ap.add_argument("--jobs", type=int, default=2,
                    help="seeds trained at once, sharing the cores (train seconds then "
                         "measure one job's share of the machine)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every pretraining (repeatable), e.g. "
                         "--set loss_scale='\"official\"' for TCLR's official scaling")
    args = ap.parse_args()
    unknown = [m for m in args.methods.split(",") if m not in RUNNABLE]
    if unknown:
        ap.error(f"unknown method {unknown[0]!r}; choose from {', '.join(RUNNABLE)}")
    work = Path(args.work)
    looks = {"plain": ["--backgrounds", 1, "--shapes", 1, "--colours", 2], "varied": [],
             "photo": ["--appearance", "photo"]}[args.appearance]
    looks += ["--order-free"] if args.order_free else []
    looks += ["--placement", args.placement] if args.placement != "class" else []
    synth = Path(vssl("synth", work / "synth", "--videos-per-class", args.videos_per_class,
                      *looks))
    frames = Path(vssl("extract", synth, "-o", work / "frames.zarr", "--short-side", "64"))
    seeds = [int(x) for x in args.seeds.split(",")]
    # Parallel jobs split the cores between them (one PyTorch thread each on 2 cores): small
    # 3D convolutions use one core better than two, so 2 jobs give ~1.6x the throughput.
    threads = threads_per_job(args.jobs) if args.jobs > 1 else 0
    loader = ["-j", "1"] if args.jobs > 1 else []

    sets = set_flags(args.sets)

    def common(name: str, seed: int) -> list:
        method = ["--method", name] if "--method" not in RUNNABLE[name] else []
        return [frames, "--recipe", RECIPE, *method, *RUNNABLE[name], *sets, "--seed", seed,
                *loader]

    def epochs_of(name: str) -> int:
        return args.epochs * EPOCH_SCALE.get(name, 1)

    def suffix(seed: int) -> str:
        return f"-s{seed}" if seed else ""   # seed 0 keeps the single-seed run names

    def training_seconds(m: dict) -> float:
        """All sessions of a resumed run; runs made before the engine kept the total
        (``wall_s``) only know their last session."""
        return m.get("wall_s", m["wall_s_this_session"])

    def encoder_key(run: Path) -> str:
        spec = json.loads((run / "manifest.json").read_text())["outputs"]["encoder"]
        return f"{spec['backbone']} strides {spec['temporal_strides'] or 'default'}"

    def pretrained(name: str, seed: int) -> dict:
        if name == "supervised":   # the same encoder trained with the labels: the ceiling
            run = supervised_run(frames, work / f"random-supervised{suffix(seed)}",
                                 work / f"supervised{suffix(seed)}", seed, args.epochs,
                                 threads, pretrain_args=sets, loader=loader)
            return {"seed": seed, "pretrained": evaluate(run, frames, synth, threads),
                    "finetune_top1": metrics(run)["test_top1"],
                    "train_seconds": round(training_seconds(metrics(run)), 1)}
        run = Path(vssl("pretrain", *common(name, seed), "-o", work / f"{name}{suffix(seed)}",
                        "--epochs", epochs_of(name), threads=threads))
        return {"seed": seed, "pretrained": evaluate(run, frames, synth, threads),
                "train_seconds": round(training_seconds(metrics(run)), 1)}

    random_evals, lock = {}, threading.Lock()

    def random_init(name: str, seed: int) -> tuple[str, dict]:
        """Zero training steps; evaluated once per (architecture, seed), shared by methods."""
        name = "simclr" if name == "supervised" else name
        run = Path(vssl("pretrain", *common(name, seed), "-o",
                        work / f"random-{name}{suffix(seed)}", "--epochs", 0, threads=threads))
        key = encoder_key(run)
        with lock:
            mine = (key, seed) not in random_evals
            result = random_evals.setdefault((key, seed), Future())
        if mine:
            try:
                result.set_result(evaluate(run, frames, synth, threads))
            except BaseException as error:
                result.set_exception(error)
                raise
        return key, result.result()

    tag = f"methods{'_' + args.tag if args.tag else ''}"
    mine = {}
    pool = ThreadPoolExecutor(args.jobs)
    names = args.methods.split(",")
    jobs = {name: ([pool.submit(pretrained, name, s) for s in seeds],
                   [pool.submit(random_init, name, s) for s in seeds]) for name in names}
    try:
        for name in names:
            mine[name] = method_row([f.result() for f in jobs[name][0]],
                                    [f.result() for f in jobs[name][1]], epochs_of(name))
            print(f"{name}: {json.dumps(mine[name])}", flush=True)
            # After every method, so a long run keeps its rows; the file is read again
            # each time, so runs of other methods at the same time keep theirs.
            rows = {**earlier_rows(tag, args, seeds), **mine}
            save(tag, summary(args, seeds, rows))
    except BaseException:
        # A failed or interrupted run: drop the queued ones instead of running them for hours.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    print(markdown_table({**earlier_rows(tag, args, seeds), **mine}, args.epochs))


if __name__ == "__main__":
    main()
