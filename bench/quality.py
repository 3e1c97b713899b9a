"""The learning-quality guard: does a change make any method learn less motion?

Every method trains on a held-out motion set and is scored by a linear probe over 3 clips
and over the middle clip, and retrieval R@1 (3 clips), beside random init and the
supervised ceiling (random init finetuned with the labels). The set (SYNTH below): 10
motion classes (5 reversed pairs), 200 videos each (split 1: 1,330 train, 670 test), a
shape of random form and colours over one of 8 procedural backgrounds, placed and sized
alike for every class on a wrapping frame and moving 1.5x synth's usual speed, so
appearance varies per video and says nothing about the class; only motion does.
r3d18-tiny at 32 px (recipes/demo-tiny.toml on whole frames, the per-method settings of
bench/methods.py).

Pinned: every run uses one PyTorch thread and one loader worker however many run at once
(the thread count alone changes a run's floating-point order), the probe is deterministic
(L-BFGS), the seeds are fixed; a rerun repeats every figure, so what is left is the seed.

    python bench/quality.py                  # measure, print the table (quality_run.json)
    python bench/quality.py --check          # ... and fail against quality.json
    python bench/quality.py --update         # ... and make this run the reference

``--check`` (``make bench-quality``) fails when a method's mean falls below its stored
mean by more than the stored spread between its seeds (at least TOLERANCE), or when a
method that learned beyond random init in the reference (by more than the seed spreads) no
longer beats it; the run is kept in quality_check.json.
``--update`` stores a reference only when the labels learn the set (LEARNABLE), random
init does not solve it (RANDOM_AT_MOST) and some method learns beyond random init (else
there is nothing to lose). The labels learn this set (0.874) and random init does not
(0.132); the methods train on whole frames (WHOLE_FRAMES: the recipe's crops kept them at
chance), on which TCLR and TeG-PS learn beyond random init at this budget: see
docs/benchmarks.md, "Learning quality".
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from common import RESULTS, ROOT, save
from methods import RECIPE, RUNNABLE, SUPERVISED_SETS, method_of, metrics, set_flags

SIZE = 32          # what the encoder sees (rendered at 48, scaled down by extract)
SYNTH = ["--size", 48, "--frames", 32, "--videos-per-class", 200, "--placement", "free",
         "--speed", 1.5]
# The recipe's 2 warmup epochs are for its 30; at this budget they would be half the run
# (TCLR, 4 epochs: probe 0.176 and 0.199 with them, random init 0.154).
# Whole frames: at 32 px and ~330 steps the recipe's crops of 30-100% keep the methods at
# chance (TCLR, seed 0, 4 epochs: 0.107 with the recipe's augmentation, 0.142 with its
# crops alone, 0.221 with no augmentation, 0.318 with its colour augmentation alone;
# docs/benchmarks.md, "Learning quality"). The crops' own rule has exact tests.
WHOLE_FRAMES = ["aug.scale=[1.0,1.0]"]
# The recipe relative to the checkout that trains (vssl runs there): the settings' digest
# and the stored record do not depend on where the clone lives.
PRETRAIN = ["--recipe", RECIPE.relative_to(ROOT), "--set", f"aug.size={SIZE}",
            "--set", "warmup_epochs=0.5", *set_flags(WHOLE_FRAMES), "-j", 1]
# The supervised ceiling: the labels alone, without augmentation (whole frames, no colour
# jitter, blur or grey), no dropout, lr 2e-3. The finetune's crops and colour jitter
# together kept the labels at chance for the whole budget (a 660-video version of the
# set, 15 epochs: test 0.135 with both, 0.79 with crops alone, 0.74 with jitter alone,
# 0.84 with neither; docs/benchmarks.md, "Learning quality").
SUPERVISED = [*WHOLE_FRAMES, "aug.jitter_p=0", "aug.blur_p=0", "aug.gray_p=0",
              "params.dropout=0", "lr=0.002", "batch_size=16", "warmup_epochs=0.5"]
EVAL = ["--clips", 3, "--clip-len", 8, "--stride", 2, "-j", 1]
# Epochs per method: equal for the methods (the guard compares each with itself), so that
# every method and seed fits about 15 minutes on one core of this 2-core machine (two runs
# at once; TCLR, the slowest, sets it). The supervised row: 10 epochs (830 steps, ~6
# minutes), enough for both seeds to pass LEARNABLE. Random init trains for none.
EPOCHS = {"random": 0, "supervised": 10, "simclr": 4, "tclr": 4, "ctrlaug": 4, "vthcl": 4,
          "teg-ps": 4}
METRICS = ("top1", "top1_1clip", "R@1")
TOLERANCE = 0.02   # the least drop the guard allows, whatever the stored spread
# A reference is only worth guarding when the set is learnable at this budget and random
# init does not already solve it.
LEARNABLE = 0.85   # the supervised ceiling's probe (3 clips) at least
RANDOM_AT_MOST = 0.30


# Where the vssl that trains comes from: this checkout, or --train-code (a worktree of
# another commit, to set its methods beside today's under today's evaluation).
TRAIN_ROOT = ROOT
THREADS = 1        # --threads: another count only to measure what it moves


def vssl(*args, root: Path = ROOT) -> str:
    """One vssl command (of the checkout at ``root``) on one PyTorch thread (pinned:
    results must not depend on how many jobs share the machine)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    proc = subprocess.run([sys.executable, "-m", "vssl_cli", "-q", *map(str, args)], cwd=root,
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"vssl {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip()


def code_key(root: Path) -> str:
    """The commit of ``root`` and a digest of its uncommitted changes: runs are cached per
    code version, never reused across one."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=root, capture_output=True).stdout
    diff = git("diff", "HEAD", "--", "vssl_cli", "recipes")
    return git("rev-parse", "--short", "HEAD").decode().strip() + (
        "-" + hashlib.sha256(diff).hexdigest()[:8] if diff else "")


def settings_key() -> str:
    """A digest of how this script trains and evaluates (PRETRAIN, the methods' settings,
    epochs, the ceiling's and the probe's options)."""
    settings = [PRETRAIN, RUNNABLE, SUPERVISED_SETS, SUPERVISED, EPOCHS, EVAL]
    return hashlib.sha256(json.dumps(settings, default=str).encode()).hexdigest()[:8]


def runs_folder(work: Path, synth: Path, root: Path, threads: int) -> Path:
    """Where the runs of this set, code version, benchmark settings and thread count are
    cached: a changed set (SYNTH), code or setting trains anew instead of reusing another's
    runs."""
    set_id = json.loads((synth / "synth.json").read_text())["id"]
    return (work / f"{set_id}-{code_key(root)}-{settings_key()}"
            / ("" if threads == 1 else f"threads{threads}"))


def random_init(seed: int, frames: Path, out: Path) -> Path:
    """r3d18-tiny as SimCLR's recipe builds it, after zero steps."""
    return Path(vssl("pretrain", frames, *PRETRAIN, "--method", "simclr", "--seed", seed,
                     "-o", out, "--epochs", 0, root=TRAIN_ROOT))


def train(method: str, seed: int, frames: Path, work: Path) -> Path:
    """The pretrained (or, for supervised, label-finetuned) model of ``method``."""
    out = work / f"{method}-s{seed}"
    if method == "random":
        return random_init(seed, frames, out)
    if method == "supervised":    # random init finetuned with the labels: the ceiling
        start = random_init(seed, frames, work / f"init-s{seed}")   # its own: runs in parallel
        sets = set_flags([*SUPERVISED_SETS, *SUPERVISED])
        return Path(vssl("finetune", start, "--data", frames, "-o", out, "--epochs",
                         EPOCHS[method], "--seed", seed, "--set", f"aug.size={SIZE}", *sets,
                         "-j", 1, root=TRAIN_ROOT))
    settings = RUNNABLE[method]
    name = [] if "--method" in settings else ["--method", method]
    return Path(vssl("pretrain", frames, *PRETRAIN, *name, *settings, "--seed", seed,
                     "-o", out, "--epochs", epochs_of(method), root=TRAIN_ROOT))


def measure(method: str, seed: int, frames: Path, work: Path) -> dict:
    run = train(method, seed, frames, work)
    probe = metrics(vssl("probe", run, "--data", frames, *EVAL))
    retrieve = metrics(vssl("retrieve", run, "--data", frames, *EVAL))
    m = metrics(run)
    return {"method": method, "seed": seed, "top1": probe["top1"],
            "top1_1clip": probe["top1_1clip"], "R@1": retrieve["R@1"],
            "train_seconds": round(m.get("wall_s", 0.0), 1)}


def ablations() -> list[str]:
    """The variants of the guard's methods in bench/methods.py (a loss term off, TeG with
    its fine-grained term, SimCLR on TCLR's encoder, ...): they say why a method falls
    short on this set, and are never part of the reference."""
    guarded = {method_of(m) for m in EPOCHS if m in RUNNABLE}
    return [n for n in RUNNABLE if n not in EPOCHS and method_of(n) in guarded]


def epochs_of(name: str) -> int:
    """A guard method's epochs; an ablation trains as long as the guard method it varies."""
    if name in EPOCHS:
        return EPOCHS[name]
    return next(EPOCHS[m] for m in EPOCHS if m in RUNNABLE and method_of(m) == method_of(name))


def parse_epochs(text: str) -> dict[str, int]:
    """``simclr=12,tclr=4`` as {method: epochs}; the runs then cache under their own
    settings (EPOCHS is part of ``settings_key``)."""
    out = {}
    for item in filter(None, text.split(",")):
        method, _, n = item.partition("=")
        if method not in [*EPOCHS, *ablations()] or not n.isdigit():
            raise ValueError(f"--epochs {item!r}: want METHOD=N with METHOD one of "
                             + ", ".join([*EPOCHS, *ablations()]))
        out[method] = int(n)
    return out


def summarise(runs: list[dict]) -> dict:
    """Per method: the mean of each metric over seeds, their spread (max - min), their
    standard deviation, the standard error of the mean and the seeds' own figures."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"])
        out[method] = {"epochs": epochs_of(method), "seeds": mine,
                       "mean": {k: float(np.mean([r[k] for r in mine])) for k in METRICS},
                       "spread": {k: float(np.ptp([r[k] for r in mine])) for k in METRICS},
                       "std": {k: float(np.std([r[k] for r in mine])) for k in METRICS},
                       "sem": {k: float(np.std([r[k] for r in mine], ddof=1)
                                        / np.sqrt(len(mine))) if len(mine) > 1 else 0.0
                               for k in METRICS},
                       "train_seconds": float(np.mean([r["train_seconds"] for r in mine]))}
    return out


def pooled(paths: list[Path]) -> dict:
    """The runs of several results files (the reference and runs of other seeds) summarised
    as one: they must share the benchmark's settings and each method's epochs, and not
    repeat a method's seed."""
    runs, epochs, setting = {}, {}, None
    for path in paths:
        data = json.loads(path.read_text())
        if setting is not None and data["benchmark"] != setting:
            raise SystemExit(f"{path}: another benchmark setting than {paths[0]}")
        setting = data["benchmark"]
        for method, row in data["methods"].items():
            if epochs.setdefault(method, row["epochs"]) != row["epochs"]:
                raise SystemExit(f"{path}: {method} trained {row['epochs']} epochs, "
                                 f"{epochs[method]} in an earlier file")
            for run in row["seeds"]:
                if (method, run["seed"]) in runs:
                    raise SystemExit(f"{path}: {method} seed {run['seed']} is in an earlier "
                                     "file too")
                runs[method, run["seed"]] = run
    rows = summarise(list(runs.values()))
    for method, row in rows.items():
        row["epochs"] = epochs[method]
    return rows


def failures(now: dict, ref: dict) -> list[str]:
    """What the guard refuses: a method below its stored figure by more than its stored
    seed spread (at least TOLERANCE), or one of the reference's learners (``learners``: above
    random init by more than the seed spreads) no longer above random init. A method that
    sat within random init's noise in the reference is held to its own figure only."""
    problems = []
    learned = set(learners(ref))
    for method, row in now.items():
        old = ref.get(method)
        if old is None:
            continue
        for k in METRICS:
            allowed = max(old["spread"][k], TOLERANCE)
            if row["mean"][k] < old["mean"][k] - allowed:
                problems.append(f"{method} {k}: {row['mean'][k]:.3f}, stored "
                                f"{old['mean'][k]:.3f} - {allowed:.3f} allowed")
        if method in learned and "random" in now:
            k = "top1"
            if row["mean"][k] <= now["random"]["mean"][k]:
                problems.append(f"{method} {k}: {row['mean'][k]:.3f}, no longer above random "
                                f"init ({now['random']['mean'][k]:.3f})")
    return problems


def unfit_reference(rows: dict) -> list[str]:
    """Why these rows cannot be the guard's reference (empty when they can)."""
    if "supervised" not in rows or "random" not in rows:
        return ["a reference needs the supervised and random rows"]
    problems = []
    if (sup := rows["supervised"]["mean"]["top1"]) < LEARNABLE:
        problems.append(f"the labels reach {sup:.3f} (< {LEARNABLE}): the set is not "
                        "learnable at this budget")
    if (rand := rows["random"]["mean"]["top1"]) > RANDOM_AT_MOST:
        problems.append(f"random init reaches {rand:.3f} (> {RANDOM_AT_MOST}): appearance "
                        "or placement gives the classes away")
    if not learners(rows):
        problems.append("no method learns beyond random init at this budget: there is "
                        "nothing for the guard to lose")
    return problems


def learners(rows: dict) -> list[str]:
    """The methods whose 3-clip probe beats random init's by more than both rows' seed
    spreads (at least TOLERANCE): those a change can be caught making worse."""
    if "random" not in rows:
        return []
    rand = rows["random"]
    out = []
    for method, row in rows.items():
        if method in ("random", "supervised"):
            continue
        margin = max(row["spread"]["top1"], rand["spread"]["top1"], TOLERANCE)
        if row["mean"]["top1"] > rand["mean"]["top1"] + margin:
            out.append(method)
    return out


def table(rows: dict, error: str = "std") -> str:
    """Markdown: each metric's mean +- ``error`` (std: the seeds' standard deviation; sem:
    the mean's standard error)."""
    lines = ["| method | epochs | probe, 3 clips | probe, 1 clip | R@1 | seeds (3 clips) "
             "| train s |", "|---|---|---|---|---|---|---|"]
    for method, r in rows.items():
        cell = [f"{r['mean'][k]:.3f} +- {r[error][k]:.3f}" for k in METRICS]
        seeds = ", ".join(f"{s['top1']:.3f}" for s in r["seeds"])
        lines.append(f"| {method} | {r['epochs']} | {' | '.join(cell)} | {seeds} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(EPOCHS),
                    help="comma-separated, from: " + ", ".join(EPOCHS) + "; or ablations "
                         "(not with --check or --update): " + ", ".join(ablations()))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    ap.add_argument("--work", default="/tmp/vssl-bench-quality")
    ap.add_argument("--train-code", type=Path, default=None,
                    help="train with the vssl of this checkout (e.g. `git worktree add "
                         "/tmp/old COMMIT`); evaluation stays this one's")
    ap.add_argument("--threads", type=int, default=1,
                    help="PyTorch threads per run (1 pins the results; another count "
                         "measures what it moves, not with --check or --update)")
    ap.add_argument("--epochs", default="", metavar="METHOD=N,...",
                    help="other epochs for some methods, e.g. simclr=12 for SimCLR at TCLR's "
                         "seconds (not with --check or --update)")
    ap.add_argument("--tag", default="", help="results in quality_run_TAG.json")
    ap.add_argument("--pool", nargs="+", type=Path, metavar="RESULTS",
                    help="train nothing: print the runs of these results files as one table, "
                         "mean +- standard error (e.g. quality.json and runs of more seeds)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="fail when a method falls below bench/results/quality.json")
    mode.add_argument("--update", action="store_true",
                      help="store this run as the reference (bench/results/quality.json)")
    args = ap.parse_args()
    if args.pool:
        print(table(pooled(args.pool), "sem"))
        return
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in [*EPOCHS, *ablations()]]
    if unknown:
        ap.error(f"unknown method {unknown[0]!r}; choose from "
                 f"{', '.join([*EPOCHS, *ablations()])}")
    global TRAIN_ROOT, THREADS
    TRAIN_ROOT, THREADS = (args.train_code or ROOT).resolve(), args.threads
    varied = TRAIN_ROOT != ROOT or THREADS != 1 or args.epochs or set(methods) - set(EPOCHS)
    if (args.update or args.check) and varied:
        ap.error("--train-code, --threads, --epochs and ablations measure something else: "
                 "not with --check or --update")
    try:
        EPOCHS.update(parse_epochs(args.epochs))
    except ValueError as e:
        ap.error(str(e))
    ref_path = RESULTS / "quality.json"
    if args.check and not ref_path.exists():      # before an hour of training, not after
        raise SystemExit(f"no reference to guard ({ref_path.name} is missing): --update stores "
                         "one once the set is learnable (docs/benchmarks.md, Learning quality)")
    work = Path(args.work)
    synth = Path(vssl("synth", work / "synth", *SYNTH, "-j", 2))
    frames = Path(vssl("extract", synth, "-o", work / "frames.zarr", "--short-side", SIZE))
    runs_dir = runs_folder(work, synth, TRAIN_ROOT, THREADS)
    runs_dir.mkdir(parents=True, exist_ok=True)    # older checkouts (--train-code) need it
    jobs = [(m, int(s)) for m in methods for s in args.seeds.split(",")]
    # the longest first, so that two workers finish together
    cost = {"tclr": 4, "ctrlaug": 2.5, "vthcl": 2, "teg": 2, "simclr": 1, "supervised": 0.5}
    jobs.sort(key=lambda j: -epochs_of(j[0]) * cost.get(
        method_of(j[0]) if j[0] in RUNNABLE else j[0], 0))
    runs = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(lambda j: measure(*j, frames, runs_dir), jobs):
            print(json.dumps(row), file=sys.stderr, flush=True)
            runs.append(row)
    rows = summarise(runs)
    order = {m: i for i, m in enumerate([*EPOCHS, *ablations()])}
    rows = dict(sorted(rows.items(), key=lambda kv: order[kv[0]]))
    payload = {"commit": code_key(TRAIN_ROOT), "evaluated_by": code_key(ROOT),
               "benchmark": {"synth": list(map(str, SYNTH)),
               "extract": f"--short-side {SIZE}", "pretrain": list(map(str, PRETRAIN)),
               "eval": list(map(str, EVAL)), "threads_per_run": THREADS},
               "seeds": [int(s) for s in args.seeds.split(",")], "methods": rows}
    print(table(rows))
    if args.update or not args.check:
        unfit = unfit_reference(rows) if args.update else []
        name = "quality" if args.update and not unfit else "quality_run" + (
            f"_{args.tag}" if args.tag else "")
        print(save(name, payload))
        if unfit:
            raise SystemExit("not stored as the reference: " + "; ".join(unfit))
        return
    print(save("quality_check", payload))
    problems = failures(rows, json.loads(ref_path.read_text())["methods"])
    if problems:
        raise SystemExit("learning quality fell:\n  " + "\n  ".join(problems))
    print("learning quality holds against", ref_path.name)


if __name__ == "__main__":
    main()
