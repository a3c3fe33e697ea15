"""Run a fitted model over data: predictions per sample or per real step, and test metrics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmfuse.train._data import BatchSource, task_spec_of
from mmfuse.train.losses import compute_loss, resolve_level, resolve_task, select_rows
from mmfuse.train.seeding import resolve_device
from mmfuse.types import LabelLevel, TaskType

__all__ = ["Predictions", "evaluate_model", "predict"]


@dataclass
class Predictions:
    """What a model predicted over a data set, one row per labelled sample or per real step.

    Step-level data are flattened: only steps inside each sequence's padding mask whose label is not ``-100``
    (classification) or NaN (regression), the marks of unlabelled steps, become rows; ``sample_index`` and
    ``step_index`` say where each row came from.

    Attributes:
        task: ``"classification"`` or ``"regression"``.
        level: ``"sample"`` or ``"step"``.
        y_pred: ``[N]`` int64 class indices, or ``[N]`` / ``[N, C]`` float32 regression outputs.
        y_true: Targets in the same layout as ``y_pred``; ``None`` when the data have no targets.
        probs: ``[N, C]`` float32 softmax probabilities (classification), else ``None``.
        ids: The id of every sequence read, in order (one per sequence, not per row).
        sample_index: ``[N]`` int64, the position in ``ids`` of each row's sequence.
        step_index: ``[N]`` int64, the time step of each row (step level), else ``None``.

    Example:
        >>> p = Predictions("classification", "step", np.array([1, 0, 1]), np.array([1, 1, 1]), None,
        ...                 ["a", "b"], np.array([0, 0, 1]), np.array([0, 1, 0]))
        >>> len(p), p.row_ids
        (3, ['a', 'a', 'b'])
    """

    task: str
    level: str
    y_pred: np.ndarray
    y_true: np.ndarray | None
    probs: np.ndarray | None
    ids: list[str]
    sample_index: np.ndarray
    step_index: np.ndarray | None

    def __len__(self) -> int:
        return int(self.y_pred.shape[0])

    @property
    def row_ids(self) -> list[str]:
        """The sequence id of every row."""
        return [self.ids[i] for i in self.sample_index.tolist()]


def _model_device(model: nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _config_task(model: nn.Module) -> tuple[TaskType | None, LabelLevel | None]:
    """Task and label level declared by a model's ``config`` (``MultimodalModel``), if it has them."""
    config = getattr(model, "config", None)
    task = getattr(config, "task", None)
    level = getattr(config, "label_level", None)
    return (
        None if task is None else resolve_task(task),
        None if level is None else resolve_level(level),
    )


def resolve_task_level(model: nn.Module, data: Any, task: Any = None, level: Any = None) -> tuple[Any, Any]:
    """Task type and label level from, in order: the arguments, the model's config, the data set's ``TaskSpec``.

    Either may come back ``None``; callers infer what is left from the first batch.
    """
    spec = task_spec_of(data)
    model_task, model_level = _config_task(model)
    if task is not None and getattr(task, "level", None) is not None and level is None:
        level = task.level  # a TaskSpec carries both
    task_type = resolve_task(task) if task is not None else model_task
    if task_type is None and spec is not None:
        task_type = resolve_task(spec)
    label_level = resolve_level(level) if level is not None else model_level
    if label_level is None and spec is not None and getattr(spec, "level", None) is not None:
        label_level = resolve_level(spec.level)
    return task_type, label_level


def _infer_task(targets: Tensor | None) -> TaskType:
    if targets is None:
        raise ValueError(
            "Cannot tell classification from regression: the model has no config, the data are not a data set, "
            "and the batches have no targets. Pass task='classification' or task='regression'."
        )
    return TaskType.REGRESSION if targets.is_floating_point() else TaskType.CLASSIFICATION


class _Collector:
    """Accumulates labelled rows and losses over batches, then builds :class:`Predictions`."""

    def __init__(self, task: TaskType | None, level: LabelLevel | None) -> None:
        self.task = task
        self.level = level
        self.preds: list[Tensor] = []
        self.trues: list[Tensor] = []
        self.samples: list[Tensor] = []
        self.steps: list[Tensor] = []
        self.ids: list[str] = []
        self.has_targets = True
        self.loss_sum = 0.0
        self.loss_rows = 0

    def add(self, outputs: Tensor, batch: Any, loss_kwargs: dict[str, Any] | None) -> None:
        if self.task is None:
            self.task = _infer_task(batch.targets)
        if self.level is None:
            self.level = LabelLevel.STEP if outputs.ndim == 3 else LabelLevel.SAMPLE
        rows = select_rows(outputs, batch, self.task, self.level)
        offset = len(self.ids)
        self.ids.extend(
            batch.ids if len(batch.ids) == batch.batch_size else [str(offset + i) for i in range(batch.batch_size)]
        )
        self.preds.append(rows.outputs.detach().float().cpu())
        self.samples.append(rows.sample.cpu() + offset)
        if rows.step is not None:
            self.steps.append(rows.step.cpu())
        if rows.targets is None:
            self.has_targets = False
        else:
            self.trues.append(rows.targets.detach().cpu())
            if loss_kwargs is not None and rows.outputs.shape[0] > 0:
                loss = compute_loss(outputs, batch, self.task, level=self.level, **loss_kwargs)
                self.loss_sum += float(loss) * rows.outputs.shape[0]
                self.loss_rows += rows.outputs.shape[0]

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.loss_rows if self.loss_rows else float("nan")

    def result(self) -> Predictions:
        if self.task is None or self.level is None:
            raise ValueError("No batches were read: the data are empty.")
        raw = torch.cat(self.preds) if self.preds else torch.zeros(0)
        y_true = torch.cat(self.trues).numpy() if (self.has_targets and self.trues) else None
        probs = None
        if self.task == TaskType.CLASSIFICATION:
            probs_t = torch.softmax(raw, dim=-1) if raw.numel() else raw.reshape(0, 0)  # [N, C]; [0, 0] when empty
            probs = probs_t.numpy().astype(np.float32)
            y_pred = raw.argmax(dim=-1).numpy().astype(np.int64) if raw.numel() else np.zeros(0, dtype=np.int64)
            if y_true is not None:
                y_true = y_true.astype(np.int64)
        else:
            y_pred = raw.numpy().astype(np.float32)
            if y_true is not None:
                y_true = y_true.astype(np.float32)
        sample_index = torch.cat(self.samples).numpy().astype(np.int64) if self.samples else np.zeros(0, np.int64)
        step_index = None
        if self.level == LabelLevel.STEP:
            step_index = torch.cat(self.steps).numpy().astype(np.int64) if self.steps else np.zeros(0, np.int64)
        return Predictions(
            task=self.task.value,
            level=self.level.value,
            y_pred=y_pred,
            y_true=y_true,
            probs=probs,
            ids=list(self.ids),
            sample_index=sample_index,
            step_index=step_index,
        )


def run_inference(
    model: nn.Module,
    batches: Iterable[Any],
    device: torch.device,
    task: TaskType | None,
    level: LabelLevel | None,
    loss_kwargs: dict[str, Any] | None = None,
) -> tuple[Predictions, float]:
    """Evaluate ``model`` over ``batches`` without gradients; return predictions and the mean loss per row."""
    collector = _Collector(task, level)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                batch = batch.to(device)
                collector.add(model(batch), batch, loss_kwargs)
    finally:
        model.train(was_training)
    return collector.result(), collector.mean_loss


def predict(
    model: nn.Module,
    data: Any,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    *,
    task: Any = None,
    level: Any = None,
    num_workers: int = 0,
) -> Predictions:
    """Predict over a data set (or a re-iterable of :class:`~mmfuse.types.Batch`), in evaluation mode.

    The model is moved to ``device``. Task and label level come from ``task``/``level`` when given, else from
    the model's ``config`` (a :class:`~mmfuse.models.MultimodalModel`), else from the data set's ``TaskSpec``,
    else from the first batch (integer targets: classification; 3-D outputs: step level).

    Args:
        model: Called as ``model(batch)``.
        data: A data set of records (read in order, ``batch_size`` at a time) or a re-iterable of batches.
        batch_size: Sequences per batch when ``data`` is a data set.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...; ``None`` keeps the model where it is.
        task: ``"classification"``, ``"regression"`` or a ``TaskSpec``.
        level: ``"sample"`` or ``"step"``.
        num_workers: Loader worker processes when ``data`` is a data set.

    Example:
        >>> from mmfuse.types import Batch
        >>> class Last(nn.Module):
        ...     def forward(self, batch):
        ...         return batch.inputs["x"][:, -1, :]   # [B, C]
        >>> batch = Batch({"x": torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]])}, {"x": torch.ones(2, 1, dtype=torch.bool)},
        ...               torch.ones(2, 1, dtype=torch.bool), torch.tensor([0, 0]), ids=["a", "b"])
        >>> p = predict(Last(), [batch])
        >>> p.y_pred.tolist(), p.y_true.tolist(), p.ids
        ([0, 1], [0, 0], ['a', 'b'])
    """
    dev = _model_device(model) if device is None else resolve_device(device)
    model.to(dev)
    task_type, label_level = resolve_task_level(model, data, task, level)
    source = BatchSource(data, "data", batch_size=batch_size, shuffle=False, num_workers=num_workers)
    predictions, _ = run_inference(model, source.batches(), dev, task_type, label_level)
    return predictions


def metrics_from_predictions(predictions: Predictions, class_names: Any = None) -> dict[str, Any]:
    """Apply :mod:`mmfuse.metrics` to predictions with targets."""
    from mmfuse.metrics import classification_metrics, regression_metrics

    if predictions.y_true is None:
        raise ValueError("Metrics need targets, but the data have none (targets=None).")
    if predictions.task == TaskType.CLASSIFICATION.value:
        names = list(class_names) if class_names else None
        probs = predictions.probs
        if probs is not None:  # float64 rows that sum to 1 within the checker's tolerance
            probs = probs.astype(np.float64)
            probs = probs / probs.sum(axis=1, keepdims=True)
        return dict(classification_metrics(predictions.y_true, predictions.y_pred, class_names=names, probs=probs))
    return dict(regression_metrics(predictions.y_true, predictions.y_pred))


def evaluate_model(
    model: nn.Module,
    data: Any,
    task: Any = None,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    class_names: Any = None,
) -> dict[str, Any]:
    """Predict over ``data`` and compute the metrics of ``task``.

    Classification uses :func:`mmfuse.metrics.classification_metrics` (accuracy, F1, per-class scores,
    confusion matrix); regression uses :func:`mmfuse.metrics.regression_metrics` (MAE, RMSE, Pearson).
    Step-level data are scored over every real labelled step.

    Args:
        model: A fitted model.
        data: A data set or a re-iterable of batches, with targets.
        task: ``"classification"``, ``"regression"`` or a ``TaskSpec`` (whose class names label the report);
            ``None`` resolves it as :func:`predict` does.
        batch_size: Sequences per batch when ``data`` is a data set.
        device: Where to run; ``None`` keeps the model where it is.
        class_names: Class index -> name; defaults to the ``TaskSpec``'s (argument or data set).

    Returns:
        The metrics dict.

    Example:
        >>> from mmfuse.types import Batch
        >>> class Last(nn.Module):
        ...     def forward(self, batch):
        ...         return batch.inputs["x"][:, -1, :]   # [B, C]
        >>> x = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]], [[3.0, 1.0]]])
        >>> ones = torch.ones(3, 1, dtype=torch.bool)
        >>> batch = Batch({"x": x}, {"x": ones}, ones, torch.tensor([0, 1, 1]))
        >>> evaluate_model(Last(), [batch], "classification", class_names=["no", "yes"])["accuracy"]
        0.6666666666666666
    """
    predictions = predict(model, data, batch_size=batch_size, device=device, task=task)
    if class_names is None:
        for holder in (task, task_spec_of(data)):
            names = getattr(holder, "class_names", None)
            if names:
                class_names = names
                break
    return metrics_from_predictions(predictions, class_names)
