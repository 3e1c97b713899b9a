"""`vssl import`: published weights in, an ordinary model artifact out."""
from __future__ import annotations

import os

import click

from vssl_cli.artifacts import (atomic_directory, check_output, digest, exclusive_lock,
                                load_manifest, new_manifest, write_json_atomic)
from vssl_cli.cli.common import FiniteFloat, emit, json_option, log
from vssl_cli.errors import UsageProblem, VsslError
from vssl_cli.models import backbone_names
from vssl_cli.models.published import FORMATS

ENCODER = "encoder.pt"


class Triple(click.ParamType):
    """Three comma-separated finite numbers (a per-channel mean or std)."""

    name = "A,B,C"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            out = tuple(float(v) for v in str(value).split(","))
            if len(out) == 3 and all(abs(v) < 1e3 for v in out):
                return out
        except ValueError:
            pass
        self.fail(f"expected three numbers such as 0.45,0.45,0.45, got {value!r}", param, ctx)


def _list_formats(ctx, param, value):
    if not value or ctx.resilient_parsing:
        return
    for fmt in FORMATS.values():
        c = fmt.convention
        click.echo(f"{fmt.name}\t{fmt.backbone or '--backbone'}\t{c.clip_len}x{c.stride} "
                   f"{c.size}px {c.channels} crop {c.crop_fraction:.3g}\t{fmt.published}")
    ctx.exit()


@click.command("import")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Model artifact to write.")
@click.option("--format", "fmt", required=True, type=click.Choice(list(FORMATS)),
              help="Where the weights come from, as SOURCE:ARCH (see --list-formats).")
@click.option("--backbone", type=click.Choice(backbone_names()), default=None,
              help="vssl backbone of vssl/safetensors state dicts (a safetensors file "
                   "that vssl export wrote names it).")
@click.option("--clip-len", type=click.IntRange(1, 4096), default=None,
              help="Frames per clip evaluation feeds [default: the format's].")
@click.option("--stride", type=click.IntRange(1, 1024), default=None,
              help="Frames between clip frames [default: the format's].")
@click.option("--size", type=click.IntRange(8, 4096), default=None,
              help="Clip side in pixels [default: the format's].")
@click.option("--mean", type=Triple(), default=None, help="Per-channel mean, pixels in [0, 1].")
@click.option("--std", type=Triple(), default=None, help="Per-channel std.")
@click.option("--channels", type=click.Choice(["rgb", "bgr"]), default=None,
              help="Channel order the weights take.")
@click.option("--crop-fraction", type=FiniteFloat(0.05, 1), default=None,
              help="Side of the centre square evaluation crops, as a share of the short side.")
@click.option("--train-videos", type=click.Path(dir_okay=False), default=None,
              help="Ids of the videos the weights trained on, one per line (store ids), so "
                   "that evaluations refuse those test videos.")
@click.option("--list-formats", is_flag=True, expose_value=False, is_eager=True,
              callback=_list_formats, help="List the formats, their input and published "
                                           "figures, and exit.")
@click.option("--force", is_flag=True, help="Import again even if OUTPUT is up to date.")
@json_option
def import_command(weights, output, fmt, backbone, clip_len, stride, size, mean, std,
                   channels, crop_fraction, train_videos, force, as_json):
    """Import the published encoder WEIGHTS (a PyTorch or safetensors checkpoint) as a
    model artifact at OUTPUT, which probe, retrieve, finetune, export and pretrain --init
    take like any run; print OUTPUT.

    The file is read without running pickled code; its keys are mapped to vssl's
    backbone by the format's key map and must fit it exactly (every key, every shape).
    The manifest records the file's sha256, the key map, and the input the weights
    expect (channel order, mean, std, clip length, stride, size, crop).
    """
    from vssl_cli.models.import_weights import convert
    overrides = {k: v for k, v in dict(clip_len=clip_len, stride=stride, size=size, mean=mean,
                                       std=std, channels=channels,
                                       crop_fraction=crop_fraction).items() if v is not None}
    check_output(output, "model", [weights])
    imported = convert(weights, fmt, backbone, overrides)
    ids = _train_videos(train_videos) if train_videos else None
    config = {"import": imported.config, **({"train_videos": digest(sorted(ids))}
                                            if ids is not None else {})}
    manifest = new_manifest("model", config, [], id=digest({"kind": "model",
                                                           "config": config}))
    if not force and os.path.exists(os.path.join(output, "manifest.json")):
        old = load_manifest(output)
        if old["id"] == manifest["id"]:
            log.info("%s is up to date", output)
            return emit(output, old, as_json)
    with exclusive_lock(output), atomic_directory(output) as tmp:
        outputs = imported.write(tmp, ENCODER)
        if ids is not None:
            from vssl_cli.evaluate.leakage import write_train_videos
            outputs["train_videos"] = write_train_videos(tmp, ids, None, True)
        manifest["outputs"] = outputs
        write_json_atomic(tmp / "manifest.json", manifest)
    log.info("imported %s as %s (%d tensors)", fmt, imported.spec["backbone"],
             imported.key_map["tensors"])
    emit(output, manifest, as_json)


def _train_videos(path: str) -> list[str]:
    from vssl_cli.safe_io import read_text
    ids = [line.strip() for line in read_text(path, "training video list").splitlines()
           if line.strip() and not line.startswith("#")]
    if not ids:
        raise UsageProblem("the training video list names no video", path)
    if any("\0" in i for i in ids):
        raise VsslError("the training video list is not text", path)
    return ids
