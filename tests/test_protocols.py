"""The papers' protocol: one extraction serves the three official splits of UCF101 and
HMDB51, `--official-split N` uses split N's own lists, and no evaluation tests on a video
its model trained on unless told to."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, make_video, manifest_of, run_vssl, videos_table

TINY = ["--backbone", "r3d18-tiny", "--batch-size", "4", "-j", "0", "--set", "aug.size=32",
        "--set", "clip_len=4", "--set", "stride=2"]
EVAL = ["--clips", "1", "-j", "0"]


def split_file_ids(synth_dir: Path, kind: str, n: int) -> set[str]:
    text = (synth_dir / "ucfTrainTestlist" / f"{kind}list{n:02d}.txt").read_text()
    return {line.split()[0].rsplit(".", 1)[0] for line in text.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def store(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("protocol") / "ucf.zarr"
    run_vssl("extract", synth_dir, "-o", out, check=0)
    return out


@pytest.fixture(scope="module")
def split1_run(store, tmp_path_factory):
    """A model pretrained (one step) on official split 1's train videos."""
    out = tmp_path_factory.mktemp("runs") / "split1"
    run_vssl("pretrain", store, "-o", out, "--official-split", "1", "--max-steps", "1", *TINY,
             check=0)
    return out


def test_one_extraction_records_every_split(store, synth_dir):
    table = videos_table(store)
    assert all(len(r["splits"]) == 3 for r in table.values())
    for n in (1, 2, 3):
        for kind in ("train", "test"):
            got = {i for i, r in table.items() if r["splits"][n - 1] == kind}
            assert got == split_file_ids(synth_dir, kind, n), (n, kind)
    # the three test sets are disjoint and cover every video, as in the real files
    tests = [split_file_ids(synth_dir, "test", n) for n in (1, 2, 3)]
    assert not (tests[0] & tests[1]) and set().union(*tests) == set(table)


def test_evaluation_on_split_2_uses_split_2_s_lists(store, synth_dir, random_run, tmp_path):
    out = tmp_path / "r"
    run_vssl("retrieve", random_run, "--data", store, "-o", out, "--official-split", "2",
             *EVAL, check=0)
    saved = np.load(out / "features.npz")
    assert set(saved["query_ids"]) == split_file_ids(synth_dir, "test", 2)
    assert set(saved["gallery_ids"]) == split_file_ids(synth_dir, "train", 2)
    assert manifest_of(out)["config"]["official_split"] == 2
    assert manifest_of(out)["metrics"]["official_split"] == 2
    default = tmp_path / "d"
    run_vssl("retrieve", random_run, "--data", store, "-o", default, *EVAL, check=0)
    assert "official_split" not in manifest_of(default)["config"]
    assert manifest_of(default)["metrics"]["official_split"] == 1     # extract's --split


def test_the_model_records_what_it_trained_on(split1_run, synth_dir):
    listed = set((split1_run / "train_videos.txt").read_text().split())
    assert listed == split_file_ids(synth_dir, "train", 1)
    assert manifest_of(split1_run)["outputs"]["train_videos"]["count"] == len(listed)


def test_the_guard_refuses_test_videos_the_model_trained_on(split1_run, store, tmp_path):
    proc = run_vssl("probe", split1_run, "--data", store, "-o", tmp_path / "p2",
                    "--official-split", "2", *EVAL, check=2)
    line = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(line) == 1 and "of the 10 test videos were in the model's training set" in \
        line[0] and "--allow-overlap" in line[0]
    assert not (tmp_path / "p2").exists()
    for command in ("retrieve", "finetune"):
        extra = ["--epochs", "0", "--batch-size", "4"] if command == "finetune" else EVAL
        run_vssl(command, split1_run, "--data", store, "-o", tmp_path / command,
                 "--official-split", "2", *extra, check=2)
    # the split it trained on is fine, and --allow-overlap runs and says so
    run_vssl("probe", split1_run, "--data", store, "-o", tmp_path / "p1", "--official-split",
             "1", *EVAL, check=0)
    run_vssl("probe", split1_run, "--data", store, "-o", tmp_path / "p2", "--official-split",
             "2", "--allow-overlap", *EVAL, check=0)
    overlap = manifest_of(tmp_path / "p2")["metrics"]["train_overlap"]
    assert overlap == len(split_file_ids_of(store, "test", 2) &
                          set((split1_run / "train_videos.txt").read_text().split()))
    assert overlap > 0


def split_file_ids_of(store, kind, n):
    return {i for i, r in videos_table(store).items() if r["splits"][n - 1] == kind}


def test_pretraining_on_another_dataset_is_no_overlap(videos, store, tmp_path):
    other = tmp_path / "other.zarr"
    run_vssl("extract", videos, "-o", other, check=0)
    run = tmp_path / "run"
    run_vssl("pretrain", other, "-o", run, "--max-steps", "1", "--set", "split=all",
             *TINY, "--batch-size", "2", check=0)
    for n in ("1", "2", "3"):
        run_vssl("probe", run, "--data", store, "-o", tmp_path / f"p{n}", "--official-split",
                 n, *EVAL, check=0)


def test_a_finetuned_model_adds_its_set_to_its_starting_model_s(split1_run, store, tmp_path):
    out = tmp_path / "ft"
    run_vssl("finetune", split1_run, "--data", store, "-o", out, "--official-split", "1",
             "--max-steps", "1", "--batch-size", "4", "-j", "0", "--test-clips", "1",
             check=0)
    listed = set((out / "train_videos.txt").read_text().split())
    assert set((split1_run / "train_videos.txt").read_text().split()) <= listed


def test_a_model_without_the_list_is_unknown_not_refused(random_run, store, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(random_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["outputs"].pop("train_videos", None)
    (run / "manifest.json").write_text(json.dumps(manifest))
    proc = run_vssl("probe", run, "--data", store, "-o", tmp_path / "p", *EVAL, check=0)
    assert "does not record which videos it trained on" in proc.stderr
    assert manifest_of(tmp_path / "p")["config"]["train_overlap"] == "unknown"


def test_a_store_made_before_it_kept_every_split(store, random_run, tmp_path):
    old = tmp_path / "old.zarr"
    shutil.copytree(store, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for record in manifest["outputs"]["videos"]:
        record.pop("splits", None)
    (old / "manifest.json").write_text(json.dumps(manifest))
    run_vssl("probe", random_run, "--data", old, "-o", tmp_path / "p", *EVAL, check=0)
    run_vssl("probe", random_run, "--data", old, "-o", tmp_path / "p1", "--official-split",
             "1", *EVAL, check=0)
    proc = run_vssl("probe", random_run, "--data", old, "-o", tmp_path / "p2",
                    "--official-split", "2", *EVAL, check=1)
    assert "records split 1 only" in proc.stderr


def test_hmdb51_layout_records_its_three_splits_and_unused_videos(tmp_path):
    root = tmp_path / "hmdb"
    names = {}
    for c, cls in enumerate(("brush_hair", "cartwheel")):
        names[cls] = []
        for i in range(4):
            name = f"{cls}_v{i}.avi"
            make_video(root / cls / name, frames=8, source="mandelbrot" if c else "testsrc2")
            names[cls].append(name)
    ann = tmp_path / "splits"
    ann.mkdir()
    tags = {1: ["1", "1", "2", "0"], 2: ["1", "2", "1", "1"], 3: ["2", "1", "1", "1"]}
    for cls, videos in names.items():
        for n, t in tags.items():
            (ann / f"{cls}_test_split{n}.txt").write_text(
                "".join(f"{v} {tag} \n" for v, tag in zip(videos, t)))
    out = tmp_path / "h.zarr"
    run_vssl("extract", root, "-o", out, "--layout", "hmdb51", "--annotations", ann,
             check=0)
    table = videos_table(out)
    assert table["brush_hair/brush_hair_v3"]["splits"] == ["unused", "train", "train"]
    assert table["brush_hair/brush_hair_v3"]["split"] is None     # unused in split 1
    assert table["cartwheel/cartwheel_v2"]["splits"] == ["test", "train", "train"]
    assert len(table) == 8


def test_inspect_prints_the_mean_and_spread_over_artifacts(store, random_run, tmp_path):
    paths = []
    for n in ("1", "2", "3"):
        paths.append(tmp_path / f"p{n}")
        run_vssl("probe", random_run, "--data", store, "-o", paths[-1], "--official-split",
                 n, *EVAL, check=0)
    proc = run_vssl("inspect", "--metrics", "top1", "--mean", *paths, "--json", check=0)
    rows = json.loads(proc.stdout)
    tops = [manifest_of(p)["metrics"]["top1"] for p in paths]
    assert rows[-1]["top1"]["mean"] == pytest.approx(np.mean(tops))
    assert rows[-1]["top1"]["std"] == pytest.approx(np.std(tops))
    text = run_vssl("inspect", "--metrics", "top1", "--mean", *paths, check=0).stdout
    assert "mean +- std over 3" in text


@pytest.mark.slow
def test_the_three_split_make_target_prints_per_split_and_mean_rows(synth_dir, tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        ["make", "-s", "tclr-ucf101", f"UCF101={synth_dir}", f"RUNS={tmp_path}",
         "SPLITS=1 2 3", "EXTRACT=--short-side 32 -j 1",
         "PRETRAIN_ARGS=--max-steps 1 --set params.temporal_strides=[1,1,1,1] "
         + " ".join(TINY),
         "EVAL_ARGS=" + " ".join(EVAL),
         "FINETUNE_ARGS=--max-steps 1 --batch-size 4 -j 0 --test-clips 1"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for n in (1, 2, 3):
        assert f"probe-ucf101-split{n}" in proc.stdout
    assert proc.stdout.count("mean +- std over 3") == 3


@pytest.mark.skipif(not os.environ.get("VSSL_UCF101_SPLITS"),
                    reason="set VSSL_UCF101_SPLITS to a folder holding the official "
                           "ucfTrainTestlist/ (not shipped by any package we install)")
def test_the_real_ucf101_split_files(tmp_path):
    """The published sizes: 9537/3783, 9586/3734, 9624/3696 train/test videos."""
    from vssl_cli.video.datasets import IndexOptions, parse_ucf101
    lists = Path(os.environ["VSSL_UCF101_SPLITS"]) / "ucfTrainTestlist"
    first = (lists / "trainlist01.txt").read_text().split()[0]
    (tmp_path / "UCF-101" / first).parent.mkdir(parents=True)
    (tmp_path / "UCF-101" / first).touch()      # where the videos are found: no video read
    entries = parse_ucf101(tmp_path, IndexOptions(annotations=str(lists)))
    assert len(entries) == 13320
    for n, sizes in enumerate([(9537, 3783), (9586, 3734), (9624, 3696)]):
        roles = [e.splits[n] for e in entries]
        assert (roles.count("train"), roles.count("test")) == sizes
    assert all("unused" not in e.splits for e in entries)
