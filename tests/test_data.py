"""Clip index maths and batched augmentations."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vssl_cli.data.augment import (AugConfig, AugParams, apply, augment, blur, crop_resize,
                                   hsv_to_rgb, rgb_to_hsv, sample_boxes, sample_params)
from vssl_cli.data.samplers import clip_indices, cvrl_pair, random_clip, span, uniform_clips

lengths = st.integers(1, 500)
clip_lens = st.integers(1, 64)
strides = st.integers(1, 8)


@settings(max_examples=200, deadline=None)
@given(lengths, clip_lens, strides, st.integers(0, 2**31 - 1))
def test_random_clip_in_range_and_evenly_strided_when_it_fits(n, length, stride, seed):
    idx = random_clip(n, length, stride, np.random.default_rng(seed))
    assert len(idx) == length and idx.min() >= 0 and idx.max() < n
    if span(length, stride) <= n:
        assert (np.diff(idx) == stride).all()


@settings(max_examples=200, deadline=None)
@given(lengths, clip_lens, strides, st.integers(1, 12))
def test_uniform_clips_cover_the_video_in_order(n, length, stride, count):
    clips = uniform_clips(n, length, stride, count)
    assert clips.shape == (count, length) and clips.min() >= 0 and clips.max() < n
    starts = clips[:, 0]
    assert (np.diff(starts) >= 0).all()
    if count > 1 and span(length, stride) <= n:   # first clip at the start, last at the end
        assert starts[0] == 0 and clips[-1, -1] == n - 1


@settings(max_examples=200, deadline=None)
@given(lengths, clip_lens, strides, st.integers(0, 2**31 - 1))
def test_cvrl_pair_gap_and_range(n, length, stride, seed):
    a, b, gap = cvrl_pair(n, length, stride, np.random.default_rng(seed))
    assert a.shape == b.shape == (length,)
    assert a.max() < n and b.max() < n and gap >= 0
    assert abs(int(a[0]) - int(b[0])) == gap


def test_cvrl_gaps_decrease_in_probability():
    rng = np.random.default_rng(0)
    gaps = np.array([cvrl_pair(200, 8, 2, rng)[2] for _ in range(4000)])
    room = 200 - span(8, 2)
    thirds = np.histogram(gaps, bins=3, range=(0, room + 1))[0]
    assert thirds[0] > thirds[1] > thirds[2] > 0


def test_short_videos_loop():
    assert list(clip_indices(5, 7, 1, 0)) == [0, 1, 2, 3, 4, 0, 1]
    with pytest.raises(ValueError):
        clip_indices(0, 4, 1, 0)


def test_boxes_inside_frame_with_requested_area():
    g = torch.Generator().manual_seed(0)
    boxes = sample_boxes(2000, 4 / 3, (0.3, 0.8), (3 / 4, 4 / 3), g)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 1 + 1e-6).all()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert area.max() <= 0.8 + 1e-5 and np.quantile(area.numpy(), 0.05) >= 0.29


def _clip(b=2, t=3, h=24, w=32, seed=0):
    return torch.randint(0, 256, (b, 3, t, h, w), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_identity_params_only_resize_and_normalise():
    clips = _clip()
    cfg = AugConfig(size=16, mean=(0, 0, 0), std=(1, 1, 1))
    out = apply(clips, AugParams.identity(2), cfg)
    x = clips.float().div(255).reshape(2, 9, 24, 32)
    ref = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(out.reshape(2, 9, 16, 16), ref, atol=1e-5)


def test_flip_mirrors_and_crop_takes_the_box():
    x = torch.arange(8.0).view(1, 1, 1, 1, 8).expand(1, 3, 2, 4, 8).contiguous()
    box = torch.tensor([[0.5, 0.0, 1.0, 1.0]])
    right = crop_resize(x, box, torch.tensor([False]), (4, 4))
    assert torch.allclose(right[0, 0, 0, 0], torch.tensor([4.0, 5.0, 6.0, 7.0]))
    mirrored = crop_resize(x, box, torch.tensor([True]), (4, 4))
    assert torch.allclose(mirrored, right.flip(-1))


def test_same_transform_for_every_frame_and_reproducible():
    frame = _clip(b=4, t=1)
    clips = frame.expand(4, 3, 5, 24, 32)
    cfg = AugConfig(size=16)
    out, params = augment(clips, cfg, torch.Generator().manual_seed(3))
    assert torch.allclose(out[:, :, :1].expand_as(out), out, atol=1e-5)
    again, params2 = augment(clips, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(out, again) and torch.equal(params.boxes, params2.boxes)


def test_colour_parameters_act_as_named():
    clips = _clip(b=1)
    cfg = AugConfig(size=24, mean=(0, 0, 0), std=(1, 1, 1))
    base = AugParams.identity(1)
    plain = apply(clips, base, cfg)
    darker = apply(clips, AugParams(**{**base.__dict__, "brightness": torch.tensor([0.5])}), cfg)
    assert torch.allclose(darker, plain * 0.5, atol=1e-5)
    gray = apply(clips, AugParams(**{**base.__dict__, "gray": torch.tensor([True])}), cfg)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    desat = apply(clips, AugParams(**{**base.__dict__, "saturation": torch.tensor([0.0])}), cfg)
    assert torch.allclose(desat, gray, atol=1e-5)
    shifted = apply(clips, AugParams(**{**base.__dict__, "hue": torch.tensor([0.5])}), cfg)
    assert (shifted - plain).abs().mean() > 0.05


def test_hsv_round_trip():
    x = torch.rand(2, 3, 2, 5, 5)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)


def test_blur_smooths_and_zero_sigma_is_identity():
    x = torch.rand(2, 3, 2, 20, 20)
    out = blur(x, torch.tensor([0.0, 2.0]))
    assert torch.allclose(out[0], x[0])
    assert out[1].std() < 0.6 * x[1].std()
    assert torch.allclose(out[1].mean(), x[1].mean(), atol=0.02)


def test_sampled_params_follow_probabilities():
    g = torch.Generator().manual_seed(1)
    p = sample_params(4000, (120, 160), AugConfig(), g)
    assert math.isclose(p.flip.float().mean().item(), 0.5, abs_tol=0.04)
    assert math.isclose(p.gray.float().mean().item(), 0.2, abs_tol=0.03)
    jittered = (p.brightness != 1).float().mean().item()
    assert math.isclose(jittered, 0.8, abs_tol=0.03)
    assert ((p.blur_sigma == 0) | ((p.blur_sigma >= 0.1) & (p.blur_sigma <= 2))).all()
