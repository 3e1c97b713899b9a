"""Evaluation artifacts: a directory with a manifest (kind eval) and its figures/files,
written atomically and skipped when an identical evaluation already exists."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

from vssl_cli.artifacts import (atomic_directory, check_output, exclusive_lock, expect_kind,
                                lineage, load_manifest, new_manifest, remove_stale_partials,
                                write_json_atomic)
from vssl_cli.errors import VsslError
from vssl_cli.models.saved import load_encoder, weights_digest

log = logging.getLogger("vssl")


@dataclasses.dataclass
class Model:
    path: str
    manifest: dict
    spec: dict
    weights: str          # sha256 of the encoder's weights file

    def encoder(self):
        return load_encoder(self.path, self.spec)

    def lineage(self) -> dict:
        """The input entry of what is computed from this model: with the weights' digest,
        so that results for one set of weights are never reused for another."""
        return {**lineage(self.path, self.manifest), "weights": self.weights}


def open_model(path: str) -> Model:
    manifest = expect_kind(load_manifest(path), "model", path)
    spec = manifest.get("outputs", {}).get("encoder")
    if not spec:
        raise VsslError("model artifact has no encoder entry in its manifest", path)
    return Model(path, manifest, spec, weights_digest(path, spec))


def open_frames(path: str) -> dict:
    return expect_kind(load_manifest(path), "frames", path)


def write_eval(out: str, config: dict, inputs: list[dict], compute: Callable[[Path], dict],
               force: bool = False, device: str | None = None, kind: str = "eval"
               ) -> tuple[dict, bool]:
    """Run ``compute(tmp_dir) -> metrics`` unless ``out`` holds the same result.

    Returns (manifest, built). Also used for export artifacts (``kind="export"``). ``out``
    may only replace an artifact of the same kind (``check_output``)."""
    check_output(out, kind, [i["path"] for i in inputs])
    manifest = new_manifest(kind, config, inputs, device=device)
    if not force and Path(out, "manifest.json").exists():
        old = load_manifest(out)
        if old["id"] == manifest["id"]:
            log.info("%s is up to date", out)
            return old, False
    with exclusive_lock(out):
        remove_stale_partials(out)        # of evaluations a kill interrupted
        with atomic_directory(out) as tmp:
            manifest["metrics"] = compute(tmp)
            if "train_overlap" in config:     # --allow-overlap: marked beside the figures
                manifest["metrics"]["train_overlap"] = config["train_overlap"]
            manifest["outputs"] = {"files": sorted(p.name for p in tmp.iterdir())}
            write_json_atomic(tmp / "manifest.json", manifest)
    return manifest, True


def inputs_for(model: Model, frames_path: str, frames_manifest: dict) -> list[dict]:
    return [model.lineage(), lineage(frames_path, frames_manifest)]
