"""The training engine: configuration, data order, schedules, runs, resume, DDP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, manifest_of, run_vssl
from vssl_cli.data.batches import EpochBatches
from vssl_cli.engine.config import TrainConfig, resolve
from vssl_cli.engine.device import loader_workers
from vssl_cli.engine.trainer import lr_factor, read_losses
from vssl_cli.errors import UsageProblem, VsslError
from vssl_cli.methods.simclr import SimCLRParams

TINY = ["--backbone", "r3d18-tiny", "--batch-size", "4", "-j", "0", "--set", "aug.size=32",
        "--set", "clip_len=4", "--set", "stride=1", "--warmup-epochs", "0"]


# --- configuration ---------------------------------------------------------------------

def test_config_precedence_defaults_recipe_options_set(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('method = "simclr"\nlr = 0.5\nepochs = 7\n[params]\ntau = 0.3\n'
                      '[aug]\nscale = [0.5, 1.0]\n')
    config = resolve(SimCLRParams, str(recipe), {"lr": 0.25}, ["tau=0.2", "aug.size=64"])
    assert config["epochs"] == 7                       # recipe over default
    assert config["lr"] == 0.25                        # option over recipe
    assert config["params"]["tau"] == 0.2              # --set over recipe
    assert config["aug"]["scale"] == (0.5, 1.0) and config["aug"]["size"] == 64
    assert config["batch_size"] == TrainConfig.batch_size


@pytest.mark.parametrize("bad, message", [
    (["nope=1"], "unknown config key 'nope'"),
    (["lr=fast"], "lr: expected float"),
    (["epochs=1.5"], "epochs: expected int"),
    (["train.lr=1"], "unknown config section"),
    (["optimizer=lamb"], "optimizer must be one of"),
    (["lr"], "--set expects key=value"),
    (["workers=-2"], r"workers = -2 is outside \[-1, 1024\]"),
    (["lr=nan"], "lr = nan is outside"),
    (["params.clip_len=0"], "params.clip_len = 0 is outside"),
])
def test_config_errors_are_clear(bad, message):
    with pytest.raises(UsageProblem, match=message):
        resolve(SimCLRParams, None, {}, bad)


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_shipped_recipes_resolve(recipe, tmp_path):
    proc = run_vssl("pretrain", tmp_path, "-o", tmp_path / "run", "--recipe", recipe, "--dry-run",
                    check=0)
    config = json.loads(proc.stdout)
    assert config["method"] == recipe.stem.split("-")[0] or recipe.stem == "demo-tiny"


def test_recipe_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("lr = = 1")
    with pytest.raises(UsageProblem, match="invalid recipe TOML") as e:
        resolve(SimCLRParams, str(broken), {}, [])
    assert str(broken) in str(e.value)


# --- data order and schedule -----------------------------------------------------------

def test_epoch_batches_partition_the_global_batch_over_ranks():
    whole = EpochBatches(23, 8, seed=1).batches(3)
    parts = [EpochBatches(23, 8, seed=1, rank=r, world=2).batches(3) for r in range(2)]
    assert len(whole) == 2                                     # 23 // 8, last partial dropped
    for step, batch in enumerate(whole):
        assert parts[0][step] + parts[1][step] == batch
    assert EpochBatches(23, 8, seed=1).batches(4) != whole     # a new order every epoch
    sampler = EpochBatches(23, 8, seed=1)
    sampler.start(7, total=11)                                 # epoch 3 step 1 .. epoch 5
    following = EpochBatches(23, 8, seed=1).batches
    assert list(sampler) == whole[1:] + following(4) + following(5)[:1]
    assert len(sampler) == 4


def test_auto_loader_workers_leave_the_cores_to_the_model_on_cpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loader_workers(3, cpu) == 3 and loader_workers(0, cuda) == 0     # as asked
    assert loader_workers(-1, cpu) == 2 and loader_workers(-1, cuda) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")                            # 4 cores each
    assert loader_workers(-1, cpu) == 0 and loader_workers(-1, cuda) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert loader_workers(-1, cpu) == 0 and loader_workers(-1, cuda) == 1


def test_lr_schedules():
    cfg = {"schedule": "cosine", "step_milestones": (0.5,), "step_gamma": 0.1}
    assert lr_factor(0, 100, 10, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, cfg) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(55, 100, 10, cfg) == pytest.approx(0.5)
    cfg["schedule"] = "step"
    assert lr_factor(20, 100, 0, cfg) == 1.0 and lr_factor(60, 100, 0, cfg) == pytest.approx(0.1)
    cfg["schedule"] = "constant"
    assert lr_factor(99, 100, 0, cfg) == 1.0


# --- runs --------------------------------------------------------------------------------

def _encoder(run):
    return torch.load(os.path.join(run, "encoder.pt"), weights_only=True)


def _same_weights(a, b):
    wa, wb = _encoder(a), _encoder(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_pretrain_writes_a_model_artifact_and_reruns_are_noops(tiny_frames, tmp_path):
    run = tmp_path / "run"
    proc = run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "3",
                    "--log-every", "1", check=0)
    assert proc.stdout.strip() == str(run)
    m = manifest_of(run)
    assert m["kind"] == "model" and m["status"] == "done"
    assert m["inputs"][0]["id"] == manifest_of(tiny_frames)["id"]
    assert m["config"]["params"]["clip_len"] == 4 and m["config"]["lr"] == 1e-3
    assert m["outputs"]["encoder"]["backbone"] == "r3d18-tiny"
    assert m["metrics"]["steps"] == 3 and m["metrics"]["final_loss"] > 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all({"loss", "lr", "clips_per_s", "nt_xent"} <= r.keys() for r in records)
    before = (run / "encoder.pt").stat().st_mtime_ns
    again = run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "3", check=0)
    assert again.stdout.strip() == str(run) and "up to date" in again.stderr
    assert (run / "encoder.pt").stat().st_mtime_ns == before
    # The same frames path piped on stdin; a different config trains again.
    other = run_vssl("pretrain", "-", "-o", run, *TINY, "--max-steps", "1",
                     input=f"{tiny_frames}\n", check=0)
    assert other.stdout.strip() == str(run) and manifest_of(run)["metrics"]["steps"] == 1


def test_training_learns_the_contrastive_task(tiny_frames, tmp_path):
    """NT-Xent falls well below its chance level ln(2N-1) within a few dozen steps."""
    run = tmp_path / "run"
    run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "40", "--lr", "3e-3",
             "--batch-size", "8", "--set", "aug.jitter_p=0", "--set", "aug.blur_p=0",
             "--log-every", "10", check=0, timeout=300)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    chance = torch.log(torch.tensor(15.0)).item()
    assert losses[-1] < 0.8 * chance and losses[-1] < losses[0], losses


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_pretrain_resumes_to_the_uninterrupted_result(tiny_frames, tmp_path, sig):
    args = [*TINY, "--max-steps", "8", "--checkpoint-every", "2", "--log-every", "1"]
    straight = tmp_path / "straight"
    run_vssl("pretrain", tiny_frames, "-o", straight, *args, check=0)

    run = tmp_path / "run"
    partial = tmp_path / ".run.partial"
    proc = subprocess.Popen([sys.executable, "-m", "vssl_cli", "pretrain", str(tiny_frames), "-o",
                             str(run), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (partial / "checkpoint.pt").exists():
        time.sleep(0.05)
    proc.send_signal(sig)               # checkpoints are renamed into place: whole if there
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0 or run.exists():   # done, or killed while the interpreter exited
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == (130 if sig == signal.SIGTERM else -9), err
    if sig == signal.SIGTERM:
        assert "interrupted" in err
    assert not run.exists() and (partial / "checkpoint.pt").exists()
    step = torch.load(partial / "checkpoint.pt", weights_only=False)["step"]
    assert 0 < step < 8
    resumed = run_vssl("pretrain", tiny_frames, "-o", run, *args, check=0)
    assert "resuming from step" in resumed.stderr
    assert _same_weights(run, straight)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    assert not partial.exists()
    timing = manifest_of(run)["metrics"]     # training time counts both sessions
    assert timing["wall_s"] > timing["wall_s_this_session"] > 0


def test_nonfinite_loss_stops_and_keeps_the_existing_run(tiny_frames, tmp_path):
    run = tmp_path / "run"
    run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "1", check=0)
    before = _encoder(run)
    # A diverged state (a config cannot ask for one: tau=0 is refused when resolved):
    # continue the run from a checkpoint whose weights hold a NaN.
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first].view(-1)[0] = float("nan")
    torch.save(state, run / "checkpoint.pt")
    proc = run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "2",
                    "--resume", check=1)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.stderr.count("error:") == 1 and "loss became nan at step 2" in last
    assert "checkpoint" in last
    after = _encoder(run)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert manifest_of(run)["metrics"]["steps"] == 1


def test_resume_flag_needs_something_to_resume(tiny_frames, tmp_path):
    proc = run_vssl("pretrain", tiny_frames, "-o", tmp_path / "run", *TINY, "--resume", check=2)
    assert "nothing" in proc.stderr or "no interrupted" in proc.stderr


def test_resume_extends_a_finished_run(tiny_frames, tmp_path):
    run = tmp_path / "run"
    run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "2", check=0)
    proc = run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "4", "--resume",
                    check=0)
    assert "resuming from step 2" in proc.stderr
    assert manifest_of(run)["metrics"]["steps"] == 4


def test_batch_larger_than_dataset_is_a_clear_error(tiny_frames, tmp_path):
    proc = run_vssl("pretrain", tiny_frames, "-o", tmp_path / "r", *TINY, "--batch-size", "64",
                    check=1)
    assert "lower --batch-size" in proc.stderr and not (tmp_path / "r").exists()


METHOD_ARGS = {"simclr": [], "vthcl": ["--set", "alpha=1"]}   # TINY's stride is 1


@pytest.mark.parametrize("method", ["simclr", "vthcl"])   # vthcl: banks updated by all-gather
def test_ddp_under_torchrun_with_two_cpu_processes(tiny_frames, tmp_path, method):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", "29517", "-m", "vssl_cli", "pretrain",
                           str(tiny_frames), "-o", str(run), *TINY, "--max-steps", "2",
                           "--log-every", "1", "--method", method, *METHOD_ARGS[method]],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(run)           # one path: only rank 0 prints
    # no deprecation warnings, no "find_unused_parameters=True ... did not find any"
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]
    m = manifest_of(run)
    assert m["metrics"]["world_size"] == 2 and m["metrics"]["steps"] == 2


def test_losses_are_read_at_once_and_the_first_non_finite_step_is_named():
    """The loop keeps each step's loss and parts on the device and reads them when it logs
    or checkpoints (no wait for the device every step)."""
    window = {}
    unread = [(1, torch.tensor(2.0), {"ic": torch.tensor(0.5), "threshold": -1.0}),
              (2, torch.tensor(1.0), {"ic": torch.tensor(0.25), "threshold": -0.5})]
    read_losses(unread, window, 0, None)
    assert window == {"loss": [2.0, 1.0], "ic": [0.5, 0.25], "threshold": [-1.0, -0.5]}
    assert unread == []
    unread += [(3, torch.tensor(1.0), {}), (4, torch.tensor(float("inf")), {}),
               (5, torch.tensor(float("nan")), {})]
    with pytest.raises(VsslError, match="loss became inf at step 4; .*checkpoint .step 2."):
        read_losses(unread, window, 2, None)
