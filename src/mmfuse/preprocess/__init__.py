"""Per-modality normalisers with the scikit-learn contract, fitted on training data only.

``fit`` learns from the steps a presence mask marks real, ``transform`` / ``inverse_transform`` return missing
steps as exact zeros, fitted attributes end in ``_``, and an unfitted normaliser raises
:class:`~mmfuse.errors.NotFittedError`. :class:`ModalityNormalizers` holds one normaliser per modality and
saves them as ``normalizers.json`` + ``normalizers.safetensors`` (never pickle).

Example:
    >>> import numpy as np
    >>> from mmfuse.preprocess import default_normalizers
    >>> norms = default_normalizers({"acc": "continuous"})
    >>> _ = norms.fit_arrays({"acc": (np.array([[1.0], [2.0], [3.0]]), None)})
    >>> norms["acc"].mean_
    array([2.])
"""

from __future__ import annotations

from mmfuse.preprocess.base import (
    Normalizer,
    create_normalizer,
    is_normalizer,
    list_normalizers,
    normalizer_name,
    register_normalizer,
)
from mmfuse.preprocess.modality import JSON_NAME, TENSORS_NAME, ModalityNormalizers, default_normalizers
from mmfuse.preprocess.normalizers import IdentityNormalizer, L2Normalizer, ZScoreNormalizer

__all__ = [
    "JSON_NAME",
    "TENSORS_NAME",
    "IdentityNormalizer",
    "L2Normalizer",
    "ModalityNormalizers",
    "Normalizer",
    "ZScoreNormalizer",
    "create_normalizer",
    "default_normalizers",
    "is_normalizer",
    "list_normalizers",
    "normalizer_name",
    "register_normalizer",
]
