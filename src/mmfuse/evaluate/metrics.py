"""Evaluation metrics: pure functions on arrays, and an accumulator over batches that calls the same functions.

The functions return plain, JSON-safe dicts (Python ``int``/``float``/``str``/``list``), the form stored in
``test_metrics.json`` and read by the report. The maths is scikit-learn's and SciPy's; this module adds input
checks, fixed label sets (every class appears in the outputs even when absent from the data) and explicit
handling of undefined values, each explained in the dict's ``notes`` list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_recall_fscore_support,
    roc_auc_score,
    root_mean_squared_error,
)

from mmfuse.types import TaskType

__all__ = [
    "MetricAccumulator",
    "classification_metrics",
    "regression_metrics",
    "summarize_runs",
]

_PROB_SUM_TOL = 1e-3


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _labels(name: str, y: Any) -> np.ndarray:
    """Return ``y`` as 1-D int64 class indices, refusing fractional, non-finite or non-numeric labels."""
    arr = _to_numpy(y)
    if arr.ndim != 1:
        raise ValueError(f"The '{name}' parameter of classification_metrics must be 1-D [n]. Got shape {arr.shape}.")
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"The '{name}' parameter of classification_metrics must hold integer class indices. "
                f"Got {arr[i].item()!r} at index {i}."
            )
        return arr.astype(np.int64)
    raise ValueError(
        f"The '{name}' parameter of classification_metrics must hold integer class indices. Got dtype {arr.dtype}."
    )


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
    yt = _labels("y_true", y_true)
    yp = _labels("y_pred", y_pred)
    if yt.shape[0] != yp.shape[0]:
        raise ValueError(
            "y_true and y_pred of classification_metrics must have the same length. "
            f"Got len(y_true)={yt.shape[0]} and len(y_pred)={yp.shape[0]}."
        )
    n = int(yt.shape[0])
    if n == 0:
        raise ValueError("classification_metrics needs at least one sample; y_true and y_pred are empty.")

    P: np.ndarray | None = None
    if probs is not None:
        P = _to_numpy(probs).astype(np.float64)
        if P.ndim != 2 or P.shape[0] != n:
            raise ValueError(
                f"The 'probs' parameter of classification_metrics must have shape [n={n}, C]. Got {P.shape}."
            )

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

    labels = np.arange(n_classes)
    notes: list[str] = []
    precision, recall, f1, support = precision_recall_fscore_support(
        yt, yp, labels=labels, average=None, zero_division=0.0
    )
    present = np.union1d(yt, yp)
    if present.size < n_classes:
        notes.append(
            f"f1_macro averages over the {present.size} of {n_classes} classes that occur in y_true or y_pred."
        )
    out: dict[str, Any] = {
        "n": n,
        "accuracy": float(accuracy_score(yt, yp)),
        "f1_weighted": float(f1_score(yt, yp, labels=labels, average="weighted", zero_division=0.0)),
        "f1_macro": float(f1_score(yt, yp, labels=present, average="macro", zero_division=0.0)),
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
        "confusion_matrix": confusion_matrix(yt, yp, labels=labels).astype(int).tolist(),
    }
    if P is not None:
        out.update(_probability_metrics(yt, P, n_classes, notes))
    out["notes"] = notes
    return out


def _probability_metrics(yt: np.ndarray, P: np.ndarray, n_classes: int, notes: list[str]) -> dict[str, float]:
    if P.shape[1] != n_classes:
        raise ValueError(
            f"The 'probs' parameter of classification_metrics must have C={n_classes} columns (one per class). "
            f"Got shape {P.shape}."
        )
    if not np.isfinite(P).all() or (P < 0).any() or (P > 1).any():
        raise ValueError("The 'probs' parameter of classification_metrics must hold finite values in [0, 1].")
    sums = P.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _PROB_SUM_TOL)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"Each row of the 'probs' parameter of classification_metrics must sum to 1 (softmax output). "
            f"Row {i} sums to {sums[i]:.6g}."
        )
    P = P / sums[:, None]  # float32 softmax rows are off by ~1e-7; scikit-learn wants an exact sum
    if n_classes < 2:
        notes.append("log_loss and roc_auc are nan: they need at least two classes.")
        return {"log_loss": math.nan, "roc_auc": math.nan}
    result = {"log_loss": float(log_loss(yt, P, labels=np.arange(n_classes)))}
    missing = np.setdiff1d(np.arange(n_classes), yt)
    if missing.size:
        notes.append(f"roc_auc is nan: classes {missing.tolist()} never occur in y_true.")
        result["roc_auc"] = math.nan
    elif n_classes == 2:
        result["roc_auc"] = float(roc_auc_score(yt, P[:, 1]))
    else:
        result["roc_auc"] = float(roc_auc_score(yt, P, multi_class="ovr", average="macro", labels=np.arange(n_classes)))
    return result


def _targets(name: str, y: Any) -> np.ndarray:
    arr = _to_numpy(y)
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"The '{name}' parameter of regression_metrics must be [n] or [n, K] (K targets). Got shape {arr.shape}."
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"The '{name}' parameter of regression_metrics must hold numbers. Got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=tuple(range(1, arr.ndim))))
    if bad.size:
        raise ValueError(
            f"The '{name}' parameter of regression_metrics holds NaN or inf at index {int(bad[0])} "
            f"({bad.size} such row(s))."
        )
    return arr


def _pearson(t: np.ndarray, p: np.ndarray, label: str, notes: list[str]) -> float:
    if t.shape[0] < 2:
        notes.append(f"pearson{label} is nan: it needs at least two samples.")
        return math.nan
    constant = [name for name, v in (("y_true", t), ("y_pred", p)) if np.ptp(v) == 0]
    if constant:
        notes.append(f"pearson{label} is nan: {' and '.join(constant)} is constant, so the correlation is 0/0.")
        return math.nan
    return float(stats.pearsonr(t, p).statistic)


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
    yt = _targets("y_true", y_true)
    yp = _targets("y_pred", y_pred)
    if yt.shape != yp.shape:
        raise ValueError(
            f"y_true and y_pred of regression_metrics must have the same shape. Got {yt.shape} and {yp.shape}."
        )
    if yt.shape[0] == 0:
        raise ValueError("regression_metrics needs at least one sample; y_true and y_pred are empty.")
    t2 = yt.reshape(yt.shape[0], -1)  # [n, K]
    p2 = yp.reshape(yp.shape[0], -1)  # [n, K]
    k = t2.shape[1]
    notes: list[str] = []
    mae = mean_absolute_error(t2, p2, multioutput="raw_values")
    rmse = root_mean_squared_error(t2, p2, multioutput="raw_values")
    pearson = [_pearson(t2[:, j], p2[:, j], f"[{j}]" if k > 1 else "", notes) for j in range(k)]
    return {
        "n": int(t2.shape[0]),
        "n_targets": int(k),
        "mae": float(np.mean(mae)),
        "rmse": float(np.mean(rmse)),
        "pearson": float(np.mean(pearson)),
        "per_target": [{"mae": float(mae[j]), "rmse": float(rmse[j]), "pearson": float(pearson[j])} for j in range(k)],
        "notes": notes,
    }


class MetricAccumulator:
    """Collect predictions over batches, then compute the metrics once with the functions above.

    ``update`` accepts numpy arrays or torch tensors. Sample-level batches are ``y_true``/``y_pred`` ``[B]``
    (regression ``[B]`` or ``[B, K]``), ``probs`` ``[B, C]``. Step-level batches are ``[B, T]`` (regression
    ``[B, T]`` or ``[B, T, K]``), ``probs`` ``[B, T, C]``, with ``mask`` ``[B, T]`` True at real steps: only those
    steps are kept, whatever the padded positions hold. Without a mask, classification labels of any shape
    are flattened, and a 2-D regression target is read as ``[B, K]``; so pass the padding mask for step-level
    regression.

    Args:
        task: ``"classification"`` or ``"regression"`` (or a :class:`~mmfuse.types.TaskType`).
        class_names: Passed to :func:`classification_metrics`.

    Example:
        >>> import torch
        >>> acc = MetricAccumulator("classification", ["a", "b"])
        >>> acc.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]), mask=torch.tensor([[True, True, False]]))
        >>> acc.update([1], [0])
        >>> acc.n, acc.compute()["accuracy"]
        (3, 0.6666666666666666)
    """

    def __init__(
        self, task: TaskType | str = TaskType.CLASSIFICATION, class_names: Sequence[str] | None = None
    ) -> None:
        try:
            self.task = TaskType(task)
        except ValueError:
            raise ValueError(
                f"The 'task' parameter of MetricAccumulator must be one of {[t.value for t in TaskType]}. Got {task!r}."
            ) from None
        self.class_names = None if class_names is None else tuple(class_names)
        self._true: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []

    @property
    def n(self) -> int:
        """Number of samples (or real steps) collected so far."""
        return int(sum(a.shape[0] for a in self._true))

    def reset(self) -> None:
        """Forget every collected batch."""
        self._true, self._pred, self._probs = [], [], []

    def update(self, y_true: Any, y_pred: Any, probs: Any = None, mask: Any = None) -> None:
        """Add one batch.

        Args:
            y_true: True labels/targets of the batch.
            y_pred: Predicted class indices (classification) or values (regression), same shape as ``y_true``.
            probs: Classification only: class probabilities, ``y_true``'s shape + ``[C]``. Give it for every
                batch or for none.
            mask: Optional bool mask over the leading dimensions of ``y_true`` (``[B, T]`` padding mask).

        Raises:
            ValueError: on mismatched shapes, a non-bool mask, ``probs`` for regression, or ``probs`` given
                for some batches and not others.
        """
        t, p = _to_numpy(y_true), _to_numpy(y_pred)
        if t.shape != p.shape:
            raise ValueError(
                f"y_true and y_pred of MetricAccumulator.update must have the same shape. Got {t.shape} and {p.shape}."
            )
        P = None if probs is None else _to_numpy(probs)
        if P is not None:
            if self.task is TaskType.REGRESSION:
                raise ValueError("The 'probs' parameter of MetricAccumulator.update is for classification only.")
            if P.shape[:-1] != t.shape:
                raise ValueError(
                    f"The 'probs' parameter of MetricAccumulator.update must have shape {t.shape} + [C]. Got {P.shape}."
                )
        if self._true and (P is None) != (not self._probs):
            raise ValueError("MetricAccumulator.update needs 'probs' for every batch or for none.")
        if mask is not None:
            m = _to_numpy(mask)
            if m.dtype != np.bool_:
                raise ValueError(f"The 'mask' parameter of MetricAccumulator.update must be bool. Got {m.dtype}.")
            if t.shape[: m.ndim] != m.shape:
                raise ValueError(
                    f"The 'mask' parameter of MetricAccumulator.update must match the leading dimensions of y_true "
                    f"{t.shape}. Got {m.shape}."
                )
            t, p = t[m], p[m]  # [n_real, ...]
            P = None if P is None else P[m]  # [n_real, C]
        elif self.task is TaskType.CLASSIFICATION:
            t, p = t.reshape(-1), p.reshape(-1)  # [B] or [B, T] -> [n]
            P = None if P is None else P.reshape(-1, P.shape[-1])  # [..., C] -> [n, C]
        if self.task is TaskType.REGRESSION and t.ndim > 2:
            t, p = t.reshape(-1, t.shape[-1]), p.reshape(-1, p.shape[-1])  # [B*T, K]
        elif self.task is TaskType.REGRESSION and t.ndim == 0:
            t, p = t.reshape(1), p.reshape(1)  # [] -> [1]
        if self._true and t.shape[1:] != self._true[0].shape[1:]:
            raise ValueError(
                f"MetricAccumulator.update got targets of shape {t.shape[1:]} per sample after "
                f"{self._true[0].shape[1:]} in earlier batches."
            )
        self._true.append(t)
        self._pred.append(p)
        if P is not None:
            self._probs.append(P)

    def compute(self) -> dict[str, Any]:
        """Return :func:`classification_metrics` or :func:`regression_metrics` over everything collected.

        Raises:
            ValueError: when nothing was collected.
        """
        if not self._true:
            raise ValueError("MetricAccumulator.compute has no data; call update first.")
        t = np.concatenate(self._true)
        p = np.concatenate(self._pred)
        if self.task is TaskType.REGRESSION:
            return regression_metrics(t, p)
        probs = np.concatenate(self._probs) if self._probs else None
        return classification_metrics(t, p, self.class_names, probs=probs)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def summarize_runs(
    rows: Sequence[Mapping[str, Any]],
    by: str = "fusion",
    metrics: Sequence[str] | None = None,
    *,
    count_key: str = "n_seeds",
) -> list[dict[str, Any]]:
    """Mean and standard deviation of each metric per group of runs (the rows of ``summary.csv``).

    The standard deviation is the sample one (``ddof=1``) when a group has more than one run, and 0.0 for a
    single run. A NaN in a metric makes that group's mean and std NaN (no run is silently dropped).

    Args:
        rows: One dict per run (e.g. fusion x seed), as in ``results.csv``.
        by: The key that defines the groups. Groups keep the order of their first row.
        metrics: The keys to summarise. If None: every key other than ``by`` and ``"seed"`` whose value is a
            number in every row.
        count_key: Name of the output column with the number of runs per group.

    Returns:
        One dict per group: ``{by: value, count_key: k, "<metric>_mean": ..., "<metric>_std": ...}``.

    Raises:
        ValueError: when ``rows`` is empty, a row lacks ``by`` or a metric, or a metric value is not a number
            (the row index is named).

    Example:
        >>> rows = [{"fusion": "concat", "seed": 0, "accuracy": 0.8}, {"fusion": "concat", "seed": 1, "accuracy": 0.9},
        ...         {"fusion": "gated", "seed": 0, "accuracy": 0.7}]
        >>> [(r["fusion"], r["n_seeds"], round(r["accuracy_mean"], 3), round(r["accuracy_std"], 4))
        ...  for r in summarize_runs(rows)]
        [('concat', 2, 0.85, 0.0707), ('gated', 1, 0.7, 0.0)]
    """
    if not rows:
        raise ValueError("summarize_runs needs at least one row; 'rows' is empty.")
    for i, row in enumerate(rows):
        if by not in row:
            raise ValueError(f"Row {i} passed to summarize_runs has no {by!r} key (the 'by' parameter).")
    if metrics is None:
        keys = [k for k in rows[0] if k not in (by, "seed")]
        metrics = [k for k in keys if all(_is_number(r.get(k)) for r in rows)]
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[by], []).append(row)
    for i, row in enumerate(rows):
        for k in metrics:
            if not _is_number(row.get(k)):
                raise ValueError(
                    f"Row {i} passed to summarize_runs ({by}={row[by]!r}) needs a number for metric {k!r}. "
                    f"Got {row.get(k)!r}."
                )
    out = []
    for key, members in groups.items():
        summary: dict[str, Any] = {by: key, count_key: len(members)}
        for k in metrics:
            values = np.array([float(r[k]) for r in members], dtype=np.float64)
            summary[f"{k}_mean"] = float(values.mean())
            if values.size > 1:
                summary[f"{k}_std"] = float(values.std(ddof=1))
            else:
                summary[f"{k}_std"] = 0.0 if math.isfinite(values[0]) else math.nan
        out.append(summary)
    return out
