"""The interface every analysis implements, what it returns, and the registry that lists them.

An analysis is one class in one module: a typed config dataclass, a declaration of what it needs, ``run`` (the
work on one saved model) and ``summarize`` (all models' results into CSV rows, figures and a report section).
:func:`register_analysis` adds it to the registry that :func:`~mmfuse.evaluate.analysis.analyze_run`, ``mmfuse
analyze --only`` and the contract test read, so a new analysis is picked up by all three.

Example:
    >>> from mmfuse.evaluate.analysis import get_analysis, list_analyses
    >>> list_analyses()[:3]
    ['ablation', 'robustness', 'calibration']
    >>> get_analysis("calibration").needs
    frozenset({'calibration_split'})
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
from matplotlib.figure import Figure

from mmfuse._registry import Registry
from mmfuse.evaluate.figures import md_escape

if TYPE_CHECKING:
    from mmfuse.evaluate.analysis.context import AnalysisContext, LoadedModel

__all__ = [
    "Analysis",
    "FigureRef",
    "Need",
    "NoConfig",
    "ReportTable",
    "Section",
    "Summary",
    "check_count",
    "file_stem",
    "fmt",
    "get_analysis",
    "is_analysis",
    "list_analyses",
    "mean_finite",
    "register_analysis",
]

ConfigT = TypeVar("ConfigT")
ResultT = TypeVar("ResultT")
A = TypeVar("A", bound="type[Analysis[Any, Any]]")

Need = Literal["calibration_split"]
"""What an analysis can declare it needs: ``"calibration_split"`` (a split other than the analysed one to fit on;
without it the runner skips the analysis with a note)."""


@dataclass
class NoConfig:
    """The config of an analysis without settings of its own (it reads only the shared ones of the context)."""


@dataclass
class FigureRef:
    """A figure of a report section: a PNG file of ``analysis/`` with its alt text and caption."""

    file: str
    alt: str
    caption: str = ""


@dataclass
class ReportTable:
    """A table of a report section; cells are already formatted text."""

    caption: str
    header: list[str]
    rows: list[list[str]]

    @property
    def numeric(self) -> list[bool]:
        """Per column: whether every cell reads as a number (right-aligned in HTML and Markdown)."""
        return [bool(self.rows) and all(_is_number(r[i]) for r in self.rows) for i in range(len(self.header))]


@dataclass
class Section:
    r"""One analysis in the report: a title, paragraphs of prose, figures, tables and notes.

    Example:
        >>> sec = Section("Toy", ["One paragraph."])
        >>> sec.table("Scores.", ["fusion", "score"], [["a_b", 0.5]])
        >>> print("\n".join(sec.markdown()))
        ### Toy
        <BLANKLINE>
        One paragraph.
        <BLANKLINE>
        Scores.
        <BLANKLINE>
        | fusion | score |
        |:---|---:|
        | a\_b | 0.5 |
        <BLANKLINE>
    """

    title: str
    paragraphs: list[str]
    figures: list[FigureRef] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def figure(self, file: str, alt: str, caption: str = "") -> None:
        """Show the PNG ``file`` (a key of :attr:`Summary.figures`) in the section."""
        self.figures.append(FigureRef(file, alt, caption))

    def table(self, caption: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Add a table; cells are written with ``str``."""
        self.tables.append(ReportTable(caption, [str(h) for h in header], [[str(c) for c in r] for r in rows]))

    def as_json(self, section_id: str) -> dict[str, Any]:
        """The section as ``analysis/sections.json`` stores it for the report."""
        return {
            "id": section_id,
            "title": self.title,
            "paragraphs": list(self.paragraphs),
            "figures": [{"file": f.file, "alt": f.alt, "caption": f.caption} for f in self.figures],
            "tables": [
                {"caption": t.caption, "header": t.header, "rows": t.rows, "numeric": t.numeric} for t in self.tables
            ],
            "notes": list(self.notes),
        }

    def markdown(self) -> list[str]:
        """The section as lines of ``summary.md`` (user text Markdown-escaped in tables)."""
        lines = [f"### {self.title}", "", *[p + "\n" for p in self.paragraphs]]
        for t in self.tables:
            lines += [t.caption, "", "| " + " | ".join(md_escape(h) for h in t.header) + " |"]
            lines.append("|" + "|".join("---:" if n else ":---" for n in t.numeric) + "|")
            lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in t.rows] + [""]
        return lines


@dataclass
class Summary:
    """What :meth:`Analysis.summarize` returns.

    Attributes:
        section: The report section (None: nothing to show, e.g. every model was skipped).
        tables: CSV files written to ``analysis/``: file name -> rows (one mapping per row).
        figures: PNG files written to ``analysis/``: file name -> matplotlib figure (drawn with the figure kit).
        final: Columns added to ``final_results.csv``: ``(fusion, seed)`` -> ``{column: value}``.
    """

    section: Section | None
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    final: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)


class Analysis(ABC, Generic[ConfigT, ResultT]):
    """One analysis of a compare run: a per-model step and a summarising step.

    Subclasses set the class attributes, implement :meth:`run` and :meth:`summarize`, and register with
    :func:`register_analysis`. ``run`` is called once per saved model (fusion x seed) with the shared
    :class:`~mmfuse.evaluate.analysis.context.AnalysisContext`; ``summarize`` gets every model's result, in the
    run directory's order, and returns a :class:`Summary`. Neither writes files: the runner does.

    Attributes:
        name: The registered name (set by :func:`register_analysis`); the report section is ``analysis-<name>``.
        title: The report section's title.
        order: Where the analysis stands in the report and in the default selection (lower first).
        config_type: The analysis's config dataclass (:class:`NoConfig` when it has no settings of its own).
        needs: What it needs beyond the analysed split (see :data:`Need`).

    Args:
        config: An instance of ``config_type``.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    order: ClassVar[int] = 1000
    config_type: ClassVar[type] = NoConfig
    needs: ClassVar[frozenset[Need]] = frozenset()

    def __init__(self, config: ConfigT) -> None:
        if not isinstance(config, self.config_type):
            raise TypeError(
                f"The 'config' of the {self.name or type(self).__name__} analysis must be a "
                f"{self.config_type.__name__}. Got {type(config).__name__} instead."
            )
        self.config = config

    def prepare(self, ctx: AnalysisContext) -> None:
        """Called once before any model runs (for background warm-ups); does nothing by default."""

    @abstractmethod
    def run(self, ctx: AnalysisContext, model: LoadedModel) -> ResultT:
        """The work on one saved model; returns what :meth:`summarize` needs of it."""

    @abstractmethod
    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, ResultT]]) -> Summary:
        """Every model's result into CSV rows, figures, final-results columns and a report section."""


_REGISTRY: Registry[type[Analysis[Any, Any]]] = Registry("analysis")


def register_analysis(name: str) -> Callable[[A], A]:
    """Class decorator: register an :class:`Analysis` subclass under ``name`` (and set its ``name``).

    Raises:
        ValueError: an empty or duplicate name.
        TypeError: the decorated object is not an Analysis subclass.
    """
    decorate = _REGISTRY.register(name)

    def decorator(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Analysis)):
            raise TypeError(f"register_analysis({name!r}) decorates Analysis subclasses. Got {cls!r} instead.")
        decorate(cls)
        cls.name = name
        return cls

    return decorator


def list_analyses() -> list[str]:
    """Registered analyses in report order (their ``order``, then name)."""
    return sorted(_REGISTRY.names(), key=lambda n: (_REGISTRY.get(n).order, n))


def get_analysis(name: str) -> type[Analysis[Any, Any]]:
    """The analysis class registered as ``name``.

    Raises:
        ValueError: an unknown name, listing the registered ones.
    """
    return _REGISTRY.get(name)


def is_analysis(name: str) -> bool:
    """Whether ``name`` is a registered analysis."""
    return name in _REGISTRY


def check_count(config: object, name: str, minimum: int = 1) -> None:
    """Raise unless the ``name`` field of ``config`` is an integer ``>= minimum`` (a bool is not one).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Toy:
        ...     passes: int = 0
        >>> check_count(Toy(), "passes")
        Traceback (most recent call last):
        ...
        ValueError: The 'passes' parameter of Toy must be a positive integer. Got 0.
    """
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"The {name!r} parameter of {type(config).__name__} must be {what}. Got {value!r}.")


def fmt(value: float | None, digits: int = 3) -> str:
    """A table cell: ``value`` with ``digits`` decimals, or an en dash for a missing or non-finite value.

    Example:
        >>> fmt(0.12345), fmt(float("nan")), fmt(2.0, 1)
        ('0.123', '–', '2.0')
    """
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def mean_finite(values: Sequence[float | None]) -> float:
    """The mean of the finite values (NaN when there is none).

    Example:
        >>> mean_finite([1.0, float("nan"), 3.0])
        2.0
    """
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def file_stem(name: str) -> str:
    """``name`` (a fusion) made safe as part of a file name.

    Example:
        >>> file_stem("my fusion/v2")
        'my_fusion_v2'
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "run"


def _is_number(text: str) -> bool:
    try:
        float(text.replace("–", "nan").replace("±", "").split()[0])
        return True
    except (ValueError, IndexError):
        return False
