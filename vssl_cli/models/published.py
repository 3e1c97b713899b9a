"""Published encoders vssl imports: the architecture, key map and input each one expects.

A format is named SOURCE:ARCH and is data (``FORMATS``): the vssl backbone that computes
exactly the published network, a function from the file's keys to vssl's (``None`` for a
key that is not part of the encoder, such as a classifier or projection head), and the
input convention the weights were trained with. Every format's architecture is checked
in tests/test_import.py against the authors' own model code with random weights.

- torchvision (``torchvision.models.video``; Tran et al. 2018): ``layerN.`` is vssl's
  ``stages.N-1.``; the Kinetics-400 classifier ``fc`` is dropped (vssl evaluates the
  pooled features with its own heads). Input: RGB in [0, 1], the Kinetics mean/std of
  torchvision's weights, 16 frames, frames resized to 128x171 and centre-cropped to 112
  (vssl keeps the aspect ratio: a centre square of 112/128 of the short side, the same
  region for 4:3 video).
- TCLR (Dave et al. 2022, github.com/DAVEISHAN/TCLR): ``{"state_dict": ...}`` of a
  DataParallel ``Sequential(backbone, mlp)`` (keys ``module.0.*`` and ``module.1.*``);
  the backbone is torchvision's with a temporally dilated res5 (``r3d18_tclr``); the
  projection head ``1.*`` is dropped. Input as ``linear_eval/dl_linear.py`` feeds it:
  OpenCV's BGR frames scaled to [0, 1], no mean/std, 16 frames 2 apart, a centre square
  of 0.8 of the short side resized to 112. The repository has no builder for its
  R(2+1)D-18 checkpoint; vssl assumes the same change as for R3D (res5's temporal conv
  dilated instead of strided), which the weights' shapes cannot confirm.
- PyTorchVideo ``slow_r50`` (the SlowOnly 8x8 R-50 of Feichtenhofer et al. 2019):
  ``blocks.0`` is the stem, ``blocks.1-4.res_blocks.B.{branch1_conv, branch2.conv_a..c}``
  vssl's ``stages.0-3.B.{downsample.0, conv1.0, conv2.0, conv3.0}`` (norms likewise);
  the head ``blocks.5`` is dropped. Input: RGB, mean 0.45, std 0.225, 8 frames 8 apart,
  short side 256 centre-cropped to 256.
- ``vssl`` and ``safetensors``: vssl's own keys (``encoder.pt`` of a run, or
  ``vssl export --format safetensors``, whose metadata names backbone and input).
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Callable

import torch

from vssl_cli.data.augment import AugConfig
from vssl_cli.errors import UsageProblem, VsslError

KINETICS_MEAN = [0.43216, 0.394666, 0.37645]
KINETICS_STD = [0.22803, 0.22145, 0.216989]
# Where a state dict sits in the checkpoints people share (PySlowFast: model_state).
CONTAINERS = ("state_dict", "model_state", "model", "module", "encoder", "backbone",
              "network", "net", "weights")


@dataclasses.dataclass(frozen=True)
class Convention:
    """How the weights expect their clips (recorded in ``outputs.encoder``)."""
    clip_len: int = 16
    stride: int = 2
    size: int = 112
    mean: tuple[float, ...] = AugConfig.mean
    std: tuple[float, ...] = AugConfig.std
    channels: str = "rgb"            # rgb | bgr
    crop_fraction: float = 1.0       # centre square's side / the frame's short side


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    backbone: str | None             # None: from --backbone or the file's metadata
    convention: Convention
    rename: Callable[[str], str | None]
    key_map: tuple[str, ...]         # the rules in words, for the manifest
    published: str = ""              # figures a user can compare with (docs and --list)


def _torchvision_key(key: str) -> str | None:
    if key.startswith("fc."):
        return None
    match = re.match(r"layer([1-4])\.(.*)", key)
    return f"stages.{int(match[1]) - 1}.{match[2]}" if match else key


def _tclr_key(key: str) -> str | None:
    if key.startswith("1."):                     # the projection head (mlp.py)
        return None
    return _torchvision_key(key[2:] if key.startswith("0.") else key)


_PTV_PARTS = {"branch1_conv": "downsample.0", "branch1_norm": "downsample.1",
              "branch2.conv_a": "conv1.0", "branch2.norm_a": "conv1.1",
              "branch2.conv_b": "conv2.0", "branch2.norm_b": "conv2.1",
              "branch2.conv_c": "conv3.0", "branch2.norm_c": "conv3.1"}


def _pytorchvideo_key(key: str) -> str | None:
    stem = re.match(r"blocks\.0\.(conv|norm)\.(\w+)$", key)
    if stem:
        return f"stem.{0 if stem[1] == 'conv' else 1}.{stem[2]}"
    block = re.match(r"blocks\.([1-4])\.res_blocks\.(\d+)\.(.+)\.(\w+)$", key)
    if block and block[3] in _PTV_PARTS:
        return f"stages.{int(block[1]) - 1}.{block[2]}.{_PTV_PARTS[block[3]]}.{block[4]}"
    return None if key.startswith("blocks.5.") else key


_TV = Convention(16, 2, 112, tuple(KINETICS_MEAN), tuple(KINETICS_STD), "rgb", 112 / 128)
_TV_MAP = ("layerN.* -> stages.N-1.*", "fc.* dropped (Kinetics-400 classifier)")
_TCLR = Convention(16, 2, 112, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bgr", 0.8)
_TCLR_MAP = ("module. prefix stripped", "0.* -> the backbone", "1.* dropped (projection head)",
             *_TV_MAP)
FORMATS = {f.name: f for f in [
    Format("torchvision:r3d_18", "r3d18", _TV, _torchvision_key, _TV_MAP,
           "Kinetics-400 clip accuracy 63.2 top-1 (torchvision's weights metadata)"),
    Format("torchvision:r2plus1d_18", "r2plus1d18", _TV, _torchvision_key, _TV_MAP,
           "Kinetics-400 clip accuracy 67.5 top-1 (torchvision's weights metadata)"),
    Format("torchvision:mc3_18", "mc3_18", _TV, _torchvision_key, _TV_MAP,
           "Kinetics-400 clip accuracy 64.0 top-1 (torchvision's weights metadata)"),
    Format("tclr:r3d_18", "r3d18_tclr", _TCLR, _tclr_key, _TCLR_MAP,
           "UCF101 split 1 pretraining: finetune 82.4, NN retrieval R@1 56.2, linear 69.9 "
           "(paper, Tables 2-4)"),
    Format("tclr:r2plus1d_18", "r2plus1d18_tclr", _TCLR, _tclr_key, _TCLR_MAP,
           "Kinetics-400 pretraining (weights on the TCLR README)"),
    Format("pytorchvideo:slow_r50", "r3d50_slowonly",
           Convention(8, 8, 256, (0.45,) * 3, (0.225,) * 3, "rgb", 1.0), _pytorchvideo_key,
           ("blocks.0 -> stem", "blocks.1-4.res_blocks.B -> stages.0-3.B",
            "branch1_conv/norm -> downsample.0/1", "branch2.conv_a/b/c -> conv1/2/3.0",
            "branch2.norm_a/b/c -> conv1/2/3.1", "blocks.5.* dropped (classifier head)"),
           "Kinetics-400 74.58 top-1, 10x3 views (PyTorchVideo model zoo, SLOW_8x8_R50)"),
    Format("vssl", None, Convention(), lambda k: k, ("vssl's own keys",)),
    Format("safetensors", None, Convention(), lambda k: k, ("vssl's own keys",)),
]}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise UsageProblem(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def find_state_dict(obj, source: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict inside a loaded checkpoint and the key it sat under (None: top)."""
    if _is_state_dict(obj):
        return obj, None
    if isinstance(obj, dict):
        for key in CONTAINERS:
            if _is_state_dict(obj.get(key)):
                return obj[key], key
        for key in CONTAINERS:             # e.g. {"model": {"state_dict": ...}}
            inner = obj.get(key)
            if isinstance(inner, dict):
                for sub in CONTAINERS:
                    if _is_state_dict(inner.get(sub)):
                        return inner[sub], f"{key}.{sub}"
        top = ", ".join(repr(k) for k in list(obj)[:6])
        raise VsslError(f"no state dict of tensors in the weights file (top-level keys: "
                        f"{top or 'none'})", source)
    raise VsslError(f"the weights file holds a {type(obj).__name__}, not a state dict",
                    source)


def _is_state_dict(obj) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) for k in obj)
            and sum(isinstance(v, torch.Tensor) for v in obj.values()) >= len(obj) / 2)


def map_keys(fmt: Format, state: dict, source: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(vssl state dict, what was done) for the file's ``state`` under ``fmt``."""
    out, origin, dropped, notes = {}, {}, {}, set()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue                     # e.g. an int someone stored beside the weights
        bare = key
        while bare.startswith("module."):          # DataParallel / DDP
            bare = bare[len("module."):]
            notes.add("module. prefix stripped")
        new = fmt.rename(bare)
        if new is None:
            head = bare.split(".")[0] + ".*"
            dropped[head] = dropped.get(head, 0) + 1
            continue
        if new in out:
            raise VsslError(f"the weights file has two tensors for {new}: {origin[new]!r} "
                            f"and {key!r}", source)
        if value.is_floating_point():
            if value.dtype != torch.float32:
                notes.add(f"{str(value.dtype).removeprefix('torch.')} cast to float32")
                value = value.float()
            if not torch.isfinite(value).all():
                raise VsslError(f"the weights hold NaN or infinite values in {key}", source)
        out[new], origin[new] = value, key
    return out, {"rules": sorted(notes) + list(fmt.key_map), "dropped": dropped,
                 "tensors": len(out)}


def fit_report(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str | None:
    """None when ``got`` fits ``expected`` key for key and shape for shape; else the first
    missing, unexpected and mis-shaped keys in one line. BatchNorm's batch counter may be
    absent (checkpoints older than PyTorch 0.4.1 have none)."""
    missing = [k for k in expected if k not in got and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in got if k not in expected]
    shapes = [k for k in expected if k in got and got[k].shape != expected[k].shape]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            parts.append(f"{what} {keys[0]}{more}")
    if shapes:
        k = shapes[0]
        more = f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""
        parts.append(f"{k} is {_shape(got[k])} in the file, {_shape(expected[k])} "
                     f"expected{more}")
    return "; ".join(parts) or None


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "a scalar"


def metadata_spec(metadata: dict) -> dict:
    """The encoder entry ``vssl export --format safetensors`` stored in the file."""
    text = metadata.get("vssl_encoder")
    if not text:
        return {}
    try:
        spec = json.loads(text)
    except ValueError:
        return {}
    return spec if isinstance(spec, dict) else {}
