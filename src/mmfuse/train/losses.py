"""Masked training losses, and the selection of the rows (samples or real steps) that carry a label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfuse.types import Batch, LabelLevel, TaskType

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "IGNORE_INDEX",
    "LabelledRows",
    "LossOptions",
    "compute_loss",
    "loss_and_count",
    "resolve_level",
    "resolve_task",
    "select_rows",
]

IGNORE_INDEX = -100
"""Class index that marks a step or sample without a label (as in ``torch.nn.CrossEntropyLoss``)."""


def resolve_task(task: Any) -> TaskType:
    """Turn a :class:`TaskType`, its string value, or a data set's ``TaskSpec`` into a :class:`TaskType`.

    Example:
        >>> resolve_task("regression")
        <TaskType.REGRESSION: 'regression'>
    """
    return _resolve_enum(TaskType, task, "task", "'classification' or 'regression' (or a TaskSpec)", spec_attr="type")


def resolve_level(level: Any) -> LabelLevel:
    """Turn a :class:`LabelLevel`, its string value, or a ``TaskSpec`` (its ``level``) into a :class:`LabelLevel`.

    Example:
        >>> resolve_level("step")
        <LabelLevel.STEP: 'step'>
    """
    return _resolve_enum(LabelLevel, level, "level", "'sample' or 'step'", spec_attr="level")


_E = TypeVar("_E", TaskType, LabelLevel)


def _resolve_enum(enum: type[_E], given: Any, parameter: str, expected: str, *, spec_attr: str) -> _E:
    """Return ``enum(given)``, reading ``given.<spec_attr>`` first when ``given`` is a ``TaskSpec``.

    A value outside ``enum`` raises a ValueError naming ``parameter``, what was ``expected`` and what came.
    """
    value = getattr(given, spec_attr, given)
    try:
        return enum(getattr(value, "value", value))
    except ValueError:
        raise ValueError(f"The {parameter!r} parameter must be {expected}. Got {given!r} instead.") from None


@dataclass
class LabelledRows:
    """The rows of a batch that count: one per sample, or one per real (unpadded, labelled) step.

    Attributes:
        outputs: ``[S, C]`` (classification logits, regression with several targets) or ``[S]``.
        targets: Same leading size ``S``; ``None`` when the batch has no targets.
        sample: ``[S]`` int64, the position of each row's sequence in the batch.
        step: ``[S]`` int64, the time step of each row (step-level labels), else ``None``.
    """

    outputs: Tensor
    targets: Tensor | None
    sample: Tensor
    step: Tensor | None


def _infer_level(outputs: Tensor) -> LabelLevel:
    # [B, T, C] is the only rank that means per-step outputs; anything lower is one row per sequence.
    return LabelLevel.STEP if outputs.ndim == 3 else LabelLevel.SAMPLE


def _match_trailing(outputs: Tensor, targets: Tensor | None, lead: int) -> tuple[Tensor, Tensor | None]:
    """Drop a trailing size-1 output dimension when the targets have none (``[..., 1]`` vs ``[...]``)."""
    if targets is None:
        return outputs, None
    if outputs.ndim == lead + 1 and targets.ndim == lead and outputs.shape[-1] == 1:
        outputs = outputs.squeeze(-1)
    elif targets.ndim == lead + 1 and outputs.ndim == lead and targets.shape[-1] == 1:
        targets = targets.squeeze(-1)
    return outputs, targets


def select_rows(outputs: Tensor, batch: Batch, task: Any, level: Any = None) -> LabelledRows:
    """Pick the rows of ``outputs`` (and ``batch.targets``) that carry a label.

    Sample level: every sequence whose target is not :data:`IGNORE_INDEX` (classification). Step level: every
    step inside ``batch.padding_mask`` whose target is not :data:`IGNORE_INDEX` (classification) or NaN
    (regression): those mark unlabelled steps.
    Outputs at padded steps are never read, so NaN there cannot leak into a loss or a metric.

    Args:
        outputs: Model output: ``[B, C]`` / ``[B]`` (sample level) or ``[B, T, C]`` / ``[B, T]`` (step level).
        batch: The batch the outputs were computed from.
        task: ``"classification"`` / ``"regression"`` (or a ``TaskSpec``).
        level: ``"sample"`` / ``"step"``; ``None`` infers it: step level exactly when ``outputs`` is 3-D.

    Raises:
        ValueError: when the shapes of outputs, targets and padding mask disagree.

    Example:
        >>> b = Batch({"x": torch.zeros(2, 3, 1)}, {"x": torch.ones(2, 3, dtype=torch.bool)},
        ...           torch.tensor([[True, True, False], [True, False, False]]), torch.zeros(2, 3, dtype=torch.long))
        >>> rows = select_rows(torch.zeros(2, 3, 4), b, "classification")
        >>> rows.outputs.shape, rows.sample.tolist(), rows.step.tolist()
        (torch.Size([3, 4]), [0, 0, 1], [0, 1, 0])
    """
    task_type = resolve_task(task)
    lvl = _infer_level(outputs) if level is None else resolve_level(level)
    targets = batch.targets
    B, T = batch.padding_mask.shape  # [B, T]
    if outputs.shape[0] != B:
        raise ValueError(f"The model output has batch size {outputs.shape[0]} but the batch has {B} sequences.")
    if level is None and task_type == TaskType.REGRESSION and outputs.ndim == 2 and T > 1 and outputs.shape[1] == T:
        # [B, T] could be T regression targets per sequence or one target per step: refuse to guess, since
        # guessing "sample" would train on padded steps.
        raise ValueError(
            f"Regression output of shape {tuple(outputs.shape)} matches [B, T]: pass level='step' (one target per "
            "step) or level='sample' (several targets per sequence), or return [B, T, 1] for step targets."
        )

    if lvl == LabelLevel.SAMPLE:
        outputs, targets = _match_trailing(outputs, targets, lead=1)
        if task_type == TaskType.CLASSIFICATION:
            if outputs.ndim != 2:
                raise ValueError(
                    f"Sample-level classification needs logits [B, C]. Got output shape {tuple(outputs.shape)}."
                )
            if targets is not None and tuple(targets.shape) != (B,):
                raise ValueError(f"Sample-level classification needs targets [B]. Got {tuple(targets.shape)}.")
        if task_type == TaskType.REGRESSION and targets is not None and targets.shape != outputs.shape:
            raise ValueError(
                f"Regression outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} do not match."
            )
        valid = torch.ones(B, dtype=torch.bool, device=outputs.device)
        if task_type == TaskType.CLASSIFICATION and targets is not None:
            valid = targets != IGNORE_INDEX
        sample = torch.nonzero(valid, as_tuple=False).squeeze(1)  # [S]
        return LabelledRows(outputs[valid], None if targets is None else targets[valid], sample, None)

    # step level
    outputs, targets = _match_trailing(outputs, targets, lead=2)
    if tuple(outputs.shape[:2]) != (B, T):
        raise ValueError(
            f"Step-level outputs must start with [B, T] = {[B, T]} (the padding mask). Got {tuple(outputs.shape)}."
        )
    if task_type == TaskType.CLASSIFICATION and outputs.ndim != 3:
        raise ValueError(f"Step-level classification needs logits [B, T, C]. Got {tuple(outputs.shape)}.")
    if targets is not None:
        expected = (B, T) if task_type == TaskType.CLASSIFICATION else tuple(outputs.shape)
        if tuple(targets.shape) != expected:
            raise ValueError(f"Step-level targets must have shape {list(expected)}. Got {tuple(targets.shape)}.")
    valid = batch.padding_mask.to(torch.bool)  # [B, T]
    if task_type == TaskType.CLASSIFICATION and targets is not None:
        valid = valid & (targets != IGNORE_INDEX)
    elif targets is not None:  # regression: NaN marks an unlabelled step
        unlabelled = torch.isnan(targets) if targets.ndim == 2 else torch.isnan(targets).any(dim=-1)  # [B, T]
        valid = valid & ~unlabelled
    index = torch.nonzero(valid, as_tuple=False)  # [S, 2] (sample, step)
    return LabelledRows(
        outputs[valid],  # [S, C] or [S]
        None if targets is None else targets[valid],
        index[:, 0],
        index[:, 1],
    )


class LossOptions(TypedDict, total=False):
    """The keyword options of :func:`compute_loss` and :func:`loss_and_count` (all optional).

    Attributes:
        level: ``"sample"`` / ``"step"``; ``None`` (the default) infers it from the rank of ``outputs``.
        class_weights: ``[C]`` weight per class (classification only); missing trailing classes weigh 1.
            Default ``None``: every class weighs 1.
        label_smoothing: Cross-entropy label smoothing (default 0.0).
    """

    level: Any
    class_weights: Tensor | None
    label_smoothing: float


def compute_loss(outputs: Tensor, batch: Batch, task: Any, **options: Unpack[LossOptions]) -> Tensor:
    """Mean loss over the labelled rows: cross-entropy for classification, mean squared error for regression.

    Padded steps (``padding_mask`` False), classification targets equal to :data:`IGNORE_INDEX` and step-level
    regression targets that are NaN (unlabelled steps) are left out, so whatever the model outputs there, and
    whatever the targets hold there, does not change the loss.

    Args:
        outputs: Model output (see :func:`select_rows`).
        batch: The batch, with targets.
        task: ``"classification"`` / ``"regression"`` (or a ``TaskSpec``).
        **options: ``level``, ``class_weights``, ``label_smoothing`` (see :class:`LossOptions`).

    Returns:
        A scalar; ``0`` (without a graph) when no row carries a label.

    Example:
        >>> b = Batch({"x": torch.zeros(2, 1, 1)}, {"x": torch.ones(2, 1, dtype=torch.bool)},
        ...           torch.ones(2, 1, dtype=torch.bool), torch.tensor([0, 1]))
        >>> round(compute_loss(torch.zeros(2, 2), b, "classification").item(), 4)
        0.6931
    """
    loss, _ = loss_and_count(outputs, batch, task, **options)
    return loss


def loss_and_count(outputs: Tensor, batch: Batch, task: Any, **options: Unpack[LossOptions]) -> tuple[Tensor, int]:
    """:func:`compute_loss` and the number of labelled rows it averaged over (to weigh epoch means)."""
    unknown = sorted(set(options) - set(LossOptions.__annotations__))
    if unknown:
        raise TypeError(f"Unknown loss option(s) {unknown}. Valid options: {sorted(LossOptions.__annotations__)}.")
    level = options.get("level")
    class_weights = options.get("class_weights")
    label_smoothing = options.get("label_smoothing", 0.0)
    if batch.targets is None:
        raise ValueError("compute_loss needs a batch with targets; this batch has targets=None.")
    task_type = resolve_task(task)
    rows = select_rows(outputs, batch, task_type, level)
    targets = rows.targets
    count = int(rows.outputs.shape[0])
    if targets is None or count == 0:
        return outputs.new_zeros(()), 0
    if task_type == TaskType.CLASSIFICATION:
        weight = None
        if class_weights is not None:
            n_classes = rows.outputs.shape[-1]
            weight = torch.ones(n_classes, dtype=rows.outputs.dtype, device=rows.outputs.device)
            given = class_weights.to(device=rows.outputs.device, dtype=rows.outputs.dtype)[:n_classes]
            weight[: given.shape[0]] = given
        loss = F.cross_entropy(rows.outputs, targets.long(), weight=weight, label_smoothing=float(label_smoothing))
        return loss, count
    return F.mse_loss(rows.outputs, targets.to(rows.outputs.dtype)), count
