"""Every method's training step on a GPU under AMP with channels-last: clips/s and memory.

For each method: a short `vssl pretrain` (``--steps`` steps, the first third discarded as
warm-up) of the method's full-width backbone (r3d18; resnet18 for TCE) at 112 px on a synth
store, with the engine's CUDA defaults (AMP bf16/fp16, channels-last, auto loader workers)
and the method's synth settings from bench/methods.py. Records the engine's clips/s over the
last window, the share of it spent waiting for data, and peak CUDA memory. ``--no-amp``
runs the same in fp32 for comparison.

Without CUDA it exits 0 having measured nothing, unless ``--device cpu`` asks for a smoke
run (tiny models, a few steps, nothing saved) that checks the script itself.
Writes bench/results/gpu.json (or gpu_<tag>.json) and prints a markdown table.
Usage: python bench/gpu.py [--methods simclr,tce] [--steps 30] [--batch 32] [--no-amp]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import last_record, save
from methods import SETTINGS, method_of, vssl

from vssl_cli.engine.config import resolve
from vssl_cli.methods import method_class


def backbone(name: str, tiny: bool) -> str:
    """The method's own default backbone (the engine's choice: resnet18 for TCE's frames)."""
    base = resolve(method_class(method_of(name)).Params, None, {}, ())["backbone"]
    return f"{base}-tiny" if tiny else base


def settings(name: str, tiny: bool) -> list:
    """bench/methods.py's synth settings, with the backbone swapped for this run's."""
    out, items = [], list(SETTINGS[name])
    while items:
        flag = items.pop(0)
        if flag == "--backbone":
            items.pop(0)
        else:
            out.append(flag)
    return [*out, "--backbone", backbone(name, tiny)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(SETTINGS))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run")
    ap.add_argument("--no-amp", action="store_true", help="fp32 instead of AMP")
    ap.add_argument("--work", default=None, help="keep the synth store and runs here")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device here: nothing measured (--device cpu runs a smoke check)")
        return
    tiny = not cuda
    steps, batch, size = (args.steps, args.batch, args.size) if cuda else (3, 4, 64)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        synth = Path(vssl("synth", work / "synth", "--videos-per-class", 10))
        frames = Path(vssl("extract", synth, "-o", work / "frames.zarr", "--short-side",
                           round(size * 8 / 7)))
        rows = {}
        for name in args.methods.split(","):
            method = [] if "--method" in SETTINGS[name] else ["--method", name]
            run = Path(vssl("pretrain", frames, "-o", work / f"gpu-{name}", *method,
                            *settings(name, tiny), "--device", args.device,
                            "--amp", "off" if args.no_amp else "auto",
                            "--batch-size", batch, "--max-steps", steps,
                            "--log-every", max(1, steps // 3), "--warmup-epochs", 0,
                            "--set", f"aug.size={size}", "--force"))
            record = last_record(run)
            rows[name] = {"backbone": backbone(name, tiny), "clips_per_s": record["clips_per_s"],
                          "data_wait": record["data_wait"],
                          "gpu_mem_mib": record.get("gpu_mem_mib")}
            print(f"{name}: {rows[name]}", flush=True)
    device = torch.cuda.get_device_name() if cuda else "cpu (smoke run, tiny models)"
    result = {"device": device, "torch": torch.__version__, "amp": not args.no_amp,
              "channels_last": cuda, "batch": batch, "size": size, "steps": steps,
              "methods": rows}
    path = save("gpu" + (f"_{args.tag}" if args.tag else ""), result) if cuda else \
        "(smoke run: not saved)"
    print("| method | backbone | clips/s | data wait | peak memory MiB |\n|---|---|---|---|---|")
    for name, r in rows.items():
        mem = f"{r['gpu_mem_mib']:.0f}" if r["gpu_mem_mib"] is not None else "-"
        print(f"| {name} | {r['backbone']} | {r['clips_per_s']:.0f} | "
              f"{100 * r['data_wait']:.1f}% | {mem} |")
    print(path)


if __name__ == "__main__":
    main()
