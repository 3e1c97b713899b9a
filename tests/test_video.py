"""Probing and decoding real files: geometry, rate, rotation, trimming, bad inputs."""
import contextlib
import queue
import subprocess

import numpy as np
import pytest

from conftest import make_video
from vssl_cli.errors import DecodeError
from vssl_cli.video import decode, tools
from vssl_cli.video.decode import DecodeParams, FrameDecoder, decode_all
from vssl_cli.video.probe import info_from_header


def test_header_info_and_native_decode(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=15, size="80x48", rate=15)
    decoder = FrameDecoder(path, DecodeParams(short_side=None))
    frames = np.concatenate(list(decoder))
    info = decoder.info
    assert (info.width, info.height, info.fps, info.rotation) == (80, 48, 15.0, 0)
    assert info.expected_frames() == 15 and info.duration == pytest.approx(1.0, abs=0.1)
    assert frames.shape == (15, 48, 80, 3) and frames.dtype == np.uint8
    assert frames.std() > 10  # real picture content, not a blank buffer


def test_resize_resample_limit_and_trim(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=40, size="96x64", rate=20)
    frames = decode_all(path, DecodeParams(short_side=32, fps=10))
    assert frames.shape == (20, 32, 48, 3)
    assert decode_all(path, DecodeParams(size=(40, 30), max_frames=7)).shape == (7, 30, 40, 3)
    trimmed = decode_all(path, DecodeParams(short_side=None), start=0.5, end=1.5)
    assert trimmed.shape[0] == 20
    whole = decode_all(path, DecodeParams(short_side=None))
    # The trimmed clip starts 10 frames in: matches the untrimmed decode there.
    assert np.abs(trimmed[0].astype(int) - whole[10]).mean() < 3


@pytest.mark.parametrize("size", ["50x36", "36x50"])
def test_short_side_is_exact_and_long_side_even(tmp_path, size):
    """50x36 at short side 25 is 34.7 wide: 34 (even), 35 with the older nearest rounding;
    portrait sources get the same rule on their height."""
    path = make_video(tmp_path / "v.mp4", frames=3, size=size)
    even = decode_all(path, DecodeParams(short_side=25)).shape[1:3]
    nearest = decode_all(path, DecodeParams(short_side=25, even_long_side=False)).shape[1:3]
    landscape = size == "50x36"
    assert even == ((25, 34) if landscape else (34, 25))
    assert nearest == ((25, 35) if landscape else (35, 25))


def test_decoder_streams_in_bounded_blocks(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=50, size="64x48", rate=25)
    decoder = FrameDecoder(path, DecodeParams(short_side=None), block=8)
    sizes = [len(b) for b in decoder]
    assert max(sizes) == 8 and sum(sizes) == 50 == decoder.frames
    # The decoder reads the source's description from its own ffmpeg log header.
    assert (decoder.info.width, decoder.info.height, decoder.info.fps) == (64, 48, 25.0)
    assert decoder.info.expected_frames() == 50
    by_bytes = FrameDecoder(path, DecodeParams(short_side=None), multiple=16)
    assert {len(b) for b in by_bytes} == {50}  # 16 MiB fits all; whole multiples of 16 asked

def test_reused_blocks_hold_the_same_frames_in_recycled_memory(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=50, size="64x48", rate=25)
    fresh = decode_all(path, DecodeParams(short_side=None))
    copies, owners = [], []   # owners stay referenced, so their ids stay unique
    for block in FrameDecoder(path, DecodeParams(short_side=None), block=8, reuse=True):
        copies.append(block.copy())
        owners.append(block.base)
    assert np.array_equal(np.concatenate(copies), fresh)
    assert len({id(o) for o in owners}) < 7   # 7 blocks, fewer buffers: read into again


def test_the_next_video_is_read_into_blocks_the_previous_one_gave_back(tmp_path):
    with contextlib.suppress(queue.Empty):
        while True:   # start from no spare blocks, whatever ran before in this process
            decode._SPARE_BLOCKS.get_nowait()
    first = make_video(tmp_path / "a.mp4", frames=20, size="64x48")
    second = make_video(tmp_path / "b.mp4", frames=30, size="96x48", source="mandelbrot")
    owners = {id(b.base): b.base for b in FrameDecoder(first, DecodeParams(), reuse=True)}
    blocks = [(b.copy(), b.base) for b in FrameDecoder(second, DecodeParams(), reuse=True)]
    assert any(id(base) in owners for _, base in blocks)
    np.testing.assert_array_equal(np.concatenate([b for b, _ in blocks]),
                                  decode_all(second, DecodeParams()))



def test_rotation_metadata_is_honoured(tmp_path):
    plain = make_video(tmp_path / "plain.mp4", frames=6, size="64x32")
    rotated = tmp_path / "rot.mp4"
    ffmpeg = [tools.ffmpeg_exe(), "-loglevel", "error", "-y"]
    # ffmpeg 6+ sets the display matrix with -display_rotation (the rotate tag is ignored
    # there); older ones, like Debian 12's 5.1, only know the tag.
    made = subprocess.run([*ffmpeg, "-display_rotation:v:0", "90", "-i", str(plain), "-c", "copy",
                           str(rotated)], capture_output=True)
    if made.returncode:
        subprocess.run([*ffmpeg, "-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                        str(rotated)], check=True)
    decoder = FrameDecoder(rotated, DecodeParams(short_side=None))
    frames = np.concatenate(list(decoder))
    info = decoder.info
    assert info.rotation in (90, 270) and (info.width, info.height) == (32, 64)
    assert frames.shape[1:3] == (64, 32)
    upright = decode_all(plain, DecodeParams(short_side=None))
    turned = np.rot90(upright[0], k=1 if info.rotation == 90 else -1)
    other = np.rot90(upright[0], k=-1 if info.rotation == 90 else 1)
    err = lambda a: np.abs(frames[0].astype(int) - a).mean()  # noqa: E731
    assert min(err(turned), err(other)) < 8


@pytest.mark.parametrize("content", [b"", b"definitely not a video\n" * 20],
                         ids=["zero-byte", "text"])
def test_bad_files_raise_decode_error(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match="not a video"):
        list(FrameDecoder(path, DecodeParams()))


def test_audio_only_is_rejected(tmp_path):
    path = tmp_path / "sound.mp4"
    subprocess.run([tools.ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=duration=0.5", "-c:a", "aac", str(path)], check=True)
    with pytest.raises(DecodeError, match="no video stream"):
        list(FrameDecoder(path, DecodeParams()))


def test_decoder_names_non_video_input(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("hello\n" * 100)
    with pytest.raises(DecodeError, match="not a video"):
        list(FrameDecoder(path, DecodeParams()))


HEADER = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':
  Duration: 00:00:02.50, start: 0.000000, bitrate: 95 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 320x240 [SAR 1:1 DAR 4:3], 92 kb/s, 29.97 fps, 29.97 tbr, 30k tbn (default)
    Side data:
      displaymatrix: rotation of -90.00 degrees
"""  # noqa: E501 (a real ffmpeg log header)


def test_header_parser():
    info = info_from_header(HEADER)
    # A -90 degree display matrix: shown as 240x320, rotated 270 degrees.
    assert (info.width, info.height, info.fps, info.rotation) == (240, 320, 29.97, 270)
    assert info.duration == pytest.approx(2.5) and info.codec == "h264"
    assert info_from_header("Input #0, wav\n  Stream #0:0: Audio: pcm_s16le") is None


def test_bundled_static_ffmpeg_works(tmp_path, monkeypatch):
    """`pip install` alone: no ffmpeg on PATH, the imageio-ffmpeg binary (no ffprobe)."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    path = make_video(tmp_path / "v.mp4", frames=12, size="64x48", rate=12)
    monkeypatch.setenv("VSSL_FFMPEG", imageio_ffmpeg.get_ffmpeg_exe())
    tools.ffmpeg_exe.cache_clear()
    try:
        decoder = FrameDecoder(path, DecodeParams(short_side=24))
        frames = np.concatenate(list(decoder))
    finally:
        tools.ffmpeg_exe.cache_clear()
    assert frames.shape == (12, 24, 32, 3)
    assert (decoder.info.width, decoder.info.fps) == (64, 12.0)
