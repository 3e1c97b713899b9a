"""`vssl pretrain`: self-supervised pretraining on a frame store."""
from __future__ import annotations

import contextlib
import json

import click

from vssl_cli.artifacts import exclusive_lock, resolve_input
from vssl_cli.cli.common import emit, json_option, log, progress_bar
from vssl_cli.cli.training import convention_sets, explicit_options, train_options
from vssl_cli.engine.config import TrainConfig, chosen_method, resolve
from vssl_cli.engine.device import dist_from_env
from vssl_cli.errors import UsageProblem
from vssl_cli.methods import METHODS, method_class
from vssl_cli.models import backbone_names


@click.command("pretrain")
@click.argument("frames")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run directory to write (the model artifact).")
@click.option("--method", type=click.Choice(sorted(METHODS)), default=TrainConfig.method,
              show_default=True, help="Pretraining method (see vssl-pretrain(1)).")
@click.option("--backbone", type=click.Choice(backbone_names()), default=TrainConfig.backbone,
              show_default=True, help="Encoder; -tiny variants are quarter width for CPUs.")
@click.option("--init", "init", default=None, metavar="RUN",
              help="Start the encoder from RUN's weights (a model artifact: another run or "
                   "`vssl import`ed published weights); heads start fresh. Takes RUN's "
                   "backbone and input convention (channel order, mean, std).")
@train_options
@click.option("--force", is_flag=True, help="Train again even if OUTPUT is up to date.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config as JSON and exit.")
@json_option
@click.pass_context
def pretrain_command(ctx, frames, output, method, backbone, init, recipe, sets, resume,
                     force, dry_run, as_json, **_):
    """Pretrain an encoder on the frame store FRAMES without labels; print OUTPUT.

    The run is built in .OUTPUT.partial and moved to OUTPUT when finished. A rerun with
    the same configuration is a no-op; an interrupted run (Ctrl-C, SIGTERM, a crash)
    resumes from its last checkpoint when rerun. Works unchanged under torchrun (DDP).
    """
    frames = resolve_input(frames)
    options = explicit_options(ctx, ["method", "backbone"])
    name = chosen_method(recipe, options.get("method"), sets, method)
    cls = method_class(name)
    start = _starting_model(init, options) if init else None
    if start is not None:
        sets = (*convention_sets(start.spec), *sets)
    config = resolve(cls.Params, recipe, options, sets)
    config["method"] = name
    if start is not None and config["backbone"] != start.spec["backbone"]:
        raise UsageProblem(f"--init {init} holds a {start.spec['backbone']} encoder; this "
                           f"run's backbone is {config['backbone']}", init)
    if dry_run:
        click.echo(json.dumps(config, indent=1))
        return
    from vssl_cli.engine.fit import fit, load_frames
    _, frames_lineage = load_frames(frames)
    main = dist_from_env().main
    lock = exclusive_lock(output) if main else contextlib.nullcontext()
    inputs, extra = [frames_lineage], {}
    if start is not None:
        from vssl_cli.evaluate.leakage import trained_on
        inputs.append(start.lineage())
        extra = {"prepare_model": lambda m: m.encoder.load_state_dict(
                     start.encoder().state_dict()),
                 "trained_before": trained_on(start.path, start.manifest) or (set(), False)}
    with lock, progress_bar(0, f"pretrain {name}", unit="step") as bar:
        outcome = fit(lambda: cls.from_config(config), config, inputs, frames,
                      output, force=force, resume=resume, progress=bar if main else None,
                      **extra)
    if not main:
        return
    m = outcome.manifest["metrics"]
    if outcome.built:
        log.info("trained %d steps (%.1f epochs)%s", m["steps"], m["epochs"],
                 f", final loss {m['final_loss']:.4f}" if "final_loss" in m else "")
    emit(output, outcome.manifest, as_json)


def _starting_model(init: str, options: dict):
    """The model artifact --init names; its backbone unless --backbone names another."""
    from vssl_cli.evaluate.artifact import open_model
    start = open_model(resolve_input(init))
    options.setdefault("backbone", start.spec["backbone"])
    return start

