"""mmfuse: multimodal fusion on temporal streams.

Streams in, aligned and normalised tensors with availability masks out; a registry of fusion models; one
fair protocol to train, test and compare them; reports people can open in a browser.

The names below are the curated public API. They are imported lazily, so ``import mmfuse`` is cheap and
the command line starts quickly; subpackages (``mmfuse.align``, ``mmfuse.data``, ...) hold the rest.

Example:
    >>> import mmfuse
    >>> "concat" in mmfuse.list_fusions()
    True
    >>> "basic-motions" in mmfuse.list_datasets()
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmfuse._version import __version__

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # streams and alignment
    "Stream": "mmfuse.align",
    "StreamKind": "mmfuse.align",
    "Timeline": "mmfuse.align",
    "align": "mmfuse.align",
    "align_folder": "mmfuse.align",
    "validate_streams": "mmfuse.align",
    # data sets
    "ModalitySpec": "mmfuse.data",
    "TaskSpec": "mmfuse.data",
    "SequenceRecord": "mmfuse.data",
    "MultimodalDataset": "mmfuse.data",
    "write_dataset": "mmfuse.data",
    "open_dataset": "mmfuse.data",
    "load_dataset": "mmfuse.data",
    "list_datasets": "mmfuse.data",
    "register_dataset": "mmfuse.data",
    "collate": "mmfuse.data",
    "make_loader": "mmfuse.data",
    # preprocessing
    "ModalityNormalizers": "mmfuse.preprocess",
    "default_normalizers": "mmfuse.preprocess",
    # fusions and models
    "Fusion": "mmfuse.fusion",
    "register_fusion": "mmfuse.fusion",
    "list_fusions": "mmfuse.fusion",
    "create_fusion": "mmfuse.fusion",
    "ModelConfig": "mmfuse.models",
    "MultimodalModel": "mmfuse.models",
    "build_model": "mmfuse.models",
    "save_model": "mmfuse.models",
    "load_model": "mmfuse.models",
    # training and evaluation
    "TrainConfig": "mmfuse.train",
    "Trainer": "mmfuse.train",
    "predict": "mmfuse.train",
    "evaluate_model": "mmfuse.train",
    "CompareConfig": "mmfuse.evaluate.compare",
    "compare": "mmfuse.evaluate.compare",
    "write_report": "mmfuse.evaluate.report",
    # shared types and errors
    "Batch": "mmfuse.types",
    "MmfuseError": "mmfuse.errors",
    "NotFittedError": "mmfuse.errors",
}

__all__ = [
    "Batch",
    "CompareConfig",
    "Fusion",
    "MmfuseError",
    "ModalityNormalizers",
    "ModalitySpec",
    "ModelConfig",
    "MultimodalDataset",
    "MultimodalModel",
    "NotFittedError",
    "SequenceRecord",
    "Stream",
    "StreamKind",
    "TaskSpec",
    "Timeline",
    "TrainConfig",
    "Trainer",
    "__version__",
    "align",
    "align_folder",
    "build_model",
    "collate",
    "compare",
    "create_fusion",
    "default_normalizers",
    "evaluate_model",
    "list_datasets",
    "list_fusions",
    "load_dataset",
    "load_model",
    "make_loader",
    "open_dataset",
    "predict",
    "register_dataset",
    "register_fusion",
    "save_model",
    "validate_streams",
    "write_dataset",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmfuse' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from mmfuse.align import Stream, StreamKind, Timeline, align, align_folder, validate_streams
    from mmfuse.data import (
        ModalitySpec,
        MultimodalDataset,
        SequenceRecord,
        TaskSpec,
        collate,
        list_datasets,
        load_dataset,
        make_loader,
        open_dataset,
        register_dataset,
        write_dataset,
    )
    from mmfuse.errors import MmfuseError, NotFittedError
    from mmfuse.evaluate.compare import CompareConfig, compare
    from mmfuse.evaluate.report import write_report
    from mmfuse.fusion import Fusion, create_fusion, list_fusions, register_fusion
    from mmfuse.models import ModelConfig, MultimodalModel, build_model, load_model, save_model
    from mmfuse.preprocess import ModalityNormalizers, default_normalizers
    from mmfuse.train import TrainConfig, Trainer, evaluate_model, predict
    from mmfuse.types import Batch
