"""The deployable encoder: normalised clips (B, 3, T, H, W) in, pooled features (B, D) out.

The expected preprocessing (clip length, stride, size, mean/std) is recorded in the
export manifest. Every export is loaded back and compared with the PyTorch encoder on a
random input; the largest absolute difference is part of the manifest.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vssl_cli.errors import VsslError

TOLERANCE = 1e-3   # relative to the largest output magnitude


class Embedder(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.encoder(clips)["pooled"]


def example_input(spec: dict, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, spec["clip_len"], spec["size"], spec["size"], generator=gen)


def _check(reference: torch.Tensor, got: np.ndarray, what: str, path: Path) -> float:
    diff = float(np.abs(reference.numpy() - got).max())
    scale = float(reference.abs().max()) or 1.0
    if diff > TOLERANCE * scale:
        raise VsslError(f"{what} output differs from PyTorch by {diff:.3g}", path)
    return diff


@torch.no_grad()
def to_torchscript(encoder: nn.Module, spec: dict, path: Path) -> dict:
    model, x = Embedder(encoder).eval(), example_input(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    return {"max_abs_diff": _check(model(x), loaded(x).numpy(), "TorchScript", path)}


@torch.no_grad()
def to_onnx(encoder: nn.Module, spec: dict, path: Path, opset: int = 17) -> dict:
    model, x = Embedder(encoder).eval(), example_input(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["clips"],
                          output_names=["features"], opset_version=opset,
                          dynamic_axes={"clips": {0: "batch"}, "features": {0: "batch"}})
    try:
        import onnxruntime
    except ImportError:
        return {"checked": False, "note": "onnxruntime not installed; output not compared"}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"clips": x.numpy()})[0]
    return {"checked": True, "opset": opset,
            "max_abs_diff": _check(model(x), got, "ONNX", path)}


def to_safetensors(encoder: nn.Module, spec: dict, path: Path) -> dict:
    from safetensors.torch import load_file, save_file
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(path), metadata={"vssl_encoder": json.dumps(spec)})
    back = load_file(str(path))
    if back.keys() != state.keys() or any(not torch.equal(back[k], state[k]) for k in state):
        raise VsslError("safetensors round trip changed the weights", path)
    return {"tensors": len(state), "parameters": int(sum(v.numel() for v in state.values()))}
