"""Never destroy what is not ours, never run code from an artifact, every bad input one
line: outputs that are somebody's folder, planted pickles, keys that lead out of a store,
torn logs, dead parents, full disks, leftovers of kills, absurd manifest values."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, make_video, manifest_of, run_vssl, videos_table
from vssl_cli.data.readers import alive

TINY = ["--backbone", "r3d18-tiny", "--batch-size", "4", "-j", "0", "--set", "aug.size=32",
        "--set", "clip_len=4", "--set", "stride=1", "--warmup-epochs", "0"]


def one_error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and "internal error" not in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def users_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.txt").write_text("four years of work")
    return folder


# --- 1. an output may only replace an artifact of its own kind -------------------------

@pytest.mark.parametrize("command", ["pretrain", "finetune", "probe", "retrieve", "export",
                                     "synth", "extract --force"])
def test_an_output_that_is_somebody_s_folder_is_refused(command, tiny_frames, random_run,
                                                         synth_dir, tmp_path):
    folder = users_folder(tmp_path)
    args = {"pretrain": ["pretrain", tiny_frames, *TINY, "--max-steps", "1"],
            "finetune": ["finetune", random_run, "--data", tiny_frames, "--max-steps", "1"],
            "probe": ["probe", random_run, "--data", tiny_frames],
            "retrieve": ["retrieve", random_run, "--data", tiny_frames],
            "export": ["export", random_run, "--format", "safetensors"],
            "synth": ["synth", folder],
            "extract --force": ["extract", synth_dir, "--force"]}[command]
    out = [] if command == "synth" else ["-o", folder]
    proc = run_vssl(*args, *out, check=2)
    line = one_error_line(proc)
    assert "refusing to replace" in line and str(folder) in line
    assert (folder / "thesis.txt").read_text() == "four years of work"
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]


def test_an_output_may_never_be_an_input(tiny_frames, random_run, tmp_path):
    before = manifest_of(tiny_frames)["id"]
    proc = run_vssl("pretrain", tiny_frames, "-o", tiny_frames, *TINY, "--max-steps", "1",
                    check=2)
    assert "would replace the input" in one_error_line(proc)
    proc = run_vssl("finetune", random_run, "--data", tiny_frames, "-o", random_run, check=2)
    assert "would replace the input" in one_error_line(proc)
    assert manifest_of(tiny_frames)["id"] == before and (Path(random_run) / "encoder.pt").exists()


def test_output_parents_are_created(tiny_frames, tmp_path):
    """The README's `-o runs/x` works when runs/ does not exist yet."""
    out = tmp_path / "runs" / "deeper" / "x"
    run_vssl("pretrain", tiny_frames, "-o", out, *TINY, "--epochs", "0", check=0)
    assert manifest_of(out)["kind"] == "model"


# --- 2. nothing loaded from an artifact may run code ---------------------------------

class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> None:
    torch.save({"step": 0, "model": {}, "optimizer": {}, "schedule": {}, "scaler": {},
                "config": Payload(marker)}, path)


def test_planted_checkpoints_are_refused_not_run(tiny_frames, tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "1", check=0)
    plant(run / "checkpoint.pt", marker)
    proc = run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "2", "--resume",
                    check=1)
    assert "refusing to load the checkpoint" in one_error_line(proc)
    # ... through a planted .RUN.partial on a plain rerun
    fresh = tmp_path / "fresh"
    args = [*TINY, "--max-steps", "1"]
    run_vssl("pretrain", tiny_frames, "-o", fresh, *args, "--epochs", "0", check=0)
    shutil.copytree(fresh, tmp_path / ".other.partial")
    manifest = json.loads((tmp_path / ".other.partial" / "manifest.json").read_text())
    plant(tmp_path / ".other.partial" / "checkpoint.pt", marker)
    (tmp_path / ".other.partial" / "manifest.json").write_text(json.dumps(
        {**manifest, "id": _run_id(tiny_frames, args), "status": "running"}))
    proc = run_vssl("pretrain", tiny_frames, "-o", tmp_path / "other", *args, check=1)
    assert "refusing to load" in one_error_line(proc)
    assert not marker.exists()


def _run_id(frames, args):
    """The id a pretrain with ``args`` would give its run (read from --dry-run's config)."""
    from vssl_cli.engine.fit import load_frames, run_id
    config = json.loads(run_vssl("pretrain", frames, "-o", "x", *args, "--dry-run",
                                 check=0).stdout)
    config["method"] = "simclr"
    return run_id(config, [load_frames(str(frames))[1]])


def test_planted_checkpoint_in_an_icm_export_is_refused(tiny_frames, tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "vthcl"
    run_vssl("pretrain", tiny_frames, "-o", run, "--method", "vthcl", *TINY, "--set",
             "alpha=1", "--max-steps", "1", check=0)
    plant(run / "checkpoint.pt", marker)
    proc = run_vssl("export", run, "--format", "icm", "--data", tiny_frames, "--videos", "1",
                    check=1)
    assert "refusing to load" in one_error_line(proc) and not marker.exists()


def test_garbage_or_pickled_encoder_weights_are_one_line(random_run, tiny_frames, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(random_run, run)
    (run / "encoder.pt").write_bytes(b"\x00garbage" * 100)
    proc = run_vssl("probe", run, "--data", tiny_frames, check=1)
    assert "not the ones the manifest records" in one_error_line(proc)
    manifest = manifest_of(run)          # a model written before the digest was recorded
    del manifest["outputs"]["encoder"]["sha256"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    proc = run_vssl("probe", run, "--data", tiny_frames, check=1)
    assert "cannot read the encoder weights" in one_error_line(proc)
    with open(run / "encoder.pt", "wb") as f:
        pickle.dump(Payload(tmp_path / "pwned"), f)
    proc = run_vssl("probe", run, "--data", tiny_frames, check=1)
    assert "encoder weights" in one_error_line(proc) and not (tmp_path / "pwned").exists()


# --- 3. paths from manifests stay inside their root -------------------------------------

def test_a_store_key_leading_out_is_never_deleted(tmp_path):
    src = tmp_path / "src"
    make_video(src / "a.mp4", frames=4)
    make_video(src / "b.mp4", frames=4)
    out = tmp_path / "s.zarr"
    run_vssl("extract", src, "-o", out, check=0)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("x")
    manifest = manifest_of(out)
    for record in manifest["outputs"]["videos"]:
        if record["id"] == "b":
            record["key"] = "../../victim"
    (out / "manifest.json").write_text(json.dumps(manifest))
    os.unlink(src / "b.mp4")
    assert "invalid video key '../../victim'" in one_error_line(
        run_vssl("inspect", "--videos", out, check=1))
    proc = run_vssl("extract", src, "-o", out, "--prune", check=0)
    assert "ignoring the store's manifest (invalid video key '../../victim'" in proc.stderr
    assert (victim / "precious").exists()
    assert set(videos_table(out)) == {"a"}


def test_a_file_name_leading_out_of_a_run_is_refused(random_run, tiny_frames, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(random_run, run)
    manifest = manifest_of(run)
    manifest["outputs"]["encoder"]["file"] = "../../../etc/passwd"
    (run / "manifest.json").write_text(json.dumps(manifest))
    proc = run_vssl("probe", run, "--data", tiny_frames, check=1)
    assert "not a plain file name" in one_error_line(proc)


# --- 4, 9, 10: torn logs, full disks, leftovers ------------------------------------------

def test_a_torn_metrics_log_is_trimmed_on_resume(tmp_path):
    from vssl_cli.engine.run import RunDir
    run = RunDir(tmp_path / "run")
    run.partial.mkdir()
    (run.partial / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')
    run.trim_log(2)
    assert (run.partial / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    from vssl_cli import torch_io
    from vssl_cli.errors import VsslError
    path = tmp_path / "checkpoint.pt"
    torch_io.save_atomic({"step": 1}, path, "checkpoint")

    def full(obj, f):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch_io.torch, "save", full)
    with pytest.raises(VsslError, match="no space left on device while writing the "
                                        "checkpoint; the previous one is kept"):
        torch_io.save_atomic({"step": 2}, path, "checkpoint")
    monkeypatch.undo()
    assert torch_io.load_plain(path, "checkpoint") == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_file_size_limit_mid_checkpoint_is_one_line(tiny_frames, tmp_path):
    """The real write path: the kernel refuses the bytes (RLIMIT_FSIZE, as a full disk
    would), the run stops with one line and keeps its last good checkpoint."""
    run = tmp_path / "run"
    args = [*TINY, "--max-steps", "2", "--checkpoint-every", "1"]
    script = (f"ulimit -f 900; exec '{sys.executable}' -m vssl_cli pretrain '{tiny_frames}' "
              f"-o '{run}' " + " ".join(f"'{a}'" for a in args))
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert "file size limit reached while writing the" in one_error_line(proc)
    assert not list((tmp_path / ".run.partial").glob(".*.tmp"))


def test_leftovers_of_killed_writes_are_cleaned_up(random_run, tiny_frames, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(random_run, run)
    stale = run / ".probe.k1ll3d.partial"
    stale.mkdir()
    (stale / "confusion.png").write_bytes(b"half")
    run_vssl("probe", run, "--data", tiny_frames, "-j", "0", "--clips", "1", check=0)
    assert not stale.exists()
    partial = tmp_path / ".again.partial"
    out = tmp_path / "again"
    run_vssl("pretrain", tiny_frames, "-o", out, *TINY, "--epochs", "0", check=0)
    assert not [p for p in out.iterdir() if p.name.endswith((".tmp", ".partial"))]
    assert not partial.exists()


# --- 5, 6: resumes and processes ---------------------------------------------------------

def test_finetune_resume_is_bit_identical(random_run, tiny_frames, tmp_path):
    """Dropout draws from the global RNG: each step seeds it from (seed, step, rank), so
    two steps, then two more resumed from the checkpoint, equal four straight (constant
    learning rate: the schedule does not depend on the length)."""
    args = ["--data", tiny_frames, "--batch-size", "4", "-j", "0", "--schedule", "constant",
            "--warmup-epochs", "0", "--test-clips", "1"]
    straight = tmp_path / "straight"
    run_vssl("finetune", random_run, "-o", straight, *args, "--max-steps", "4", check=0)
    half = tmp_path / "half"
    run_vssl("finetune", random_run, "-o", half, *args, "--max-steps", "2", check=0)
    run_vssl("finetune", random_run, "-o", half, *args, "--max-steps", "4", "--resume",
             check=0)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(half / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_readers_die_with_a_killed_run(tiny_frames, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vssl_cli", "pretrain", str(tiny_frames),
                             "-o", str(run), "--backbone", "r3d18-tiny", "--batch-size", "4",
                             "--workers", "2", "--set", "aug.size=32", "--set", "clip_len=4",
                             "--max-steps", "500"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    family = []
    while time.time() < deadline:
        family = _descendants(proc.pid)
        if len(family) >= 3 and (tmp_path / ".run.partial" / "manifest.json").exists():
            break                               # forkserver and two readers
        time.sleep(0.2)
    assert len(family) >= 3, family
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while any(alive(p) for p in family) and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in family if alive(p)], "readers outlived the run"


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
    children: dict[int, list[int]] = {}
    for line in out.stdout.splitlines():
        p, pp = (int(v) for v in line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# --- low: options and files that used to end in "internal error" ----------------------

@pytest.mark.parametrize("args", [
    ["pretrain", "{frames}", "-o", "{out}", "--lr", "nan"],
    ["pretrain", "{frames}", "-o", "{out}", "--seed", "100000000000000000000000"],
    ["pretrain", "{frames}", "-o", "{out}", "--max-steps", "100000000000000000000"],
    ["pretrain", "{frames}", "-o", "{out}", "--set", "params.clip_len=0"],
    ["pretrain", "{frames}", "-o", "{out}", "--set", "aug.size=0"],
    ["pretrain", "{frames}", "-o", "{out}", "--warmup-epochs", "-5"],
    ["pretrain", "{frames}", "-o", "{out}", "--clip-grad", "-1"],
    ["pretrain", "{frames}", "-o", "{out}", "--set", "aug.flip_p=5"],
    ["pretrain", "{frames}", "-o", "{out}", "--recipe", "{latin1}"],
    ["pretrain", "{frames}", "-o", "{out}", "--set", "method=nope"],
    ["export", "{run}", "--format", "onnx", "--opset", "99", "-o", "{out}"],
    ["probe", "{run}", "--data", "{frames}", "--l2", "nan", "-o", "{out}"],
    ["synth", "{out}", "--size", "100000"],
    ["synth", "{out}", "--frames", "100000000"],
    ["extract", "{frames}", "-o", "{out}.zarr", "--short-side", "1"],
])
def test_bad_values_are_one_line_usage_errors(args, tiny_frames, random_run, tmp_path):
    latin1 = tmp_path / "r.toml"
    latin1.write_bytes(b'lr = 0.1\n# caf\xe9\n')
    filled = [str(a).format(frames=tiny_frames, run=random_run, out=tmp_path / "out",
                            latin1=latin1) for a in args]
    proc = run_vssl(*filled, check=2)
    one_error_line(proc)
    assert not (tmp_path / "out").exists()


def test_set_method_chooses_the_method(tiny_frames, tmp_path):
    proc = run_vssl("pretrain", tiny_frames, "-o", tmp_path / "r", "--set", "method=tclr",
                    "--dry-run", check=0)
    config = json.loads(proc.stdout)
    assert config["method"] == "tclr" and "n_local" in config["params"]


def test_absurd_manifest_values_are_refused_on_read(random_run, tiny_frames, tmp_path):
    from vssl_cli.artifacts import load_manifest
    from vssl_cli.errors import VsslError
    run = tmp_path / "run"
    shutil.copytree(random_run, run)
    for field, value in (("clip_len", 1e9), ("clip_len", 0), ("stride", -1), ("size", None),
                         ("mean", [1, 2]), ("temporal_strides", [1.5, 1, 1, 1])):
        manifest = manifest_of(random_run)
        manifest["outputs"]["encoder"][field] = value
        (run / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(VsslError, match=f"outputs.encoder.{field}"):
            load_manifest(run)
    frames = tmp_path / "frames.zarr"
    shutil.copytree(tiny_frames, frames)
    for field, value in (("frames", 1e12), ("frames", -3), ("height", 0), ("width", None),
                         ("frames", "many")):
        manifest = manifest_of(tiny_frames)
        manifest["outputs"]["videos"][0][field] = value
        (frames / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(VsslError, match=rf"outputs.videos\[0\].{field}"):
            load_manifest(frames)
    for value in (None, "walk,run", [1, 2]):     # found by test_fuzz: None reached len()
        manifest = manifest_of(tiny_frames)
        manifest["outputs"]["classes"] = value
        (frames / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(VsslError, match="outputs.classes"):
            load_manifest(frames)


@pytest.mark.parametrize("wall", [float("nan"), float("inf"), -5.0])
def test_inspect_skips_a_training_time_that_is_no_duration(random_run, tmp_path, wall):
    """A mutated ``metrics.wall_s`` (found by test_fuzz) is left out, not an internal error."""
    run = tmp_path / "run"
    shutil.copytree(random_run, run)
    manifest = manifest_of(random_run)
    manifest["metrics"]["wall_s"] = wall
    (run / "manifest.json").write_text(json.dumps(manifest))
    proc = run_vssl("inspect", run, check=0)
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
    assert "training time" not in proc.stdout
