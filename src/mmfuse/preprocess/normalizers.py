"""The built-in normalisers: z-score (continuous), L2 (embeddings) and identity (discrete streams).

All three accept ``[S, D]`` numpy arrays or torch tensors with an optional ``[S]`` bool presence mask, learn
only from present rows, and return missing rows as exact zeros (selected with ``where``, never multiplied).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, cast

import numpy as np
from torch import Tensor

from mmfuse.errors import DataError
from mmfuse.preprocess._arrays import ArrayT, as_param, check_input, clip, row_norms, to_float, to_numpy, where_rows
from mmfuse.preprocess.base import Normalizer, register_normalizer

__all__ = ["IdentityNormalizer", "L2Normalizer", "ZScoreNormalizer"]


def _check_positive(owner: str, name: str, value: float | None, *, optional: bool) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:  # type: ignore[arg-type]
        extra = " or None" if optional else ""
        raise ValueError(f"The '{name}' parameter of {owner} must be a positive finite number{extra}. Got {value!r}.")


@register_normalizer("zscore")
class ZScoreNormalizer(Normalizer):
    """Standardise every feature to zero mean and unit variance over the present training rows.

    ``z = (x - mean_) / scale_``. The mean and the (population, ``ddof=0``) standard deviation are computed in
    float64 from the rows the mask marks present. A feature that is constant over those rows (standard
    deviation within float rounding of zero) gets ``scale_ = 1``, so it maps to ``x - mean_`` (0 on the
    training data) instead of dividing by zero.

    Args:
        with_mean: Subtract the mean. If False, ``mean_`` is all zeros.
        with_std: Divide by the standard deviation. If False, ``scale_`` is all ones.
        clip: If set, z-scores are clipped to ``[-clip, clip]`` (guards a model against outliers at test
            time). Clipping is not undone by :meth:`inverse_transform`: clipped values come back at the clip
            boundary.

    Attributes:
        mean_: ``[D]`` float64 per-feature mean.
        scale_: ``[D]`` float64 per-feature divisor (standard deviation, 1 for constant features).
        n_features_in_: ``D``.
        n_samples_seen_: Number of present rows fitted on.

    Example:
        >>> import numpy as np
        >>> X = np.array([[1.0, 5.0], [3.0, 5.0], [np.nan, np.nan]], dtype=np.float32)
        >>> mask = np.array([True, True, False])
        >>> norm = ZScoreNormalizer().fit(X, mask)
        >>> norm.mean_, norm.scale_
        (array([2., 5.]), array([1., 1.]))
        >>> norm.transform(X, mask)
        array([[-1.,  0.],
               [ 1.,  0.],
               [ 0.,  0.]], dtype=float32)
    """

    fitted_arrays: ClassVar[tuple[str, ...]] = ("mean_", "scale_")
    is_invertible: ClassVar[bool] = True  # exactly, unless ``clip`` cut a value

    mean_: np.ndarray
    scale_: np.ndarray

    def __init__(self, *, with_mean: bool = True, with_std: bool = True, clip: float | None = None) -> None:
        _check_positive("ZScoreNormalizer", "clip", clip, optional=True)
        self.with_mean = bool(with_mean)
        self.with_std = bool(with_std)
        self.clip = None if clip is None else float(clip)

    def _fit(self, X: np.ndarray) -> None:
        mean = X.mean(axis=0)  # [D]
        std = X.std(axis=0)  # [D], population std around the mean
        # Constant features: a std at the level of float rounding of the mean counts as zero.
        constant = std <= 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
        self.mean_ = mean if self.with_mean else np.zeros_like(mean)
        self.scale_ = np.where(constant, 1.0, std) if self.with_std else np.ones_like(std)

    def _check_state(self) -> None:
        super()._check_state()
        if not (self.scale_ > 0).all():
            raise DataError(f"ZScoreNormalizer.scale_ must be positive everywhere. Got {self.scale_}.")

    def _transform(self, X: ArrayT) -> ArrayT:
        z = (X - as_param(self.mean_, X)) / as_param(self.scale_, X)
        return clip(z, self.clip) if self.clip is not None else z

    def _inverse_transform(self, X: ArrayT) -> ArrayT:
        return X * as_param(self.scale_, X) + as_param(self.mean_, X)


@register_normalizer("l2")
class L2Normalizer(Normalizer):
    """Scale every present row to unit Euclidean length (for embedding streams).

    ``x / max(||x||, eps)``: a row of zeros stays zero, and a row whose norm is below ``eps`` is divided by
    ``eps``. The normaliser learns nothing from the data except ``D``; ``fit`` still checks the training rows
    and must run first so that a wrong ``D`` at transform time is caught.

    **Not invertible.** The transform throws away each row's norm, and a per-row quantity cannot be a fitted
    parameter. :meth:`inverse_transform` therefore needs the norms to restore the original rows: pass
    ``norms=`` (from :meth:`row_norms`, computed before :meth:`transform`). Without them it returns the
    direction only, i.e. the present rows unchanged, which is the unit-norm preimage (transforming the
    result gives the input back), not the original data.

    Args:
        eps: Lower bound on the divisor.

    Attributes:
        n_features_in_: ``D``.
        n_samples_seen_: Number of present rows fitted on.

    Example:
        >>> import numpy as np
        >>> X = np.array([[3.0, 4.0], [0.0, 0.0], [np.inf, 1.0]])
        >>> mask = np.array([True, True, False])
        >>> norm = L2Normalizer().fit(X, mask)
        >>> norms = norm.row_norms(X, mask)
        >>> norms
        array([5., 0., 0.])
        >>> Z = norm.transform(X, mask)
        >>> Z
        array([[0.6, 0.8],
               [0. , 0. ],
               [0. , 0. ]])
        >>> norm.inverse_transform(Z, mask, norms=norms)
        array([[3., 4.],
               [0., 0.],
               [0., 0.]])
    """

    is_invertible: ClassVar[bool] = False

    def __init__(self, *, eps: float = 1e-12) -> None:
        _check_positive("L2Normalizer", "eps", eps, optional=False)
        self.eps = float(eps)

    def _transform(self, X: ArrayT) -> ArrayT:
        if isinstance(X, np.ndarray):
            X64 = X.astype(np.float64)  # avoid float32 overflow in the sum of squares
            return X64 / np.maximum(row_norms(X64), self.eps)
        return X / row_norms(X).clamp_min(self.eps)

    def _inverse_transform(self, X: ArrayT) -> ArrayT:
        return X

    def row_norms(self, X: ArrayT, mask: Any = None) -> ArrayT:
        """Return the Euclidean norm of every row, ``[S]``, 0 for missing rows (what :meth:`transform` drops).

        Raises:
            NotFittedError: before :meth:`fit`.
            DataError: as :meth:`transform`.
        """
        self._check_fitted("row_norms")
        X_in, mask_in = check_input("L2Normalizer", "row_norms", X, mask, self.n_features_in_)
        clean: Any = where_rows(mask_in, to_float(X_in))
        if isinstance(clean, Tensor):
            out: Any = row_norms(clean)[:, 0]
        else:
            out = row_norms(clean.astype(np.float64))[:, 0].astype(clean.dtype)
        return cast(ArrayT, out)

    def inverse_transform(self, X: ArrayT, mask: Any = None, *, norms: Any = None) -> ArrayT:
        """Undo :meth:`transform` when the row norms are given; otherwise return the unit rows unchanged.

        Args:
            X: ``[S, D]`` unit-norm rows.
            mask: ``[S]`` bool, True where present; None means every row is present.
            norms: ``[S]`` non-negative norms from :meth:`row_norms` on the original data, or None.

        Returns:
            ``X * norms`` (rows scaled back) when ``norms`` is given, else ``X``; missing rows are exact zeros.

        Raises:
            NotFittedError: before :meth:`fit`.
            DataError: on a wrong shape, or ``norms`` of the wrong length, negative or non-finite.
        """
        out = super().inverse_transform(X, mask)
        if norms is None:
            return out
        n = to_numpy(norms).astype(np.float64)
        rows = int(out.shape[0])
        if n.shape != (rows,):
            raise DataError(
                f"The 'norms' parameter of L2Normalizer.inverse_transform must have shape ({rows},). "
                f"Got {tuple(n.shape)}."
            )
        if not (np.isfinite(n) & (n >= 0)).all():
            raise DataError(
                "The 'norms' parameter of L2Normalizer.inverse_transform must hold finite non-negative numbers."
            )
        scaled = out * as_param(n, out)[:, None]
        return scaled.astype(out.dtype, copy=False) if isinstance(scaled, np.ndarray) else scaled


@register_normalizer("identity")
class IdentityNormalizer(Normalizer):
    """Pass values through unchanged (for discrete streams: codes, one-hot vectors, counts).

    It still enforces the contract: ``fit`` records ``D``, NaN/inf at present steps are refused, and missing
    rows come back as exact zeros. Integer inputs keep their dtype.

    Attributes:
        n_features_in_: ``D``.
        n_samples_seen_: Number of present rows fitted on.

    Example:
        >>> import numpy as np
        >>> X = np.array([[1, 0], [0, 1], [7, 7]])
        >>> IdentityNormalizer().fit(X).transform(X, np.array([True, True, False]))
        array([[1, 0],
               [0, 1],
               [0, 0]])
    """

    preserves_dtype: ClassVar[bool] = True

    def _transform(self, X: ArrayT) -> ArrayT:
        return X

    def _inverse_transform(self, X: ArrayT) -> ArrayT:
        return X
