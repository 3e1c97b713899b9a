"""Retrieval search speed against the matrix-multiply limit.

Exact top-k cosine search of Q queries over a G-video gallery (D dims) with
``vssl_cli.evaluate.retrieval.nearest`` (chunked matmul + running top-k), against the
bare matrix product Q x G of the same sizes on the same device: the product is the work
that cannot be avoided, so ratio = matmul time / search time (1.0 = no overhead).

Writes bench/results/retrieval.json (or retrieval_<tag>.json) and prints the ratio.
Usage: python bench/retrieval.py [--gallery 100000] [--queries 2000] [--dim 512]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from common import save, timed

from vssl_cli.engine.device import resolve_device
from vssl_cli.evaluate.retrieval import nearest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((args.gallery, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)

    def search():
        nearest(queries, gallery, args.k, device=dev, use_faiss=False)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    g = torch.from_numpy(gallery).to(dev)
    q = torch.from_numpy(queries).to(dev)

    def matmul():
        (q @ g.T).sum().item()

    t_search, t_mm = timed(search), timed(matmul)
    flops = 2 * args.queries * args.gallery * args.dim
    result = {"config": vars(args), "device": str(dev), "search_s": t_search, "matmul_s": t_mm,
              "search_gflop_s": flops / t_search / 1e9, "matmul_gflop_s": flops / t_mm / 1e9,
              "search_vs_matmul": t_mm / t_search, "queries_per_s": args.queries / t_search}
    path = save(f"retrieval{'_' + args.tag if args.tag else ''}", result)
    print(f"search {t_search:.2f}s vs bare matmul {t_mm:.2f}s on {dev}: "
          f"{result['search_vs_matmul']:.2f}x of the matmul limit "
          f"({result['queries_per_s']:.0f} queries/s over {args.gallery} videos) -> {path}")


if __name__ == "__main__":
    main()
