"""bench/results/README.md: every benchmark's headline figure as a ratio to its limit.

Reads the JSON files the benchmarks wrote (extract, store, train, retrieval, methods,
shortcut, gpu, quality) and writes one markdown table, so `make bench` ends with a readable
summary.
"""
from __future__ import annotations

import json

from common import RESULTS, top1_text
from quality import table as quality_table


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def rows() -> list[tuple[str, str, str, str]]:
    out = []
    if (e := _load("extract")):
        r = e["ratios"]
        out += [("extract, 1 worker", "plain `ffmpeg -f null`, equal threads",
                 f"{r['vssl_j1_vs_ffmpeg_equal_threads']:.2f}x", ">= 0.8x"),
                ("extract scaling, 2 workers vs 1", "linear (2x); ffmpeg's own: "
                 f"{r['ffmpeg_scaling_one_per_core_vs_seq']:.2f}x",
                 f"{r['scaling_j2_vs_j1']:.2f}x", "~2x"),
                ("extract, 2 workers", "2 single-thread ffmpegs (`-f null`)",
                 f"{r['vssl_j2_vs_ffmpeg_one_per_core']:.2f}x", "~0.8x"),
                ("extract peak memory, 10x longer video", "same memory",
                 f"{e['peak_rss_mib']['ratio_long_vs_short']:.2f}x", "~1x")]
    if (e := _load("extract_real")) and "wall_s" in e:
        for key, what, limit in (
                ("vssl_zarr_vs_ffmpeg_null", "extract, 2 workers, real footage",
                 "2 single-thread ffmpegs (`-f null`)"),
                ("vssl_zarr_vs_ffmpeg_null_video_only", "  the same", "... with `-an`"),
                ("vssl_jpeg_vs_ffmpeg_rawframes", "extract `--codec jpeg`, real footage",
                 "2 ffmpegs writing JPEG frame folders")):
            out.append((what, limit, _ratio_text(e["throughput_vs_ffmpeg"][key]), ">= 0.95x"))
    if (t := _load("train")) and "methods" in t:
        for name, m in t["methods"].items():
            out.append((f"pretrain step, {name} (full data path)",
                        "the same step, augmentation replayed, batch on the device",
                        f"{_ratio_text(m['ratio'])} ({t['device']})", ">= 0.95x"))
            share = m["augment_ms_per_step"] / (m["augment_ms_per_step"]
                                                + m["compute_ms_per_step"])
            out.append(("  of which augmentation / waiting for data", "0 (hidden)",
                        f"{share:.1%} / {m['data_wait_share']:.1%}", "-"))
        out.append(("clip read from the store", "decoding the mp4",
                    f"{t['read_vs_decode']:.1f}x", ">= 10x"))
    if (r := _load("retrieval")):
        out.append(("exact retrieval search", "bare matmul, same sizes",
                    f"{r['search_vs_matmul']:.2f}x ({r['config']['gallery']} videos, "
                    f"{r['device']})", "~1x"))
    if (g := _load("gpu")):
        for name, row in g["methods"].items():
            out.append((f"{name} step on {g['device']} (AMP {'on' if g['amp'] else 'off'}, "
                        f"{row['backbone']}, {g['size']} px)", "-",
                        f"{row['clips_per_s']:.0f} clips/s, {row['gpu_mem_mib']:.0f} MiB, "
                        f"data wait {row['data_wait']:.1%}", "-"))
    # The main table, reruns of some methods on longer schedules (methods_*ep.json) and TCE
    # on varied synth's order-free subset, then the photo benchmark (issue 26: motion
    # separates the classes, appearance misleads) and its order-free subset (the test for
    # TCE, a frame model), then the sets whose per-frame cue of class is removed (free
    # placement), their ablations and order-free subset (TCE also at SimCLR's seconds).
    longer = sorted(p.stem for p in RESULTS.glob("methods_*ep.json"))
    for m in filter(None, map(_load, ["methods", *longer, "methods_tce_orderfree_varied",
                                      "methods_photo", "methods_photo_orderfree",
                                      "methods_photo_free", "methods_plain_free",
                                      "methods_plain_free_ablation",
                                      "methods_plain_free_ctrlaug_ablation",
                                      "methods_plain_free_orderfree",
                                      "methods_plain_free_orderfree_eqsec"])):
        for name, row in m["methods"].items():
            seeds = f", {len(m['seeds'])} seeds" if len(m.get("seeds", [0])) > 1 else ""
            epochs = row.get("epochs", m["epochs"])
            subset = ", order-free" if m.get("order_free") else ""
            subset += ", free placement" if m.get("placement") == "free" else ""
            out.append((f"{name} linear probe (synth, {m['appearance']}{subset}, {epochs} epochs"
                        f"{seeds})", "random init, same encoder",
                        f"{top1_text(row, 'pretrained')} vs {top1_text(row, 'random')}",
                        "higher"))
    # The learning-quality guard's reference (bench/quality.py): held-out motion.
    if (q := _load("quality")):
        rand = q["methods"].get("random")
        for name, r in q["methods"].items():
            if name == "random" or rand is None:
                continue
            m = r["mean"]
            out.append((f"{name} on held-out motion ({r['epochs']} epochs, "
                        f"{len(r['seeds'])} seeds; probe 3 clips / 1 clip, R@1)",
                        f"random init {rand['mean']['top1']:.3f} / "
                        f"{rand['mean']['top1_1clip']:.3f} / {rand['mean']['R@1']:.3f}",
                        f"{m['top1']:.3f} +- {r['std']['top1']:.3f} / {m['top1_1clip']:.3f} / "
                        f"{m['R@1']:.3f}", "no lower (make bench-quality)"))
    # Whether the labels teach the same encoder a set at all (bench/learnable.py).
    for path in sorted(RESULTS.glob("learnable_*.json")):
        m = json.loads(path.read_text())
        for r in m["rows"]:
            out.append((f"supervised from random init, {r['variant']}, {r['epochs']} epochs, "
                        f"seed {r['seed']} ({path.stem.removeprefix('learnable_')})",
                        "chance (1 / classes)", f"test top-1 {r['test_top1']:.3f}, train loss "
                        f"{r['train_loss']:.2f}", "well above chance"))
    # Which cue the features use (bench/shortcut.py): the same clips with motion removed.
    for path in sorted(RESULTS.glob("shortcut_*.json")):
        m = json.loads(path.read_text())
        for name, r in m["means"].items():
            out.append((f"{name} features, motion removed (still clips, "
                        f"{path.stem.removeprefix('shortcut_')})",
                        "the same clips moving",
                        f"same-video R@1 {r['same_video_r1_still']:.2f} vs "
                        f"{r['same_video_r1_moving']:.2f}, class 1-NN "
                        f"{r['class_1nn_still']:.2f} vs {r['class_1nn_moving']:.2f}",
                        "lower: motion used"))
    return out


def _ratio_text(r: dict) -> str:
    """A ratio measured over several rounds: median (range)."""
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def extract_real_table(e: dict) -> str:
    """bench/extract.py --real: frames/s from the median wall time, and each vssl row's
    throughput ratio to its ffmpeg limit (median and range of the alternated pairs)."""
    import statistics

    def fps(k):
        return f"{e['frames'] / statistics.median(e['wall_s'][k]):.0f}"

    def ratio(k):
        return _ratio_text(e["throughput_vs_ffmpeg"][k])
    return "\n".join([
        f"| extraction ({e['clips']} packaged camera clips, {e['frames']} frames, "
        f"{e['short_side']} px, {e['cores']} cores) | frames/s | vs the limit |",
        "|---|---|---|",
        f"| `ffmpeg -f null`, one per core (the limit; decodes the sound too) | "
        f"{fps('ffmpeg_null')} | 1 |",
        f"| `ffmpeg -an -f null`, one per core (video only: a second limit) | "
        f"{fps('ffmpeg_null_video_only')} | 1 |",
        f"| `vssl extract -j {e['cores']}` (Zarr) | {fps('vssl_zarr')} | "
        f"{ratio('vssl_zarr_vs_ffmpeg_null')}; {ratio('vssl_zarr_vs_ffmpeg_null_video_only')}"
        " of video only |",
        f"| ffmpeg writing JPEG frame folders (`-q:v {e['ffmpeg_jpeg_q']}`), one per core "
        f"(the limit) | {fps('ffmpeg_rawframes')} | 1 |",
        f"| `vssl extract -j {e['cores']} --codec jpeg` | {fps('vssl_jpeg')} | "
        f"{ratio('vssl_jpeg_vs_ffmpeg_rawframes')} |"])


def headline_tables() -> dict[str, str]:
    """The README's results tables, from the stored JSON (a test keeps them equal)."""
    tables = {}
    if (e := _load("extract")):
        f, r = e["frames_per_s"], e["ratios"]
        tables["extract"] = "\n".join([
            "| extraction (16 generated 320x240 H.264 videos, 128 px, 2 cores) | frames/s | "
            "vs ffmpeg |", "|---|---|---|",
            f"| `ffmpeg -f null`, one per core (the limit) | {f['ffmpeg_null_one_per_core']:.0f}"
            " | 1 |",
            f"| `vssl extract -j 2` (Zarr) | {f['vssl_zarr_j2']:.0f} | "
            f"{r['vssl_j2_vs_ffmpeg_one_per_core']:.2f}x |",
            f"| `vssl extract -j 2` (HDF5) | {f['vssl_hdf5_j2']:.0f} | "
            f"{r['hdf5_j2_vs_ffmpeg_one_per_core']:.2f}x |"])
    if (e := _load("extract_real")) and "wall_s" in e:
        tables["extract_real"] = extract_real_table(e)
    if (s := _load("store_lossy")):
        b, c = s["bytes_per_frame"], s["clips_per_s"]
        names = [("rawframes", "JPEG frame folders (PIL, q90; the limit)"),
                 ("jpeg.zarr", "Zarr `--codec jpeg`"), ("jpeg.h5", "HDF5 `--codec jpeg`"),
                 ("lossless.zarr", "Zarr lossless (default)")]
        tables["store"] = "\n".join(
            [f"| store ({s['frames']} frames of real footage, 128 px) | bytes/frame | "
             "vs rawframes | 16-frame clips/s, one core |", "|---|---|---|---|"]
            + [f"| {label} | {b[k]:,.0f} | {b[k] / b['rawframes']:.2f}x | {c[k]:.0f} |"
               for k, label in names])
    if (m := _load("methods_plain_free")):
        tables["methods"] = "\n".join(
            [f"| method ({m['epochs']} epochs, {len(m['seeds'])} seeds) | linear probe top-1 "
             "| random init, same encoder |", "|---|---|---|"]
            + [f"| {name} | {top1_text(row, 'pretrained')} | {top1_text(row, 'random')} |"
               for name, row in m["methods"].items()])
    if (q := _load("quality")):
        tables["quality"] = quality_table(q["methods"])
    return tables


def main():
    lines = ["# Benchmark summary", "", "Written by `bench/report.py` from the JSON files here.",
             "", "| measure | limit / baseline | result | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows()]
    (RESULTS / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
