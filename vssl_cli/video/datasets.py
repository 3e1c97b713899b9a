"""Turn extract's sources into a list of videos with labels and splits.

Sources are files, directories (recursive), list files (``path [label [split]]`` a line),
Kinetics CSVs, or ``-`` (a list on stdin). A directory's layout is detected (or forced
with ``layout``): UCF101 (classInd.txt + trainlist/testlist), HMDB51 (``*_test_splitN.txt``
with 0/1/2 tags), class-per-folder (optionally under train/val/test), or unlabelled.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import sys
from pathlib import Path
from typing import Iterable

from vssl_cli.artifacts import digest
from vssl_cli.errors import UsageProblem

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv",
                    ".wmv", ".3gp", ".ts", ".mts", ".ogv"}
LIST_EXTENSIONS = {".txt", ".lst", ".list", ".csv", ".tsv"}
LAYOUTS = ("auto", "ucf101", "hmdb51", "kinetics", "folders", "list", "plain")
SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val",
              "validation": "val", "test": "test", "testing": "test"}


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    id: str                   # stable, unique name, e.g. "ApplyEyeMakeup/v_..._g08_c01"
    path: str                 # absolute path of the source file
    label: str | None = None
    split: str | None = None  # "train" | "val" | "test" | None
    start: float | None = None  # trim window in seconds (Kinetics full-length sources)
    end: float | None = None

    @property
    def key(self) -> str:
        """Storage name: readable, safe in any store, and unique even after sanitising."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.id).strip("._")[:80] or "video"
        return f"{safe}-{digest(self.id, 8)}"


@dataclasses.dataclass
class DatasetIndex:
    entries: list[VideoEntry]
    layouts: list[str]
    classes: list[str]


@dataclasses.dataclass(frozen=True)
class IndexOptions:
    layout: str = "auto"
    annotations: str | None = None   # folder with split files (UCF101/HMDB51)
    split: int = 1                   # which official split (1..3)
    video_root: str | None = None    # where a list/CSV's relative paths live
    test_fraction: float = 0.3       # labelled data with no splits gets a deterministic split


def is_video_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _videos_under(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and is_video_name(f)]
    return found


def _find_file(root: Path, pattern: str, depth: int = 2) -> list[Path]:
    hits = []
    for d in range(depth + 1):
        hits += sorted(root.glob("/".join(["*"] * d + [pattern])))
    return hits


def _strip_ext(rel: str) -> str:
    p = Path(rel)
    return str(p.with_suffix("")) if p.suffix.lower() in VIDEO_EXTENSIONS else rel


def _locate_root(candidates: Iterable[Path], rel: str, source: Path) -> Path:
    for c in candidates:
        if (c / rel).exists():
            return c
    raise UsageProblem(f"cannot find listed video {rel!r} under the dataset folder", source)


def parse_ucf101(root: Path, opts: IndexOptions) -> list[VideoEntry]:
    ann = Path(opts.annotations) if opts.annotations else None
    class_files = [ann / "classInd.txt"] if ann else _find_file(root, "classInd.txt")
    if not class_files or not class_files[0].exists():
        raise UsageProblem("UCF101 layout needs classInd.txt (use --annotations DIR)", root)
    ann = class_files[0].parent
    classes = {}
    for line in class_files[0].read_text().splitlines():
        if line.strip():
            idx, name = line.split()
            classes[int(idx)] = name
    entries, video_root = [], None
    for split in ("train", "test"):
        list_file = ann / f"{split}list{opts.split:02d}.txt"
        if not list_file.exists():
            raise UsageProblem(f"split {opts.split} has no {list_file.name}", ann)
        for line in list_file.read_text().splitlines():
            if not line.strip():
                continue
            rel = line.split()[0]
            if video_root is None:
                video_root = _locate_root([root, *sorted(p for p in root.iterdir() if p.is_dir()),
                                           ann.parent], rel, list_file)
            label = rel.split("/")[0]
            if label not in classes.values():
                raise UsageProblem(f"class {label!r} of {rel} is not in classInd.txt", list_file)
            entries.append(VideoEntry(_strip_ext(rel), str(video_root / rel), label, split))
    return entries


def parse_hmdb51(root: Path, opts: IndexOptions) -> list[VideoEntry]:
    ann = Path(opts.annotations) if opts.annotations else root
    split_files = sorted(f for f in _find_file(ann, f"*_test_split{opts.split}.txt"))
    if not split_files:
        raise UsageProblem(f"HMDB51 layout needs *_test_split{opts.split}.txt files "
                           "(use --annotations DIR)", ann)
    videos = {p.name: p for p in _videos_under(root)}
    entries = []
    for f in split_files:
        label = f.name[: f.name.rindex("_test_split")]
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                if parts:
                    raise UsageProblem(f"expected 'video tag' with tag 0/1/2, got {line!r}", f)
                continue
            name, tag = parts
            if tag == "0":
                continue  # "not used" in this split, by the HMDB51 protocol
            path = videos.get(name) or Path(root / label / name)
            entries.append(VideoEntry(f"{label}/{_strip_ext(name)}", str(path), label,
                                      "train" if tag == "1" else "test"))
    return entries


def parse_kinetics(csv_path: Path, opts: IndexOptions) -> list[VideoEntry]:
    """Kinetics CSV rows; finds ``ytid_start_end.*`` (pre-trimmed) or ``ytid.*`` (trimmed here)."""
    root = Path(opts.video_root) if opts.video_root else csv_path.parent
    by_stem = {p.stem: p for p in _videos_under(root)}
    entries = []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"youtube_id", "time_start", "time_end"}
        if not need <= set(reader.fieldnames or []):
            raise UsageProblem("Kinetics CSV needs columns label,youtube_id,time_start,"
                               "time_end,split", csv_path)
        for row in reader:
            yt, t0, t1 = row["youtube_id"], float(row["time_start"]), float(row["time_end"])
            stem = f"{yt}_{int(t0):06d}_{int(t1):06d}"
            if stem in by_stem:
                path, start, end = by_stem[stem], None, None
            else:  # full-length download (or missing: decoding will say so)
                path, start, end = by_stem.get(yt, root / f"{stem}.mp4"), t0, t1
            split = SPLIT_DIRS.get((row.get("split") or "").strip().lower())
            entries.append(VideoEntry(stem, str(path), (row.get("label") or None), split,
                                      start, end))
    return entries


def parse_list(lines: Iterable[str], base: Path, source: str) -> list[VideoEntry]:
    """``path [label [split]]`` per line; tab-separated when paths contain spaces."""
    entries = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) > 3:
            raise UsageProblem(f"line {n}: expected 'path [label [split]]', got {line!r}", source)
        if "\x00" in line:
            raise UsageProblem(f"line {n}: NUL byte in {line!r}", source)
        try:
            path = Path(parts[0]).expanduser()
        except RuntimeError:          # ~name of a user this machine does not know
            raise UsageProblem(f"line {n}: cannot expand {parts[0]!r}", source) from None
        path = path if path.is_absolute() else base / path
        split = None
        if len(parts) == 3:
            split = SPLIT_DIRS.get(parts[2].lower())
            if split is None:
                raise UsageProblem(f"line {n}: unknown split {parts[2]!r}", source)
        rel = os.path.relpath(path, base) if not parts[0].startswith("/") else str(path)
        entries.append(VideoEntry(_strip_ext(rel.lstrip("./")), str(path),
                                  parts[1] if len(parts) > 1 else None, split))
    return entries


def parse_folders(root: Path, videos: list[Path]) -> list[VideoEntry]:
    entries = []
    for v in videos:
        parts = v.relative_to(root).parts
        split = SPLIT_DIRS.get(parts[0].lower()) if len(parts) == 3 else None
        entries.append(VideoEntry(_strip_ext(str(v.relative_to(root))), str(v), parts[-2], split))
    return entries


def detect_layout(root: Path, videos: list[Path]) -> str:
    if _find_file(root, "classInd.txt"):
        return "ucf101"
    if _find_file(root, "*_test_split[0-9].txt"):
        return "hmdb51"
    if videos:
        depths = {len(v.relative_to(root).parts) for v in videos}
        tops = {v.relative_to(root).parts[0].lower() for v in videos}
        if depths == {2}:
            return "folders"
        if depths == {3} and tops <= set(SPLIT_DIRS):
            return "folders"
    return "plain"


def index_directory(root: Path, opts: IndexOptions) -> tuple[list[VideoEntry], str]:
    videos = _videos_under(root) if opts.layout in ("auto", "folders", "plain") else []
    layout = detect_layout(root, videos) if opts.layout == "auto" else opts.layout
    if layout == "ucf101":
        return parse_ucf101(root, opts), layout
    if layout == "hmdb51":
        return parse_hmdb51(root, opts), layout
    if layout == "folders":
        return parse_folders(root, videos), layout
    if layout == "plain":
        return [VideoEntry(_strip_ext(str(v.relative_to(root))), str(v)) for v in videos], layout
    raise UsageProblem(f"layout {layout!r} does not apply to a directory", root)


def index_file(path: Path, opts: IndexOptions) -> tuple[list[VideoEntry], str]:
    suffix = path.suffix.lower()
    if opts.layout == "kinetics" or (suffix == ".csv" and _has_kinetics_header(path)):
        return parse_kinetics(path, opts), "kinetics"
    if suffix in LIST_EXTENSIONS or opts.layout == "list":
        base = Path(opts.video_root) if opts.video_root else path.parent
        with open(path, errors="replace") as f:
            return parse_list(f, base, str(path)), "list"
    return [VideoEntry(_strip_ext(path.name), str(path))], "file"


def _has_kinetics_header(path: Path) -> bool:
    with open(path, errors="replace") as f:
        return "youtube_id" in f.readline()


def assign_splits(entries: list[VideoEntry], test_fraction: float) -> list[VideoEntry]:
    """Labelled videos without any split get a deterministic per-class train/test split."""
    if not entries or any(e.split for e in entries) or not all(e.label for e in entries):
        return entries
    by_class: dict[str, list[VideoEntry]] = {}
    for e in entries:
        by_class.setdefault(e.label, []).append(e)
    test = set()
    for members in by_class.values():
        ranked = sorted(members, key=lambda e: digest(e.id))
        test.update(e.id for e in ranked[: int(round(len(members) * test_fraction))])
    return [dataclasses.replace(e, split="test" if e.id in test else "train") for e in entries]


def build_index(sources: list[str], opts: IndexOptions, stdin=None) -> DatasetIndex:
    """All sources as one list; ids must be unique across them."""
    if opts.layout not in LAYOUTS:
        raise UsageProblem(f"unknown layout {opts.layout!r}; choose from {', '.join(LAYOUTS)}")
    entries, layouts = [], []
    for src in sources:
        if src == "-":
            text = (stdin or sys.stdin).read()
            base = Path(opts.video_root) if opts.video_root else Path.cwd()
            found, layout = parse_list(io.StringIO(text), base, "<stdin>"), "list"
        else:
            path = Path(src).expanduser().absolute()
            if path.is_dir():
                found, layout = index_directory(path, opts)
            elif path.exists():
                found, layout = index_file(path, opts)
            else:
                raise UsageProblem("no such file or directory", src)
        entries += found
        layouts.append(layout)
    seen: dict[str, VideoEntry] = {}
    for e in entries:
        if e.id in seen and seen[e.id].path != e.path:
            raise UsageProblem(f"two sources give the same video id {e.id!r}: {seen[e.id].path}",
                               e.path)
        seen[e.id] = e
    unique = assign_splits(list(seen.values()), opts.test_fraction)
    labels = {e.label for e in unique if e.label}
    return DatasetIndex(unique, layouts, sorted(labels))
