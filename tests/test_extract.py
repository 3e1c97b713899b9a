"""`vssl extract` end to end: both backends, incremental reruns, bad inputs, piping, kills."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ROOT, ffmpeg, make_video, manifest_of, run_vssl, videos_table

from vssl_cli.store import open_store
from vssl_cli.video.decode import DecodeParams, decode_all


@pytest.mark.parametrize("name", ["f.zarr", "f.h5"])
def test_extract_synth_ucf101_layout(synth_dir, tmp_path, name):
    out = tmp_path / name
    proc = run_vssl("extract", synth_dir, "-o", out, "-j", "4", "--short-side", "32", check=0)
    assert proc.stdout.strip() == str(out)
    manifest = manifest_of(out)
    assert manifest["kind"] == "frames" and manifest["outputs"]["layouts"] == ["ucf101"]
    assert manifest["config"]["frames"]["short_side"] == 32
    assert manifest["metrics"]["videos_ok"] == 30 and manifest["metrics"]["frames"] == 30 * 16
    with open_store(out) as store:
        assert len(store.split("train")) == 20 and len(store.split("test")) == 10
        assert len(store.classes) == 10
        # The store holds exactly what ffmpeg decodes from each source (workers read
        # every video after the first into blocks an earlier one gave back).
        for video in store.videos:
            frames = store.read(video["id"], range(16))
            assert frames.shape == (16, 32, 32, 3)
            direct = decode_all(video["source"], DecodeParams(short_side=32))
            np.testing.assert_array_equal(frames, direct)
    assert not Path(f"{out}.partial").exists() and not Path(f"{out}.lock").exists()
    assert not Path(f"{out}.parts").exists()


@pytest.mark.parametrize("name", ["i.zarr", "i.h5"])
def test_rerun_is_noop_then_incremental(videos, tmp_path, name):
    out = tmp_path / name
    run_vssl("extract", videos, "-o", out, check=0)
    first = manifest_of(out)
    again = run_vssl("extract", videos, "-o", out, check=0)
    assert "up to date" in again.stderr and again.stdout.strip() == str(out)
    assert manifest_of(out)["created"] == first["created"]
    # touched but unchanged: content hash says skip
    os.utime(videos / "a" / "one.mp4", (time.time() + 5, time.time() + 5))
    make_video(videos / "b" / "four.mp4", frames=6)
    run_vssl("extract", videos, "-o", out, check=0)
    second = manifest_of(out)
    assert second["metrics"]["extracted_this_run"] == 1
    assert second["metrics"]["videos_ok"] == 4 and second["id"] != first["id"]
    # changed content: re-extracted
    make_video(videos / "a" / "one.mp4", frames=5, source="mandelbrot")
    run_vssl("extract", videos, "-o", out, check=0)
    third = videos_table(out)
    assert third["a/one"]["frames"] == 5
    assert manifest_of(out)["metrics"]["extracted_this_run"] == 1


def test_new_sources_add_to_store_and_prune_removes(videos, tmp_path):
    out = tmp_path / "s.zarr"
    run_vssl("extract", videos / "a", "-o", out, "--layout", "plain", check=0)
    run_vssl("extract", videos / "b", "-o", out, "--layout", "plain", check=0)
    assert set(videos_table(out)) == {"one", "two", "three"}
    run_vssl("extract", videos / "b", "-o", out, "--layout", "plain", "--prune", check=0)
    assert set(videos_table(out)) == {"three"}
    assert [p.name for p in (out / "videos").iterdir() if p.is_dir()] == [
        videos_table(out)["three"]["key"]]


def test_changed_parameters_refused_unless_forced(videos, tmp_path):
    out = tmp_path / "p.zarr"
    run_vssl("extract", videos, "-o", out, check=0)
    before = manifest_of(out)
    proc = run_vssl("extract", videos, "-o", out, "--short-side", "24", check=2)
    assert proc.stderr.count("\n") == 1
    assert "other frame parameters (short_side 128 -> 24" in proc.stderr and str(out) in proc.stderr
    assert manifest_of(out)["id"] == before["id"]
    run_vssl("extract", videos, "-o", out, "--short-side", "24", "--force", check=0)
    assert {r["height"] for r in videos_table(out).values()} == {24}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_store_from_the_earlier_decoder_is_read_but_not_extended(videos, tmp_path):
    """Stores made before decoder 2 padded VFR videos with copies and squeezed non-square
    pixels; adding to one would mix the two, so it is refused with the way out."""
    out = tmp_path / "old.zarr"
    run_vssl("extract", videos, "-o", out, check=0)
    manifest = manifest_of(out)
    del manifest["config"]["frames"]["decoder"]          # as stores made before it
    (out / "manifest.json").write_text(json.dumps(manifest))
    with open_store(out) as store:                       # still readable
        assert store.read("a/one", [0]).shape[0] == 1
    proc = run_vssl("extract", videos, "-o", out, check=2)
    assert "made by an earlier vssl" in proc.stderr and "--force" in proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1
    run_vssl("extract", videos, "-o", out, "--force", check=0)
    assert manifest_of(out)["config"]["frames"]["decoder"] == 2


@pytest.mark.parametrize("name", ["bad.zarr", "bad.h5"])
def test_bad_inputs_are_listed_and_skipped(videos, tmp_path, name):
    bad = videos / "bad"
    bad.mkdir()
    (bad / "zero.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("this is not a video\n" * 50)
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", bad / "audio.mp4")
    good = make_video(tmp_path / "long.mp4", frames=120, size="160x120", faststart=True,
                      extra=("-g", "12"))
    data = good.read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / name
    proc = run_vssl("extract", videos, "-o", out, "--layout", "plain", check=0)
    table = videos_table(out)
    errors = {k: v["error"] for k, v in table.items() if v["status"] == "error"}
    assert set(errors) == {"bad/zero", "bad/text", "bad/audio"}
    assert "empty file" in errors["bad/zero"]
    assert "no video stream" in errors["bad/audio"]
    # A damaged file keeps its readable prefix, marked partial with the decoder's words.
    cut = table["bad/truncated"]
    assert cut["status"] == "ok" and cut["partial"] and 20 < cut["frames"] < 120
    assert any("truncated" in w for w in cut["warnings"])
    assert "3 failed, 1 damaged" in proc.stderr and "partial: " in proc.stderr
    with open_store(out) as store:
        assert {r["id"] for r in store.videos} == {"a/one", "a/two", "b/three",
                                                   "bad/truncated"}
    # An unchanged bad file is not retried; --strict turns failures into exit 1 and
    # prints no path.
    assert "up to date" in run_vssl("extract", videos, "-o", out, "--layout", "plain").stderr
    strict = run_vssl("extract", videos, "-o", out, "--layout", "plain", "--strict", check=1)
    assert strict.stdout == ""
    # --reject-partial keeps damaged files out.
    rejected = tmp_path / ("r" + name)
    run_vssl("extract", videos, "-o", rejected, "--layout", "plain", "--reject-partial",
             check=0)
    assert "--reject-partial" in videos_table(rejected)["bad/truncated"]["error"]


def test_nothing_usable_exits_nonzero(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"")
    proc = run_vssl("extract", tmp_path / "x.mp4", "-o", tmp_path / "o.zarr", check=1)
    assert "vssl extract: error: no video could be decoded (1 failed)" in proc.stderr
    run_vssl("extract", tmp_path / "missing", "-o", tmp_path / "o.zarr", check=2)


def test_stdin_list_and_path_piping(videos, tmp_path):
    out = tmp_path / "piped.zarr"
    listing = f"{videos}/a/one.mp4 cat train\n{videos}/b/three.mp4 dog test\n"
    proc = run_vssl("extract", "-", "-o", out, input=listing, check=0)
    inspected = run_vssl("inspect", "-", "--json", input=proc.stdout, check=0)
    manifest = json.loads(inspected.stdout)
    assert {(r["label"], r["split"]) for r in manifest["outputs"]["videos"]} == {
        ("cat", "train"), ("dog", "test")}
    assert manifest["inputs"] == [{"path": "-", "kind": "videos"}]
    human = run_vssl("inspect", out, check=0).stdout
    assert "frames" in human and "videos 2 (2 ok)" in human


def test_json_prints_manifest_and_dry_run_writes_nothing(videos, tmp_path):
    out = tmp_path / "j.zarr"
    assert not run_vssl("extract", videos, "-o", out, "--dry-run", check=0).stderr.count("error")
    assert not out.exists()
    manifest = json.loads(run_vssl("extract", videos, "-o", out, "--json", check=0).stdout)
    assert manifest["id"] == manifest_of(out)["id"]


def test_concurrent_writer_is_refused(videos, tmp_path):
    from vssl_cli.artifacts import exclusive_lock
    out = tmp_path / "locked.zarr"
    with exclusive_lock(out):
        proc = run_vssl("extract", videos, "-o", out, check=1)
    assert "another vssl process is writing" in proc.stderr


def test_url_output_is_refused_before_anything_is_written(videos):
    proc = run_vssl("extract", videos, "-o", "memory://bucket/f.zarr", check=2)
    assert "extract writes a local store" in proc.stderr and "memory://bucket/f.zarr" in proc.stderr
    assert not (ROOT / "memory:").exists()   # no local folder named after the URL


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"   # zombies are dead
    except FileNotFoundError:
        return False


def _start_slow_extract(src, out, workers=1):
    return subprocess.Popen([sys.executable, "-m", "vssl_cli", "extract", str(src), "-o",
                             str(out), "-j", str(workers), "--short-side", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _committed_h5_videos(partial: Path) -> int:
    """Videos the writer has committed (and flushed) so far; it holds the file open, so
    read without HDF5's file lock, and count 0 while the file is mid-update."""
    try:
        with h5py.File(partial, "r", locking=False) as f:
            return len(f["videos"])
    except (OSError, KeyError):
        return 0


def _wait_for_some_videos(out: Path, name: str, count: int, timeout=60):
    """Zarr: ``count`` videos committed and a manifest checkpoint written (worker processes
    commit videos themselves, so with -j 2 both can land before the parent's first
    checkpoint, and a kill then leaves a store that only the next extract can take over)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if name.endswith(".zarr") and (out / "videos").exists():
            if sum(p.is_dir() for p in (out / "videos").iterdir()) >= count and \
                    (out / "manifest.json").exists():
                return
        elif name.endswith(".h5") and _committed_h5_videos(Path(f"{out}.partial")) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("extraction made no progress")


@pytest.fixture(scope="module")
def slow_source(tmp_path_factory):
    """Enough decoding work that a kill lands mid-run."""
    src = tmp_path_factory.mktemp("slow") / "src"
    for i in range(12):
        make_video(src / f"v{i:02d}.mp4", frames=90, size="320x240", rate=30)
    return src


def test_store_killed_before_its_first_checkpoint_is_taken_over(videos, tmp_path):
    """With -j 2 workers commit videos before the parent writes its first manifest; a kill
    then leaves committed videos and no manifest: not readable, but the next extract adopts
    them instead of refusing the folder or decoding them again."""
    out = tmp_path / "early.zarr"
    run_vssl("extract", videos, "-o", out, check=0)
    (out / "manifest.json").unlink()
    assert "no manifest.json" in run_vssl("inspect", out, check=1).stderr
    run_vssl("extract", videos, "-o", out, check=0)
    manifest = manifest_of(out)
    assert manifest["metrics"]["videos_ok"] == 3 and manifest["metrics"]["extracted_this_run"] == 0


@pytest.mark.parametrize("sig,name,workers", [
    (signal.SIGKILL, "k.zarr", 1), (signal.SIGTERM, "k.zarr", 1),
    (signal.SIGKILL, "k.h5", 1), (signal.SIGTERM, "k.h5", 1),
    (signal.SIGKILL, "k.zarr", 2),   # worker processes must die with their parent
    (signal.SIGTERM, "k.zarr", 2),   # ... and be stopped by it
    (signal.SIGKILL, "k.h5", 2),     # HDF5 workers' part files are redone
])
def test_killed_extract_resumes_to_the_same_result(tmp_path, slow_source, sig, name, workers):
    src = slow_source
    out = tmp_path / name
    proc = _start_slow_extract(src, out, workers)
    _wait_for_some_videos(out, name, 2)
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)],
                                               capture_output=True, text=True).stdout.split()]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "interrupted" in err
    if workers > 1:
        assert children, "expected worker processes"
    deadline = time.time() + 10
    while any(_alive(c) for c in children) and time.time() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)], "orphaned workers outlived the kill"
    if name.endswith(".zarr"):  # readable right away, with every finished video intact
        with open_store(out) as store:
            for r in store.videos:
                assert store.read(r["id"], [r["frames"] - 1]).shape == (1, 240, 320, 3)
    run_vssl("extract", src, "-o", out, "-j", "1", "--short-side", "0", check=0)
    resumed = manifest_of(out)
    assert resumed["metrics"]["videos_ok"] == 12
    assert resumed["metrics"]["extracted_this_run"] < 12  # earlier work was kept
    reference = tmp_path / ("ref" + Path(name).suffix)
    run_vssl("extract", src, "-o", reference, "-j", "2", "--short-side", "0", check=0)
    with open_store(out) as a, open_store(reference) as b:
        assert [r["id"] for r in a.videos] == [r["id"] for r in b.videos]
        for r in a.videos:
            idx = range(r["frames"])
            np.testing.assert_array_equal(a.read(r["id"], idx), b.read(r["id"], idx))


def test_workers_get_the_biggest_videos_first_and_the_store_lists_them_as_indexed(tmp_path):
    """Largest-first hand-out (a long video last would leave the other workers idle); the
    manifest keeps the dataset's order whatever order the workers finished in."""
    from vssl_cli.extract import largest_first
    from vssl_cli.video.datasets import VideoEntry
    src = tmp_path / "src"
    for name, frames in (("a_short", 4), ("b_long", 40), ("c_mid", 12)):
        make_video(src / f"{name}.mp4", frames=frames)
    entries = [VideoEntry(p.stem, str(p)) for p in sorted(src.iterdir())]
    entries.append(VideoEntry("gone", str(tmp_path / "missing.mp4")))
    assert [e.id for e in largest_first(entries)] == ["b_long", "c_mid", "a_short", "gone"]
    out = run_vssl("extract", src, "-o", tmp_path / "s.zarr", "-j", "2", check=0)
    manifest = json.loads((Path(out.stdout.strip()) / "manifest.json").read_text())
    assert [v["id"] for v in manifest["outputs"]["videos"]] == ["a_short", "b_long", "c_mid"]
