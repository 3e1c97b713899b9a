"""JPEG frames inside the frame store (``--codec jpeg --quality Q``), through imagecodecs'
libjpeg-turbo, so a store is about the size of the JPEG frame folders people keep.

Zarr: each video is a zarr v3 array sharded along time. Its inner chunks are single
frames, each one JPEG (imagecodecs' numcodecs codec ``imagecodecs_jpeg``); a shard file
holds ``shard_frames`` of them and the standard ``sharding_indexed`` index (offset and
length of every frame, crc32c). One frame is one small range read and one JPEG decode,
whatever the clip's stride, and a video is a few files, not one per frame.
zarr-python reads these arrays as its own once the codec is registered: installing vssl
registers it through the ``zarr.codecs`` entry point (``register_zarr_codec`` does it by
hand), with imagecodecs registered in numcodecs.

HDF5: each video is a variable-length uint8 dataset, one JPEG per frame (no HDF5 filter
for JPEG ships on PyPI); h5py reads the bytes, ``imagecodecs.jpeg8_decode`` the pixels.
"""
from __future__ import annotations

import functools

import numpy as np

ZARR_NAME = "numcodecs.imagecodecs_jpeg"
DEFAULT_QUALITY = 90


def encode(frame: np.ndarray, quality: int) -> bytes:
    """One (H, W, 3) uint8 frame as a baseline JPEG (4:2:0, libjpeg-turbo)."""
    import imagecodecs
    return imagecodecs.jpeg8_encode(np.ascontiguousarray(frame), level=quality)


def decode(data, out: np.ndarray | None = None) -> np.ndarray:
    """A JPEG into ``out`` (H, W, 3) uint8, or a new array."""
    import imagecodecs
    return imagecodecs.jpeg8_decode(data, out=out)


def codec_entry(quality: int) -> dict:
    """The inner codec entry of a sharded JPEG array's zarr.json."""
    return {"name": ZARR_NAME, "configuration": {"level": int(quality)}}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of uint8 images in dB (inf when they are equal)."""
    err = np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(255.0 ** 2 / err))


@functools.cache
def zarr_codec_class() -> type:
    """``ImagecodecsJpeg``: imagecodecs' numcodecs JPEG as a zarr v3 array-to-bytes codec
    for one (1, H, W, 3) frame chunk (zarr-python is imported only when asked)."""
    import warnings

    import imagecodecs.numcodecs
    from zarr.codecs.numcodecs._codecs import _NumcodecsArrayBytesCodec
    imagecodecs.numcodecs.register_codecs(codecs=["imagecodecs_jpeg"], verbose=False)

    class ImagecodecsJpeg(_NumcodecsArrayBytesCodec, codec_name="imagecodecs_jpeg"):
        def __init__(self, **config):
            with warnings.catch_warnings():   # "not in the Zarr v3 specification"
                warnings.simplefilter("ignore")
                super().__init__(**config)

    return ImagecodecsJpeg


def register_zarr_codec() -> None:
    """Let zarr-python read sharded JPEG arrays (the entry point does it when vssl is
    installed; this is for a session that has not loaded entry points)."""
    from zarr.registry import register_codec
    register_codec(ZARR_NAME, zarr_codec_class())


def __getattr__(name):
    """``ImagecodecsJpeg`` for the ``zarr.codecs`` entry point."""
    if name == "ImagecodecsJpeg":
        return zarr_codec_class()
    raise AttributeError(name)
