"""One training command from start to artifact: decide (no-op, resume, fresh), train,
write the model artifact. Shared by ``vssl pretrain`` and ``vssl finetune``.

The model artifact is a directory: ``manifest.json`` (kind model, resolved config,
lineage, metrics, and ``outputs.encoder``, everything needed to rebuild and feed the
encoder), ``encoder.pt`` (the encoder's state dict, what evaluation and export load),
``checkpoint.pt`` (the whole method with optimiser state, to continue training) and
``metrics.jsonl``. Under torchrun every process runs this; only rank 0 writes.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import torch

from vssl_cli.artifacts import (check_output, digest, expect_kind, input_ids, lineage,
                                load_manifest, new_manifest)
from vssl_cli.data.dataset import ClipDataset
from vssl_cli.engine import device as dev
from vssl_cli.engine.run import CHECKPOINT, CURVES, ENCODER, METRICS, RunDir
from vssl_cli.engine.tensorboard import FOLDER as TENSORBOARD
from vssl_cli.engine.trackers import tracker_names
from vssl_cli.engine.trainer import train
from vssl_cli.errors import UsageProblem
from vssl_cli.evaluate.leakage import write_train_videos
from vssl_cli.methods.base import Method
from vssl_cli.models.weights_file import sha256_of
from vssl_cli.torch_io import save_atomic

log = logging.getLogger("vssl")

# Keys that change how fast a run goes or how often it reports, not what it learns.
NOT_IN_ID = ("workers", "device", "log_every", "checkpoint_every", "compile", "tensorboard",
             "log_to")


@dataclasses.dataclass
class Outcome:
    path: str
    manifest: dict
    built: bool


def run_id(config: dict, inputs: list[dict]) -> str:
    # Settings added later leave out their defaults, so earlier runs keep their ids.
    semantic = {k: v for k, v in config.items() if k not in NOT_IN_ID
                and not (k == "official_split" and v is None)}
    semantic["aug"] = {k: v for k, v in config["aug"].items()
                       if not (k == "channels" and v == "rgb")}
    return digest({"kind": "model", "config": semantic, "inputs": input_ids(inputs)})


def load_frames(frames: str) -> tuple[dict, dict]:
    manifest = expect_kind(load_manifest(frames), "frames", frames)
    return manifest, lineage(frames, manifest)


def _prepare(run: RunDir, run_manifest: dict, force: bool, resume: bool) -> None:
    """Rank 0: keep a partial run to resume, or start a fresh one."""
    partial = run.partial_manifest()
    seed = None
    if force:
        keep = False
    elif resume:
        keep = partial is not None and run.has_checkpoint()
        if not keep:
            done = run.finished_manifest()
            if done is None or not (run.final / CHECKPOINT).exists():
                raise UsageProblem("--resume: no interrupted or finished run to resume",
                                   run.final)
            seed = run.final / CHECKPOINT
            log.info("continuing the finished run's training from its last checkpoint")
        elif partial.get("id") != run_manifest["id"]:
            log.info("resuming an interrupted run although the configuration changed")
    else:
        keep = (partial is not None and partial.get("id") == run_manifest["id"]
                and run.has_checkpoint())
        if partial is not None and not keep:
            log.info("discarding an interrupted run of a different configuration (%s)",
                     run.partial)
    run.start(run_manifest, keep_partial=keep, seed_checkpoint=seed)


def fit(build: Callable[[], Method], config: dict, inputs: list[dict], frames: str,
        output: str, *, force: bool = False, resume: bool = False, progress=None,
        extra_outputs: dict | None = None, prepare_model: Callable[[Method], None] | None = None,
        dataset_ids: list[str] | None = None,
        finalize: Callable[[Method, str], dict] | None = None,
        trained_before: tuple[set[str], bool] | None = None) -> Outcome:
    """Train the method ``build()`` returns on ``frames`` and write the artifact at
    ``output`` (see the module docstring). ``prepare_model`` runs on a fresh (not
    resumed) model, e.g. to load pretrained weights before finetuning; ``finalize(method,
    device)`` runs on rank 0 after training and returns extra metrics (e.g. test scores).
    ``trained_before``: (video ids, whether complete) the starting weights already trained
    on; the artifact lists them with its own training videos (evaluate/leakage.py)."""
    d = dev.dist_from_env()
    check_output(output, "model", [i["path"] for i in inputs])
    manifest = new_manifest("model", config, inputs, id=run_id(config, inputs))
    run = RunDir(output)
    done = run.finished_manifest()
    if done is not None and done["id"] == manifest["id"] and not (force or resume):
        log.info("%s is up to date", output)
        return Outcome(output, done, False)
    device = dev.resolve_device(config["device"], d.local_rank)
    dev.init_distributed(d, device)
    if d.main:
        _prepare(run, manifest, force, resume)
    dev.barrier()

    torch.manual_seed(config["seed"])
    method = build()
    if prepare_model is not None:
        prepare_model(method)
    dataset = ClipDataset(frames, method.view_sampler(), config["split"], config["seed"],
                          dataset_ids, config.get("official_split"))
    method.attach_dataset(len(dataset))
    log.info("%s: %d training videos, %s on %s", config["method"], len(dataset),
             config["backbone"], device)
    if d.main:
        run.tracker_setup = (tracker_names(config), config, manifest["id"])
    try:
        result = train(method, dataset, config, run if d.main else None, progress)
    except BaseException:
        run.close(ok=False)
        raise

    if d.main:
        if finalize is not None:
            result.metrics.update(finalize(method, result.device))
        save_atomic({k: v.detach().cpu() for k, v in method.encoder.state_dict().items()},
                    run.partial / ENCODER, "encoder weights")
        weights = sha256_of(run.partial / ENCODER)
        earlier, known = trained_before or (set(), True)
        trained = [r["id"] for r in dataset.videos] if result.metrics["steps"] else []
        train_videos = write_train_videos(run.partial, trained, earlier, known)
        official = config.get("official_split") or dataset.store.extracted_split()
        if official:                         # which official split's train videos these are
            train_videos["official_split"] = official
        manifest = new_manifest("model", config, inputs, id=manifest["id"],
                                device=result.device, outputs={
                                    "encoder": {"file": ENCODER, **method.encoder_spec(),
                                                "sha256": weights},
                                    "checkpoint": CHECKPOINT, "metrics_log": METRICS,
                                    "train_videos": train_videos,
                                    **_pictures(run), **(extra_outputs or {})},
                                metrics=result.metrics)
        trackers = run.close_trackers()
        if trackers:
            manifest["outputs"]["trackers"] = trackers
        run.finish(manifest)
    dev.barrier()
    dev.shutdown_distributed()
    if not d.main:
        return Outcome(output, manifest, True)
    return Outcome(output, load_manifest(run.final), True)



def _pictures(run: RunDir) -> dict:
    """What a person can look at in the run, for the manifest."""
    out = {}
    if (run.partial / CURVES).exists():
        out["curves"] = CURVES
    if (run.partial / TENSORBOARD).is_dir():
        out["tensorboard"] = TENSORBOARD
    return out
