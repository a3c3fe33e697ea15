"""Assembled models: configuration, the multimodal model, presets, and save/load.

Example:
    >>> from mmfuse.models import ModelConfig, build_model
    >>> model = build_model(ModelConfig({"audio": 73, "text": 100, "video": 100}, out_dim=2, fusion="gated"))
    >>> type(model.fusion).__name__
    'GatedFusion'
"""

from __future__ import annotations

from mmfuse.models.build import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ParameterReport,
    build_model,
    count_parameters,
    load_model,
    parameter_report,
    read_model_info,
    save_model,
)
from mmfuse.models.config import ModelConfig
from mmfuse.models.export import EXPORT_FORMATS, ExportError, export_model, export_signature
from mmfuse.models.model import MultimodalModel
from mmfuse.models.presets import PRESETS, list_presets, preset_config

__all__ = [
    "CONFIG_FILE",
    "EXPORT_FORMATS",
    "PRESETS",
    "WEIGHTS_FILE",
    "ExportError",
    "ModelConfig",
    "MultimodalModel",
    "ParameterReport",
    "build_model",
    "count_parameters",
    "export_model",
    "export_signature",
    "list_presets",
    "load_model",
    "parameter_report",
    "preset_config",
    "read_model_info",
    "save_model",
]
