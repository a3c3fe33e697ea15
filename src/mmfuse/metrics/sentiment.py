"""Sentiment-regression conventions of CMU-MOSI / MOSEI on the [-3, 3] scale, as MMSA and its papers report them.

Models of multimodal sentiment regress a score in [-3, 3] (strongly negative .. strongly positive); papers then
report accuracies of the score read as classes:

* **Acc-2, has-0** (``acc2_has0``): negative (< 0) vs non-negative (>= 0), over every sample.
* **Acc-2, non-0** (``acc2_non0``): negative vs positive, over the samples whose true score is not 0.
* **F1** (``f1_has0`` / ``f1_non0``): the support-weighted F1 of the same two binary readings.
* **Acc-7** (``acc7``): both sides clipped to [-3, 3] and rounded to the nearest integer (7 classes).
* **Acc-5** (``acc5``): both sides clipped to [-2, 2] and rounded (5 classes).

Rounding is NumPy's ``np.round`` (halves go to the even integer: 0.5 -> 0, 1.5 -> 2), which is what MMSA's
``MetricsTop`` does; the values are therefore comparable with numbers reported from it. MAE and Pearson's r,
the other two numbers of those tables, are :func:`~mmfuse.metrics.mae` and :func:`~mmfuse.metrics.pearson`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from mmfuse.metrics._checks import as_targets
from mmfuse.metrics.registry import register_metric

__all__ = ["SENTIMENT_METRICS", "acc2", "f1_binary", "multiclass_sentiment_accuracy", "sentiment_metrics"]

SENTIMENT_METRICS: tuple[str, ...] = ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc5", "acc7")
"""The registered names of the MOSI conventions, in the order papers list them."""


def _scores(owner: str, y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """``[n]`` float64 scores from ``[n]`` or MOSI-style ``[n, 1]`` inputs."""
    t = as_targets(owner, "y_true", y_true)
    p = as_targets(owner, "y_pred", y_pred)
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.ndim == 2 and arr.shape[1] != 1:
            raise ValueError(
                f"The '{name}' parameter of {owner} must hold one sentiment score per sample ([n] or [n, 1]). "
                f"Got shape {arr.shape}."
            )
    t, p = t.reshape(-1), p.reshape(-1)  # [n]
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred of {owner} must have the same length. Got {t.shape[0]} and {p.shape[0]}.")
    if t.size == 0:
        raise ValueError(f"{owner} needs at least one sample; y_true and y_pred are empty.")
    return t, p


def _binary(t: np.ndarray, p: np.ndarray, non_zero: bool) -> tuple[np.ndarray, np.ndarray]:
    if non_zero:
        keep = t != 0
        return t[keep] > 0, p[keep] > 0
    return t >= 0, p >= 0


def acc2(y_true: Any, y_pred: Any, *, non_zero: bool = False) -> float:
    """Binary sentiment accuracy: has-0 (negative vs non-negative) or non-0 (negative vs positive, zeros dropped).

    NaN for ``non_zero=True`` when every true score is 0.

    Example:
        >>> truth, pred = [-1.0, 0.0, 2.0, 0.5], [-0.5, 0.3, 1.0, -0.2]
        >>> acc2(truth, pred), acc2(truth, pred, non_zero=True)
        (0.75, 0.6666666666666666)
    """
    t, p = _binary(*_scores("acc2", y_true, y_pred), non_zero)
    return float(np.mean(t == p)) if t.size else math.nan


def f1_binary(y_true: Any, y_pred: Any, *, non_zero: bool = False) -> float:
    """Support-weighted F1 of the binary sentiment reading (has-0 or non-0), as MMSA reports it.

    Example:
        >>> round(f1_binary([-1.0, -2.0, 2.0, 0.5], [-0.5, 0.3, 1.0, 0.2]), 4)
        0.7333
    """
    t, p = _binary(*_scores("f1_binary", y_true, y_pred), non_zero)
    if t.size == 0:
        return math.nan
    return float(f1_score(t, p, average="weighted", zero_division=0.0))


def multiclass_sentiment_accuracy(y_true: Any, y_pred: Any, *, classes: int = 7) -> float:
    """Acc-7 (clip to [-3, 3]) or Acc-5 (clip to [-2, 2]): accuracy of the rounded scores.

    Example:
        >>> multiclass_sentiment_accuracy([-3.0, 0.4, 2.6, 1.0], [-2.6, 0.0, 3.5, 1.6])
        0.75
        >>> multiclass_sentiment_accuracy([-3.0, 0.4, 2.6, 1.0], [-2.6, 0.0, 3.5, 1.6], classes=5)
        0.75
    """
    if classes not in (5, 7):
        raise ValueError(f"The 'classes' parameter of multiclass_sentiment_accuracy must be 5 or 7. Got {classes!r}.")
    t, p = _scores("multiclass_sentiment_accuracy", y_true, y_pred)
    bound = (classes - 1) / 2
    return float(np.mean(np.round(np.clip(t, -bound, bound)) == np.round(np.clip(p, -bound, bound))))


def sentiment_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Every MOSI convention at once: ``acc2_has0``, ``acc2_non0``, ``f1_has0``, ``f1_non0``, ``acc5``, ``acc7``.

    Example:
        >>> m = sentiment_metrics([-1.0, 0.0, 2.0, 0.5], [-0.5, 0.3, 1.0, -0.2])
        >>> m["acc2_has0"], m["acc7"]
        (0.75, 0.5)
    """
    t, p = _scores("sentiment_metrics", y_true, y_pred)
    return {
        "acc2_has0": acc2(t, p),
        "acc2_non0": acc2(t, p, non_zero=True),
        "f1_has0": f1_binary(t, p),
        "f1_non0": f1_binary(t, p, non_zero=True),
        "acc5": multiclass_sentiment_accuracy(t, p, classes=5),
        "acc7": multiclass_sentiment_accuracy(t, p, classes=7),
    }


def _scorer(fn: Callable[[Any, Any], float]) -> Callable[[Any, Any, Any], float]:
    return lambda t, p, _probs: fn(t, p)


def _register() -> None:
    entries: tuple[tuple[str, str, Callable[[Any, Any], float], str], ...] = (
        ("acc2_has0", "Acc-2 (has-0)", lambda t, p: acc2(t, p), "negative (< 0) vs non-negative, every sample"),
        ("acc2_non0", "Acc-2 (non-0)", lambda t, p: acc2(t, p, non_zero=True), "negative vs positive, true 0 dropped"),
        ("f1_has0", "F1 (has-0)", lambda t, p: f1_binary(t, p), "weighted F1 of the has-0 binary reading"),
        ("f1_non0", "F1 (non-0)", lambda t, p: f1_binary(t, p, non_zero=True), "weighted F1 of the non-0 reading"),
        ("acc5", "Acc-5", lambda t, p: multiclass_sentiment_accuracy(t, p, classes=5), "clip to [-2, 2], round"),
        ("acc7", "Acc-7", lambda t, p: multiclass_sentiment_accuracy(t, p, classes=7), "clip to [-3, 3], round"),
    )
    for name, label, fn, how in entries:
        register_metric(
            name,
            label=label,
            higher_is_better=True,
            tasks=("regression",),
            bounds=(0.0, 1.0),
            unit="fraction correct",
            description=f"MOSI sentiment convention on [-3, 3] (MMSA): {how}.",
            scorer=_scorer(fn),
        )


_register()
