"""What the fields of a manifest may hold, checked when it is read.

A manifest is a JSON file anyone can edit; a reader that trusted ``clip_len: 1e9`` or
``frames: -5`` would allocate without bound or crash deep inside. The rules are data:
per field, the JSON types allowed and, for numbers, a range. The frames table of a store
can hold hundreds of thousands of records, so the checker is a plain loop (~1 us a
record) rather than a general JSON-schema validator (~10 us).
"""
from __future__ import annotations

import math
import re

from vssl_cli.errors import VsslError

INT, NUM, STR, BOOL, NULL, LIST = int, float, str, bool, type(None), list
KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")

# field: (allowed types, low, high); numbers are checked against [low, high].
VIDEO_RECORD = {
    "id": ((STR,), None, None), "key": ((STR,), None, None), "status": ((STR,), None, None),
    "label": ((STR, NULL), None, None), "split": ((STR, NULL), None, None),
}
USABLE_VIDEO = {          # what readers use of a video whose status is ok
    "frames": ((INT,), 1, 10**9), "height": ((INT,), 1, 65536), "width": ((INT,), 1, 65536),
    "fps": ((INT, NUM, NULL), 0, 1e6),
}
FRAME_PARAMS = {          # config.frames: how a query video is decoded like the store
    "fps": ((INT, NUM, NULL), 1e-3, 1e4), "short_side": ((INT, NULL), 2, 65536),
    "size": ((LIST, NULL), 2, 65536), "max_frames": ((INT, NULL), 1, 10**9),
}
ENCODER = {               # outputs.encoder of a model: how to rebuild and feed it
    "backbone": ((STR,), None, None), "file": ((STR,), None, None),
    "clip_len": ((INT,), 1, 4096), "stride": ((INT,), 1, 1024), "size": ((INT,), 8, 4096),
    "mean": ((LIST,), -10, 10), "std": ((LIST,), 1e-6, 100),
    "temporal_strides": ((LIST, NULL), 1, 16), "frame_model": ((BOOL, NULL), None, None),
    # Later fields (absent: rgb, pixels in [0, 1], the whole short side, not recorded).
    "channels": ((STR, NULL), None, None), "pixel_max": ((INT, NUM, NULL), 1, 255),
    "crop_fraction": ((INT, NUM, NULL), 0.05, 1), "sha256": ((STR, NULL), None, None),
}


def _type_name(types) -> str:
    names = {INT: "an integer", NUM: "a number", STR: "a string", BOOL: "true/false",
             NULL: "null", LIST: "a list"}
    return " or ".join(names[t] for t in types)


def _fits(value, types, lo, hi) -> bool:
    if type(value) not in types and not (NUM in types and type(value) is int):
        return False
    items = value if type(value) is list else [value]
    for item in items:
        if item is None and NULL in types:
            continue
        if type(item) is bool and BOOL not in types:
            return False
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if not math.isfinite(item) or (lo is not None and not lo <= item <= hi):
                return False
        elif type(value) is list:
            return False                  # lists hold numbers only
    return True


def check_fields(obj, rules: dict, where: str, source: str, required: bool = True) -> None:
    """Each field of ``rules`` in ``obj`` (a dict) as its rule says; a missing field is an
    error when ``required``."""
    if not isinstance(obj, dict):
        raise VsslError(f"manifest field {where} is not an object", source)
    for field, (types, lo, hi) in rules.items():
        if field not in obj:
            if required and NULL not in types:
                raise VsslError(f"manifest field {where}.{field} is missing", source)
            continue
        value = obj[field]
        if not _fits(value, types, lo, hi):
            bounds = f" in [{lo:g}, {hi:g}]" if lo is not None else ""
            raise VsslError(f"manifest field {where}.{field} = {str(value)[:40]} is not "
                            f"{_type_name(types)}{bounds}", source)


def check_frames_manifest(manifest: dict, source: str) -> None:
    check_fields(manifest["config"].get("frames", {}), FRAME_PARAMS, "config.frames", source,
                 required=False)
    size = manifest["config"].get("frames", {}).get("size")
    if size is not None and (len(size) != 2 or any(type(v) is not int for v in size)):
        raise VsslError("manifest field config.frames.size needs 2 integers", source)
    classes = manifest["outputs"].get("classes", [])
    if not isinstance(classes, list) or any(type(c) is not str for c in classes):
        raise VsslError("manifest field outputs.classes is not a list of names", source)
    videos = manifest["outputs"].get("videos", [])
    if not isinstance(videos, list):
        raise VsslError("manifest field outputs.videos is not a list", source)
    live: dict[str, int] = {}
    for n, record in enumerate(videos):
        where = f"outputs.videos[{n}]"
        check_fields(record, VIDEO_RECORD, where, source)
        for field in ("source", "error"):
            if not isinstance(record.get(field, ""), str) or (
                    field == "error" and record["status"] == "error" and field not in record):
                raise VsslError(f"manifest field {where}.{field} is not a string", source)
        splits = record.get("splits")
        if splits is not None and (not isinstance(splits, list) or len(splits) != 3 or any(
                s not in ("train", "test", "unused") for s in splits)):
            raise VsslError(f"manifest field {where}.splits is not 3 of train/test/unused",
                            source)
        warnings = record.get("warnings", [])
        if not isinstance(warnings, list) or any(type(w) is not str for w in warnings):
            raise VsslError(f"manifest field {where}.warnings is not a list of strings",
                            source)
        if record.get("status") == "ok":
            check_fields(record, USABLE_VIDEO, where, source)
            if not KEY.fullmatch(record.get("key") or ""):
                raise VsslError(f"invalid video key {record.get('key')!r} in the manifest "
                                "(keys are plain names inside the store)", source)
            if record["key"] in live:
                raise VsslError(f"{where} and outputs.videos[{live[record['key']]}] share "
                                f"the video key {record['key']!r}", source)
            live[record["key"]] = n


def check_model_manifest(manifest: dict, source: str) -> None:
    encoder = manifest["outputs"].get("encoder")
    if encoder is not None:
        check_fields(encoder, ENCODER, "outputs.encoder", source)
        for name in ("mean", "std"):
            if len(encoder[name]) != 3:
                raise VsslError(f"manifest field outputs.encoder.{name} needs 3 values",
                                source)
        if encoder.get("channels") not in (None, "rgb", "bgr"):
            raise VsslError("manifest field outputs.encoder.channels is not rgb or bgr",
                            source)
        strides = encoder.get("temporal_strides")
        if strides is not None and (len(strides) != 4
                                    or any(type(s) is not int for s in strides)):
            raise VsslError("manifest field outputs.encoder.temporal_strides needs 4 "
                            "integers", source)


KIND_CHECKS = {"frames": check_frames_manifest, "model": check_model_manifest}
