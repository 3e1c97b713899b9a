"""The built-in motion dataset: layout, determinism, and that motion defines the class."""
import hashlib

import numpy as np
import pytest

from conftest import read_json, run_vssl
from vssl_cli.errors import VsslError
from vssl_cli.video.synth import (CLASSES, ORDER_FREE, SynthConfig, _background,
                                  background_pool, render, soften, synthesize)


def _digests(root):
    return {p.relative_to(root): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.mp4"))}


def test_layout_and_split_files(synth_dir):
    ann = synth_dir / "ucfTrainTestlist"
    assert (ann / "classInd.txt").read_text().splitlines()[0] == "1 MoveRight"
    train = (ann / "trainlist01.txt").read_text().splitlines()
    test = (ann / "testlist01.txt").read_text().splitlines()
    assert len(train) == 20 and len(test) == 10
    assert all((synth_dir / "UCF-101" / line.split()[0]).exists() for line in train + test)
    index = read_json(synth_dir / "synth.json")
    order = [v for v in index["videos"] if v["class"] == "RightThenUp"]
    assert order and all(v["boundaries"] == [8] for v in order)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = SynthConfig(classes=2, videos_per_class=3, frames=8, size=32, seed=7)
    synthesize(tmp_path / "a", cfg)
    synthesize(tmp_path / "b", cfg)
    synthesize(tmp_path / "c", SynthConfig(classes=2, videos_per_class=3, frames=8, size=32,
                                           seed=8))
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")


def _centroid(frames, background):
    moving = np.abs(frames.astype(int) - background).sum(-1) > 60
    ys, xs = np.nonzero(moving)
    return xs.mean(), ys.mean(), moving.sum()


@pytest.mark.parametrize("name,axis,sign", [("MoveRight", 0, 1), ("MoveLeft", 0, -1),
                                            ("MoveUp", 1, -1), ("MoveDown", 1, 1),
                                            ("ZoomIn", 2, 1), ("ZoomOut", 2, -1)])
def test_motion_defines_the_class(name, axis, sign):
    cfg = SynthConfig(frames=24, size=64)
    frames, note = render(name, cfg, np.random.default_rng(1))
    background = _background(np.random.default_rng(1), 64)  # drawn first from the same seed
    first = _centroid(frames[0], background)
    last = _centroid(frames[-1], background)
    assert sign * (last[axis] - first[axis]) > 0
    assert note["class"] == name and note["boundaries"] == []


def test_all_classes_render():
    for name in CLASSES:
        frames, _ = render(name, SynthConfig(frames=6, size=32), np.random.default_rng(0))
        assert frames.shape == (6, 32, 32, 3)


def test_cli_rerun_is_noop_and_bad_size_rejected(tmp_path):
    out = tmp_path / "s"
    args = ["synth", out, "--classes", "2", "--videos-per-class", "3", "--frames", "6",
            "--size", "32"]
    assert run_vssl(*args, check=0).stdout.strip() == str(out)
    mtime = (out / "synth.json").stat().st_mtime_ns
    assert "up to date" in run_vssl(*args, check=0).stderr
    assert (out / "synth.json").stat().st_mtime_ns == mtime
    proc = run_vssl("synth", tmp_path / "t", "--size", "33", check=1)
    assert "even number" in proc.stderr


def test_order_free_set_holds_one_of_each_reversed_pair(tmp_path):
    def backwards(name):
        return [(kind, -sign) for kind, sign in reversed(CLASSES[name])]
    reverse_of = {a: b for a in CLASSES for b in CLASSES if backwards(a) == CLASSES[b]}
    assert len(reverse_of) == 8                       # 4 pairs played backwards
    assert not any(reverse_of.get(a) in ORDER_FREE for a in ORDER_FREE)
    assert all(c in ORDER_FREE or reverse_of[c] in ORDER_FREE for c in CLASSES)
    out = tmp_path / "of"
    run_vssl("synth", out, "--order-free", "--videos-per-class", "3", "--frames", "6",
             "--size", "32", check=0)
    index = (out / "ucfTrainTestlist" / "classInd.txt").read_text().split()
    assert index[1::2] == list(ORDER_FREE)
    assert read_json(out / "synth.json")["config"]["order_free"] is True
    assert "order_free" not in SynthConfig().recorded()   # older datasets keep their id
    with pytest.raises(VsslError, match="between 1 and 6"):
        SynthConfig(classes=7, order_free=True).validate()


def test_appearance_pool_limits_what_tells_videos_apart():
    from vssl_cli.video.synth import background_pool
    cfg = SynthConfig(backgrounds=2, shapes=1, colours=2, size=32, frames=4)
    pool = background_pool(cfg)
    assert len(pool) == 2
    seen = set()
    for seed in range(12):
        frames, note = render("MoveRight", cfg, np.random.default_rng(seed), pool)
        assert note["shape"] == "circle"
        corner = frames[0, 0, 0].astype(int)          # a background pixel
        seen.add(tuple(corner // 8))
        colours = {tuple(c) for c in frames[0].reshape(-1, 3)}
        assert (230, 40, 40) in colours or (40, 220, 60) in colours
    assert len(seen) <= 2                              # only the pool's backgrounds
    with pytest.raises(VsslError, match="--shapes"):
        SynthConfig(shapes=9).validate()
    with pytest.raises(VsslError, match="--colours"):
        SynthConfig(colours=1).validate()


def test_drift_changes_appearance_over_the_video_but_not_the_motion():
    from vssl_cli.video.synth import background_pool
    plain = SynthConfig(size=32, frames=8)
    drift = SynthConfig(size=32, frames=8, drift=True)
    pool = background_pool(plain)
    a, note_a = render("MoveUp", plain, np.random.default_rng(5), pool)
    b, note_b = render("MoveUp", drift, np.random.default_rng(5), pool)
    assert note_a == note_b
    assert np.array_equal(a[0], b[0])                  # same start ...
    assert np.abs(a[-1].astype(int) - b[-1].astype(int)).mean() > 5   # ... other look at the end


def test_photo_appearance_is_real_photographs_under_a_drifting_camera():
    """Backgrounds come from scikit-image's sample photographs, panned slowly whatever the
    class; sprites take any colour: appearance varies within a class and is shared across
    classes, so only the shape's motion tells them apart."""
    pytest.importorskip("skimage")
    cfg = SynthConfig(classes=2, videos_per_class=3, frames=12, size=48, appearance="photo")
    rng = np.random.default_rng(0)
    first, _ = render("MoveRight", cfg, rng)
    second, _ = render("MoveRight", cfg, rng)
    corner = (slice(0, 8), slice(0, 8))       # the shape starts near the centre
    assert not np.array_equal(first[0][corner], first[-1][corner])     # the camera moved
    assert np.abs(first[0].astype(int) - second[0]).mean() > 10       # another photo/crop
    assert first.std() > 10                                          # textured, real
    assert "appearance" in cfg.recorded()
    assert "appearance" not in SynthConfig().recorded()   # older datasets keep their id
    with pytest.raises(VsslError, match="appearance"):
        SynthConfig(appearance="cartoon").validate()


def _first_places(name, free, n=300):
    from vssl_cli.video.synth import _trajectory
    rng = np.random.default_rng(0)
    starts = np.array([_trajectory(CLASSES[name], 24, rng, free)[0][0, 0] for _ in range(n)])
    return (starts + 1) % 2 - 1                       # on the wrapping frame


def test_free_placement_leaves_no_class_in_a_single_frame(tmp_path):
    """With --placement free a video's place and size in any one frame are drawn alike for
    every class; by class, a MoveRight starts on the left and a MoveLeft on the right."""
    from vssl_cli.video.synth import _trajectory, background_pool
    right, left = _first_places("MoveRight", True), _first_places("MoveLeft", True)
    assert abs(right.mean()) < 0.1 and abs(left.mean()) < 0.1
    assert 0.5 < right.std() < 0.65                   # uniform over the frame: 0.577
    assert _first_places("MoveRight", False).mean() < -0.4 < 0.4 < _first_places(
        "MoveLeft", False).mean()
    rng = np.random.default_rng(1)
    sizes = {name: np.log(np.concatenate([_trajectory(CLASSES[name], 24, rng, True)[0][:, 3]
                                          for _ in range(300)]))
             for name in ("ZoomIn", "ZoomOut", "RotateCW", "MoveUp")}
    means = [s.mean() for s in sizes.values()]
    spreads = [s.std() for s in sizes.values()]
    assert max(means) - min(means) < 0.04 and max(spreads) / min(spreads) < 1.2
    # The frame wraps: a sprite leaving one side enters the other, never shrinking out.
    cfg = SynthConfig(frames=24, size=64, backgrounds=1, placement="free")
    background = background_pool(cfg)[0]
    for seed in range(4):
        frames, _ = render("MoveRight", cfg, np.random.default_rng(seed), background_pool(cfg))
        area = [_centroid(f, background)[2] for f in frames]
        assert min(area) > 0.7 * max(area)
    assert "placement" not in SynthConfig().recorded()    # older datasets keep their id
    with pytest.raises(VsslError, match="--placement"):
        SynthConfig(placement="anywhere").validate()
    out = tmp_path / "free"
    run_vssl("synth", out, "--placement", "free", "--classes", "2", "--videos-per-class", "3",
             "--frames", "6", "--size", "32", check=0)
    assert read_json(out / "synth.json")["config"]["placement"] == "free"


def test_textured_sprite_carries_its_pattern_and_the_background_softens(tmp_path):
    """--sprite textured fills the shape with a pattern of its own that moves with it;
    --background-blur and --background-contrast soften the background without touching
    the sprite (the settings of bench/quality.py's motion benchmark)."""
    flat_bg = SynthConfig(frames=12, size=64, backgrounds=1, shapes=2, sprite="textured",
                          background_contrast=0.0)
    frames, _ = render("MoveRight", flat_bg, np.random.default_rng(3),
                       background_pool(flat_bg))
    background = np.median(frames[0].reshape(-1, 3), 0)
    sprite = [np.abs(f.astype(int) - background).sum(-1) > 30 for f in frames]
    assert sprite[0].sum() > 40
    inside = frames[0][sprite[0]]
    assert len(np.unique(inside // 16, axis=0)) > 6            # a pattern, not two colours
    # A square moving right: the same pattern a few pixels further (up to the encoder's
    # rounding), not a new one.
    x0 = np.nonzero(sprite[0].any(0))[0].min()
    x1 = np.nonzero(sprite[6].any(0))[0].min()
    assert x1 > x0
    # Contrast 0 leaves a flat background: every pixel outside the sprite is its mean.
    assert frames[0][~sprite[0]].std(0).max() < 3
    # Blur takes out fine detail and keeps the mean (edges mirrored, nothing lost).
    noise = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    soft = soften(noise, SynthConfig(size=64, background_blur=0.05))
    assert np.abs(np.diff(soft, axis=2)).mean() < 0.1 * np.abs(np.diff(noise, axis=2)).mean()
    assert abs(soft.mean() - noise.mean()) < 0.5
    assert soften(noise, SynthConfig(size=64)) is noise                    # off by default
    small = SynthConfig(frames=4, size=64, backgrounds=1, sprite_scale=0.5)
    areas = [_centroid(render("ZoomIn", c, np.random.default_rng(2), background_pool(c))[0][0],
                       background_pool(c)[0])[2]
             for c in (SynthConfig(frames=4, size=64, backgrounds=1), small)]
    assert 0.15 < areas[1] / areas[0] < 0.4                       # half the size: a quarter
    assert not {"sprite", "sprite_scale", "background_blur",
                "background_contrast"} & set(SynthConfig().recorded())   # ids kept
    for bad, match in ((dict(sprite="striped"), "--sprite"), (dict(sprite_scale=5), "scale"),
                       (dict(background_blur=1.0), "blur"),
                       (dict(background_contrast=2.0), "contrast")):
        with pytest.raises(VsslError, match=match):
            SynthConfig(**bad).validate()
    out = tmp_path / "tex"
    run_vssl("synth", out, "--sprite", "textured", "--background-blur", "0.03",
             "--background-contrast", "0.5", "--sprite-scale", "0.8", "--classes", "2",
             "--videos-per-class", "3", "--frames", "6", "--size", "32", check=0)
    config = read_json(out / "synth.json")["config"]
    assert (config["sprite"], config["sprite_scale"], config["background_blur"],
            config["background_contrast"]) == ("textured", 0.8, 0.03, 0.5)


def test_speed_scales_translation_and_rotation_not_size():
    from vssl_cli.video.synth import _trajectory
    for kind, column in (("MoveRight", 0), ("RotateCW", 2)):
        paths = [_trajectory(CLASSES[kind], 24, np.random.default_rng(0), True, speed)[0]
                 for speed in (1.0, 2.0)]
        moved = [p[-1, column] - p[0, column] for p in paths]
        assert moved[1] == pytest.approx(2 * moved[0], rel=1e-6)
    zooms = [_trajectory(CLASSES["ZoomIn"], 24, np.random.default_rng(0), True, speed)[0][:, 3]
             for speed in (1.0, 2.0)]
    np.testing.assert_allclose(zooms[0], zooms[1])
    assert "speed" not in SynthConfig().recorded()
    with pytest.raises(VsslError, match="--placement free"):
        SynthConfig(speed=2).validate()
    with pytest.raises(VsslError, match="--speed"):
        SynthConfig(speed=9, placement="free").validate()
