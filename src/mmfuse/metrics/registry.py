"""The metric registry: what each metric means, which way it improves, and how to compute it from predictions.

Every consumer that asks "is this metric higher-is-better?", "what is its label?", "which metric ranks a task?"
(early stopping, tuning, comparison ranking, report arrows and axes) reads this one table, the way torchmetrics
puts ``higher_is_better`` and the value range on each metric class.

A metric is registered with :func:`register_metric` beside its function. The registered scorer takes
``(y_true, y_pred, probs)`` (``probs`` is ``None`` for regression and for metrics that do not need it) and
returns one float, NaN where the value is undefined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mmfuse._registry import Registry

__all__ = [
    "TASKS",
    "MetricFamily",
    "MetricInfo",
    "Scorer",
    "compute_metric",
    "default_metrics",
    "default_monitor",
    "get_metric",
    "is_metric",
    "list_metrics",
    "main_metric",
    "metric_info_for_column",
    "register_metric",
]

TASKS: tuple[str, ...] = ("classification", "regression")
"""The task types a metric can apply to."""

Scorer = Callable[[Any, Any, Any], float]
"""``scorer(y_true, y_pred, probs) -> float``: a registered metric's computation."""

_MetricFunction = TypeVar("_MetricFunction", bound=Callable[..., float])

# Prefixes and suffixes that name where or how a metric was summarised: "val_accuracy", "accuracy_mean".
_COLUMN_PREFIXES = ("val_", "test_", "train_")
_COLUMN_SUFFIXES = ("_mean", "_std")

_MAIN: dict[str, str] = {"classification": "accuracy", "regression": "mae"}
_MONITOR: dict[str, str] = {"classification": "f1_weighted", "regression": "mae"}
_DEFAULTS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1_weighted", "f1_macro"),
    "regression": ("mae", "rmse", "pearson"),
}


@dataclass(frozen=True)
class MetricInfo:
    """What one metric is: its name, how to show it, which way is better and where it applies.

    Attributes:
        name: Registry name and column name (``"accuracy"``, ``"mae"``).
        label: Human-readable name for tables and axes (``"weighted F1"``, ``"MAE"``).
        higher_is_better: Direction of improvement.
        tasks: Task types the metric applies to (``"classification"``, ``"regression"``).
        bounds: ``(low, high)`` of the possible values; ``None`` where unbounded.
        needs_probs: True when it is computed from class probabilities rather than hard predictions.
        description: One sentence: the definition and the convention followed.
        unit: Unit shown beside the label (``"fraction correct"``, ``"target units"``), or ``""``.
        aliases: Other names that resolve to this metric (``"nll"`` for ``"log_loss"``).
        scorer: ``scorer(y_true, y_pred, probs) -> float``; ``None`` for quantities that are not computed from
            predictions (the training loss).

    Example:
        >>> info = get_metric("mae")
        >>> info.higher_is_better, info.bounds, info.tasks
        (False, (0.0, None), ('regression',))
    """

    name: str
    label: str
    higher_is_better: bool
    tasks: tuple[str, ...]
    bounds: tuple[float | None, float | None] = (None, None)
    needs_probs: bool = False
    description: str = ""
    unit: str = ""
    aliases: tuple[str, ...] = ()
    scorer: Scorer | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"The 'label' of metric {self.name!r} must be a non-empty string. Got {self.label!r}.")
        if not isinstance(self.higher_is_better, bool):
            raise ValueError(
                f"The 'higher_is_better' of metric {self.name!r} must be a bool. Got {self.higher_is_better!r}."
            )
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            raise ValueError(f"The 'tasks' of metric {self.name!r} must be a non-empty subset of {list(TASKS)}.")
        low, high = self.bounds
        if low is not None and high is not None and not low < high:
            raise ValueError(f"The 'bounds' of metric {self.name!r} must satisfy low < high. Got {self.bounds}.")

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``: the direction in which the metric improves (early stopping's vocabulary)."""
        return "max" if self.higher_is_better else "min"

    def applies_to(self, task: str) -> bool:
        """Return whether the metric is defined for ``task`` (``"classification"`` / ``"regression"``)."""
        return _task_name(task) in self.tasks


_METRICS: Registry[MetricInfo] = Registry("metric")
_ALIASES: dict[str, str] = {}


def register_metric(
    name: str,
    *,
    label: str,
    higher_is_better: bool,
    tasks: Sequence[str],
    bounds: tuple[float | None, float | None] = (None, None),
    needs_probs: bool = False,
    description: str = "",
    unit: str = "",
    aliases: Sequence[str] = (),
    scorer: Scorer | None = None,
) -> MetricInfo:
    """Register a metric (its metadata and, usually, its scorer) under ``name``.

    Args:
        name: Lower-case registry name; also the column name in results tables.
        label: Human-readable name.
        higher_is_better: Direction of improvement.
        tasks: Task types it applies to.
        bounds: Range of possible values (``None`` for an open end).
        needs_probs: Computed from class probabilities.
        description: One sentence.
        unit: Unit beside the label.
        aliases: Other names resolving to this metric.
        scorer: ``scorer(y_true, y_pred, probs) -> float``.

    Returns:
        The registered :class:`MetricInfo`.

    Raises:
        ValueError: if the name or an alias is taken, or the metadata is invalid.

    Example:
        >>> import numpy as np
        >>> info = register_metric("doc_max_error", label="max error", higher_is_better=False, tasks=["regression"],
        ...                        bounds=(0.0, None), scorer=lambda t, p, _: float(np.max(np.abs(t - p))))
        >>> compute_metric("doc_max_error", np.array([1.0, 2.0]), np.array([1.5, 2.0]))
        0.5
    """
    info = MetricInfo(
        name=name,
        label=label,
        higher_is_better=higher_is_better,
        tasks=tuple(tasks),
        bounds=bounds,
        needs_probs=needs_probs,
        description=description,
        unit=unit,
        aliases=tuple(aliases),
        scorer=scorer,
    )
    for alias in info.aliases:
        if alias in _METRICS or alias in _ALIASES or alias == name:
            raise ValueError(f"The alias {alias!r} of metric {name!r} is already a metric name or alias.")
    if name in _ALIASES:
        raise ValueError(f"A metric alias named {name!r} already exists (of {_ALIASES[name]!r}); choose another name.")
    _METRICS.add(name, info)
    for alias in info.aliases:
        _ALIASES[alias] = name
    return info


@dataclass(frozen=True)
class MetricFamily:
    """What several metrics share (tasks, direction, range, unit, input), so each registers in one line.

    :meth:`metric` decorates a metric function ``fn(y_true, y_pred)`` (or ``fn(y_true, probs)`` when the family
    ``needs_probs``) and registers it: the metric's description is the first line of the function's docstring
    (without RST literal markers), so the definition is written once, beside the code.

    Attributes:
        tasks: Task types the metrics apply to.
        higher_is_better: Direction of improvement.
        bounds: ``(low, high)`` of the possible values; ``None`` where unbounded.
        unit: Unit shown beside the label, unless a metric gives its own.
        needs_probs: The metrics are computed from class probabilities (the scorer passes ``probs``).

    Example:
        >>> import numpy as np
        >>> errors = MetricFamily(tasks=("regression",), higher_is_better=False, bounds=(0.0, None))
        >>> @errors.metric("doc_max_abs_error", "max |error|")
        ... def max_abs_error(y_true, y_pred):
        ...     '''Largest absolute error over ``y_true``'s samples.'''
        ...     return float(np.max(np.abs(np.asarray(y_true) - np.asarray(y_pred))))
        >>> info = get_metric("doc_max_abs_error")
        >>> info.description, info.higher_is_better, compute_metric(info.name, [1.0, 2.0], [1.5, 2.0])
        ("Largest absolute error over y_true's samples.", False, 0.5)
    """

    tasks: tuple[str, ...]
    higher_is_better: bool
    bounds: tuple[float | None, float | None] = (None, None)
    unit: str = ""
    needs_probs: bool = False

    def metric(
        self,
        name: str,
        label: str,
        *,
        bounds: tuple[float | None, float | None] | None = None,
        unit: str | None = None,
        aliases: Sequence[str] = (),
        description: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Callable[[_MetricFunction], _MetricFunction]:
        """Return a decorator that registers its function as the metric ``name`` of this family.

        Args:
            name: Registry name.
            label: Human-readable name.
            bounds: The metric's range, when not the family's.
            unit: The metric's unit, when not the family's.
            aliases: Other names resolving to the metric.
            description: One sentence, when not the first line of the function's docstring.
            options: Keyword arguments the scorer passes to the function (``{"k": 3}``).
        """

        def register(fn: _MetricFunction) -> _MetricFunction:
            bound = dict(options or {})
            if self.needs_probs:
                scorer: Scorer = lambda y_true, _y_pred, probs: fn(y_true, probs, **bound)  # noqa: E731
            else:
                scorer = lambda y_true, y_pred, _probs: fn(y_true, y_pred, **bound)  # noqa: E731
            register_metric(
                name,
                label=label,
                higher_is_better=self.higher_is_better,
                tasks=self.tasks,
                bounds=self.bounds if bounds is None else bounds,
                needs_probs=self.needs_probs,
                description=_summary_line(fn) if description is None else description,
                unit=self.unit if unit is None else unit,
                aliases=aliases,
                scorer=scorer,
            )
            return fn

        return register


def _summary_line(fn: Callable[..., Any]) -> str:
    """The first line of ``fn``'s docstring without RST literal markers: the metric's one-sentence definition."""
    lines = (fn.__doc__ or "").strip().splitlines()
    if not lines:
        raise ValueError(f"The metric function {fn.__name__} needs a docstring (its first line describes the metric).")
    return lines[0].replace("``", "")


register_metric(
    "loss",
    label="loss",
    higher_is_better=False,
    tasks=TASKS,
    bounds=(0.0, None),
    description="The training objective (cross-entropy or the regression loss), as the trainer computes it; "
    "not computed from predictions.",
)


def _task_name(task: Any) -> str:
    value = str(getattr(task, "value", task))
    if value not in TASKS:
        raise ValueError(f"Unknown task {task!r}: expected one of {list(TASKS)}.")
    return value


def list_metrics(task: str | None = None) -> list[str]:
    """Return the registered metric names (sorted), only those that apply to ``task`` when given.

    Example:
        >>> {"accuracy", "mae", "loss"} <= set(list_metrics())
        True
        >>> "mae" in list_metrics("classification")
        False
    """
    if task is None:
        return _METRICS.names()
    name = _task_name(task)
    return [n for n in _METRICS.names() if name in _METRICS.get(n).tasks]


def is_metric(name: str) -> bool:
    """Return whether ``name`` is a registered metric or alias.

    Example:
        >>> is_metric("nll"), is_metric("val_accuracy")
        (True, False)
    """
    return name in _METRICS or name in _ALIASES


def get_metric(name: str) -> MetricInfo:
    """Return the :class:`MetricInfo` of ``name`` (a registered name or alias).

    Raises:
        ValueError: for an unknown name, listing the registered ones.

    Example:
        >>> get_metric("nll").name, get_metric("f1_macro").label
        ('log_loss', 'macro F1')
    """
    if isinstance(name, str) and name in _ALIASES:
        name = _ALIASES[name]
    return _METRICS.get(name)


def metric_info_for_column(column: str) -> MetricInfo:
    """Return the metric a results column measures: ``"val_accuracy"``, ``"accuracy_mean"``, ``"test_nll"``.

    A ``val_`` / ``test_`` / ``train_`` prefix and a ``_mean`` / ``_std`` suffix are removed before the lookup
    (the spread of a metric is read with the metric's own metadata).

    Raises:
        ValueError: when the column names no registered metric (the message lists them).

    Example:
        >>> metric_info_for_column("val_loss").higher_is_better, metric_info_for_column("f1_weighted_mean").name
        (False, 'f1_weighted')
    """
    if not isinstance(column, str) or not column:
        raise ValueError(f"A metric column must be a non-empty string. Got {column!r}.")
    candidates = [column]
    base = column
    for suffix in _COLUMN_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base.removesuffix(suffix)
            candidates.append(base)
            break
    for prefix in _COLUMN_PREFIXES:
        if base.startswith(prefix) and len(base) > len(prefix):
            candidates.append(base.removeprefix(prefix))
            break
    for name in candidates:
        if is_metric(name):
            return get_metric(name)
    raise ValueError(
        f"The column {column!r} names no registered metric. Registered: {', '.join(list_metrics())} "
        "(register yours with mmfuse.metrics.register_metric)."
    )


def main_metric(task: str, configured: str | None = None) -> str:
    """Return the metric that ranks runs of ``task``: ``configured`` when given, else accuracy / MAE.

    Raises:
        ValueError: when ``configured`` is unknown or does not apply to ``task``.

    Example:
        >>> main_metric("classification"), main_metric("regression"), main_metric("regression", "ccc")
        ('accuracy', 'mae', 'ccc')
    """
    name = _task_name(task)
    if configured is None:
        return _MAIN[name]
    info = get_metric(configured)
    if name not in info.tasks:
        raise ValueError(
            f"The metric {configured!r} does not apply to {name}; choose one of {', '.join(list_metrics(name))}."
        )
    return info.name


def default_metrics(task: str) -> tuple[str, ...]:
    """Return the metrics a comparison records for ``task`` unless told otherwise (the main metric first).

    Example:
        >>> default_metrics("regression")
        ('mae', 'rmse', 'pearson')
    """
    return _DEFAULTS[_task_name(task)]


def default_monitor(task: str) -> str:
    """Return the validation metric early stopping watches for ``task`` when ``TrainConfig.monitor`` is ``"auto"``.

    Example:
        >>> default_monitor("classification"), default_monitor("regression")
        ('f1_weighted', 'mae')
    """
    return _MONITOR[_task_name(task)]


def compute_metric(name: str, y_true: Any, y_pred: Any, probs: Any = None) -> float:
    """Compute the registered metric ``name`` from predictions (numpy arrays or torch tensors).

    Args:
        name: Registered metric name or alias.
        y_true: ``[n]`` true labels or ``[n]`` / ``[n, K]`` targets.
        y_pred: Predicted labels or values, ``y_true``'s shape.
        probs: ``[n, C]`` class probabilities; required by metrics with ``needs_probs``.

    Raises:
        ValueError: for an unknown metric, a metric that is not computed from predictions (``loss``), or a
            probability metric without ``probs``.

    Example:
        >>> compute_metric("accuracy", [0, 1, 1], [0, 1, 0])
        0.6666666666666666
    """
    info = get_metric(name)
    if info.scorer is None:
        raise ValueError(f"The metric {info.name!r} is not computed from predictions ({info.description}).")
    if info.needs_probs and probs is None:
        raise ValueError(f"The metric {info.name!r} needs class probabilities ('probs'), but none were given.")
    return float(info.scorer(y_true, y_pred, probs))
