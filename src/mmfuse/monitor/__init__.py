"""Watching a deployed model: drift tests against training data, and continual adaptation.

* :class:`ReferenceStats` (fitted on training data; safetensors + JSON) and :class:`DriftMonitor` (windowed
  per-feature Kolmogorov-Smirnov tests with a multiple-testing correction, MMD on embeddings, alerts naming the
  modality and the features);
* the pure functions behind them: :func:`ks_test`, :func:`mmd2`, :func:`mmd_test`, :func:`adjust_pvalues`;
* :func:`adapt_model` / :class:`ContinualAdapter`: fine-tune on a labelled recent buffer with replay of
  reference data, with metrics before and after.

Example:
    >>> import numpy as np
    >>> from mmfuse.monitor import DriftMonitor, ReferenceStats
    >>> rng = np.random.default_rng(0)
    >>> mon = DriftMonitor(ReferenceStats().fit({"audio": rng.normal(size=(1000, 4))}), window=200)
    >>> mon.update({"audio": rng.normal(size=(200, 4))})
    >>> mon.check().drifted
    False
"""

from __future__ import annotations

from mmfuse.monitor.adapt import AdaptationResult, ContinualAdapter, adapt_model
from mmfuse.monitor.drift import (
    CORRECTIONS,
    DriftMonitor,
    DriftReport,
    ReferenceStats,
    adjust_pvalues,
    ks_test,
    median_bandwidth,
    mmd2,
    mmd_test,
)

__all__ = [
    "CORRECTIONS",
    "AdaptationResult",
    "ContinualAdapter",
    "DriftMonitor",
    "DriftReport",
    "ReferenceStats",
    "adapt_model",
    "adjust_pvalues",
    "ks_test",
    "median_bandwidth",
    "mmd2",
    "mmd_test",
]
