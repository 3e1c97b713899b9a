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
import logging
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable

from vssl_cli import safe_io
from vssl_cli.artifacts import digest
from vssl_cli.errors import UsageProblem, VsslError

log = logging.getLogger("vssl.extract")

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv",
                    ".wmv", ".3gp", ".ts", ".mts", ".ogv"}
LIST_EXTENSIONS = {".txt", ".lst", ".list", ".csv", ".tsv"}
LAYOUTS = ("auto", "ucf101", "hmdb51", "kinetics", "folders", "list", "plain")
OFFICIAL_SPLITS = 3      # UCF101 and HMDB51 each define three train/test splits
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
    # The video's role in each official split 1..3 of UCF101/HMDB51: "train", "test" or
    # "unused" (HMDB51's 0 tag); ``split`` is its role in the split chosen at extraction.
    splits: tuple[str, str, str] | None = None

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
    """Every video file under ``root``, symbolic links followed, each real folder and each
    real file visited once (a link back up the tree would otherwise loop)."""
    found, seen_dirs, seen_files = [], set(), set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or not is_video_name(f):
                continue
            path = Path(dirpath) / f
            try:
                fst = path.stat()
            except OSError:        # a dangling link: decoding will say it is missing
                found.append(path)
                continue
            if (fst.st_dev, fst.st_ino) not in seen_files:
                seen_files.add((fst.st_dev, fst.st_ino))
                found.append(path)
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
    for n, line in enumerate(_read_text(class_files[0]).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not (fields[0].isascii() and fields[0].isdigit()):
            raise UsageProblem(f"line {n}: expected 'index class', got {line!r}",
                               class_files[0])
        classes[int(fields[0])] = fields[1]
    roles: dict[str, list[str]] = {}      # video -> its role in splits 1..3
    order: list[str] = []
    video_root = None
    for n in range(1, OFFICIAL_SPLITS + 1):
        for split in ("train", "test"):
            list_file = ann / f"{split}list{n:02d}.txt"
            if not list_file.exists():
                if n == opts.split:
                    raise UsageProblem(f"split {opts.split} has no {list_file.name}", ann)
                continue                  # a copy with fewer splits: they stay unknown
            for line in _read_text(list_file).splitlines():
                if not line.strip():
                    continue
                rel = line.split()[0]
                if video_root is None:
                    video_root = _locate_root([root, *sorted(p for p in root.iterdir()
                                                             if p.is_dir()), ann.parent],
                                              rel, list_file)
                label = rel.split("/")[0]
                if label not in classes.values():
                    raise UsageProblem(f"class {label!r} of {rel} is not in classInd.txt",
                                       list_file)
                if rel not in roles:
                    roles[rel] = ["unused"] * OFFICIAL_SPLITS
                    order.append(rel)
                roles[rel][n - 1] = split
    return [VideoEntry(_strip_ext(rel), str(video_root / rel), rel.split("/")[0],
                       _role(roles[rel][opts.split - 1]), splits=tuple(roles[rel]))
            for rel in order]


def _role(role: str) -> str | None:
    """The ``split`` field of a role: a video unused in the chosen split is in neither."""
    return None if role == "unused" else role


HMDB51_TAGS = {"0": "unused", "1": "train", "2": "test"}


def parse_hmdb51(root: Path, opts: IndexOptions) -> list[VideoEntry]:
    """Every video any split names, with its role in each of the three (tag 0: "not
    used" in that split, by the HMDB51 protocol)."""
    ann = Path(opts.annotations) if opts.annotations else root
    if not _find_file(ann, f"*_test_split{opts.split}.txt"):
        raise UsageProblem(f"HMDB51 layout needs *_test_split{opts.split}.txt files "
                           "(use --annotations DIR)", ann)
    videos = {p.name: p for p in _videos_under(root)}
    roles: dict[tuple[str, str], list[str]] = {}
    for n in range(1, OFFICIAL_SPLITS + 1):
        for f in sorted(_find_file(ann, f"*_test_split{n}.txt")):
            label = f.name[: f.name.rindex("_test_split")]
            for line in _read_text(f).splitlines():
                parts = line.split()
                if len(parts) != 2 or parts[1] not in HMDB51_TAGS:
                    if parts:
                        raise UsageProblem(f"expected 'video tag' with tag 0/1/2, got "
                                           f"{line!r}", f)
                    continue
                roles.setdefault((label, parts[0]), ["unused"] * OFFICIAL_SPLITS)[n - 1] = \
                    HMDB51_TAGS[parts[1]]
    return [VideoEntry(f"{label}/{_strip_ext(name)}",
                       str(videos.get(name) or Path(root / label / name)), label,
                       _role(role[opts.split - 1]), splits=tuple(role))
            for (label, name), role in roles.items() if set(role) != {"unused"}]


def parse_kinetics(csv_path: Path, opts: IndexOptions) -> list[VideoEntry]:
    """Kinetics CSV rows; finds ``ytid_start_end.*`` (pre-trimmed) or ``ytid.*`` (trimmed here)."""
    root = Path(opts.video_root) if opts.video_root else csv_path.parent
    by_stem = {p.stem: p for p in _videos_under(root)}
    entries = []
    with io.StringIO(_read_text(csv_path, LIST_BYTES), newline="") as f:
        reader = csv.DictReader(f)
        need = {"youtube_id", "time_start", "time_end"}
        if not need <= set(reader.fieldnames or []):
            raise UsageProblem("Kinetics CSV needs columns label,youtube_id,time_start,"
                               "time_end,split", csv_path)
        for row in reader:
            yt = (row["youtube_id"] or "").strip()
            if not yt:
                raise UsageProblem(f"line {reader.line_num}: empty youtube_id", csv_path)
            try:
                t0, t1 = float(row["time_start"]), float(row["time_end"])
            except (TypeError, ValueError):
                raise UsageProblem(f"line {reader.line_num}: time_start/time_end "
                                   f"{row['time_start']!r}/{row['time_end']!r} are not "
                                   "seconds", csv_path) from None
            if not (0 <= t0 < t1 < 1e7):
                raise UsageProblem(f"line {reader.line_num}: segment {t0}-{t1} s is not "
                                   "a time range", csv_path)
            stem = f"{yt}_{int(t0):06d}_{int(t1):06d}"
            if stem in by_stem:
                path, start, end = by_stem[stem], None, None
            else:  # full-length download (or missing: decoding will say so)
                path, start, end = by_stem.get(yt, root / f"{stem}.mp4"), t0, t1
            split = SPLIT_DIRS.get((row.get("split") or "").strip().lower())
            entries.append(VideoEntry(stem, str(path), (row.get("label") or None), split,
                                      start, end))
    return entries


LIST_BYTES = 256 << 20    # lists and CSVs (Kinetics-700's train CSV is ~30 MB)


def _read_text(path: Path, limit: int = safe_io.SMALL) -> str:
    """A list or annotation file; bytes that are not UTF-8 become U+FFFD, not a crash; a
    FIFO, a device or an absurd size is a usage error."""
    try:
        return safe_io.read_text(path, "list or annotation file", limit)
    except VsslError as e:
        raise UsageProblem(e.what, path) from None


def entry_id(path: Path, base: Path) -> str:
    """A readable id: the path below ``base`` without its extension; a path outside
    ``base`` is named by its absolute path (``/data/x.mp4`` -> ``data/x``), so ``../x.mp4``
    and ``x.mp4`` stay two videos. Hidden names keep their dot."""
    path = Path(os.path.normpath(path))
    rel = os.path.relpath(path, base)
    if rel == ".." or rel.startswith(".." + os.sep):
        rel = str(path).lstrip(os.sep)
    return _strip_ext(rel)


def _resolve(name: str, base: Path) -> Path | None:
    """``name`` from a list as a path (relative to ``base``), None when it cannot be one."""
    try:
        candidate = Path(name).expanduser()
    except RuntimeError:
        return None
    return candidate if candidate.is_absolute() else base / candidate


def _names_file(text: str, base: Path) -> bool:
    path = _resolve(text, base)
    return path is not None and path.is_file()


def _list_fields(text: str, base: Path) -> list[str]:
    """``path [label [split]]``: a line naming an existing file is that file whatever its
    spaces; else tab-separated fields (``path<TAB>`` is a path with spaces and no
    label); else whitespace-separated ones."""
    whole = text.strip()
    candidate = Path(whole).expanduser()
    if (candidate if candidate.is_absolute() else base / candidate).is_file():
        return [whole]
    if "\t" in text:
        fields = [f.strip() for f in text.strip("\r\n ").split("\t")]
        while len(fields) > 1 and not fields[-1]:
            fields.pop()
        return fields
    return whole.split()


def parse_list(lines: Iterable[str], base: Path, source: str) -> list[VideoEntry]:
    """``path [label [split]]`` per line (see ``_list_fields``)."""
    entries = []
    for n, raw in enumerate(lines, 1):
        text = raw.rstrip("\r\n")
        if "\x00" in text:
            raise UsageProblem(f"line {n}: NUL byte in {text!r} (use -0 for a NUL-separated "
                               "list)", source)
        try:
            # A line naming an existing file is that file, even one starting with "#"
            if not text.strip() or (text.lstrip().startswith("#")
                                    and not _names_file(text.strip(), base)):
                continue
            parts = _list_fields(text, base)
        except (OSError, RuntimeError, ValueError):   # unknown ~user, an absurd name
            raise UsageProblem(f"line {n}: cannot read {text.strip()!r} as a path",
                               source) from None
        named = _resolve(parts[0], base)
        if named is not None and named.is_dir():
            raise UsageProblem(f"line {n}: {parts[0]!r} is a directory; a list names video "
                               "files (pass a folder as a source of its own)", source)
        if len(parts) > 3:
            raise UsageProblem(f"line {n}: expected 'path [label [split]]', got "
                               f"{text.strip()!r} (a path with spaces that does not exist "
                               "yet needs a tab after it)", source)
        split = None
        if len(parts) == 3:
            split = SPLIT_DIRS.get(parts[2].lower())
            if split is None:
                raise UsageProblem(f"line {n}: unknown split {parts[2]!r}", source)
        entries.append(_list_entry(parts[0], parts[1] if len(parts) > 1 else None, split,
                                   base, source, n))
    return entries


def _list_entry(name: str, label: str | None, split: str | None, base: Path, source: str,
                n: int) -> VideoEntry:
    try:
        path = Path(name).expanduser()
    except RuntimeError:          # ~name of a user this machine does not know
        raise UsageProblem(f"line {n}: cannot expand {name!r}", source) from None
    path = Path(os.path.abspath(path if path.is_absolute() else base / path))
    return VideoEntry(entry_id(path, base), str(path), label or None, split)


def parse_null_list(data: str, base: Path, source: str) -> list[VideoEntry]:
    """NUL-separated paths (``find -print0``): any name, no labels."""
    return [_list_entry(name, None, None, base, source, n)
            for n, name in enumerate(data.split("\x00"), 1) if name.strip()]


def _folder_fit(root: Path, videos: list[Path]) -> tuple[list[Path], list[Path]]:
    """Videos that sit in a class folder (``root/<class>/x`` or
    ``root/<train|val|test>/<class>/x``) and those that do not."""
    rels = [v.relative_to(root).parts for v in videos]
    split_top = sum(1 for r in rels if r[0].lower() in SPLIT_DIRS and len(r) == 3)
    under_splits = split_top > len(rels) / 2
    fit, misfit = [], []
    for v, r in zip(videos, rels):
        ok = (len(r) == 3 and r[0].lower() in SPLIT_DIRS) if under_splits else len(r) == 2
        (fit if ok else misfit).append(v)
    return fit, misfit


def parse_folders(root: Path, videos: list[Path]) -> list[VideoEntry]:
    """Class from the folder, split from a train/val/test folder above it; a video
    outside any class folder (``--layout folders`` forced on a near fit) is unlabelled."""
    fit, _ = _folder_fit(root, videos)
    fitting = set(fit)
    entries = []
    for v in videos:
        parts = v.relative_to(root).parts
        label = parts[-2] if v in fitting else None
        split = SPLIT_DIRS.get(parts[0].lower()) if v in fitting and len(parts) == 3 else None
        entries.append(VideoEntry(_strip_ext(str(v.relative_to(root))), str(v), label, split))
    return entries


def _misfit_summary(root: Path, misfit: list[Path]) -> str:
    where = Counter(str(v.relative_to(root).parent) if v.parent != root else "."
                    for v in misfit)
    shown = ", ".join(f"{'the top folder' if w == '.' else w + '/'} ({n})"
                      for w, n in sorted(where.items())[:5])
    return shown + (f" and {len(where) - 5} more" if len(where) > 5 else "")


def detect_layout(root: Path, videos: list[Path]) -> str:
    return explain_layout(root, videos)[0]


def explain_layout(root: Path, videos: list[Path]) -> tuple[str, str]:
    """(layout, why), the why for a person: which file decided, or which folders keep a
    folder layout from fitting."""
    for pattern, layout in (("classInd.txt", "ucf101"), ("*_test_split[0-9].txt", "hmdb51")):
        found = _find_file(root, pattern)
        if found:
            return layout, f"found {found[0].relative_to(root)}"
    if not videos:
        return "plain", "no videos"
    fit, misfit = _folder_fit(root, videos)
    classes = {v.parent.name for v in fit}
    if not misfit and len(classes) >= 2:
        return "folders", f"every video sits in a class folder ({len(classes)} classes)"
    if not misfit:
        return "plain", "all videos are in one folder, so there are no classes to tell apart"
    if len(fit) >= 0.5 * len(videos) and len(classes) >= 2:
        return "plain", (f"unlabelled: {len(fit)} of {len(videos)} videos sit in class "
                         f"folders, but {_misfit_summary(root, misfit)} do not; move those, "
                         "or use --layout folders to label the others and leave them "
                         "unlabelled")
    return "plain", "videos are not arranged in class folders"


def index_directory(root: Path, opts: IndexOptions) -> tuple[list[VideoEntry], str]:
    videos = _videos_under(root) if opts.layout in ("auto", "folders", "plain") else []
    if opts.layout == "auto":
        layout, why = explain_layout(root, videos)
        log.info("%s: layout %s (%s)", root, layout, why)
    else:
        layout = opts.layout
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
    try:
        safe_io.check_regular(path, "source")   # a FIFO or a device would never end
    except VsslError as e:
        raise UsageProblem(e.what, path) from None
    suffix = path.suffix.lower()
    if opts.layout == "kinetics" or (suffix == ".csv" and _has_kinetics_header(path)):
        return parse_kinetics(path, opts), "kinetics"
    if suffix in LIST_EXTENSIONS or opts.layout == "list":
        base = Path(opts.video_root) if opts.video_root else path.parent
        return parse_list(io.StringIO(_read_text(path, LIST_BYTES)), base, str(path)), "list"
    return [VideoEntry(_strip_ext(path.name), str(path))], "file"


def _has_kinetics_header(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"youtube_id" in f.readline(1 << 16)


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


def build_index(sources: list[str], opts: IndexOptions, stdin=None,
                null_separated: bool = False) -> DatasetIndex:
    """All sources as one list. Distinct files that would get the same id are told apart
    (see ``_unique_ids``); the same file named twice is one video."""
    if opts.layout not in LAYOUTS:
        raise UsageProblem(f"unknown layout {opts.layout!r}; choose from {', '.join(LAYOUTS)}")
    entries, layouts = [], []
    for src in sources:
        if src == "-":
            text = (stdin or sys.stdin).read()
            base = Path(opts.video_root) if opts.video_root else Path.cwd()
            found = (parse_null_list(text, base, "<stdin>") if null_separated
                     else parse_list(io.StringIO(text), base, "<stdin>"))
            layout = "list"
        else:
            path = Path(os.path.abspath(Path(src).expanduser()))
            if path.is_dir():
                found, layout = index_directory(path, opts)
            elif path.exists():
                found, layout = index_file(path, opts)
            else:
                raise UsageProblem("no such file or directory", src)
        entries += found
        layouts.append(layout)
    unique = assign_splits(_unique_ids([_readable(e) for e in entries]), opts.test_fraction)
    labels = {e.label for e in unique if e.label}
    return DatasetIndex(unique, layouts, sorted(labels))


def _text(name: str | None) -> str | None:
    """A file name as text: bytes that are not UTF-8 (kept by Python as surrogates, which
    no JSON file, picture or terminal can hold) become U+FFFD."""
    if name is None:
        return None
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _readable(e: VideoEntry) -> VideoEntry:
    """The entry with an id and class name that are text (its path stays the file's)."""
    if _text(e.id) == e.id and _text(e.label) == e.label:
        return e
    return dataclasses.replace(e, id=_text(e.id), label=_text(e.label))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _unique_ids(entries: list[VideoEntry]) -> list[VideoEntry]:
    """One entry per id. Distinct files that share an id (``test.avi`` beside
    ``test.mp4``, two folders with the same names) keep their extension in it, then, if
    still shared, a short digest of their path; the renaming is said on stderr and is
    the same on every run."""
    groups: dict[str, list[tuple[int, VideoEntry]]] = {}
    for i, e in enumerate(entries):
        same = groups.setdefault(e.id, [])
        twin = next((o for _, o in same if _same_file(o.path, e.path)
                     and (o.start, o.end) == (e.start, e.end)), None)
        if twin is None:
            same.append((i, e))
        elif (twin.label, twin.split) != (e.label, e.split):
            raise UsageProblem(f"{e.path} is listed twice, as {twin.label!r} ({twin.split}) "
                               f"and as {e.label!r} ({e.split}); name each video once",
                               e.path)
    named: dict[str, list[tuple[int, VideoEntry]]] = {}
    for vid, group in groups.items():
        for i, e in group:
            name = vid if len(group) == 1 else vid + Path(e.path).suffix.lower()
            named.setdefault(name, []).append((i, e))
    out = []
    for vid, group in named.items():
        for i, e in group:
            new = vid if len(group) == 1 else f"{vid}~{digest(e.path, 6)}"
            if new != e.id:
                log.warning("video id %r is shared by %d files; %s is stored as %r",
                            e.id, len(groups[e.id]), e.path, new)
                e = dataclasses.replace(e, id=new)
            out.append((i, e))
    return [e for _, e in sorted(out, key=lambda t: t[0])]
