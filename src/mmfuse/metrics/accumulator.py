"""An accumulator over batches that computes the metrics once, with the same pure functions (torchmetrics' shape)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmfuse.metrics._checks import to_numpy as _to_numpy
from mmfuse.metrics.classification import classification_metrics
from mmfuse.metrics.regression import regression_metrics
from mmfuse.types import TaskType

__all__ = ["MetricAccumulator"]


class MetricAccumulator:
    """Collect predictions over batches, then compute the metrics once with the pure functions.

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
