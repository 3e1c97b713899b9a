"""Linear probe: a linear classifier on frozen, standardised clip features.

Every uniformly spaced clip of a training video is one training example; a test video's
prediction is the softmax averaged over its clips (the papers' N-clip protocol). The
classifier is fit full-batch with L-BFGS on cross-entropy plus an L2 penalty, which is
deterministic and needs no learning-rate tuning. The penalty is chosen by 3-fold
cross-validation over training videos (all clips of a video in the same fold), as
linear-evaluation protocols do, unless one is given.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vssl_cli.evaluate.features import Features
from vssl_cli.errors import VsslError


def fit_linear(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float = 1e-3,
               max_iter: int = 300, seed: int = 0) -> tuple[torch.nn.Linear, np.ndarray,
                                                             np.ndarray]:
    """Returns (classifier, mean, std) of the standardisation it expects."""
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std).float()
    yt = torch.from_numpy(y).long()
    model = torch.nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=max_iter,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(xt), yt) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model, mean, std


@torch.no_grad()
def clip_probabilities(model, mean, std, clips: np.ndarray) -> np.ndarray:
    """(N, n_clips, D) features -> (N, n_clips, C) softmax."""
    n, k, d = clips.shape
    x = torch.from_numpy((clips.reshape(-1, d) - mean) / std).float()
    return F.softmax(model(x), 1).view(n, k, -1).numpy()


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, 1)[:, :k]
    return float((top == labels[:, None]).any(1).mean())


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (labels, pred), 1)
    return m


L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def choose_l2(clips: np.ndarray, labels: np.ndarray, num_classes: int, folds: int = 3,
              seed: int = 0) -> float:
    """The grid value with the best mean held-out video accuracy (ties: the larger)."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(labels)) % folds
    scores = []
    for l2 in L2_GRID:
        acc = []
        for f in range(folds):
            tr, va = fold != f, fold == f
            if len(np.unique(labels[tr])) < 2 or not va.any():
                continue
            k = clips.shape[1]
            model, mean, std = fit_linear(clips[tr].reshape(-1, clips.shape[-1]),
                                          np.repeat(labels[tr], k), num_classes, l2,
                                          max_iter=100, seed=seed)
            probs = clip_probabilities(model, mean, std, clips[va]).mean(1)
            acc.append(float((probs.argmax(1) == labels[va]).mean()))
        scores.append(np.mean(acc) if acc else 0.0)
    best = max(scores)
    return max(l2 for l2, s in zip(L2_GRID, scores) if s >= best - 1e-9)


def linear_probe(train: Features, test: Features, classes: list[str],
                 l2: float | None = None, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Metrics (top-1/5 with all clips and with the middle clip, per-class accuracy) and
    the confusion matrix (rows: true class, columns: predicted)."""
    keep_train, keep_test = train.labels >= 0, test.labels >= 0
    if keep_train.sum() == 0 or keep_test.sum() == 0:
        raise VsslError("the probe needs labelled videos in both the train and test splits")
    if len(np.unique(train.labels[keep_train])) < 2:
        raise VsslError("the probe needs at least two classes among the training videos")
    clips = train.clips[keep_train]
    n_clips = clips.shape[1]
    if l2 is None:
        l2 = choose_l2(clips, train.labels[keep_train], len(classes), seed=seed)
    x = clips.reshape(-1, clips.shape[-1])
    y = np.repeat(train.labels[keep_train], n_clips)
    model, mean, std = fit_linear(x, y, len(classes), l2, seed=seed)
    probs = clip_probabilities(model, mean, std, test.clips[keep_test])
    labels = test.labels[keep_test]
    video = probs.mean(1)
    middle = probs[:, test.middle_view]
    pred = video.argmax(1)
    confusion = confusion_matrix(pred, labels, len(classes))
    per_class = {c: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
                 for i, c in enumerate(classes)}
    train_acc = float((clip_probabilities(model, mean, std, clips).mean(1).argmax(1)
                       == train.labels[keep_train]).mean())
    metrics = {"top1": topk_accuracy(video, labels, 1), "top5": topk_accuracy(video, labels, 5),
               "top1_1clip": topk_accuracy(middle, labels, 1),
               "top5_1clip": topk_accuracy(middle, labels, 5),
               "mean_class_accuracy": float(np.mean([v for v in per_class.values()
                                                     if v is not None])),
               "train_top1": train_acc, "clips": n_clips, "test_crops": test.crops,
               "l2": l2,
               "train_videos": int(keep_train.sum()), "test_videos": int(keep_test.sum()),
               "per_class": per_class}
    return metrics, confusion
