"""`vssl probe`: linear-probe accuracy of a frozen encoder."""
from __future__ import annotations

import click
import numpy as np

from vssl_cli.cli.common import SEED, FiniteFloat, emit, log
from vssl_cli.safe_io import read_bytes
from vssl_cli.cli.evaluation import (base_config, eval_options, guard_overlap, recorded,
                                     setup, split_names, train_test_features)


@click.command("probe")
@eval_options("probe")
@click.option("--l2", type=FiniteFloat(0), default=None,
              help="L2 penalty of the linear classifier [default: chosen by 3-fold "
                   "cross-validation on the train split].")
@click.option("--crops", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="Spatial crops per test clip: 1 (centre) or 3 (start, centre and end of "
                   "the longer side: the N clips x 3 crops test of PySlowFast/MMAction2).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed.")
@click.option("--task", type=click.Choice(["classify", "boundary"]), default="classify",
              show_default=True, help="classify: linear probe; boundary: event boundary "
                                      "detection from feature change (needs --boundaries).")
@click.option("--boundaries", type=click.Path(dir_okay=False), default=None,
              help="Ground-truth boundaries (synth.json, or {video: [frames]} JSON).")
@click.option("--hop", type=click.IntRange(1, 10**6), default=1, show_default=True,
              help="Frames between scored positions (boundary task).")
@click.option("--rel-dis", type=click.FloatRange(0, 1, min_open=True), default=0.05,
              show_default=True, help="Match tolerance as a share of the video length "
                                      "(boundary task; GEBD uses 0.05).")
def probe_command(run, frames, output, clips, clip_len, stride, train_split, test_split,
                  official_split, allow_overlap, batch_size, workers, device, force, as_json,
                  l2, crops, seed, task, boundaries, hop, rel_dis):
    """Fit a linear classifier on RUN's frozen features of the train split of --data and
    report test accuracy; print the evaluation directory.

    Test videos are classified by the softmax averaged over --clips uniformly spaced
    centre-cropped clips (top-1/top-5, also for the middle clip alone), with per-class
    accuracy in the manifest and confusion.png beside it.

    --task boundary scores every frame by how much the clip after it differs from the clip
    before it, picks the peak threshold with the best F1 on the train split and reports
    test F1 at --rel-dis (written to RUN/probe-boundary by default).
    """
    if task == "boundary":
        return _boundary(run, frames, output, clip_len, stride, train_split, test_split,
                         device, force, as_json, boundaries, hop, rel_dis, official_split,
                         allow_overlap)
    from vssl_cli.evaluate.artifact import inputs_for, write_eval
    from vssl_cli.evaluate.maps import map_2d
    from vssl_cli.evaluate.plots import confusion_png, embedding_png
    from vssl_cli.evaluate.probe import linear_probe
    model, frames_m, out, dev, amp = setup(run, frames, output, "probe", device)
    classes = frames_m["outputs"].get("classes", [])
    config = {**base_config("linear_probe", model, clips, clip_len, stride, train_split,
                            test_split, official_split), "l2": l2, "seed": seed,
              **({"crops": int(crops)} if crops != "1" else {})}
    config.update(guard_overlap(model, frames, frames_m, config, allow_overlap))

    def compute(tmp):
        train, test = train_test_features(model, frames, config, dev, amp, batch_size, workers)
        metrics, confusion = linear_probe(train, test, classes, l2, seed)
        np.savetxt(tmp / "confusion.csv", confusion, fmt="%d", delimiter=",",
                   header=",".join(classes))
        confusion_png(confusion, classes, tmp / "confusion.png",
                      f"linear probe top-1 {metrics['top1']:.3f}")
        embedding_png(map_2d(test.mean(), seed), test.labels, classes, tmp / "embedding.png",
                      f"{len(test.ids)} {config['test_split']} videos (t-SNE of the "
                      f"{config['clips']}-clip mean features), top-1 {metrics['top1']:.3f}")
        return metrics

    manifest, built = write_eval(out, config, inputs_for(model, frames, frames_m),
                                 recorded(compute, config), force, str(dev))
    if built:             # into the tracker runs the model logged to (--log-to), if any
        from pathlib import Path

        from vssl_cli.engine.trackers import log_evaluation
        log_evaluation(model.manifest, [Path(out, "confusion.png"), Path(out, "embedding.png")],
                       Path(out).name)
    m = manifest["metrics"]
    log.info("linear probe: top-1 %.3f, top-5 %.3f (%d clips), 1 clip %.3f",
             m["top1"], m["top5"], m["clips"], m["top1_1clip"])
    emit(out, manifest, as_json)


def _boundary(run, frames, output, clip_len, stride, train_split, test_split, device, force,
              as_json, boundaries, hop, rel_dis, official_split=None, allow_overlap=False):
    import hashlib
    import json

    from vssl_cli.cli.common import progress_bar
    from vssl_cli.errors import UsageProblem, VsslError
    from vssl_cli.evaluate import boundary as gebd
    from vssl_cli.evaluate.artifact import inputs_for, write_eval
    from vssl_cli.store import open_store
    if not boundaries:
        raise UsageProblem("--task boundary needs --boundaries FILE")
    model, frames_m, out, dev, _ = setup(run, frames, output, "probe-boundary", device)
    truth = gebd.load_boundaries(boundaries)
    config = {**base_config("boundary", model, 1, clip_len, stride, train_split, test_split,
                            official_split),
              "hop": hop, "rel_dis": rel_dis,
              "boundaries_sha1": hashlib.sha1(read_bytes(boundaries, "boundaries")).hexdigest()}
    config.update(guard_overlap(model, frames, frames_m, config, allow_overlap))
    train_name, test_name = split_names(config)

    def compute(tmp):
        encoder = model.encoder().eval().to(dev)
        scored = {}
        with open_store(frames, frames_m) as store:
            for split, name in ((train_split, train_name), (test_split, test_name)):
                records = [(r, gebd.truth_for(r, truth)) for r in store.split(name)]
                records = [(r, t) for r, t in records if t is not None]
                if not records:
                    raise VsslError(f"no {split} video has ground-truth boundaries in "
                                    f"{boundaries}", frames)
                scored[split] = []
                with progress_bar(len(records), f"boundary {split}") as bar:
                    for r, t in records:
                        times, scores = gebd.score_video(
                            encoder, model.spec, store, r["id"], config["clip_len"],
                            config["stride"], hop, dev)
                        scored[split].append({"id": r["id"], "frames": r["frames"],
                                              "truth": t, "times": times, "scores": scores})
                        bar.update(1)
        threshold = gebd.best_threshold(scored[train_split], rel_dis)
        metrics = {**gebd.f1_at(scored[test_split], threshold, rel_dis),
                   "threshold": threshold, "videos": len(scored[test_split]),
                   "train_f1": gebd.f1_at(scored[train_split], threshold, rel_dis)["f1"]}
        (tmp / "boundaries.json").write_text(json.dumps(
            {v["id"]: {"truth": v["truth"],
                       "predicted": gebd.peaks(v["times"], v["scores"], threshold).tolist()}
             for v in scored[test_split]}, indent=1))
        return metrics

    manifest, _ = write_eval(out, config, inputs_for(model, frames, frames_m),
                             recorded(compute, config), force, str(dev))
    m = manifest["metrics"]
    log.info("boundary F1 %.3f (precision %.3f, recall %.3f) at rel. distance %.2f",
             m["f1"], m["precision"], m["recall"], rel_dis)
    emit(out, manifest, as_json)
