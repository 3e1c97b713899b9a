"""`vssl inspect`: show any artifact's manifest."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import click
from rich.markup import escape

from vssl_cli.artifacts import artifact_file, load_manifest, resolve_input
from vssl_cli.errors import VsslError
from vssl_cli.safe_io import LOG, finite, loads, read_text


@click.command("inspect")
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.option("--videos", is_flag=True, help="List every video of a frame store.")
@click.option("--metrics", "keys", default=None, metavar="KEY,...",
              help="Compare artifacts: one row per artifact with these metrics "
                   "(e.g. top1,R@1); with --json, a JSON list.")
@click.option("--mean", "with_mean", is_flag=True,
              help="With --metrics: add a row of each metric's mean +- standard deviation "
                   "over the artifacts (e.g. the three official splits), as papers print.")
def inspect_command(artifacts, as_json, videos, keys, with_mean):
    """Pretty-print the manifest of ARTIFACT(s) (`-` reads a path from standard input)."""
    paths = [resolve_input(a) for a in artifacts]
    if with_mean and not keys:
        raise click.UsageError("--mean needs --metrics KEY,...")
    if keys:
        _compare(paths, [k.strip() for k in keys.split(",") if k.strip()], as_json,
                 with_mean)
        return
    for path in paths:
        _show(path, load_manifest(path), as_json, videos)


def _compare(paths, keys, as_json, with_mean=False):
    rows = []
    for path in paths:
        metrics = load_manifest(path)["metrics"]
        rows.append({"artifact": path, **{k: metrics.get(k) for k in keys}})
    if with_mean:
        rows.append({"artifact": f"mean +- std over {len(paths)}",
                     **{k: _mean_text([r[k] for r in rows], as_json) for k in keys}})
    if as_json:
        click.echo(json.dumps(finite(rows), indent=1, default=str))
        return
    from rich.console import Console
    table = _table("artifact", *(escape(k) for k in keys), box=None)
    for row in rows:
        table.add_row(escape(row["artifact"]), *(
            f"{v:.3f}" if isinstance(v, float) else escape(str(v))
            for v in list(row.values())[1:]))
    Console(soft_wrap=True).print(table)


def _mean_text(values, as_json):
    """Mean +- population standard deviation of the numbers among ``values``."""
    numbers = [float(v) for v in values if isinstance(v, (int, float))
               and not isinstance(v, bool) and math.isfinite(v)]
    if not numbers:
        return None
    mean = sum(numbers) / len(numbers)
    std = math.sqrt(sum((v - mean) ** 2 for v in numbers) / len(numbers))
    return {"mean": mean, "std": std, "n": len(numbers)} if as_json else \
        f"{mean:.3f} +- {std:.3f}"


def _show(path, manifest, as_json, videos):
    if as_json:
        click.echo(json.dumps(finite(manifest), indent=1, default=str))
        return
    from rich.console import Console

    console = Console(soft_wrap=True)
    head = _table("", "", show_header=False, box=None, pad_edge=False)
    # Every value is shown as text (escaped: a manifest is anyone's JSON, and rich would
    # read "[...]" in it as markup).
    for key in ("kind", "id", "created", "vssl_version"):
        head.add_row(f"[bold]{key}[/]", escape(str(manifest[key])))
    head.add_row("[bold]path[/]", escape(path))
    head.add_row("[bold]command[/]", escape(" ".join(map(str, manifest["command"]))))
    env = manifest["environment"]
    head.add_row("[bold]environment[/]",
                 escape(", ".join(f"{k} {v}" for k, v in env.items() if v)))
    for item in manifest["inputs"]:
        item = item if isinstance(item, dict) else {"path": item}
        head.add_row("[bold]input[/]", escape(f"{item.get('kind', '?')} {item.get('path')} "
                                              f"{item.get('id') or ''}".strip()))
    console.print(head)
    console.print("[bold]config[/]", escape(json.dumps(manifest["config"], indent=1,
                                                        default=str)))
    if manifest["metrics"]:
        metrics = _table("metric", "value", box=None)
        for k, v in manifest["metrics"].items():
            metrics.add_row(escape(str(k)), escape(str(v)))
        console.print(metrics)
    if manifest["kind"] != "frames" and os.path.isdir(path):
        _run_summary(console, Path(path), manifest)
    table = manifest["outputs"].get("videos")
    if table is not None:
        _video_summary(console, manifest["outputs"], table, videos)


def _run_summary(console, folder: Path, manifest: dict) -> None:
    """What a person looks at first: the last metrics record, the time it took, and where
    the pictures are (the run's curves, its evaluations' figures)."""
    log = manifest["outputs"].get("metrics_log")
    last = _last_record(folder / artifact_file(log, folder)) if log else None
    if last:
        console.print("[bold]last record[/] " + escape(", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in last.items())))
    wall = manifest["metrics"].get("wall_s")
    # A manifest is not trusted: NaN, infinity or a negative time is not a duration.
    if isinstance(wall, (int, float)) and math.isfinite(wall) and wall >= 0:
        console.print(f"[bold]training time[/] {_duration(wall)}")
    pictures = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png")
                      if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if pictures:
        console.print(f"[bold]pictures[/] {escape(', '.join(pictures))} (in "
                      f"{escape(str(folder))})")
    if (folder / "tensorboard").is_dir():
        console.print(f"[bold]tensorboard[/] tensorboard --logdir {escape(str(folder))}")


def _last_record(path: Path) -> dict | None:
    try:
        lines = read_text(path, "metrics log", LOG).splitlines()
    except (OSError, VsslError):
        return None
    for line in reversed(lines):
        try:
            record = loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            return record
    return None


def _duration(seconds: float) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {sec:02d}s" if hours else f"{minutes}m {sec:02d}s"


def _video_summary(console, outputs, table, list_all):
    from collections import Counter


    splits = Counter((r.get("split") or "-") for r in table if r["status"] == "ok")
    console.print(f"[bold]videos[/] {len(table)} ({sum(splits.values())} ok), classes "
                  f"{len(outputs.get('classes', []))}, splits "
                  + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))
    failed = [r for r in table if r["status"] != "ok" or r.get("partial")]
    shown = table if list_all else failed
    if shown:
        rows = _table("id", "label", "split", "frames", "size", "status", box=None)
        for r in shown:
            rows.add_row(*(escape(str(v)) for v in (
                r["id"], r.get("label") or "-", r.get("split") or "-", r.get("frames", "-"),
                f"{r.get('width')}x{r.get('height')}" if "width" in r else "-")),
                _status(r))
        console.print(rows)


def _table(*headers, **kw):
    """A rich table that folds long values onto more lines instead of cutting them."""
    from rich.table import Table
    table = Table(**kw)
    for h in headers:
        table.add_column(h, overflow="fold")
    return table


def _status(record: dict) -> str:
    if record["status"] != "ok":
        return f"[red]{escape(str(record.get('error')))}[/]"
    if record.get("partial"):
        said = "; ".join(record.get("warnings", [])[:2])
        return f"[yellow]partial: {escape(said)}[/]"
    return "ok"
