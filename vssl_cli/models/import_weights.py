"""Turning a published checkpoint into vssl's encoder weights, checked key by key.

Read without running code (weights_file.py), find the state dict inside whatever the
authors saved, map its keys (published.py), require an exact fit to the vssl backbone
(every key, every shape; only BatchNorm batch counters may be absent), load it, and
check that every tensor arrived unchanged: weights never load silently as zeros or
stay at their random initialisation.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from vssl_cli.errors import UsageProblem, VsslError
from vssl_cli.models import build_backbone, is_frame_backbone
from vssl_cli.models.published import (Format, find_state_dict, fit_report, get_format,
                                       map_keys, metadata_spec)
from vssl_cli.models.weights_file import read_weights, sha256_of
from vssl_cli.safe_io import check_regular
from vssl_cli.torch_io import save_atomic

CONVENTION_KEYS = ("clip_len", "stride", "size", "mean", "std", "channels", "crop_fraction")


@dataclasses.dataclass
class Imported:
    config: dict                  # what identifies the import: format, file digest, input
    spec: dict                    # outputs.encoder, without file and sha256
    key_map: dict
    state: dict[str, torch.Tensor]

    def write(self, folder: Path, name: str) -> dict:
        """Save the encoder weights into ``folder``; returns the manifest's outputs."""
        save_atomic(self.state, folder / name, "encoder weights")
        encoder = {"file": name, **self.spec, "sha256": sha256_of(folder / name)}
        return {"encoder": encoder, "imported": {**self.config["source"],
                                                 "format": self.config["format"],
                                                 "key_map": self.key_map}}


def convert(path: str, format_name: str, backbone: str | None, overrides: dict) -> Imported:
    fmt = get_format(format_name)
    size = check_regular(path, "weights file").st_size
    contents, metadata = read_weights(path)
    state, container = find_state_dict(contents, path)
    from_file = metadata_spec(metadata)
    backbone = _backbone(fmt, backbone, from_file, path)
    strides = from_file.get("temporal_strides") if fmt.backbone is None else None
    encoder = build_backbone(backbone, temporal_strides=tuple(strides) if strides else None)
    mapped, key_map = map_keys(fmt, state, path)
    if container:
        key_map["rules"].insert(0, f"state dict under {container!r}")
    problem = fit_report(encoder.state_dict(), mapped)
    if problem:
        raise VsslError(f"the weights do not fit {fmt.name} ({backbone}): {problem}", path)
    encoder.load_state_dict(mapped, strict=False)
    loaded = encoder.state_dict()
    changed = [k for k, v in mapped.items() if not torch.equal(loaded[k], v.to(loaded[k]))]
    if changed:                       # cannot happen with an exact fit; never pass silently
        raise VsslError(f"the weights did not load unchanged ({changed[0]})", path)
    spec = {"backbone": backbone, "temporal_strides": list(strides) if strides else None,
            "frame_model": is_frame_backbone(backbone),
            **_convention(fmt, from_file, overrides)}
    source = {"file": os.path.basename(path), "sha256": sha256_of(path), "bytes": size}
    config = {"format": fmt.name, "source": source, "encoder": spec}
    return Imported(config, spec, key_map, {k: v.detach().clone() for k, v in loaded.items()})


def _backbone(fmt: Format, chosen: str | None, from_file: dict, path: str) -> str:
    if fmt.backbone is not None:
        if chosen not in (None, fmt.backbone):
            raise UsageProblem(f"{fmt.name} is the {fmt.backbone} backbone; --backbone "
                               f"{chosen} does not apply", path)
        return fmt.backbone
    found = chosen or from_file.get("backbone")
    if not found:
        raise UsageProblem(f"--format {fmt.name} needs --backbone (the file does not name "
                           "one)", path)
    return found


def _convention(fmt: Format, from_file: dict, overrides: dict) -> dict:
    """The format's input convention, then what the file's own metadata says, then the
    user's options."""
    base = dataclasses.asdict(fmt.convention)
    out = {k: from_file.get(k, base[k]) for k in CONVENTION_KEYS}
    out.update(overrides)
    out["mean"], out["std"] = [float(v) for v in out["mean"]], [float(v) for v in out["std"]]
    out["crop_fraction"] = float(out["crop_fraction"])
    if len(out["mean"]) != 3 or len(out["std"]) != 3 or min(out["std"]) <= 0:
        raise UsageProblem("mean and std need three values each, std above 0")
    return out
