"""Find the ffmpeg and ffprobe executables.

Order: ``$VSSL_FFMPEG`` (and ``$VSSL_FFPROBE``), then ``PATH``, then the static binary that
the ``imageio-ffmpeg`` wheel ships, so ``pip install vssl`` alone gives a working tool.
That binary has no ffprobe; probing then falls back to parsing ``ffmpeg -i`` output.
"""
from __future__ import annotations

import functools
import os
import shutil

from vssl_cli.errors import VsslError


@functools.lru_cache(maxsize=None)
def ffmpeg_exe() -> str:
    explicit = os.environ.get("VSSL_FFMPEG")
    if explicit:
        if not shutil.which(explicit):
            raise VsslError("VSSL_FFMPEG does not name an executable", explicit)
        return shutil.which(explicit)
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        raise VsslError("ffmpeg not found: install it (e.g. apt-get install ffmpeg) "
                        "or pip install imageio-ffmpeg") from None


@functools.lru_cache(maxsize=None)
def ffprobe_exe() -> str | None:
    """ffprobe next to the chosen ffmpeg, or on PATH; None when only ffmpeg exists."""
    explicit = os.environ.get("VSSL_FFPROBE")
    if explicit is not None:
        return shutil.which(explicit) if explicit else None
    sibling = os.path.join(os.path.dirname(ffmpeg_exe()), "ffprobe")
    if os.access(sibling, os.X_OK):
        return sibling
    return shutil.which("ffprobe")
