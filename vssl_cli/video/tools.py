"""Find the ffmpeg executable.

Order: ``$VSSL_FFMPEG``, then ``PATH``, then the static binary that the ``imageio-ffmpeg``
wheel ships, so ``pip install vssl`` alone gives a working tool.
"""
from __future__ import annotations

import functools
import os
import shutil

from vssl_cli.errors import VsslError


@functools.cache
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
