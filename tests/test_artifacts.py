"""Manifests: identity digests, validation, atomic writes, locks, stdin paths."""
import io
import json

import pytest

from vssl_cli.artifacts import (atomic_directory, digest, exclusive_lock, load_manifest,
                                new_manifest, resolve_input, write_json_atomic)
from vssl_cli.errors import UsageProblem, VsslError


def test_digest_is_stable_and_order_insensitive():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})
    m1 = new_manifest("model", {"lr": 0.1}, [{"id": "x"}])
    m2 = new_manifest("model", {"lr": 0.1}, [{"id": "x"}])
    assert m1["id"] == m2["id"] != new_manifest("model", {"lr": 0.2}, [{"id": "x"}])["id"]


def test_manifest_round_trip_and_validation(tmp_path):
    art = tmp_path / "art"
    art.mkdir()
    manifest = new_manifest("eval", {"k": [1, 5]}, [], metrics={"r@1": 0.5})
    write_json_atomic(art / "manifest.json", manifest)
    assert load_manifest(art) == json.loads(json.dumps(manifest))
    assert load_manifest(art / "manifest.json")["kind"] == "eval"
    for broken, message in [({**manifest, "schema": 99}, "newer than this vssl"),
                            ({k: v for k, v in manifest.items() if k != "config"}, "lacks field"),
                            ({**manifest, "kind": "pizza"}, "unknown artifact kind"),
                            ([1, 2], "not a JSON object")]:
        (art / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(VsslError, match=message):
            load_manifest(art)
    with pytest.raises(VsslError, match="no manifest.json"):
        load_manifest(tmp_path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    import errno
    import os
    target = tmp_path / "m.json"
    write_json_atomic(target, {"v": 1})

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_json_atomic(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_directory_swaps_only_on_success(tmp_path):
    final = tmp_path / "run"
    with atomic_directory(final) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("boom")
    assert (final / "a").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_lock_refuses_second_writer(tmp_path):
    with exclusive_lock(tmp_path / "s.zarr"):
        with pytest.raises(VsslError, match="another vssl process"):
            with exclusive_lock(tmp_path / "s.zarr"):
                pass
    with exclusive_lock(tmp_path / "s.zarr"):
        pass


def test_resolve_input_reads_first_nonblank_line():
    assert resolve_input("x") == "x"
    assert resolve_input("-", io.StringIO("\n  /a/b.zarr \nother\n")) == "/a/b.zarr"
    with pytest.raises(UsageProblem):
        resolve_input("-", io.StringIO(""))
