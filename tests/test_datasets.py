"""Every dataset layout parser, layout detection and deterministic splits."""
import io
from pathlib import Path

import pytest

from vssl_cli.errors import UsageProblem
from vssl_cli.video.datasets import (IndexOptions, VideoEntry, assign_splits, build_index,
                                     detect_layout, parse_list)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def index(*sources, **opts):
    return build_index([str(s) for s in sources], IndexOptions(**opts))


def test_ucf101_layout_with_split_choice(tmp_path):
    root = tmp_path / "UCF101"
    for name in ("v_Jump_g01_c01", "v_Jump_g02_c01"):
        touch(root / "UCF-101" / "Jump" / f"{name}.avi")
    touch(root / "UCF-101" / "Swim" / "v_Swim_g01_c01.avi")
    ann = root / "ucfTrainTestlist"
    ann.mkdir()
    (ann / "classInd.txt").write_text("1 Jump\n2 Swim\n")
    (ann / "trainlist01.txt").write_text("Jump/v_Jump_g02_c01.avi 1\nSwim/v_Swim_g01_c01.avi 2\n")
    (ann / "testlist01.txt").write_text("Jump/v_Jump_g01_c01.avi\n")
    (ann / "trainlist02.txt").write_text("Jump/v_Jump_g01_c01.avi 1\n")
    (ann / "testlist02.txt").write_text("Jump/v_Jump_g02_c01.avi\nSwim/v_Swim_g01_c01.avi\n")
    idx = index(root)
    assert idx.layouts == ["ucf101"]
    got = {e.id: (e.label, e.split) for e in idx.entries}
    assert got == {"Jump/v_Jump_g02_c01": ("Jump", "train"),
                   "Swim/v_Swim_g01_c01": ("Swim", "train"),
                   "Jump/v_Jump_g01_c01": ("Jump", "test")}
    assert all(Path(e.path).exists() for e in idx.entries)
    two = {e.id: e.split for e in index(root, split=2).entries}
    assert two["Jump/v_Jump_g01_c01"] == "train" and two["Swim/v_Swim_g01_c01"] == "test"
    assert idx.classes == ["Jump", "Swim"]


def test_ucf101_annotations_elsewhere_and_missing_split(tmp_path):
    videos = tmp_path / "videos"
    touch(videos / "Jump" / "v_Jump_g01_c01.avi")
    ann = tmp_path / "lists"
    ann.mkdir()
    (ann / "classInd.txt").write_text("1 Jump\n")
    (ann / "trainlist01.txt").write_text("Jump/v_Jump_g01_c01.avi 1\n")
    (ann / "testlist01.txt").write_text("")
    idx = index(videos, layout="ucf101", annotations=str(ann))
    assert [e.split for e in idx.entries] == ["train"]
    with pytest.raises(UsageProblem, match="split 3"):
        index(videos, layout="ucf101", annotations=str(ann), split=3)


def test_hmdb51_tags(tmp_path):
    root = tmp_path / "hmdb"
    for name in ("a.avi", "b.avi", "c.avi"):
        touch(root / "brush_hair" / name)
    (root / "splits").mkdir()
    (root / "splits" / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    idx = index(root)
    assert idx.layouts == ["hmdb51"]
    assert {e.id: e.split for e in idx.entries} == {"brush_hair/a": "train", "brush_hair/b": "test"}
    assert {e.label for e in idx.entries} == {"brush_hair"}
    (root / "splits" / "brush_hair_test_split1.txt").write_text("a.avi 7\n")
    with pytest.raises(UsageProblem, match="tag 0/1/2"):
        index(root)


def test_kinetics_csv_trimmed_and_full_sources(tmp_path):
    root = tmp_path / "k400"
    touch(root / "train" / "abseiling" / "AAA_000010_000020.mp4")
    touch(root / "raw" / "BBB.mp4")
    csv = root / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n"
                   "abseiling,AAA,10,20,train\n"
                   "yoga,BBB,3,13,val\n"
                   "yoga,CCC,0,10,train\n")
    idx = index(csv)
    assert idx.layouts == ["kinetics"]
    by_id = {e.id: e for e in idx.entries}
    pre = by_id["AAA_000010_000020"]
    assert (pre.start, pre.end, pre.split, pre.label) == (None, None, "train", "abseiling")
    full = by_id["BBB_000003_000013"]
    assert (full.start, full.end, full.split) == (3.0, 13.0, "val")
    assert full.path.endswith("raw/BBB.mp4")
    assert not Path(by_id["CCC_000000_000010"].path).exists()  # reported when decoding
    bad = tmp_path / "bad.csv"
    bad.write_text("youtube_id,foo\nx,1\n")
    with pytest.raises(UsageProblem, match="Kinetics CSV"):
        index(bad, layout="kinetics")


def test_list_file_relative_labels_splits_and_comments(tmp_path):
    touch(tmp_path / "clips" / "x.mp4")
    touch(tmp_path / "clips" / "my clip.mp4")
    lst = tmp_path / "clips.txt"
    lst.write_text("# comment\n\nclips/x.mp4 run train\nclips/my clip.mp4\twalk\ttest\n")
    entries = index(lst).entries
    assert [(e.id, e.label, e.split) for e in entries] == [("clips/x", "run", "train"),
                                                           ("clips/my clip", "walk", "test")]
    assert entries[0].path == str(tmp_path / "clips" / "x.mp4")
    lst.write_text("clips/x.mp4 run sometimes\n")
    with pytest.raises(UsageProblem, match="line 1: unknown split"):
        index(lst)


def test_stdin_list():
    entries = parse_list(io.StringIO("/abs/a.mp4 cat\n/abs/b.mp4\n"), Path("/"), "<stdin>")
    assert [(e.path, e.label) for e in entries] == [("/abs/a.mp4", "cat"), ("/abs/b.mp4", None)]
    idx = build_index(["-"], IndexOptions(), stdin=io.StringIO("/abs/c.mp4 dog\n"))
    assert idx.entries[0].label == "dog" and idx.layouts == ["list"]


def test_folders_plain_and_split_dirs(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(5):
            touch(tmp_path / "f" / cls / f"{i}.mp4")
    touch(tmp_path / "f" / "cat" / "notes.txt")
    idx = index(tmp_path / "f")
    assert idx.layouts == ["folders"] and len(idx.entries) == 10
    splits = [e.split for e in idx.entries]
    assert splits.count("test") == 4  # round(5 * 0.3) = 2 per class, deterministic
    assert [e.split for e in index(tmp_path / "f").entries] == splits
    touch(tmp_path / "s" / "train" / "cat" / "1.mp4")
    touch(tmp_path / "s" / "val" / "dog" / "2.mp4")
    idx = index(tmp_path / "s")
    assert {(e.label, e.split) for e in idx.entries} == {("cat", "train"), ("dog", "val")}
    touch(tmp_path / "p" / "top.mp4")
    touch(tmp_path / "p" / "deep" / "er" / "x.mkv")
    idx = index(tmp_path / "p")
    assert idx.layouts == ["plain"] and all(e.label is None for e in idx.entries)
    assert {e.id for e in idx.entries} == {"top", "deep/er/x"}


def test_detect_layout_and_errors(tmp_path):
    assert detect_layout(tmp_path, []) == "plain"
    with pytest.raises(UsageProblem, match="no such file"):
        index(tmp_path / "missing")


def test_ids_never_clash_and_a_clash_never_aborts(tmp_path, caplog):
    """test.avi beside test.mp4 (real test-data folders), two files of one name from two
    folders, ../x beside x: distinct files get distinct ids, the same on every run, and
    the renaming is said on stderr."""
    root = tmp_path / "data"
    touch(root / "test.avi")
    touch(root / "test.mp4")
    touch(root / "clip.mp4")
    first = index(root)
    assert sorted(e.id for e in first.entries) == ["clip", "test.avi", "test.mp4"]
    assert "shared by 2 files" in caplog.text
    assert [e.id for e in index(root).entries] == [e.id for e in first.entries]
    a, b = touch(tmp_path / "one" / "v.mp4"), touch(tmp_path / "two" / "v.mp4")
    ids = [e.id for e in index(a, b).entries]
    assert len(set(ids)) == 2 and all(i.startswith("v.mp4~") for i in ids)
    assert [e.id for e in index(a, a).entries] == ["v"]          # one file named twice
    touch(tmp_path / "x.mp4")
    touch(tmp_path / "sub" / "x.mp4")
    touch(tmp_path / "sub" / ".hidden" / "y.mp4")
    entries = parse_list(["../x.mp4", "x.mp4", ".hidden/y.mp4", "./x.mp4"],
                         tmp_path / "sub", "l.txt")
    assert [e.id for e in entries] == [str(tmp_path / "x").lstrip("/"), "x", ".hidden/y", "x"]
    assert all(Path(e.path).is_absolute() and ".." not in e.path for e in entries)


def test_list_lines_with_spaces_tabs_and_nul_separated(tmp_path):
    touch(tmp_path / "my clip.mp4")
    touch(tmp_path / "two  spaces .mp4")
    text = (f"{tmp_path}/my clip.mp4\n"              # exists: the whole line is the path
            "two  spaces .mp4\n"                     # relative, exists
            "not here yet.mp4\t\n"                   # a path with spaces, no label
            "other.mp4\trun\ttrain\n")
    entries = build_index(["-"], IndexOptions(video_root=str(tmp_path)),
                          stdin=io.StringIO(text)).entries
    assert [(Path(e.path).name, e.label, e.split) for e in entries] == [
        ("my clip.mp4", None, None), ("two  spaces .mp4", None, None),
        ("not here yet.mp4", None, None), ("other.mp4", "run", "train")]
    with pytest.raises(UsageProblem, match="needs a tab"):
        parse_list(["a b c d.mp4"], tmp_path, "l.txt")
    nul = build_index(["-"], IndexOptions(video_root=str(tmp_path)), null_separated=True,
                      stdin=io.StringIO(f"{tmp_path}/my clip.mp4\0line\nbreak.mp4\0"))
    assert [Path(e.path).name for e in nul.entries] == ["my clip.mp4", "line\nbreak.mp4"]


def test_symlink_loops_are_visited_once(tmp_path):
    root = tmp_path / "videos"
    touch(root / "a" / "v.mp4")
    (root / "a" / "loop").symlink_to(root)           # a link back up the tree
    (root / "alias.mp4").symlink_to(root / "a" / "v.mp4")
    found = index(root, layout="plain").entries
    assert [e.id for e in found] == ["alias"]        # the first name met, every run


def test_layout_detection_explains_itself(tmp_path, caplog):
    import logging
    caplog.set_level(logging.INFO, logger="vssl")
    root = tmp_path / "ds"
    for cls in ("cat", "dog", "eel"):
        for i in range(4):
            touch(root / cls / f"{i}.mp4")
    assert index(root).layouts == ["folders"]
    assert "every video sits in a class folder (3 classes)" in caplog.text
    touch(root / "predict" / "batch1" / "x.mp4")       # one stray folder
    touch(root / "stray.mp4")
    caplog.clear()
    idx = index(root)
    assert idx.layouts == ["plain"] and all(e.label is None for e in idx.entries)
    assert "12 of 14 videos sit in class folders" in caplog.text
    assert "predict/batch1/ (1)" in caplog.text and "the top folder (1)" in caplog.text
    forced = index(root, layout="folders").entries     # the others labelled, strays not
    labels = {e.id: e.label for e in forced}
    assert labels["cat/0"] == "cat" and labels["stray"] is None
    assert labels["predict/batch1/x"] is None


def test_annotation_files_with_bad_lines_are_usage_errors(tmp_path):
    root = tmp_path / "UCF101"
    touch(root / "Jump" / "v_Jump_g01_c01.avi")
    (root / "classInd.txt").write_text("1 Jump extra\n")
    with pytest.raises(UsageProblem, match="line 1: expected 'index class'"):
        index(root)
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nrun,AAA,zz,10,train\n")
    with pytest.raises(UsageProblem, match="line 2: time_start/time_end 'zz'"):
        index(csv)
    latin = tmp_path / "list.txt"
    latin.write_bytes(b"caf\xe9.mp4 run\n")
    assert index(latin).entries[0].label == "run"       # not UTF-8: replaced, not a crash


def test_keys_are_safe_and_unique():
    a, b = VideoEntry("a/b c", "/x"), VideoEntry("a_b c", "/y")
    assert a.key != b.key
    assert all(ch.isalnum() or ch in "._-" for ch in a.key)


def test_assign_splits_leaves_unlabelled_and_presplit_alone():
    unl = [VideoEntry(str(i), "/x") for i in range(4)]
    assert assign_splits(unl, 0.5) == unl
    pre = [VideoEntry("a", "/a", "c", "train"), VideoEntry("b", "/b", "c")]
    assert assign_splits(pre, 0.5) == pre
