"""`vssl export`: a trained encoder as TorchScript, ONNX or safetensors, or its embeddings."""
from __future__ import annotations

import os

import click
import numpy as np

from vssl_cli.artifacts import lineage, resolve_input
from vssl_cli.cli.common import emit, json_option, log, progress_bar
from vssl_cli.errors import UsageProblem

FORMATS = {"torchscript": "encoder.ts", "onnx": "encoder.onnx",
           "safetensors": "encoder.safetensors", "embeddings": None, "icm": None}


@click.command("export")
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), required=True,
              help="What to export.")
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False),
              help="Export directory [default: RUN/export-FORMAT].")
@click.option("--data", "frames", default=None,
              help="Frame store whose videos to embed or map (embeddings, icm).")
@click.option("--embeddings-format", type=click.Choice(["npy", "h5", "zarr"]), default="npy",
              show_default=True, help="File type of the embeddings table.")
@click.option("--split", default="all", show_default=True,
              help="Videos to embed: all, train, test, ...")
@click.option("--clips", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Uniformly spaced clips averaged per video (embeddings).")
@click.option("--videos", type=click.IntRange(1, 100000), default=8, show_default=True,
              help="Videos to draw correspondence maps for, spread over --split (icm).")
@click.option("--opset", type=click.IntRange(9, 20), default=17, show_default=True,
              help="ONNX opset (PyTorch's TorchScript-based exporter writes 9-20).")
@click.option("--batch-size", type=click.IntRange(1, 65536), default=8, show_default=True,
              help="Videos per encoder batch (embeddings).")
@click.option("-j", "--workers", type=click.IntRange(0, 1024), default=2, show_default=True,
              help="DataLoader worker processes (embeddings).")
@click.option("--device", default="auto", show_default=True,
              help="Device for embeddings: auto, cpu, cuda, cuda:N.")
@click.option("--force", is_flag=True, help="Export again even if up to date.")
@json_option
def export_command(run, fmt, output, frames, embeddings_format, split, clips, videos, opset,
                   batch_size, workers, device, force, as_json):
    """Export RUN's encoder (clips (B, 3, T, H, W), normalised as its manifest says, to
    pooled features) or the embeddings of --data's videos; print the export directory.

    TorchScript and ONNX exports are loaded back and compared with PyTorch (ONNX through
    onnxruntime when installed); the difference is recorded in the manifest.

    --format icm (VTHCL runs) draws Instance Correspondence Maps: for each of --videos
    videos, a PNG of the slow clip's frames over the same frames with the map as a heatmap.
    """
    from vssl_cli.engine.device import resolve_device
    from vssl_cli.evaluate.artifact import open_frames, open_model, write_eval
    run = resolve_input(run)
    model = open_model(run)
    out = output or os.path.join(run, f"export-{fmt}")
    inputs = [model.lineage()]
    config = {"format": fmt, "encoder": model.spec}
    frames_m = None
    if fmt in ("embeddings", "icm"):
        if not frames:
            raise UsageProblem(f"--format {fmt} needs --data FRAMES")
        if fmt == "icm" and model.manifest["config"].get("method") != "vthcl":
            raise UsageProblem(f"{run}: --format icm needs a vthcl run, not "
                               f"{model.manifest['config'].get('method')!r}")
        frames_m = open_frames(frames)
        inputs.append(lineage(frames, frames_m))
        config.update(split=split, **({"embeddings_format": embeddings_format, "clips": clips}
                                      if fmt == "embeddings" else {"videos": videos}))
    elif fmt == "onnx":
        config["opset"] = opset

    def compute(tmp):
        from vssl_cli.export import model as exporters
        encoder = model.encoder().eval() if fmt != "icm" else None
        if fmt == "torchscript":
            return exporters.to_torchscript(encoder, model.spec, tmp / FORMATS[fmt])
        if fmt == "onnx":
            return exporters.to_onnx(encoder, model.spec, tmp / FORMATS[fmt], opset)
        if fmt == "safetensors":
            return exporters.to_safetensors(encoder, model.spec, tmp / FORMATS[fmt])
        if fmt == "icm":
            return _icm(run, model, frames, frames_m, split, videos, resolve_device(device), tmp)
        return _embeddings(encoder, model, frames, frames_m, split, clips, batch_size, workers,
                           resolve_device(device), embeddings_format, tmp)

    manifest, _ = write_eval(out, config, inputs, compute, force, kind="export")
    log.info("exported %s to %s", fmt, out)
    emit(out, manifest, as_json)


def _embeddings(encoder, model, frames, frames_m, split, clips, batch_size, workers, dev, fmt,
                tmp):
    from vssl_cli.engine.device import autocast_dtype
    from vssl_cli.evaluate.features import split_features
    from vssl_cli.export.embeddings import write_embeddings
    with progress_bar(0, "embeddings") as bar:
        feats = split_features(encoder, model.spec, frames, split, clips, dev, batch_size,
                               workers, bar, autocast_dtype=autocast_dtype("auto", dev))
    records = {r["id"]: r for r in frames_m["outputs"]["videos"]}
    files = write_embeddings(tmp / "embeddings", fmt, feats.ids,
                             [records[i].get("label") for i in feats.ids],
                             [records[i].get("split") for i in feats.ids], feats.mean())
    return {"videos": len(feats.ids), "dim": int(feats.clips.shape[-1]), "files": files}


def _icm(run, model, frames, frames_m, split, videos, dev, tmp):
    from vssl_cli.evaluate.icm import load_trained_method, write_icm_images
    from vssl_cli.store import open_store
    method = load_trained_method(run, model.manifest)
    with open_store(frames, frames_m) as store:
        ids = [r["id"] for r in store.split(None if split == "all" else split)]
        if not ids:
            raise UsageProblem(f"{frames}: no videos in split {split!r}")
        chosen = [ids[i] for i in np.unique(np.linspace(0, len(ids) - 1, videos).round()
                                            .astype(int))]
        files = write_icm_images(method, store, chosen, tmp, dev)
    return {"videos": len(files), "files": files}
