"""`vssl retrieve`: nearest-neighbour video retrieval with a frozen encoder."""
from __future__ import annotations

import json
import zipfile

import click
import numpy as np

from vssl_cli.cli.common import emit, log
from vssl_cli.cli.evaluation import (base_config, eval_options, guard_overlap, recorded,
                                     setup, train_test_features)
from vssl_cli.errors import VsslError

FEATURES = "features.npz"
EXAMPLES = "examples.png"
EXAMPLE_QUERIES, EXAMPLE_NEIGHBOURS = 8, 5


@click.command("retrieve")
@eval_options("retrieve")
@click.option("--query", "queries", multiple=True, metavar="VIDEO",
              help="Print the nearest gallery videos to VIDEO (a video id in --data or a "
                   "video file) as JSON lines instead of the artifact path. Repeatable.")
@click.option("--top", type=click.IntRange(1, 10**6), default=10, show_default=True,
              help="Neighbours printed per --query.")
def retrieve_command(run, frames, output, clips, clip_len, stride, train_split, test_split,
                     official_split, allow_overlap, batch_size, workers, device, force,
                     as_json, queries, top):
    """Retrieve train videos (gallery) for each test video (query) of --data by cosine
    similarity of RUN's features; report R@1/5/10/20 and print the evaluation directory.

    A video's feature is the mean over --clips uniformly spaced clips (R@k is also
    reported for the middle clip alone). The gallery and query features are kept in
    features.npz, so --query reuses them.
    """
    from vssl_cli.evaluate.artifact import inputs_for, write_eval
    from vssl_cli.evaluate.retrieval import KS, nearest, recall_at
    model, frames_m, out, dev, amp = setup(run, frames, output, "retrieve", device)
    config = {**base_config("retrieval", model, clips, clip_len, stride, train_split,
                            test_split, official_split), "metric": "cosine"}
    config.update(guard_overlap(model, frames, frames_m, config, allow_overlap))

    def compute(tmp):
        gallery, query = train_test_features(model, frames, config, dev, amp, batch_size,
                                             workers)
        metrics = {"gallery_videos": len(gallery.ids), "query_videos": len(query.ids),
                   "clips": clips}
        for name, n in ((f"{clips}clip", None), ("1clip", 1)):
            _, idx = nearest(query.mean(n), gallery.mean(n), max(KS), device=dev)
            metrics[name] = recall_at(query.labels, gallery.labels, idx)
        metrics.update(metrics[f"{clips}clip"])
        _examples(tmp / EXAMPLES, frames, frames_m, query, gallery, dev, metrics["R@1"],
                  clips)
        np.savez(tmp / FEATURES, gallery_ids=np.array(gallery.ids),
                 gallery_labels=gallery.labels, gallery=gallery.mean(),
                 query_ids=np.array(query.ids), query_labels=query.labels,
                 query=query.mean())
        return metrics

    manifest, built = write_eval(out, config, inputs_for(model, frames, frames_m),
                                 recorded(compute, config), force, str(dev))
    m = manifest["metrics"]
    log.info("retrieval (%d clips): %s", clips,
             ", ".join(f"{k} {m[k]:.3f}" for k in ("R@1", "R@5", "R@10", "R@20") if k in m))
    if not queries:
        emit(out, manifest, as_json)
        return
    from vssl_cli.evaluate.query import embed_query
    saved = load_features(f"{out}/{FEATURES}")
    classes = frames_m["outputs"].get("classes", [])
    for q in queries:
        vector = embed_query(q, model, frames, frames_m, saved, config, dev)
        scores, idx = nearest(vector[None], saved["gallery"], top, device=dev)
        hits = [{"id": str(saved["gallery_ids"][i]), "score": round(float(s), 4),
                 "label": _label(classes, int(saved["gallery_labels"][i]))}
                for s, i in zip(scores[0], idx[0])]
        click.echo(json.dumps({"query": q, "neighbours": hits}))


def load_features(path: str) -> dict:
    """The features a retrieval saved, checked: arrays only (no pickles), of the shapes and
    types a query needs. A file edited or damaged since is one line."""
    from vssl_cli.safe_io import check_regular
    check_regular(path, "saved features")
    try:
        with np.load(path, allow_pickle=False) as f:
            saved = {f"{part}{k}": f[f"{part}{k}"] for part in ("gallery", "query")
                     for k in ("", "_ids", "_labels")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        said = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VsslError(f"saved features are damaged ({said}); rerun with --force",
                        path) from None
    for part in ("gallery", "query"):
        vectors, ids, labels = (saved[f"{part}{k}"] for k in ("", "_ids", "_labels"))
        if not (vectors.ndim == 2 and vectors.dtype.kind == "f" and np.isfinite(vectors).all()
                and ids.ndim == labels.ndim == 1 and len(ids) == len(labels) == len(vectors)
                and labels.dtype.kind in "iu" and ids.dtype.kind in "US"):
            raise VsslError(f"saved features are damaged ({part}: shapes or types do not "
                            "fit); rerun with --force", path)
    return saved


def _label(classes: list[str], index: int) -> str | None:
    if index < 0 or index >= len(classes):
        return None
    return classes[index]


def _examples(path, frames: str, frames_m: dict, query, gallery, device, r1: float,
              clips: int) -> None:
    """examples.png: a seeded sample of test queries, each with its nearest gallery videos
    (middle frames, class and similarity; green when the class matches)."""
    from vssl_cli.evaluate.plots import retrieval_examples_png
    from vssl_cli.evaluate.retrieval import nearest
    from vssl_cli.store import open_store
    classes = frames_m["outputs"].get("classes", [])
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(len(query.ids), min(EXAMPLE_QUERIES, len(query.ids)),
                                replace=False))
    scores, idx = nearest(query.mean()[picked], gallery.mean(),
                          min(EXAMPLE_NEIGHBOURS, len(gallery.ids)), device=device)
    with open_store(frames, frames_m) as store:
        def middle(video_id):
            return store.read(video_id, [store.num_frames(video_id) // 2])[0]
        rows = [{"frame": middle(query.ids[q]),
                 "label": _label(classes, int(query.labels[q])) or "-",
                 "neighbours": [{"frame": middle(gallery.ids[g]), "score": float(s),
                                 "label": _label(classes, int(gallery.labels[g])) or "-"}
                                for s, g in zip(scores[i], idx[i])]}
                for i, q in enumerate(picked)]
    retrieval_examples_png(rows, path, f"nearest train videos of {len(rows)} test videos "
                                       f"({clips}-clip mean features, cosine); R@1 {r1:.3f}")
