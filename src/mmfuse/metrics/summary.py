"""Mean and spread of each metric over the runs of a group (the rows of ``summary.csv``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["summarize_runs"]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def summarize_runs(
    rows: Sequence[Mapping[str, Any]],
    by: str = "fusion",
    metrics: Sequence[str] | None = None,
    *,
    count_key: str = "n_seeds",
) -> list[dict[str, Any]]:
    """Mean and standard deviation of each metric per group of runs (the rows of ``summary.csv``).

    The standard deviation is the sample one (``ddof=1``) when a group has more than one run, and 0.0 for a
    single run. A NaN in a metric makes that group's mean and std NaN (no run is silently dropped).

    Args:
        rows: One dict per run (e.g. fusion x seed), as in ``results.csv``.
        by: The key that defines the groups. Groups keep the order of their first row.
        metrics: The keys to summarise. If None: every key other than ``by`` and ``"seed"`` whose value is a
            number in every row.
        count_key: Name of the output column with the number of runs per group.

    Returns:
        One dict per group: ``{by: value, count_key: k, "<metric>_mean": ..., "<metric>_std": ...}``.

    Raises:
        ValueError: when ``rows`` is empty, a row lacks ``by`` or a metric, or a metric value is not a number
            (the row index is named).

    Example:
        >>> rows = [{"fusion": "concat", "seed": 0, "accuracy": 0.8}, {"fusion": "concat", "seed": 1, "accuracy": 0.9},
        ...         {"fusion": "gated", "seed": 0, "accuracy": 0.7}]
        >>> [(r["fusion"], r["n_seeds"], round(r["accuracy_mean"], 3), round(r["accuracy_std"], 4))
        ...  for r in summarize_runs(rows)]
        [('concat', 2, 0.85, 0.0707), ('gated', 1, 0.7, 0.0)]
    """
    if not rows:
        raise ValueError("summarize_runs needs at least one row; 'rows' is empty.")
    for i, row in enumerate(rows):
        if by not in row:
            raise ValueError(f"Row {i} passed to summarize_runs has no {by!r} key (the 'by' parameter).")
    if metrics is None:
        keys = [k for k in rows[0] if k not in (by, "seed")]
        metrics = [k for k in keys if all(_is_number(r.get(k)) for r in rows)]
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[by], []).append(row)
    for i, row in enumerate(rows):
        for k in metrics:
            if not _is_number(row.get(k)):
                raise ValueError(
                    f"Row {i} passed to summarize_runs ({by}={row[by]!r}) needs a number for metric {k!r}. "
                    f"Got {row.get(k)!r}."
                )
    out = []
    for key, members in groups.items():
        summary: dict[str, Any] = {by: key, count_key: len(members)}
        for k in metrics:
            values = np.array([float(r[k]) for r in members], dtype=np.float64)
            summary[f"{k}_mean"] = float(values.mean())
            if values.size > 1:
                summary[f"{k}_std"] = float(values.std(ddof=1))
            else:
                summary[f"{k}_std"] = 0.0 if math.isfinite(values[0]) else math.nan
        out.append(summary)
    return out
