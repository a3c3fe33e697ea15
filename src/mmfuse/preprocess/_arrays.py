"""Input checks and small array helpers shared by the normalisers (numpy arrays and torch tensors alike).

Everything here is private. The helpers work on either backend so that a normaliser written once serves
``np.ndarray`` records from :mod:`mmfuse.data` and ``torch.Tensor`` batches alike.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from mmfuse.errors import DataError

__all__ = [
    "ArrayT",
    "as_param",
    "check_input",
    "clip",
    "is_floating",
    "row_norms",
    "to_float",
    "to_numpy",
    "where_rows",
]

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)


def to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array (a torch tensor is detached and moved to the CPU first)."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def is_floating(x: np.ndarray | Tensor) -> bool:
    """Whether ``x`` holds floating-point numbers."""
    if isinstance(x, Tensor):
        return bool(x.is_floating_point())
    return bool(np.issubdtype(x.dtype, np.floating))


def to_float(x: ArrayT) -> ArrayT:
    """Return ``x`` unchanged when it is floating point, otherwise as float32."""
    if is_floating(x):
        return x
    if isinstance(x, Tensor):
        return x.to(torch.float32)
    return x.astype(np.float32)


def as_param(value: np.ndarray, like: ArrayT) -> ArrayT:
    """Return a fitted numpy parameter in the backend of ``like`` (same dtype and device for a tensor).

    For numpy inputs the parameter stays float64, so the arithmetic runs in double precision and the caller
    casts the result back to the input dtype.
    """
    if isinstance(like, Tensor):
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value


def where_rows(mask: ArrayT, x: ArrayT) -> ArrayT:
    """Keep the rows of ``x`` [S, D] where ``mask`` [S] is True and make the others exactly zero.

    This selects, it never multiplies, so a NaN or inf in a missing row cannot leak into the result.
    """
    if isinstance(x, Tensor):
        return torch.where(mask[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    return np.where(mask[:, None], x, np.zeros((), dtype=x.dtype))


def clip(x: ArrayT, bound: float) -> ArrayT:
    """Clip ``x`` to ``[-bound, bound]``."""
    if isinstance(x, Tensor):
        return torch.clamp(x, -bound, bound)
    return np.clip(x, -bound, bound)


def row_norms(x: ArrayT) -> ArrayT:
    """Euclidean norm of every row of ``x`` [S, D], shaped [S, 1] so that it broadcasts back."""
    if isinstance(x, Tensor):
        return torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return np.linalg.norm(x, axis=1, keepdims=True)


def _shape(x: np.ndarray | Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def check_input(
    owner: str,
    method: str,
    X: Any,
    mask: Any,
    n_features: int | None,
) -> tuple[Any, Any]:
    """Validate ``X`` [S, D] and ``mask`` [S] for ``owner.method`` and return them in one backend.

    Args:
        owner: Class name used in error messages.
        method: Method name used in error messages.
        X: Values ``[S, D]``: a torch tensor, a numpy array or anything :func:`numpy.asarray` accepts.
        mask: ``[S]`` bool (True = present) or None for "every row is present".
        n_features: The ``D`` the owner was fitted with, or None while fitting.

    Returns:
        ``(X, mask)``: both tensors (mask on X's device) when ``X`` is a tensor, otherwise both numpy arrays.

    Raises:
        DataError: on a wrong rank, a non-numeric dtype, a feature-count mismatch, a mask of the wrong length or
            dtype, or a NaN/inf in a row the mask marks present (the first such row is named).
    """
    where = f"The 'X' parameter of {owner}.{method}"
    if not isinstance(X, Tensor):
        X = np.asarray(X)
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or np.issubdtype(X.dtype, np.complexfloating):
            raise DataError(f"{where} must hold real numbers. Got dtype {X.dtype} instead.")
    elif X.is_complex():
        raise DataError(f"{where} must hold real numbers. Got dtype {X.dtype} instead.")
    if X.ndim != 2:
        raise DataError(f"{where} must be a 2-D array [S, D] (steps x features). Got shape {_shape(X)} instead.")
    n_rows, n_cols = _shape(X)
    if n_features is not None and n_cols != n_features:
        raise DataError(
            f"{owner} was fitted on D={n_features} features, but the 'X' passed to {owner}.{method} "
            f"has D={n_cols} (shape {_shape(X)})."
        )

    if mask is None:
        mask_np = np.ones(n_rows, dtype=bool)
    else:
        mask_np = to_numpy(mask)
        if mask_np.dtype != np.bool_:
            raise DataError(
                f"The 'mask' parameter of {owner}.{method} must be a bool array (True = present). "
                f"Got dtype {mask_np.dtype} instead."
            )
        if mask_np.shape != (n_rows,):
            raise DataError(
                f"The 'mask' parameter of {owner}.{method} must have shape ({n_rows},) to match X of shape "
                f"{_shape(X)}. Got shape {tuple(mask_np.shape)} instead."
            )

    if is_floating(X):
        finite = to_numpy(torch.isfinite(X).all(dim=1)) if isinstance(X, Tensor) else np.isfinite(X).all(axis=1)
        bad = np.flatnonzero(mask_np & ~finite)
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{where} holds a non-finite value (NaN or inf) at row {row}, which the mask marks "
                f"present ({bad.size} such row(s) in all). Mark those rows missing in the mask or clean the data."
            )

    if isinstance(X, Tensor):
        return X, torch.as_tensor(mask_np, device=X.device)
    return X, mask_np
