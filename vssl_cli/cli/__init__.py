"""The `vssl` command group and the one place errors become exit codes.

Every failure the user can act on is printed as one line,
``vssl <cmd>: error: <what> (<file>)``: exit 2 for usage, 1 for failures, 130 when
interrupted. SIGTERM is treated like Ctrl-C so every command cleans up the same way.
"""
from __future__ import annotations

import importlib
import logging
import signal
import sys
import traceback

import click

from vssl_cli import __version__
from vssl_cli.errors import VsslError, os_error_line

# Command ``name`` is ``name_command`` in ``vssl_cli.cli.<name>``, imported only when it runs:
# the training and evaluation commands pull in PyTorch (~0.8 s), which `extract`, `synth`,
# `inspect` and shell completion should not pay for.
COMMANDS = ("export", "extract", "finetune", "import", "inspect", "pretrain", "probe",
            "retrieve", "synth")
MODULES = {"import": "import_weights"}      # `import` is a Python keyword


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"vssl_cli.cli.{MODULES.get(name, name)}")
        return getattr(module, f"{name}_command")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="vssl")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress bars.")
def cli(verbose, quiet):
    """Self-supervised video representation learning, one artifact per command.

    Each command reads artifacts, writes one (a folder, Zarr store or HDF5 file with a
    manifest) and prints its path on stdout, so commands pipe: `-` as an input reads
    the path from standard input. Shell completion: eval "$(_VSSL_COMPLETE=bash_source vssl)".
    """
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="vssl: %(message)s", stream=sys.stderr,
                        force=True)
    logging.getLogger("vssl").setLevel(level)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _command_name(argv: list[str]) -> str:
    names = [a for a in argv if a in COMMANDS]
    return f"vssl {names[0]}" if names else "vssl"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # A shell starts background jobs of a script with SIGINT ignored, and Python then
    # leaves it ignored: `kill -INT` (or Ctrl-C sent to the group) would do nothing.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    name = _command_name(argv)
    # The exit comes after the handlers: the failed command's frames (a DataLoader with
    # worker processes among them) are released first and shut down cleanly.
    code = _run(argv, name)
    # From here on a SIGTERM (torchrun stopping the group after another worker failed)
    # ends the process quietly instead of raising inside interpreter shutdown.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(code)


def from_worker(text: str) -> str:
    """An error a DataLoader worker raised reaches us re-raised with its whole traceback
    in the message: keep the original's own line."""
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if ": " in last else last


def _run(argv: list[str], name: str) -> int:
    """Run the command; print any failure as one line and return the exit code."""
    try:
        code = cli.main(argv, prog_name="vssl", standalone_mode=False)
    except click.UsageError as e:
        ctx_name = e.ctx.command_path if e.ctx else name
        print(f"{ctx_name}: error: {e.format_message()}", file=sys.stderr)
        return 2
    except (click.Abort, KeyboardInterrupt):
        print(f"{name}: error: interrupted", file=sys.stderr)
        return 130
    except VsslError as e:
        print(f"{name}: error: {from_worker(str(e))}", file=sys.stderr)
        return e.exit_code
    except click.ClickException as e:
        print(f"{name}: error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return 1
    except OSError as e:      # disk full, permissions, a vanished file: not a bug
        text = from_worker(str(e))
        line = os_error_line(e) if text == str(e) else text
        print(f"{name}: error: {line}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: one line by default, the traceback with -v
        if "-v" in argv or "--verbose" in argv or "-vv" in argv:
            traceback.print_exc()
        print(f"{name}: error: internal error: {type(e).__name__}: {from_worker(str(e))} "
              "(rerun with -v for a traceback)", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0
