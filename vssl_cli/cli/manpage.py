"""Man pages generated from the click definitions, so they cannot drift from --help.

``python -m vssl_cli.cli.manpage man/`` rewrites man/vssl.1 and man/vssl-<cmd>.1;
a test regenerates them and fails if the committed pages differ.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from vssl_cli import __version__


def _escape(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + ln) if ln.startswith((".", "'")) else ln for ln in text.splitlines())


def _paragraphs(text: str) -> str:
    paras = [p.strip().replace("\n", " ") for p in (text or "").split("\n\n") if p.strip()]
    return "\n.PP\n".join(_escape(" ".join(p.split())) for p in paras)


def render(command: click.Command, name: str, parent: click.Context | None = None) -> str:
    # The command's own context settings (-h beside --help), as when it runs; the help
    # option is cached on the command, so without them the page would depend on what
    # ran first in the process.
    ctx = click.Context(command, info_name=name, parent=parent, **command.context_settings)
    title = ctx.command_path.replace(" ", "-")
    summary = command.get_short_help_str(limit=80)
    lines = [f'.TH {title.upper()} 1 "" "vssl {__version__}" "vssl manual"',
             ".SH NAME", f"{_escape(title)} \\- {_escape(summary)}",
             ".SH SYNOPSIS", f".B {_escape(ctx.command_path)}",
             _escape(" ".join(command.collect_usage_pieces(ctx))),
             ".SH DESCRIPTION", _paragraphs(command.help or "")]
    # Options only: whether arguments get a help record differs between click releases.
    options = [p.get_help_record(ctx) for p in command.get_params(ctx)
               if isinstance(p, click.Option)]
    options = [o for o in options if o]
    if options:
        lines.append(".SH OPTIONS")
        for flags, help_text in options:
            lines += [".TP", f"\\fB{_escape(flags)}\\fR", _escape(" ".join(help_text.split()))]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for sub in command.list_commands(ctx):
            cmd = command.get_command(ctx, sub)
            lines += [".TP", f"\\fB{sub}\\fR", _escape(cmd.get_short_help_str(limit=200)),
                      f"See \\fBvssl\\-{_escape(sub)}\\fR(1)."]
        lines += [".SH EXIT STATUS",
                  "0 on success, 1 when the work failed, 2 for a usage error, 130 when "
                  "interrupted. Errors are one line on stderr: "
                  "\\fIvssl <cmd>: error: <what> (<file>)\\fR."]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    from vssl_cli.cli import cli
    ctx = click.Context(cli, info_name="vssl", **cli.context_settings)
    out = {"vssl.1": render(cli, "vssl")}
    for name in cli.list_commands(ctx):
        out[f"vssl-{name}.1"] = render(cli.get_command(ctx, name), name, ctx)
    return out


def write(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write(sys.argv[1] if len(sys.argv) > 1 else "man"):
        print(path)
