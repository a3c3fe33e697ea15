"""Confusion counts and per-class F1 in scikit-learn's definitions (which the tests anchor to).

Shared by :func:`~mmfuse.metrics.classification.classification_metrics` and the vectorised kernels of
:mod:`mmfuse.metrics.significance`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["confusion_counts", "f1_per_class"]


def confusion_counts(yt: np.ndarray, yp: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """``[..., C, C]`` confusion counts (true class first) of class-index arrays ``[..., M]`` (broadcast together).

    ``C`` is ``n_classes``, or the largest label + 1 when None. One bincount covers every leading row.

    Example:
        >>> confusion_counts(np.array([0, 1, 1]), np.array([0, 0, 1])).tolist()
        [[1, 0], [1, 1]]
    """
    if n_classes is None:
        n_classes = int(max(yt.max(initial=0), yp.max(initial=0))) + 1
    shape = np.broadcast_shapes(yt.shape, yp.shape)
    n_rows = math.prod(shape[:-1])
    rows = np.arange(n_rows, dtype=np.int64).reshape(*shape[:-1], 1)
    codes = (rows * n_classes + yt) * n_classes + yp  # [..., M]
    counts = np.bincount(codes.ravel(), minlength=n_rows * n_classes * n_classes)
    return counts.reshape(*shape[:-1], n_classes, n_classes)


def f1_per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class F1 (0 where a class is neither true nor predicted), supports and predicted counts: ``[..., C]``.

    Example:
        >>> f1, support, predicted = f1_per_class(np.array([[1, 0], [1, 1]]))
        >>> f1.round(4).tolist(), support.tolist(), predicted.tolist()
        ([0.6667, 0.6667], [1.0, 2.0], [2.0, 1.0])
    """
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    support = cm.sum(axis=-1).astype(np.float64)
    predicted = cm.sum(axis=-2).astype(np.float64)
    denom = support + predicted
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1, support, predicted
