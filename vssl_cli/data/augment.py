"""Batched, temporally consistent clip augmentations that report their parameters.

Everything runs as tensor ops on whatever device the clips live on (the training GPU),
one call per batch. Each clip gets its own random crop box, flip, colour jitter, grayscale
and blur, applied identically to all of its frames (temporal consistency, as CVRL
requires). The sampled parameters come back with the tensors because some losses need
them: the controllable-augmentation region contrast maps local crops into the global crop.

Clips are (B, C, T, H, W), uint8 or float in [0, 1]; output is float, normalised.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class AugConfig:
    size: int = 112
    scale: tuple[float, float] = (0.3, 1.0)       # crop area share (CVRL: 0.3-1)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    jitter_order: str = "fixed"    # fixed | random (per clip, as CVRL and SimCLR do)
    solarize_p: float = 0.0        # invert values above 0.5 (CVRL's second view: 0.2)
    channels: str = "rgb"          # rgb | bgr: the order the encoder takes (TCLR's: bgr)


@dataclasses.dataclass
class AugParams:
    """Per-clip parameters, each a tensor with batch dimension first."""
    boxes: torch.Tensor        # (B, 4) x0, y0, x1, y1 as fractions of the input frame
    flip: torch.Tensor         # (B,) bool, horizontal
    brightness: torch.Tensor   # (B,) multiplicative, 1 = unchanged
    contrast: torch.Tensor     # (B,)
    saturation: torch.Tensor   # (B,)
    hue: torch.Tensor          # (B,) shift in turns, 0 = unchanged
    gray: torch.Tensor         # (B,) bool
    blur_sigma: torch.Tensor   # (B,) pixels of the output, 0 = no blur
    # Optional: per-clip order of brightness, contrast, saturation, hue (B, 4), the blur
    # kernel's radius in pixels (B,; default 3 sigma), solarisation (B,) bool.
    order: torch.Tensor | None = None
    blur_radius: torch.Tensor | None = None
    solarize: torch.Tensor | None = None

    @classmethod
    def identity(cls, batch: int, device=None) -> "AugParams":
        ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)
        return cls(torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=device).repeat(batch, 1),
                   zeros.bool(), ones, ones.clone(), ones.clone(), zeros, zeros.bool(),
                   zeros.clone())


def _uniform(n, lo, hi, gen, device):
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def sample_boxes(n: int, aspect: float | torch.Tensor, scale, ratio, gen=None,
                 device=None) -> torch.Tensor:
    """Random-resized-crop boxes (fractions) for frames of width/height ``aspect`` (one
    value, or one per clip).

    Area share from ``scale`` and width/height ratio (log-uniform) from ``ratio``, as
    torchvision's RandomResizedCrop: of ten draws the first that fits in the frame, else
    the whole frame. (Clamping a side that did not fit made ``scale = [1, 1]`` crop 75-100%
    of the width.)
    """
    tries = 10
    area = _uniform(n * tries, *scale, gen, device).view(n, tries)
    log_r = _uniform(n * tries, math.log(ratio[0]), math.log(ratio[1]), gen, device)
    aspect = aspect.view(-1, 1) if isinstance(aspect, torch.Tensor) else aspect
    r = torch.exp(log_r).view(n, tries) / aspect          # ratio in fraction units
    w, h = torch.sqrt(area * r), torch.sqrt(area / r)
    fits = (w <= 1) & (h <= 1)
    first = fits.float().argmax(1, keepdim=True)           # the first draw that fits
    found = fits.any(1)
    one = torch.ones(n, device=w.device)
    w = torch.where(found, w.gather(1, first).squeeze(1), one)
    h = torch.where(found, h.gather(1, first).squeeze(1), one)
    x0 = torch.rand(n, generator=gen, device=device) * (1 - w)
    y0 = torch.rand(n, generator=gen, device=device) * (1 - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def sample_params(batch: int, frame_hw, cfg: AugConfig,
                  gen: torch.Generator | None = None, device=None) -> AugParams:
    """``frame_hw``: (H, W) of all clips, or a (B, 2) tensor of each clip's valid size."""
    def coin(p):
        return torch.rand(batch, generator=gen, device=device) < p

    def factor(strength):
        return _uniform(batch, max(0.0, 1 - strength), 1 + strength, gen, device)

    jitter = coin(cfg.jitter_p)
    one = torch.ones(batch, device=device)
    blur = coin(cfg.blur_p)
    return AugParams(
        boxes=sample_boxes(batch, _aspect(frame_hw, device), cfg.scale, cfg.ratio, gen, device),
        flip=coin(cfg.flip_p),
        brightness=torch.where(jitter, factor(cfg.brightness), one),
        contrast=torch.where(jitter, factor(cfg.contrast), one),
        saturation=torch.where(jitter, factor(cfg.saturation), one),
        hue=torch.where(jitter, _uniform(batch, -cfg.hue, cfg.hue, gen, device), 0 * one),
        gray=coin(cfg.gray_p),
        blur_sigma=torch.where(blur, _uniform(batch, *cfg.blur_sigma, gen, device), 0 * one),
        order=(torch.rand(batch, 4, generator=gen, device=device).argsort(1)
               if cfg.jitter_order == "random" else None),
        solarize=coin(cfg.solarize_p) if cfg.solarize_p > 0 else None)


def _aspect(frame_hw, device) -> float | torch.Tensor:
    if isinstance(frame_hw, torch.Tensor) and frame_hw.dim() == 2:
        return (frame_hw[:, 1] / frame_hw[:, 0]).float().to(device)
    return frame_hw[1] / frame_hw[0]


def in_padded_frame(boxes: torch.Tensor, valid_hw: torch.Tensor, padded_hw) -> torch.Tensor:
    """Boxes given as fractions of each clip's valid region, as fractions of the padded
    frame (collate_clips pads bottom and right)."""
    scale = torch.stack([valid_hw[:, 1] / padded_hw[1], valid_hw[:, 0] / padded_hw[0]], 1)
    return boxes * scale.repeat(1, 2).to(boxes)


def crop_resize(clips: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor,
                size: int | tuple[int, int]) -> torch.Tensor:
    """Crop each clip to its box (and mirror it), resized to ``size``: one grid_sample
    over all frames, each frame sampled on its clip's grid. Frames go in channel-last
    (``collate_clips``' layout; a channel-first batch is transposed once): grid_sample
    then reads 3 neighbouring values per tap, with results identical to one over a
    (B, C*T) channel-first stack, in half its time on a CPU. Float out; uint8 or float in."""
    b, c, t, h, w = clips.shape
    out_h, out_w = (size, size) if isinstance(size, int) else size
    x0, y0, x1, y1 = boxes.unbind(1)
    sx = (x1 - x0) * torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=clips.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx, x0 + x1 - 1
    theta[:, 1, 1], theta[:, 1, 2] = y1 - y0, y0 + y1 - 1
    grid = F.affine_grid(theta, (b, c, out_h, out_w), align_corners=False)
    frames = clips.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, c).permute(0, 3, 1, 2)
    out = F.grid_sample(frames.float(), grid.repeat_interleave(t, 0), mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out.view(b, t, c, out_h, out_w).transpose(1, 2).contiguous()


def _luma(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _per_clip(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1, 1)


def shift_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Rotate each clip's hue by ``hue`` turns, keeping HSV saturation and value (what an
    RGB -> HSV -> RGB round trip gives, in half the operations: v * s is max - min, so
    saturation is never formed). The hue sector comes from comparisons with the maximum,
    the first channel that holds it winning (``max``'s index, which cost a third of the
    function on a CPU)."""
    maxc = x.amax(1)
    delta = maxc - x.amin(1)
    r, g, b = x.unbind(1)
    d = delta.clamp_min(1e-12)      # grey pixels (delta 0) come back as maxc whatever h is
    h6 = torch.where(r == maxc, (g - b) / d,
                     torch.where(g == maxc, (b - r) / d + 2, (r - g) / d + 4))
    h6 += 6 * hue.view(-1, 1, 1, 1)
    offsets = 5 - 2 * torch.arange(3, device=x.device, dtype=x.dtype)     # R 5, G 3, B 1
    k = (h6.unsqueeze(1) + offsets.view(1, 3, 1, 1, 1)) % 6      # all three at once
    return maxc.unsqueeze(1) - torch.minimum(k, 4 - k).clamp_(0, 1).mul_(delta.unsqueeze(1))


def _brightness(x, v):
    return (x * _per_clip(v)).clamp_(0, 1)


def _contrast(x, v):
    mean = _luma(x).mean(dim=(2, 3, 4), keepdim=True)
    return x.sub_(mean).mul_(_per_clip(v)).add_(mean).clamp_(0, 1)


def _saturation(x, v):
    gray = _luma(x)
    return x.sub_(gray).mul_(_per_clip(v)).add_(gray).clamp_(0, 1)


def _hue(x, v):
    return shift_hue(x, v).clamp_(0, 1) if bool((v != 0).any()) else x


JITTERS = (("brightness", _brightness, 1.0), ("contrast", _contrast, 1.0),
           ("saturation", _saturation, 1.0), ("hue", _hue, 0.0))   # (field, op, identity)


def colour(x: torch.Tensor, p: AugParams) -> torch.Tensor:
    """Brightness, contrast, saturation and hue (in this order, or each clip's own order
    ``p.order``), then grayscale; x in [0, 1]."""
    if p.order is None:
        for field, op, _ in JITTERS:
            x = op(x, getattr(p, field))
    else:   # round r applies to each clip the op its order puts r-th (the others: identity)
        for r in range(len(JITTERS)):
            for k, (field, op, identity) in enumerate(JITTERS):
                mine = p.order[:, r] == k
                if bool(mine.any()):
                    value = getattr(p, field)
                    x = op(x, torch.where(mine, value, torch.full_like(value, identity)))
    return torch.where(_per_clip(p.gray), _luma(x).expand_as(x), x)


def solarize(x: torch.Tensor, which: torch.Tensor | None) -> torch.Tensor:
    """Values above 0.5 inverted, in the clips ``which`` marks."""
    if which is None or not bool(which.any()):
        return x
    return torch.where(_per_clip(which) & (x >= 0.5), 1 - x, x)


def blur(x: torch.Tensor, sigma: torch.Tensor, radius: torch.Tensor | None = None,
         reach: int = 0) -> torch.Tensor:
    """Separable Gaussian blur with a sigma per clip (0 leaves a clip unchanged), its
    kernel cut at ``radius`` pixels per clip (default 3 sigma). ``reach``: the kernel's
    length at least (taps past a clip's cut weigh 0), so that a clip is blurred with the
    same float operations whatever else is in its batch (one process or N under DDP)."""
    blurred = sigma > 0
    if not bool(blurred.any()):
        return x
    if x.device.type == "cpu" and not bool(blurred.all()):
        # convolve only the clips it blurs (half by default); on a GPU the convolution of
        # the rest costs less than the wait for the device that picking them needs
        rows = blurred.nonzero().squeeze(1)
        out = x.clone()
        out[rows] = blur(x[rows], sigma[rows], None if radius is None else radius[rows],
                         reach)
        return out
    b, c, t, h, w = x.shape
    cut = torch.ceil(3 * sigma) if radius is None else radius.to(sigma)
    reach = max(reach, int(cut.max()))
    offsets = torch.arange(-reach, reach + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp(min=1e-3).to(x.dtype).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / s) ** 2) * (offsets.abs() <= cut.view(-1, 1))
    kernel = torch.where(sigma.view(-1, 1) > 0, kernel, (offsets == 0).to(x.dtype))
    kernel = kernel / kernel.sum(1, keepdim=True)                  # (B, K)
    weights = kernel.repeat_interleave(c * t, dim=0)               # (B*C*T, K)
    flat = x.reshape(1, b * c * t, h, w)
    flat = F.conv2d(F.pad(flat, (reach, reach, 0, 0), mode="replicate"),
                    weights.view(-1, 1, 1, 2 * reach + 1), groups=b * c * t)
    flat = F.conv2d(F.pad(flat, (0, 0, reach, reach), mode="replicate"),
                    weights.view(-1, 1, 2 * reach + 1, 1), groups=b * c * t)
    return flat.reshape(b, c, t, h, w)


def apply(clips: torch.Tensor, params: AugParams, cfg: AugConfig,
          valid_hw: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``params``; with ``valid_hw`` (B, 2) boxes are relative to each clip's valid
    region of a padded batch."""
    boxes = params.boxes if valid_hw is None else in_padded_frame(params.boxes, valid_hw,
                                                                   clips.shape[-2:])
    x = crop_resize(clips, boxes, params.flip, cfg.size)
    if clips.dtype == torch.uint8:
        x /= 255                    # after the resize (linear), on the smaller tensor
    x = solarize(blur(colour(x, params), params.blur_sigma, params.blur_radius,
                      math.ceil(3 * cfg.blur_sigma[1])), params.solarize)
    if cfg.channels == "bgr":       # mean and std are in the encoder's channel order
        x = x.flip(1)
    mean = torch.tensor(cfg.mean, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(cfg.std, device=x.device).view(1, 3, 1, 1, 1)
    return x.sub_(mean).div_(std)


def augment(clips: torch.Tensor, cfg: AugConfig, gen: torch.Generator | None = None,
            valid_hw: torch.Tensor | None = None, geometry_of: AugParams | None = None
            ) -> tuple[torch.Tensor, AugParams]:
    """Sample parameters for every clip of the batch and apply them; ``geometry_of``
    (another view's parameters) makes the crop boxes and flips the same as that view's,
    so only colour, grayscale and blur are drawn anew."""
    frame_hw = clips.shape[-2:] if valid_hw is None else valid_hw
    shared = _GLOBAL_BATCH.get()
    if shared is None:
        params = sample_params(clips.shape[0], frame_hw, cfg, gen, clips.device)
    else:
        params = _own_rows(clips.shape[0], frame_hw, cfg, *shared, clips.device)
    if geometry_of is not None:
        params = dataclasses.replace(params, boxes=geometry_of.boxes, flip=geometry_of.flip)
    return apply(clips, params, cfg, valid_hw), params


# Under DDP: (generator every process seeds alike, rank, world size) while a step runs.
_GLOBAL_BATCH = contextvars.ContextVar("global_batch", default=None)


@contextlib.contextmanager
def global_batch(gen: torch.Generator, rank: int, world: int):
    """Within this block every process draws the augmentations of the whole global batch
    from ``gen`` (seeded the same everywhere) and keeps its own rows, so each clip is
    augmented exactly as one process training the global batch would augment it."""
    token = _GLOBAL_BATCH.set((gen, rank, world))
    try:
        yield
    finally:
        _GLOBAL_BATCH.reset(token)


def _own_rows(batch: int, frame_hw, cfg: AugConfig, gen, rank: int, world: int, device
              ) -> AugParams:
    """This process's rows of parameters drawn for ``batch * world`` clips. The other
    processes' clips are unknown here; their rows get a square frame (only their own
    rows' values depend on it, and those are discarded)."""
    if isinstance(frame_hw, torch.Tensor):
        full = torch.ones(batch * world, 2, device=frame_hw.device, dtype=frame_hw.dtype)
        full[rank * batch:(rank + 1) * batch] = frame_hw
        frame_hw = full
    drawn = sample_params(batch * world, frame_hw, cfg, gen, device)
    rows = slice(rank * batch, (rank + 1) * batch)
    return AugParams(**{f.name: None if getattr(drawn, f.name) is None
                        else getattr(drawn, f.name)[rows] for f in dataclasses.fields(drawn)})
