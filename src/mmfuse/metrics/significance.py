"""Confidence intervals and paired tests of a registered metric over test items pooled over seeds.

A comparison trains every model with several seeds and tests each on the same items. The uncertainty that
matters to a reader is the one of the test set: another draw of test items would give other numbers. Both
functions here therefore resample *items* and keep every seed's prediction of an item together:

* :func:`bootstrap_ci`: a percentile bootstrap (:func:`scipy.stats.bootstrap`) of the metric averaged over seeds.
  Each replicate draws ``N`` item indices with replacement once and applies that draw to every seed, so the
  interval covers the test-set variability of the seed-averaged metric.
* :func:`paired_permutation_test`: a paired permutation test (:func:`scipy.stats.permutation_test` with
  ``permutation_type="samples"``) of ``metric(a) - metric(b)``, both averaged over seeds. Under the null
  hypothesis the two systems are exchangeable item by item: each permutation swaps the predictions of a random
  set of items between ``a`` and ``b``, in every seed at once (seed ``k`` of ``a`` is paired with seed ``k`` of
  ``b``). Two-sided, so its p-value says whether the two differ; :func:`verdict` reads the direction from the
  metric registry.

Any registered metric works (its scorer is called on each resample); accuracy, weighted / macro F1, MAE, MSE,
RMSE, Pearson's r and CCC of a single target have vectorised kernels that give the same numbers (tested against
the registered scorers), so thousands of resamples of ~750 items x 5 seeds take a fraction of a second.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> good = np.where(rng.random((3, 400)) < 0.9, y, 1 - y)   # [S, N]: 90 % right in each of 3 seeds
    >>> weak = np.where(rng.random((3, 400)) < 0.7, y, 1 - y)
    >>> low, high = bootstrap_ci("accuracy", y, good, n_resamples=1000)
    >>> bool(low < good.__eq__(y).mean() < high), bool(0.85 < low < high < 0.95)
    (True, True)
    >>> test = paired_permutation_test("accuracy", y, good, weak, n_resamples=1000)
    >>> test.p_value < 0.01, verdict("accuracy", test.difference, test.p_value)
    (True, 'better')
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from mmfuse.metrics._confusion import confusion_counts, f1_per_class
from mmfuse.metrics.registry import get_metric

__all__ = [
    "ALPHA",
    "VERDICTS",
    "PairedTest",
    "bootstrap_ci",
    "paired_permutation_test",
    "seed_mean_metric",
    "verdict",
]

logger = logging.getLogger(__name__)

ALPHA = 0.05
"""The significance level of :func:`verdict` (and of the comparison's ``vs_best_unimodal`` column)."""

VERDICTS = ("better", "not different", "worse")
"""The values :func:`verdict` returns."""

# Elements of the largest index array gathered at once ([S, batch, N(, C)]); bounds memory to ~ tens of MB.
_GATHER_BUDGET = 4_000_000

# A vectorised kernel: y_true [1, R, M(, K)] broadcast against y_pred [S, R, M(, K)] (probs [S, R, M, C] | None)
# -> [S, R] metric values, one per seed and resample.
_Kernel = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


@dataclass(frozen=True)
class PairedTest:
    """The result of :func:`paired_permutation_test`.

    Attributes:
        metric: The registered metric name.
        difference: ``metric(a) - metric(b)``, each averaged over seeds (positive: ``a`` scores higher).
        p_value: Two-sided p-value of the paired permutation test (NaN for a single item).
        n_resamples: Random permutations drawn.
    """

    metric: str
    difference: float
    p_value: float
    n_resamples: int


# ---------------------------------------------------------------------------------------------- vectorised kernels
def _accuracy(yt: np.ndarray, yp: np.ndarray, _: np.ndarray | None) -> np.ndarray:
    return np.asarray((yt == yp).mean(axis=-1), dtype=np.float64)


def _f1_weighted(yt: np.ndarray, yp: np.ndarray, _: np.ndarray | None) -> np.ndarray:
    f1, support, _predicted = f1_per_class(confusion_counts(yt, yp))
    total = support.sum(axis=-1)
    return np.asarray((f1 * support).sum(axis=-1) / np.where(total > 0, total, 1.0), dtype=np.float64)


def _f1_macro(yt: np.ndarray, yp: np.ndarray, _: np.ndarray | None) -> np.ndarray:
    f1, support, predicted = f1_per_class(confusion_counts(yt, yp))
    present = (support + predicted) > 0  # scikit-learn's labels=union(y_true, y_pred)
    return np.asarray((f1 * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1), dtype=np.float64)


def _mae(yt: np.ndarray, yp: np.ndarray, _: np.ndarray | None) -> np.ndarray:
    return np.abs(yt - yp).mean(axis=-1, dtype=np.float64)


def _mse(yt: np.ndarray, yp: np.ndarray, _: np.ndarray | None) -> np.ndarray:
    diff = (yt - yp).astype(np.float64)
    return np.asarray((diff * diff).mean(axis=-1), dtype=np.float64)


def _rmse(yt: np.ndarray, yp: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
    return np.sqrt(_mse(yt, yp, probs))


def _moments(yt: np.ndarray, yp: np.ndarray) -> tuple[np.ndarray, ...]:
    """Means, population variances and covariance along the last axis (``Lin 1989``'s moments)."""
    t = yt.astype(np.float64)
    p = yp.astype(np.float64)
    mt, mp = t.mean(axis=-1, keepdims=True), p.mean(axis=-1, keepdims=True)
    dt, dp = t - mt, p - mp
    vt = np.broadcast_to((dt * dt).mean(axis=-1), np.broadcast_shapes(t.shape, p.shape)[:-1])
    return mt[..., 0], mp[..., 0], vt, (dp * dp).mean(axis=-1), (dt * dp).mean(axis=-1)


def _pearson(yt: np.ndarray, yp: np.ndarray, _: np.ndarray | None) -> np.ndarray:
    _mt, _mp, vt, vp, cov = _moments(yt, yp)
    denom = np.sqrt(vt * vp)
    ok = (denom > 0) & (yt.shape[-1] >= 2)
    return np.divide(cov, denom, out=np.full_like(cov, np.nan), where=ok)


def _ccc(yt: np.ndarray, yp: np.ndarray, _: np.ndarray | None) -> np.ndarray:
    mt, mp, vt, vp, cov = _moments(yt, yp)
    denom = vt + vp + (mt - mp) ** 2
    ok = (denom > 0) & (yt.shape[-1] >= 2)
    return np.divide(2.0 * cov, denom, out=np.full_like(cov, np.nan), where=ok)


_KERNELS: dict[str, _Kernel] = {
    "accuracy": _accuracy,
    "f1_weighted": _f1_weighted,
    "f1_macro": _f1_macro,
    "mae": _mae,
    "mse": _mse,
    "rmse": _rmse,
    "pearson": _pearson,
    "ccc": _ccc,
}


def _scorer_rows(name: str) -> _Kernel:
    """The registered scorer applied row by row: the general path for metrics without a vectorised kernel."""
    info = get_metric(name)
    scorer = info.scorer
    if scorer is None:
        raise ValueError(f"The metric {info.name!r} is not computed from predictions ({info.description}).")

    def rows(yt: np.ndarray, yp: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
        out = np.empty(yp.shape[:2], dtype=np.float64)  # [S, R]
        for s in range(yp.shape[0]):
            for r in range(yp.shape[1]):
                out[s, r] = scorer(yt[0, r], yp[s, r], None if probs is None else probs[s, r])
        return out

    return rows


def _kernel(name: str, y_true: np.ndarray) -> _Kernel:
    info = get_metric(name)
    kernel = _KERNELS.get(info.name)
    if kernel is not None and y_true.ndim == 1:  # kernels cover one class index / one target per item
        return kernel
    return _scorer_rows(info.name)


# ---------------------------------------------------------------------------------------------------- inputs
def _as_inputs(
    metric: str, y_true: Any, y_pred: Any, probs: Any, owner: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate ``y_true [N(, K)]``, ``y_pred [S, N(, K)]`` and ``probs [S, N, C]`` and return them as arrays."""
    info = get_metric(metric)
    if info.scorer is None:
        raise ValueError(f"The 'metric' parameter of {owner} must be computed from predictions; {metric!r} is not.")
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if yt.ndim not in (1, 2) or yt.shape[0] < 1:
        raise ValueError(f"The 'y_true' parameter of {owner} must be [N] or [N, K] with N >= 1. Got shape {yt.shape}.")
    if yp.ndim != yt.ndim + 1 or yp.shape[1:] != yt.shape or yp.shape[0] < 1:
        raise ValueError(
            f"The 'y_pred' parameter of {owner} must be [S, *y_true.shape] = [S, {', '.join(map(str, yt.shape))}] "
            f"(one row of predictions per seed). Got shape {yp.shape}."
        )
    pr = None
    if probs is not None:
        pr = np.asarray(probs)
        if pr.ndim != 3 or pr.shape[:2] != yp.shape[:2]:
            raise ValueError(
                f"The 'probs' parameter of {owner} must be [S, N, C] = [{yp.shape[0]}, {yp.shape[1]}, C]. "
                f"Got shape {pr.shape}."
            )
    elif info.needs_probs:
        raise ValueError(f"The metric {info.name!r} needs class probabilities; pass 'probs' to {owner}.")
    if np.issubdtype(yt.dtype, np.integer) and np.issubdtype(yp.dtype, np.integer):
        yt, yp = yt.astype(np.int32), yp.astype(np.int32)  # class indices: smaller arrays to gather
    return yt, yp, pr


def _batch(n_seeds: int, item_size: int) -> int:
    """Resamples evaluated at once so that the gathered arrays stay within the memory budget."""
    return max(1, _GATHER_BUDGET // max(1, n_seeds * item_size))


def seed_mean_metric(
    metric: str, y_true: Any, y_pred: Any, probs: Any = None, *, index: np.ndarray | None = None
) -> np.ndarray:
    """The metric averaged over seeds, for the whole set or for rows of item indices (resamples).

    Args:
        metric: A registered metric name or alias.
        y_true: ``[N]`` or ``[N, K]`` targets.
        y_pred: ``[S, N]`` or ``[S, N, K]`` predictions, one row per seed.
        probs: ``[S, N, C]`` class probabilities (metrics that need them).
        index: ``[R, M]`` item indices (each row one resample); all ``N`` items once when None.

    Returns:
        ``[R]`` float64: for each row of ``index``, the mean over seeds of the metric on those items (``[1]``
        when ``index`` is None).

    Example:
        >>> seed_mean_metric("accuracy", [0, 1, 1], [[0, 1, 0], [0, 1, 1]]).tolist()
        [0.8333333333333333]
        >>> seed_mean_metric("mae", [0.0, 1.0], [[0.5, 1.0]], index=np.array([[0, 0], [1, 1]])).tolist()
        [0.5, 0.0]
    """
    yt, yp, pr = _as_inputs(metric, y_true, y_pred, probs, "seed_mean_metric")
    idx = np.arange(yt.shape[0])[None, :] if index is None else np.asarray(index, dtype=np.int64)
    if idx.ndim == 1:
        idx = idx[None, :]
    return _seed_mean(_kernel(metric, yt), yt, yp, pr, idx)


def _seed_mean(kernel: _Kernel, yt: np.ndarray, yp: np.ndarray, pr: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    """``[R]``: the mean over the ``S`` seeds of ``kernel`` on the items ``idx [R, M]`` of every seed."""
    true = yt[idx][None]  # [1, R, M(, K)], broadcast over seeds
    pred = yp[:, idx]  # [S, R, M(, K)]
    probs = None if pr is None else pr[:, idx]  # [S, R, M, C]
    values = kernel(true, pred, probs)  # [S, R]
    return np.asarray(values.mean(axis=0), dtype=np.float64)


# ------------------------------------------------------------------------------------------------- the tests
def _check_resamples(n_resamples: Any, owner: str) -> int:
    if not isinstance(n_resamples, int) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise ValueError(f"The 'n_resamples' parameter of {owner} must be a positive integer. Got {n_resamples!r}.")
    return n_resamples


def bootstrap_ci(
    metric: str,
    y_true: Any,
    y_pred: Any,
    probs: Any = None,
    *,
    confidence_level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the metric averaged over seeds, resampling test items.

    Each of the ``n_resamples`` replicates draws ``N`` items with replacement (:func:`scipy.stats.bootstrap`,
    ``method="percentile"``) and applies the same draw to every seed; the replicate's value is the mean over seeds
    of the metric on the drawn items.

    Args:
        metric: A registered metric name or alias.
        y_true: ``[N]`` or ``[N, K]`` targets of the test items.
        y_pred: ``[S, N]`` or ``[S, N, K]``: each seed's predictions of the same items.
        probs: ``[S, N, C]`` class probabilities, for metrics that need them.
        confidence_level: Coverage of the interval.
        n_resamples: Bootstrap replicates.
        seed: Seeds the resampling (the same inputs give the same interval).

    Returns:
        ``(low, high)``; NaN where the metric is undefined on the resamples, and for a single item.

    Raises:
        ValueError: for an unknown metric, shapes that do not match, or invalid options.

    Example:
        >>> low, high = bootstrap_ci("mae", [0.0, 1.0, 2.0, 3.0], [[0.1, 1.2, 1.9, 3.4], [0.0, 1.1, 2.2, 2.9]])
        >>> bool(0.0 <= low <= 0.15 <= high)
        True
    """
    owner = "bootstrap_ci"
    yt, yp, pr = _as_inputs(metric, y_true, y_pred, probs, owner)
    n_resamples = _check_resamples(n_resamples, owner)
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"The 'confidence_level' parameter of {owner} must be in (0, 1). Got {confidence_level!r}.")
    kernel = _kernel(metric, yt)
    if yt.shape[0] < 2:  # one item: nothing to resample
        return math.nan, math.nan

    def statistic(index: np.ndarray, axis: int = -1) -> np.ndarray:
        rows = np.atleast_2d(index)  # [R, N]
        values = _seed_mean(kernel, yt, yp, pr, rows)
        return values if index.ndim > 1 else values[0]

    n = yt.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        result = stats.bootstrap(
            (np.arange(n),),
            statistic,
            vectorized=True,
            n_resamples=n_resamples,
            batch=_batch(yp.shape[0], n * (1 if pr is None else pr.shape[-1])),
            confidence_level=confidence_level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return low, high


def paired_permutation_test(
    metric: str,
    y_true: Any,
    y_pred_a: Any,
    y_pred_b: Any,
    probs_a: Any = None,
    probs_b: Any = None,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedTest:
    """Paired permutation test of ``a`` against ``b`` on the same test items and seeds.

    The statistic is ``metric(a) - metric(b)``, each averaged over seeds. :func:`scipy.stats.permutation_test`
    with ``permutation_type="samples"`` swaps, in each of ``n_resamples`` random permutations, the predictions of
    a random subset of items between ``a`` and ``b`` (every seed's prediction of a swapped item moves together:
    seed ``k`` of ``a`` is paired with seed ``k`` of ``b``). The p-value is two-sided.

    Args:
        metric: A registered metric name or alias.
        y_true: ``[N]`` or ``[N, K]`` targets.
        y_pred_a: ``[S, N(, K)]`` predictions of the first system, one row per seed.
        y_pred_b: The second system's, same shape (the same seeds, in the same order).
        probs_a: ``[S, N, C]`` class probabilities of ``a`` (metrics that need them).
        probs_b: The same for ``b``.
        n_resamples: Random permutations.
        seed: Seeds the permutations.

    Returns:
        A :class:`PairedTest`.

    Raises:
        ValueError: for an unknown metric, shapes that do not match, or invalid options.

    Example:
        >>> y = np.arange(40) % 2
        >>> same = paired_permutation_test("accuracy", y, [y, 1 - y], [y, 1 - y], n_resamples=200)
        >>> same.difference, same.p_value
        (0.0, 1.0)
    """
    owner = "paired_permutation_test"
    yt, ya, pa = _as_inputs(metric, y_true, y_pred_a, probs_a, owner)
    _, yb, pb = _as_inputs(metric, y_true, y_pred_b, probs_b, owner)
    if ya.shape != yb.shape:
        raise ValueError(
            f"The 'y_pred_a' and 'y_pred_b' parameters of {owner} must have the same shape (the same seeds and "
            f"items). Got {ya.shape} and {yb.shape}."
        )
    if (pa is None) != (pb is None) or (pa is not None and pb is not None and pa.shape != pb.shape):
        raise ValueError(f"The 'probs_a' and 'probs_b' parameters of {owner} must both be given with one shape.")
    n_resamples = _check_resamples(n_resamples, owner)
    n = yt.shape[0]
    if n < 2:  # one item: no permutation distribution to speak of
        difference = float(seed_mean_metric(metric, yt, ya, pa)[0] - seed_mean_metric(metric, yt, yb, pb)[0])
        return PairedTest(metric=get_metric(metric).name, difference=difference, p_value=math.nan, n_resamples=0)
    # Items of a are 0..N-1 and items of b are N..2N-1 of one concatenated set; a permutation swaps index pairs.
    both_true = np.concatenate([yt, yt], axis=0)  # [2N(, K)]
    both_pred = np.concatenate([ya, yb], axis=1)  # [S, 2N(, K)]
    both_probs = None if pa is None or pb is None else np.concatenate([pa, pb], axis=1)  # [S, 2N, C]
    kernel = _kernel(metric, yt)

    def statistic(ia: np.ndarray, ib: np.ndarray, axis: int = -1) -> np.ndarray:
        rows_a, rows_b = np.atleast_2d(ia), np.atleast_2d(ib)  # [R, N]
        diff = _seed_mean(kernel, both_true, both_pred, both_probs, rows_a) - _seed_mean(
            kernel, both_true, both_pred, both_probs, rows_b
        )
        return diff if ia.ndim > 1 else diff[0]

    with np.errstate(invalid="ignore", divide="ignore"):
        result = stats.permutation_test(
            (np.arange(n), np.arange(n) + n),
            statistic,
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
            batch=_batch(ya.shape[0], n * (1 if pa is None else pa.shape[-1])),
            alternative="two-sided",
            rng=np.random.default_rng(seed),
        )
    difference = float(result.statistic)
    p_value = float(result.pvalue)
    logger.debug("%s: difference %.6g, p = %.4g (%d permutations)", metric, difference, p_value, n_resamples)
    return PairedTest(metric=get_metric(metric).name, difference=difference, p_value=p_value, n_resamples=n_resamples)


def verdict(metric: str, difference: float, p_value: float, *, alpha: float = ALPHA) -> str | None:
    """``"better"``, ``"not different"`` or ``"worse"``: the first system against the second at level ``alpha``.

    ``difference`` is ``metric(first) - metric(second)``; the metric's direction comes from the metric registry
    (for MAE a negative difference is better). None when the p-value or the difference is not a number.

    Example:
        >>> verdict("accuracy", 0.03, 0.001), verdict("mae", 0.03, 0.001), verdict("mae", -0.1, 0.2)
        ('better', 'worse', 'not different')
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"The 'alpha' parameter of verdict must be in (0, 1). Got {alpha!r}.")
    if not (math.isfinite(difference) and math.isfinite(p_value)):
        return None
    if p_value >= alpha or difference == 0:
        return "not different"
    improves = difference > 0 if get_metric(metric).higher_is_better else difference < 0
    return "better" if improves else "worse"
