"""Separability: 2-D maps (PCA, t-SNE, UMAP) of representations and silhouette scores by label.

The representations are those a model computes after each unimodal encoder and after the fusion
(:meth:`MultimodalModel.encode` / :meth:`MultimodalModel.fuse`), one row per labelled sample or step. The
silhouette score is computed in the representation space itself (not on the 2-D map), with Euclidean distance.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

__all__ = ["EMBEDDING_METHODS", "embed_2d", "separability_score", "subsample"]

logger = logging.getLogger(__name__)

EMBEDDING_METHODS = ("pca", "tsne", "umap")


def subsample(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``min(n, k)`` rows drawn without replacement.

    Example:
        >>> subsample(5, 10).tolist(), len(subsample(100, 10))
        ([0, 1, 2, 3, 4], 10)
    """
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def separability_score(x: Any, labels: Any) -> float:
    """Silhouette score of ``x`` ``[N, H]`` grouped by ``labels`` ``[N]`` (NaN with fewer than 2 classes).

    Example:
        >>> x = np.array([[0.0], [0.1], [5.0], [5.1]])
        >>> round(separability_score(x, [0, 0, 1, 1]), 2)
        0.98
    """
    from sklearn.metrics import silhouette_score

    a = np.asarray(x, dtype=np.float64)
    y = np.asarray(labels)
    n_labels = len(np.unique(y))
    if a.ndim != 2 or a.shape[0] != y.shape[0]:
        raise ValueError(f"separability_score needs x [N, H] and labels [N]. Got {list(a.shape)} and {list(y.shape)}.")
    if n_labels < 2 or n_labels >= a.shape[0] or not np.isfinite(a).all():
        return math.nan
    return float(silhouette_score(a, y, metric="euclidean"))


def embed_2d(x: Any, method: str, seed: int = 0) -> tuple[np.ndarray | None, str]:
    """A 2-D map ``[N, 2]`` of ``x`` ``[N, H]`` by ``"pca"``, ``"tsne"`` or ``"umap"``.

    Returns:
        ``(points, note)``: points is None (with the reason in ``note``) when the method cannot run here, e.g.
        umap-learn is not installed or there are too few rows.

    Example:
        >>> pts, note = embed_2d(np.random.default_rng(0).normal(size=(20, 5)), "pca")
        >>> pts.shape, note
        ((20, 2), '')
    """
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"Unknown embedding method {method!r}. Valid: {', '.join(EMBEDDING_METHODS)}.")
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"embed_2d needs x of shape [N, H]. Got {list(a.shape)}.")
    n = a.shape[0]
    if n < 5:
        return None, f"{method}: too few rows ({n}) for a map"
    if a.shape[1] == 1:
        a = np.concatenate([a, np.zeros_like(a)], axis=1)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(a), ""
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=300)
        return tsne.fit_transform(a), ""
    try:
        import umap
    except Exception as exc:  # an absent or broken umap-learn (numba) must not stop the analysis
        return None, f"UMAP skipped: umap-learn could not be imported ({type(exc).__name__}: {exc})"
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(a)), ""
