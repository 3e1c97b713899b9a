"""`vssl probe`: linear-probe accuracy of a frozen encoder."""
from __future__ import annotations

import click
import numpy as np

from vssl_cli.cli.common import emit, log
from vssl_cli.cli.evaluation import base_config, eval_options, setup, train_test_features


@click.command("probe")
@eval_options("probe")
@click.option("--l2", type=click.FloatRange(0), default=None,
              help="L2 penalty of the linear classifier [default: chosen by 3-fold "
                   "cross-validation on the train split].")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def probe_command(run, frames, output, clips, clip_len, stride, train_split, test_split,
                  batch_size, workers, device, force, as_json, l2, seed):
    """Fit a linear classifier on RUN's frozen features of the train split of --data and
    report test accuracy; print the evaluation directory.

    Test videos are classified by the softmax averaged over --clips uniformly spaced
    centre-cropped clips (top-1/top-5, also for the middle clip alone), with per-class
    accuracy in the manifest and confusion.png beside it.
    """
    from vssl_cli.evaluate.artifact import inputs_for, write_eval
    from vssl_cli.evaluate.plots import confusion_png
    from vssl_cli.evaluate.probe import linear_probe
    model, frames_m, out, dev, amp = setup(run, frames, output, "probe", device)
    classes = frames_m["outputs"].get("classes", [])
    config = {**base_config("linear_probe", model, clips, clip_len, stride, train_split,
                            test_split), "l2": l2, "seed": seed}

    def compute(tmp):
        train, test = train_test_features(model, frames, config, dev, amp, batch_size, workers)
        metrics, confusion = linear_probe(train, test, classes, l2, seed)
        np.savetxt(tmp / "confusion.csv", confusion, fmt="%d", delimiter=",",
                   header=",".join(classes))
        confusion_png(confusion, classes, tmp / "confusion.png",
                      f"linear probe top-1 {metrics['top1']:.3f}")
        return metrics

    manifest, built = write_eval(out, config, inputs_for(model, frames, frames_m), compute,
                                 force, str(dev))
    m = manifest["metrics"]
    log.info("linear probe: top-1 %.3f, top-5 %.3f (%d clips), 1 clip %.3f",
             m["top1"], m["top5"], m["clips"], m["top1_1clip"])
    emit(out, manifest, as_json)
