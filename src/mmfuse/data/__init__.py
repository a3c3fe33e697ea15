"""Multimodal sequence data: the native on-disk format, lazy data sets, collate, and the data-set registry.

Example:
    >>> from mmfuse.data import load_dataset, make_loader
    >>> train = load_dataset("basic-motions").split("train")
    >>> batch = next(iter(make_loader(train, batch_size=8)))
    >>> batch.modalities, batch.batch_size
    (['accelerometer', 'gyroscope'], 8)
"""

from __future__ import annotations

# The built-in data sets register themselves on import.
from mmfuse.data import _basic_motions as _basic_motions
from mmfuse.data import _mosi as _mosi
from mmfuse.data._spec import MODALITY_KINDS, ModalitySpec, SequenceRecord, TaskSpec
from mmfuse.data.collate import IGNORE_INDEX, collate, make_loader
from mmfuse.data.download import fetch, sha256_file
from mmfuse.data.format import FORMAT_VERSION, MultimodalDataset, open_dataset, write_dataset
from mmfuse.data.registry import (
    DatasetInfo,
    cache_root,
    data_root,
    dataset_info,
    dataset_preset,
    is_dataset,
    list_datasets,
    load_dataset,
    open_or_load_dataset,
    register_dataset,
    registered_name_of,
)

__all__ = [
    "FORMAT_VERSION",
    "IGNORE_INDEX",
    "MODALITY_KINDS",
    "DatasetInfo",
    "ModalitySpec",
    "MultimodalDataset",
    "SequenceRecord",
    "TaskSpec",
    "cache_root",
    "collate",
    "data_root",
    "dataset_info",
    "dataset_preset",
    "fetch",
    "is_dataset",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "open_dataset",
    "open_or_load_dataset",
    "register_dataset",
    "registered_name_of",
    "sha256_file",
    "write_dataset",
]
