"""Real-world edge cases found on odd videos and by a hostile-input pass; each test
reproduces its report first. Footage is made with ffmpeg and compared with what ffmpeg's
own command line decodes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import (cli_frames, ffmpeg, make_video, manifest_of, run_vssl, videos_table,
                      vssl_in_process)
from vssl_cli.video.decode import DecodeParams, FrameDecoder, decode_all


def one_error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "internal error" not in proc.stderr \
        and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# -- 1. cover art is not video ----------------------------------------------------------

@pytest.fixture(scope="module")
def covers(tmp_path_factory):
    root = tmp_path_factory.mktemp("covers")
    clip = root / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-f", "lavfi", "-i", "sine",
           "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", clip)
    cover = root / "cover.jpg"
    ffmpeg("-i", clip, "-frames:v", "1", cover)
    folder = root / "src" / "a"
    folder.mkdir(parents=True)
    ffmpeg("-i", clip, "-i", cover, "-map", "0:a", "-map", "1", "-c", "copy",
           "-disposition:v:0", "attached_pic", folder / "audio_with_cover.mp4")
    ffmpeg("-i", clip, "-i", cover, "-map", "0:v", "-map", "0:a", "-map", "1", "-c", "copy",
           "-disposition:v:1", "attached_pic", folder / "video_with_cover.mp4")
    return root


def test_an_audio_file_with_cover_art_has_no_video_stream(covers, tmp_path):
    out = tmp_path / "s.zarr"
    run_vssl("extract", covers / "src", "-o", out, check=0)
    table = videos_table(out)
    audio = table["a/audio_with_cover"]
    assert audio["status"] == "error" and "no video stream" in audio["error"]
    video = table["a/video_with_cover"]
    assert video["status"] == "ok" and video["codec"] == "h264" and video["frames"] == 25
    assert not video["partial"] and video["fps"] == 25.0


# -- 2. MPEG-TS segments joined byte for byte ---------------------------------------------

def ts_segment(path: Path, source: str, size: str, offset: float | None = None) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"{source}=size={size}:rate=25", "-frames:v", "50",
           "-c:v", "libx264", "-pix_fmt", "yuv420p",
           *(["-output_ts_offset", str(offset)] if offset is not None else []), path)
    return path


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts")
    a = ts_segment(root / "a.ts", "testsrc2", "64x48")
    parts = {"clock reset": ts_segment(root / "b.ts", "mandelbrot", "64x48"),
             "clock kept": ts_segment(root / "c.ts", "mandelbrot", "64x48", offset=2.0),
             "resolution": ts_segment(root / "d.ts", "testsrc2", "80x48")}
    out = {}
    for name, b in parts.items():
        path = root / f"{name.replace(' ', '_')}.ts"
        path.write_bytes(a.read_bytes() + b.read_bytes())
        out[name] = path
    return out


@pytest.mark.parametrize("case", ["clock reset", "clock kept", "resolution"])
def test_joined_mpeg_ts_keeps_every_frame_with_times_that_never_go_back(case, joined):
    """The frame lost at the joint was the first segment's last packet, which the demuxer
    flags corrupt at any byte-level join (its continuity counter breaks): neither the
    clock reset nor the resolution change lost it. ffmpeg decodes it; so do we."""
    path = joined[case]
    decoder = FrameDecoder(path, DecodeParams(short_side=None, size=(64, 48)))
    frames = np.concatenate([b.copy() for b in decoder])
    reference = cli_frames(path, 64, 48)
    assert len(frames) == len(reference) == 100
    assert not decoder.partial, decoder.warnings
    assert np.all(np.diff(decoder.timestamps) > 0)
    if case != "resolution":     # the scaler of the second half is not the CLI's build
        np.testing.assert_array_equal(frames, reference)
    else:
        np.testing.assert_array_equal(frames[:50], reference[:50])


def test_a_joined_ts_records_its_clock_reset_and_its_real_rate(joined, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    shutil.copy(joined["clock reset"], folder / "joined.ts")
    out = tmp_path / "s.zarr"
    run_vssl("extract", folder, "-o", out, "--short-side", "0", check=0)
    record = videos_table(out)["joined"]
    assert record["frames"] == 100 and not record["partial"]
    assert record["clock_resets"] == 1 and abs(record["fps"] - 25) < 0.5


def test_a_truncated_file_still_leaves_its_torn_last_packet_out(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=30)
    cut = tmp_path / "cut.ts"
    ffmpeg("-i", path, "-c", "copy", tmp_path / "full.ts")
    data = (tmp_path / "full.ts").read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    decoder = FrameDecoder(cut, DecodeParams(short_side=None))
    frames = sum(len(b) for b in decoder)
    assert 0 < frames < 30


# -- 3. --prune and --verify on an up-to-date HDF5 store copy nothing ---------------------

def test_prune_and_verify_of_an_up_to_date_hdf5_store_copy_nothing(synth_dir, tmp_path):
    out = tmp_path / "s.h5"
    run_vssl("extract", synth_dir, "-o", out, check=0)
    before = (out.stat().st_mtime_ns, out.stat().st_ino)
    seen = []
    for flag in ("--prune", "--verify"):
        proc = subprocess.Popen([*_argv(), "extract", str(synth_dir), "-o", str(out), flag],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            seen += [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
        assert proc.returncode == 0, proc.stderr.read()
    assert not seen and (out.stat().st_mtime_ns, out.stat().st_ino) == before


def test_verify_still_repairs_a_damaged_hdf5_store(synth_dir, tmp_path):
    out = tmp_path / "s.h5"
    run_vssl("extract", synth_dir, "-o", out, check=0)
    with h5py.File(out, "a") as f:
        key = sorted(f["videos"])[0]
        del f["videos"][key]
    proc = run_vssl("extract", synth_dir, "-o", out, "--verify", check=0)
    assert "extracted 1 videos this run" in proc.stderr
    with h5py.File(out, "r") as f:
        assert key in f["videos"]


def _argv():
    import sys
    return [sys.executable, "-m", "vssl_cli"]


# -- 4. lists on stdin ---------------------------------------------------------------------

def test_a_listed_file_whose_name_starts_with_a_hash_is_that_file(tmp_path):
    make_video(tmp_path / "# hash.mp4", frames=6)
    proc = subprocess.run([*_argv(), "extract", "-", "-o", str(tmp_path / "s.zarr")],
                          input="# hash.mp4\n# a comment\n", capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list(videos_table(tmp_path / "s.zarr")) == ["# hash"]


def test_a_directory_in_a_list_is_refused_as_one(videos, tmp_path):
    proc = run_vssl("extract", "-", "-o", tmp_path / "s.zarr", input=f"{videos / 'a'}\n",
                    check=2)
    assert "is a directory" in one_error_line(proc)


def test_a_video_listed_twice_with_two_labels_is_refused(videos, tmp_path):
    one = videos / "a" / "one.mp4"
    proc = run_vssl("extract", "-", "-o", tmp_path / "s.zarr",
                    input=f"{one} cats\n{one} dogs\n", check=2)
    assert "listed twice" in one_error_line(proc)
    run_vssl("extract", "-", "-o", tmp_path / "s.zarr", input=f"{one} cats\n{one} cats\n",
             check=0)


# -- 5. Matroska's millisecond time base is not a variable rate ----------------------------

@pytest.mark.parametrize("rate", ["30", "30000/1001", "24", "25"])
def test_constant_rate_matroska_is_not_variable(rate, tmp_path):
    folder = tmp_path / "src"
    make_video(folder / "c.mkv", frames=40, rate=rate)
    out = tmp_path / "s.zarr"
    run_vssl("extract", folder, "-o", out, check=0)
    assert videos_table(out)["c"]["vfr"] is False


def test_variable_rate_matroska_is_still_variable(tmp_path):
    folder = tmp_path / "src"
    make_video(folder / "v.mkv", frames=60, rate=30,
               extra=["-vf", "select='not(between(n,10,20))'", "-fps_mode", "vfr"])
    out = tmp_path / "s.zarr"
    run_vssl("extract", folder, "-o", out, check=0)
    assert videos_table(out)["v"]["vfr"] is True


# -- 6. a Kinetics row without a youtube_id ------------------------------------------------

def test_a_kinetics_row_with_an_empty_youtube_id_is_a_bad_line(tmp_path):
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nabc,x1,0,10,train\n"
                   "abc,,0,10,train\n")
    proc = run_vssl("extract", csv, "-o", tmp_path / "s.zarr", check=2)
    assert "line 3: empty youtube_id" in one_error_line(proc)


# -- 7 and 8. inputs that ended in "internal error", hangs, invalid JSON ------------------

@pytest.fixture()
def specials(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    return tmp_path


@pytest.mark.parametrize("args", [
    ["extract", "{src}", "-o", "{tmp}/x.zarr", "--fps", "nan"],
    ["extract", "{src}", "-o", "{tmp}/x.zarr", "--fps", "1e300"],
    ["extract", "{src}", "-o", "{tmp}/x.zarr", "--size", "99999x99999"],
    ["extract", "{src}", "-o", "{tmp}/x.zarr", "--short-side", "99999999"],
    ["extract", "{src}", "-o", "{tmp}/x.zarr", "--codec", "jpeg", "--chunk-frames",
     "999999999999"],
    ["probe", "{run}", "--data", "{frames}", "-o", "{tmp}/p", "--seed", "-1"],
    ["probe", "{run}", "--data", "{frames}", "-o", "{tmp}/p", "--seed", "1e23"],
    ["finetune", "{run}", "--data", "{frames}", "-o", "{tmp}/f", "--set",
     "params.num_classes=2"],
    ["finetune", "{run}", "--data", "{frames}", "-o", "{tmp}/f", "--set",
     "params.num_classes=0"],
    ["pretrain", "{frames}", "-o", "{tmp}/r", "--set", "aug.size=4096", "--dry-run"],
    ["pretrain", "{frames}", "-o", "{tmp}/r", "--device", "mps", "--epochs", "0"],
    ["pretrain", "{frames}", "-o", "{tmp}/r", "--recipe", "{tmp}/zero"],
    ["pretrain", "{frames}", "-o", "{tmp}/r", "--recipe", "{tmp}/fifo"],
    ["extract", "{tmp}/zero", "-o", "{tmp}/x.zarr"],
    ["extract", "{tmp}/fifo", "-o", "{tmp}/x.zarr"],
    ["probe", "{run}", "--data", "{frames}", "-o", "{tmp}/p", "--task", "boundary",
     "--boundaries", "{tmp}/zero"],
    ["probe", "{run}", "--data", "{frames}", "-o", "{tmp}/p", "--task", "boundary",
     "--boundaries", "{tmp}/fifo"],
    ["probe", "{run}", "--data", "{frames}", "-o", "{frames}/videos/p"],
])
def test_hostile_inputs_are_one_line(args, specials, tiny_frames, random_run, synth_dir):
    argv = [a.format(src=synth_dir, tmp=specials, frames=tiny_frames, run=random_run)
            for a in args]
    proc = run_vssl(*argv, timeout=60)
    assert proc.returncode in (1, 2), proc.stderr
    one_error_line(proc)


@pytest.mark.parametrize("content", [b"\x89\xff\x00binary", b'{"videos":[1]}',
                                     b'{"videos":[{"video":5}]}', b'{"a": 7}',
                                     b'{"a": [NaN]}'])
def test_bad_boundary_files_are_one_line(content, tiny_frames, random_run, tmp_path):
    path = tmp_path / "b.json"
    path.write_bytes(content)
    proc = run_vssl("probe", random_run, "--data", tiny_frames, "-o", tmp_path / "p",
                    "--task", "boundary", "--boundaries", path, check=1)
    assert "boundaries" in one_error_line(proc)


def test_a_class_index_line_with_a_non_ascii_digit_is_a_bad_line(synth_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(synth_dir, src)
    index = src / "ucfTrainTestlist" / "classInd.txt"
    index.write_text("1 MoveRight\n² MoveLeft\n")
    proc = run_vssl("extract", src, "-o", tmp_path / "s.zarr", check=2)
    assert "line 2" in one_error_line(proc)


def test_a_class_folder_name_that_is_not_utf8_is_stored_as_text(random_run, tmp_path):
    root = tmp_path / "src"
    for name in (b"cl\xffa", b"clb"):
        for i in range(3):
            make_video(Path(os.fsdecode(root)) / os.fsdecode(name) / f"v{i}.mp4", frames=8,
                       source="mandelbrot" if name == b"clb" else "testsrc2")
    out = tmp_path / "s.zarr"
    run_vssl("extract", root, "-o", out, "--test-fraction", "0.34", check=0)
    assert "cl\ufffda" in manifest_of(out)["outputs"]["classes"]
    json.loads((out / "manifest.json").read_bytes().decode("utf-8"))   # valid UTF-8
    run_vssl("probe", random_run, "--data", out, "-o", tmp_path / "p", "--clips", "1",
             "-j", "0", check=0)


@pytest.mark.parametrize("field,value", [("warnings", [1, 2]), ("warnings", 5),
                                         ("warnings", None), ("error", None)])
def test_a_tampered_record_is_one_line_for_every_reader(field, value, tiny_frames, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_frames, store)
    manifest = json.loads((store / "manifest.json").read_text())
    record = manifest["outputs"]["videos"][0]
    if field == "error":
        record["status"] = "error"
        record.pop("error", None)
    else:
        record.update(partial=True, warnings=value)
    (store / "manifest.json").write_text(json.dumps(manifest))
    for args in (["inspect", "--videos", store], ["extract", tmp_path, "-o", store]):
        code, _, err = vssl_in_process(*args)
        assert "internal error" not in err and "Traceback" not in err, err


def test_json_nested_too_deeply_is_a_corrupt_file(tiny_frames, random_run, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_frames, store)
    text = (store / "manifest.json").read_text()
    (store / "manifest.json").write_text(text.replace('"config": {', '"config": {"deep": '
                                                      + "[" * 100000 + "]" * 100000 + ",", 1))
    proc = run_vssl("inspect", store, check=1)
    assert "nested too deeply" in one_error_line(proc)
    run = tmp_path / "run"
    shutil.copytree(random_run, run)
    (run / "metrics.jsonl").write_text("[" * 100000 + "]" * 100000 + "\n")
    run_vssl("inspect", run, check=0)


def test_an_hdf5_shard_missing_a_video_is_left_out_not_a_crash(videos, tmp_path):
    make_video(videos / "b" / "four.mp4", frames=8, source="mandelbrot")
    make_video(videos / "b" / "five.mp4", frames=9)
    out = tmp_path / "s.h5"
    for k in (1, 2):
        run_vssl("extract", videos, "-o", out, "--shard", f"{k}/2", check=0)
    shard = sorted((tmp_path).glob("**/*.h5"))
    shard = [p for p in shard if p != out][0]
    with h5py.File(shard, "a") as f:
        del f["videos"][sorted(f["videos"])[0]]
    for _ in range(2):
        proc = run_vssl("extract", videos, "-o", out, check=0)
        assert "internal error" not in proc.stderr
    assert len([r for r in videos_table(out).values() if r["status"] == "ok"]) == 5


@pytest.mark.parametrize("damage", ["garbage", "pickle", "shapes", "fifo"])
def test_tampered_saved_features_are_one_line(damage, tiny_frames, random_run, tmp_path):
    out = tmp_path / "r"
    run_vssl("retrieve", random_run, "--data", tiny_frames, "-o", out, "--clips", "1",
             "-j", "0", check=0)
    features = out / "features.npz"
    if damage == "garbage":
        features.write_bytes(b"PK\x03\x04 not a zip at all")
    elif damage == "pickle":
        np.savez(features, gallery=np.array([object()], dtype=object))
    elif damage == "shapes":
        saved = dict(np.load(features))
        saved["gallery"] = saved["gallery"][:2]
        np.savez(features, **saved)
    else:
        features.unlink()
        os.mkfifo(features)
    query = manifest_of(tiny_frames)["outputs"]["videos"][0]["id"]
    proc = run_vssl("retrieve", random_run, "--data", tiny_frames, "-o", out, "--clips", "1",
                    "-j", "0", "--query", query, timeout=60)
    assert proc.returncode == 1 and "saved features" in one_error_line(proc)


def test_scores_that_do_not_exist_are_null_in_json(tmp_path):
    from vssl_cli.artifacts import write_json_atomic
    write_json_atomic(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=pytest.fail) == \
        {"a": None, "b": [1.0, None]}


def test_an_output_inside_a_frame_store_is_refused(tiny_frames, synth_dir, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_frames, store)
    for args in (["extract", synth_dir, "-o", store / "videos" / "run"],
                 ["pretrain", store, "-o", store / "videos" / "run", "--dry-run"]):
        if "--dry-run" in args:
            continue              # resolves the config only
        proc = run_vssl(*args, check=2)
        assert "inside the Zarr store" in one_error_line(proc)


def test_prune_never_deletes_a_live_video_s_frames(synth_dir, tmp_path):
    out = tmp_path / "s.zarr"
    run_vssl("extract", synth_dir, "-o", out, check=0)
    manifest = json.loads((out / "manifest.json").read_text())
    live = manifest["outputs"]["videos"][0]
    manifest["outputs"]["videos"].append({**live, "id": "gone/ghost", "status": "error",
                                          "error": "x"})
    (out / "manifest.json").write_text(json.dumps(manifest))
    run_vssl("extract", synth_dir, "-o", out, "--prune", check=0)
    assert (out / "videos" / live["key"] / "zarr.json").is_file()
    assert "gone/ghost" not in videos_table(out)
    run_vssl("probe", "--help", check=0)


def test_decoding_a_normal_file_is_unchanged(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=20)
    frames = decode_all(path, DecodeParams(short_side=None))
    np.testing.assert_array_equal(frames, cli_frames(path, 64, 48))
