"""Which cue tells an encoder's clips apart, appearance or motion? (issue 26, item 3)

The instance task of SimCLR/CVRL (and of VTHCL's two tempos) asks: which clip in the batch
comes from the same video as this one? Where every video has its own background, that can
be answered without motion. This benchmark measures how much of each trained encoder's
answer comes from appearance alone. For every test video it takes two clips, one at each end
of the video (the hardest positive pair of the instance task: the camera has drifted
furthest). Each clip is centre-cropped as in evaluation and encoded twice: as it is
("moving"), and as its middle frame repeated for the clip's length ("still"), which keeps
the appearance and removes all motion.

- **same-video R@1**: each video's first clip retrieves its second among every test video's
  second clips (cosine, features centred on the test set's mean). On moving clips, this is
  how well the features solve the instance task across time. On still clips, it is how much
  of that task appearance alone solves.
- **class 1-NN**: each video's label predicted by its nearest other test video (the two
  clips averaged). Comparing moving with still shows how much of the class information in
  the features comes from motion. The classes of ``vssl synth`` differ only in motion, but
  one frame still shows where the motion has taken the sprite (its place, size, angle), so
  still clips keep some class information (random init: 0.44 on plain synth, chance 0.10).

Two more figures tell collapsed features from informative ones (a loss at chance can mean
either): **rankme**, the effective rank of the moving clips' features (Garrido et al. 2023,
RankMe: exp of the entropy of the normalised singular values; 1 when every clip maps to one
direction), and **cos_between_videos**, the mean cosine of two different videos' uncentred
features (1 when all videos look alike to the encoder).

Random-init models give the floor of each figure. It measures the models a
``bench/methods.py`` run left in its work folder; a later run with the same tag adds its
models to the file's rows. Usage:

    python bench/shortcut.py --store /tmp/vssl-bench-photo/frames.zarr \\
        /tmp/vssl-bench-photo/{supervised,simclr,vthcl,random-simclr}{,-s1,-s2} --tag photo
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from common import RESULTS, save
from vssl_cli.data.dataset import ClipDataset, collate_clips
from vssl_cli.evaluate.artifact import open_model
from vssl_cli.evaluate.features import UniformViews, encode_clips
from vssl_cli.evaluate.retrieval import nearest, recall_at


def still(clip: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W): the middle frame repeated T times (appearance without motion)."""
    t = clip.shape[2]
    return clip[:, :, t // 2:t // 2 + 1].expand_as(clip).contiguous()


@torch.no_grad()
def end_clip_features(model_dir: str, store: str, split: str) -> dict:
    """Pooled features of each test video's first and last clip, moving and still."""
    model = open_model(model_dir)
    spec, encoder = model.spec, model.encoder().eval()
    data = ClipDataset(store, UniformViews(spec["clip_len"], spec["stride"], 2), split)
    out = {"moving": [], "still": [], "labels": []}
    device = torch.device("cpu")
    for batch in DataLoader(data, batch_size=16, collate_fn=collate_clips):
        for kind, clips in (("moving", batch["clips"]),
                            ("still", [still(c) for c in batch["clips"]])):
            out[kind].append(encode_clips(encoder, clips, batch["valid_hw"], spec, device))
        out["labels"].append(batch["labels"])
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def same_video_r1(first: np.ndarray, second: np.ndarray) -> float:
    """Fraction of videos whose first clip's nearest second clip is its own."""
    own = np.arange(len(first))
    return recall_at(own, own, nearest(first, second, 1)[1], ks=(1,))["R@1"]


def class_1nn(videos: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy: each video's nearest other video."""
    idx = nearest(videos, videos, 2)[1]
    other = np.where(idx[:, 0] == np.arange(len(videos)), idx[:, 1], idx[:, 0])
    return recall_at(labels, labels, other[:, None], ks=(1,))["R@1"]


def effective_rank(x: np.ndarray) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values."""
    sv = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    p = sv / max(sv.sum(), 1e-12)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def mean_cosine_between(videos: np.ndarray) -> float:
    """Mean cosine of every pair of different rows, uncentred."""
    f = unit(videos)
    gram = f @ f.T
    n = len(f)
    return float((gram.sum() - np.trace(gram)) / (n * (n - 1)))


def measure(feats: dict) -> dict:
    # Centred on the moving clips' mean for both kinds, so still clips are measured in the
    # same coordinates as the features the evaluation sees.
    mean = feats["moving"].reshape(-1, feats["moving"].shape[-1]).mean(0)
    clips = {kind: unit(feats[kind] - mean) for kind in ("moving", "still")}
    row = {}
    for kind, f in clips.items():
        row[f"same_video_r1_{kind}"] = same_video_r1(f[:, 0], f[:, 1])
        row[f"class_1nn_{kind}"] = class_1nn(f.mean(1), feats["labels"])
    row["cos_moving_still"] = float((clips["moving"] * clips["still"]).sum(-1).mean())
    moving = feats["moving"]
    row["rankme"] = effective_rank(moving.reshape(-1, moving.shape[-1]))
    row["cos_between_videos"] = mean_cosine_between(moving.mean(1))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="model artifacts (vssl pretrain / finetune)")
    ap.add_argument("--store", required=True, help="the frame store they were trained on")
    ap.add_argument("--split", default="test")
    ap.add_argument("--tag", default="", help="bench/results/shortcut_TAG.json")
    args = ap.parse_args()
    torch.set_num_threads(1)     # a side measurement: leave the cores to any training
    name = "shortcut" + (f"_{args.tag}" if args.tag else "")
    rows = earlier_rows(RESULTS / f"{name}.json", args.store, args.split)
    for path in args.models:
        feats = end_clip_features(path, args.store, args.split)
        model = Path(path).name
        rows[model] = measure(feats)
        print(model, json.dumps({k: round(v, 3) for k, v in rows[model].items()}), flush=True)
    chance = {"same_video_r1": 1 / len(feats["labels"]),
              "class_1nn": 1 / len(np.unique(feats["labels"]))}
    means = seed_means(rows)
    print(save(name, {"store": args.store, "split": args.split, "chance": chance,
                      "means": means, "rows": rows}))
    print(markdown_table(means))


def markdown_table(means: dict) -> str:
    lines = ["| features of | seeds | same-video R@1, moving | still | class 1-NN, moving "
             "| still |", "|---|---|---|---|---|---|"]
    for name in sorted(means, key=lambda n: n.startswith("random-")):   # trained, then random
        r = means[name]
        lines.append(f"| {name} | {r['seeds']} | {r['same_video_r1_moving']:.3f} | "
                     f"{r['same_video_r1_still']:.3f} | {r['class_1nn_moving']:.3f} | "
                     f"{r['class_1nn_still']:.3f} |")
    return "\n".join(lines)


def earlier_rows(path: Path, store: str, split: str) -> dict:
    """The rows of an earlier run on the same store and split: a run adds its models to
    them (a model measured again replaces its row)."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    same = old.get("store") == store and old.get("split") == split
    return old["rows"] if same else {}


def seed_means(rows: dict) -> dict:
    """Each figure averaged over a run's seeds (bench/methods.py names them X, X-s1, ...)."""
    groups: dict[str, list[dict]] = {}
    for name, row in rows.items():
        groups.setdefault(re.sub(r"-s\d+$", "", name), []).append(row)
    # Figures added later (rankme) are averaged only where every seed's row has them.
    return {name: {k: float(np.mean([r[k] for r in group]))
                   for k in group[0] if all(k in r for r in group)}
            | {"seeds": len(group)} for name, group in groups.items()}


if __name__ == "__main__":
    main()
