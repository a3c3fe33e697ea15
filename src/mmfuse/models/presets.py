"""Named model presets: small dicts of :class:`ModelConfig` keyword arguments (not subclasses)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmfuse.models.config import ModelConfig
from mmfuse.types import LabelLevel, TaskType

__all__ = ["PRESETS", "list_presets", "preset_config"]

PRESETS: dict[str, dict[str, Any]] = {
    # Context model for utterance-level features (bc-LSTM style): a bidirectional GRU per modality.
    "default": {"hidden": 64, "encoder": "gru", "bidirectional": True, "dropout": 0.2, "pooling": "mean"},
    "context-gru": {
        "hidden": 64,
        "encoder": "gru",
        "bidirectional": True,
        "dropout": 0.3,
        "input_dropout": 0.1,
        "modality_dropout": 0.1,
    },
    # No temporal context: fusion and head only see one step at a time.
    "pointwise": {"hidden": 64, "encoder": "none", "dropout": 0.2},
    # Everything causal, for streaming.
    "streaming": {"hidden": 64, "encoder": "gru", "bidirectional": False, "causal": True, "pooling": "last"},
    # Small and fast, for tests and smoke runs.
    "tiny": {"hidden": 16, "encoder": "gru", "dropout": 0.0, "head_hidden": 0},
}
"""Preset name -> :class:`ModelConfig` keyword arguments."""


def list_presets() -> list[str]:
    """Return the preset names, sorted.

    Example:
        >>> "streaming" in list_presets()
        True
    """
    return sorted(PRESETS)


def preset_config(
    name: str,
    modality_dims: Mapping[str, int],
    out_dim: int,
    task: TaskType | str = TaskType.CLASSIFICATION,
    label_level: LabelLevel | str = LabelLevel.SAMPLE,
    **overrides: Any,
) -> ModelConfig:
    """Build a :class:`ModelConfig` from a preset, with optional overrides.

    Raises:
        ValueError: for an unknown preset (listing valid ones) or invalid overrides.

    Example:
        >>> cfg = preset_config("streaming", {"imu": 6}, 4, label_level="step", fusion="gated")
        >>> cfg.causal, cfg.fusion
        (True, 'gated')
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown model preset {name!r}. Valid names: {', '.join(list_presets())}.")
    kwargs = {**PRESETS[name], **overrides}
    if kwargs.get("causal") and kwargs.get("fusion") == "cross_attention":
        kwargs["fusion_kwargs"] = {"causal": True, **kwargs.get("fusion_kwargs", {})}
    return ModelConfig(dict(modality_dims), out_dim, task=task, label_level=label_level, **kwargs)
