"""Input checks shared by the metric functions: numpy/torch in, validated float64/int64 arrays out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_labels", "as_probs", "as_targets", "same_length", "to_numpy"]

PROB_SUM_TOL = 1e-3


def to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` (numpy, torch or a sequence) as a numpy array, detached and on the CPU."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_labels(owner: str, name: str, y: Any) -> np.ndarray:
    """Return ``y`` as 1-D int64 class indices, refusing fractional, non-finite or non-numeric labels."""
    arr = to_numpy(y)
    if arr.ndim != 1:
        raise ValueError(f"The '{name}' parameter of {owner} must be 1-D [n]. Got shape {arr.shape}.")
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"The '{name}' parameter of {owner} must hold integer class indices. "
                f"Got {arr[i].item()!r} at index {i}."
            )
        return arr.astype(np.int64)
    raise ValueError(f"The '{name}' parameter of {owner} must hold integer class indices. Got dtype {arr.dtype}.")


def as_targets(owner: str, name: str, y: Any, *, max_ndim: int = 2) -> np.ndarray:
    """Return ``y`` as float64 ``[n]`` or ``[n, K]`` targets, refusing NaN, inf and non-numbers (the row named)."""
    arr = to_numpy(y)
    if arr.ndim < 1 or arr.ndim > max_ndim:
        shapes = "[n]" if max_ndim == 1 else "[n] or [n, K] (K targets)"
        raise ValueError(f"The '{name}' parameter of {owner} must be {shapes}. Got shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise ValueError(f"The '{name}' parameter of {owner} must hold real numbers. Got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=tuple(range(1, arr.ndim))))
    if bad.size:
        raise ValueError(
            f"The '{name}' parameter of {owner} holds NaN or inf at index {int(bad[0])} ({bad.size} such row(s))."
        )
    return arr


def same_length(owner: str, a: np.ndarray, b: np.ndarray, names: tuple[str, str] = ("y_true", "y_pred")) -> int:
    """Check that ``a`` and ``b`` have the same number of rows, at least one; return it."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} of {owner} must have the same length. "
            f"Got len({names[0]})={a.shape[0]} and len({names[1]})={b.shape[0]}."
        )
    if a.shape[0] == 0:
        raise ValueError(f"{owner} needs at least one sample; {names[0]} and {names[1]} are empty.")
    return int(a.shape[0])


def as_probs(owner: str, probs: Any, n: int, n_classes: int | None = None) -> np.ndarray:
    """Return ``[n, C]`` float64 probabilities, each row renormalised to sum to exactly 1.

    Raises:
        ValueError: on a wrong shape, values outside [0, 1], NaN, or rows that do not sum to 1 (within 1e-3).
    """
    p = to_numpy(probs).astype(np.float64)
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"The 'probs' parameter of {owner} must have shape [n={n}, C]. Got {p.shape}.")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(
            f"The 'probs' parameter of {owner} must have C={n_classes} columns (one per class). Got shape {p.shape}."
        )
    if p.shape[1] == 0:
        raise ValueError(f"The 'probs' parameter of {owner} must have at least one column (class).")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"The 'probs' parameter of {owner} must hold finite values in [0, 1].")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > PROB_SUM_TOL)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"Each row of the 'probs' parameter of {owner} must sum to 1 (softmax output). "
            f"Row {i} sums to {sums[i]:.6g}."
        )
    return p / sums[:, None]  # float32 softmax rows are off by ~1e-7; scikit-learn wants an exact sum
