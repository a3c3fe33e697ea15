"""Robustness: metric-vs-imperfection curves and MultiBench's relative and effective robustness.

Perturbations (applied to normalised inputs, only at present steps; masked steps stay missing):

* Gaussian noise at level ``s``: ``x + s * std_d * N(0, 1)`` with ``std_d`` the per-feature standard deviation of
  the evaluated split, so ``s`` is relative to each feature's own spread;
* missing rate ``r``: every present step of the modality is marked missing with probability ``r``.

Each applies to one modality at a time or to all at once. Following MultiBench (Liang et al., 2021):

* relative robustness = the area under the metric-vs-level curve divided by the level range (the mean metric
  over the range); higher is better for accuracy-like metrics;
* effective robustness = the same area of the drop from the clean metric, minus that of a reference model
  (late fusion when the run has one), so the two are compared after equalising their clean performance.
  Positive means the model loses less than the reference as the imperfection grows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmfuse.types import Batch

__all__ = [
    "add_noise",
    "drop_steps",
    "effective_robustness",
    "feature_std",
    "relative_robustness",
]


def _curve(levels: Any, values: Any, owner: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(levels, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(
            f"The 'levels' and 'values' parameters of {owner} must be 1-D of equal length >= 2. "
            f"Got {list(x.shape)} and {list(y.shape)}."
        )
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"The 'levels' parameter of {owner} must be strictly increasing. Got {x.tolist()}.")
    return x, y


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0 / (x[-1] - x[0]))


def relative_robustness(levels: Any, values: Any) -> float:
    """Normalised area under the metric-vs-level curve (trapezoids; the mean metric over the level range).

    Example:
        >>> relative_robustness([0.0, 0.5, 1.0], [1.0, 0.8, 0.6])
        0.8
    """
    x, y = _curve(levels, values, "relative_robustness")
    return _area(x, y)


def effective_robustness(levels: Any, values: Any, reference: Any, *, higher_is_better: bool = True) -> float:
    """Area of the metric's change from its clean value, minus the reference's (positive: degrades less).

    Args:
        levels: ``[L]`` increasing imperfection levels, the first being the clean condition.
        values: ``[L]`` the model's metric at each level.
        reference: ``[L]`` the reference model's metric at the same levels.
        higher_is_better: Whether larger metric values are better (accuracy: True, MAE: False).

    Example:
        >>> effective_robustness([0, 1], [0.9, 0.8], [0.7, 0.4])   # drops 0.1 where the reference drops 0.3
        0.1
    """
    x, y = _curve(levels, values, "effective_robustness")
    _, r = _curve(levels, reference, "effective_robustness")
    gap = _area(x, y - y[0]) - _area(x, r - r[0])
    return round(gap if higher_is_better else -gap, 12)


def feature_std(batch: Batch, modality: str) -> Tensor:
    """Per-feature standard deviation ``[D_m]`` of ``modality`` over its present real steps (1 where undefined).

    Example:
        >>> x = torch.tensor([[[0.0], [2.0]]])
        >>> b = Batch({"a": x}, {"a": torch.ones(1, 2, dtype=torch.bool)}, torch.ones(1, 2, dtype=torch.bool))
        >>> feature_std(b, "a").tolist()
        [1.0]
    """
    present = batch.masks[modality] & batch.padding_mask  # [B, T]
    rows = batch.inputs[modality][present]  # [S, D_m]
    if rows.shape[0] < 2:
        return torch.ones(batch.inputs[modality].shape[-1])
    std = rows.std(dim=0, unbiased=False)
    return torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))


def add_noise(batch: Batch, modalities: list[str], level: float, std: dict[str, Tensor], generator: Any) -> Batch:
    """Add Gaussian noise ``level * std * N(0, 1)`` to the present steps of ``modalities``.

    Example:
        >>> x = torch.zeros(1, 3, 2)
        >>> b = Batch({"a": x}, {"a": torch.tensor([[True, False, True]])}, torch.ones(1, 3, dtype=torch.bool))
        >>> out = add_noise(b, ["a"], 1.0, {"a": torch.ones(2)}, torch.Generator().manual_seed(0))
        >>> bool(out.inputs["a"][0, 1].eq(0).all()), bool(out.inputs["a"][0, 0].ne(0).any())
        (True, True)
    """
    if level < 0 or not math.isfinite(level):
        raise ValueError(f"The noise 'level' must be a finite number >= 0. Got {level!r}.")
    inputs = dict(batch.inputs)
    for m in modalities:
        x = inputs[m]  # [B, T, D_m]
        noise = torch.randn(x.shape, generator=generator) * std[m] * level  # [B, T, D_m]
        present = (batch.masks[m] & batch.padding_mask).unsqueeze(-1)  # [B, T, 1]
        inputs[m] = torch.where(present, x + noise, x)
    return Batch(inputs, dict(batch.masks), batch.padding_mask, batch.targets, batch.ids, batch.groups, batch.context)


def drop_steps(batch: Batch, modalities: list[str], rate: float, generator: Any) -> Batch:
    """Mark each present step of ``modalities`` missing with probability ``rate`` (values zeroed there).

    Example:
        >>> b = Batch({"a": torch.ones(2, 50, 1)}, {"a": torch.ones(2, 50, dtype=torch.bool)},
        ...           torch.ones(2, 50, dtype=torch.bool))
        >>> out = drop_steps(b, ["a"], 0.5, torch.Generator().manual_seed(0))
        >>> 30 < int(out.masks["a"].sum()) < 70, bool((out.inputs["a"][~out.masks["a"]] == 0).all())
        (True, True)
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"The missing 'rate' must be in [0, 1]. Got {rate!r}.")
    inputs = dict(batch.inputs)
    masks = dict(batch.masks)
    for m in modalities:
        keep = torch.rand(masks[m].shape, generator=generator) >= rate  # [B, T]
        masks[m] = masks[m] & keep
        inputs[m] = torch.where(masks[m].unsqueeze(-1), inputs[m], torch.zeros_like(inputs[m]))
    return Batch(inputs, masks, batch.padding_mask, batch.targets, batch.ids, batch.groups, batch.context)
