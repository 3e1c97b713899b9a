"""Where labs run it: several torchrun "nodes", a worker killed mid-run, SLURM, trackers.

Each "node" is a torchrun agent on this machine joining a c10d rendezvous on 127.0.0.1
(one CPU process each, gloo). The launch helpers are bench/cluster.py's, which measures
the same runs.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, manifest_of

sys.path.insert(0, str(ROOT / "bench"))
import cluster  # noqa: E402

STEPS = 6


def _pretrain(frames, out, steps=STEPS):
    return cluster._pretrain(Path(frames), Path(out), steps)


def _weights(run):
    return torch.load(Path(run) / "encoder.pt", weights_only=True)


def _losses(run):
    return [json.loads(line)["loss"] for line in (Path(run) / "metrics.jsonl").read_text()
            .splitlines()]


@pytest.fixture(scope="module")
def frames(tiny_frames):
    return tiny_frames


@pytest.fixture(scope="module")
def uninterrupted(frames, tmp_path_factory):
    """One node, two processes, STEPS steps: the reference the other launches must equal."""
    run = tmp_path_factory.mktemp("cluster") / "one-node"
    (proc,), _ = cluster.run_nodes(1, 2, _pretrain(frames, run))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def test_two_nodes_equal_one_process_of_the_same_global_batch(frames, tmp_path):
    """Two agents x one process: the same global batch as one process, the same clips,
    augmentations and BatchNorm statistics (global on CPU too), so after a step the
    weights agree to float32 rounding; only rank 0 prints and writes."""
    one = tmp_path / "one"
    proc = subprocess.run([sys.executable, "-m", "vssl_cli", *_pretrain(frames, one, 1)],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **cluster.ENV})
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = tmp_path / "two"
    agents, _ = cluster.run_nodes(2, 1, _pretrain(frames, two, 1))
    assert [a.returncode for a in agents] == [0, 0], agents[0].stderr[-2000:]
    assert sorted(a.stdout for a in agents) == ["", f"{two}\n"]      # rank 0 alone prints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]   # no partial, lock
    assert manifest_of(two)["metrics"]["world_size"] == 2
    a, b = _weights(one), _weights(two)
    assert max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()) <= 1e-5
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)


def test_finetuning_on_two_nodes_equals_one_process(frames, random_run, tmp_path):
    """Finetuning goes through the same engine: two nodes train what one process trains
    (dropout off: its masks are drawn per process), rank 0 alone tests and writes."""
    args = ["finetune", str(random_run), "--data", str(frames), "--max-steps", "1",
            "--batch-size", "4", "-j", "0", "--optimizer", "sgd", "--lr", "0.001",
            "--set", "params.dropout=0", "--test-clips", "1"]
    one = tmp_path / "one"
    proc = subprocess.run([sys.executable, "-m", "vssl_cli", *args, "-o", str(one)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **cluster.ENV})
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = tmp_path / "two"
    agents, _ = cluster.run_nodes(2, 1, [*args, "-o", str(two)])
    assert [a.returncode for a in agents] == [0, 0], agents[0].stderr[-2000:]
    assert sorted(a.stdout for a in agents) == ["", f"{two}\n"]
    a, b = _weights(one), _weights(two)
    assert max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()) <= 1e-5
    m1, m2 = manifest_of(one)["metrics"], manifest_of(two)["metrics"]
    assert m2["world_size"] == 2 and m1["test_top1"] == m2["test_top1"]


def test_a_killed_worker_is_restarted_and_the_run_resumes_exactly(frames, uninterrupted,
                                                                   tmp_path):
    run = tmp_path / "killed"
    proc = cluster.start(cluster.torchrun(1, 2, cluster.free_port(), _pretrain(frames, run),
                                          "--max-restarts", "1"))
    killed_at = cluster.kill_after_checkpoint(proc, run, rank=1, after_step=2)
    out, err = cluster.finish(proc, 300)
    assert proc.returncode == 0, err[-3000:]
    assert out == f"{run}\n" and "resuming from step" in err
    assert killed_at > 2
    a, b = _weights(uninterrupted), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)                 # bit for bit on CPU
    assert _losses(run) == _losses(uninterrupted)
    assert [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text()
                                   .splitlines())] == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_a_worker_that_does_not_come_back_ends_in_one_line_and_keeps_the_checkpoint(
        frames, uninterrupted, tmp_path):
    run = tmp_path / "lost"
    proc = cluster.start(cluster.torchrun(1, 2, cluster.free_port(), _pretrain(frames, run),
                                          "--max-restarts", "0"))
    cluster.kill_after_checkpoint(proc, run, rank=1, after_step=2)
    _, err = cluster.finish(proc, 300)
    assert proc.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("vssl pretrain: error")]
    assert len(ours) == 1 and "lost another training process" in ours[0], err[-3000:]
    assert "internal error" not in err
    partial = tmp_path / ".lost.partial"
    assert (partial / "checkpoint.pt").exists() and not run.exists()
    (again,), _ = cluster.run_nodes(1, 2, _pretrain(frames, run))     # the rerun resumes
    assert again.returncode == 0 and "resuming from step" in again.stderr
    a, b = _weights(uninterrupted), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- SLURM ---------------------------------------------------------------------------------

SBATCH = ROOT / "examples" / "slurm" / "pretrain-multinode.sbatch"

FAKE_SRUN = """#!/bin/bash
# srun for two local nodes: the command once per node, SLURM's per-task variables set.
while [[ "$1" == -* ]]; do shift; done          # srun's own options
pids=()
for node in 0 1; do
  SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 "$@" &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
exit $rc
"""
FAKE_SCONTROL = """#!/bin/bash
# scontrol for a two-node allocation: both nodes are this machine. `requeue` stops the
# job as SLURM does: SIGTERM to every process of it (the test starts it in a group).
echo "$*" >> "$SCONTROL_LOG"
if [ "$1 $2" = "show hostnames" ]; then echo localhost; echo localhost; fi
if [ "$1" = "requeue" ]; then kill -TERM 0; fi
"""


def _slurm_env(tmp_path, frames, run):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    return {**os.environ, **cluster.ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node[01-02]",
            "SCONTROL_LOG": str(tmp_path / "scontrol.log"), "FRAMES": str(frames),
            "RUN": str(run), "PYTHON": sys.executable, "GPUS_PER_NODE": "1",
            "PORT": str(cluster.free_port()), "CHECKPOINT_EVERY": "2", "MAX_RESTARTS": "0"}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _sbatch_args():
    return [a for a in cluster.TINY] + ["--max-steps", str(STEPS), "--optimizer", "sgd",
                                        "--lr", "0.001"]


def test_sbatch_example_runs_two_nodes_and_requeues_on_preemption(frames, uninterrupted,
                                                                  tmp_path):
    """The example's own command lines with SLURM's variables for two local nodes: the
    first job gets the time-limit signal after a checkpoint and requeues itself (its
    steps are stopped as SLURM would), the requeued job resumes, and the result equals the
    one-node run bit for bit."""
    run = tmp_path / "run"
    env = _slurm_env(tmp_path, frames, run)
    with open(tmp_path / "job.out", "w") as out, open(tmp_path / "job.err", "w") as err:
        job = subprocess.Popen(["bash", str(SBATCH), *_sbatch_args()], cwd=tmp_path,
                               env=env, stdout=out, stderr=err, start_new_session=True)
    partial = tmp_path / ".run.partial"
    deadline = time.monotonic() + 300
    while not ((partial / "checkpoint.pt").exists() and cluster.logged_steps(partial)
               and cluster.logged_steps(partial)[-1] > 2):
        assert job.poll() is None and time.monotonic() < deadline, \
            (tmp_path / "job.err").read_text()[-3000:]
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGUSR1)                      # SLURM's --signal=B:USR1@180
    job.wait(timeout=60)
    deadline = time.monotonic() + 60                      # the job's steps stop too
    while _group_alive(job.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    err = (tmp_path / "job.err").read_text()
    assert "requeue 4242" in (tmp_path / "scontrol.log").read_text()
    assert "requeueing job 4242" in err
    assert not _group_alive(job.pid)
    assert not run.exists() and (partial / "checkpoint.pt").exists()

    env["PORT"] = str(cluster.free_port())
    again = subprocess.run(["bash", str(SBATCH), *_sbatch_args()], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from step" in again.stderr and again.stdout == f"{run}\n"
    a, b = _weights(uninterrupted), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "scontrol.log").read_text().count("show hostnames node[01-02]") == 2


# ---- trackers -------------------------------------------------------------------------------

def _wandb_records(run_folder: Path) -> list:
    """The records of W&B's offline run file (its log format: a 7-byte header, then
    32 KiB blocks of records, each with a 7-byte header: CRC, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb
    (path,) = run_folder.glob("wandb/offline-run-*/run-*.wandb")
    data, out, chunks = path.read_bytes(), [], b""
    assert data[:4] == b":W&B"
    pos, block = 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:                 # block trailer: skip to the next block
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):           # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunks)
            out.append(record)
            chunks = b""
    return out


def test_trackers_log_the_same_scalars_config_and_pictures(frames, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    run = tmp_path / "run"
    env = {**os.environ, **cluster.ENV, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "vssl_cli", *_pretrain(frames, run, 3),
                           "--log-to", "mlflow,wandb", "--tensorboard"], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = manifest_of(run)
    refs = manifest["outputs"]["trackers"]
    expected = {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl")
                                                   .read_text().splitlines())}

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=refs["mlflow"]["tracking_uri"])
    assert refs["mlflow"]["tracking_uri"] == (tmp_path / "mlruns").as_uri()
    mlrun = client.get_run(refs["mlflow"]["run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "run"
    assert {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "loss")} \
        == pytest.approx(expected)
    assert mlrun.data.params["method"] == "simclr" and mlrun.data.params["aug.size"] == "32"
    assert [a.path for a in client.list_artifacts(mlrun.info.run_id)] == ["curves.png"]

    records = _wandb_records(run)
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or ".".join(i.nested_key): json.loads(i.value_json)
                     for i in r.history.item}
            if "loss" in items:
                history[items["_step"]] = items["loss"]
    assert history == pytest.approx(expected)
    config = {u.key or ".".join(u.nested_key) for r in records
              for u in (r.run.config.update if r.WhichOneof("record_type") == "run" else
                        r.config.update if r.WhichOneof("record_type") == "config" else [])}
    assert {"method", "aug", "params", "lr"} <= config
    assert list(run.glob("wandb/offline-run-*/files/media/images/curves*.png"))
    assert refs["wandb"]["mode"] == "offline"
    assert (run / "tensorboard").is_dir()

    # The probe adds its confusion and embedding maps to the model's MLflow run, from a
    # shell that never opted in to MLflow's file store (its own process: MLflow caches
    # the stores it opened in this one).
    env.pop("MLFLOW_ALLOW_FILE_STORE", None)
    probe = subprocess.run([sys.executable, "-m", "vssl_cli", "-q", "probe", str(run),
                            "--data", str(frames), "--clips", "1", "-o", str(tmp_path / "probe")],
                           cwd=ROOT, capture_output=True, text=True, env=env)
    assert probe.returncode == 0 and "could not add" not in probe.stderr, probe.stderr
    folders = [a.path for a in client.list_artifacts(mlrun.info.run_id)]
    assert "probe" in folders
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id, "probe")} == {
        "probe/confusion.png", "probe/embedding.png"}


def test_a_missing_tracker_package_is_one_line(frames, tmp_path):
    from conftest import vssl_in_process
    code, _, err = vssl_in_process("pretrain", str(frames), "-o", str(tmp_path / "r"),
                                   "--log-to", "comet")
    assert code == 2 and "unknown tracker 'comet'" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
