"""`vssl inspect`: show any artifact's manifest."""
from __future__ import annotations

import json

import click

from vssl_cli.artifacts import load_manifest, resolve_input


@click.command("inspect")
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.option("--videos", is_flag=True, help="List every video of a frame store.")
@click.option("--metrics", "keys", default=None, metavar="KEY,...",
              help="Compare artifacts: one row per artifact with these metrics "
                   "(e.g. top1,R@1); with --json, a JSON list.")
def inspect_command(artifacts, as_json, videos, keys):
    """Pretty-print the manifest of ARTIFACT(s) (`-` reads a path from standard input)."""
    paths = [resolve_input(a) for a in artifacts]
    if keys:
        _compare(paths, [k.strip() for k in keys.split(",") if k.strip()], as_json)
        return
    for path in paths:
        _show(path, load_manifest(path), as_json, videos)


def _compare(paths, keys, as_json):
    rows = []
    for path in paths:
        metrics = load_manifest(path)["metrics"]
        rows.append({"artifact": path, **{k: metrics.get(k) for k in keys}})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table("artifact", *keys, box=None)
    for row in rows:
        table.add_row(row["artifact"], *(f"{v:.3f}" if isinstance(v, float) else str(v)
                                         for v in list(row.values())[1:]))
    Console(soft_wrap=True).print(table)


def _show(path, manifest, as_json, videos):
    if as_json:
        click.echo(json.dumps(manifest, indent=1, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    head = Table(show_header=False, box=None, pad_edge=False)
    for key in ("kind", "id", "created", "vssl_version"):
        head.add_row(f"[bold]{key}[/]", str(manifest[key]))
    head.add_row("[bold]path[/]", path)
    head.add_row("[bold]command[/]", " ".join(manifest["command"]))
    env = manifest["environment"]
    head.add_row("[bold]environment[/]", ", ".join(f"{k} {v}" for k, v in env.items() if v))
    for item in manifest["inputs"]:
        head.add_row("[bold]input[/]", f"{item.get('kind', '?')} {item.get('path')} "
                     f"{item.get('id') or ''}".strip())
    console.print(head)
    console.print("[bold]config[/]", json.dumps(manifest["config"], indent=1))
    if manifest["metrics"]:
        metrics = Table("metric", "value", box=None)
        for k, v in manifest["metrics"].items():
            metrics.add_row(k, str(v))
        console.print(metrics)
    table = manifest["outputs"].get("videos")
    if table is not None:
        _video_summary(console, manifest["outputs"], table, videos)


def _video_summary(console, outputs, table, list_all):
    from collections import Counter

    from rich.table import Table

    splits = Counter((r.get("split") or "-") for r in table if r["status"] == "ok")
    console.print(f"[bold]videos[/] {len(table)} ({sum(splits.values())} ok), classes "
                  f"{len(outputs.get('classes', []))}, splits "
                  + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))
    failed = [r for r in table if r["status"] != "ok"]
    shown = table if list_all else failed
    if shown:
        rows = Table("id", "label", "split", "frames", "size", "status", box=None)
        for r in shown:
            rows.add_row(r["id"], str(r.get("label") or "-"), str(r.get("split") or "-"),
                         str(r.get("frames", "-")),
                         f"{r['width']}x{r['height']}" if "width" in r else "-",
                         r["status"] if r["status"] == "ok" else f"[red]{r.get('error')}[/]")
        console.print(rows)
