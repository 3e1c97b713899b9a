"""Frame indices for clips: the index maths every method's sampler is built from.

All functions map (video length, clip length, stride) to integer frame indices that are
always inside ``[0, num_frames)``. Videos shorter than a clip's span are handled by
looping the video (so a 40-frame video still gives a 64-frame-span clip), the usual
choice in video SSL code bases; the returned indices say exactly which frames were used.
"""
from __future__ import annotations

import numpy as np


def clip_indices(num_frames: int, clip_len: int, stride: int, start: int) -> np.ndarray:
    """``clip_len`` indices from ``start`` every ``stride`` frames, looping past the end."""
    if num_frames < 1 or clip_len < 1 or stride < 1:
        raise ValueError("num_frames, clip_len and stride must be >= 1")
    return (start + stride * np.arange(clip_len)) % num_frames


def span(clip_len: int, stride: int) -> int:
    """Frames covered by a clip, first to last inclusive."""
    return (clip_len - 1) * stride + 1


def random_start(num_frames: int, clip_len: int, stride: int, rng: np.random.Generator) -> int:
    """A uniformly random start such that the clip fits when it can."""
    room = num_frames - span(clip_len, stride)
    return int(rng.integers(0, room + 1)) if room > 0 else 0


def random_clip(num_frames: int, clip_len: int, stride: int,
                rng: np.random.Generator) -> np.ndarray:
    return clip_indices(num_frames, clip_len, stride,
                        random_start(num_frames, clip_len, stride, rng))


def uniform_clips(num_frames: int, clip_len: int, stride: int, n_clips: int) -> np.ndarray:
    """``n_clips`` clips with evenly spaced starts over the video (multi-clip testing).

    Shape (n_clips, clip_len). Starts are spread over the range where a clip fits.
    """
    room = max(0, num_frames - span(clip_len, stride))
    starts = np.linspace(0, room, n_clips).round().astype(int) if n_clips > 1 else [room // 2]
    return np.stack([clip_indices(num_frames, clip_len, stride, s) for s in starts])


def cvrl_pair(num_frames: int, clip_len: int, stride: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Two clips whose start gap follows CVRL's decreasing (linear) distribution.

    CVRL (Qian et al. 2021) draws the interval between the two clips with probability
    falling linearly from 0 to the largest possible gap, so nearby clips are common and
    distant ones still occur. Returns (clip_a, clip_b, gap).
    """
    room = max(0, num_frames - span(clip_len, stride))
    gaps = np.arange(room + 1)
    weights = (room + 1 - gaps).astype(float)
    gap = int(rng.choice(gaps, p=weights / weights.sum()))
    first = int(rng.integers(0, room - gap + 1))
    a, b = first, first + gap
    if rng.random() < 0.5:
        a, b = b, a
    return (clip_indices(num_frames, clip_len, stride, a),
            clip_indices(num_frames, clip_len, stride, b), gap)
