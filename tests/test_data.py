"""Clip index maths and batched augmentations."""
import colorsys
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vssl_cli.data.augment import (AugConfig, AugParams, apply, augment, blur, crop_resize,
                                   sample_boxes, sample_params, shift_hue)
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


def test_a_view_can_reuse_another_views_geometry_with_its_own_colours():
    clips = _clip(b=6, t=1)
    cfg = AugConfig(size=16, flip_p=0.5, jitter_p=1.0)
    gen = torch.Generator().manual_seed(4)
    _, first = augment(clips, cfg, gen)
    _, second = augment(clips, cfg, gen, geometry_of=first)
    assert torch.equal(second.boxes, first.boxes) and torch.equal(second.flip, first.flip)
    assert not torch.equal(second.brightness, first.brightness)       # colours drawn anew
    plain = AugConfig(size=16, jitter_p=0, gray_p=0, blur_p=0)
    out, _ = augment(clips, plain, gen, geometry_of=first)
    assert torch.allclose(out, apply(clips, dataclasses.replace(
        AugParams.identity(6), boxes=first.boxes, flip=first.flip), plain), atol=1e-5)


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


def test_hue_shift_matches_colorsys_pixel_by_pixel():
    x = torch.rand(3, 3, 2, 4, 4)
    x[0, :, 0, 0, 0] = 0.5                      # a grey pixel: any hue leaves it grey
    x[1, :, 1, 1, 1] = torch.tensor([0.2, 0.9, 0.9])   # a tie for the largest channel
    hue = torch.tensor([0.3, -0.45, 0.0])
    expected = torch.empty_like(x)
    for i, t, r, c in np.ndindex(3, 2, 4, 4):
        h, s, v = colorsys.rgb_to_hsv(*x[i, :, t, r, c].tolist())
        expected[i, :, t, r, c] = torch.tensor(colorsys.hsv_to_rgb((h + hue[i]) % 1.0, s, v))
    assert torch.allclose(shift_hue(x, hue), expected, atol=1e-5)


def test_blur_smooths_and_zero_sigma_is_identity():
    x = torch.rand(2, 3, 2, 20, 20)
    out = blur(x, torch.tensor([0.0, 2.0]))
    assert torch.allclose(out[0], x[0])
    assert out[1].std() < 0.6 * x[1].std()
    assert torch.allclose(out[1].mean(), x[1].mean(), atol=0.02)


def test_blur_of_a_mixed_batch_is_each_clip_blurred_alone_bit_for_bit():
    x = torch.rand(4, 3, 2, 12, 12)
    sigma = torch.tensor([0.0, 1.5, 0.0, 0.7])
    out = blur(x, sigma, reach=6)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    for i in (1, 3):
        assert torch.equal(out[i], blur(x[i:i + 1], sigma[i:i + 1], reach=6)[0])


def _crop_over_channel_time_stack(clips, boxes, flip, size):
    """The crop as one grid_sample over a (B, C*T, H, W) channel-first stack."""
    b, c, t, h, w = clips.shape
    x0, y0, x1, y1 = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = (x1 - x0) * torch.where(flip, -1.0, 1.0), x0 + x1 - 1
    theta[:, 1, 1], theta[:, 1, 2] = y1 - y0, y0 + y1 - 1
    grid = F.affine_grid(theta, (b, c * t, size, size), align_corners=False)
    return F.grid_sample(clips.float().reshape(b, c * t, h, w), grid, mode="bilinear",
                         padding_mode="border", align_corners=False).view(b, c, t, size, size)


@pytest.mark.parametrize("layout", ["channel-first", "channel-last"])
def test_crop_per_frame_in_either_layout_equals_the_stacked_crop(layout):
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (6, 5, 30, 41, 3), dtype=torch.uint8, generator=g)
    clips = frames.permute(0, 4, 1, 2, 3)
    if layout == "channel-first":
        clips = clips.contiguous()
    p = sample_params(6, (30, 41), AugConfig(flip_p=0.5), g)
    out = crop_resize(clips, p.boxes, p.flip, 16)
    assert out.is_contiguous()
    assert torch.equal(out, _crop_over_channel_time_stack(clips, p.boxes, p.flip, 16))


def test_collated_clips_keep_the_stores_channel_last_memory():
    from vssl_cli.data.dataset import collate_clips
    small = torch.randint(0, 256, (3, 4, 6, 8), dtype=torch.uint8)    # (C, T, H, W)
    large = torch.randint(0, 256, (3, 4, 8, 10), dtype=torch.uint8)
    items = [{"clips": [c], "indices": [np.arange(4)], "label": 0, "index": i}
             for i, c in enumerate((small, large))]
    clips = collate_clips(items)["clips"][0]
    assert clips.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(clips[0, :, :, :6, :8], small) and torch.equal(clips[1], large)
    assert not clips[0, :, :, 6:].any() and not clips[0, :, :, :, 8:].any()


def test_sampled_params_follow_probabilities():
    g = torch.Generator().manual_seed(1)
    p = sample_params(4000, (120, 160), AugConfig(), g)
    assert math.isclose(p.flip.float().mean().item(), 0.5, abs_tol=0.04)
    assert math.isclose(p.gray.float().mean().item(), 0.2, abs_tol=0.03)
    jittered = (p.brightness != 1).float().mean().item()
    assert math.isclose(jittered, 0.8, abs_tol=0.03)
    assert ((p.blur_sigma == 0) | ((p.blur_sigma >= 0.1) & (p.blur_sigma <= 2))).all()


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory):
    """A Zarr store whose videos have two different frame sizes."""
    from conftest import make_video
    from vssl_cli.extract import ExtractConfig, extract
    from vssl_cli.video.datasets import IndexOptions
    from vssl_cli.video.decode import DecodeParams
    root = tmp_path_factory.mktemp("mixed")
    for cls, size in (("wide", "64x32"), ("square", "32x32")):
        for i in range(3):
            make_video(root / "src" / cls / f"{i}.mp4", frames=20, size=size, source="testsrc2")
    out = str(root / "f.zarr")
    extract([str(root / "src")], out, ExtractConfig(decode=DecodeParams(short_side=None),
                                                    index=IndexOptions(test_fraction=0)))
    return out


def two_clips(n, rng):
    return [random_clip(n, 4, 2, rng), random_clip(n, 4, 1, rng)]


def test_dataset_items_are_the_stored_frames(mixed_store):
    from vssl_cli.data.dataset import ClipDataset
    from vssl_cli.store import open_store
    ds = ClipDataset(mixed_store, two_clips, split="train", seed=1)
    assert len(ds) == 6 and ds.classes == ["square", "wide"]
    store = open_store(mixed_store)
    for i in range(len(ds)):
        item = ds[i]
        for clip, idx in zip(item["clips"], item["indices"]):
            expect = torch.from_numpy(store.read(ds.videos[i]["id"], idx)).permute(3, 0, 1, 2)
            assert torch.equal(clip, expect)
        assert ds.classes[item["label"]] == ds.videos[i]["label"]


def test_loader_batches_pad_and_do_not_depend_on_workers(mixed_store):
    from torch.utils.data import DataLoader

    from vssl_cli.data.dataset import ClipDataset, collate_clips
    ds = ClipDataset(mixed_store, two_clips, seed=2)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=6, num_workers=workers, collate_fn=collate_clips)
        batches[workers] = next(iter(loader))
    a, b = batches[0], batches[2]
    assert all(torch.equal(x, y) for x, y in zip(a["clips"], b["clips"]))
    assert a["clips"][0].shape == (6, 3, 4, 32, 64)
    assert sorted(a["valid_hw"].tolist()) == [[32, 32]] * 3 + [[32, 64]] * 3
    square = a["valid_hw"][:, 1] == 32
    assert (a["clips"][0][square][..., 32:] == 0).all()   # padding, never real pixels
    cfg = AugConfig(size=16, scale=(0.9, 1.0), mean=(0, 0, 0), std=(1, 1, 1), jitter_p=0,
                    gray_p=0, blur_p=0)
    out, params = augment(a["clips"][0], cfg, torch.Generator().manual_seed(0), a["valid_hw"])
    assert (params.boxes[:, 2:] <= 1 + 1e-6).all()
    # Cropping the padded batch equals cropping the unpadded clips with the same parameters.
    sub = AugParams(**{k: None if v is None else v[square] for k, v in params.__dict__.items()})
    unpadded = apply(a["clips"][0][square][..., :32], sub, cfg)
    assert torch.allclose(out[square], unpadded, atol=1e-5)


def test_a_crop_of_the_whole_area_is_the_whole_frame():
    """scale [1, 1] with an aspect-ratio draw used to crop 75-100% of the width; boxes that
    do not fit fall back to the whole frame, as torchvision's RandomResizedCrop does."""
    from vssl_cli.data.augment import sample_boxes
    boxes = sample_boxes(500, 170 / 128, (1.0, 1.0), (3 / 4, 4 / 3),
                         torch.Generator().manual_seed(0))
    assert torch.allclose(boxes, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(500, 4))
    small = sample_boxes(500, 170 / 128, (0.3, 0.5), (3 / 4, 4 / 3),
                         torch.Generator().manual_seed(0))
    area = (small[:, 2] - small[:, 0]) * (small[:, 3] - small[:, 1])
    assert area.min() >= 0.3 - 1e-5 and area.max() <= 0.5 + 1e-5


def test_cvrl_colour_order_and_solarisation():
    import dataclasses as dc

    from vssl_cli.data.augment import AugConfig, apply, sample_params
    x = torch.rand(64, 3, 2, 8, 8)
    cfg = AugConfig(size=8, scale=(1.0, 1.0), flip_p=0, jitter_p=1, brightness=0.8,
                    contrast=0.8, saturation=0.8, hue=0.2, gray_p=0, blur_p=0,
                    mean=(0, 0, 0), std=(1, 1, 1), jitter_order="random", solarize_p=0.5)
    p = sample_params(64, (8, 8), cfg, torch.Generator().manual_seed(0))
    assert p.order.shape == (64, 4) and len({tuple(o) for o in p.order.tolist()}) > 8
    assert 10 < int(p.solarize.sum()) < 54
    fixed = dc.replace(p, order=torch.arange(4).repeat(64, 1), solarize=None)
    same_order = dc.replace(p, solarize=None)
    reordered = (apply(x, same_order, cfg) - apply(x, fixed, cfg)).abs().amax(dim=(1, 2, 3, 4))
    in_order = (p.order == torch.arange(4)).all(1)
    assert (reordered[in_order] < 1e-6).all() and (reordered[~in_order] > 1e-3).any()
    solar = apply(x, p, cfg)
    assert (solar[p.solarize] <= 0.5 + 1e-6).all()     # values above 0.5 were inverted
