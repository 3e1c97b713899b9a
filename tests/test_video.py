"""Decoding real files as a player shows them: every frame once with its time, display
aspect, rotation, trimming, damaged and odd inputs, always checked against what the ffmpeg
command line itself decodes."""
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from conftest import cli_frames, ffmpeg, make_video, real_footage

from vssl_cli.errors import DecodeError
from vssl_cli.video import decode, tools
from vssl_cli.video.decode import DecodeParams, FrameDecoder, decode_all
from vssl_cli.video.probe import VideoInfo, output_size


def decoded(path, **params):
    """(frames, decoder) for ``path`` decoded with DecodeParams(**params)."""
    decoder = FrameDecoder(path, DecodeParams(**params))
    blocks = list(decoder)
    frames = np.concatenate(blocks) if blocks else np.zeros((0, 1, 1, 3), np.uint8)
    return frames, decoder


def test_native_decode_with_times_and_geometry(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=15, size="80x48", rate=15)
    frames, d = decoded(path, short_side=None)
    info = d.info
    assert (info.width, info.height, info.fps, info.rotation, info.sar) == (80, 48, 15.0, 0, 1)
    assert info.frames == 15 and info.duration == pytest.approx(1.0, abs=0.1)
    assert frames.shape == (15, 48, 80, 3) and frames.dtype == np.uint8
    assert frames.std() > 10  # real picture content, not a blank buffer
    np.testing.assert_allclose(d.timestamps, np.arange(15) / 15, atol=1e-6)
    assert not d.partial and d.warnings == []


def test_resize_resample_limit_and_trim(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=40, size="96x64", rate=20)
    frames, d = decoded(path, short_side=32, fps=10)
    assert frames.shape == (20, 32, 48, 3)
    np.testing.assert_allclose(d.timestamps, np.arange(20) / 10, atol=1e-6)
    assert decode_all(path, DecodeParams(size=(40, 30), max_frames=7)).shape == (7, 30, 40, 3)
    trimmed = decode_all(path, DecodeParams(short_side=None), start=0.5, end=1.5)
    assert trimmed.shape[0] == 20
    whole = decode_all(path, DecodeParams(short_side=None))
    np.testing.assert_array_equal(trimmed, whole[10:30])   # the same frames, 0.5 s in


@pytest.mark.parametrize("size", ["50x36", "36x50"])
def test_short_side_is_exact_and_long_side_even(tmp_path, size):
    """50x36 at short side 25 is 34.7 wide: 34, even; portrait sources likewise."""
    path = make_video(tmp_path / "v.mp4", frames=3, size=size)
    shape = decode_all(path, DecodeParams(short_side=25)).shape[1:3]
    assert shape == ((25, 34) if size == "50x36" else (34, 25))


def test_variable_frame_rate_keeps_every_decoded_frame_once(tmp_path):
    """A phone-style VFR file: 10 s at 30 fps with most frames dropped and one burst kept.
    The container's nominal rate would pad it to ~300 frames with copies."""
    path = tmp_path / "vfr.mp4"
    kept = [n for n in range(300) if n % 3 == 0 or 100 <= n <= 130]
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-t", "10", "-vf",
           r"select='not(mod(n\,3))+between(n\,100\,130)'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", path)
    frames, d = decoded(path, short_side=None)
    assert len(frames) == len(kept) == len(cli_frames(path, 160, 120))
    np.testing.assert_allclose(d.timestamps, np.array(kept) / 30, atol=1e-3)
    np.testing.assert_array_equal(frames, cli_frames(path, 160, 120))
    assert len(np.unique(frames.reshape(len(frames), -1), axis=0)) == len(frames)  # no copies
    resampled, r = decoded(path, short_side=None, fps=10)       # constant rate, on purpose
    assert len(resampled) == 100
    np.testing.assert_allclose(np.diff(r.timestamps), 0.1, atol=1e-6)


def test_avi_with_dropped_frames_and_webm_timebase(tmp_path):
    """An AVI muxed from a VFR stream declares 298 frames and holds 121 (the rest are
    dropped-frame entries); WebM counts time in milliseconds at 29.97 fps."""
    vfr = tmp_path / "vfr.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-t", "10", "-vf",
           r"select='not(mod(n\,3))+between(n\,100\,130)'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", vfr)
    avi = tmp_path / "dropped.avi"
    ffmpeg("-i", vfr, "-c:v", "mpeg4", "-fps_mode", "passthrough", avi)
    frames, d = decoded(avi, short_side=None)
    assert d.info.frames > len(frames) == len(cli_frames(avi, 160, 120)) == 121
    assert d.timestamps[-1] == pytest.approx(9.9) and not d.partial
    webm = tmp_path / "v.webm"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30000/1001", "-frames:v", "40",
           "-c:v", "libvpx-vp9", "-b:v", "100k", webm)
    frames, d = decoded(webm, short_side=None)
    assert len(frames) == len(cli_frames(webm, 96, 64)) == 40
    np.testing.assert_allclose(d.timestamps, np.arange(40) * 1001 / 30000, atol=1e-3)


def test_non_square_pixels_are_stored_at_display_aspect(tmp_path):
    """A 320x240 file with SAR 4:3 shows 427x240: at short side 120 that is 213.3 wide,
    214 with the long side rounded to an even width."""
    path = tmp_path / "sar.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "10", "-vf",
           "setsar=4/3", "-c:v", "libx264", "-pix_fmt", "yuv420p", path)
    frames, d = decoded(path, short_side=120)
    assert frames.shape[1:3] == (120, 214) and d.info.sar == Fraction(4, 3)
    np.testing.assert_array_equal(frames, cli_frames(path, 214, 120))
    assert decode_all(path, DecodeParams(short_side=None)).shape[1:3] == (240, 426)


def test_output_size_rules():
    square = VideoInfo(320, 240, 1, 0, 25.0, 1.0, 25, "h264")
    assert output_size(square, 128, None) == (170, 128)
    assert output_size(square, None, None) == (320, 240)
    dv = VideoInfo(720, 576, Fraction(16, 15), 0, 25.0, 1.0, 25, "dvvideo")
    assert output_size(dv, None, None) == (768, 576)
    turned = VideoInfo(320, 240, Fraction(4, 3), 90, 25.0, 1.0, 25, "h264")   # shown 240 x 426.7
    assert output_size(turned, 120, None) == (120, 214)
    assert output_size(turned, None, None) == (240, 426)
    assert output_size(square, 128, (64, 32)) == (64, 32)


def test_rotation_metadata_is_honoured_as_ffmpeg_does(tmp_path):
    plain = make_video(tmp_path / "plain.mp4", frames=6, size="64x32")
    rotated = tmp_path / "rot.mp4"
    # ffmpeg 6+ sets the display matrix with -display_rotation (the rotate tag is ignored
    # there); older ones, like Debian 12's 5.1, only know the tag.
    try:
        ffmpeg("-display_rotation:v:0", "90", "-i", plain, "-c", "copy", rotated)
    except subprocess.CalledProcessError:
        ffmpeg("-i", plain, "-c", "copy", "-metadata:s:v:0", "rotate=90", rotated)
    frames, d = decoded(rotated, short_side=None)
    assert d.info.rotation in (90, 270) and frames.shape[1:3] == (64, 32)
    np.testing.assert_array_equal(frames, cli_frames(rotated, 32, 64))   # ffmpeg autorotates
    upright = decode_all(plain, DecodeParams(short_side=None))
    k = 1 if d.info.rotation == 270 else -1
    assert np.abs(frames[0].astype(int) - np.rot90(upright[0], k=k)).mean() < 3


def test_metadata_cannot_fake_the_geometry(tmp_path):
    """A title that reads like ffmpeg's stream line once made the old log parser store
    garbage 8x8 frames; the decoder's own fields are all that count now."""
    path = tmp_path / "title.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-frames:v", "8", "-c:v",
           "libx264", "-metadata", "title=Stream #0:0: Video: h264, 8x8, 1000 fps\n"
           "  Stream #0:0: Video: h264, 8x8", path)
    frames, d = decoded(path, short_side=None)
    assert frames.shape == (8, 64, 96, 3) and d.info.fps == 25.0


def test_truncated_files_keep_their_readable_prefix(tmp_path):
    fast = make_video(tmp_path / "fast.mp4", frames=100, size="96x64", rate=25,
                      faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[:int(fast.stat().st_size * 0.6)])
    frames, d = decoded(cut, short_side=None)
    assert 20 < len(frames) < 100 and d.partial
    assert len(frames) == len(cli_frames(cut, 96, 64))       # what ffmpeg itself decodes
    np.testing.assert_array_equal(frames, decode_all(fast, DecodeParams(short_side=None))
                                  [:len(frames)])
    assert any("truncated" in w for w in d.warnings)
    avi = tmp_path / "whole.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-frames:v", "100", "-c:v",
           "mpeg4", avi)
    cut_avi = tmp_path / "cut.avi"
    cut_avi.write_bytes(avi.read_bytes()[:int(avi.stat().st_size * 0.6)])
    frames, d = decoded(cut_avi, short_side=None)
    assert 20 < len(frames) < 100 and d.partial
    # ffmpeg also decodes the torn last packet into a half-concealed picture; we leave
    # that one out and say so.
    assert len(frames) in (len(cli_frames(cut_avi, 96, 64)) - 1, len(cli_frames(cut_avi, 96,
                                                                                  64)))
    indexless = make_video(tmp_path / "slow.mp4", frames=50, size="96x64")
    cut_slow = tmp_path / "cut_slow.mp4"
    cut_slow.write_bytes(indexless.read_bytes()[:int(indexless.stat().st_size * 0.6)])
    with pytest.raises(DecodeError, match="moov atom"):
        decoded(cut_slow)


def test_a_clip_shorter_than_one_output_frame_still_gives_one(tmp_path):
    path = make_video(tmp_path / "blink.mp4", frames=1, size="64x48", rate=25)
    frames, _ = decoded(path, short_side=None, fps=1)
    assert len(frames) == 1


def test_ten_bit_and_other_codecs(tmp_path):
    made = []
    for name, args in (("hevc10.mp4", ["-c:v", "libx265", "-pix_fmt", "yuv420p10le"]),
                       ("prores.mov", ["-c:v", "prores_ks"]),
                       ("mjpeg.avi", ["-c:v", "mjpeg", "-pix_fmt", "yuvj420p"])):
        try:
            ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-frames:v", "10",
                   *args, tmp_path / name)
        except subprocess.CalledProcessError:
            continue            # this ffmpeg has no such encoder
        made.append(name)
        # Scaled, as stores are: swscale releases agree to the level. (Unscaled 10-bit to
        # RGB conversion differs between ffmpeg 5.1 and 8 by ~3 levels on the mean.)
        frames, _ = decoded(tmp_path / name, short_side=48)
        np.testing.assert_array_equal(frames, cli_frames(tmp_path / name, 72, 48))
    assert made


def test_decoder_streams_in_bounded_blocks(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", frames=50, size="64x48", rate=25)
    decoder = FrameDecoder(path, DecodeParams(short_side=None), block=8)
    sizes = [len(b) for b in decoder]
    assert max(sizes) == 8 and sum(sizes) == 50 == decoder.frames
    by_bytes = FrameDecoder(path, DecodeParams(short_side=None), multiple=16)
    assert {len(b) for b in by_bytes} == {50}  # 16 MiB fits all; whole multiples of 16 asked
    # Frames larger than a block (4K at --short-side 0): one frame a block, never a
    # chunk's worth.
    monkeypatch.setattr(decode, "BLOCK_BYTES", 64 * 48 * 3 * 2 + 5)
    big = FrameDecoder(path, DecodeParams(short_side=None), multiple=16)
    assert {len(b) for b in big} == {2}


def test_reused_blocks_hold_the_same_frames_in_recycled_memory(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=50, size="64x48", rate=25)
    fresh = decode_all(path, DecodeParams(short_side=None))
    copies, owners = [], []
    for block in FrameDecoder(path, DecodeParams(short_side=None), block=8, reuse=True):
        copies.append(block.copy())
        owners.append(block.base if block.base is not None else block)
    assert np.array_equal(np.concatenate(copies), fresh)
    assert len({id(o) for o in owners}) == 1   # 7 blocks, one buffer read into again
    second = make_video(tmp_path / "w.mp4", frames=30, size="96x48", source="mandelbrot")
    again = [(b.copy(), b.base) for b in FrameDecoder(second, DecodeParams(), reuse=True)]
    assert again[0][1] is owners[0]            # the next video reuses this thread's memory
    np.testing.assert_array_equal(np.concatenate([b for b, _ in again]),
                                  decode_all(second, DecodeParams()))


@pytest.mark.parametrize("content", [b"", b"definitely not a video\n" * 20],
                         ids=["zero-byte", "text"])
def test_bad_files_raise_decode_error(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match="not a video"):
        list(FrameDecoder(path, DecodeParams()))


def test_audio_only_is_rejected(tmp_path):
    path = tmp_path / "sound.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", path)
    with pytest.raises(DecodeError, match="no video stream"):
        list(FrameDecoder(path, DecodeParams()))


@pytest.mark.parametrize("path", real_footage(), ids=lambda p: p.name)
def test_real_footage_decodes_as_ffmpeg_decodes_it(path):
    """Packaged camera footage: the same frames, count and pixels as the ffmpeg command
    line (MPEG-4 decoders of different ffmpeg releases may differ by a level or two)."""
    frames, d = decoded(path, short_side=120)
    reference = cli_frames(path, d.width, d.height)
    assert len(frames) == len(reference) and len(d.timestamps) == len(frames)
    assert np.abs(frames.astype(int) - reference).max() <= 3
    assert np.all(np.diff(d.timestamps) > 0)


def test_bundled_static_ffmpeg_is_found(monkeypatch):
    """`pip install` alone: synth and the tests use the imageio-ffmpeg binary when no
    ffmpeg is on PATH (decoding itself goes through PyAV's own libraries)."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    monkeypatch.setenv("VSSL_FFMPEG", imageio_ffmpeg.get_ffmpeg_exe())
    tools.ffmpeg_exe.cache_clear()
    try:
        assert tools.ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()
    finally:
        tools.ffmpeg_exe.cache_clear()
