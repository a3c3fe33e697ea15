"""Analysis of a fusion comparison: ablation, robustness, calibration, uncertainty, separability, failures.

:func:`analyze_run` runs every analysis over the saved models of a ``mmfuse compare`` run directory and adds
them to its ``final_results.csv``, ``summary.md`` and ``report.html``; the modules hold the pure functions it
uses, each usable on its own arrays (see ``docs/analysis.md``).

Example:
    >>> from mmfuse.evaluate.analysis import expected_calibration_error
    >>> expected_calibration_error([[0.75, 0.25]] * 4, [0, 0, 0, 1])
    0.0
"""

from __future__ import annotations

from mmfuse.evaluate.analysis.ablation import modality_subsets, remove_context, subset_label
from mmfuse.evaluate.analysis.calibration import (
    AffineCalibrator,
    TemperatureScaler,
    calibration_errors,
    expected_calibration_error,
    paired_improvement_test,
    reliability_curve,
)
from mmfuse.evaluate.analysis.complexity import measure_latency, peak_forward_memory
from mmfuse.evaluate.analysis.failures import error_agreement, error_patterns, worst_rows
from mmfuse.evaluate.analysis.inspection import FusionWeights, fusion_weights, interpret_weights
from mmfuse.evaluate.analysis.robustness import (
    add_noise,
    drop_steps,
    effective_robustness,
    feature_std,
    relative_robustness,
)
from mmfuse.evaluate.analysis.runner import ANALYSES, AnalysisConfig, AnalysisResult, analyze_run
from mmfuse.evaluate.analysis.separability import EMBEDDING_METHODS, embed_2d, separability_score, subsample
from mmfuse.evaluate.analysis.uncertainty import (
    classification_uncertainty,
    enable_mc_dropout,
    regression_uncertainty,
    risk_coverage,
)

__all__ = [
    "ANALYSES",
    "EMBEDDING_METHODS",
    "AffineCalibrator",
    "AnalysisConfig",
    "AnalysisResult",
    "FusionWeights",
    "TemperatureScaler",
    "add_noise",
    "analyze_run",
    "calibration_errors",
    "classification_uncertainty",
    "drop_steps",
    "effective_robustness",
    "embed_2d",
    "enable_mc_dropout",
    "error_agreement",
    "error_patterns",
    "expected_calibration_error",
    "feature_std",
    "fusion_weights",
    "interpret_weights",
    "measure_latency",
    "modality_subsets",
    "paired_improvement_test",
    "peak_forward_memory",
    "regression_uncertainty",
    "relative_robustness",
    "reliability_curve",
    "remove_context",
    "risk_coverage",
    "separability_score",
    "subsample",
    "subset_label",
    "worst_rows",
]
