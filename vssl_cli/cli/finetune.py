"""`vssl finetune`: train a pretrained encoder with labels; test with N clips."""
from __future__ import annotations

import contextlib
import json

import click

from vssl_cli.artifacts import exclusive_lock, lineage, resolve_input
from vssl_cli.cli.common import emit, json_option, log, progress_bar
from vssl_cli.cli.training import convention_sets, explicit_options, train_options
from vssl_cli.engine.config import resolve
from vssl_cli.engine.device import dist_from_env
from vssl_cli.errors import UsageProblem


@click.command("finetune")
@click.argument("run")
@click.option("--data", "frames", required=True,
              help="Frame store with labelled train and test splits.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory of the finetuned model artifact.")
@click.option("--label-fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              show_default=True, help="Share of each class's training videos used "
                                      "(e.g. 0.01, 0.1, 0.2, 0.5, 1).")
@click.option("--test-clips", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Uniformly spaced clips averaged per test video.")
@click.option("--test-crops", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="Spatial crops per test clip: 1 (centre) or 3 (the N clips x 3 crops "
                   "test of PySlowFast/MMAction2).")
@click.option("--test-split", default="test", show_default=True, help="Split tested.")
@click.option("--allow-overlap", is_flag=True,
              help="Finetune and test even when test videos were in RUN's training set "
                   "(marked in the manifest; not comparable with papers).")
@train_options
@click.option("--force", is_flag=True, help="Train again even if OUTPUT is up to date.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config as JSON and exit.")
@json_option
@click.pass_context
def finetune_command(ctx, run, frames, output, label_fraction, test_clips, test_crops,
                     test_split, allow_overlap, recipe, sets, resume, force, dry_run, as_json,
                     **_):
    """Finetune RUN's whole encoder plus a linear classifier on the labelled train split
    of --data and report N-clip test accuracy; print OUTPUT (a model artifact)."""
    from vssl_cli.evaluate.artifact import open_frames, open_model
    from vssl_cli.methods.supervised import Supervised
    run = resolve_input(run)
    model = open_model(run)
    frames_m = open_frames(frames)
    classes = frames_m["outputs"].get("classes", [])
    if len(classes) < 2:
        raise UsageProblem("finetuning needs a labelled store with at least 2 classes", frames)
    spec = model.spec
    options = explicit_options(ctx, [])
    config = resolve(Supervised.Params, recipe, options, [
        f"params.clip_len={spec['clip_len']}", f"params.stride={spec['stride']}",
        f"params.num_classes={len(classes)}", *convention_sets(spec, size=True), *sets])
    if config["params"]["num_classes"] != len(classes):
        raise UsageProblem(f"params.num_classes is the store's number of classes "
                           f"({len(classes)}); it cannot be set", frames)
    config.update(method="supervised", backbone=spec["backbone"],
                  label_fraction=label_fraction, test_clips=test_clips,
                  test_split=test_split, **({"test_crops": int(test_crops)}
                                            if test_crops != "1" else {}))
    if dry_run:
        click.echo(json.dumps(config, indent=1))
        return
    from vssl_cli.engine.fit import fit
    from vssl_cli.evaluate.finetune import clip_test, label_subset
    from vssl_cli.data.dataset import in_official_split
    from vssl_cli.evaluate.leakage import guard, trained_on
    from vssl_cli.store import open_store
    split, official = config["split"], config.get("official_split")
    test_name = in_official_split(test_split, official)
    with open_store(frames, frames_m) as store:
        test_ids = [r["id"] for r in store.split(test_name)]
    overlap = guard(model, test_ids, allow_overlap)
    ids = label_subset(frames, split, label_fraction, classes, config["seed"], official)
    inputs = [model.lineage(), lineage(frames, frames_m)]
    strides = spec.get("temporal_strides")

    def build():
        return Supervised(Supervised.Params(**config["params"]), spec["backbone"],
                          _aug(config), tuple(strides) if strides else None)

    def prepare(method):
        method.encoder.load_state_dict(model.encoder().state_dict())

    def finalize(method, device):
        import torch

        from vssl_cli.engine.device import loader_workers
        device = torch.device(device)
        scores = clip_test(method, {**spec, "clip_len": config["params"]["clip_len"]}, frames,
                           test_name, test_clips, device, classes,
                           workers=loader_workers(config["workers"], device),
                           crops=int(test_crops))
        log.info("finetuned: test top-1 %.3f (%d clips), top-5 %.3f", scores["test_top1"],
                 test_clips, scores["test_top5"])
        return {**scores, **overlap}

    main = dist_from_env().main
    with (exclusive_lock(output) if main else contextlib.nullcontext()), \
            progress_bar(0, "finetune", unit="step") as bar:
        outcome = fit(build, config, inputs, frames, output, force=force, resume=resume,
                      progress=bar if main else None, prepare_model=prepare,
                      dataset_ids=ids, finalize=finalize,
                      trained_before=trained_on(run, model.manifest) or (set(), False),
                      extra_outputs={"classes": classes, "classifier": "checkpoint.pt"})
    if main:
        emit(output, outcome.manifest, as_json)


def _aug(config):
    from vssl_cli.data.augment import AugConfig
    return AugConfig(**config["aug"])
