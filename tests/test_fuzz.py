"""Property tests over whole commands: mutated manifests and hostile option values never
end in "internal error" and never touch a file outside the command's output.

Commands run in-process (one interpreter: no start-up per example) on copies of the tiny
store and run; training commands are resolved with --dry-run, where every configuration
error must already be caught."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import vssl_in_process

EXAMPLES = int(os.environ.get("VSSL_FUZZ_EXAMPLES", "20"))   # more for a longer hunt
HOSTILE = [None, -1, 0, 1, 1e12, -1e12, 1e-12, math.nan, math.inf, "", "x", "../../escape",
           "/etc/passwd", [], {}, True, [1e9, 1e9], {"a": 1}]
HOSTILE_TEXT = ["nan", "inf", "-1", "0", "1e30", "100000000000000000000000", "", "x",
                "../../escape", "-0.5", "3.5", "1,2", "1e9", "1e23", "1e300", "-1e300",
                "99999999", "999999999999", "4096", "99999x99999", "2x2"]


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and skip not in p.parents and p != skip}


def leaf_paths(obj, prefix=()):
    """Paths to every value of a JSON document (lists: their first item only)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from leaf_paths(v, prefix + (k,))
    elif isinstance(obj, list) and obj:
        yield prefix + (0,)
        yield from leaf_paths(obj[0], prefix + (0,))


def mutate(doc, path, value, delete: bool):
    target = doc
    for key in path[:-1]:
        target = target[key]
    if delete and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = value


@pytest.fixture(scope="module")
def sandbox(tiny_frames, random_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(tiny_frames, root / "frames.zarr")
    shutil.copytree(random_run, root / "run")
    return root


COMMANDS = {
    "probe": lambda r, o: ["probe", r / "run", "--data", r / "frames.zarr", "-o", o,
                           "--clips", "1", "-j", "0"],
    "retrieve": lambda r, o: ["retrieve", r / "run", "--data", r / "frames.zarr", "-o", o,
                              "--clips", "1", "-j", "0"],
    "export": lambda r, o: ["export", r / "run", "--format", "safetensors", "-o", o],
    "finetune": lambda r, o: ["finetune", r / "run", "--data", r / "frames.zarr", "-o", o,
                              "--dry-run"],
    "inspect": lambda r, o: ["inspect", "--videos", r / "frames.zarr", r / "run"],
    "extract": lambda r, o: ["extract", r / "src", "-o", r / "frames.zarr", "--prune",
                             "--dry-run"],
}


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_manifests_never_crash_nor_touch_other_files(sandbox, tmp_path, data):
    artifact = data.draw(st.sampled_from(["frames.zarr", "run"]))
    manifest_file = sandbox / artifact / "manifest.json"
    original = manifest_file.read_text()
    doc = json.loads(original)
    paths = sorted(set(leaf_paths(doc)), key=str)
    path = data.draw(st.sampled_from(paths))
    value = data.draw(st.sampled_from(HOSTILE))
    mutate(doc, path, value, data.draw(st.booleans()))
    command = data.draw(st.sampled_from(sorted(COMMANDS)))
    out = tmp_path / f"out-{command}"
    shutil.rmtree(out, ignore_errors=True)
    (sandbox / "src").mkdir(exist_ok=True)
    manifest_file.write_text(json.dumps(doc))
    try:
        before = snapshot(sandbox, out)
        code, _, err = vssl_in_process(*COMMANDS[command](sandbox, out))
        after = snapshot(sandbox, out)
    finally:
        manifest_file.write_text(original)
    assert "internal error" not in err and "Traceback" not in err, (path, value, err)
    assert code in (0, 1, 2), (path, value, code, err)
    if code:
        assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1, err
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed <= {str(manifest_file)}, changed


def _value_options(command_name: str) -> list[str]:
    from vssl_cli.cli import cli
    command = cli.get_command(None, command_name)
    return sorted(opt.opts[-1] for opt in command.params
                  if not getattr(opt, "is_flag", False) and opt.param_type_name == "option"
                  and opt.opts[-1].startswith("--") and opt.opts[-1] not in ("--output",))


TRAINING = {
    "pretrain": lambda r, o: ["pretrain", r / "frames.zarr", "-o", o, "--dry-run"],
    "finetune": lambda r, o: ["finetune", r / "run", "--data", r / "frames.zarr", "-o", o,
                              "--dry-run"],
    "extract": lambda r, o: ["extract", r / "frames.zarr", "-o", o, "--dry-run"],
}


@settings(max_examples=EXAMPLES * 3 // 2, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_option_values_are_caught_when_the_config_is_resolved(sandbox, tmp_path,
                                                                      data):
    command = data.draw(st.sampled_from(sorted(TRAINING)))
    option = data.draw(st.sampled_from(_value_options(command)))
    value = data.draw(st.sampled_from(HOSTILE_TEXT))
    extra = [option, value]
    if data.draw(st.booleans()) and command != "extract":
        key = data.draw(st.sampled_from(["lr", "seed", "params.clip_len", "params.tau",
                                         "aug.size", "aug.scale", "aug.flip_p", "method",
                                         "params.stride", "batch_size", "warmup_epochs"]))
        extra = ["--set", f"{key}={value}"]
    out = tmp_path / "out"
    before = snapshot(sandbox, out)
    code, stdout, err = vssl_in_process(*TRAINING[command](sandbox, out), *extra)
    assert "internal error" not in err and "Traceback" not in err, (extra, err)
    assert code in (0, 1, 2), (extra, code, err)
    if code:
        assert stdout == "" and len([ln for ln in err.splitlines() if "error:" in ln]) == 1
    assert snapshot(sandbox, out) == before and not out.exists()


# -- what is not ours: foreign outputs, files where the lock goes, rewritten arrays ------

def _foreign(kind: str, path: Path) -> None:
    """Something of a user's or another tool's at ``path``."""
    import h5py
    import numpy as np
    import zarr
    if kind == "zarr group":
        group = zarr.open_group(path.with_suffix(".zarr"), mode="w")
        group.create_array("videos/x", data=np.zeros((2, 4, 4, 3), np.uint8))
        group.create_array("incoming", data=np.ones(3))
    elif kind == "hdf5 file":
        with h5py.File(path.with_suffix(".h5"), "w") as f:
            f["videos/x"] = np.zeros((2, 4, 4, 3), np.uint8)
    elif kind == "folder with synth.json":
        path.mkdir()
        (path / "synth.json").write_text('{"id": "x", "config": {}, "videos": []}')
        (path / "notes.txt").write_text("mine")
    elif kind == "plain file":
        path.write_text("mine")


def _outputs_of(kind: str, out: Path) -> Path:
    return {"zarr group": out.with_suffix(".zarr"),
            "hdf5 file": out.with_suffix(".h5")}.get(kind, out)


WRITERS = {
    "extract": lambda r, o: ["extract", r / "src", "-o", o],
    "synth": lambda r, o: ["synth", o, "--classes", "1", "--videos-per-class", "3",
                           "--frames", "4", "--size", "16"],
    "pretrain": lambda r, o: ["pretrain", r / "frames.zarr", "-o", o, "--epochs", "0",
                              "-j", "0", "--batch-size", "4"],
    "probe": lambda r, o: ["probe", r / "run", "--data", r / "frames.zarr", "-o", o,
                           "--clips", "1", "-j", "0"],
    "export": lambda r, o: ["export", r / "run", "--format", "safetensors", "-o", o],
}


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_foreign_outputs_and_files_where_the_lock_goes_are_never_touched(sandbox, tmp_path,
                                                                         data):
    import subprocess as sp
    import uuid

    from conftest import make_video
    src = sandbox / "src"
    if not list(src.rglob("*.mp4")):
        make_video(src / "a" / "one.mp4", frames=6)
    command = data.draw(st.sampled_from(sorted(WRITERS)))
    kind = data.draw(st.sampled_from(["zarr group", "hdf5 file", "folder with synth.json",
                                      "plain file", "nothing"]))
    sidecar = data.draw(st.sampled_from(["none", "user file", "link", "folder", "fifo"]))
    work = tmp_path / uuid.uuid4().hex
    work.mkdir()
    _foreign(kind, work / "out")
    out = _outputs_of(kind, work / "out")
    lock = Path(f"{out}.lock")
    target = work / "target.txt"
    target.write_text("precious")
    if sidecar == "user file":
        lock.write_text("mine")
    elif sidecar == "link":
        lock.symlink_to(target)
    elif sidecar == "folder":
        lock.mkdir()
    elif sidecar == "fifo":
        os.mkfifo(lock)
    before = snapshot(work, work / "nothing") | {"links": str(sorted(
        str(p) for p in work.rglob("*") if p.is_symlink()))}
    code, stdout, err = vssl_in_process(*WRITERS[command](sandbox, out))
    assert "internal error" not in err and "Traceback" not in err, (command, kind, err)
    # synth takes no lock (it builds a new folder and swaps it in): a file where the lock
    # would go is simply not its business
    lockless = command == "synth" and kind == "nothing"
    if (kind != "nothing" or sidecar != "none") and not lockless:   # refused, untouched
        assert code == 2 and len([ln for ln in err.splitlines() if "error:" in ln]) == 1, \
            (command, kind, sidecar, code, err)
        after = snapshot(work, work / "nothing") | {"links": str(sorted(
            str(p) for p in work.rglob("*") if p.is_symlink()))}
        assert after == before, (command, kind, sidecar)
        assert target.read_text() == "precious"
        if sidecar == "fifo":
            assert sp.run(["test", "-p", str(lock)]).returncode == 0
    elif lockless and sidecar != "none":
        assert code == 0, err
        assert target.read_text() == "precious" and os.path.lexists(lock)
    else:
        assert code == 0, err
        assert not lock.exists()


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_store_arrays_of_a_wrong_dtype_or_rank_are_one_line(sandbox, tmp_path, data):
    import numpy as np
    import zarr
    store = tmp_path / "frames.zarr"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(sandbox / "frames.zarr", store)
    manifest = json.loads((store / "manifest.json").read_text())
    records = manifest["outputs"]["videos"]
    record = records[data.draw(st.integers(0, len(records) - 1))]
    group = zarr.open_group(store, mode="a")
    frames = group["videos"][record["key"]][:]
    change = data.draw(st.sampled_from(["float32", "uint16", "int8", "bool", "float64",
                                        "3-D", "5-D", "transposed", "fewer frames"]))
    if change == "3-D":
        frames = frames[..., 0]
    elif change == "5-D":
        frames = frames[..., None]
    elif change == "transposed":
        frames = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
    elif change == "fewer frames":
        frames = frames[:-1]
    else:
        frames = frames.astype(change)
    del group["videos"][record["key"]]
    group.create_array(f"videos/{record['key']}", data=frames)
    command = data.draw(st.sampled_from(["probe", "retrieve", "pretrain"]))
    args = {"probe": ["probe", sandbox / "run", "--data", store, "--clips", "2", "-j", "0"],
            "retrieve": ["retrieve", sandbox / "run", "--data", store, "--clips", "1",
                         "-j", "0"],
            "pretrain": ["pretrain", store, "--epochs", "1", "-j", "0", "--batch-size", "30",
                         "--backbone", "r3d18-tiny", "--set", "aug.size=32",
                         "--set", "clip_len=4", "--set", "split=all"]}[command]
    code, _, err = vssl_in_process(*args, "-o", tmp_path / "out")
    assert code == 1 and "where the manifest says uint8" in err, (change, command, err)
    assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1, err


# -- numeric extremes on the evaluation commands, special files wherever a file is read --

EVALUATIONS = {
    "probe": lambda r, o: ["probe", r / "run", "--data", r / "frames.zarr", "-o", o, "-j", "0"],
    "retrieve": lambda r, o: ["retrieve", r / "run", "--data", r / "frames.zarr", "-o", o,
                              "-j", "0"],
    "export": lambda r, o: ["export", r / "run", "--data", r / "frames.zarr", "-o", o,
                            "--format", "embeddings", "-j", "0"],
}
EXTREMES = ["nan", "inf", "-1", "1e9", "1e23", "1e300", "-1e300", "999999999999",
            "99999x99999", ""]


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_numeric_extremes_of_evaluation_options_are_one_line(sandbox, tmp_path, data):
    command = data.draw(st.sampled_from(sorted(EVALUATIONS)))
    option = data.draw(st.sampled_from([o for o in _value_options(command)
                                        if o not in ("--data", "--query", "--boundaries")]))
    value = data.draw(st.sampled_from(EXTREMES))
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    before = snapshot(sandbox, out)
    code, stdout, err = vssl_in_process(*EVALUATIONS[command](sandbox, out), option, value)
    assert "internal error" not in err and "Traceback" not in err, (command, option, err)
    assert code in (0, 1, 2), (command, option, value, code, err)
    if code:
        assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1, err
    assert snapshot(sandbox, out) == before


def _special(kind: str, path: Path) -> Path:
    """A file that is not what a reader expects at ``path`` (its name may change)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "non-UTF-8 name":
        path = path.with_name(os.fsdecode(b"n\xff" + os.fsencode(path.name)))
        path.write_bytes(b"\xff\xfe not utf-8 \x00")
    return path


READERS = {   # what reads the file: (file name, arguments with {f} for it)
    "recipe": ("r.toml", lambda r, f, o: ["pretrain", r / "frames.zarr", "-o", o,
                                          "--recipe", f, "--dry-run"]),
    "boundaries": ("b.json", lambda r, f, o: ["probe", r / "run", "--data", r / "frames.zarr",
                                              "-o", o, "--task", "boundary",
                                              "--boundaries", f]),
    "list": ("l.txt", lambda r, f, o: ["extract", f, "-o", o]),
    "csv": ("k.csv", lambda r, f, o: ["extract", f, "-o", o]),
    "manifest": ("manifest.json", lambda r, f, o: ["inspect", f.parent]),
    "metrics log": ("metrics.jsonl", lambda r, f, o: ["inspect", f.parent]),
}


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_special_files_wherever_a_file_is_read_are_one_line(sandbox, tmp_path, data):
    from conftest import run_vssl
    reader = data.draw(st.sampled_from(sorted(READERS)))
    kind = data.draw(st.sampled_from(["fifo", "/dev/zero", "folder", "binary",
                                      "non-UTF-8 name"]))
    name, argv = READERS[reader]
    work = tmp_path / f"{reader}-{kind}".replace("/", "_").replace(" ", "_")
    shutil.rmtree(work, ignore_errors=True)
    if reader in ("manifest", "metrics log"):
        shutil.copytree(sandbox / "run", work)
        (work / name).unlink(missing_ok=True)
    else:
        work.mkdir()
    target = _special(kind, work / name)
    proc = run_vssl(*argv(sandbox, target, tmp_path / "out"), timeout=60)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, \
        (reader, kind, proc.stderr)
    assert proc.returncode in (0, 1, 2), (reader, kind, proc.returncode, proc.stderr)
    if proc.returncode:
        assert len([ln for ln in proc.stderr.splitlines() if "error:" in ln]) == 1, \
            proc.stderr
