"""Both frame-store backends through the one interface."""
import json
import os

import h5py
import numpy as np
import pytest
import zarr

from vssl_cli.artifacts import new_manifest
from vssl_cli.errors import UsageProblem, VsslError
from vssl_cli.store import attach_writer, open_store, open_writer
from vssl_cli.store.base import slab_plan
from vssl_cli.store.zarr_chunks import CODECS, ChunkLayout


def _fill(path, videos, codec="auto"):
    writer = open_writer(path, codec, chunk_frames=4)
    table = []
    for key, frames in videos.items():
        sink = writer.begin(key, frames.shape[1], frames.shape[2])
        for i in range(0, len(frames), 5):
            sink.append(frames[i:i + 5])
        record = {"id": key, "key": key, "status": "ok", "frames": len(frames),
                  "height": frames.shape[1], "width": frames.shape[2], "label": "l",
                  "split": "train"}
        sink.commit(record)
        table.append(record)
    writer.write_manifest(new_manifest("frames", {}, [], outputs={"videos": table,
                                                                   "classes": ["l"]}))
    writer.finish()
    writer.close()


@pytest.fixture(params=["s.zarr", "s.h5"])
def store_path(request, tmp_path):
    return str(tmp_path / request.param)


def test_round_trip_any_index_order(store_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (23, 6, 10, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (9, 4, 4, 3), dtype=np.uint8)
    _fill(store_path, {"a": a, "b": b})
    with open_store(store_path) as store:
        assert [r["id"] for r in store.videos] == ["a", "b"]
        for idx in ([0, 1, 2], [22, 0, 5, 5], list(range(0, 23, 7)), [3], [20, 1]):
            np.testing.assert_array_equal(store.read("a", idx), a[idx])
        np.testing.assert_array_equal(store.read("b", np.arange(9)), b)
        assert store.read("a", []).shape == (0, 6, 10, 3)
        with pytest.raises(VsslError, match="out of range"):
            store.read("b", [9])
        with pytest.raises(VsslError, match="no video"):
            store.read("zzz", [0])


def test_aborted_video_is_invisible_and_completed_lists_committed(store_path):
    _fill(store_path, {"a": np.zeros((5, 2, 2, 3), np.uint8)})
    writer = open_writer(store_path, chunk_frames=4)
    sink = writer.begin("half", 2, 2)
    sink.append(np.ones((3, 2, 2, 3), np.uint8))
    sink.abort()
    assert set(writer.completed()) == {"a"}
    writer.close()


def test_hdf5_adopts_videos_that_worker_processes_wrote(tmp_path):
    path = tmp_path / "p.h5"
    a = np.random.default_rng(4).integers(0, 255, (10, 4, 6, 3), dtype=np.uint8)
    writer = open_writer(path, chunk_frames=4)
    sink = attach_writer(str(path), writer.codec, writer.chunk_frames).begin("a", 4, 6)
    sink.append(a[:7])
    sink.append(a[7:])
    record = {"id": "a", "key": "a", "status": "ok", "frames": 10, "height": 4, "width": 6}
    sink.commit(record)
    writer.adopt("a")
    assert writer.completed() == {"a": record} and not any(writer.parts.iterdir())
    writer.write_manifest(new_manifest("frames", {}, [], outputs={"videos": [record]}))
    writer.finish()
    writer.close()
    assert not writer.parts.exists()
    with open_store(path) as store:
        np.testing.assert_array_equal(store.read("a", range(10)), a)
    with h5py.File(path, "r") as f:   # the chunks came over compressed, as the worker wrote
        assert f["videos/a"].compression == "lzf" and f["videos/a"].chunks == (4, 4, 6, 3)


def test_reader_refuses_other_kinds(tmp_path):
    path = tmp_path / "m.zarr"
    path.mkdir()
    from vssl_cli.artifacts import write_json_atomic
    write_json_atomic(path / "manifest.json", new_manifest("model", {}, []))
    with pytest.raises(UsageProblem, match="expected a frames artifact"):
        open_store(path)
    with pytest.raises(VsslError, match="no such frame store"):
        open_store(tmp_path / "nope.zarr")


def test_zarr_reads_through_fsspec_url(tmp_path):
    path = tmp_path / "u.zarr"
    a = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    _fill(str(path), {"a": a})
    with open_store(f"file://{path}") as store:
        np.testing.assert_array_equal(store.read("a", [3, 1]), a[[3, 1]])


@pytest.mark.parametrize("codec", ["blosc-lz4", "blosc-zstd", "zstd", "gzip", "none"])
def test_zarr_direct_chunk_reads_match_zarr(tmp_path, codec):
    a = np.random.default_rng(1).integers(0, 255, (23, 6, 10, 3), dtype=np.uint8)
    path = tmp_path / "d.zarr"
    _fill(str(path), {"a": a}, codec)
    layout = ChunkLayout.of(path / "videos" / "a")
    assert layout is not None and layout.chunk_frames == 4
    for idx in ([0], [3, 4], [1, 2, 21, 22], list(range(23))):    # 22: the padded last chunk
        np.testing.assert_array_equal(layout.read(np.array(idx)), a[idx])
    with open_store(path) as store:
        np.testing.assert_array_equal(store.read("a", [22, 0, 9]), a[[22, 0, 9]])
        assert store._layout("a") is not None      # served without zarr


@pytest.mark.parametrize("codec", list(CODECS))
def test_zarr_python_reads_what_extract_writes_and_writes_the_same_metadata(tmp_path, codec):
    """Writes bypass zarr-python: its own reader must see the same array, and for the same
    settings it must describe the array as we do."""
    a = np.random.default_rng(3).integers(0, 255, (23, 6, 10, 3), dtype=np.uint8)
    path = tmp_path / "z.zarr"
    _fill(str(path), {"a": a}, codec)
    array = zarr.open_group(path, mode="r")["videos"]["a"]
    np.testing.assert_array_equal(array[:], a)
    assert array.attrs["record"]["frames"] == 23 and array.chunks == (4, 6, 10, 3)
    ours = json.loads((path / "videos" / "a" / "zarr.json").read_text())
    theirs = zarr.create_array(
        tmp_path / "ref.zarr", shape=(23, 6, 10, 3), chunks=(4, 6, 10, 3), dtype="uint8",
        compressors=[CODECS[codec]] if CODECS[codec] else None, fill_value=0,
        chunk_key_encoding={"name": "default", "separator": "."})
    theirs.attrs["record"] = ours["attributes"]["record"]
    theirs = json.loads((tmp_path / "ref.zarr" / "zarr.json").read_text())
    assert {key: theirs.get(key) for key in ours} == ours   # a newer zarr may add keys


def test_zarr_writer_refuses_an_array_or_a_file(tmp_path):
    zarr.create_array(tmp_path / "arr.zarr", shape=(2,), dtype="uint8")
    (tmp_path / "file.zarr").write_text("x")
    for name, problem in (("arr.zarr", "is a Zarr array"), ("file.zarr", "not a directory")):
        with pytest.raises(VsslError, match=problem):
            open_writer(tmp_path / name)


def test_zarr_reads_other_layouts_through_zarr(tmp_path):
    a = np.random.default_rng(2).integers(0, 255, (10, 4, 6, 3), dtype=np.uint8)
    path = tmp_path / "o.zarr"
    _fill(str(path), {"a": a, "b": a})
    # "b" rewritten with nested chunk keys (older stores) and "a" chunked in space too.
    zarr.open_group(path / "videos", mode="a").create_array(
        "b", data=a, chunks=(4, 4, 6, 3), overwrite=True).attrs["record"] = {}
    zarr.open_group(path / "videos", mode="a").create_array(
        "a", data=a, chunks=(4, 2, 6, 3), overwrite=True)
    assert ChunkLayout.of(path / "videos" / "a") is None
    assert ChunkLayout.of(path / "videos" / "b").separator == "/"
    with open_store(path) as store:
        np.testing.assert_array_equal(store.read("a", range(10)), a)
        np.testing.assert_array_equal(store.read("b", range(10)), a)
        np.testing.assert_array_equal(store.read("b", [9, 0]), a[[9, 0]])


@pytest.mark.parametrize("store_path,damage", [
    ("s.zarr", "missing"), ("s.zarr", "garbage"), ("s.zarr", "short"), ("s.h5", "garbage")],
    indirect=["store_path"])
def test_a_missing_or_corrupt_chunk_is_an_error_naming_video_and_chunk(store_path, damage):
    """zarr would read a missing chunk as zeros and a garbage one as a Blosc error naming
    nothing; a damaged store must say which video and chunk."""
    a = np.random.default_rng(2).integers(0, 255, (10, 4, 6, 3), dtype=np.uint8)
    _fill(store_path, {"a": a, "b": a})
    if store_path.endswith(".zarr"):
        chunk = f"{store_path}/videos/b/c.1.0.0.0"
        if damage == "missing":
            os.unlink(chunk)
        else:
            with open(chunk, "r+b") as f:
                f.truncate(40) if damage == "short" else f.write(b"\xff" * 64)
    else:
        with h5py.File(store_path, "a") as f:
            dataset = f["videos"]["b"]
            offset = dataset.id.get_chunk_info(1).byte_offset
        with open(store_path, "r+b") as f:     # scribble over the second chunk's bytes
            f.seek(offset)
            f.write(b"\xff" * 64)
    with open_store(store_path) as store:
        np.testing.assert_array_equal(store.read("a", range(10)), a)
        np.testing.assert_array_equal(store.read("b", range(4)), a[:4])   # chunk 0 is fine
        with pytest.raises(VsslError, match=r"video 'b'.*(chunk|missing)") as caught:
            store.read("b", range(10))
        assert "\n" not in str(caught.value)


def test_keys_from_a_manifest_never_leave_the_store(store_path, tmp_path):
    _fill(store_path, {"a": np.zeros((4, 2, 2, 3), np.uint8)})
    manifest = new_manifest("frames", {}, [], outputs={"videos": [
        {"id": "evil", "key": "../../victim", "status": "ok", "frames": 4, "height": 2,
         "width": 2}]})
    for key in ("../../victim", "/etc", ".hidden", "a/b", ""):
        manifest["outputs"]["videos"][0]["key"] = key
        with pytest.raises(VsslError, match="invalid video key"):
            open_store(store_path, manifest)
    writer = open_writer(store_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    with pytest.raises(VsslError, match="invalid video key"):
        writer.delete("../../victim")
    with pytest.raises(VsslError, match="invalid video key"):
        writer.begin("../x", 2, 2)
    writer.close()
    assert victim.exists()


def test_timestamps_round_trip_and_old_stores_get_even_ones(store_path):
    a = np.zeros((5, 2, 2, 3), np.uint8)
    writer = open_writer(store_path, chunk_frames=4)
    times = np.array([0.0, 0.04, 0.3, 0.31, 1.5])
    table = []
    for key, t in (("a", times), ("old", None)):
        sink = writer.begin(key, 2, 2)
        sink.append(a)
        record = {"id": key, "key": key, "status": "ok", "frames": 5, "height": 2,
                  "width": 2, "fps": 10.0}
        sink.commit(record, t)
        table.append(record)
    writer.write_manifest(new_manifest("frames", {}, [], outputs={"videos": table}))
    writer.finish()
    writer.close()
    with open_store(store_path) as store:
        np.testing.assert_array_equal(store.timestamps("a"), times)
        np.testing.assert_allclose(store.timestamps("old"), np.arange(5) / 10)
    if store_path.endswith(".zarr"):        # zarr-python reads them as any array
        np.testing.assert_array_equal(zarr.open_array(f"{store_path}/timestamps/a")[:], times)


def test_huge_frames_get_fewer_frames_per_chunk(tmp_path):
    """4K at --short-side 0 is 25 MB a frame: 16 of them would be a 400 MB chunk held in
    memory while writing; chunks are bounded in bytes instead."""
    from vssl_cli.store.base import CHUNK_BYTES, chunk_frames_for
    assert chunk_frames_for(16, 2160, 3840) == 1
    assert chunk_frames_for(16, 128, 170) == 16
    assert chunk_frames_for(16, 1080, 1920) * 1080 * 1920 * 3 <= CHUNK_BYTES


def test_slab_plan_prefers_one_contiguous_read():
    sel, take = slab_plan(np.array([10, 12, 14, 16]))
    assert sel == slice(10, 17) and list(take) == [0, 2, 4, 6]
    sel, take = slab_plan(np.array([0, 100, 50]))
    assert list(sel) == [0, 50, 100] and list(take) == [0, 2, 1]
