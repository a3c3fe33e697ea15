"""Classification metrics: pure functions of labels (and class probabilities), and their registry entries.

The maths is scikit-learn's where it has it (accuracy, F1, top-k accuracy, log loss, ROC-AUC, Brier score);
this module adds the input checks, fixed label sets (every class ``0 .. C-1`` counts, also when absent from the
data) and explicit undefined values: a metric that is 0/0 returns NaN, and :func:`classification_metrics` says
why in its ``notes`` list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, f1_score
from sklearn.metrics import log_loss as sk_log_loss

from mmfuse.metrics._checks import as_labels, as_probs, same_length
from mmfuse.metrics._confusion import confusion_counts, f1_per_class
from mmfuse.metrics.registry import MetricFamily

__all__ = [
    "ReliabilityBins",
    "accuracy",
    "brier_score",
    "classification_metrics",
    "expected_calibration_error",
    "f1_macro",
    "f1_weighted",
    "log_loss",
    "reliability_bins",
    "roc_auc",
    "top_k_accuracy",
]

_CLASSIFICATION = ("classification",)
_FROM_LABELS = MetricFamily(tasks=_CLASSIFICATION, higher_is_better=True, bounds=(0.0, 1.0))
_FROM_PROBS_HIGHER = MetricFamily(tasks=_CLASSIFICATION, higher_is_better=True, bounds=(0.0, 1.0), needs_probs=True)
_FROM_PROBS_LOWER = MetricFamily(tasks=_CLASSIFICATION, higher_is_better=False, needs_probs=True)


def _pair(owner: str, y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    yt = as_labels(owner, "y_true", y_true)
    yp = as_labels(owner, "y_pred", y_pred)
    same_length(owner, yt, yp)
    return yt, yp


def _with_probs(owner: str, y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    yt = as_labels(owner, "y_true", y_true)
    if yt.shape[0] == 0:
        raise ValueError(f"{owner} needs at least one sample; y_true is empty.")
    p = as_probs(owner, probs, yt.shape[0])
    bad = np.flatnonzero((yt < 0) | (yt >= p.shape[1]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"The 'y_true' parameter of {owner} holds label {int(yt[i])} at index {i}, outside the "
            f"{p.shape[1]} classes of 'probs'."
        )
    return yt, p


@_FROM_LABELS.metric("accuracy", "accuracy", unit="fraction correct")
def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of samples whose predicted class is the true one.

    Example:
        >>> accuracy([0, 1, 1, 2], [0, 1, 2, 2])
        0.75
    """
    yt, yp = _pair("accuracy", y_true, y_pred)
    return float(accuracy_score(yt, yp))


@_FROM_LABELS.metric("f1_weighted", "weighted F1", unit="0–1")
def f1_weighted(y_true: Any, y_pred: Any) -> float:
    """F1 per class averaged with the classes' supports as weights (a class never present weighs nothing).

    A class that is never predicted has F1 0 (its precision is 0/0, counted as 0, scikit-learn's
    ``zero_division=0``).

    Example:
        >>> round(f1_weighted([0, 0, 1, 1], [0, 1, 1, 1]), 4)
        0.7333
    """
    yt, yp = _pair("f1_weighted", y_true, y_pred)
    return float(f1_score(yt, yp, average="weighted", zero_division=0.0))


@_FROM_LABELS.metric("f1_macro", "macro F1", unit="0–1")
def f1_macro(y_true: Any, y_pred: Any) -> float:
    """Unweighted mean of the per-class F1 over the classes that occur in ``y_true`` or ``y_pred``.

    Example:
        >>> round(f1_macro([0, 0, 1, 1], [0, 1, 1, 1]), 4)
        0.7333
    """
    yt, yp = _pair("f1_macro", y_true, y_pred)
    return float(f1_score(yt, yp, labels=np.union1d(yt, yp), average="macro", zero_division=0.0))


def top_k_accuracy(y_true: Any, probs: Any, k: int = 3) -> float:
    """Fraction of samples whose true class is among the ``k`` most probable classes.

    With ``k >= C`` every sample counts as a hit (1.0), as in scikit-learn's ``top_k_accuracy_score``; ties in
    probability are broken as scikit-learn breaks them.

    Args:
        y_true: ``[n]`` true class indices.
        probs: ``[n, C]`` class probabilities.
        k: How many of the most probable classes count.

    Example:
        >>> top_k_accuracy([0, 1, 2], [[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.7, 0.2, 0.1]], k=2)
        0.6666666666666666
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"The 'k' parameter of top_k_accuracy must be a positive integer. Got {k!r}.")
    yt, p = _with_probs("top_k_accuracy", y_true, probs)
    n_classes = p.shape[1]
    if k >= n_classes:
        return 1.0
    if n_classes == 2:  # k == 1: the arg-max
        return float(np.mean(p.argmax(axis=1) == yt))
    from sklearn.metrics import top_k_accuracy_score

    return float(top_k_accuracy_score(yt, p, k=k, labels=np.arange(n_classes)))


for _k in (3, 5):  # one registered metric per k, each with its own description
    _FROM_PROBS_HIGHER.metric(
        f"top{_k}_accuracy",
        f"top-{_k} accuracy",
        unit="fraction correct",
        options={"k": _k},
        description=f"Fraction of samples whose true class is among the {_k} most probable (1.0 when C <= {_k}).",
    )(top_k_accuracy)


@_FROM_PROBS_LOWER.metric("log_loss", "NLL", bounds=(0.0, None), unit="nats", aliases=("nll",))
def log_loss(y_true: Any, probs: Any) -> float:
    """Mean negative log-likelihood of the true class (natural log), scikit-learn's ``log_loss``.

    NaN with a single class (there is nothing to predict).

    Example:
        >>> round(log_loss([0, 1], [[0.8, 0.2], [0.4, 0.6]]), 4)
        0.367
    """
    yt, p = _with_probs("log_loss", y_true, probs)
    if p.shape[1] < 2:
        return math.nan
    return float(sk_log_loss(yt, p, labels=np.arange(p.shape[1])))


@_FROM_PROBS_LOWER.metric("brier", "Brier score", bounds=(0.0, 2.0))
def brier_score(y_true: Any, probs: Any) -> float:
    """Mean over samples of the squared distance between ``probs`` and the one-hot truth, summed over classes.

    The multi-class form, in [0, 2]: scikit-learn's ``brier_score_loss(..., scale_by_half=False)``. For two
    classes it is twice the binary Brier score of the positive class.

    Example:
        >>> brier_score([0, 1], [[1.0, 0.0], [0.5, 0.5]])
        0.25
    """
    yt, p = _with_probs("brier_score", y_true, probs)
    onehot = np.zeros_like(p)
    onehot[np.arange(yt.shape[0]), yt] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-class predictions grouped by confidence: what ECE and reliability diagrams are computed from.

    Attributes:
        edges: ``[K + 1]`` bin edges over [0, 1]; bins are right-closed (``(a, b]``, the first one also holds 0).
        count: ``[K]`` predictions per bin (float64).
        confidence: ``[K]`` sum of the top-class confidences per bin.
        correct: ``[K]`` number of correct top-class predictions per bin.
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray


def reliability_bins(confidence: Any, correct: Any, n_bins: int = 15, *, adaptive: bool = False) -> ReliabilityBins:
    """Bin top-class predictions by confidence: equal-width bins over [0, 1], or equal-mass ones.

    Args:
        confidence: ``[n]`` top-class probabilities.
        correct: ``[n]`` 1.0 where the top class is the true one, else 0.0.
        n_bins: Number of bins (equal-mass bins collapse where confidences tie).
        adaptive: Equal-mass bins (quantiles of the confidence) instead of equal-width ones.

    Example:
        >>> bins = reliability_bins([0.9, 0.6, 0.7], [1.0, 0.0, 1.0], n_bins=2)
        >>> bins.count.tolist(), bins.correct.tolist()
        ([0.0, 3.0], [0.0, 2.0])
    """
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"The 'n_bins' parameter of reliability_bins must be a positive integer. Got {n_bins!r}.")
    conf = np.asarray(confidence, dtype=np.float64)  # [n]
    hits = np.asarray(correct, dtype=np.float64)  # [n]
    if conf.ndim != 1 or conf.shape != hits.shape:
        raise ValueError(
            "The 'confidence' and 'correct' parameters of reliability_bins must be 1-D of the same length. "
            f"Got shapes {list(conf.shape)} and {list(hits.shape)}."
        )
    edges: np.ndarray = np.linspace(0.0, 1.0, n_bins + 1)  # [K + 1]
    if adaptive and conf.size:
        quantiles = np.quantile(conf, edges)  # equal mass; ties collapse
        quantiles[0], quantiles[-1] = 0.0, 1.0
        edges = np.unique(quantiles)
    k = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, k - 1)  # [n]; right-closed bins (a, b]
    return ReliabilityBins(
        edges=edges,
        count=np.bincount(idx, minlength=k).astype(np.float64),
        confidence=np.bincount(idx, weights=conf, minlength=k),
        correct=np.bincount(idx, weights=hits, minlength=k),
    )


@_FROM_PROBS_LOWER.metric("ece", "ECE", bounds=(0.0, 1.0))
def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = 15, *, adaptive: bool = False) -> float:
    """Expected calibration error of the top-class confidence: the count-weighted mean |accuracy - confidence|.

    Bins are equal-width over [0, 1] and right-closed (``(a, b]``, the first one also holds 0), or equal-mass
    (quantiles of the confidence) with ``adaptive=True``. torchmetrics' ``MulticlassCalibrationError`` with
    ``norm="l1"`` gives the same value unless a confidence falls exactly on a bin edge (its bins are left-closed).

    Args:
        y_true: ``[n]`` true class indices.
        probs: ``[n, C]`` class probabilities.
        n_bins: Number of bins.
        adaptive: Equal-mass bins instead of equal-width ones.

    Example:
        >>> expected_calibration_error([0, 0, 0, 1], [[0.75, 0.25]] * 4)
        0.0
    """
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(
            f"The 'n_bins' parameter of expected_calibration_error must be a positive integer. Got {n_bins!r}."
        )
    yt, p = _with_probs("expected_calibration_error", y_true, probs)
    bins = reliability_bins(p.max(axis=1), p.argmax(axis=1) == yt, n_bins, adaptive=adaptive)
    return float(np.abs(bins.correct - bins.confidence).sum() / bins.count.sum())  # sum of count * |acc - conf| / n


@_FROM_PROBS_HIGHER.metric("roc_auc", "ROC-AUC")
def roc_auc(y_true: Any, probs: Any) -> float:
    """Area under the ROC curve: binary, or the one-vs-rest macro average over classes.

    NaN unless every class occurs in ``y_true`` (a class without positives has no ROC curve) and there are at
    least two classes.

    Example:
        >>> roc_auc([0, 0, 1, 1], [[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
        0.75
    """
    yt, p = _with_probs("roc_auc", y_true, probs)
    n_classes = p.shape[1]
    if n_classes < 2 or np.setdiff1d(np.arange(n_classes), yt).size:
        return math.nan
    # The area under the ROC curve is the Mann-Whitney statistic: the chance that a positive outscores a negative,
    # ties counting half (average ranks). One ranking of every column gives every one-vs-rest area at once;
    # scikit-learn's roc_auc_score (the tests' anchor) gives the same numbers at ~10x the cost per call.
    columns = [1] if n_classes == 2 else list(range(n_classes))
    ranks = rankdata(p[:, columns], axis=0)  # [n, k] average ranks within each column
    positive = yt[:, None] == np.asarray(columns)[None, :]  # [n, k]
    n_pos = positive.sum(axis=0).astype(np.float64)
    n_neg = yt.shape[0] - n_pos
    areas = ((ranks * positive).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(areas.mean())


def classification_metrics(
    y_true: Any,
    y_pred: Any,
    class_names: Sequence[str] | None = None,
    *,
    probs: Any = None,
) -> dict[str, Any]:
    """Accuracy, F1 (weighted and macro), per-class precision/recall/F1 and the confusion matrix.

    Every class ``0 .. C-1`` appears in ``per_class`` and in the ``C x C`` confusion matrix, also when the data
    holds none of it. Precision or recall of a class that is never predicted or never present is 0 (its ratio
    is 0/0). ``f1_weighted`` weights classes by their support, so absent classes do not count. ``f1_macro``
    is the unweighted mean over the classes that occur in ``y_true`` or ``y_pred`` (scikit-learn's choice);
    when that is fewer than ``C`` a note says so.

    Args:
        y_true: ``[n]`` true class indices (int, bool, or whole-number floats; numpy or torch).
        y_pred: ``[n]`` predicted class indices.
        class_names: Class index -> name. If None, ``C`` is ``probs.shape[1]`` when ``probs`` is given, else
            the largest label + 1, and the names are ``"0"``, ``"1"``, ...
        probs: Optional ``[n, C]`` predicted class probabilities (rows summing to 1). Adds ``log_loss`` and
            ``roc_auc`` (one-vs-rest macro average; NaN with a note unless every class occurs in ``y_true``).

    Returns:
        ``n``, ``accuracy``, ``f1_weighted``, ``f1_macro``, ``class_names``, ``per_class`` (name ->
        ``precision``, ``recall``, ``f1``, ``support``), ``confusion_matrix`` (list of rows; row = true class,
        column = predicted class), ``notes`` (list of strings), and ``log_loss``/``roc_auc`` when ``probs`` is
        given.

    Raises:
        ValueError: on empty input, different lengths (both are named), labels outside ``[0, C)``, duplicate
            class names, or ``probs`` of the wrong shape, with values outside [0, 1] or rows not summing to 1.

    Example:
        >>> m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["cat", "dog"])
        >>> m["accuracy"], m["confusion_matrix"]
        (0.75, [[1, 1], [0, 2]])
        >>> m["per_class"]["dog"]
        {'precision': 0.6666666666666666, 'recall': 1.0, 'f1': 0.8, 'support': 2}
    """
    owner = "classification_metrics"
    yt, yp = _pair(owner, y_true, y_pred)
    n = int(yt.shape[0])
    P = None if probs is None else as_probs(owner, probs, n)
    if class_names is not None:
        names = [str(c) for c in class_names]
        if len(set(names)) != len(names):
            raise ValueError(f"The 'class_names' parameter of classification_metrics has duplicates: {names}.")
        n_classes = len(names)
    else:
        n_classes = int(P.shape[1]) if P is not None else int(max(yt.max(), yp.max())) + 1
        names = [str(i) for i in range(n_classes)]
    if n_classes == 0:
        raise ValueError("classification_metrics needs at least one class; 'class_names' is empty.")
    for arg, arr in (("y_true", yt), ("y_pred", yp)):
        bad = np.flatnonzero((arr < 0) | (arr >= n_classes))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"The '{arg}' parameter of classification_metrics holds label {int(arr[i])} at index {i}, outside "
                f"the {n_classes} classes [0, {n_classes})."
            )
    if P is not None and P.shape[1] != n_classes:
        raise ValueError(
            f"The 'probs' parameter of classification_metrics must have C={n_classes} columns (one per class). "
            f"Got shape {P.shape}."
        )

    labels = np.arange(n_classes)
    notes: list[str] = []
    # One confusion matrix gives every count-based score (scikit-learn's definitions, which the tests anchor to):
    # one bincount instead of five scikit-learn calls, each validating its input (this runs after every epoch).
    cm = confusion_counts(yt, yp, n_classes)  # [C true, C predicted]
    f1, support, predicted = f1_per_class(cm)
    tp = np.diag(cm).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    present = np.flatnonzero(support + predicted > 0)  # classes in y_true or y_pred
    if present.size < n_classes:
        notes.append(
            f"f1_macro averages over the {present.size} of {n_classes} classes that occur in y_true or y_pred."
        )
    out: dict[str, Any] = {
        "n": n,
        "accuracy": float(tp.sum() / n),
        "f1_weighted": float(np.average(f1, weights=support)),
        "f1_macro": float(f1[present].mean()),
        "class_names": names,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": cm.astype(int).tolist(),
    }
    if P is not None:
        if n_classes < 2:
            notes.append("log_loss and roc_auc are nan: they need at least two classes.")
        else:
            missing = np.setdiff1d(labels, yt)
            if missing.size:
                notes.append(f"roc_auc is nan: classes {missing.tolist()} never occur in y_true.")
        out["log_loss"] = log_loss(yt, P)
        out["roc_auc"] = roc_auc(yt, P)
    out["notes"] = notes
    return out
