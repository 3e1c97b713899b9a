"""Results a person can look at: training curves, retrieval examples, embedding maps,
TensorBoard scalars, `inspect RUN`, and progress bars that leave stdout to the path."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, manifest_of, run_vssl

TINY = ["--backbone", "r3d18-tiny", "--batch-size", "4", "-j", "0", "--set", "aug.size=32",
        "--set", "clip_len=4", "--set", "stride=1", "--warmup-epochs", "0"]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a valid PNG file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_pretrain_draws_its_curves_and_redraws_them_on_resume(tiny_frames, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--log-every", "1", "--checkpoint-every", "2"]
    run_vssl("pretrain", tiny_frames, "-o", run, *args, "--max-steps", "3", check=0)
    w, h = png_size(run / "curves.png")
    assert 600 <= w <= 1200 and 500 <= h <= 1400
    assert manifest_of(run)["outputs"]["curves"] == "curves.png"
    before = (run / "curves.png").read_bytes()
    run_vssl("pretrain", tiny_frames, "-o", run, *args, "--max-steps", "6", "--resume",
             check=0)
    assert (run / "curves.png").read_bytes() != before    # redrawn with the new steps


def test_curves_hold_every_kind_of_number(tmp_path):
    from vssl_cli.evaluate.plots import curves_png, smooth
    rng = np.random.default_rng(0)
    records = [{"step": s, "epoch": s / 10, "loss": 5 * np.exp(-s / 300) + rng.normal(0, .2),
                "ic": 2.0 + rng.normal(0, .1), "ll": 1.5, "lr": 1e-3 * (1 - s / 2000),
                "clips_per_s": 80 + rng.normal(0, 5), "data_wait": 0.05}
               for s in range(10, 2001, 10)]
    curves_png(records, tmp_path / "c.png", "tclr (r3d18), step 2000 of 2000")
    assert png_size(tmp_path / "c.png")[1] > 5 * 200        # five panels
    values = np.array([1.0] * 5 + [3.0] * 5)
    assert smooth(values, 0.0).tolist() == values.tolist()
    assert smooth(values, 0.9)[0] == 1.0                     # debiased start


def test_the_weighted_total_does_not_flatten_the_terms():
    """TCLR's official scaling puts its total near 40 with terms near 1-4: they get a panel
    of their own; a method that logs only its loss keeps one loss panel."""
    from vssl_cli.evaluate.plots import curve_panels
    records = [{"step": 10, "loss": 41.6, "ic": 3.0, "ll": 1.15, "gl": 1.4, "local_ic": 3.0,
                "lr": 1e-3}]
    names = curve_panels(records)
    assert names[:2] == [("loss (weighted total)", ["loss"]),
                         ("loss terms", ["gl", "ic", "ll", "local_ic"])]
    assert names[2] == ("learning rate", ["lr"])
    assert [t for t, _ in curve_panels([{"step": 1, "loss": 2.0}])] == ["loss"]


def test_retrieve_and_probe_draw_examples_and_an_embedding_map(random_run, tiny_frames,
                                                               tmp_path):
    out = tmp_path / "retrieve"
    run_vssl("retrieve", random_run, "--data", tiny_frames, "-o", out, "--clips", "2",
             "-j", "0", check=0)
    w, h = png_size(out / "examples.png")
    assert w >= 6 * 150 and h >= 8 * 150      # 8 queries, each with its 5 neighbours
    probe = tmp_path / "probe"
    run_vssl("probe", random_run, "--data", tiny_frames, "-o", probe, "--clips", "2",
             "-j", "0", check=0)
    assert png_size(probe / "embedding.png")[0] >= 600
    assert "embedding.png" in manifest_of(probe)["outputs"]["files"]


@pytest.mark.parametrize("classes", [10, pytest.param(400, marks=pytest.mark.slow)])
def test_the_embedding_map_stays_legible_with_many_classes(tmp_path, classes):
    from vssl_cli.evaluate.maps import map_2d
    from vssl_cli.evaluate.plots import embedding_png
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(classes), 3)
    x = rng.normal(size=(classes, 16))[labels] + rng.normal(0, 0.3, (len(labels), 16))
    names = [f"class_{i:03d}" for i in range(classes)]
    embedding_png(map_2d(x), labels, names, tmp_path / "e.png", "test")
    assert png_size(tmp_path / "e.png")[0] >= 800


def test_tensorboard_logs_the_same_scalars(tiny_frames, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = tmp_path / "run"
    run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "3", "--log-every",
             "1", "--tensorboard", check=0)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/loss", "train/lr", "train/clips_per_s", "train/data_wait"} <= tags
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("loss/loss")] == pytest.approx(
        [r["loss"] for r in logged], rel=1e-6)
    assert manifest_of(run)["outputs"]["tensorboard"] == "tensorboard"


def test_tensorboard_missing_is_one_line(tiny_frames, tmp_path):
    blocker = tmp_path / "no_tensorboard"
    blocker.mkdir()
    (blocker / "tensorboard.py").write_text("raise ImportError('not installed')\n")
    proc = run_vssl("pretrain", tiny_frames, "-o", tmp_path / "r", *TINY, "--tensorboard",
                    "--dry-run", env={"PYTHONPATH": str(blocker)}, check=2)
    assert proc.stderr.strip() == ("vssl pretrain: error: --tensorboard needs the tensorboard "
                                   "package: pip install 'vssl[tensorboard]'")


def test_inspect_a_run_shows_its_last_metrics_time_and_pictures(tiny_frames, tmp_path):
    run = tmp_path / "run"
    run_vssl("pretrain", tiny_frames, "-o", run, *TINY, "--max-steps", "2", "--log-every",
             "1", check=0)
    shown = run_vssl("inspect", run, check=0).stdout
    assert "last record" in shown and "step 2" in shown
    assert "training time" in shown and "curves.png" in shown
    table = run_vssl("inspect", "--metrics", "steps,final_loss", run, check=0).stdout
    assert "2" in table                       # --metrics keeps working


def _run_with_tty_stderr(args: list[str], timeout: float = 300) -> tuple[int, str, str]:
    """Run vssl with stdout a pipe and stderr a terminal, as in `vssl ... > out`."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # rows, cols
    proc = subprocess.Popen([sys.executable, "-m", "vssl_cli", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=slave, text=True,
                            env={**os.environ, "COLUMNS": "100"})
    os.close(slave)
    shown, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    out = proc.stdout.read()
    proc.wait()
    os.close(master)
    return proc.returncode, out, shown.decode(errors="replace")


def test_progress_goes_to_the_terminal_and_stdout_stays_the_path(tiny_frames, synth_dir,
                                                                 tmp_path):
    run = tmp_path / "run"
    code, out, terminal = _run_with_tty_stderr(["pretrain", tiny_frames, "-o", run, *TINY,
                                                "--max-steps", "4"])
    assert code == 0 and out == f"{run}\n"
    assert "pretrain simclr" in terminal and "step/s" in terminal
    # Log lines never land on a bar's line: as a terminal shows it (a carriage return
    # starts the line over), each message begins a line of its own.
    shown = [line.split("\r")[-1] for line in terminal.replace("\r\n", "\n").split("\n")]
    assert all(line.startswith("vssl: ") for line in shown if "vssl: " in line), shown
    store = tmp_path / "s.zarr"
    code, out, terminal = _run_with_tty_stderr(["extract", synth_dir, "-o", store, "-j", "2"])
    assert code == 0 and out == f"{store}\n" and "extract" in terminal
