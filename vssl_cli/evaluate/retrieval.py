"""Exact cosine nearest-neighbour search and recall at k.

Search is batched matrix products over query chunks with a running top-k, so a
100k-video gallery needs memory for one (chunk x gallery) score block only; faiss's exact
inner-product index is used instead when it is installed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

KS = (1, 5, 10, 20)


def nearest(queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 1024,
            device: str | torch.device = "cpu", use_faiss: bool = True
            ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine similarities and gallery indices for each query, best first."""
    k = min(k, len(gallery))
    q = F.normalize(torch.from_numpy(np.ascontiguousarray(queries, np.float32)), dim=1)
    g = F.normalize(torch.from_numpy(np.ascontiguousarray(gallery, np.float32)), dim=1)
    if use_faiss:
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None:
            index = faiss.IndexFlatIP(g.shape[1])
            index.add(g.numpy())
            scores, idx = index.search(q.numpy(), k)
            return scores, idx
    g = g.to(device)
    scores, idx = [], []
    for start in range(0, len(q), chunk):
        sims = q[start:start + chunk].to(device) @ g.T
        s, i = sims.topk(k, dim=1)
        scores.append(s.cpu())
        idx.append(i.cpu())
    return torch.cat(scores).numpy(), torch.cat(idx).numpy()


def recall_at(query_labels: np.ndarray, gallery_labels: np.ndarray, idx: np.ndarray,
              ks=KS) -> dict[str, float]:
    """R@k: share of queries with a same-class video among their k nearest."""
    hits = gallery_labels[idx] == query_labels[:, None]
    return {f"R@{k}": float(hits[:, :k].any(1).mean()) for k in ks if k <= idx.shape[1]}
