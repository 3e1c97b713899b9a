"""Both frame-store backends through the one interface."""
import numpy as np
import pytest

from vssl_cli.artifacts import new_manifest
from vssl_cli.errors import UsageProblem, VsslError
from vssl_cli.store import open_store, open_writer
from vssl_cli.store.base import slab_plan


def _fill(path, videos):
    writer = open_writer(path, chunk_frames=4)
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


def test_slab_plan_prefers_one_contiguous_read():
    sel, take = slab_plan(np.array([10, 12, 14, 16]))
    assert sel == slice(10, 17) and list(take) == [0, 2, 4, 6]
    sel, take = slab_plan(np.array([0, 100, 50]))
    assert list(sel) == [0, 50, 100] and list(take) == [0, 2, 1]
