"""The README and docs/ stay true: links land on files and headings that exist, command
examples are accepted by the CLI's own parser, and the README's results tables are what
bench/report.py prints from the stored JSON."""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor a forge (GitHub, GitLab) gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.*)", line)):
            found.add(slug(m.group(1)))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_lands(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{doc.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(path), f"{doc.name}: no heading #{anchor} in {path.name}"


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert not re.search(r"issue \d+", text, re.I)


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            for part in line.split("#")[0].split("|"):
                words = shlex.split(part)
                if words[:1] == ["vssl"]:
                    commands.append(words[1:])
    for cell in re.findall(r"^\| `vssl \w+` \|.*\| `(vssl [^`]+)` \|$", text, re.M):
        commands.append(shlex.split(cell)[1:])      # the command table's examples
    return commands


@pytest.mark.parametrize("argv", readme_commands(), ids=" ".join)
def test_readme_commands_parse(argv):
    """Each example is accepted by the command's own click parser: its options exist and
    their values fit (a path that does not exist on this machine is all it may lack)."""
    from vssl_cli.cli import cli
    command = cli.get_command(None, argv[0])
    assert command is not None, argv
    try:
        command.make_context(argv[0], list(argv[1:]))
    except click.BadParameter as e:
        assert "does not exist" in e.format_message(), (argv, e.format_message())


def test_readme_tables_are_what_the_report_prints():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import report
    finally:
        sys.path.pop(0)
    text = (ROOT / "README.md").read_text()
    shown = dict(re.findall(r"<!-- report:(\w+) -->\n(.*?)\n<!-- /report -->", text, re.S))
    assert set(shown) == {"extract", "extract_real", "store", "methods", "quality"}
    tables = report.headline_tables()
    for name, table in shown.items():
        assert table == tables[name], name
