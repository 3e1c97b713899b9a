"""A store that fits Kinetics: JPEG frames inside Zarr shards and HDF5 datasets, read by
plain zarr-python and h5py too; and extraction split over machines (--shard K/N) whose
merge equals a single-machine run, also after a shard was killed and rerun."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from conftest import ROOT, make_video, manifest_of, real_footage, run_vssl, videos_table
from vssl_cli.store import open_store


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Real camera footage when packaged, else made-up clips."""
    folder = tmp_path_factory.mktemp("footage")
    real = real_footage()[:3]
    if real:
        for p in real:
            (folder / p.name).symlink_to(p)
    else:
        for i in range(3):
            make_video(folder / f"v{i}.mp4", frames=60, size="320x240", source="mandelbrot")
    return folder


def test_jpeg_zarr_store_is_the_size_of_rawframes_and_reads_as_zarr(footage, tmp_path):
    from PIL import Image
    lossless, lossy = tmp_path / "l.zarr", tmp_path / "j.zarr"
    run_vssl("extract", footage, "-o", lossless, check=0)
    run_vssl("extract", footage, "-o", lossy, "--codec", "jpeg", check=0)
    manifest = manifest_of(lossy)
    assert manifest["config"]["frames"]["codec"] == "jpeg"
    assert manifest["config"]["frames"]["quality"] == 90
    metrics = manifest["metrics"]
    assert 30 < metrics["psnr"] < 60 and 1000 < metrics["bytes_per_frame"] < 20000
    rawframes, jpeg_bytes, frames = tmp_path / "rawframes", 0, 0
    with open_store(lossless) as ref, open_store(lossy) as store:
        for r in store.videos:
            mine = store.read(r["id"], range(r["frames"]))
            exact = ref.read(r["id"], range(r["frames"]))
            assert 30 < 10 * np.log10(255 ** 2 / np.mean((mine.astype(float) - exact) ** 2))
            # zarr-python opens the array as its own (the codec comes by entry point)
            array = zarr.open_array(lossy / "videos" / r["key"], mode="r")
            np.testing.assert_array_equal(array[:], mine)
            np.testing.assert_array_equal(store.read(r["id"], [5, 1, 5]), mine[[5, 1, 5]])
            for t, frame in enumerate(exact):    # what mmaction2 users keep for Kinetics
                path = rawframes / r["key"] / f"img_{t + 1:05d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(frame).save(path, quality=90)
                jpeg_bytes += path.stat().st_size
            frames += r["frames"]
    store_bytes = sum(p.stat().st_size for p in (lossy / "videos").rglob("*") if p.is_file())
    assert store_bytes <= 1.05 * jpeg_bytes
    assert sum(1 for _ in (lossy / "videos").rglob("c.*")) < frames / 50   # few files


def test_jpeg_hdf5_store_holds_one_jpeg_per_frame(footage, tmp_path):
    import imagecodecs
    out = tmp_path / "j.h5"
    run_vssl("extract", footage, "-o", out, "--codec", "jpeg", "--quality", "80", check=0)
    with open_store(out) as store, h5py.File(out, "r") as f:
        r = store.videos[0]
        frames = store.read(r["id"], range(r["frames"]))
        dataset = f["videos"][r["key"]]
        assert dataset.attrs["codec"] == "jpeg" and len(dataset) == r["frames"]
        np.testing.assert_array_equal(imagecodecs.jpeg8_decode(dataset[3].tobytes()),
                                      frames[3])
    assert "up to date" in run_vssl("extract", footage, "-o", out, "--codec", "jpeg",
                                    "--quality", "80").stderr
    proc = run_vssl("extract", footage, "-o", out, "--quality", "90", check=2)
    assert "quality 80 -> 90" in proc.stderr


def test_a_damaged_jpeg_shard_is_found_and_repaired(footage, tmp_path):
    out = tmp_path / "j.zarr"
    run_vssl("extract", footage, "-o", out, "--codec", "jpeg", "--chunk-frames", "16",
             check=0)
    r = next(iter(videos_table(out).values()))
    shard = out / "videos" / r["key"] / "c.1.0.0.0"
    shard.write_bytes(shard.read_bytes()[:-40])              # a torn index
    with open_store(out) as store, pytest.raises(Exception, match="shard 1's index"):
        store.read(r["id"], range(16, 20))
    fixed = run_vssl("extract", footage, "-o", out, "--verify", check=0)
    assert "extracting it again" in fixed.stderr
    with open_store(out) as store:
        assert store.read(r["id"], range(r["frames"])).shape[0] == r["frames"]


def _same_stores(a: Path, b: Path) -> None:
    ma, mb = manifest_of(a), manifest_of(b)
    assert ma["id"] == mb["id"]
    with open_store(a) as x, open_store(b) as y:
        assert [r["id"] for r in x.videos] == [r["id"] for r in y.videos]
        for r in x.videos:
            idx = range(r["frames"])
            np.testing.assert_array_equal(x.read(r["id"], idx), y.read(r["id"], idx))
            np.testing.assert_array_equal(x.timestamps(r["id"]), y.timestamps(r["id"]))


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    for i in range(8):
        make_video(folder / f"c{i % 2}" / f"v{i}.mp4", frames=40 + 5 * i, size="160x120",
                   source="mandelbrot" if i % 2 else "testsrc2")
    (folder / "c0" / "broken.mp4").write_text("not a video\n" * 10)
    return folder


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_shards_then_a_plain_run_equal_one_run(many, tmp_path, suffix):
    single, sharded = tmp_path / f"one{suffix}", tmp_path / f"s{suffix}"
    run_vssl("extract", many, "-o", single, check=0)
    for k in (1, 2, 3):
        part = run_vssl("extract", many, "-o", sharded, "--shard", f"{k}/3", check=0)
        assert part.stdout.strip() == str(Path(f"{sharded}.shards") / f"{k}-of-3{suffix}")
    assert not sharded.exists()                 # shards never touch the store itself
    merged = run_vssl("extract", many, "-o", sharded, check=0)
    assert "merged shard 3-of-3" in merged.stderr and "extracted 0 videos" in merged.stderr
    _same_stores(single, sharded)
    assert not Path(f"{sharded}.shards").exists()
    assert "up to date" in run_vssl("extract", many, "-o", sharded).stderr


def test_a_killed_shard_is_rerun_and_the_merge_still_equals_one_run(many, tmp_path):
    single, sharded = tmp_path / "one.zarr", tmp_path / "s.zarr"
    run_vssl("extract", many, "-o", single, "--short-side", "0", check=0)
    run_vssl("extract", many, "-o", sharded, "--short-side", "0", "--shard", "1/2", check=0)
    proc = subprocess.Popen([sys.executable, "-m", "vssl_cli", "extract", str(many), "-o",
                             str(sharded), "--short-side", "0", "--shard", "2/2", "-j", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = Path(f"{sharded}.shards") / "2-of-2.zarr"
    deadline = time.time() + 60
    while not list((part / "videos").glob("*-*")) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    # The plain run leaves the unfinished shard for later and merges nothing of it...
    early = run_vssl("extract", many, "-o", sharded, "--short-side", "0", "--dry-run",
                     check=0)
    assert early.returncode == 0
    # ... rerunning the shard finishes it, and the merge equals one run.
    run_vssl("extract", many, "-o", sharded, "--short-side", "0", "--shard", "2/2", check=0)
    run_vssl("extract", many, "-o", sharded, "--short-side", "0", check=0)
    _same_stores(single, sharded)


def test_a_running_shard_is_not_merged(many, tmp_path):
    from vssl_cli.artifacts import exclusive_lock
    sharded = tmp_path / "s.zarr"
    run_vssl("extract", many, "-o", sharded, "--shard", "1/2", check=0)
    with exclusive_lock(Path(f"{sharded}.shards") / "1-of-2.zarr"):
        proc = run_vssl("extract", many, "-o", sharded, check=0)
    assert "1-of-2.zarr is not merged" in proc.stderr and "another vssl process" in proc.stderr
    assert (Path(f"{sharded}.shards") / "1-of-2.zarr").exists()
    assert manifest_of(sharded)["metrics"]["videos"] == 9      # the plain run did them all
    bad = run_vssl("extract", many, "-o", sharded, "--shard", "3/2", check=2)
    assert "K must be between 1 and N" in bad.stderr
