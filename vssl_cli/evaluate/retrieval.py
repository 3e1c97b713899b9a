"""Exact cosine nearest-neighbour search and recall at k.

Search is tiled matrix products (query chunks x gallery blocks) with a running top-k, so a
100k-video gallery needs memory for one small score tile only; faiss's exact inner-product
index is used instead when it is installed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

KS = (1, 5, 10, 20)


def nearest(queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 1024,
            device: str | torch.device = "cpu", use_faiss: bool = True,
            block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine similarities and gallery indices for each query, best first.

    The search walks tiles of ``chunk`` queries x ``block`` gallery videos (4096 on CPU):
    each gallery block is normalised once, while it is in cache, and each score tile is cut
    to k candidates per query before the next, merged into a running top-k. The scores are
    then read from cache, never written out whole and read back; the matrix product is the
    only pass over memory that is left (``bench/retrieval.py``)."""
    k = min(k, len(gallery))
    q = F.normalize(torch.from_numpy(np.ascontiguousarray(queries, np.float32)), dim=1)
    g = torch.from_numpy(np.ascontiguousarray(gallery, np.float32))
    if use_faiss:
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None:
            index = faiss.IndexFlatIP(g.shape[1])
            index.add(F.normalize(g, dim=1).numpy())
            scores, idx = index.search(q.numpy(), k)
            return scores, idx
    device = torch.device(device)
    block = block or (4096 if device.type == "cpu" else 1 << 16)
    q = q.to(device)
    best = torch.full((len(q), 0), -torch.inf, device=device)
    where = torch.zeros((len(q), 0), dtype=torch.long, device=device)
    for start in range(0, len(g), block):
        part = F.normalize(g[start:start + block].to(device), dim=1)
        kb = min(k, len(part))
        tiles = [(q[s:s + chunk] @ part.T).topk(kb, dim=1) for s in range(0, len(q), chunk)]
        values = torch.cat([best, torch.cat([t.values for t in tiles])], 1)
        indices = torch.cat([where, torch.cat([t.indices for t in tiles]) + start], 1)
        best, pick = values.topk(min(k, values.shape[1]), dim=1)
        where = indices.gather(1, pick)
    return best.cpu().numpy(), where.cpu().numpy()


def recall_at(query_labels: np.ndarray, gallery_labels: np.ndarray, idx: np.ndarray,
              ks=KS) -> dict[str, float]:
    """R@k: share of queries with a same-class video among their k nearest."""
    hits = gallery_labels[idx] == query_labels[:, None]
    return {f"R@{k}": float(hits[:, :k].any(1).mean()) for k in ks if k <= idx.shape[1]}
