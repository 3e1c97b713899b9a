"""A training run's directory: built under a hidden partial name, swapped in when done.

``RUN`` is only ever a finished run. While training, everything lives in
``.RUN.partial/`` beside it (manifest with status "running", ``checkpoint.pt``,
``metrics.jsonl``), so an existing finished run survives until its replacement is
complete, and an interrupted run can be resumed from the same place: automatically when
the configuration id matches, or with ``--resume`` when the user changed it on purpose.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from vssl_cli.artifacts import MANIFEST_NAME, load_manifest, replace_path, write_json_atomic
from vssl_cli.errors import VsslError
from vssl_cli.safe_io import LOG, finite, loads, read_text
from vssl_cli.torch_io import load_plain, save_atomic

CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.pt"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
log = logging.getLogger("vssl")


class RunDir:
    def __init__(self, final: str | os.PathLike):
        self.final = Path(os.path.abspath(final))   # `-o .` names the folder itself
        self.partial = self.final.parent / f".{self.final.name}.partial"
        self.trackers = None
        self.tracker_setup = None        # (names, config, run id), set by fit on rank 0

    def finished_manifest(self) -> dict | None:
        """The finished run's manifest, or None (missing or not a finished run)."""
        if not (self.final / MANIFEST_NAME).exists():
            return None
        manifest = load_manifest(self.final)
        return manifest if manifest.get("status", "done") == "done" else None

    def partial_manifest(self) -> dict | None:
        try:
            return loads(read_text(self.partial / MANIFEST_NAME, "manifest"))
        except (VsslError, ValueError):
            return None

    def has_checkpoint(self) -> bool:
        return (self.partial / CHECKPOINT).exists()

    def start(self, manifest: dict, keep_partial: bool, seed_checkpoint: Path | None = None):
        """Open the partial directory: kept for a resume, else started afresh. Temporary
        files of writes a kill interrupted are removed, never carried into the run."""
        if not keep_partial and self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        for leftover in self.partial.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        if seed_checkpoint is not None and not self.has_checkpoint():
            shutil.copy2(seed_checkpoint, self.partial / CHECKPOINT)
        write_json_atomic(self.partial / MANIFEST_NAME, {**manifest, "status": "running"})

    @property
    def checkpoint_path(self) -> Path:
        return self.partial / CHECKPOINT

    def save_checkpoint(self, state: dict) -> None:
        save_atomic(state, self.checkpoint_path, "checkpoint")

    def load_checkpoint(self) -> dict | None:
        """The checkpoint as plain data (never unpickled code: see torch_io)."""
        if not self.has_checkpoint():
            return None
        state = load_plain(self.checkpoint_path, "checkpoint")
        needed = {"step": int, "model": dict, "optimizer": dict, "schedule": dict,
                  "scaler": dict}
        if not isinstance(state, dict) or any(not isinstance(state.get(k), t)
                                              for k, t in needed.items()):
            raise VsslError("not a checkpoint of this run (it lacks the model, optimiser or "
                            "step)", self.checkpoint_path)
        return state

    def log(self, record: dict) -> None:
        with open(self.partial / METRICS, "a") as f:
            f.write(json.dumps(finite(record)) + "\n")
        if self.trackers is not None:
            self.trackers.log(record)

    def records(self) -> list[dict]:
        """The metrics records so far (a torn line is left out)."""
        path = self.partial / METRICS
        out = []
        if path.exists():
            for line in read_text(path, "metrics log", LOG).splitlines():
                try:
                    record = loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("step"), int):
                    out.append(record)
        return out

    def refresh_curves(self, title: str) -> None:
        """curves.png from the records so far. A picture that cannot be drawn is said on
        stderr; it never stops the training."""
        records = self.records()
        if not records:
            return
        try:
            from vssl_cli.evaluate.plots import curves_png
            curves_png(records, self.partial / CURVES, title)
        except Exception as e:   # noqa: BLE001 - matplotlib can fail in many ways
            log.warning("could not draw %s: %s", CURVES, str(e).splitlines()[0][:200])

    def open_trackers(self, start_step: int) -> None:
        """The trackers --log-to names (engine/trackers.py), continuing a resumed run's."""
        if not self.tracker_setup or not self.tracker_setup[0]:
            return
        from vssl_cli.engine.trackers import Trackers
        names, config, run_id = self.tracker_setup
        self.trackers = Trackers(names, self.partial, self.final, config, run_id, start_step)

    def close_trackers(self) -> dict:
        """Log the final pictures and close the trackers; where they are, for the
        manifest."""
        if self.trackers is None:
            return {}
        self.trackers.log_file(self.partial / CURVES)
        refs = self.trackers.state()
        self.trackers.close(ok=True)
        self.trackers = None
        return refs

    def close(self, ok: bool = True) -> None:
        if self.trackers is not None:
            self.trackers.close(ok)
            self.trackers = None

    def trim_log(self, step: int) -> None:
        """Drop records past ``step`` (written after the checkpoint a resume starts from),
        and a line a kill or a full disk tore (it would make every later rerun fail)."""
        path = self.partial / METRICS
        if not path.exists():
            return
        kept = []
        for n, line in enumerate(read_text(path, "metrics log", LOG).splitlines(), 1):
            try:
                record = loads(line)
            except ValueError:
                if line.strip():
                    log.warning("dropped a torn line %d of %s", n, path)
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        write_text_atomic(path, "".join(line + "\n" for line in kept))

    def finish(self, manifest: dict) -> None:
        write_json_atomic(self.partial / MANIFEST_NAME, {**manifest, "status": "done"})
        replace_path(self.partial, self.final)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
