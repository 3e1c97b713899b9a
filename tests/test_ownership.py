"""What is not ours is never touched: folders and stores of other tools at ``-o``, files
beside the output where vssl keeps its lock, a full disk under every store writer, and
store arrays another tool rewrote. Each case reproduces a report first."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from conftest import manifest_of, run_vssl, videos_table

SYNTH = ["--classes", "1", "--videos-per-class", "3", "--frames", "4", "--size", "16"]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def one_error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "internal error" not in proc.stderr \
        and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# -- 1. synth onto a folder that merely holds a synth.json -------------------------------

def test_synth_never_replaces_a_folder_holding_a_planted_synth_json(tmp_path):
    proj = tmp_path / "proj"
    (proj / "code").mkdir(parents=True)
    (proj / "synth.json").write_text("{}")
    (proj / "notes.txt").write_text("x")
    (proj / "code" / "train.py").write_text("print()")
    before = tree(proj)
    proc = run_vssl("synth", proj, *SYNTH, check=2)
    assert "not a vssl artifact" in one_error_line(proc)
    assert tree(proj) == before


def test_synth_never_deletes_a_file_it_did_not_write_beside_its_own_dataset(tmp_path):
    """A real synth dataset with one file of the user's added: not replaced either."""
    ds = tmp_path / "ds"
    run_vssl("synth", ds, *SYNTH, check=0)
    run_vssl("synth", ds, *SYNTH, "--seed", "1", check=0)     # ours: replaced
    (ds / "UCF-101" / "mine.txt").write_text("keep")
    before = tree(ds)
    run_vssl("synth", ds, *SYNTH, "--seed", "2", check=2)
    assert tree(ds) == before
    # a synth.json copied from a real dataset into another folder does not make it ours
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(ds / "synth.json", other / "synth.json")
    (other / "notes.txt").write_text("x")
    run_vssl("synth", other, *SYNTH, "--seed", "3", check=2)
    assert (other / "notes.txt").read_text() == "x"


# -- 2. extract onto another tool's Zarr group or HDF5 file ------------------------------

def foreign_zarr(path: Path) -> None:
    group = zarr.open_group(path, mode="w")
    group.create_array("videos/x", data=np.arange(96, dtype=np.uint8).reshape(2, 4, 4, 3))
    group.create_array("incoming", data=np.ones(5))
    group.create_array("labels", data=np.arange(3))


def foreign_hdf5(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["videos/x"] = np.arange(96, dtype=np.uint8).reshape(2, 4, 4, 3)
        f["incoming"] = np.ones(5)
        f["labels"] = np.arange(3)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
@pytest.mark.parametrize("force", [False, True])
def test_extract_never_takes_over_another_tool_s_store(suffix, force, synth_dir, tmp_path):
    out = tmp_path / f"it{suffix}"
    (foreign_zarr if suffix == ".zarr" else foreign_hdf5)(out)
    before = tree(out) if out.is_dir() else out.read_bytes()
    proc = run_vssl("extract", synth_dir, "-o", out, *(["--force"] if force else []),
                    check=2)
    assert "not a vssl artifact" in one_error_line(proc)
    assert (tree(out) if out.is_dir() else out.read_bytes()) == before
    assert not list(tmp_path.glob(f".it{suffix}*")) and not list(tmp_path.glob("*.lock"))


def test_a_store_of_ours_killed_before_its_manifest_is_still_taken_over(synth_dir, tmp_path):
    """The mark vssl writes when it creates a store keeps a killed extraction resumable."""
    out = tmp_path / "s.zarr"
    run_vssl("extract", synth_dir, "-o", out, check=0)
    (out / "manifest.json").unlink()            # as if killed before its first checkpoint
    assert json.loads((out / "zarr.json").read_text())["attributes"]["vssl"] == "frames store"
    run_vssl("extract", synth_dir, "-o", out, check=0)
    assert len(videos_table(out)) == 30


# -- 3. the lock beside the output -----------------------------------------------------

def test_a_user_file_where_the_lock_goes_is_refused_untouched(synth_dir, tmp_path):
    out = tmp_path / "out.zarr"
    lock = tmp_path / "out.zarr.lock"
    lock.write_text("mine")
    proc = run_vssl("extract", synth_dir, "-o", out, check=2)
    assert "is not a vssl lock" in one_error_line(proc)
    assert lock.read_text() == "mine" and not out.exists()


def test_a_link_where_the_lock_goes_is_never_followed(synth_dir, tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("precious")
    (tmp_path / "out.zarr.lock").symlink_to(target)
    run_vssl("extract", synth_dir, "-o", tmp_path / "out.zarr", check=2)
    assert target.read_text() == "precious" and (tmp_path / "out.zarr.lock").is_symlink()


def test_a_refused_command_leaves_a_user_lock_file_alone(tiny_frames, tmp_path):
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "f").write_text("u")
    (tmp_path / "userdir.lock").write_text("keep")
    run_vssl("pretrain", tiny_frames, "-o", user, "--epochs", "0", check=2)
    assert (tmp_path / "userdir.lock").read_text() == "keep"
    (tmp_path / "userdir.lock").unlink()
    run_vssl("pretrain", tiny_frames, "-o", user, "--epochs", "0", check=2)
    assert not (tmp_path / "userdir.lock").exists() and (user / "f").read_text() == "u"


def test_a_stale_lock_of_ours_is_taken_over_and_removed(synth_dir, tmp_path):
    for i, text in enumerate(["vssl lock, pid 999999\n", "12345"]):   # ours, and older ours
        out = tmp_path / f"s{i}.zarr"
        Path(f"{out}.lock").write_text(text)
        run_vssl("extract", synth_dir, "-o", out, check=0)
        assert not Path(f"{out}.lock").exists()


def test_the_root_as_output_touches_no_dot_lock(tiny_frames, tmp_path):
    (tmp_path / ".lock").write_text("mine")
    proc = subprocess.run([*run_vssl_argv(), "pretrain", str(tiny_frames), "-o", "/",
                           "--epochs", "0"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and (tmp_path / ".lock").read_text() == "mine", proc.stderr


def test_pretrain_into_the_empty_current_folder(tiny_frames, tmp_path):
    """`-o .` locks ../NAME.lock, not ./..lock inside the folder it is about to fill."""
    here = tmp_path / "here"
    here.mkdir()
    proc = subprocess.run([*run_vssl_argv(), "pretrain", str(tiny_frames), "-o", ".",
                           "--epochs", "0", "--backbone", "r3d18-tiny", "-j", "0",
                           "--batch-size", "4"],
                          cwd=here, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert manifest_of(here)["kind"] == "model" and not list(tmp_path.glob("*.lock"))


def run_vssl_argv() -> list[str]:
    import sys
    return [sys.executable, "-m", "vssl_cli"]


# -- 4. a full disk under every writer ---------------------------------------------------

@contextlib.contextmanager
def small_disk(path: Path, megabytes: int):
    """A tmpfs of ``megabytes`` at ``path`` (root with mount rights only: else skipped)."""
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                           str(path)], capture_output=True)
    if proc.returncode:
        pytest.skip("no rights to mount a small tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave_mb: float) -> Path:
    """Fill ``disk`` but ``leave_mb`` (0: until a write fails)."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, free - int(leave_mb * 2**20)))
        while not leave_mb:
            f.write(b"\0" * 4096)
    return filler


@pytest.fixture(scope="module")
def big_synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("big") / "ds"
    run_vssl("synth", out, "--classes", "3", "--videos-per-class", "4", "--frames", "48",
             "--size", "128", "--backgrounds", "0", check=0)
    return out


@pytest.mark.parametrize("suffix,workers", [(".h5", 1), (".h5", 2), (".zarr", 2)])
def test_extract_on_a_full_disk_is_one_line_and_resumes_when_space_is_freed(
        suffix, workers, big_synth, tmp_path):
    with small_disk(tmp_path / "disk", 40) as disk:
        filler = fill(disk, 14)
        out = disk / f"x{suffix}"
        args = ["extract", big_synth, "-o", out, "-j", workers, "--short-side", "128",
                "--codec", "none"]
        proc = run_vssl(*args, check=1)
        assert "no space left on the device" in one_error_line(proc)
        filler.unlink()
        done = run_vssl(*args, check=0)
        assert "extracted" in done.stderr and len(videos_table(out)) == 12
        stored = manifest_of(out)["metrics"]
        assert stored["videos_failed"] == 0
        assert not [p for p in disk.iterdir() if p.name != out.name]


def test_every_writer_on_a_full_disk_is_one_line(tiny_frames, random_run, tmp_path):
    with small_disk(tmp_path / "disk", 8) as disk:
        fill(disk, 0)
        commands = [["synth", disk / "s", *SYNTH],
                    ["pretrain", tiny_frames, "-o", disk / "run", "--epochs", "0", "-j", "0"],
                    ["probe", random_run, "--data", tiny_frames, "-o", disk / "p", "-j", "0",
                     "--clips", "1"],
                    ["export", random_run, "--format", "safetensors", "-o", disk / "e"]]
        for args in commands:
            proc = run_vssl(*args)
            assert proc.returncode == 1, (args, proc.stderr)
            line = one_error_line(proc)
            assert "No space left on device" in line or "no space left" in line, line
        assert [p.name for p in disk.iterdir()] == ["filler"]


# -- 5 and 6. arrays another tool rewrote, frame counts raised in the manifest ----------

@pytest.fixture()
def store_copy(tiny_frames, tmp_path):
    out = tmp_path / "frames.zarr"
    shutil.copytree(tiny_frames, out)
    return out


def first_key(store: Path) -> str:
    return manifest_of(store)["outputs"]["videos"][0]["key"]


@pytest.mark.parametrize("rewrite", ["float32", "uint16", "3-D"])
def test_an_array_of_the_wrong_dtype_or_rank_is_one_line(rewrite, store_copy, random_run,
                                                         tmp_path):
    group = zarr.open_group(store_copy, mode="a")
    key = first_key(store_copy)
    frames = group["videos"][key][:]
    del group["videos"][key]
    data = frames[..., 0] if rewrite == "3-D" else frames.astype(rewrite)
    group.create_array(f"videos/{key}", data=data)
    proc = run_vssl("probe", random_run, "--data", store_copy, "-o", tmp_path / "p",
                    "--clips", "1", "-j", "0", check=1)
    assert "where the manifest says uint8" in one_error_line(proc)


def test_an_hdf5_array_of_the_wrong_dtype_is_one_line(synth_dir, random_run, tmp_path):
    store = tmp_path / "s.h5"
    run_vssl("extract", synth_dir, "-o", store, check=0)
    with h5py.File(store, "a") as f:
        key = sorted(f["videos"])[0]
        data = f["videos"][key][:]
        del f["videos"][key]
        f["videos"][key] = data.astype(np.uint16)
    proc = run_vssl("probe", random_run, "--data", store, "-o", tmp_path / "p", "--clips",
                    "1", "-j", "0", check=1)
    assert "uint16 array" in one_error_line(proc)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_frame_count_beyond_the_array_is_one_line(workers, store_copy, tmp_path):
    """`frames: 1e9` passes the schema; the array's own length bounds it (no 7 GiB
    allocation), and an error in a DataLoader worker is one line too."""
    manifest = json.loads((store_copy / "manifest.json").read_text())
    manifest["outputs"]["videos"][0]["frames"] = 10**9
    (store_copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_vssl("pretrain", store_copy, "-o", tmp_path / "run", "--epochs", "1",
                    "--backbone", "r3d18-tiny", "--batch-size", "2", "-j", workers,
                    "--set", "aug.size=32", "--set", "clip_len=4", check=1)
    assert "(1000000000, " in one_error_line(proc)
    assert "leaked" not in proc.stderr
