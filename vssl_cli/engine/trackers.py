"""``--log-to``: the run's metrics, config and pictures in the trackers labs use.

The same scalars as metrics.jsonl go to each tracker named (any of tensorboard, mlflow,
wandb), with the resolved config as parameters and curves.png as an artifact when the run
ends. Only rank 0 logs. Each is an optional extra; a missing package is a one-line usage
error before any data is read.

- TensorBoard: ``RUN/tensorboard/`` (engine/tensorboard.py).
- MLflow: ``MLFLOW_TRACKING_URI`` when set, else a local file store ``mlruns/`` beside the
  run; experiment ``MLFLOW_EXPERIMENT_NAME`` or "vssl"; the MLflow run is named after the
  run folder.
- Weights & Biases: offline (``RUN/wandb/``, upload later with ``wandb sync``) unless the
  user has logged in (``WANDB_API_KEY`` or a netrc entry) or set ``WANDB_MODE``; project
  ``WANDB_PROJECT`` or "vssl".

A resumed run continues the same tracker runs (their ids are kept in the partial run
folder). The model manifest's ``outputs.trackers`` says where they are, so that ``vssl
probe`` can add its confusion and embedding maps to the same tracker runs.
"""
from __future__ import annotations

import json
import logging
import netrc
import os
import time
from pathlib import Path

from vssl_cli.errors import UsageProblem, VsslError, first_line

TRACKERS = ("tensorboard", "mlflow", "wandb")
STATE = "trackers.json"
log = logging.getLogger("vssl")


def parse(value: str | None) -> tuple[str, ...]:
    """``tensorboard,mlflow`` -> ("tensorboard", "mlflow"); unknown names are refused."""
    names = tuple(dict.fromkeys(n.strip() for n in (value or "").split(",") if n.strip()))
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise UsageProblem(f"--log-to: unknown tracker {unknown[0]!r}; choose from "
                           f"{', '.join(TRACKERS)}")
    return names


def tracker_names(config: dict) -> tuple[str, ...]:
    """The trackers a resolved config names: --log-to's (checked), with --tensorboard's."""
    names = parse(",".join(config.get("log_to") or ()))
    if config.get("tensorboard") and "tensorboard" not in names:
        names = ("tensorboard", *names)
    return names


def require(names) -> None:
    for name in names:
        if name == "tensorboard":
            from vssl_cli.engine.tensorboard import require as tensorboard_required
            tensorboard_required()
            continue
        try:
            __import__(name)           # each tracker's package has its name
        except ImportError:
            raise UsageProblem(f"--log-to {name} needs the {name} package: pip "
                               f"install 'vssl[{name}]'") from None


def flat(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested config as flat ``a.b`` parameters (trackers take strings)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return out


def scalars(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if k != "step"
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def mlflow_client(uri: str, file_store: bool):
    """An MlflowClient for ``uri``. ``file_store``: a local file store vssl chose (or one
    a run of it already logged to), which MLflow 3 keeps but asks to be opted in to."""
    if file_store:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


class MLflowTracker:
    name = "mlflow"

    def __init__(self, final: Path, config: dict, state: dict, run_id: str):
        chosen = os.environ.get("MLFLOW_TRACKING_URI")
        self.uri = chosen or (final.parent / "mlruns").as_uri()
        self.client = mlflow_client(self.uri, file_store=not chosen)
        if state.get("run_id"):
            self.run_id = state["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "vssl")
        experiment = self.client.get_experiment_by_name(name)
        exp_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(exp_id, run_name=final.name,
                                     tags={"vssl.run_id": run_id, "vssl.path": str(final)})
        self.run_id = run.info.run_id
        from mlflow.entities import Param
        params = [Param(k, v[:6000]) for k, v in flat(config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, record: dict) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, record["step"]) for k, v in scalars(record).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_file(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def state(self) -> dict:
        return {"tracking_uri": self.uri, "run_id": self.run_id}

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "KILLED")


def wandb_mode() -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        logged_in = netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    return "online" if logged_in else "offline"


class WandbTracker:
    name = "wandb"

    def __init__(self, folder: Path, config: dict, state: dict, run_id: str,
                 name: str | None = None):
        import wandb
        self.mode = wandb_mode()
        self.id = state.get("id") or f"{run_id}-{int(time.time())}"
        self.project = state.get("project") or os.environ.get("WANDB_PROJECT", "vssl")
        self.run = wandb.init(project=self.project, id=self.id, name=name, dir=str(folder),
                              config=config, resume="allow", mode=self.mode,
                              settings=wandb.Settings(silent=True, console="off"))

    def log(self, record: dict) -> None:
        self.run.log(scalars(record), step=record["step"])

    def log_file(self, path: Path, folder: str | None = None) -> None:
        import wandb
        key = f"{folder}/{path.stem}" if folder else path.stem
        self.run.log({key: wandb.Image(str(path))})

    def state(self) -> dict:
        return {"id": self.id, "project": self.project, "mode": self.mode}

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


class Trackers:
    """The trackers of one run (rank 0), opened in its partial folder."""

    def __init__(self, names, partial: Path, final: Path, config: dict, run_id: str,
                 start_step: int):
        self.items = []
        saved = self._saved(partial)
        for name in names:
            try:
                if name == "tensorboard":
                    from vssl_cli.engine.tensorboard import TensorBoardLog
                    self.items.append(TensorBoardLog(partial, start_step))
                elif name == "mlflow":
                    self.items.append(MLflowTracker(final, config, saved.get(name, {}),
                                                    run_id))
                elif name == "wandb":
                    self.items.append(WandbTracker(partial, config, saved.get(name, {}),
                                                   run_id, final.name))
            except Exception as e:   # noqa: BLE001 - each library fails in its own way
                self.close(ok=False)
                raise VsslError(f"--log-to {name}: could not open the tracker run: "
                                f"{first_line(e)}") from None
        self.partial = partial
        (partial / STATE).write_text(json.dumps(self.state()))

    @staticmethod
    def _saved(partial: Path) -> dict:
        try:
            saved = json.loads((partial / STATE).read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def state(self) -> dict:
        return {t.name: t.state() for t in self.items if hasattr(t, "state")}

    def log(self, record: dict) -> None:
        for tracker in self.items:
            try:
                tracker.log(record)
            except Exception as e:    # noqa: BLE001 - a tracker never stops the training
                log.warning("%s: could not log step %s: %s", getattr(tracker, "name", "tracker"),
                            record.get("step"), first_line(e))

    def log_file(self, path: Path) -> None:
        for tracker in self.items:
            if hasattr(tracker, "log_file") and path.exists():
                tracker.log_file(path)

    def close(self, ok: bool = True) -> None:
        for tracker in self.items:
            if hasattr(tracker, "state"):       # MLflow, W&B: the run's end status
                tracker.close(ok)
            else:                               # TensorBoard: just the writer
                tracker.close()
        self.items = []


def log_evaluation(model_manifest: dict, files: list[Path], folder: str) -> None:
    """Add an evaluation's pictures to the tracker runs its model logged to."""
    refs = model_manifest.get("outputs", {}).get("trackers") or {}
    if not isinstance(refs, dict):
        return
    for name, ref in refs.items():
        try:
            if name == "mlflow":
                uri = ref["tracking_uri"]
                client = mlflow_client(uri, uri.startswith("file:"))
                for f in files:
                    client.log_artifact(ref["run_id"], str(f), folder)
            elif name == "wandb":
                tracker = WandbTracker(files[0].parent, {}, ref, "", None)
                for f in files:
                    tracker.log_file(f, folder)
                tracker.close(True)
        except ImportError:
            continue
        except Exception as e:        # noqa: BLE001 - the evaluation itself succeeded
            log.warning("could not add the pictures to the model's %s run: %s", name,
                        first_line(e))
