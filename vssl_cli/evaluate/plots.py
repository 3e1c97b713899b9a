"""Figures written next to evaluation results (matplotlib, no display needed)."""
from __future__ import annotations

import numpy as np


def confusion_png(confusion: np.ndarray, classes: list[str], path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(classes)
    size = min(24.0, 2.0 + 0.35 * n)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    rows = confusion.sum(1, keepdims=True)
    ax.imshow(confusion / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    if n <= 60:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if confusion[i, j]:
                        ax.text(j, i, int(confusion[i, j]), ha="center", va="center",
                                fontsize=7, color="black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's exponential moving average, debiased so the start is not pulled to 0."""
    out, acc = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        acc = weight * acc + (1 - weight) * v
        out[i] = acc / (1 - weight ** (i + 1))
    return out


# Panels of the training curves: (title, keys). Loss terms are whatever else a method
# logs; every other kind of number gets a panel of its own.
CURVE_PANELS = [("learning rate", ["lr"]), ("clips / s", ["clips_per_s"]),
                ("data-wait share", ["data_wait"]), ("GPU memory (MiB)", ["gpu_mem_mib"])]
NOT_LOSSES = {"step", "epoch", "lr", "clips_per_s", "data_wait", "gpu_mem_mib"}


def curve_panels(records: list[dict]) -> list[tuple[str, list[str]]]:
    """The panels for these records. The weighted total gets a panel of its own beside the
    terms: with a method's weights (TCLR's official scaling sums to ~40 against terms near
    1-4) one shared axis would press every term into a flat line at the bottom."""
    logged = {k for r in records for k, v in r.items()
              if k not in NOT_LOSSES and isinstance(v, (int, float))}
    terms = sorted(logged - {"loss"})
    if "loss" not in logged:
        loss_panels = [("loss terms", terms)]
    elif terms:
        loss_panels = [("loss (weighted total)", ["loss"]), ("loss terms", terms)]
    else:
        loss_panels = [("loss", ["loss"])]
    return loss_panels + [p for p in CURVE_PANELS if any(k in r for r in records for k in p[1])]


def curves_png(records: list[dict], path, title: str) -> None:
    """Training curves from metrics.jsonl records: every loss term, the learning rate,
    clips/s and the data-wait share against step, smoothed, with the raw values faint."""
    plt = _pyplot()
    steps = np.array([r["step"] for r in records], float)
    panels = curve_panels(records)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels) + 0.6), dpi=100,
                             sharex=True, squeeze=False)
    weight = min(0.95, max(0.0, 1 - 10 / max(len(records), 1)))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    from matplotlib.ticker import FormatStrFormatter
    for ax, (name, keys) in zip(axes[:, 0], panels):
        shown = []
        for i, key in enumerate(keys):
            have = [(s, r[key]) for s, r in zip(steps, records)
                    if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
            if not have:
                continue
            x, y = (np.array(v, float) for v in zip(*have))
            shown.append(y)
            colour = colours[i % len(colours)]
            ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(x, smooth(y, weight), color=colour, linewidth=1.6,
                    label=key if len(keys) > 1 else None)
        if shown:   # a nearly constant series is drawn flat, not blown up to the full height
            lo, hi = min(v.min() for v in shown), max(v.max() for v in shown)
            mid, scale = (lo + hi) / 2, max(abs(lo), abs(hi), 1e-12)
            if hi - lo < 0.02 * scale:
                ax.set_ylim(mid - 0.05 * scale, mid + 0.05 * scale)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(loc="best", fontsize=8, ncol=min(4, len(keys)))
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def retrieval_examples_png(queries: list[dict], path, title: str) -> None:
    """One row per query: its middle frame, then its nearest gallery videos' middle frames,
    each titled with class and similarity, framed green when the class matches."""
    plt = _pyplot()
    cols = 1 + max(len(q["neighbours"]) for q in queries)
    fig, axes = plt.subplots(len(queries), cols, figsize=(1.9 * cols, 1.9 * len(queries)
                                                          + 0.5), dpi=100, squeeze=False)
    for row, q in zip(axes, queries):
        cells = [(q["frame"], f"query\n{q['label']}", "black")] + [
            (n["frame"], f"{n['label']}\n{n['score']:.2f}",
             "green" if n["label"] == q["label"] else "red") for n in q["neighbours"]]
        for ax, (frame, text, colour) in zip(row, cells):
            ax.imshow(frame)
            ax.set_title(text, fontsize=7, color=colour)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(3 if colour != "black" else 1)
        for ax in row[len(cells):]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))   # room for the title
    fig.savefig(path)
    plt.close(fig)


def embedding_png(points: np.ndarray, labels: np.ndarray, classes: list[str], path,
                  title: str) -> None:
    """A 2-D map of test videos coloured by class. Up to 40 classes get a legend; more
    get their names written at their centroids (a legend of 400 entries is unreadable)."""
    plt = _pyplot()
    present = sorted(set(int(v) for v in labels if v >= 0))
    many = len(present) > 40
    fig, ax = plt.subplots(figsize=(11 if many else 8.5, 9 if many else 6.5),
                           dpi=150 if many else 100)    # many: names readable when zoomed
    qualitative = "tab10" if len(present) <= 10 else "tab20" if len(present) <= 20 else None
    cmap = plt.get_cmap(qualitative or "nipy_spectral")
    for i, c in enumerate(present):
        mask = labels == c
        colour = cmap(i) if qualitative else cmap(i / max(1, len(present) - 1))
        name = classes[c] if c < len(classes) else str(c)
        ax.scatter(points[mask, 0], points[mask, 1], s=14 if not many else 6, color=colour,
                   label=name, alpha=0.85, linewidths=0)
        if many:
            cx, cy = points[mask].mean(0)
            ax.text(cx, cy, name, fontsize=5, ha="center", va="center", alpha=0.8)
    unknown = labels < 0
    if unknown.any():
        ax.scatter(points[unknown, 0], points[unknown, 1], s=6, color="lightgrey",
                   label="unlabelled")
    if not many:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7,
                  ncol=1 if len(present) <= 20 else 2, markerscale=1.5, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
