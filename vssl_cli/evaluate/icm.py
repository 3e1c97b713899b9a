"""VTHCL's Instance Correspondence Maps as PNG heatmaps (``vssl export --format icm``).

The map needs both pathways and the projection phi, which only the training checkpoint
holds (the model artifact's encoder.pt is the slow encoder alone), so the method is
rebuilt from the checkpoint. For each chosen video the centred raw window gives the slow
and fast clips; the image shows the slow frames (top row) and the same frames with the
map, upsampled to the frame, as a heatmap (bottom row).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vssl_cli.artifacts import artifact_file
from vssl_cli.data.samplers import clip_indices
from vssl_cli.errors import VsslError
from vssl_cli.evaluate.features import preprocess
from vssl_cli.torch_io import load_plain


def load_trained_method(run: str, manifest: dict):
    """The whole method (both pathways, heads, banks) from RUN's checkpoint."""
    from vssl_cli.methods import method_class
    path = Path(run, artifact_file(manifest.get("outputs", {}).get("checkpoint",
                                                                   "checkpoint.pt"), run))
    if not path.exists():
        raise VsslError("no training checkpoint (needed for the correspondence maps)", path)
    state = load_plain(path, "checkpoint")
    config = state.get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict) or not isinstance(state.get("model"), dict):
        raise VsslError("the checkpoint lacks the model or its config", path)
    method = method_class(config.get("method")).from_config(config)
    banks = [v for k, v in state["model"].items() if k.startswith("bank_")]
    if banks:
        method.attach_dataset(banks[0].shape[0])
    method.load_state_dict(state["model"])
    return method.eval()


def _overlay(frames: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """frames (T, S, S, 3) uint8, heat (T, S, S) in [0, 1] -> (2S, T*S, 3) uint8 image."""
    from matplotlib import colormaps
    colour = colormaps["jet"](heat)[..., :3] * 255
    mixed = (0.5 * frames + 0.5 * colour).astype(np.uint8)
    return np.concatenate([np.concatenate(list(frames), 1), np.concatenate(list(mixed), 1)], 0)


@torch.no_grad()
def write_icm_images(method, store, video_ids: list[str], out_dir: Path, device) -> list[str]:
    import matplotlib.image
    p, spec = method.params, method.encoder_spec()
    method.to(device)
    files = []
    for n, vid in enumerate(video_ids):
        frames_n = store.num_frames(vid)
        start = max(0, (frames_n - p.clip_len * p.stride) // 2)
        views = [clip_indices(frames_n, p.clip_len, p.stride, start),
                 clip_indices(frames_n, p.clip_len * p.alpha, p.stride // p.alpha, start)]
        clips = [torch.from_numpy(store.read(vid, v)).permute(3, 0, 1, 2)[None].to(device)
                 for v in views]
        hw = torch.tensor([clips[0].shape[-2:]])
        slow, fast = (preprocess(c, hw, spec) for c in clips)
        icm = method.correspondence_map(slow, fast)                       # (1, t, h, w)
        heat = F.interpolate(icm[:, None], size=slow.shape[2:], mode="trilinear",
                             align_corners=False)[0, 0]
        heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp(min=1e-8)
        mean = torch.tensor(spec["mean"], device=device).view(3, 1, 1, 1)
        std = torch.tensor(spec["std"], device=device).view(3, 1, 1, 1)
        shown = ((slow[0] * std + mean).clamp(0, 1) * 255).permute(1, 2, 3, 0)
        name = f"{n:03d}_{vid.replace('/', '_')}.png"
        matplotlib.image.imsave(out_dir / name, _overlay(shown.byte().cpu().numpy(),
                                                         heat.cpu().numpy()))
        files.append(name)
    return files
