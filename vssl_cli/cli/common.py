"""Helpers every command shares: printing the artifact, progress bars, option types."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import sys

import click

from vssl_cli.safe_io import finite

log = logging.getLogger("vssl")


def emit(path: str, manifest: dict, as_json: bool) -> None:
    """stdout carries only the artifact path (or its manifest with --json), so commands pipe."""
    if as_json:
        click.echo(json.dumps(finite(manifest), indent=1, default=str))
    else:
        click.echo(path)


@contextlib.contextmanager
def progress_bar(total: int, desc: str, unit: str = "video"):
    """A tqdm bar on stderr; silent with -q or when stderr is not a terminal. While it is
    shown, log lines go through tqdm (the bar is cleared, the line written, the bar drawn
    again), so a message never lands on the bar's line."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm
    quiet = logging.getLogger("vssl").getEffectiveLevel() > logging.INFO
    with logging_redirect_tqdm(loggers=[logging.root]), \
            tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                 disable=True if quiet else None, leave=False) as bar:
        yield bar


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the manifest as JSON instead of the artifact path.")
force_option = click.option("--force", is_flag=True,
                            help="Rebuild even if an up-to-date artifact exists.")
dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Say what would be done and exit without writing.")


def workers_option(default: int = 1, help: str = "Parallel workers."):
    return click.option("-j", "--workers", type=click.IntRange(1, 1024), default=default,
                        show_default=True, help=help)


# The largest picture side ffmpeg's scaler makes (and far beyond any training frame).
MAX_SIDE = 16384
# Seeds are what numpy's and torch's generators take: 0 to 2**32 - 1.
SEED = click.IntRange(0, 2**32 - 1)


class SizeType(click.ParamType):
    """``WxH`` as a (width, height) tuple."""

    name = "WxH"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            w, h = (int(v) for v in value.lower().split("x"))
            if 0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE:
                return (w, h)
        except ValueError:
            pass
        self.fail(f"expected WIDTHxHEIGHT such as 160x120 (sides 1 to {MAX_SIDE}), got "
                  f"{value!r}", param, ctx)


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite (FloatRange lets nan through)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number", param, ctx)
        return value
