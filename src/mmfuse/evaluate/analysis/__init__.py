"""Analysis of a fusion comparison: ablation, robustness, calibration, uncertainty, separability, failures, ...

Each analysis is a plug-in: one module holding its pure functions, its config dataclass and an
:class:`~mmfuse.evaluate.analysis.base.Analysis` subclass registered with :func:`register_analysis`.
:func:`analyze_run` runs every registered analysis (or those of ``AnalysisConfig.analyses``) over the saved
models of a ``mmfuse compare`` run directory and adds them to its ``final_results.csv``, ``summary.md`` and
``report.html`` (see ``docs/analysis.md``). The pure functions are usable on their own arrays.

Example:
    >>> from mmfuse.evaluate.analysis import expected_calibration_error, list_analyses
    >>> expected_calibration_error([[0.75, 0.25]] * 4, [0, 0, 0, 1])
    0.0
    >>> "robustness" in list_analyses()
    True
"""

from __future__ import annotations

# Importing the analysis modules registers them, in report order.
from mmfuse.evaluate.analysis.ablation import AblationAnalysis, modality_subsets, remove_context, subset_label
from mmfuse.evaluate.analysis.base import (
    Analysis,
    FigureRef,
    NoConfig,
    ReportTable,
    Section,
    Summary,
    get_analysis,
    is_analysis,
    list_analyses,
    register_analysis,
)
from mmfuse.evaluate.analysis.calibration import (
    AffineCalibrator,
    CalibrationAnalysis,
    CalibrationConfig,
    TemperatureScaler,
    calibration_errors,
    expected_calibration_error,
    paired_improvement_test,
    reliability_curve,
)
from mmfuse.evaluate.analysis.complexity import (
    ComplexityAnalysis,
    ComplexityConfig,
    measure_latency,
    peak_forward_memory,
)
from mmfuse.evaluate.analysis.config import AnalysisConfig
from mmfuse.evaluate.analysis.context import AnalysisContext, LoadedModel, RunSettings, SplitData
from mmfuse.evaluate.analysis.failures import (
    FailuresAnalysis,
    FailuresConfig,
    error_agreement,
    error_patterns,
    worst_rows,
)
from mmfuse.evaluate.analysis.inspection import (
    FusionWeights,
    InspectionAnalysis,
    InspectionConfig,
    fusion_weights,
    interpret_weights,
)
from mmfuse.evaluate.analysis.robustness import (
    RobustnessAnalysis,
    RobustnessConfig,
    add_noise,
    drop_steps,
    effective_robustness,
    feature_std,
    relative_robustness,
)
from mmfuse.evaluate.analysis.runner import ANALYSES, AnalysisResult, analyze_run
from mmfuse.evaluate.analysis.separability import (
    EMBEDDING_METHODS,
    SeparabilityAnalysis,
    SeparabilityConfig,
    embed_2d,
    separability_score,
    subsample,
)
from mmfuse.evaluate.analysis.uncertainty import (
    UncertaintyAnalysis,
    UncertaintyConfig,
    classification_uncertainty,
    enable_mc_dropout,
    regression_uncertainty,
    risk_coverage,
)

__all__ = [
    "ANALYSES",
    "EMBEDDING_METHODS",
    "AblationAnalysis",
    "AffineCalibrator",
    "Analysis",
    "AnalysisConfig",
    "AnalysisContext",
    "AnalysisResult",
    "CalibrationAnalysis",
    "CalibrationConfig",
    "ComplexityAnalysis",
    "ComplexityConfig",
    "FailuresAnalysis",
    "FailuresConfig",
    "FigureRef",
    "FusionWeights",
    "InspectionAnalysis",
    "InspectionConfig",
    "LoadedModel",
    "NoConfig",
    "ReportTable",
    "RobustnessAnalysis",
    "RobustnessConfig",
    "RunSettings",
    "Section",
    "SeparabilityAnalysis",
    "SeparabilityConfig",
    "SplitData",
    "Summary",
    "TemperatureScaler",
    "UncertaintyAnalysis",
    "UncertaintyConfig",
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
    "get_analysis",
    "interpret_weights",
    "is_analysis",
    "list_analyses",
    "measure_latency",
    "modality_subsets",
    "paired_improvement_test",
    "peak_forward_memory",
    "register_analysis",
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
