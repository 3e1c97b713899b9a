"""A small labelled video dataset whose classes differ only by motion.

Every video shows one two-tone shape on a textured background drawn from a small pool
shared by all classes (so the scene does not single a video out); the class is how
the shape moves (direction, rotation, zoom, or the order of two sub-movements), so a
model must look at time, not at a single frame, to tell the classes apart. Videos are
encoded by ffmpeg and laid out like UCF101 (class folders, classInd.txt and
train/test split files), so the same parsers serve synth and real data.
``synth.json`` records each video's motion segments and boundary frames.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import subprocess
from pathlib import Path

import numpy as np

from vssl_cli.artifacts import atomic_directory, check_output, digest
from vssl_cli.errors import VsslError
from vssl_cli.video.tools import ffmpeg_exe

# class name -> motion segments; each segment is (kind, sign) played for an equal share.
CLASSES: dict[str, list[tuple[str, int]]] = {
    "MoveRight": [("x", +1)], "MoveLeft": [("x", -1)],
    "MoveUp": [("y", -1)], "MoveDown": [("y", +1)],
    "RotateCW": [("rot", +1)], "RotateCCW": [("rot", -1)],
    "ZoomIn": [("zoom", +1)], "ZoomOut": [("zoom", -1)],
    "RightThenUp": [("x", +1), ("y", -1)], "UpThenRight": [("y", -1), ("x", +1)],
}
# One class of each pair that is the other played backwards (and both orders of the two
# sub-movements, whose paths differ): the classes a model blind to frame order, such as a
# 2D encoder averaging its frame embeddings over the video (TCE), can tell apart.
ORDER_FREE = ("MoveRight", "MoveUp", "RotateCW", "ZoomIn", "RightThenUp", "UpThenRight")
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ([230, 40, 40], [40, 220, 60], [50, 80, 240], [240, 230, 40], [240, 240, 240],
           [230, 60, 230])
SPLITS = 3
APPEARANCES = ("synthetic", "photo")
# class: where a video starts and how large its sprite is follow from its class (a
# MoveRight starts on the left, a ZoomOut large), so one frame hints at the class.
# free: every video's mean place and size are drawn from one distribution for every class
# and the frame wraps around (a torus), so in every class a frame's place and angle are
# uniform at any time, and the size of a frame from anywhere in a video has one
# distribution (a zoom's first frame is still its smallest): no clip of unknown time
# tells the class, only motion does.
PLACEMENTS = ("class", "free")
ZOOM_LOG = 0.4     # a zoom spans about e^{+-0.4} around its mean size (free placement
                   # spreads the sizes that do not zoom as widely)
# Colour photographs and textures that scikit-image's wheel ships (read as files, without
# importing scikit-image).
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "color.png", "brick.png",
          "grass.png", "gravel.png")
DRIFT = 0.15       # the camera moves at most this share of the frame over a video
# flat: a sprite in two colours split along its axis; textured: filled with a texture of
# its own (smooth noise, a gradient or stripes in random colours, full contrast) that
# moves and turns with it, so every part of the sprite shows its motion.
SPRITES = ("flat", "textured")


@functools.cache
def photos() -> tuple:
    """The sample photographs as RGB PIL images (grey textures repeated over 3 bands),
    decoded once per process."""
    import importlib.util

    from PIL import Image
    spec = importlib.util.find_spec("skimage")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" if spec else None
    if folder is None or not all((folder / n).exists() for n in PHOTOS):
        raise VsslError("--appearance photo needs the sample photographs that scikit-image "
                        "ships: pip install scikit-image")
    return tuple(Image.open(folder / n).convert("RGB") for n in PHOTOS)


def photo_background(rng: np.random.Generator, size: int, frames: int) -> np.ndarray:
    """(T, S, S, 3): a random crop of a random photograph, panned slowly in a random
    direction over the video (a drifting camera, independent of the class)."""
    from PIL import Image
    photo = photos()[rng.integers(len(PHOTOS))]
    w, h = photo.size
    view = int(rng.uniform(0.4, 0.8) * min(h, w))           # the crop, in photo pixels
    travel = DRIFT * view * rng.uniform(0.3, 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = travel * np.cos(angle), travel * np.sin(angle)
    x0 = rng.uniform(max(0, -dx), w - view - max(0, dx))
    y0 = rng.uniform(max(0, -dy), h - view - max(0, dy))
    out = np.empty((frames, size, size, 3), np.float32)
    for t in range(frames):
        f = t / max(1, frames - 1)
        box = (x0 + f * dx, y0 + f * dy, x0 + f * dx + view, y0 + f * dy + view)
        out[t] = np.asarray(photo.resize((size, size), Image.BILINEAR, box=box), np.float32)
    return out * 0.8 + 20      # a little away from the sprites' saturated colours


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    classes: int = 10
    videos_per_class: int = 12
    frames: int = 48
    size: int = 128
    fps: int = 25
    seed: int = 0
    backgrounds: int = 8          # shared by all classes; 0: a new one for every video
    shapes: int = len(SHAPES)     # the first N shapes
    colours: int = len(COLOURS)   # a video's two colours come from the first N
    drift: bool = False           # appearance changes over each video (motion does not)
    order_free: bool = False      # only the ORDER_FREE classes
    # synthetic: the textures and palette above; photo: real photographs (scikit-image's
    # sample images) seen through a camera that drifts slowly, whatever the class, and
    # sprites of any colour: appearance is shared across classes and differs within one,
    # so only the shape's motion tells a class.
    appearance: str = "synthetic"
    placement: str = "class"      # PLACEMENTS
    sprite: str = "flat"          # SPRITES
    sprite_scale: float = 1.0     # the sprite's size relative to synth's usual one
    speed: float = 1.0            # translations and rotations this many times as fast
                                  # (free placement wraps: a translation may cross the frame)
    # Soften the background: Gaussian blur (sigma as a share of the frame side) and its
    # contrast around its mean scaled by this factor, so that a sharp sprite stands out
    # from a real photograph without telling anything about the class.
    background_blur: float = 0.0
    background_contrast: float = 1.0

    def validate(self):
        if not 1 <= self.classes <= len(self.class_pool()):
            raise VsslError(f"--classes must be between 1 and {len(self.class_pool())}")
        if self.videos_per_class < SPLITS:
            raise VsslError(f"--videos-per-class must be at least {SPLITS} (one per split group)")
        if self.size < 16 or self.size % 2:
            raise VsslError("--size must be an even number >= 16")
        if not 1 <= self.shapes <= len(SHAPES):
            raise VsslError(f"--shapes must be between 1 and {len(SHAPES)}")
        if not 2 <= self.colours <= len(COLOURS):
            raise VsslError(f"--colours must be between 2 and {len(COLOURS)}")
        if self.backgrounds < 0:
            raise VsslError("--backgrounds must be 0 or more")
        if self.frames < 4:
            raise VsslError("--frames must be at least 4")
        if self.appearance not in APPEARANCES:
            raise VsslError(f"--appearance must be one of {', '.join(APPEARANCES)}")
        if self.placement not in PLACEMENTS:
            raise VsslError(f"--placement must be one of {', '.join(PLACEMENTS)}")
        if self.sprite not in SPRITES:
            raise VsslError(f"--sprite must be one of {', '.join(SPRITES)}")
        if not 0.2 <= self.sprite_scale <= 3:
            raise VsslError("--sprite-scale must be between 0.2 and 3")
        if not 0.25 <= self.speed <= 4:
            raise VsslError("--speed must be between 0.25 and 4")
        if self.speed > 1 and self.placement != "free":
            raise VsslError("--speed above 1 needs --placement free (a faster translation "
                            "would leave the frame)")
        if not 0 <= self.background_blur <= 0.5:
            raise VsslError("--background-blur must be between 0 and 0.5")
        if not 0 <= self.background_contrast <= 1:
            raise VsslError("--background-contrast must be between 0 and 1")
        if self.appearance == "photo":
            photos()                       # a clear error now when they are missing

    def class_pool(self) -> tuple[str, ...]:
        return ORDER_FREE if self.order_free else tuple(CLASSES)

    def class_names(self) -> list[str]:
        return list(self.class_pool()[:self.classes])

    def recorded(self) -> dict:
        """The config as synth.json records it and its id digests (``order_free`` only when
        set, so datasets written before it keep their id)."""
        config = dataclasses.asdict(self)
        if not self.order_free:
            del config["order_free"]
        if self.appearance == "synthetic":
            del config["appearance"]
        # settings added later are recorded only when they differ from their defaults
        later = (("placement", "class"), ("sprite", "flat"), ("sprite_scale", 1.0),
                 ("speed", 1.0), ("background_blur", 0.0), ("background_contrast", 1.0))
        for key, default in later:
            if config[key] == default:
                del config[key]
        return config


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth noise, a gradient or stripes, in random colours: varied but motion-free."""
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == 0:
        coarse = rng.random((5, 5, 3))
        idx = np.linspace(0, 4, size)
        lo = np.floor(idx).astype(int).clip(0, 3)
        frac = (idx - lo)[:, None]
        rows = coarse[lo] * (1 - frac[..., None]) + coarse[lo + 1] * frac[..., None]
        img = rows[:, lo] * (1 - frac[None, :, :]) + rows[:, lo + 1] * frac[None, :, :]
    elif kind == 1:
        a, b = rng.random(3), rng.random(3)
        t = (np.cos(rng.random() * np.pi) * xx + np.sin(rng.random() * np.pi) * yy)[..., None]
        img = a * (1 - t / t.max()) + b * (t / t.max())
    else:
        a, b = rng.random(3), rng.random(3)
        period = rng.integers(6, 20)
        angle = rng.random() * np.pi
        t = ((np.cos(angle) * xx + np.sin(angle) * yy) * size // period) % 2
        img = np.where(t[..., None] > 0, a, b)
    return (img * 160 + 20).astype(np.float32)  # keep away from the shape's saturated colours


def _inside(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return x * x + y * y < 1
    if shape == "square":
        return np.maximum(abs(x), abs(y)) < 0.8
    if shape == "triangle":
        return (y < 0.7) & (y > 1.4 * abs(x) - 0.9)
    return ((abs(x) < 0.35) & (abs(y) < 1)) | ((abs(y) < 0.35) & (abs(x) < 1))


def _trajectory(segments, frames: int, rng: np.random.Generator, free: bool = False,
                speed: float = 1.0):
    """Per-frame (cx, cy, angle, scale) in [-1, 1] frame coordinates, plus boundary frames.
    ``free``: the path is moved so that its mean place is uniform over the (wrapping)
    frame and its mean log size uniform in one range, whatever the class; sizes that do
    not zoom are spread as widely as a zoom's (see PLACEMENTS)."""
    cx, cy = rng.uniform(-0.15, 0.15, 2)
    angle, scale = rng.uniform(0, 2 * np.pi), rng.uniform(0.22, 0.3)
    state = np.empty((frames, 4))
    per = frames / len(segments)
    # Each translation covers half the frame; start off-centre so it ends inside the frame.
    for kind, sign in segments:
        if kind == "x":
            cx -= sign * 0.5
        elif kind == "y":
            cy -= sign * 0.5
    if any(k == "zoom" and s < 0 for k, s in segments):
        scale *= 1.8
    speed = {"x": speed / frames, "y": speed / frames, "rot": 2.5 * np.pi * speed / frames,
             "zoom": 2 * ZOOM_LOG / frames}      # sizes keep their range (see PLACEMENTS)
    boundaries = [int(round(per * i)) for i in range(1, len(segments))]
    for t in range(frames):
        state[t] = cx, cy, angle, scale
        kind, sign = segments[min(int(t // per), len(segments) - 1)]
        step = speed[kind] * sign * len(segments) * rng.uniform(0.9, 1.1)
        if kind == "x":
            cx += step
        elif kind == "y":
            cy += step
        elif kind == "rot":
            angle += step
        else:
            scale *= 1 + step
    if free:
        zooms = any(k == "zoom" for k, _ in segments)
        place = rng.uniform(-1, 1, 2)
        log_size = rng.uniform(np.log(0.2), np.log(0.36))
        spread = 0.0 if zooms else rng.uniform(-ZOOM_LOG, ZOOM_LOG)
        state[:, :2] += place - state[:, :2].mean(0)
        log_scale = np.log(state[:, 3])
        state[:, 3] = np.exp(log_scale - log_scale.mean() + log_size + spread)
    return state, boundaries


def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size): a Gaussian blur of one image axis as a matrix, edges mirrored once."""
    offsets = np.arange(-size + 1, size)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    matrix = np.zeros((size, size))
    for i in range(size):
        src = i + offsets                        # the pixels output i reads, mirrored in
        src = np.where(src < 0, -src - 1, src)
        src = np.where(src >= size, 2 * size - src - 1, src)
        ok = (src >= 0) & (src < size)
        np.add.at(matrix[i], src[ok], weights[ok])
    return matrix / matrix.sum(1, keepdims=True)


def soften(frames: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    """(T, S, S, 3) float backgrounds blurred and flattened as ``cfg`` says (unchanged by
    default)."""
    if cfg.background_blur > 0:
        blur = blur_matrix(frames.shape[1], cfg.background_blur * cfg.size)
        frames = np.einsum("ij,tjkc,lk->tilc", blur, frames, blur, optimize=True)
    if cfg.background_contrast != 1:
        mean = frames.mean((-3, -2), keepdims=True)
        frames = mean + (frames - mean) * cfg.background_contrast
    return frames


def sprite_texture(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """(size, size, 3) in 0..255: one of synth's background patterns stretched to full
    contrast, the fill of a textured sprite."""
    tex = _background(rng, size)
    lo, hi = tex.min(), tex.max()
    return (tex - lo) / max(hi - lo, 1e-6) * 255


def background_pool(cfg: SynthConfig) -> list[np.ndarray]:
    """The shared backgrounds: a small pool, so that the scene alone does not identify a
    video (as a unique static scene would, an instance-contrast shortcut)."""
    rng = np.random.default_rng([cfg.seed, 1])
    return [_background(rng, cfg.size) for _ in range(cfg.backgrounds)]


def render(class_name: str, cfg: SynthConfig, rng: np.random.Generator,
           pool: list[np.ndarray] | None = None):
    """Frames (T, S, S, 3) uint8 for one video of ``class_name`` plus its annotation."""
    size, frames = cfg.size, cfg.frames
    photo = cfg.appearance == "photo"
    if photo:
        moving = soften(photo_background(rng, size, frames), cfg)
        background = moving[0]
        colours = rng.uniform(0, 255, (2, 3))                 # sprites of any colour
    else:
        background = pool[rng.integers(len(pool))] if pool else _background(rng, size)
        background = soften(background[None], cfg)[0]
        colours = rng.choice(COLOURS[:cfg.colours], 2, replace=False)
    texture = sprite_texture(rng) if cfg.sprite == "textured" else None
    shape = SHAPES[rng.integers(cfg.shapes)]
    free = cfg.placement == "free"
    state, boundaries = _trajectory(CLASSES[class_name], frames, rng, free, cfg.speed)
    state[:, 3] *= cfg.sprite_scale
    fade = np.zeros(frames)
    if cfg.drift:     # cross-fade to a second background and a second pair of colours
        end_background = pool[rng.integers(len(pool))] if pool else _background(rng, size)
        end_background = soften(end_background[None], cfg)[0]
        end_colours = rng.choice(COLOURS[:cfg.colours], 2, replace=False)
        fade = np.linspace(0, 1, frames)
    grid = (np.mgrid[0:size, 0:size] + 0.5) / size * 2 - 1
    gy, gx = grid[0], grid[1]
    out = np.empty((frames, size, size, 3), np.uint8)
    for t, (cx, cy, angle, scale) in enumerate(state):
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = gx - cx, gy - cy
        if free:         # the nearest copy on the torus: a sprite leaving one side enters
            dx, dy = (dx + 1) % 2 - 1, (dy + 1) % 2 - 1     # the other
        lx = (c * dx + s * dy) / scale
        ly = (-s * dx + c * dy) / scale
        mask = _inside(shape, lx, ly)
        w = fade[t]
        if photo:
            background = moving[t]
        frame = background * (1 - w) + end_background * w if w else background.copy()
        pair = colours * (1 - w) + end_colours * w if w else colours
        if texture is not None:     # the texture in the sprite's own coordinates
            n = len(texture)
            u = ((lx[mask] + 1) / 2 * n).astype(int).clip(0, n - 1)
            v = ((ly[mask] + 1) / 2 * n).astype(int).clip(0, n - 1)
            frame[mask] = texture[v, u]
        else:
            frame[mask & (lx >= 0)] = pair[0]
            frame[mask & (lx < 0)] = pair[1]
        out[t] = frame.clip(0, 255)
    segments = [{"motion": f"{k}{'+' if s > 0 else '-'}"} for k, s in CLASSES[class_name]]
    return out, {"class": class_name, "shape": shape, "segments": segments,
                 "boundaries": boundaries}


def encode(frames: np.ndarray, path: Path, fps: int) -> None:
    """Write frames as H.264 (bit-exact, one thread) so a seed gives identical files."""
    t, h, w, _ = frames.shape
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
           "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
           "-map_metadata", "-1", str(path)]
    proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise VsslError(f"ffmpeg could not encode: {proc.stderr.decode().strip()[-300:]}", path)


def _plan(cfg: SynthConfig):
    """(class, video index, group, per-video seed) for every video, in a fixed order."""
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.classes * cfg.videos_per_class)
    for ci, name in enumerate(cfg.class_names()):
        for vi in range(cfg.videos_per_class):
            yield name, vi, vi % SPLITS, seeds[ci * cfg.videos_per_class + vi]


def _write_one(root: Path, cfg: SynthConfig, pool, name: str, vi: int, group: int,
               seed) -> dict:
    frames, note = render(name, cfg, np.random.default_rng(seed), pool)
    rel = f"{name}/v_{name}_g{group + 1:02d}_c{vi + 1:02d}.mp4"
    (root / "UCF-101" / name).mkdir(parents=True, exist_ok=True)
    encode(frames, root / "UCF-101" / rel, cfg.fps)
    return {"video": rel, "group": group + 1, **note}


INDEX_BYTES = 64 << 20   # a synth.json larger than this is not one synth wrote


def synth_files(index: dict) -> set[str]:
    """Every file (relative path) a synth dataset with this index consists of."""
    names = {"synth.json", "ucfTrainTestlist/classInd.txt"}
    names |= {f"ucfTrainTestlist/{kind}list{s:02d}.txt" for kind in ("train", "test")
              for s in range(1, SPLITS + 1)}
    return names | {f"UCF-101/{v['video']}" for v in index["videos"]}


def synth_index(folder: Path) -> dict | None:
    """The index of the synth dataset at ``folder``, or None when the folder is not one.

    A folder is a synth dataset only when its ``synth.json`` is one synth wrote (its id is
    the digest of its own config) and every file and folder in it is one that index
    accounts for: replacing it can then delete nothing else (a ``synth.json`` beside a
    user's notes does not make their folder ours)."""
    index_file = folder / "synth.json"
    try:
        if index_file.is_symlink() or index_file.stat().st_size > INDEX_BYTES:
            return None
        index = json.loads(index_file.read_text())
        if not (isinstance(index, dict) and isinstance(index.get("config"), dict)
                and index.get("id") == digest({"synth": index["config"]})
                and isinstance(index.get("videos"), list)
                and all(isinstance(v, dict) and isinstance(v.get("video"), str)
                        for v in index["videos"])):
            return None
        expected = synth_files(index)
        folders = {str(Path(n).parent) for n in expected} | {"UCF-101"}
        for path in folder.rglob("*"):
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink() or not (rel in expected and path.is_file()
                                         or rel in folders and path.is_dir()):
                return None
    except (OSError, ValueError, RecursionError):
        return None
    return index


def synthesize(out_dir: str | os.PathLike, cfg: SynthConfig, workers: int = 1,
               progress=None) -> tuple[Path, bool]:
    """Write the dataset atomically; returns (path, built). Same config twice is a no-op."""
    cfg.validate()
    out = Path(out_dir)
    check_output(out, "synth dataset", also_ours=lambda p: synth_index(p) is not None)
    config = cfg.recorded()
    config_id = digest({"synth": config})
    previous = synth_index(out) if out.is_dir() else None
    if previous is not None and previous["id"] == config_id:
        return out, False
    names = cfg.class_names()
    with atomic_directory(out) as tmp:
        jobs = list(_plan(cfg))
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            backgrounds = background_pool(cfg)
            futures = [pool.submit(_write_one, tmp, cfg, backgrounds, *job) for job in jobs]
            videos = []
            for fut in futures:
                videos.append(fut.result())
                if progress:
                    progress(1)
        ann = tmp / "ucfTrainTestlist"
        ann.mkdir()
        (ann / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
        for split in range(1, SPLITS + 1):
            test_group = split  # split k holds out group k, as UCF101 holds out 7 groups
            train = [v for v in videos if v["group"] != test_group]
            test = [v for v in videos if v["group"] == test_group]
            (ann / f"trainlist{split:02d}.txt").write_text(
                "".join(f"{v['video']} {names.index(v['class']) + 1}\n" for v in train))
            (ann / f"testlist{split:02d}.txt").write_text(
                "".join(f"{v['video']}\n" for v in test))
        (tmp / "synth.json").write_text(json.dumps(
            {"id": config_id, "config": config, "classes": names, "videos": videos}, indent=1))
    return out, True
