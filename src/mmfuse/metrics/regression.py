"""Regression metrics: pure functions of targets and predictions, and their registry entries.

Targets are ``[n]`` or ``[n, K]`` (``K`` targets; MOSI-style ``[n, 1]`` sentiment scores included). With several
targets a metric is the mean over targets. Correlations are undefined (0/0) for fewer than two samples or a
constant side; they are then NaN, and :func:`regression_metrics` says why in ``notes``; nothing raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, root_mean_squared_error

from mmfuse.metrics._checks import as_targets
from mmfuse.metrics.registry import MetricFamily

__all__ = ["ccc", "mae", "mse", "pearson", "regression_metrics", "rmse"]

_REGRESSION = ("regression",)
_ERRORS = MetricFamily(tasks=_REGRESSION, higher_is_better=False, bounds=(0.0, None), unit="target units")
_AGREEMENT = MetricFamily(tasks=_REGRESSION, higher_is_better=True, bounds=(-1.0, 1.0), unit="−1 to 1")


def _pair(owner: str, y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """``[n, K]`` float64 views of both sides, with the same shape and at least one row."""
    yt = as_targets(owner, "y_true", y_true)
    yp = as_targets(owner, "y_pred", y_pred)
    if yt.shape[0] == 0 and yp.shape[0] == 0:
        raise ValueError(f"{owner} needs at least one sample; y_true and y_pred are empty.")
    if yt.shape[0] != yp.shape[0] or yt.size != yp.size:
        raise ValueError(f"y_true and y_pred of {owner} must have the same shape. Got {yt.shape} and {yp.shape}.")
    return yt.reshape(yt.shape[0], -1), yp.reshape(yp.shape[0], -1)  # [n, K]; MOSI-style [n, 1] equals [n]


def _mean_over_targets(owner: str, error: Callable[..., Any], y_true: Any, y_pred: Any) -> float:
    """``error`` (a scikit-learn regression metric) of each target, averaged over the targets."""
    t, p = _pair(owner, y_true, y_pred)
    return float(np.mean(error(t, p, multioutput="raw_values")))


@_ERRORS.metric("mae", "MAE")
def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error (averaged over targets).

    Example:
        >>> round(mae([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]), 4)
        0.6667
    """
    return _mean_over_targets("mae", mean_absolute_error, y_true, y_pred)


@_ERRORS.metric("mse", "MSE", unit="squared target units")
def mse(y_true: Any, y_pred: Any) -> float:
    """Mean squared error (averaged over targets).

    Numpy arrays, torch tensors and sequences are all accepted.

    Example:
        >>> import torch
        >>> round(mse(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 5.0])), 4)
        1.3333
    """
    return _mean_over_targets("mse", mean_squared_error, y_true, y_pred)


@_ERRORS.metric("rmse", "RMSE")
def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error, per target, averaged over targets.

    With two targets whose RMSEs are 2 ** 0.5 and 1:

    Example:
        >>> round(rmse([[1.0, 0.0], [3.0, 0.0]], [[1.0, 1.0], [5.0, 1.0]]), 4)
        1.2071
    """
    return _mean_over_targets("rmse", root_mean_squared_error, y_true, y_pred)


def _constant_sides(t: np.ndarray, p: np.ndarray) -> list[str]:
    return [name for name, v in (("y_true", t), ("y_pred", p)) if np.ptp(v) == 0]


def _pearson_1d(t: np.ndarray, p: np.ndarray, label: str, notes: list[str] | None) -> float:
    if t.shape[0] < 2:
        if notes is not None:
            notes.append(f"pearson{label} is nan: it needs at least two samples.")
        return math.nan
    constant = _constant_sides(t, p)
    if constant:
        if notes is not None:
            notes.append(f"pearson{label} is nan: {' and '.join(constant)} is constant, so the correlation is 0/0.")
        return math.nan
    return float(stats.pearsonr(t, p).statistic)


@_AGREEMENT.metric("pearson", "Pearson r", aliases=("corr",))
def pearson(y_true: Any, y_pred: Any) -> float:
    """Pearson's correlation coefficient (mean over targets); NaN for n < 2 or a constant side.

    Example:
        >>> round(pearson([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]), 4)
        0.9608
        >>> pearson([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
        nan
    """
    t, p = _pair("pearson", y_true, y_pred)
    return float(np.mean([_pearson_1d(t[:, j], p[:, j], "", None) for j in range(t.shape[1])]))


def _ccc_1d(t: np.ndarray, p: np.ndarray) -> float:
    if t.shape[0] < 2:
        return math.nan
    mt, mp = t.mean(), p.mean()
    vt, vp = t.var(), p.var()  # population moments (Lin 1989)
    denom = vt + vp + (mt - mp) ** 2
    if denom == 0:  # both sides constant and equal: agreement is 0/0
        return math.nan
    return float(2.0 * np.mean((t - mt) * (p - mp)) / denom)


@_AGREEMENT.metric("ccc", "CCC")
def ccc(y_true: Any, y_pred: Any) -> float:
    """Lin's concordance correlation coefficient (mean over targets), in [-1, 1].

    ``2 cov(t, p) / (var(t) + var(p) + (mean(t) - mean(p))^2)`` with population moments (Lin 1989, as the
    AVEC valence/arousal challenges compute it). torchmetrics' ``concordance_corrcoef`` uses sample variances
    in the denominator beside the squared mean difference, so the two differ by O(1/n) when the means differ
    and agree when they are equal. A constant prediction scores 0 (it concords with nothing); NaN for n < 2 or
    when both sides are the same constant.

    Example:
        >>> round(ccc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), 4), round(ccc([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]), 4)
        (1.0, 0.5714)
    """
    t, p = _pair("ccc", y_true, y_pred)
    return float(np.mean([_ccc_1d(t[:, j], p[:, j]) for j in range(t.shape[1])]))


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """Mean absolute error, root mean squared error and Pearson correlation.

    Pearson's r is undefined (0/0) when either side is constant, e.g. a model that predicts the same value for
    every sample, or when there is a single sample. It is then ``nan`` and ``notes`` says why; nothing raises.

    Args:
        y_true: ``[n]`` or ``[n, K]`` true values (numpy or torch).
        y_pred: Predictions of the same shape.

    Returns:
        ``n``, ``n_targets``, ``mae``, ``rmse``, ``pearson`` (for ``K > 1``: the mean over targets, ``nan`` if any
        target's r is ``nan``), ``per_target`` (one dict of ``mae``, ``rmse``, ``pearson`` per target) and
        ``notes``.

    Raises:
        ValueError: on empty input, different shapes (both are named), a rank other than 1 or 2, or NaN/inf.

    Example:
        >>> m = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
        >>> round(m["mae"], 4), round(m["rmse"], 4), round(m["pearson"], 4)
        (0.6667, 1.1547, 0.9608)
        >>> m = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
        >>> m["pearson"], m["notes"]
        (nan, ['pearson is nan: y_pred is constant, so the correlation is 0/0.'])
    """
    owner = "regression_metrics"
    yt = as_targets(owner, "y_true", y_true)
    yp = as_targets(owner, "y_pred", y_pred)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred of {owner} must have the same shape. Got {yt.shape} and {yp.shape}.")
    t2, p2 = _pair(owner, yt, yp)  # [n, K]
    k = t2.shape[1]
    notes: list[str] = []
    mae_k = mean_absolute_error(t2, p2, multioutput="raw_values")
    rmse_k = root_mean_squared_error(t2, p2, multioutput="raw_values")
    pearson_k = [_pearson_1d(t2[:, j], p2[:, j], f"[{j}]" if k > 1 else "", notes) for j in range(k)]
    return {
        "n": int(t2.shape[0]),
        "n_targets": int(k),
        "mae": float(np.mean(mae_k)),
        "rmse": float(np.mean(rmse_k)),
        "pearson": float(np.mean(pearson_k)),
        "per_target": [
            {"mae": float(mae_k[j]), "rmse": float(rmse_k[j]), "pearson": float(pearson_k[j])} for j in range(k)
        ],
        "notes": notes,
    }
