"""Evaluation and export: probe, retrieval, finetune, the exported files."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import zarr
from conftest import manifest_of, run_vssl

from vssl_cli.evaluate.features import Features
from vssl_cli.evaluate.probe import confusion_matrix, linear_probe, topk_accuracy
from vssl_cli.evaluate.retrieval import nearest, recall_at

# --- library pieces ----------------------------------------------------------------------

def test_nearest_matches_brute_force_in_any_chunking():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(37, 16)), rng.normal(size=(501, 16))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    want = np.argsort(-(qn @ gn.T), axis=1)[:, :20]
    for chunk, block in ((1, None), (8, 7), (1000, 64), (5, 20), (37, 501), (3, 1000)):
        scores, idx = nearest(q, g, 20, chunk=chunk, use_faiss=False, block=block)
        assert (idx == want).all(), (chunk, block)
        assert np.allclose(scores, np.take_along_axis(qn @ gn.T, want, 1), atol=1e-5)
    assert nearest(q, g[:3], 20, use_faiss=False)[1].shape == (37, 3)


def test_recall_at_k_counts_a_same_class_hit_within_k():
    idx = np.array([[2, 0, 1], [0, 1, 2]])
    gallery = np.array([0, 1, 2])
    assert recall_at(np.array([1, 2]), gallery, idx, ks=(1, 2, 3)) == {
        "R@1": 0.0, "R@2": 0.0, "R@3": 1.0}
    assert recall_at(np.array([2, 0]), gallery, idx, ks=(1,)) == {"R@1": 1.0}


def test_topk_and_confusion():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    assert topk_accuracy(probs, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(probs, labels, 2) == pytest.approx(2 / 3)
    m = confusion_matrix(probs.argmax(1), labels, 3)
    assert m.tolist() == [[0, 0, 1], [1, 1, 0], [0, 0, 0]]


def test_linear_probe_separates_separable_features_and_not_noise():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 8)) * 3

    def features(n, informative):
        labels = np.repeat(np.arange(4), n)
        x = rng.normal(size=(len(labels), 3, 8))
        if informative:
            x += centres[labels][:, None]
        return Features([str(i) for i in range(len(labels))], labels, x.astype(np.float32))

    classes = ["a", "b", "c", "d"]
    good, _ = linear_probe(features(10, True), features(5, True), classes)
    assert good["top1"] == 1.0 and good["per_class"]["c"] == 1.0
    bad, confusion = linear_probe(features(10, False), features(25, False), classes)
    assert bad["top1"] < 0.5 and confusion.sum() == 100


# --- commands ----------------------------------------------------------------------------

def test_probe_writes_metrics_and_figures(random_run, tiny_frames, tmp_path):
    out = tmp_path / "probe"
    proc = run_vssl("probe", random_run, "--data", tiny_frames, "-o", out, "--clips", "3",
                    "-j", "0", check=0)
    assert proc.stdout.strip() == str(out)
    m = manifest_of(out)
    assert m["kind"] == "eval" and [i["kind"] for i in m["inputs"]] == ["model", "frames"]
    metrics = m["metrics"]
    assert metrics["test_videos"] == 10 and metrics["train_videos"] == 20
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1 and len(metrics["per_class"]) == 10
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert np.loadtxt(out / "confusion.csv", delimiter=",").sum() == 10
    again = run_vssl("probe", random_run, "--data", tiny_frames, "-o", out, "--clips", "3",
                     "-j", "0", check=0)
    assert "up to date" in again.stderr


def test_retrieve_reports_recall_and_answers_queries(random_run, tiny_frames, synth_dir, tmp_path):
    out = tmp_path / "ret"
    proc = run_vssl("retrieve", random_run, "--data", tiny_frames, "-o", out, "--clips", "2",
                    "-j", "0", "--json", check=0)
    m = json.loads(proc.stdout)["metrics"]
    assert m["gallery_videos"] == 20 and m["query_videos"] == 10
    assert 0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= m["R@20"] == 1.0   # 20 >= gallery size
    assert set(m["1clip"]) == {"R@1", "R@5", "R@10", "R@20"}
    saved = np.load(out / "features.npz")
    assert saved["gallery"].shape[0] == 20 and saved["query"].shape[0] == 10
    # A query by store id and by the source file give the same neighbours.
    vid = str(saved["query_ids"][0])
    source = next(synth_dir.rglob(vid.split("/")[-1] + ".*"))
    lines = run_vssl("retrieve", random_run, "--data", tiny_frames, "-o", out, "--clips", "2",
                     "-j", "0", "--query", vid, "--query", source, "--top", "5",
                     check=0).stdout.splitlines()
    by_id, by_file = (json.loads(line) for line in lines)
    assert len(by_id["neighbours"]) == 5
    assert [n["id"] for n in by_id["neighbours"]] == [n["id"] for n in by_file["neighbours"]]


def test_finetune_trains_a_labelled_subset_and_tests(random_run, tiny_frames, tmp_path):
    out = tmp_path / "ft"
    run_vssl("finetune", random_run, "--data", tiny_frames, "-o", out, "--label-fraction",
             "0.5", "--max-steps", "2", "--batch-size", "4", "-j", "0", "--test-clips", "2",
             check=0)
    m = manifest_of(out)
    assert m["kind"] == "model" and m["config"]["method"] == "supervised"
    assert m["metrics"]["train_videos"] == 10            # one of two videos per class
    assert 0 <= m["metrics"]["test_top1"] <= 1 and m["metrics"]["test_videos"] == 10
    assert m["outputs"]["encoder"]["backbone"] == "r3d18-tiny"
    # The finetuned artifact is a model like any other: it can be probed.
    run_vssl("probe", out, "--data", tiny_frames, "--clips", "1", "-j", "0", check=0)


@pytest.mark.parametrize("fmt, name", [("torchscript", "encoder.ts"), ("onnx", "encoder.onnx"),
                                       ("safetensors", "encoder.safetensors")])
def test_model_exports_match_pytorch(random_run, tmp_path, fmt, name):
    out = tmp_path / fmt
    run_vssl("export", random_run, "--format", fmt, "-o", out, check=0)
    m = manifest_of(out)
    assert m["kind"] == "export" and (out / name).stat().st_size > 0
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        assert m["metrics"]["checked"] and m["metrics"]["max_abs_diff"] < 1e-3
    if fmt == "torchscript":
        spec = m["config"]["encoder"]
        x = torch.randn(1, 3, spec["clip_len"], spec["size"], spec["size"])
        assert torch.jit.load(str(out / name))(x).shape[-1] > 0


def test_embeddings_export_in_every_format(random_run, tiny_frames, tmp_path):
    tables = {}
    for fmt in ("npy", "h5", "zarr"):
        out = tmp_path / fmt
        run_vssl("export", random_run, "--format", "embeddings", "--data", tiny_frames,
                 "--embeddings-format", fmt, "--clips", "2", "-j", "0", "-o", out, check=0)
        if fmt == "npy":
            meta = json.loads((out / "embeddings.json").read_text())
            tables[fmt] = (meta["ids"], np.load(out / "embeddings.npy"))
        elif fmt == "h5":
            with h5py.File(out / "embeddings.h5") as f:
                tables[fmt] = ([s.decode() for s in f["ids"][:]], f["embeddings"][:])
        else:
            g = zarr.open_group(str(out / "embeddings.zarr"), mode="r")
            tables[fmt] = (list(g["ids"][:]), g["embeddings"][:])
    ids, vectors = tables["npy"]
    assert len(ids) == 30 and vectors.shape[0] == 30
    for other_ids, other in tables.values():
        assert list(other_ids) == ids and np.allclose(other, vectors, atol=1e-5)


def test_wrong_artifact_kinds_are_refused(random_run, tiny_frames, tmp_path):
    proc = run_vssl("probe", tiny_frames, "--data", tiny_frames, check=2)
    assert "expected a model artifact, got a frames artifact" in proc.stderr
    proc = run_vssl("probe", random_run, "--data", random_run, check=2)
    assert "expected a frames artifact, got a model artifact" in proc.stderr
    proc = run_vssl("pretrain", random_run, "-o", tmp_path / "x", check=2)
    assert "expected a frames artifact" in proc.stderr


def test_vthcl_run_exports_correspondence_heatmaps(random_run, tiny_frames, tmp_path):
    import matplotlib.image
    run = tmp_path / "vthcl"
    run_vssl("-q", "pretrain", tiny_frames, "-o", run, "--method", "vthcl", "--backbone",
             "r3d18-tiny", "--max-steps", "2", "--batch-size", "4", "-j", "0", "--set",
             "aug.size=32", "--set", "clip_len=4", "--set", "stride=4", check=0)
    metrics = manifest_of(run)["metrics"]
    assert np.isfinite(metrics["final_loss"])
    out = tmp_path / "icm"
    run_vssl("export", run, "--format", "icm", "--data", tiny_frames, "--videos", "3",
             "--split", "test", "-o", out, check=0)
    files = manifest_of(out)["metrics"]["files"]
    assert len(files) == 3
    image = matplotlib.image.imread(out / files[0])
    assert image.shape[:2] == (2 * 32, 4 * 32)                # frames over heatmaps, 4 frames
    assert not np.allclose(image[:32], image[32:])             # the heatmap is drawn
    proc = run_vssl("export", random_run, "--format", "icm", "--data", tiny_frames, check=2)
    assert "needs a vthcl run" in proc.stderr


# --- event boundaries ------------------------------------------------------------------------

def test_boundary_peaks_and_gebd_matching():
    from vssl_cli.evaluate.boundary import f1_at, match_counts, peaks
    times = np.arange(10.0)
    scores = np.array([0, 1, 0, 0, 3, 2, 0, 0, 0.5, 0])
    assert peaks(times, scores, 0.4).tolist() == [1, 4, 8]
    assert peaks(times, scores, 1.5).tolist() == [4]
    # each truth matches once; tolerance is inclusive
    assert match_counts(np.array([10, 12, 30]), [11, 40], 2) == (1, 3, 2)
    assert match_counts(np.array([10, 12]), [11, 13], 2) == (2, 2, 2)
    video = {"times": times, "scores": scores, "truth": [4.0, 8.0], "frames": 100}
    m = f1_at([video], 0.4, 0.05)                   # tolerance 5 frames: 2 of 3 predictions hit
    assert m["precision"] == 2 / 3 and m["recall"] == 1 and abs(m["f1"] - 0.8) < 1e-9
    assert f1_at([video], 5, 0.05)["f1"] == 0.0


def test_boundary_truth_accepts_synth_json_and_rescales_frame_rates(tmp_path):
    from vssl_cli.errors import VsslError
    from vssl_cli.evaluate.boundary import load_boundaries, truth_for
    synth = tmp_path / "synth.json"
    synth.write_text(json.dumps({"videos": [{"video": "A/v_a.mp4", "boundaries": [24]}]}))
    table = load_boundaries(str(synth))
    assert truth_for({"id": "A/v_a", "fps": 12.5, "orig_fps": 25.0}, table) == [12.0]
    # Every decoded frame kept (native timing): source frame i is stored frame i, whatever
    # the mean rate of a variable-frame-rate video says.
    assert truth_for({"id": "A/v_a", "fps": 12.5, "orig_fps": 25.0, "timing": "decoded"},
                     table) == [24.0]
    assert truth_for({"id": "B/v_b", "fps": 25.0}, table) is None
    plain = tmp_path / "b.json"
    plain.write_text(json.dumps({"B/v_b": [3, 9]}))
    assert truth_for({"id": "B/v_b", "fps": 25.0}, load_boundaries(str(plain))) == [3.0, 9.0]
    plain.write_text("[1, 2]")
    with pytest.raises(VsslError, match="boundaries must be"):
        load_boundaries(str(plain))


def test_probe_boundary_task_reports_f1(random_run, tiny_frames, synth_dir, tmp_path):
    out = tmp_path / "gebd"
    proc = run_vssl("probe", random_run, "--data", tiny_frames, "--task", "boundary",
                    "--boundaries", synth_dir / "synth.json", "--hop", "2", "-o", out, check=0)
    assert proc.stdout.strip() == str(out)
    m = manifest_of(out)["metrics"]
    assert 0 <= m["f1"] <= 1 and m["boundaries"] == 2          # 2 two-part classes x 1 test video
    predicted = json.loads((out / "boundaries.json").read_text())
    assert len(predicted) == 10
    proc = run_vssl("probe", random_run, "--data", tiny_frames, "--task", "boundary", check=2)
    assert "needs --boundaries" in proc.stderr


def test_a_failed_write_keeps_the_existing_artifact(random_run, tmp_path):
    """Disk full, simulated by a file-size limit: one clear line, the old export intact."""
    import resource
    import signal
    import subprocess
    import sys

    from conftest import ROOT
    out = tmp_path / "export"
    run_vssl("export", random_run, "--format", "safetensors", "-o", out, check=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([sys.executable, "-m", "vssl_cli", "export", str(random_run),
                           "--format", "safetensors", "-o", str(out), "--force"], cwd=ROOT,
                          capture_output=True, text=True, preexec_fn=small_files)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "File too large" in lines[0], proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name not in ("export",)]   # no temp left


def test_three_crop_test_sees_both_ends_of_the_longer_side(random_run, tiny_frames, tmp_path):
    """N clips x 3 crops (PySlowFast, MMAction2): the centre crop is the 1-crop test's view,
    the others sit at the ends of the longer side."""
    from vssl_cli.evaluate.features import Features, encode_clips
    from vssl_cli.models.saved import load_encoder
    spec = manifest_of(random_run)["outputs"]["encoder"]
    encoder = load_encoder(str(random_run), spec).eval()
    clip = torch.randint(0, 255, (2, 3, spec["clip_len"], 40, 64), dtype=torch.uint8)
    hw = torch.tensor([[40, 64], [40, 64]])
    one = encode_clips(encoder, [clip, clip], hw, spec, torch.device("cpu"))
    three = encode_clips(encoder, [clip, clip], hw, spec, torch.device("cpu"), crops=3)
    assert one.shape[1] == 2 and three.shape[1] == 6
    assert torch.allclose(three[:, 1], one[:, 0], atol=1e-5)          # centre crop
    assert not torch.allclose(three[:, 0], three[:, 2], atol=1e-3)    # the two ends
    feats = Features(["a", "b"], np.array([0, 1]), three.numpy(), crops=3)
    assert feats.middle_view == 4 and feats.mean(1).shape == (2, three.shape[-1])
    out = tmp_path / "probe3"
    run_vssl("probe", random_run, "--data", tiny_frames, "-o", out, "--clips", "2",
             "--crops", "3", "-j", "0", check=0)
    assert manifest_of(out)["metrics"]["test_crops"] == 3
