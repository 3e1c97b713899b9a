"""`vssl synth`: write the built-in motion dataset used by the demo and the tests."""
from __future__ import annotations

import click

from vssl_cli.cli.common import SEED, emit, json_option, log, progress_bar, workers_option
from vssl_cli.video.synth import (CLASSES, COLOURS, ORDER_FREE, PLACEMENTS, SHAPES,
                                  SPRITES, SynthConfig, synthesize)


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--classes", type=click.IntRange(1, len(CLASSES)), default=None,
              help="Number of motion classes (the first N; default: all of the set).")
@click.option("--order-free", is_flag=True,
              help=f"Only the classes that are not another class played backwards "
                   f"({', '.join(ORDER_FREE)}): what a model blind to frame order, such as "
                   f"TCE's frame average, can tell apart.")
@click.option("--videos-per-class", type=click.IntRange(3), default=12, show_default=True,
              help="Videos per class (split into 3 groups, UCF101-style).")
@click.option("--frames", type=click.IntRange(4, 10000), default=48, show_default=True,
              help="Frames per video.")
@click.option("--size", type=click.IntRange(16, 1024), default=128, show_default=True,
              help="Frame width and height in pixels (even).")
@click.option("--fps", type=click.IntRange(1, 1000), default=25, show_default=True,
              help="Frame rate of the written videos.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Random seed; the same seed writes the same videos.")
@click.option("--backgrounds", type=click.IntRange(0, 10000), default=8, show_default=True,
              help="Backgrounds shared by all classes (0: a new one per video).")
@click.option("--shapes", type=click.IntRange(1, len(SHAPES)), default=len(SHAPES),
              show_default=True, help="Shapes to draw from (circle, square, triangle, cross).")
@click.option("--colours", type=click.IntRange(2, len(COLOURS)), default=len(COLOURS),
              show_default=True, help="Palette size a shape's two colours come from.")
@click.option("--drift/--no-drift", default=False, show_default=True,
              help="Cross-fade each video's background and colours to others over its "
                   "length, so only motion stays the same within a video.")
@click.option("--appearance", type=click.Choice(["synthetic", "photo"]), default="synthetic",
              show_default=True,
              help="photo: backgrounds are real photographs (scikit-image's samples) seen "
                   "by a slowly drifting camera, sprites of any colour: appearance is shared "
                   "across classes and varies within one, so only motion tells them apart.")
@click.option("--placement", type=click.Choice(PLACEMENTS), default="class",
              show_default=True,
              help="free: each video's mean place and size are drawn alike for every class "
                   "and the frame wraps around, so a clip from anywhere in a video shows "
                   "its class only by its motion (class: a MoveRight starts on the left, a "
                   "ZoomOut large).")
@click.option("--sprite", type=click.Choice(SPRITES), default="flat", show_default=True,
              help="textured: the shape is filled with a pattern of its own in random "
                   "colours that moves and turns with it (flat: two colours).")
@click.option("--sprite-scale", type=click.FloatRange(0.2, 3), default=1.0, show_default=True,
              help="The shape's size relative to the usual (about a quarter of the frame).")
@click.option("--speed", type=click.FloatRange(0.25, 4), default=1.0, show_default=True,
              help="Translations and rotations this many times as fast (above 1 needs "
                   "--placement free, whose frame wraps).")
@click.option("--background-blur", type=click.FloatRange(0, 0.5), default=0.0,
              show_default=True,
              help="Gaussian blur of the background, sigma as a share of the frame side.")
@click.option("--background-contrast", type=click.FloatRange(0, 1), default=1.0,
              show_default=True,
              help="The background's contrast around its mean, scaled by this factor.")
@workers_option(default=2, help="Videos rendered and encoded in parallel.")
@json_option
def synth_command(out_dir, classes, order_free, videos_per_class, frames, size, fps, seed,
                  backgrounds, shapes, colours, drift, appearance, placement, sprite,
                  sprite_scale, speed, background_blur, background_contrast, workers, as_json):
    """Write a small labelled video dataset to OUT_DIR and print its path.

    Classes differ only by motion (direction, rotation, zoom, order of two movements) of a
    shape on varied backgrounds. The layout is UCF101's (UCF-101/<class>/*.mp4 and
    ucfTrainTestlist/ with 3 splits), so `vssl extract OUT_DIR` reads it directly;
    synth.json records each video's motion segments and boundary frames.
    """
    classes = classes or len(SynthConfig(order_free=order_free).class_pool())
    cfg = SynthConfig(classes, videos_per_class, frames, size, fps, seed, backgrounds, shapes,
                      colours, drift, order_free, appearance, placement, sprite,
                      sprite_scale, speed, background_blur, background_contrast)
    with progress_bar(classes * videos_per_class, "synth") as bar:
        path, built = synthesize(out_dir, cfg, workers, progress=bar.update)
    log.info("%s %s", "wrote" if built else "up to date:", path)
    emit(str(path), {"path": str(path), "config": cfg.__dict__, "built": built}, as_json)
