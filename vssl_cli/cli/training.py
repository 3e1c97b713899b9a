"""Options shared by the training commands (pretrain, finetune) and their resolution.

Every option's default is the engine's (``TrainConfig``), shown in --help. Only options
given on the command line override a recipe; ``--set`` overrides everything.
"""
from __future__ import annotations

import click
from click.core import ParameterSource

from vssl_cli.cli.common import SEED
from vssl_cli.engine.config import AMP_MODES, OPTIMIZERS, SCHEDULES, TrainConfig

D = TrainConfig()

# (option name, config key, click kwargs)
TRAIN_OPTIONS = [
    ("--epochs", "epochs", dict(type=click.IntRange(0), help="Passes over the training videos.")),
    ("--max-steps", "max_steps", dict(type=click.IntRange(0),
                                      help="Stop after this many steps (0: --epochs decides).")),
    ("--batch-size", "batch_size", dict(type=click.IntRange(2),
                                        help="Videos per step, over all processes.")),
    ("--optimizer", "optimizer", dict(type=click.Choice(OPTIMIZERS), help="Optimiser.")),
    ("--lr", "lr", dict(type=float, help="Peak learning rate.")),
    ("--weight-decay", "weight_decay", dict(type=float, help="Weight decay (not on BN/bias).")),
    ("--schedule", "schedule", dict(type=click.Choice(SCHEDULES), help="Learning-rate schedule.")),
    ("--warmup-epochs", "warmup_epochs", dict(type=float, help="Linear warm-up length.")),
    ("--clip-grad", "clip_grad", dict(type=float, help="Max gradient norm (0: off).")),
    ("--split", "split", dict(help="Store split to train on: auto (train if the store has "
                                   "splits, else all), all, train, test, ...")),
    ("--official-split", "official_split", dict(
        type=click.IntRange(1, 3), help="Which official UCF101/HMDB51 split's train videos "
                                        "to use: 1, 2 or 3 [default: extract's --split].")),
    ("--seed", "seed", dict(type=SEED, help="Random seed (data order, augmentations, init).")),
    ("--workers", "workers", dict(type=click.IntRange(-1),
                                  help="DataLoader worker processes reading the store; -1: "
                                       "auto (CUDA: the cores less one, up to 8; CPU: none "
                                       "below 8 cores, then one per 8; the model needs "
                                       "the rest).")),
    ("--device", "device", dict(help="auto (CUDA when present), cpu, cuda, cuda:N.")),
    ("--amp", "amp", dict(type=click.Choice(AMP_MODES),
                          help="Mixed precision on CUDA (auto: bf16 if supported, else fp16).")),
    ("--checkpoint-every", "checkpoint_every", dict(type=click.IntRange(1),
                                                    help="Steps between checkpoints.")),
    ("--log-every", "log_every", dict(type=click.IntRange(1),
                                      help="Steps between metrics.jsonl records.")),
]


def train_options(f):
    for flag, key, kwargs in reversed(TRAIN_OPTIONS):
        short = ("-j",) if key == "workers" else ()
        f = click.option(*short, flag, key, default=getattr(D, key), show_default=True,
                         **kwargs)(f)
    f = click.option("--compile", "compile_", is_flag=True,
                     help="torch.compile the encoder (CUDA hosts).")(f)
    f = click.option("--tensorboard", "tensorboard", is_flag=True,
                     help="Also log the metrics to RUN/tensorboard/ (the same as --log-to "
                          "tensorboard).")(f)
    f = click.option("--log-to", "log_to", default=None, metavar="TRACKERS",
                     callback=_trackers,
                     help="Also log metrics, config and pictures to these trackers, comma "
                          "separated: tensorboard, mlflow (local mlruns/ beside the run, or "
                          "MLFLOW_TRACKING_URI), wandb (offline unless logged in). Each needs "
                          "its package: pip install 'vssl[mlflow]'.")(f)
    f = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key (TOML value), e.g. --set lr=0.01 "
                          "--set aug.size=64 --set params.tau=0.2. Repeatable.")(f)
    f = click.option("--recipe", type=click.Path(dir_okay=False), default=None,
                     help="TOML file of settings (see recipes/); options given on the "
                          "command line win over it, --set over both.")(f)
    f = click.option("--resume", is_flag=True,
                     help="Continue the interrupted (or finished) run at OUTPUT even if "
                          "its configuration differs (same id resumes automatically).")(f)
    return f


def _trackers(ctx, param, value):
    if value is None:
        return None
    from vssl_cli.engine.trackers import parse
    return parse(value)


def explicit_options(ctx: click.Context, names: list[str]) -> dict:
    """The training options the user typed (not defaults), as config keys."""
    out = {}
    for flag, key, _ in TRAIN_OPTIONS:
        if ctx.get_parameter_source(key) in (ParameterSource.COMMANDLINE,
                                             ParameterSource.ENVIRONMENT):
            out[key] = ctx.params[key]
    for name in names:
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                              ParameterSource.ENVIRONMENT):
            out[name] = ctx.params[name]
    if ctx.params.get("compile_"):
        out["compile"] = True
    if ctx.params.get("tensorboard"):
        out["tensorboard"] = True
    if ctx.params.get("log_to"):
        out["log_to"] = ctx.params["log_to"]
    return out


def convention_sets(spec: dict, size: bool = False) -> list[str]:
    """``--set`` items that train with the input convention of the encoder described by
    ``spec`` (its manifest's ``outputs.encoder``): its channel order, mean and std, and
    with ``size`` its clip size. The user's own --set items come after and win."""
    from vssl_cli.models.saved import input_convention
    c = input_convention(spec)
    items = [f"aug.mean=[{', '.join(map(repr, c['mean']))}]",
             f"aug.std=[{', '.join(map(repr, c['std']))}]", f'aug.channels="{c["channels"]}"']
    return [f"aug.size={c['size']}", *items] if size else items
