"""Inspection: the weights a fusion uses (attention, gates, modality weights), read generically by shape.

:meth:`Fusion.forward_with_weights` returns fusion-specific weights. They are interpreted by shape only:

* ``[B, T, M]`` (or ``[B, T, M, ...]``, averaged over the trailing dimensions): per-modality weights over time;
* ``[B, T, K]`` with ``K != M``: ``K`` channels over time (e.g. a gate vector), shown as a heat map;
* ``[B, M]`` (or ``[B, M, ...]``): one weight per modality and sample;
* anything else is reported with its shape and not plotted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.types import Batch

__all__ = ["FusionWeights", "fusion_weights", "interpret_weights"]


@dataclass
class FusionWeights:
    """Fusion weights in one of the shapes the report can draw.

    Attributes:
        kind: ``"modality_time"`` ([B, T, M]), ``"channel_time"`` ([B, T, K]), ``"modality_static"`` ([B, M]) or
            ``"none"`` / ``"unsupported"``.
        values: The weights in that layout (None for ``none`` / ``unsupported``).
        labels: Names of the last axis (modalities, or channel numbers).
        note: Why nothing is shown, or the raw shape.
    """

    kind: str
    values: Tensor | None
    labels: list[str]
    note: str = ""


def interpret_weights(weights: Any, batch_size: int, steps: int, modalities: list[str]) -> FusionWeights:
    """Put the raw weights of ``forward_with_weights`` into a drawable layout, by shape alone.

    Example:
        >>> w = interpret_weights(torch.rand(2, 5, 3), 2, 5, ["a", "t", "v"])
        >>> w.kind, w.labels
        ('modality_time', ['a', 't', 'v'])
        >>> interpret_weights(torch.rand(2, 4, 5, 5), 2, 5, ["a", "t", "v"]).kind
        'unsupported'
    """
    if weights is None:
        return FusionWeights("none", None, [], "this fusion returns no weights")
    if isinstance(weights, Mapping):
        weights = next((v for v in weights.values() if isinstance(v, Tensor)), None)
    elif isinstance(weights, (tuple, list)):
        weights = next((v for v in weights if isinstance(v, Tensor)), None)
    if not isinstance(weights, Tensor):
        return FusionWeights("none", None, [], "this fusion returns no weight tensor")
    w = weights.detach().float().cpu()
    m = len(modalities)
    shape = list(w.shape)
    if w.dim() >= 3 and shape[0] == batch_size and shape[1] == steps:
        if shape[2] == m:
            if w.dim() > 3:
                w = w.flatten(3).mean(dim=3)  # [B, T, M]
            return FusionWeights("modality_time", w, list(modalities), f"raw shape {shape}")
        w = w.flatten(2)  # [B, T, K]
        return FusionWeights("channel_time", w, [str(i) for i in range(w.shape[-1])], f"raw shape {shape}")
    if w.dim() >= 2 and shape[0] == batch_size and shape[1] == m:
        if w.dim() > 2:
            w = w.flatten(2).mean(dim=2)  # [B, M]
        return FusionWeights("modality_static", w, list(modalities), f"raw shape {shape}")
    return FusionWeights("unsupported", None, [], f"weights of shape {shape} are not drawn (not [B, T, ...] or [B, M])")


def fusion_weights(model: nn.Module, batch: Batch) -> FusionWeights:
    """Run ``model``'s encoders and its fusion's ``forward_with_weights`` on ``batch`` and interpret the weights.

    The model must expose ``modalities``, ``encode`` and ``fusion`` (as :class:`~mmfuse.models.MultimodalModel`
    does); the batch may carry more modalities than the model, which are ignored.

    Example:
        >>> from mmfuse.models import ModelConfig, build_model
        >>> model = build_model(ModelConfig({"a": 2, "b": 3}, out_dim=2, hidden=8, fusion="weighted")).eval()
        >>> ones = torch.ones(1, 4, dtype=torch.bool)
        >>> b = Batch({"a": torch.randn(1, 4, 2), "b": torch.randn(1, 4, 3)}, {"a": ones, "b": ones}, ones)
        >>> fusion_weights(model, b).kind
        'modality_time'
    """
    mods = list(getattr(model, "modalities", sorted(batch.inputs)))
    fusion = getattr(model, "fusion", None)
    if fusion is None or not hasattr(fusion, "forward_with_weights"):
        return FusionWeights("none", None, [], "the model has no fusion module with forward_with_weights")
    pad = batch.padding_mask
    masks = {m: batch.masks[m] & pad for m in mods}
    with torch.no_grad():
        encoded = model.encode({m: batch.inputs[m] for m in mods}, masks, pad)  # type: ignore[operator]
        _, raw = fusion.forward_with_weights(encoded, masks)
    return interpret_weights(raw, pad.shape[0], pad.shape[1], mods)
