"""A training run's directory: built under a hidden partial name, swapped in when done.

``RUN`` is only ever a finished run. While training, everything lives in
``.RUN.partial/`` beside it (manifest with status "running", ``checkpoint.pt``,
``metrics.jsonl``), so an existing finished run survives until its replacement is
complete, and an interrupted run can be resumed from the same place: automatically when
the configuration id matches, or with ``--resume`` when the user changed it on purpose.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from vssl_cli.artifacts import (MANIFEST_NAME, load_manifest, replace_path, temp_beside,
                                write_json_atomic)
from vssl_cli.errors import VsslError

CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.pt"
METRICS = "metrics.jsonl"


def save_torch_atomic(obj, path: Path) -> None:
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    def __init__(self, final: str | os.PathLike):
        self.final = Path(final)
        self.partial = self.final.parent / f".{self.final.name}.partial"

    def finished_manifest(self) -> dict | None:
        """The finished run's manifest, or None (missing or not a finished run)."""
        if not (self.final / MANIFEST_NAME).exists():
            return None
        manifest = load_manifest(self.final)
        return manifest if manifest.get("status", "done") == "done" else None

    def partial_manifest(self) -> dict | None:
        try:
            return json.loads((self.partial / MANIFEST_NAME).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def has_checkpoint(self) -> bool:
        return (self.partial / CHECKPOINT).exists()

    def start(self, manifest: dict, keep_partial: bool, seed_checkpoint: Path | None = None):
        """Open the partial directory: kept for a resume, else started afresh."""
        if not keep_partial and self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        if seed_checkpoint is not None and not self.has_checkpoint():
            shutil.copy2(seed_checkpoint, self.partial / CHECKPOINT)
        write_json_atomic(self.partial / MANIFEST_NAME, {**manifest, "status": "running"})

    @property
    def checkpoint_path(self) -> Path:
        return self.partial / CHECKPOINT

    def save_checkpoint(self, state: dict) -> None:
        save_torch_atomic(state, self.checkpoint_path)

    def load_checkpoint(self) -> dict | None:
        if not self.has_checkpoint():
            return None
        try:
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as e:   # a checkpoint is written atomically; this is real damage
            raise VsslError(f"cannot read checkpoint: {e}", self.checkpoint_path) from None

    def log(self, record: dict) -> None:
        with open(self.partial / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def trim_log(self, step: int) -> None:
        """Drop records past ``step`` (written after the checkpoint a resume starts from)."""
        path = self.partial / METRICS
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept))

    def finish(self, manifest: dict) -> None:
        write_json_atomic(self.partial / MANIFEST_NAME, {**manifest, "status": "done"})
        replace_path(self.partial, self.final)
