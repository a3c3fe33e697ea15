"""``AnalysisConfig``: the shared settings plus the config of every built-in analysis, in one flat dataclass.

Each analysis owns a typed config dataclass (:class:`~mmfuse.evaluate.analysis.robustness.RobustnessConfig`,
...). :class:`AnalysisConfig` inherits all of the built-in ones, so ``AnalysisConfig(mc_passes=5,
noise_levels=(0, 1))`` sets them flat (as the CLI does) and each analysis gets its own part back through
:meth:`AnalysisConfig.config_for`. An analysis registered elsewhere takes its config from ``options``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmfuse.evaluate.analysis.base import Analysis, get_analysis, list_analyses
from mmfuse.evaluate.analysis.calibration import CalibrationConfig
from mmfuse.evaluate.analysis.complexity import ComplexityConfig
from mmfuse.evaluate.analysis.context import RunSettings
from mmfuse.evaluate.analysis.failures import FailuresConfig
from mmfuse.evaluate.analysis.inspection import InspectionConfig
from mmfuse.evaluate.analysis.robustness import RobustnessConfig
from mmfuse.evaluate.analysis.separability import SeparabilityConfig
from mmfuse.evaluate.analysis.uncertainty import UncertaintyConfig

__all__ = ["AnalysisConfig"]


def _every_analysis() -> tuple[str, ...]:
    return tuple(list_analyses())


@dataclass
class AnalysisConfig(
    ComplexityConfig,
    InspectionConfig,
    FailuresConfig,
    SeparabilityConfig,
    UncertaintyConfig,
    CalibrationConfig,
    RobustnessConfig,
    RunSettings,
):
    """What :func:`~mmfuse.evaluate.analysis.analyze_run` computes, and how.

    The fields are those of :class:`~mmfuse.evaluate.analysis.context.RunSettings` (split, data set, device,
    seeds, ...) and of each built-in analysis's config (``noise_levels``, ``ece_bins``, ``mc_passes``,
    ``embedding_methods``, ``worst_cases``, ``inspect_samples``, ``latency_repeats``, ...; see those classes),
    plus:

    Attributes:
        analyses: Which registered analyses to run, in report order; default: every registered one.
        options: Per analysis name, an instance of its ``config_type``; it wins over the flat fields (the way
            to configure an analysis registered outside mmfuse).

    Example:
        >>> cfg = AnalysisConfig(analyses=("ablation", "calibration"), mc_passes=5)
        >>> cfg.split, cfg.mc_passes
        ('test', 5)
        >>> from mmfuse.evaluate.analysis import get_analysis
        >>> cfg.config_for(get_analysis("uncertainty")).mc_passes
        5
    """

    analyses: tuple[str, ...] = field(default_factory=_every_analysis)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for base in type(self).__mro__[1:]:
            post_init = vars(base).get("__post_init__")
            if post_init is not None:
                post_init(self)
        self.analyses = tuple(self.analyses)
        for name in (*self.analyses, *self.options):
            get_analysis(name)  # an unknown name raises, listing the registered ones
        self.options = dict(self.options)

    def config_for(self, analysis: type[Analysis[Any, Any]]) -> Any:
        """The config ``analysis`` runs with: ``options[name]``, else its part of these fields, else its default.

        Raises:
            TypeError: ``options[name]`` is not an instance of the analysis's ``config_type``.
        """
        kind = analysis.config_type
        if analysis.name in self.options:
            given = self.options[analysis.name]
            if not isinstance(given, kind):
                raise TypeError(
                    f"AnalysisConfig.options[{analysis.name!r}] must be a {kind.__name__}. "
                    f"Got {type(given).__name__} instead."
                )
            return given
        if isinstance(self, kind):
            return kind(**{f.name: getattr(self, f.name) for f in dataclasses.fields(kind)})
        return kind()
