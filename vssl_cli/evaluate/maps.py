"""2-D maps of feature vectors for people to look at (t-SNE from scikit-learn)."""
from __future__ import annotations

import numpy as np


def map_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) points: t-SNE on the standardised features (perplexity
    capped for small sets, as t-SNE needs more points than its perplexity); a set too small
    for t-SNE (under 5 points) gets its first two principal components."""
    x = np.asarray(x, np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    if len(x) < 5:
        if len(x) < 2:
            return np.zeros((len(x), 2))
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        return np.pad(u[:, :2] * s[:2], ((0, 0), (0, max(0, 2 - min(u.shape)))))
    from sklearn.manifold import TSNE
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed,
                learning_rate="auto").fit_transform(x)
