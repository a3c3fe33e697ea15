"""A self-contained HTML report and a Markdown summary of a fusion comparison run.

Both read the run directory that ``mmfuse compare`` writes (see ``docs/architecture.md``)::

    run.json  results.csv  summary.csv  models/<fusion>-seed<k>/{history.json, test_metrics.json}

``run.json`` and ``results.csv`` are required: without them there is nothing to report, so a missing, empty or
unparsable one raises :class:`~mmfuse.errors.DataError` naming the file. Everything else is optional: a missing
``summary.csv`` is recomputed from ``results.csv``, and a missing history or confusion matrix leaves a note in
the report where the figure would have been.

The HTML page embeds its figures as base64 PNG images and carries its own CSS, so it can be mailed, archived or
opened offline. Python computes what the page shows; ``templates/report.html.j2`` and ``templates/summary.md.j2``
(jinja2, HTML autoescaped) lay it out and ``templates/report.css`` styles it. Figures come from the figure kit
:mod:`mmfuse.evaluate.figures` (one palette, one DPI, one escaper per target), shared with the analyses.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from mmfuse._io import atomic_write_text
from mmfuse.errors import DataError
from mmfuse.evaluate.figures import (
    BASELINE_COLOR,
    BEST_COLOR,
    DPI,
    MAIN_COLOR,
    TRAIN_COLOR,
    VAL_COLOR,
    html_escape,
    md_escape,
    mpl_text,
    png_data_uri,
    style_axes,
    text_width_px,
)
from mmfuse.evaluate.protocol import UNIMODAL_PREFIX
from mmfuse.evaluate.rundir import RunDir
from mmfuse.evaluate.significance import SIGNIFICANCE_COLUMNS
from mmfuse.metrics import default_metrics, metric_info_for_column
from mmfuse.metrics.significance import ALPHA

__all__ = ["write_report", "write_summary_markdown"]

# The file names of the run directory are RunDir's (the layout is defined there, once).
_RESULTS_CSV = RunDir.RESULTS_CSV
_SUMMARY_CSV = RunDir.SUMMARY_CSV
_HISTORY_JSON = RunDir.HISTORY_JSON
_TEST_METRICS_JSON = RunDir.TEST_METRICS_JSON
_ANALYSIS_DIR = RunDir.ANALYSIS_DIR  # written by mmfuse.evaluate.analysis.analyze_run

# Columns of results.csv that describe a run rather than measure its quality.
_NON_METRIC_COLUMNS = ("fusion", "seed", "params", "train_seconds", "best_epoch")
# Preferred order of the metric columns in tables; unknown metrics follow in file order.
_KNOWN_METRICS = ("accuracy", "f1_weighted", "f1_macro", "mae", "rmse", "pearson")
# Confusion matrices with more classes than this are drawn without per-cell numbers (they would not fit).
_MAX_ANNOTATED_CLASSES = 17


# --------------------------------------------------------------------------------------------------------------
# Loading the run directory
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Stat:
    """Mean and standard deviation of one metric of one fusion over its seeds."""

    mean: float
    std: float
    n: int = 2  # seeds with a value: with one there is no spread to show


@dataclass
class _Run:
    """What the report needs from a run directory, validated and in display order."""

    run_dir: Path
    meta: dict[str, Any]
    results: pd.DataFrame
    task: str  # "classification" | "regression"
    metrics: list[str]  # metric columns of results.csv, display order
    main_metric: str
    fusions: list[str]  # best first by the main metric
    stats: dict[str, dict[str, _Stat]]  # fusion -> metric -> mean/std
    params: dict[str, float]  # fusion -> parameter count
    train_seconds: dict[str, float]  # fusion -> mean training time in seconds
    n_seeds: dict[str, int]
    notes: list[str] = field(default_factory=list)
    # fusion -> optional columns of summary.csv (vs_best_unimodal, p_vs_best_unimodal, ci_low, ci_high)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: str | None = None  # the best unimodal baseline the tests compare with (chosen on validation)


def _read_run_json(run_dir: Path) -> dict[str, Any]:
    return RunDir(run_dir).read_meta()


def _read_results(run_dir: Path) -> pd.DataFrame:
    results = RunDir(run_dir).read_results()
    if not _metric_columns(results):
        raise DataError(
            f"The results table '{RunDir(run_dir).results_csv}' has no numeric metric column (such as accuracy or "
            f"mae). Got the columns {list(results.columns)}."
        )
    return results


def _metric_columns(results: pd.DataFrame) -> list[str]:
    numeric = [
        str(c)
        for c in results.columns
        if c not in _NON_METRIC_COLUMNS
        and pd.api.types.is_numeric_dtype(results[c])
        and not pd.api.types.is_bool_dtype(results[c])
        and results[c].notna().any()
    ]
    test = [c for c in numeric if not c.startswith("val_")]
    val = [c for c in numeric if c.startswith("val_")]

    def order(cols: list[str]) -> list[str]:
        known = [m for m in _KNOWN_METRICS if m in cols]
        return known + [c for c in cols if c not in known]

    return order(test) + order(val)


def _shown_columns(metrics: Sequence[str], main: str) -> list[str]:
    """The results columns the report shows: every test metric, then the validation main metric and loss.

    ``results.csv`` holds ``val_<metric>`` for every metric and ``val_loss``; the report's table keeps the two that
    say how each fusion did where its checkpoint was chosen. A run whose rows carry neither (an older run recorded
    only ``val_<monitor>``) shows the validation columns it has.

    Example:
        >>> _shown_columns(["accuracy", "f1_macro", "val_f1_macro", "val_accuracy", "val_loss"], "accuracy")
        ['accuracy', 'f1_macro', 'val_accuracy', 'val_loss']
        >>> _shown_columns(["mae", "val_rmse"], "mae")
        ['mae', 'val_rmse']
    """
    test = [m for m in metrics if not m.startswith("val_")]
    val = [m for m in metrics if m.startswith("val_")]
    chosen = [m for m in (f"val_{main}", "val_loss") if m in val]
    return test + (chosen or val)


def _base_metric(metric: str) -> str:
    return metric.removeprefix("val_").removeprefix("test_")


def _higher_is_better(metric: str) -> bool:
    """The direction of a results column, read from the metric registry (one table for every consumer).

    A column that names no registered metric (a quantity a user's code wrote) is treated as higher-is-better.
    """
    try:
        return metric_info_for_column(metric).higher_is_better
    except ValueError:
        return True


def _task_type(meta: Mapping[str, Any], metrics: Sequence[str]) -> str:
    task = _dataset(meta).get("task")
    declared = task.get("type") if isinstance(task, dict) else None
    if declared in ("classification", "regression"):
        return str(declared)
    if "accuracy" in metrics or any(m.startswith("f1") for m in metrics):
        return "classification"
    return "regression"


def _main_metric(task: str, metrics: Sequence[str]) -> str:
    for name in default_metrics(task):
        if name in metrics:
            return name
    test_metrics = [m for m in metrics if not m.startswith("val_")]
    return (test_metrics or list(metrics))[0]


def _dataset(meta: Mapping[str, Any]) -> dict[str, Any]:
    dataset = meta.get("dataset")
    return dataset if isinstance(dataset, dict) else {}


def _read_summary(
    run_dir: Path, results: pd.DataFrame, metrics: Sequence[str], notes: list[str]
) -> tuple[dict[str, dict[str, _Stat]], dict[str, float], dict[str, float], dict[str, int]]:
    """Mean/std per fusion and metric: from summary.csv where it has them, else computed from results.csv."""
    summary: pd.DataFrame | None = None
    path = run_dir / _SUMMARY_CSV
    if path.is_file():
        try:
            summary = pd.read_csv(path, converters={"fusion": str})
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            notes.append(f"{_SUMMARY_CSV} could not be parsed ({exc}); means and deviations were recomputed.")
        else:
            if "fusion" not in summary.columns:
                notes.append(f"{_SUMMARY_CSV} has no 'fusion' column; means and deviations were recomputed.")
                summary = None
            else:
                summary = summary.drop_duplicates("fusion", keep="last").set_index("fusion")
    else:
        notes.append(f"{_SUMMARY_CSV} is missing; means and deviations were recomputed from {_RESULTS_CSV}.")

    def from_summary(fusion: str, column: str) -> float | None:
        if summary is None or fusion not in summary.index or column not in summary.columns:
            return None
        value = pd.to_numeric(pd.Series([summary.at[fusion, column]]), errors="coerce").iloc[0]
        return None if pd.isna(value) else float(value)

    stats: dict[str, dict[str, _Stat]] = {}
    params: dict[str, float] = {}
    seconds: dict[str, float] = {}
    n_seeds: dict[str, int] = {}
    for fusion, rows in results.groupby("fusion", sort=False):
        name = str(fusion)
        stats[name] = {}
        for metric in metrics:
            values = rows[metric].dropna()
            mean = from_summary(name, f"{metric}_mean")
            std = from_summary(name, f"{metric}_std")
            if mean is None:
                mean = float(values.mean()) if len(values) else math.nan
            if std is None or len(values) < 2:
                # One seed has no spread; summary.csv may write 0.0 there, which would read as "no variance".
                std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            stats[name][metric] = _Stat(mean, std, len(values))
        p = from_summary(name, "params")
        if p is None:
            p = from_summary(name, "params_mean")
        if p is None and "params" in rows:
            p = float(pd.to_numeric(rows["params"], errors="coerce").mean())
        params[name] = math.nan if p is None else p
        s = from_summary(name, "train_seconds_mean")
        if s is None and "train_seconds" in rows:
            s = float(pd.to_numeric(rows["train_seconds"], errors="coerce").mean())
        seconds[name] = math.nan if s is None else s
        n = from_summary(name, "n_seeds")
        n_seeds[name] = int(n) if n is not None else int(rows["seed"].nunique())
    return stats, params, seconds, n_seeds


def _load_run(run_dir: str | os.PathLike[str]) -> _Run:
    root = Path(run_dir)
    if not root.is_dir():
        raise DataError(f"The compare run directory '{root}' does not exist or is not a directory.")
    meta = _read_run_json(root)
    results = _read_results(root)
    metrics = _metric_columns(results)
    task = _task_type(meta, metrics)
    main = _main_metric(task, metrics)
    metrics = _shown_columns(metrics, main)
    recorded = meta.get("warnings")
    notes: list[str] = [str(w) for w in recorded] if isinstance(recorded, list) else []
    stats, params, seconds, n_seeds = _read_summary(root, results, metrics, notes)
    sign = 1.0 if _higher_is_better(main) else -1.0

    def rank_key(name: str) -> tuple[bool, float]:
        mean = stats[name][main].mean
        return (math.isnan(mean), -sign * mean if not math.isnan(mean) else 0.0)

    fusions = sorted(stats, key=rank_key)
    run = _Run(root, meta, results, task, metrics, main, fusions, stats, params, seconds, n_seeds, notes)
    extra, present = _read_significance(root)
    run.extra = {f: v for f, v in extra.items() if f in stats}
    run.reference = next((f for f, v in run.extra.items() if v.get("vs_best_unimodal") == "reference"), None)
    recorded_sig = meta.get("significance")
    if not present:
        notes.append(
            "This run has no confidence intervals or tests against the best unimodal baseline: its summary.csv "
            "has no ci_low / ci_high / p_vs_best_unimodal columns (a run made before compare saved per-item test "
            "predictions). Rerun the comparison to get them."
        )
    elif isinstance(recorded_sig, dict) and isinstance(recorded_sig.get("notes"), list):
        notes.extend(str(n) for n in recorded_sig["notes"])
    return run


def _read_significance(run_dir: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """The optional significance columns of summary.csv per fusion, and whether summary.csv has the columns.

    Empty cells are left out; a value that is not a number (or, for ``vs_best_unimodal``, not one of the verdicts)
    is left out too.
    """
    path = run_dir / _SUMMARY_CSV
    try:
        summary = pd.read_csv(path, converters={"fusion": str, "vs_best_unimodal": str})
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError):
        return {}, False
    if "fusion" not in summary.columns:
        return {}, False
    out: dict[str, dict[str, Any]] = {}
    for _, row in summary.drop_duplicates("fusion", keep="last").iterrows():
        values: dict[str, Any] = {}
        for column in SIGNIFICANCE_COLUMNS:
            if column not in summary.columns or pd.isna(row[column]):
                continue
            if column == "vs_best_unimodal":
                mark = str(row[column]).strip().lower()
                if mark in _VERDICT_TEXT or mark == "reference":
                    values[column] = mark
                continue
            number = pd.to_numeric(row[column], errors="coerce")
            if pd.notna(number) and math.isfinite(float(number)):
                values[column] = float(number)
        out[str(row["fusion"])] = values
    return out, any(c in summary.columns for c in ("ci_low", "p_vs_best_unimodal"))


# The verdicts of summary.csv's vs_best_unimodal column (mmfuse.metrics.significance.verdict) in a sentence.
_VERDICT_TEXT = {
    "better": "significantly better",
    "not different": "not significantly different",
    "worse": "significantly worse",
}


def _read_optional_json(path: Path, problems: list[str]) -> Any | None:
    """The parsed file, or None with the reason appended to ``problems``."""
    if not path.is_file():
        problems.append(f"'{_rel(path)}' is missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"'{_rel(path)}' is not valid JSON ({exc})")
        return None


def _missing_note(what: str, fusion: str, problems: Sequence[str], *, nothing_left: bool) -> str:
    """One note per fusion: either no figure at all, or a figure that leaves some seeds out."""
    if nothing_left:
        return f"No {what} for {fusion}: " + "; ".join(problems) + "."
    return f"The {what} of {fusion} left out some seeds: " + "; ".join(problems) + "."


def _rel(path: Path) -> str:
    """The last three parts of a path (models/<fusion>-seed<k>/<file>), enough to find it in the run."""
    return "/".join(path.parts[-3:])


def _model_dir(run: _Run, fusion: str, seed: int) -> Path:
    return RunDir(run.run_dir).model_dir(fusion, seed)


def _seeds(run: _Run, fusion: str) -> list[int]:
    return sorted(int(s) for s in run.results.loc[run.results["fusion"] == fusion, "seed"].unique())


# --------------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------------


def _decimals(means: Iterable[float], stds: Iterable[float] = ()) -> int:
    """Decimals that show three significant digits of the largest mean and two of the largest deviation."""
    digits = 3
    finite_means = [abs(m) for m in means if math.isfinite(m) and m != 0]
    if finite_means:
        digits = 2 - math.floor(math.log10(max(finite_means)))
    finite_stds = [s for s in stds if math.isfinite(s) and s > 0]
    if finite_stds:
        digits = max(digits, 1 - math.floor(math.log10(max(finite_stds))))
    return min(max(digits, 0), 6)


def _fmt(value: float, decimals: int) -> str:
    """``value`` with ``decimals``, or in two significant digits (``3.5e-06``) where it would round to zero."""
    if not math.isfinite(value):
        return "–"
    if value != 0 and round(value, decimals) == 0:
        return f"{value:.1e}"  # "0.00" would read as exactly zero (a val loss of 3e-6, a spread of 0.004)
    return f"{value:.{decimals}f}"


def _fmt_stat(stat: _Stat, decimals: int) -> str:
    if stat.n == 1:
        return f"{_fmt(stat.mean, decimals)} (n=1)"  # one seed: no spread, and "± 0" would claim there is none
    if not math.isfinite(stat.std):
        return _fmt(stat.mean, decimals)
    if stat.std != 0 and round(stat.std, decimals) == 0:  # a spread, but below the column's last digit
        return f"{_fmt(stat.mean, decimals)} ± <{10.0**-decimals:.{decimals}f}"
    return f"{_fmt(stat.mean, decimals)} ± {_fmt(stat.std, decimals)}"


def _fmt_int(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{round(value):,}"


def _metric_label(metric: str) -> str:
    base = _base_metric(metric)
    pretty = {
        "accuracy": "accuracy",
        "f1_weighted": "weighted F1",
        "f1_macro": "macro F1",
        "mae": "MAE",
        "rmse": "RMSE",
        "pearson": "Pearson r",
    }.get(base, base.replace("_", " "))
    return f"val {pretty}" if metric.startswith("val_") else pretty


def _metric_unit(metric: str) -> str:
    base = _base_metric(metric)
    if base == "accuracy":
        return "fraction correct"
    if base.startswith("f1"):
        return "0–1"
    if base == "pearson":
        return "−1 to 1"
    if base in ("mae", "rmse"):
        return "target units"
    return ""


def _capitalised(text: str) -> str:
    """Upper-case the first letter only ("MAE" stays "MAE", unlike ``str.capitalize``)."""
    return text[:1].upper() + text[1:]


def _axis_label(metric: str, prefix: str) -> str:
    unit = _metric_unit(metric)
    direction = "higher is better" if _higher_is_better(metric) else "lower is better"
    unit_text = f" [{unit}]" if unit else ""
    return f"{prefix} {_metric_label(metric)}{unit_text} — {direction}"


_mpl = mpl_text
_md = md_escape


# --------------------------------------------------------------------------------------------------------------
# The comparison in words (shared by the HTML headline and summary.md)
# --------------------------------------------------------------------------------------------------------------


def _is_baseline(name: str) -> bool:
    return name.startswith(UNIMODAL_PREFIX)


def _tied(a: float, b: float) -> bool:
    """Equal means, to the precision the numbers carry (a tie is reported as a tie, never broken by name)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _headline(
    run: _Run, name: Callable[[str], str], strong: Callable[[str], str], text: Callable[[str], str]
) -> list[str]:
    """Sentences that state the best fusion, how it stands against the best unimodal baseline, and its margins.

    Fusions and unimodal baselines (``unimodal-<m>``) are ranked apart: the first sentences name the best fusion
    and compare it with the best baseline (with the significance columns of ``summary.csv`` where present);
    runs whose means are equal are reported as tied, never ranked by name. ``name`` and ``strong`` format (and
    escape) a run name for the target format, ``text`` escapes other user-derived text.
    """
    main = run.main_metric
    label = text(_metric_label(main))
    ranked = [f for f in run.fusions if math.isfinite(run.stats[f][main].mean)]
    if not ranked:
        return [f"No fusion has a finite test {label}; there is no ranking."]
    dec = _decimals([run.stats[f][main].mean for f in ranked], [run.stats[f][main].std for f in ranked])
    sign = 1.0 if _higher_is_better(main) else -1.0
    fusions = [f for f in ranked if not _is_baseline(f)] or ranked
    baselines = [f for f in ranked if _is_baseline(f) and f not in fusions]
    best = fusions[0]
    b = run.stats[best][main]
    seeds = run.n_seeds[best]
    over = f"(mean ± std over {seeds} seeds)" if seeds != 1 else "(a single seed)"
    tied = [f for f in fusions if _tied(run.stats[f][main].mean, b.mean)]
    if len(tied) > 1:
        out = [
            f"{len(tied)} fusions tie for the best test {label}, {_fmt_stat(b, dec)} {over}: "
            + ", ".join(strong(f) for f in tied)
            + "."
        ]
    else:
        out = [f"Best fusion: {strong(best)} with test {label} {_fmt_stat(b, dec)} {over}."]
    if baselines:
        out.append(_versus_baseline(run, best, baselines, dec, sign, name, text))
    rest = [f for f in fusions if f not in tied]
    if not rest:
        if len(tied) == 1:
            out.append("It is the only fusion with a result, so there is no other fusion to compare it with.")
        return out

    def margin(other: str) -> str:
        o = run.stats[other][main]
        gap = sign * (b.mean - o.mean)
        relative = f" ({100 * gap / abs(o.mean):.1f} % relative)" if o.mean != 0 else ""
        return f"{_fmt(gap, dec)}{relative}"

    subject = "They beat" if len(tied) > 1 else "It beats"
    runner, worst = rest[0], rest[-1]
    r = run.stats[runner][main]
    what = "the next fusion" if len(tied) > 1 else "the runner-up"
    sentence = f"{subject} {what} {name(runner)} ({_fmt_stat(r, dec)}) by {margin(runner)}"
    if worst != runner:
        sentence += f" and the weakest, {name(worst)} ({_fmt_stat(run.stats[worst][main], dec)}), by {margin(worst)}"
    out.append(sentence + ".")
    others = [run.stats[f][main].mean for f in rest]
    mean_gap = sign * (b.mean - float(np.mean(others)))
    out.append(
        f"Averaged over the other {len(others)} fusion{'s' if len(others) != 1 else ''}, "
        f"{'they are' if len(tied) > 1 else 'it is'} better by {_fmt(mean_gap, dec)} {label}."
    )
    spread = max((s for s in (b.std, r.std) if math.isfinite(s)), default=math.nan)
    gap = sign * (b.mean - r.mean)
    if not math.isfinite(spread):
        out.append("With a single seed per fusion the seed-to-seed spread is unknown; treat the ranking as tentative.")
    elif gap <= spread:
        out.append(
            f"The lead over {name(runner)} is within one standard deviation across seeds ({_fmt(spread, dec)}), "
            "so the two are not clearly separated."
        )
    else:
        out.append(
            f"The lead over {name(runner)} is larger than the seed-to-seed standard deviation of either "
            f"({_fmt(spread, dec)} at most)."
        )
    return out


def _versus_baseline(
    run: _Run,
    best: str,
    baselines: Sequence[str],
    dec: int,
    sign: float,
    name: Callable[[str], str],
    text: Callable[[str], str],
) -> str:
    """How the best fusion stands against the best unimodal baseline: better, tied or worse (and how sure)."""
    main = run.main_metric
    b = run.stats[best][main]
    if run.reference in baselines:  # the baseline the tests used, chosen on validation
        base = str(run.reference)
        tied_bases = [base]
        which = "the best unimodal baseline (chosen on validation)"
    else:
        base = baselines[0]
        tied_bases = [f for f in baselines if _tied(run.stats[f][main].mean, run.stats[base][main].mean)]
        which = "the best unimodal baseline" if len(tied_bases) == 1 else "the best unimodal baselines"
    u = run.stats[base][main]
    base_text = " and ".join(name(f) for f in tied_bases)
    gap = sign * (b.mean - u.mean)
    mark = str(run.extra.get(best, {}).get("vs_best_unimodal") or "")
    p_value = run.extra.get(best, {}).get("p_vs_best_unimodal")
    p_text = f"; paired permutation test {_p_phrase(p_value)}" if isinstance(p_value, float) else ""
    if _tied(b.mean, u.mean):
        return (
            f"Against {which}, {base_text} ({_fmt_stat(u, dec)}): a tie. A single modality does as well as the best "
            f"fusion on test {text(_metric_label(main))}{p_text}."
        )
    verdict = "better" if gap > 0 else "worse"
    if mark in _VERDICT_TEXT:
        verdict = _VERDICT_TEXT[mark]
    elif math.isfinite(b.std) or math.isfinite(u.std):
        spread = max(s for s in (b.std, u.std) if math.isfinite(s))
        if abs(gap) <= spread:
            verdict += ", within one seed-to-seed standard deviation"
    return (
        f"Against {which}, {base_text} ({_fmt_stat(u, dec)}), it is {verdict}: "
        f"{'+' if gap > 0 else '−'}{_fmt(abs(gap), dec)} {text(_metric_label(main))}{p_text}."
    )


def _p_phrase(p_value: float) -> str:
    """``p = 0.012`` with two significant digits, ``p < 0.001`` below that (the resampling resolves no more)."""
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def _ci(run: _Run, fusion: str) -> tuple[float, float] | None:
    """The fusion's confidence interval of the main metric from summary.csv, if it has one."""
    values = run.extra.get(fusion, {})
    low, high = values.get("ci_low"), values.get("ci_high")
    return (low, high) if isinstance(low, float) and isinstance(high, float) else None


def _versus_cell(run: _Run, fusion: str) -> tuple[str, str]:
    """The text and CSS class of a fusion's "vs best unimodal" cell ("–" when it has no test)."""
    values = run.extra.get(fusion, {})
    mark = values.get("vs_best_unimodal")
    if mark == "reference":
        return "reference", ""
    if mark not in _VERDICT_TEXT:
        return "–", ""
    p_value = values.get("p_vs_best_unimodal")
    p_text = f" ({_p_phrase(p_value)})" if isinstance(p_value, float) else ""
    return f"{mark}{p_text}", {"better": "sig-better", "worse": "sig-worse"}.get(str(mark), "")


def _break_only_before_p(text: str) -> str:
    """A verdict such as "not different (p = 0.31)" may wrap before its parenthesis only: each part stays whole."""
    verdict, paren, p_text = text.partition(" (")
    return verdict.replace(" ", "\u00a0") + (" (" + p_text.replace(" ", "\u00a0") if paren else "")


def _has_significance(run: _Run) -> bool:
    return any(_ci(run, f) is not None or "vs_best_unimodal" in run.extra.get(f, {}) for f in run.fusions)


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------


_DPI = DPI
_png_data_uri = png_data_uri
_text_width_px = text_width_px
_style_axes = style_axes


def _comparison_figure(run: _Run) -> str:
    main = run.main_metric
    fusions = run.fusions
    n = len(fusions)
    stats = [run.stats[f][main] for f in fusions]
    dec = _decimals([s.mean for s in stats], [s.std for s in stats])
    names = [_mpl(f) for f in fusions]
    values_text = [_fmt_stat(s, dec) for s in stats]
    # Layout in pixels: names left of the axes, "mean ± std" right of it, one row of at least 34 px per fusion.
    width = 880
    left = _text_width_px(names, 9) + 18
    right = _text_width_px(values_text, 9, family="monospace", weight="bold") + 26
    top, bottom, row = 40, 50, max(34.0, 130.0 / n)  # short lists still get a readable plot area
    height = n * row + top + bottom
    fig = Figure(figsize=(width / _DPI, height / _DPI))
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height)
    ax = fig.add_subplot()
    label_transform = blended_transform_factory(ax.transAxes, ax.transData)
    top_mean = stats[0].mean
    best_rows = {y for y, s in enumerate(stats) if math.isfinite(top_mean) and _tied(s.mean, top_mean)}
    for y, (fusion, stat) in enumerate(zip(fusions, stats, strict=True)):
        if y % 2 == 0:
            ax.axhspan(y - 0.5, y + 0.5, color="#f3f4f6", zorder=0, linewidth=0)
        baseline = _is_baseline(fusion)
        color = BEST_COLOR if y in best_rows else BASELINE_COLOR if baseline else MAIN_COLOR
        values = run.results.loc[run.results["fusion"] == fusion, main].dropna().to_numpy(dtype=float)
        # Spread the seed dots vertically (deterministically) so equal values stay visible.
        offsets = np.linspace(-0.2, 0.2, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.scatter(values, y + offsets, s=16, color="#374151", alpha=0.55, zorder=3, linewidths=0)
        interval = _ci(run, fusion)
        if interval is not None:  # the 95 % bootstrap interval: a pale band behind the marker
            ax.hlines(y, *interval, color=color, linewidth=9, alpha=0.25, zorder=2.5)
        if math.isfinite(stat.mean):
            xerr = stat.std if math.isfinite(stat.std) else None
            ax.errorbar(stat.mean, y, xerr=xerr, fmt="s" if baseline else "D", color=color, ms=7, capsize=4,
                        elinewidth=2, zorder=4, mfc="white" if baseline else color, mew=2)  # fmt: skip
        ax.text(
            1.0, y, "  " + values_text[y], transform=label_transform, va="center", ha="left", fontsize=9,
            fontweight="bold" if y in best_rows else "normal", family="monospace", color=color,
        )  # fmt: skip
    baselines = [f for f in fusions if _is_baseline(f) and math.isfinite(run.stats[f][main].mean)]
    if run.reference in baselines:
        baselines.insert(0, baselines.pop(baselines.index(str(run.reference))))
    intervals = [v for f in fusions for v in (_ci(run, f) or ())]
    values = np.concatenate([run.results[main].dropna().to_numpy(dtype=float), np.asarray(intervals, dtype=float)])
    low, high = _honest_limits(main, values, stats)
    ax.set_xlim(low, high)
    if baselines and len(baselines) < n:
        ref = run.stats[baselines[0]][main].mean
        chosen = " (chosen on val)" if baselines[0] == run.reference else ""
        label = f" best unimodal{chosen}: {_mpl(baselines[0], 30)} "
        ax.axvline(ref, color=BASELINE_COLOR, linestyle="--", linewidth=1.2, zorder=2)
        # The label runs away from the nearer edge, so a line near the right end keeps it inside the figure.
        ha = "right" if ref > low + 0.5 * (high - low) else "left"
        ax.text(ref, -0.5, label, color=BASELINE_COLOR, fontsize=8, va="bottom", ha=ha, clip_on=False)
    ax.set_yticks(range(n), names)
    ax.set_ylim(n - 0.5, -0.5)  # best at the top
    ax.tick_params(axis="y", length=0)
    _style_axes(ax)
    ax.grid(False, axis="y")
    ax.set_xlabel(_axis_label(main, "Test"), fontsize=10)
    seeds = sorted({run.n_seeds[f] for f in fusions})
    seed_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    bands = ", bands: 95 % CI" if _has_significance(run) else ""
    fig.text(
        10 / width, 1 - 10 / height,
        f"Test {_metric_label(main)} per fusion, best first: mean ± std over {seed_text} seeds (dots: single seeds"
        f"{bands})",
        fontsize=11, va="top", ha="left",
    )  # fmt: skip
    return _png_data_uri(fig)


def _honest_limits(metric: str, values: np.ndarray, stats: Sequence[_Stat]) -> tuple[float, float]:
    """Axis limits that neither zoom a small gap to fill the page nor run past a bounded metric's range.

    The span is at least a tenth of the metric's range (bounded metrics such as accuracy) or a tenth of the
    largest magnitude (unbounded ones such as MAE), and the limits stay inside the metric's bounds.
    """
    ends = [float(v) for v in values if math.isfinite(v)]
    for st in stats:
        if math.isfinite(st.mean):
            spread = st.std if math.isfinite(st.std) else 0.0
            ends += [st.mean - spread, st.mean + spread]
    if not ends:
        return 0.0, 1.0
    low, high = min(ends), max(ends)
    try:
        bound_low, bound_high = metric_info_for_column(metric).bounds
    except ValueError:
        bound_low, bound_high = None, None
    if bound_low is not None and bound_high is not None:
        min_span = 0.1 * (bound_high - bound_low)
    else:
        min_span = 0.1 * max(abs(low), abs(high), 1e-12)
    pad = 0.06 * max(high - low, min_span)
    if high - low < min_span:
        centre = (low + high) / 2
        low, high = centre - min_span / 2, centre + min_span / 2
    low, high = low - pad, high + pad
    if bound_low is not None and low < bound_low:
        high, low = min(high + (bound_low - low), bound_high if bound_high is not None else math.inf), bound_low
    if bound_high is not None and high > bound_high:
        low, high = max(low - (high - bound_high), bound_low if bound_low is not None else -math.inf), bound_high
    return low, high


def _history_frame(raw: Any) -> pd.DataFrame | None:
    if isinstance(raw, dict) and isinstance(raw.get("history"), list):
        raw = raw["history"]
    if not isinstance(raw, list) or not raw or not all(isinstance(row, dict) for row in raw):
        return None
    frame = pd.DataFrame(raw)
    frame = frame.apply(pd.to_numeric, errors="coerce")
    if "epoch" not in frame or frame["epoch"].isna().any():
        frame["epoch"] = np.arange(1, len(frame) + 1)
    return frame


def _curve_metric(run: _Run, frames: Sequence[pd.DataFrame]) -> str | None:
    columns = {str(c) for frame in frames for c in frame.columns if frame[c].notna().any()}
    config = run.meta.get("train_config")
    monitor = config.get("monitor") if isinstance(config, dict) else None
    for candidate in (f"val_{run.main_metric}", f"val_{monitor}" if monitor else None):
        if candidate and candidate in columns and candidate != "val_loss":
            return candidate
    others = sorted(c for c in columns if c.startswith("val_") and c != "val_loss")
    return others[0] if others else None


def _best_epoch(run: _Run, fusion: str, seed: int, frame: pd.DataFrame, metric: str | None) -> float | None:
    rows = run.results[(run.results["fusion"] == fusion) & (run.results["seed"] == seed)]
    if "best_epoch" in rows and len(rows):
        value = pd.to_numeric(rows["best_epoch"], errors="coerce").iloc[0]
        if pd.notna(value) and (frame["epoch"] == value).any():
            return float(value)
    if metric and metric in frame and frame[metric].notna().any():
        series = frame[metric]
        index = series.idxmax() if _higher_is_better(metric) else series.idxmin()
        return float(frame.at[index, "epoch"])
    return None


def _plot_metric_panel(
    ax: Any, histories: Mapping[int, pd.DataFrame], metric: str, best: Mapping[int, float | None]
) -> None:
    n = len(histories)
    star_labelled = False
    for i, (seed, frame) in enumerate(histories.items()):
        if metric not in frame:
            continue
        ax.plot(frame["epoch"], frame[metric], color=MAIN_COLOR, alpha=0.35, linewidth=1,
                label=("single seeds" if n > 1 else "validation") if i == 0 else None)  # fmt: skip
        b = best[seed]
        value = frame.loc[frame["epoch"] == b, metric].dropna() if b is not None else pd.Series(dtype=float)
        if len(value):
            ax.plot([b] * len(value), value, linestyle="none", marker="*", ms=11, color=BEST_COLOR,
                    markeredgecolor="black", markeredgewidth=0.5, zorder=5,
                    label=None if star_labelled else "best epoch")  # fmt: skip
            star_labelled = True
    if n > 1:
        stacked = pd.concat([f[["epoch", metric]] for f in histories.values() if metric in f], ignore_index=True)
        grouped = stacked.groupby("epoch")[metric].agg(["mean", "count"])
        # Stop the mean where fewer than half of the seeds are still training (early stopping ends them).
        grouped = grouped[grouped["count"] >= max(2, math.ceil(n / 2))]
        if len(grouped):
            ax.plot(grouped.index, grouped["mean"], color=MAIN_COLOR, linewidth=2.2, label="mean over seeds")
    unit = _metric_unit(metric)
    ax.set_ylabel(_mpl(_capitalised(_metric_label(_base_metric(metric))), 30), fontsize=10)
    ax.set_title(_mpl(f"Validation {_metric_label(_base_metric(metric))}", 45) + (f" [{unit}]" if unit else ""),
                 fontsize=10, loc="left")  # fmt: skip


def _plot_loss_panel(ax: Any, histories: Mapping[int, pd.DataFrame], best: Mapping[int, float | None]) -> None:
    n = len(histories)
    for column, color, label in (("train_loss", TRAIN_COLOR, "train"), ("val_loss", VAL_COLOR, "validation")):
        frames = [f[["epoch", column]] for f in histories.values() if column in f]
        if not frames:
            continue
        grouped = pd.concat(frames, ignore_index=True).groupby("epoch")[column]
        mean, std = grouped.mean().dropna(), grouped.std(ddof=1)
        if mean.empty:
            continue
        ax.plot(mean.index, mean.to_numpy(), color=color, linewidth=2,
                label=f"{label} loss" + (" (mean ± std)" if n > 1 else ""))  # fmt: skip
        spread = std.reindex(mean.index).fillna(0.0).to_numpy()
        if n > 1 and spread.any():
            low = mean - spread
            if (mean >= 0).all():  # a loss is never negative: the band must not suggest it
                low = low.clip(lower=0.0)
            ax.fill_between(mean.index, low, mean + spread, color=color, alpha=0.15, linewidth=0)
    known = [b for b in best.values() if b is not None]
    if known:
        ax.axvline(float(np.median(known)), color="#6b7280", linestyle=":", linewidth=1.5,
                   label="best epoch" + (" (median)" if len(known) > 1 else ""))  # fmt: skip
    ax.set_ylabel("Loss", fontsize=10)
    ax.set_title("Training and validation loss", fontsize=10, loc="left")


def _legend_location(panel: str, metric: str | None) -> str:
    """A fixed corner away from the curves ("best" searches every data point and costs a tenth of a second).

    Losses fall, so their legend goes top right; a rising metric (accuracy) leaves the bottom right free and a
    falling one (MAE) the top right.
    """
    if panel == "loss" or metric is None:
        return "upper right"
    return "lower right" if _higher_is_better(metric) else "upper right"


def _is_flat(frames: Sequence[pd.DataFrame], column: str) -> bool:
    """Whether ``column`` holds one value over every epoch of every seed (a flat curve shows nothing)."""
    values = pd.concat([f[column] for f in frames if column in f]).dropna()
    return len(values) > 1 and bool(np.isclose(values.min(), values.max(), rtol=0, atol=1e-12))


def _curves_figure(run: _Run, fusion: str, histories: Mapping[int, pd.DataFrame]) -> str | None:
    frames = list(histories.values())
    metric = _curve_metric(run, frames)
    if metric is not None and _is_flat(frames, metric):
        metric = None  # a flat panel carries nothing; the caller notes which fusions had one
    has_loss = any(c in f and f[c].notna().any() for f in frames for c in ("train_loss", "val_loss"))
    panels = [p for p in ("metric" if metric else "", "loss" if has_loss else "") if p]
    if not panels:
        return None
    width, height = 470 * len(panels), 350
    fig = Figure(figsize=(width / _DPI, height / _DPI))
    fig.subplots_adjust(left=84 / width, right=1 - 14 / width, top=1 - 82 / height, bottom=48 / height, wspace=0.3)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    best = {s: _best_epoch(run, fusion, s, f, metric) for s, f in histories.items()}
    epochs = pd.concat([f["epoch"] for f in frames])
    for ax, panel in zip(axes, panels, strict=True):
        _style_axes(ax)
        if panel == "metric" and metric is not None:
            _plot_metric_panel(ax, histories, metric, best)
        else:
            _plot_loss_panel(ax, histories, best)
        ax.set_xlabel("Epoch", fontsize=10)
        ax.legend(fontsize=8, frameon=True, framealpha=0.85, edgecolor="none", loc=_legend_location(panel, metric))
        if epochs.max() - epochs.min() <= 12:
            ax.xaxis.get_major_locator().set_params(integer=True)
    seeds = len(histories)
    fig.text(10 / width, 1 - 10 / height, _mpl(fusion, 60), fontsize=12, fontweight="bold", va="top", ha="left")
    fig.text(10 / width, 1 - 30 / height, f"{seeds} seed{'s' if seeds != 1 else ''} with a training history",
             fontsize=9, color="#6b7280", va="top", ha="left")  # fmt: skip
    return _png_data_uri(fig)


def _confusion_figure(fusion: str, counts: np.ndarray, class_names: Sequence[str], n_seeds: int) -> str:
    k = counts.shape[0]
    names = [_mpl(c, 18) for c in class_names]
    tick_size = 9 if k <= 12 else 8 if k <= 20 else 7
    label_w = _text_width_px(names, tick_size)
    # Many classes: vertical labels (one text line per cell); a few long names: 45 degrees; else horizontal.
    rotation = 90 if k > 12 else 45 if (k > 4 or label_w > 60) else 0
    # Cells of 22-62 px; the matrix is at least 260 px wide so the figure is never a postage stamp.
    cell = min(max(460 / k, 22.0), 62.0)
    side = max(k * cell, 260.0)
    cell = side / k
    subtitle = f"summed over {n_seeds} seed{'s' if n_seeds != 1 else ''}, {int(counts.sum()):,} test predictions"
    title_w = max(_text_width_px([_mpl(fusion, 48)], 11, weight="bold"), _text_width_px([subtitle], 9))
    left = label_w + 44
    bottom = {0: 18.0, 45: label_w * 0.72 + 14, 90: label_w + 8}[rotation] + 44
    top, cbar_gap, cbar_w, cbar_space = 58, 18, 14, 70
    width = max(left + side + cbar_gap + cbar_w + cbar_space, title_w + 24)
    height = top + side + bottom
    fig = Figure(figsize=(width / _DPI, height / _DPI))
    ax = fig.add_axes((left / width, bottom / height, side / width, side / height))
    cax = fig.add_axes(((left + side + cbar_gap) / width, bottom / height, cbar_w / width, side / height))
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(k), names, rotation=rotation, ha="right" if rotation else "center",
                  va="center" if rotation == 90 else "top", rotation_mode="anchor", fontsize=tick_size)  # fmt: skip
    ax.set_yticks(range(k), names, fontsize=tick_size)
    ax.set_xlabel("Predicted class", fontsize=10)
    ax.set_ylabel("True class", fontsize=10)
    if k <= _MAX_ANNOTATED_CLASSES:  # cells are at least 460 / 17 = 27 px here
        size = 9 if cell >= 45 else 7 if cell >= 32 else 6
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(counts[i, j])}\n{100 * shares[i, j]:.0f}%", ha="center", va="center",
                        fontsize=size, color="white" if shares[i, j] > 0.55 else "#111827")  # fmt: skip
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("Share of the true class (row-normalised)", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    fig.text(10 / width, 1 - 10 / height, _mpl(fusion, 48), fontsize=11, fontweight="bold", va="top", ha="left")
    fig.text(10 / width, 1 - 30 / height, subtitle, fontsize=9, color="#6b7280", va="top", ha="left")
    return _png_data_uri(fig)


def _summed_confusion(run: _Run, fusion: str, problems: list[str]) -> tuple[np.ndarray, list[str], int] | None:
    total: np.ndarray | None = None
    names: list[str] = []
    used = 0
    for seed in _seeds(run, fusion):
        path = _model_dir(run, fusion, seed) / _TEST_METRICS_JSON
        data = _read_optional_json(path, problems)
        if data is None:
            continue
        matrix = data.get("confusion_matrix") if isinstance(data, dict) else None
        try:
            counts = np.asarray(matrix, dtype=float)
        except (TypeError, ValueError):
            counts = np.empty((0,))
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
            problems.append(f"'{_rel(path)}' has no square confusion_matrix")
            continue
        if total is not None and total.shape != counts.shape:
            problems.append(
                f"'{_rel(path)}' is {counts.shape[0]}×{counts.shape[1]} while earlier seeds are "
                f"{total.shape[0]}×{total.shape[1]}"
            )
            continue
        total = counts if total is None else total + counts
        used += 1
        if not names and isinstance(data, dict) and isinstance(data.get("class_names"), list):
            names = [str(c) for c in data["class_names"]]
    if total is None:
        return None
    k = total.shape[0]
    if len(names) != k:
        task = _dataset(run.meta).get("task")
        declared = task.get("class_names") if isinstance(task, dict) else None
        names = [str(c) for c in declared] if isinstance(declared, list) and len(declared) == k else []
    return total, names or [str(i) for i in range(k)], used


# --------------------------------------------------------------------------------------------------------------
# HTML: Python computes the page's data, templates/report.html.j2 lays it out, templates/report.css styles it
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cell:
    """One table cell: its text (escaped by the template), extra CSS classes, and how it is set."""

    text: str
    cls: str = ""
    kind: str = ""  # "" | "code" | "strong"


def _table(
    header: Sequence[str], rows: Sequence[Sequence[_Cell]], numeric: Sequence[bool], caption: str = ""
) -> dict[str, Any]:
    return {"header": list(header), "rows": [list(r) for r in rows], "numeric": list(numeric), "caption": caption}


def _kv_items(
    items: Iterable[tuple[str, object]], *, code: Container[str] | None = None
) -> list[tuple[str, str, bool]]:
    """Key/value rows; values of the keys in ``code`` (every key when None) are set as code."""
    out = []
    for key, value in items:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        out.append((str(key), text, code is None or key in code))
    return out


def _figure(uri: str, alt: str, caption: str = "") -> dict[str, str]:
    return {"uri": uri, "alt": alt, "caption": caption}


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _when(meta: Mapping[str, Any]) -> str:
    started, finished = _parse_time(meta.get("started")), _parse_time(meta.get("finished"))
    if started is None:
        return "date not recorded"
    text = started.strftime("%Y-%m-%d %H:%M")
    if finished is not None:
        try:
            seconds = (finished - started).total_seconds()
        except TypeError:  # one timestamp has a time zone and the other not
            return text
        minutes, secs = divmod(round(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        text += f" (took {hours} h {minutes} min)" if hours else f" (took {minutes} min {secs} s)"
    return text


def _dataset_context(run: _Run) -> dict[str, Any]:
    dataset = _dataset(run.meta)
    raw_task = dataset.get("task")
    task: dict[str, Any] = raw_task if isinstance(raw_task, dict) else {}
    task_items: list[tuple[str, object]] = [("type", run.task)]
    if task.get("level"):
        task_items.append(("label level", str(task["level"])))
    if isinstance(task.get("class_names"), list) and task["class_names"]:
        task_items.append(("classes", ", ".join(str(c) for c in task["class_names"])))
    context: dict[str, Any] = {
        "name": str(dataset.get("name", "unnamed data set")),
        "description": str(dataset.get("description") or ""),
        "task": _kv_items(task_items, code=()),
        "sizes": None,
        "modalities": None,
    }
    sizes = dataset.get("sizes")
    if isinstance(sizes, dict) and sizes:
        rows = [
            [_Cell(str(k)), _Cell(_fmt_int(float(v)) if isinstance(v, int | float) else str(v))]
            for k, v in sizes.items()
        ]
        context["sizes"] = _table(["split", "samples"], rows, [False, True])
    modalities = dataset.get("modalities")
    if isinstance(modalities, dict) and modalities:
        specs = {str(k): (v if isinstance(v, dict) else {}) for k, v in sorted(modalities.items())}
        described = any(spec.get("description") for spec in specs.values())
        header = ["modality", "dim", "kind"] + (["description"] if described else [])
        mod_rows = []
        for name, spec in specs.items():
            row = [_Cell(name, kind="code"), _Cell(str(spec.get("dim", "–"))), _Cell(str(spec.get("kind", "–")))]
            if described:
                row.append(_Cell(str(spec.get("description", ""))))
            mod_rows.append(row)
        context["modalities"] = _table(header, mod_rows, [False, True, False, False][: len(header)])
    return context


def _run_context(run: _Run) -> dict[str, Any]:
    run_items: list[tuple[str, object]] = [("date", _when(run.meta))]
    if run.meta.get("command"):
        run_items.append(("command", str(run.meta["command"])))
    listed = run.meta.get("fusions")
    fusions = [str(f) for f in listed] if isinstance(listed, list) and listed else run.fusions
    run_items.append(("fusions", ", ".join(fusions)))
    used = run.meta.get("modalities")
    if isinstance(used, list) and used:
        known = _dataset(run.meta).get("modalities")
        subset = isinstance(known, dict) and set(map(str, used)) != set(map(str, known))
        run_items.append(
            ("modalities", ", ".join(map(str, used)) + (" (a subset of the data set's)" if subset else ""))
        )
    run_items.append(("seeds", ", ".join(str(s) for s in sorted(run.results["seed"].unique()))))
    versions = run.meta.get("versions")
    configs = []
    for key, title in (("train_config", "Training configuration"), ("model_config", "Model configuration")):
        config = run.meta.get(key)
        if isinstance(config, dict) and config:
            configs.append({"title": title, "rows": _kv_items(sorted(config.items()))})
    return {
        "run_items": _kv_items(run_items, code={"command"}),
        "versions": _kv_items(versions.items(), code=()) if isinstance(versions, dict) and versions else [],
        "configs": configs,
    }


def _comparison_table(run: _Run) -> dict[str, Any]:
    header = ["Fusion", "Seeds"] + [_metric_label(m) for m in run.metrics] + ["Parameters", "Train time [s]"]
    numeric = [False, True] + [True] * len(run.metrics) + [True, True]
    columns: list[list[_Cell]] = [
        [_Cell(f, kind="strong" if i == 0 else "") for i, f in enumerate(run.fusions)],
        [_Cell(str(run.n_seeds[f])) for f in run.fusions],
    ]

    def best_flags(values: Sequence[float], higher: bool) -> list[str]:
        finite = [v for v in values if math.isfinite(v)]
        if len(finite) < 2:
            return [""] * len(values)
        target = max(finite) if higher else min(finite)
        return [
            "best" if math.isfinite(v) and math.isclose(v, target, rel_tol=1e-12, abs_tol=1e-15) else "" for v in values
        ]

    for metric in run.metrics:
        stats = [run.stats[f][metric] for f in run.fusions]
        dec = _decimals([s.mean for s in stats], [s.std for s in stats])
        # The checkpoints were chosen on the validation split: a good value there is the selection at work, not a
        # result to crown.
        flags = (
            best_flags([s.mean for s in stats], _higher_is_better(metric))
            if not metric.startswith("val_")
            else [""] * len(stats)
        )
        columns.append([_Cell(_fmt_stat(s, dec), flag) for s, flag in zip(stats, flags, strict=True)])
    if _has_significance(run):
        header[2 + len(run.metrics) : 2 + len(run.metrics)] = ["95 % CI", "vs best unimodal"]  # fmt: skip
        numeric[2 + len(run.metrics) : 2 + len(run.metrics)] = [True, False]
        columns.append([_Cell(_ci_text(run, f)) for f in run.fusions])
        versus = [_versus_cell(run, f) for f in run.fusions]
        columns.append([_Cell(_break_only_before_p(text), cls) for text, cls in versus])
    params = [run.params[f] for f in run.fusions]
    columns.append([_Cell(_fmt_int(p), flag) for p, flag in zip(params, best_flags(params, False), strict=True)])
    seconds = [run.train_seconds[f] for f in run.fusions]
    columns.append([_Cell(_fmt(s, 1), flag) for s, flag in zip(seconds, best_flags(seconds, False), strict=True)])
    rows = [list(row) for row in zip(*columns, strict=True)]
    return _table(header, rows, numeric)


def _ci_text(run: _Run, fusion: str) -> str:
    """``[low, high]`` with the decimals of the main metric's column, or "–"."""
    interval = _ci(run, fusion)
    if interval is None:
        return "–"
    main = run.main_metric
    dec = _decimals([run.stats[f][main].mean for f in run.fusions], [run.stats[f][main].std for f in run.fusions])
    return f"[{_fmt(interval[0], dec)}, {_fmt(interval[1], dec)}]"


def _per_seed_table(run: _Run) -> dict[str, Any]:
    results = run.results.sort_values(
        ["fusion", "seed"], key=lambda s: s.map(run.fusions.index) if s.name == "fusion" else s
    )
    header = [str(c) for c in results.columns]
    numeric = [bool(pd.api.types.is_numeric_dtype(results[c])) for c in results.columns]
    decimals = {
        c: _decimals(results[c].dropna().astype(float).tolist())
        for c in results.columns
        if pd.api.types.is_float_dtype(results[c])
    }
    rows = []
    for record in results.itertuples(index=False):
        row = []
        for column, value in zip(results.columns, record, strict=True):
            if column in decimals and isinstance(value, float):
                text = _fmt(value, 1 if column == "train_seconds" else decimals[column])
            elif column == "params" and isinstance(value, int | float | np.number):
                text = _fmt_int(float(value))
            else:
                text = "–" if isinstance(value, float) and math.isnan(value) else str(value)
            row.append(_Cell(text))
        rows.append(row)
    return _table(header, rows, numeric)


def _curves_context(run: _Run) -> dict[str, Any]:
    notes: list[str] = []
    figures: list[dict[str, str]] = []
    flat: list[str] = []
    flat_metric = ""
    for fusion in run.fusions:
        histories: dict[int, pd.DataFrame] = {}
        problems: list[str] = []
        for seed in _seeds(run, fusion):
            path = _model_dir(run, fusion, seed) / _HISTORY_JSON
            raw = _read_optional_json(path, problems)
            if raw is None:
                continue
            frame = _history_frame(raw)
            if frame is None:
                problems.append(f"'{_rel(path)}' is not a non-empty list of epochs")
                continue
            histories[seed] = frame
        if problems:
            notes.append(_missing_note("training curves", fusion, problems, nothing_left=not histories))
        if not histories:
            continue
        metric = _curve_metric(run, list(histories.values()))
        if metric is not None and _is_flat(list(histories.values()), metric):
            flat.append(fusion)
            flat_metric = metric
        uri = _curves_figure(run, fusion, histories)
        if uri is None:
            notes.append(
                f"No training curves for {fusion}: its histories record neither a validation metric nor a loss."
            )
            continue
        figures.append(_figure(uri, f"Training curves of {fusion}"))
    if flat:
        notes.append(
            f"The {_metric_label(flat_metric)} curve is flat (one value at every epoch and seed) for "
            + ", ".join(flat)
            + "; only the losses are drawn for them."
        )
    return {
        "text": "Validation metric per epoch (thin lines: seeds, thick line: their mean, stars: the epoch whose "
        "checkpoint was kept) and the training and validation loss (mean ± std over seeds).",
        "notes": notes,
        "figures": figures,
    }


#: At most this many distinct confusion matrices are shown open; with more, the best fusion's, the best unimodal
#: baseline's and the worst row's stay open and the rest are folded into a <details> element.
_MAX_OPEN_CONFUSIONS = 4


def _group_title(names: Sequence[str]) -> str:
    """The figure title of fusions whose summed matrices are identical ("concat = gated", "concat and 6 more")."""
    if len(names) == 1:
        return names[0]
    if len(names) <= 3:
        return " = ".join(names) + " (identical)"
    return f"{names[0]} and {len(names) - 1} more (identical)"


def _confusion_context(run: _Run) -> dict[str, Any] | None:
    if run.task != "classification":
        return None
    notes: list[str] = []
    # Fusions (display order: best first) whose summed matrices are identical share one figure.
    groups: list[tuple[list[str], np.ndarray, list[str], int]] = []
    too_many_classes = False
    for fusion in run.fusions:
        problems: list[str] = []
        summed = _summed_confusion(run, fusion, problems)
        if problems or summed is None:
            problems = problems or ["no seed has a test_metrics.json"]
            notes.append(_missing_note("confusion matrix", fusion, problems, nothing_left=summed is None))
        if summed is None:
            continue
        counts, names, used = summed
        too_many_classes |= counts.shape[0] > _MAX_ANNOTATED_CLASSES
        same = next(
            (
                g
                for g in groups
                if g[2] == names and g[3] == used and g[1].shape == counts.shape and (g[1] == counts).all()
            ),
            None,
        )
        if same is None:
            groups.append(([fusion], counts, names, used))
        else:
            same[0].append(fusion)
    if not groups:
        return {"text": "", "notes": notes, "figures": [], "folded": [], "folded_summary": ""}
    open_idx = set(range(len(groups)))
    fusions_only: list[int] = []
    baseline: str | None = None
    worst = -1
    scores: list[float] = []
    if len(groups) > _MAX_OPEN_CONFUSIONS:
        fusions_only = [i for i, g in enumerate(groups) if any(not _is_baseline(f) for f in g[0])]
        baseline = run.reference or next((f for f in run.fusions if _is_baseline(f)), None)
        scores = [run.stats[g[0][0]][run.main_metric].mean for g in groups]
        sign = -1.0 if _higher_is_better(run.main_metric) else 1.0
        worst = max(range(len(groups)), key=lambda i: sign * scores[i] if math.isfinite(scores[i]) else math.inf)
        open_idx = {fusions_only[0] if fusions_only else 0, worst}
        open_idx |= {i for i, g in enumerate(groups) if baseline in g[0]}
    figures: list[dict[str, str]] = []
    folded: list[dict[str, str]] = []
    for i, (members, counts, names, used) in enumerate(groups):
        role = []
        if len(groups) > _MAX_OPEN_CONFUSIONS and i in open_idx:
            if i == (fusions_only[0] if fusions_only else 0):
                role.append("the best fusion")
            if baseline in members:
                role.append("the best unimodal baseline")
            if i == worst:
                tied = [g[0][0] for k, g in enumerate(groups) if k != i and _tied(scores[k], scores[i])]
                role.append("the lowest test score" + (f" (tied with {', '.join(tied)})" if tied else ""))
        caption = "Identical summed matrices: " + ", ".join(members) + "." if len(members) > 1 else ""
        if role:
            caption = (caption + " " if caption else "") + "Shown as " + " and ".join(role) + "."
        figure = _figure(
            _confusion_figure(_group_title(members), counts, names, used),
            f"Confusion matrix of {', '.join(members)} ({int(counts.sum())} test predictions over "
            f"{used} seed{'s' if used != 1 else ''})",
            caption,
        )
        (figures if i in open_idx else folded).append(figure)
    if too_many_classes:
        notes.append(
            f"Matrices with more than {_MAX_ANNOTATED_CLASSES} classes show colours only: the counts would not fit."
        )
    shared = sum(len(g[0]) for g in groups) - len(groups)
    text = (
        "Test-set confusion matrices summed over seeds, in the order of the comparison (best first). Colour: share "
        "of each true class (rows sum to 100 %); cell text: count and share."
    )
    if shared:
        text += " Fusions whose summed matrices are identical share one figure (its caption names them)."
    if folded:
        text += (
            f" {len(groups)} distinct matrices: the best fusion's, the best unimodal baseline's and the lowest-scoring"
            " row's are shown; the others are folded below."
        )
    return {
        "text": text,
        "notes": notes,
        "figures": figures,
        "folded": folded,
        "folded_summary": f"Show the other {len(folded)} confusion matrices" if folded else "",
    }


def _analysis_sections(run: _Run) -> list[dict[str, Any]]:
    """The sections ``analyze_run`` left in ``analysis/sections.json`` (empty when there is no analysis)."""
    path = run.run_dir / _ANALYSIS_DIR / "sections.json"
    if not path.is_file():
        return []
    problems: list[str] = []
    raw = _read_optional_json(path, problems)
    sections = raw.get("sections") if isinstance(raw, dict) else None
    if not isinstance(sections, list):
        run.notes.append(f"The analysis could not be shown: '{_rel(path)}' is unreadable or has no sections list.")
        return []
    good = [
        s for s in sections if isinstance(s, dict) and isinstance(s.get("id"), str) and isinstance(s.get("title"), str)
    ]
    for sec in good:
        sec["id"] = re.sub(r"[^A-Za-z0-9_-]", "-", sec["id"])
    extra = raw.get("notes") if isinstance(raw, dict) else None
    if isinstance(extra, list) and good:
        good[0] = {**good[0], "notes": [*good[0].get("notes", []), *[str(n) for n in extra]]}
    return good


def _analysis_context(run: _Run, sections: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The analysis sections for the template, their PNG figures read from ``analysis/`` and embedded."""
    folder = run.run_dir / _ANALYSIS_DIR
    out = []
    for sec in sections:
        notes = [str(n) for n in sec.get("notes", [])]
        figs = []
        for fig in sec.get("figures", []):
            if not isinstance(fig, dict) or not isinstance(fig.get("file"), str):
                continue
            path = folder / Path(fig["file"]).name  # only files inside analysis/
            if not path.is_file():
                notes.append(f"The figure '{_rel(path)}' is missing.")
                continue
            uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
            figs.append(_figure(uri, str(fig.get("alt", path.stem)), str(fig.get("caption", ""))))
        tables = []
        for table in sec.get("tables", []):
            header = [str(h) for h in table.get("header", [])]
            rows = [[_Cell(str(c)) for c in r] for r in table.get("rows", []) if len(r) == len(header)]
            numeric = list(table.get("numeric", [False] * len(header)))
            if len(numeric) != len(header):
                numeric = [False] * len(header)
            tables.append(_table(header, rows, numeric, str(table.get("caption") or "")))
        out.append(
            {
                "id": sec["id"],
                "title": sec["title"],
                "paragraphs": [p for p in sec.get("paragraphs", []) if isinstance(p, str)],
                "notes": notes,
                "figures": figs,
                "tables": tables,
            }
        )
    return out


def _alpha(run: _Run) -> float:
    """The significance level recorded in run.json (:data:`~mmfuse.metrics.significance.ALPHA` when not recorded)."""
    recorded = run.meta.get("significance")
    alpha = recorded.get("alpha") if isinstance(recorded, dict) else None
    return float(alpha) if isinstance(alpha, int | float) and 0 < alpha < 1 else ALPHA


def _report_html(run: _Run, title: str) -> str:
    dataset_name = str(_dataset(run.meta).get("name", "unnamed data set"))
    seeds = sorted(run.results["seed"].unique())
    subtitle = (
        f"{dataset_name} · {run.task} · {len(run.fusions)} fusion{'s' if len(run.fusions) != 1 else ''} × "
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} · {_when(run.meta)}"
    )
    confusion = _confusion_context(run)
    analysis = _analysis_context(run, _analysis_sections(run))
    nav = [("summary", "Summary"), ("data", "Data set and run"), ("comparison", "Comparison"),
           ("curves", "Training curves")]  # fmt: skip
    if confusion is not None:
        nav.append(("confusion", "Confusion matrices"))
    nav += [(sec["id"], sec["title"]) for sec in analysis]
    nav.append(("per-seed", "Per-seed results"))
    # The headline's callables escape each user-derived piece, so the joined sentences are safe markup.
    headline = [
        Markup(s)
        for s in _headline(
            run,
            name=lambda f: f"<code>{html_escape(f)}</code>",
            strong=lambda f: f"<strong>{html_escape(f)}</strong>",
            text=html_escape,
        )
    ]
    main_label = _metric_label(run.main_metric)
    comparison = {
        "figure": _figure(
            _comparison_figure(run),
            f"Test {main_label} per fusion",
            f"Fusions sorted best first by test {main_label}. Diamonds: mean over seeds (squares: unimodal "
            "baselines); thin bars: ± one standard deviation over seeds; dots: individual seeds"
            + (
                "; pale bands: 95 % confidence interval of the mean over seeds (bootstrap over test items)."
                if _has_significance(run)
                else "."
            ),
        ),
        "text": "Every test metric as mean ± standard deviation over seeds ('n=1': one seed, so no spread); the best "
        "value of each column is highlighted (fewest parameters and shortest training time count as best)."
        + (
            " The 'val' columns score each kept checkpoint on the validation split, which chose it (on the "
            "validation loss or the monitored metric, as the run's training settings say), so they are not "
            "highlighted: a good value there shows the selection at work, not a better model."
            if any(m.startswith("val_") for m in run.metrics)
            else ""
        )
        + (
            f" '95 % CI': the confidence interval of the mean test {main_label} over seeds, from a bootstrap over "
            "test items (the same items for every seed). "
            "'vs best unimodal': a two-sided paired permutation test of each row against the unimodal baseline "
            "with the best validation score (the 'reference'), on the same test items and seeds: better or worse "
            f"at p < {_alpha(run):g}, else not different."
            if _has_significance(run)
            else ""
        ),
        "table": _comparison_table(run),
    }
    curves = _curves_context(run)
    figure_count = 1 + len(curves["figures"]) + sum(len(sec["figures"]) for sec in analysis)
    if confusion is not None:
        figure_count += len(confusion["figures"]) + len(confusion["folded"])
    versions = run.meta.get("versions")
    version = versions.get("mmfuse") if isinstance(versions, dict) else None
    return _render(
        "report.html.j2",
        title=title,
        subtitle=subtitle,
        nav=nav,
        css=Markup(_template_text("report.css")),
        headline=headline,
        notes=run.notes,
        dataset=_dataset_context(run),
        **_run_context(run),
        comparison=comparison,
        curves=curves,
        confusion=confusion,
        analysis=analysis,
        per_seed={"file": _RESULTS_CSV, "table": _per_seed_table(run)},
        version=version,
        run_dir_name=run.run_dir.name,
        figure_count=figure_count,
    )


# --------------------------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------------------------


@functools.cache
def _environment() -> jinja2.Environment:
    """One jinja2 environment over ``templates/``: HTML autoescaped, Markdown escaped by the ``md`` filter."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mmfuse.evaluate", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_escape
    return env


def _render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context)


def _template_text(name: str) -> str:
    return resources.files("mmfuse.evaluate").joinpath("templates", name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------------


def _summary_markdown(run: _Run) -> str:
    main = run.main_metric
    sign = 1.0 if _higher_is_better(main) else -1.0
    best = run.stats[run.fusions[0]][main].mean
    metrics = [main] + [m for m in run.metrics if m != main and not m.startswith("val_")]
    header = ["Rank", "Fusion", "Seeds"] + [f"{_md(_metric_label(m))} (mean ± std)" for m in metrics]
    header += [f"Δ {_md(_metric_label(main))} vs best"]
    significance = _has_significance(run)
    if significance:
        header += [f"95 % CI ({_md(_metric_label(main))})", "vs best unimodal"]
    header += ["Parameters", "Train time [s]"]
    decimals = {
        m: _decimals([run.stats[f][m].mean for f in run.fusions], [run.stats[f][m].std for f in run.fusions])
        for m in metrics
    }
    rows = []
    for rank, fusion in enumerate(run.fusions, start=1):
        stats = run.stats[fusion]
        delta = stats[main].mean - best
        cells = [str(rank), _md(fusion), str(run.n_seeds[fusion])]
        cells += [_fmt_stat(stats[m], decimals[m]) for m in metrics]
        cells.append("–" if rank == 1 else f"{delta:+.{decimals[main]}f}" if math.isfinite(delta) else "–")
        if significance:
            cells += [_ci_text(run, fusion), _versus_cell(run, fusion)[0]]
        cells += [_fmt_int(run.params[fusion]), _fmt(run.train_seconds[fusion], 1)]
        rows.append(cells)
    analysis_md = run.run_dir / _ANALYSIS_DIR / "summary.md"
    # written by mmfuse.evaluate.analysis.analyze_run (already Markdown-escaped)
    analysis = analysis_md.read_text(encoding="utf-8").rstrip("\n") if analysis_md.is_file() else ""
    return _render(
        "summary.md.j2",
        dataset_name=str(_dataset(run.meta).get("name", "unnamed data set")),
        task=run.task,
        main_label=_metric_label(main),
        direction="higher" if sign > 0 else "lower",
        when=_when(run.meta),
        headline=_headline(run, name=_md, strong=lambda f: f"**{_md(f)}**", text=_md),
        header=header,
        align=["---:", ":---", "---:"] + [":---" if h == "vs best unimodal" else "---:" for h in header[3:]],
        rows=rows,
        notes=run.notes,
        analysis=analysis,
    )


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def write_report(
    run_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
) -> Path:
    """Write a self-contained HTML report of a ``mmfuse compare`` run.

    The page holds the data set and run description, the comparison of the fusions on the main test metric
    (accuracy for classification, MAE for regression) with a table of every metric as mean ± std over seeds,
    training curves per fusion, summed confusion matrices per fusion (classification) and the per-seed results.
    Figures are embedded as base64 PNG and the CSS is inline, so the file needs no network or other files.

    Args:
        run_dir: The directory written by ``mmfuse compare`` (holds ``run.json`` and ``results.csv``).
        out_path: Where to write the HTML file. Defaults to ``run_dir/report.html``. Parent folders are
            created; the file is replaced atomically.
        title: The page title. Defaults to "Fusion comparison: <data set name>".

    Returns:
        The path of the written report.

    Raises:
        DataError: If ``run_dir`` is not a directory, or ``run.json`` or ``results.csv`` is missing,
            unparsable or empty. Missing optional files (``summary.csv``, a model's ``history.json`` or
            ``test_metrics.json``) only add a note to the report.

    Example:
        >>> from mmfuse.evaluate.report import write_report
        >>> path = write_report("runs/basic-motions")  # doctest: +SKIP
        >>> path.name  # doctest: +SKIP
        'report.html'
    """
    run = _load_run(run_dir)
    target = Path(out_path) if out_path is not None else RunDir(run.run_dir).report_html
    if title is None:
        title = f"Fusion comparison: {_dataset(run.meta).get('name', run.run_dir.name)}"
    return atomic_write_text(target, _report_html(run, title), newline="\n")


def write_summary_markdown(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``summary.md``: the comparison of a ``mmfuse compare`` run in words and one table.

    The text names the best fusion on the main test metric, its margin over the runner-up, the weakest and the
    average of the others, and whether that margin exceeds the seed-to-seed spread. The table lists every fusion
    with each test metric as mean ± std, the difference to the best, parameters and training time.

    Args:
        run_dir: The directory written by ``mmfuse compare``.

    Returns:
        The path of ``run_dir/summary.md`` (replaced atomically).

    Raises:
        DataError: If ``run.json`` or ``results.csv`` is missing, unparsable or empty.

    Example:
        >>> from mmfuse.evaluate.report import write_summary_markdown
        >>> print(write_summary_markdown("runs/basic-motions").read_text())  # doctest: +SKIP
        # Fusion comparison on basic-motions
        ...
    """
    run = _load_run(run_dir)
    return atomic_write_text(RunDir(run.run_dir).summary_md, _summary_markdown(run), newline="\n")
