"""Failure cases: frequent error patterns, the worst rows, and how far fusions agree on what they get wrong."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["error_agreement", "error_patterns", "worst_rows"]


def error_patterns(
    y_true: Any, y_pred: Any, class_names: Sequence[str] | None = None, top: int = 10
) -> list[dict[str, Any]]:
    """The most frequent ``true -> predicted`` confusions (errors only), most frequent first.

    Returns:
        Rows ``{"true", "predicted", "count", "share_of_errors", "share_of_class"}``; ties keep class order.

    Example:
        >>> error_patterns([0, 0, 1, 1, 2], [1, 1, 0, 1, 0], ["a", "b", "c"])[0]
        {'true': 'a', 'predicted': 'b', 'count': 2, 'share_of_errors': 0.5, 'share_of_class': 1.0}
    """
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(
            f"The 'y_true' and 'y_pred' of error_patterns must be 1-D of equal length. Got {t.shape} and {p.shape}."
        )
    n_classes = int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if class_names is not None:
        n_classes = max(n_classes, len(class_names))
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    counts = np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    support = counts.sum(axis=1)
    np.fill_diagonal(counts, 0)
    total = int(counts.sum())
    flat = np.argsort(-counts, axis=None, kind="stable")
    out = []
    for k in flat[:top]:
        i, j = divmod(int(k), n_classes)
        c = int(counts[i, j])
        if c == 0:
            break
        out.append(
            {
                "true": names[i],
                "predicted": names[j],
                "count": c,
                "share_of_errors": c / total,
                "share_of_class": c / int(support[i]),
            }
        )
    return out


def worst_rows(loss: Any, n: int = 10) -> np.ndarray:
    """Indices of the ``n`` rows with the largest loss, largest first (NaN last).

    Example:
        >>> worst_rows([0.1, 2.0, float("nan"), 0.5], 2).tolist()
        [1, 3]
    """
    v = np.asarray(loss, dtype=np.float64)
    key = np.where(np.isnan(v), -np.inf, v)
    return np.argsort(-key, kind="stable")[: max(int(n), 0)]


def error_agreement(wrong: Mapping[str, Any]) -> dict[str, Any]:
    """How far models agree on their errors, from a boolean ``[N]`` "wrong" vector per model.

    Returns:
        ``names``, ``jaccard`` ``[F, F]`` (intersection over union of the error sets; 1 on the diagonal, NaN when
        both sets are empty), ``n_errors`` per model, ``all_wrong`` (rows every model gets wrong), ``any_wrong``
        and ``wrong_count`` ``[N]`` (how many models get each row wrong).

    Example:
        >>> a = error_agreement({"x": [True, True, False], "y": [True, False, False]})
        >>> float(a["jaccard"][0, 1]), a["all_wrong"], a["any_wrong"]
        (0.5, 1, 2)
    """
    names = list(wrong)
    if not names:
        raise ValueError("The 'wrong' parameter of error_agreement must hold at least one model.")
    mat = np.stack([np.asarray(wrong[k], dtype=bool) for k in names])  # [F, N]
    inter = (mat[:, None, :] & mat[None, :, :]).sum(axis=-1).astype(np.float64)  # [F, F]
    union = (mat[:, None, :] | mat[None, :, :]).sum(axis=-1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(union > 0, inter / np.where(union > 0, union, 1.0), math.nan)
    count = mat.sum(axis=0)
    return {
        "names": names,
        "jaccard": jac,
        "n_errors": mat.sum(axis=1).tolist(),
        "all_wrong": int((count == len(names)).sum()),
        "any_wrong": int((count > 0).sum()),
        "wrong_count": count,
    }
