"""Metrics: pure functions on predictions, and one registry of what each metric means.

A layer below training: it imports NumPy, SciPy, scikit-learn and torch (to accept tensors), nothing of mmfuse
above :mod:`mmfuse.types`. Every consumer that needs to know which way a metric improves, how it is labelled or
which metric ranks a task (early stopping, tuning, comparisons, reports) reads :func:`get_metric` /
:func:`metric_info_for_column` / :func:`main_metric`; there is no second rule anywhere.

Adding a metric is one call of :func:`register_metric` beside its function, or one ``@FAMILY.metric(name, label)``
line on it where a :class:`MetricFamily` holds what several metrics share (see ``docs/architecture.md``).

Example:
    >>> from mmfuse.metrics import compute_metric, get_metric, list_metrics
    >>> get_metric("ece").higher_is_better, "acc7" in list_metrics("regression")
    (False, True)
    >>> compute_metric("acc2_non0", [-1.5, 0.0, 2.0], [-0.2, 0.4, 0.1])
    1.0
"""

from __future__ import annotations

from mmfuse.metrics.accumulator import MetricAccumulator
from mmfuse.metrics.classification import (
    ReliabilityBins,
    accuracy,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    f1_macro,
    f1_weighted,
    log_loss,
    reliability_bins,
    roc_auc,
    top_k_accuracy,
)
from mmfuse.metrics.registry import (
    TASKS,
    MetricFamily,
    MetricInfo,
    compute_metric,
    default_metrics,
    default_monitor,
    get_metric,
    is_metric,
    list_metrics,
    main_metric,
    metric_info_for_column,
    register_metric,
)
from mmfuse.metrics.regression import ccc, mae, mse, pearson, regression_metrics, rmse
from mmfuse.metrics.sentiment import (
    SENTIMENT_METRICS,
    acc2,
    f1_binary,
    multiclass_sentiment_accuracy,
    sentiment_metrics,
)
from mmfuse.metrics.summary import summarize_runs

__all__ = [
    "SENTIMENT_METRICS",
    "TASKS",
    "MetricAccumulator",
    "MetricFamily",
    "MetricInfo",
    "ReliabilityBins",
    "acc2",
    "accuracy",
    "brier_score",
    "ccc",
    "classification_metrics",
    "compute_metric",
    "default_metrics",
    "default_monitor",
    "expected_calibration_error",
    "f1_binary",
    "f1_macro",
    "f1_weighted",
    "get_metric",
    "is_metric",
    "list_metrics",
    "log_loss",
    "mae",
    "main_metric",
    "metric_info_for_column",
    "mse",
    "multiclass_sentiment_accuracy",
    "pearson",
    "register_metric",
    "regression_metrics",
    "reliability_bins",
    "rmse",
    "roc_auc",
    "sentiment_metrics",
    "summarize_runs",
    "top_k_accuracy",
]
