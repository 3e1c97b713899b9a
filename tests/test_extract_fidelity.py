"""`vssl extract` on footage as users own it: variable frame rates, non-square pixels, odd
names and lists, damaged files, reruns that must touch nothing, bounded memory, signals.
The store is always compared with what the ffmpeg command line itself decodes."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import (ROOT, cli_frames, ffmpeg, make_video, manifest_of, real_footage, run_vssl,
                      videos_table)

from vssl_cli.errors import VsslError
from vssl_cli.store import open_store

VFR_KEPT = [n for n in range(300) if n % 3 == 0 or 100 <= n <= 130]


def make_vfr(path: Path) -> Path:
    """Phone-style variable frame rate: 10 s at 30 fps, most frames dropped, one burst."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-t", "10", "-vf",
           r"select='not(mod(n\,3))+between(n\,100\,130)'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", path)
    return path


@pytest.mark.parametrize("name", ["v.zarr", "v.h5"])
def test_variable_frame_rate_is_stored_as_decoded_with_timestamps(tmp_path, name):
    src = make_vfr(tmp_path / "src" / "phone.mp4")
    out = tmp_path / name
    run_vssl("extract", src, "-o", out, "--short-side", "120", check=0)
    record = videos_table(out)["phone"]
    assert record["frames"] == len(VFR_KEPT) == len(cli_frames(src, 160, 120))
    assert record["timing"] == "decoded" and record["vfr"] is True
    assert record["fps"] == pytest.approx((len(VFR_KEPT) - 1) / 9.9, rel=1e-3)  # mean rate
    assert record["orig_fps"] != record["fps"]          # not the container's nominal rate
    with open_store(out) as store:
        np.testing.assert_allclose(store.timestamps("phone"), np.array(VFR_KEPT) / 30,
                                   atol=1e-3)
        np.testing.assert_array_equal(store.read("phone", range(record["frames"])),
                                      cli_frames(src, 160, 120))
    resampled = tmp_path / ("r" + name)
    run_vssl("extract", src, "-o", resampled, "--short-side", "120", "--fps", "10", check=0)
    record = videos_table(resampled)["phone"]
    assert (record["frames"], record["timing"], record["vfr"]) == (100, "resampled", False)
    assert manifest_of(resampled)["config"]["frames"]["fps"] == 10
    with open_store(resampled) as store:
        np.testing.assert_allclose(np.diff(store.timestamps("phone")), 0.1, atol=1e-6)


def test_anamorphic_video_keeps_its_display_aspect(tmp_path):
    src = tmp_path / "src" / "dv.mp4"
    src.parent.mkdir()
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "10", "-vf",
           "setsar=4/3", "-c:v", "libx264", "-pix_fmt", "yuv420p", src)
    out = tmp_path / "a.zarr"
    run_vssl("extract", src, "-o", out, "--short-side", "120", check=0)
    record = videos_table(out)["dv"]
    assert (record["width"], record["height"], record["sar"]) == (214, 120, "4:3")
    assert (record["orig_width"], record["orig_height"]) == (320, 240)
    with open_store(out) as store:
        np.testing.assert_array_equal(store.read("dv", range(10)), cli_frames(src, 214, 120))


def test_find_pipes_with_spaces_unicode_and_print0(tmp_path):
    src = tmp_path / "My Videos"
    for name in ("a clip.mp4", "café  two.mp4", "plain.mp4"):
        make_video(src / name, frames=4)
    out = tmp_path / "p.zarr"
    subprocess.run(f"find '{src}' -name '*.mp4' | '{sys.executable}' -m vssl_cli -q extract - "
                   f"-o '{out}'", shell=True, check=True, cwd=ROOT, capture_output=True)
    table = videos_table(out)
    assert len(table) == 3 and all(r["status"] == "ok" and r["label"] is None
                                   for r in table.values())
    out0 = tmp_path / "p0.zarr"
    done = subprocess.run(f"find '{src}' -name '*.mp4' -print0 | '{sys.executable}' -m "
                          f"vssl_cli extract -0 - -o '{out0}'", shell=True, cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == str(out0)
    assert sorted(Path(r["source"]).name for r in videos_table(out0).values()) == [
        "a clip.mp4", "café  two.mp4", "plain.mp4"]


def test_same_stem_pair_and_relative_paths_never_abort(tmp_path):
    data = tmp_path / "testdata"
    make_video(data / "test.mp4", frames=4)
    make_video(data / "test.avi", frames=5, extra=("-c:v", "mpeg4"))
    out = tmp_path / "s.zarr"
    proc = run_vssl("extract", data, "-o", out, check=0)
    table = videos_table(out)
    assert {k: r["frames"] for k, r in table.items()} == {"test.avi": 5, "test.mp4": 4}
    assert "shared by 2 files" in proc.stderr
    listing = "../testdata/test.mp4\n./sub/../../testdata/test.avi\n"
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "l.txt").write_text(listing)
    out2 = tmp_path / "l.zarr"
    run_vssl("extract", tmp_path / "lists" / "l.txt", "-o", out2, check=0)
    sources = {r["source"] for r in videos_table(out2).values()}
    assert sources == {str(data / "test.mp4"), str(data / "test.avi")}   # absolute, normal


def test_hdf5_rerun_touches_nothing_and_a_stale_partial_is_never_resumed(tmp_path):
    src = tmp_path / "src"
    make_video(src / "a.mp4", frames=6)
    make_video(src / "b.mp4", frames=7)
    out = tmp_path / "s.h5"
    run_vssl("extract", src, "-o", out, check=0)
    before = out.stat().st_mtime_ns
    again = run_vssl("extract", src, "-o", out, check=0)
    assert "up to date" in again.stderr
    assert out.stat().st_mtime_ns == before and not Path(f"{out}.partial").exists()
    # A partial file from a run with other settings, left by a kill, is not taken up.
    other = tmp_path / "other.h5"
    run_vssl("extract", src, "-o", other, "--short-side", "32", check=0)
    os.replace(other, f"{out}.partial")
    make_video(src / "c.mp4", frames=5)
    run_vssl("extract", src, "-o", out, check=0)
    with open_store(out) as store:
        assert {r["height"] for r in store.videos} == {128}
        assert {r["id"] for r in store.videos} == {"a", "b", "c"}
    assert not Path(f"{out}.partial").exists()


def test_zarr_rerun_leaves_the_store_mtime_alone(tmp_path):
    """Make compares times: an up-to-date store must not look newer after a rerun."""
    src = tmp_path / "src"
    make_video(src / "a.mp4", frames=4)
    out = tmp_path / "s.zarr"
    run_vssl("extract", src, "-o", out, check=0)
    stamps = {p: p.stat().st_mtime_ns for p in [out, *out.iterdir()]}
    time.sleep(0.02)
    run_vssl("extract", src, "-o", out, check=0)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_symlinked_hdf5_store_is_updated_where_it_lives(tmp_path):
    src = tmp_path / "src"
    make_video(src / "a.mp4", frames=4)
    real = tmp_path / "disk" / "s.h5"
    run_vssl("extract", src, "-o", real, check=0)
    link = tmp_path / "link.h5"
    link.symlink_to(real)
    make_video(src / "b.mp4", frames=4)
    run_vssl("extract", src, "-o", link, check=0)
    assert link.is_symlink() and len(videos_table(real)) == 2


def test_verify_finds_and_repairs_missing_or_damaged_chunks(tmp_path):
    src = tmp_path / "src"
    make_video(src / "a.mp4", frames=40)
    make_video(src / "b.mp4", frames=40, source="mandelbrot")
    out = tmp_path / "s.zarr"
    run_vssl("extract", src, "-o", out, "--chunk-frames", "8", check=0)
    key = videos_table(out)["b"]["key"]
    (out / "videos" / key / "c.2.0.0.0").unlink()
    bad = run_vssl("extract", src, "-o", out, check=0)          # fast path: manifest only
    assert "up to date" in bad.stderr
    with open_store(out) as store:
        with pytest.raises(VsslError, match="video 'b': chunk 2 is missing"):
            store.read("b", range(40))
    fixed = run_vssl("extract", src, "-o", out, "--verify", check=0)
    assert "verify: b: chunk 2 is missing" in fixed.stderr
    assert manifest_of(out)["metrics"]["extracted_this_run"] == 1
    with open_store(out) as store:
        assert store.read("b", range(40)).shape[0] == 40


# The child's own peak. Not getrusage's ru_maxrss: Linux carries the parent's peak across
# fork+exec into it, so under a 700 MiB pytest process every child "peaked" at 708 MiB.
PEAK_RSS_MIB = ("import resource\n"
                "try:\n"
                "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
                "    print(int(hwm[0].split()[1]) // 1024)\n"
                "except (OSError, IndexError):\n"
                "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")


def test_four_k_at_full_size_keeps_memory_bounded(tmp_path):
    """A 3840x2160 frame is 25 MB: blocks and chunks hold one frame, not 16."""
    src = tmp_path / "uhd.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=3840x2160:rate=25", "-frames:v", "24",
           "-c:v", "libx264", "-preset", "ultrafast", src)
    script = ("import sys\n"
              "from vssl_cli.extract import ExtractConfig, extract\n"
              "from vssl_cli.video.decode import DecodeParams\n"
              "extract([sys.argv[1]], sys.argv[2], ExtractConfig("
              "decode=DecodeParams(short_side=None)), workers=1)\n"
              + PEAK_RSS_MIB)
    out = tmp_path / "u.zarr"
    done = subprocess.run([sys.executable, "-c", script, str(src), str(out)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    assert videos_table(out)["uhd"]["width"] == 3840
    peak = int(done.stdout.split()[-1])
    assert peak < 600, peak       # ~250 MiB; was 1.4 GB with 16-frame blocks and chunks


def test_interrupt_reaches_a_background_job_of_a_script(tmp_path):
    """`vssl extract ... &` in a script starts with SIGINT ignored; kill -INT must still
    stop it cleanly (exit 130, store readable)."""
    src = tmp_path / "src"
    for i in range(8):
        make_video(src / f"v{i}.mp4", frames=200, size="320x240")
    out = tmp_path / "bg.zarr"
    script = (f"'{sys.executable}' -m vssl_cli extract '{src}' -o '{out}' -j 1 "
              "--short-side 0 & echo $!; wait $!; echo rc=$?")
    proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    deadline = time.time() + 60
    while not (out / "videos").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(pid, signal.SIGINT)
    out_text, err = proc.communicate(timeout=60)
    assert "rc=130" in out_text and "interrupted" in err


def test_a_failed_run_prints_nothing_on_stdout(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"")
    proc = run_vssl("extract", tmp_path / "x.mp4", "-o", tmp_path / "o.zarr", check=1)
    assert proc.stdout == ""


def test_inspect_shows_whole_error_texts(tmp_path):
    src = tmp_path / "src"
    make_video(src / "good.mp4", frames=4)
    (src / "bad.mp4").write_text("no video here\n" * 20)
    out = tmp_path / "s.zarr"
    run_vssl("extract", src, "-o", out, check=0)
    error = videos_table(out)["bad"]["error"]
    shown = run_vssl("inspect", "--videos", out, env={"COLUMNS": "60"}, check=0).stdout
    assert " ".join(error.split()) in " ".join(shown.split()).replace("… ", "")
    assert "…" not in shown


def odd_variants(folder: Path) -> list[Path]:
    """ffmpeg-made cases of what users own: VFR, anamorphic, rotated, dropped-frame AVI,
    WebM, MKV, 10-bit, a name with spaces and one with unicode."""
    folder.mkdir(parents=True, exist_ok=True)
    vfr = make_vfr(folder / "phone vfr.mp4")
    base = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "20"]
    made = [vfr]
    for name, args in (("anamorphic.mp4", ["-vf", "setsar=16/15", "-c:v", "libx264"]),
                       ("clip.webm", ["-c:v", "libvpx-vp9", "-b:v", "200k"]),
                       ("clip.mkv", ["-c:v", "libx264"]),
                       ("tenbit.mp4", ["-c:v", "libx265", "-pix_fmt", "yuv420p10le"]),
                       ("ünïcode.mp4", ["-c:v", "libx264"])):
        try:
            ffmpeg(*base, *args, folder / name)
            made.append(folder / name)
        except subprocess.CalledProcessError:
            pass        # an encoder this ffmpeg lacks
    ffmpeg("-i", vfr, "-c:v", "mpeg4", "-fps_mode", "passthrough", folder / "dropped.avi")
    made.append(folder / "dropped.avi")
    return made


@pytest.mark.parametrize("name", ["r.zarr", pytest.param("r.h5", marks=pytest.mark.slow)])
def test_real_footage_and_odd_variants_stored_as_ffmpeg_decodes_them(tmp_path, name):
    odd = odd_variants(tmp_path / "odd")
    listing = "".join(f"{p}\n" for p in [*real_footage(), *odd])
    out = tmp_path / name
    run_vssl("extract", "-", "-o", out, "--short-side", "96", "-j", "2", input=listing,
             check=0, timeout=300)
    with open_store(out) as store:
        assert len(store.videos) == len(real_footage()) + len(odd)
        for r in store.videos:
            stored = store.read(r["id"], range(r["frames"]))
            reference = cli_frames(r["source"], r["width"], r["height"])
            assert len(stored) == len(reference), r["source"]
            # MPEG-4 part 2 decoders of different ffmpeg releases differ by a level or two.
            assert np.abs(stored.astype(int) - reference).max() <= 3, r["source"]
            assert len(store.timestamps(r["id"])) == r["frames"]
            assert not r["partial"] or "bugy" in r["source"]


def test_workers_leave_no_hdf5_parts_and_no_stale_partials(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        make_video(src / f"v{i}.mp4", frames=6)
    out = tmp_path / "s.zarr"
    stale = tmp_path / ".s.zarr.abc123.partial"   # a killed --force rebuild's
    stale.mkdir()
    run_vssl("extract", src, "-o", out, "--force", check=0)
    assert not stale.exists()
    with h5py.File(tmp_path / "x.h5", "w"):
        pass
    assert run_vssl("extract", src, "-o", tmp_path / "x.h5", check=2).returncode == 2
