"""A self-contained HTML report and a Markdown summary of a fusion comparison run.

Both read the run directory that ``mmfuse compare`` writes (see ``docs/architecture.md``)::

    run.json  results.csv  summary.csv  models/<fusion>-seed<k>/{history.json, test_metrics.json}

``run.json`` and ``results.csv`` are required: without them there is nothing to report, so a missing, empty or
unparsable one raises :class:`~mmfuse.errors.DataError` naming the file. Everything else is optional: a missing
``summary.csv`` is recomputed from ``results.csv``, and a missing history or confusion matrix leaves a note in
the report where the figure would have been.

The HTML page embeds its figures as base64 PNG images and carries its own CSS, so it can be mailed, archived or
opened offline. Figures are drawn with matplotlib's Agg canvas directly, without ``pyplot``, so writing a report
never changes the user's matplotlib backend or open figures.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.transforms import blended_transform_factory

from mmfuse._io import atomic_write_text
from mmfuse.errors import DataError

__all__ = ["write_report", "write_summary_markdown"]

_RUN_JSON = "run.json"
_RESULTS_CSV = "results.csv"
_SUMMARY_CSV = "summary.csv"
_MODELS_DIR = "models"
_HISTORY_JSON = "history.json"
_TEST_METRICS_JSON = "test_metrics.json"
_ANALYSIS_DIR = "analysis"  # written by mmfuse.evaluate.analysis.analyze_run

_DPI = 100
# Columns of results.csv that describe a run rather than measure its quality.
_NON_METRIC_COLUMNS = ("fusion", "seed", "params", "train_seconds", "best_epoch")
# Preferred order of the metric columns in tables; unknown metrics follow in file order.
_KNOWN_METRICS = ("accuracy", "f1_weighted", "f1_macro", "mae", "rmse", "pearson")
_LOWER_IS_BETTER = frozenset({"mae", "rmse", "mse", "loss", "error", "nll", "mape", "brier", "ece"})
_MAIN_COLOR = "#2563eb"
_BEST_COLOR = "#16a34a"
_TRAIN_COLOR = "#2563eb"
_VAL_COLOR = "#ea580c"
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


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(
            f"The {what} '{path}' of the compare run does not exist. Pass the directory that "
            f"`mmfuse compare` wrote (it holds {_RUN_JSON} and {_RESULTS_CSV})."
        )


def _read_run_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / _RUN_JSON
    _require_file(path, "run description")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"The run description '{path}' is not valid JSON: {exc}.") from exc
    if not isinstance(meta, dict):
        raise DataError(f"The run description '{path}' must hold a JSON object. Got a {type(meta).__name__} instead.")
    return meta


def _read_results(run_dir: Path) -> pd.DataFrame:
    path = run_dir / _RESULTS_CSV
    _require_file(path, "results table")
    try:
        # Fusion names are user input: read them verbatim ("NA" or "1" must stay a name, not NaN or an int).
        results = pd.read_csv(path, converters={"fusion": str})
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"The results table '{path}' is empty: it has no header and no rows.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"The results table '{path}' could not be parsed as CSV: {exc}.") from exc
    missing = [c for c in ("fusion", "seed") if c not in results.columns]
    if missing:
        raise DataError(
            f"The results table '{path}' must have the columns 'fusion' and 'seed'. "
            f"Got the columns {list(results.columns)} instead."
        )
    if results.empty:
        raise DataError(f"The results table '{path}' has a header but no rows: the compare run recorded nothing.")
    results["fusion"] = results["fusion"].astype(str)
    seeds = pd.to_numeric(results["seed"], errors="coerce")
    if seeds.isna().any():
        raise DataError(
            f"The 'seed' column of the results table '{path}' must hold integers. Got {results['seed'].tolist()}."
        )
    results["seed"] = seeds.astype(int)
    if not _metric_columns(results):
        raise DataError(
            f"The results table '{path}' has no numeric metric column (such as accuracy or mae). "
            f"Got the columns {list(results.columns)}."
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


def _base_metric(metric: str) -> str:
    return metric.removeprefix("val_").removeprefix("test_")


def _higher_is_better(metric: str) -> bool:
    base = _base_metric(metric).lower()
    return not (base in _LOWER_IS_BETTER or base.endswith(("_loss", "_error")))


def _task_type(meta: Mapping[str, Any], metrics: Sequence[str]) -> str:
    task = _dataset(meta).get("task")
    declared = task.get("type") if isinstance(task, dict) else None
    if declared in ("classification", "regression"):
        return str(declared)
    if "accuracy" in metrics or any(m.startswith("f1") for m in metrics):
        return "classification"
    return "regression"


def _main_metric(task: str, metrics: Sequence[str]) -> str:
    preferred = ("accuracy", "f1_weighted", "f1_macro") if task == "classification" else ("mae", "rmse", "pearson")
    for name in preferred:
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
            stats[name][metric] = _Stat(mean, std)
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
    notes: list[str] = []
    stats, params, seconds, n_seeds = _read_summary(root, results, metrics, notes)
    sign = 1.0 if _higher_is_better(main) else -1.0

    def rank_key(name: str) -> tuple[bool, float]:
        mean = stats[name][main].mean
        return (math.isnan(mean), -sign * mean if not math.isnan(mean) else 0.0)

    fusions = sorted(stats, key=rank_key)
    return _Run(root, meta, results, task, metrics, main, fusions, stats, params, seconds, n_seeds, notes)


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
    return run.run_dir / _MODELS_DIR / f"{fusion}-seed{seed}"


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
    return "–" if not math.isfinite(value) else f"{value:.{decimals}f}"


def _fmt_stat(stat: _Stat, decimals: int) -> str:
    if not math.isfinite(stat.std):
        return _fmt(stat.mean, decimals)
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


def _mpl(text: str, limit: int = 40) -> str:
    """User text made safe for matplotlib: ``$`` would start mathtext; very long names are shortened."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _md(text: str) -> str:
    """Escape the Markdown punctuation that acts inside a line or a table cell (CommonMark backslash escapes)."""
    return "".join("\\" + ch if ch in "\\`*_[]<>|~&" else ch for ch in text)


# --------------------------------------------------------------------------------------------------------------
# The comparison in words (shared by the HTML headline and summary.md)
# --------------------------------------------------------------------------------------------------------------


def _headline(
    run: _Run, name: Callable[[str], str], strong: Callable[[str], str], text: Callable[[str], str]
) -> list[str]:
    """Sentences that state the winner and its margin.

    ``name`` and ``strong`` format (and escape) a fusion name for the target format, ``text`` escapes other
    user-derived text (the metric name comes from a column of results.csv).
    """
    main = run.main_metric
    label = text(_metric_label(main))
    ranked = [f for f in run.fusions if math.isfinite(run.stats[f][main].mean)]
    if not ranked:
        return [f"No fusion has a finite test {label}; there is no ranking."]
    dec = _decimals([run.stats[f][main].mean for f in ranked], [run.stats[f][main].std for f in ranked])
    best = ranked[0]
    b = run.stats[best][main]
    seeds = run.n_seeds[best]
    out = [
        f"Best fusion: {strong(best)} with test {label} {_fmt_stat(b, dec)} "
        f"(mean ± std over {seeds} seed{'s' if seeds != 1 else ''})."
    ]
    if len(ranked) == 1:
        out.append("It is the only fusion with a result, so there is nothing to compare it with.")
        return out
    sign = 1.0 if _higher_is_better(main) else -1.0

    def margin(other: str) -> str:
        o = run.stats[other][main]
        gap = sign * (b.mean - o.mean)
        relative = f" ({100 * gap / abs(o.mean):.1f} % relative)" if o.mean != 0 else ""
        return f"{_fmt(gap, dec)}{relative}"

    runner, worst = ranked[1], ranked[-1]
    r = run.stats[runner][main]
    sentence = f"It beats the runner-up {name(runner)} ({_fmt_stat(r, dec)}) by {margin(runner)}"
    if worst != runner:
        sentence += f" and the weakest, {name(worst)} ({_fmt_stat(run.stats[worst][main], dec)}), by {margin(worst)}"
    out.append(sentence + ".")
    others = [run.stats[f][main].mean for f in ranked[1:]]
    mean_gap = sign * (b.mean - float(np.mean(others)))
    out.append(
        f"Averaged over the other {len(others)} fusion{'s' if len(others) != 1 else ''}, "
        f"it is better by {_fmt(mean_gap, dec)} {label}."
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


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------


def _png_data_uri(fig: Figure) -> str:
    FigureCanvasAgg(fig)  # attaches an Agg canvas to this figure only; pyplot and the global backend stay untouched
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white", metadata={"Software": None})
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _text_width_px(texts: Iterable[str], size: float, *, family: str = "sans-serif", weight: str = "normal") -> float:
    """The widest rendered width of ``texts`` in pixels at the report DPI.

    Figures are laid out from these measurements instead of matplotlib's constrained layout, which draws every
    figure twice and doubled the time of a report.
    """
    renderer = RendererAgg(1, 1, _DPI)
    prop = FontProperties(size=size, family=family, weight=weight)
    widths = [renderer.get_text_width_height_descent(t.replace(r"\$", "$"), prop, ismath=False)[0] for t in texts]
    return max(widths, default=0.0)


def _style_axes(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=9)
    ax.grid(True, axis="both", color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)


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
    for y, (fusion, stat) in enumerate(zip(fusions, stats, strict=True)):
        if y % 2 == 0:
            ax.axhspan(y - 0.5, y + 0.5, color="#f3f4f6", zorder=0, linewidth=0)
        color = _BEST_COLOR if y == 0 else _MAIN_COLOR
        values = run.results.loc[run.results["fusion"] == fusion, main].dropna().to_numpy(dtype=float)
        # Spread the seed dots vertically (deterministically) so equal values stay visible.
        offsets = np.linspace(-0.2, 0.2, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.scatter(values, y + offsets, s=16, color="#374151", alpha=0.55, zorder=3, linewidths=0)
        if math.isfinite(stat.mean):
            xerr = stat.std if math.isfinite(stat.std) else None
            ax.errorbar(stat.mean, y, xerr=xerr, fmt="D", color=color, ms=7, capsize=4, elinewidth=2, zorder=4)
        ax.text(
            1.0, y, "  " + values_text[y], transform=label_transform, va="center", ha="left", fontsize=9,
            fontweight="bold" if y == 0 else "normal", family="monospace", color=color,
        )  # fmt: skip
    ax.set_yticks(range(n), names)
    ax.set_ylim(n - 0.5, -0.5)  # best at the top
    ax.tick_params(axis="y", length=0)
    _style_axes(ax)
    ax.grid(False, axis="y")
    ax.set_xlabel(_axis_label(main, "Test"), fontsize=10)
    seeds = sorted({run.n_seeds[f] for f in fusions})
    seed_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    fig.text(
        10 / width, 1 - 10 / height,
        f"Test {_metric_label(main)} per fusion, best first: mean ± std over {seed_text} seeds (dots: single seeds)",
        fontsize=11, va="top", ha="left",
    )  # fmt: skip
    return _png_data_uri(fig)


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
        ax.plot(frame["epoch"], frame[metric], color=_MAIN_COLOR, alpha=0.35, linewidth=1,
                label=("single seeds" if n > 1 else "validation") if i == 0 else None)  # fmt: skip
        b = best[seed]
        value = frame.loc[frame["epoch"] == b, metric].dropna() if b is not None else pd.Series(dtype=float)
        if len(value):
            ax.plot([b] * len(value), value, linestyle="none", marker="*", ms=11, color=_BEST_COLOR,
                    markeredgecolor="black", markeredgewidth=0.5, zorder=5,
                    label=None if star_labelled else "best epoch")  # fmt: skip
            star_labelled = True
    if n > 1:
        stacked = pd.concat([f[["epoch", metric]] for f in histories.values() if metric in f], ignore_index=True)
        grouped = stacked.groupby("epoch")[metric].agg(["mean", "count"])
        # Stop the mean where fewer than half of the seeds are still training (early stopping ends them).
        grouped = grouped[grouped["count"] >= max(2, math.ceil(n / 2))]
        if len(grouped):
            ax.plot(grouped.index, grouped["mean"], color=_MAIN_COLOR, linewidth=2.2, label="mean over seeds")
    unit = _metric_unit(metric)
    ax.set_ylabel(_mpl(_capitalised(_metric_label(_base_metric(metric))), 30), fontsize=10)
    ax.set_title(_mpl(f"Validation {_metric_label(_base_metric(metric))}", 45) + (f" [{unit}]" if unit else ""),
                 fontsize=10, loc="left")  # fmt: skip


def _plot_loss_panel(ax: Any, histories: Mapping[int, pd.DataFrame], best: Mapping[int, float | None]) -> None:
    n = len(histories)
    for column, color, label in (("train_loss", _TRAIN_COLOR, "train"), ("val_loss", _VAL_COLOR, "validation")):
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
            ax.fill_between(mean.index, mean - spread, mean + spread, color=color, alpha=0.15, linewidth=0)
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


def _curves_figure(run: _Run, fusion: str, histories: Mapping[int, pd.DataFrame]) -> str | None:
    frames = list(histories.values())
    metric = _curve_metric(run, frames)
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
# HTML
# --------------------------------------------------------------------------------------------------------------

_CSS = """
:root { --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --soft:#f9fafb; --accent:#1d4ed8; --best:#dcfce7; }
* { box-sizing:border-box; }
body { margin:0; color:var(--fg); background:#fff; line-height:1.5;
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1120px; margin:0 auto; padding:24px 28px 48px; }
h1 { font-size:1.7rem; margin:0 0 4px; }
h2 { font-size:1.25rem; margin:36px 0 12px; padding-bottom:6px; border-bottom:2px solid var(--line); }
h3 { font-size:1.02rem; margin:18px 0 8px; }
.sub { color:var(--muted); margin:0 0 16px; }
nav { display:flex; flex-wrap:wrap; gap:6px 16px; font-size:.9rem; margin:8px 0 20px; }
nav a { color:var(--accent); text-decoration:none; } nav a:hover { text-decoration:underline; }
.headline { background:#eff6ff; border-left:4px solid var(--accent); padding:12px 16px; border-radius:6px; }
.headline p { margin:4px 0; }
.note { background:#fffbeb; border-left:4px solid #f59e0b; padding:8px 14px; border-radius:6px; font-size:.9rem; }
.note ul { margin:4px 0; padding-left:18px; }
table { border-collapse:collapse; font-size:.88rem; margin:8px 0 12px; }
th, td { padding:5px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { background:var(--soft); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.best { background:var(--best); font-weight:700; }
tbody tr:hover { background:var(--soft); }
.kv th { width:13rem; }
.scroll { overflow-x:auto; }
.cols { display:grid; grid-template-columns:repeat(auto-fit,minmax(320px,1fr)); gap:8px 28px; }
.grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(460px,1fr)); gap:16px; }
figure { margin:8px 0; } figure img { max-width:100%; height:auto; display:block; }
figcaption { color:var(--muted); font-size:.85rem; }
code, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:.85rem; }
pre { background:var(--soft); border:1px solid var(--line); padding:10px; border-radius:6px; overflow-x:auto;
  white-space:pre-wrap; word-break:break-all; }
details { margin:10px 0; } summary { cursor:pointer; font-weight:600; color:var(--accent); }
footer { margin-top:40px; color:var(--muted); font-size:.8rem; }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], numeric: Sequence[bool]) -> str:
    """An HTML table; every cell is ``(escaped_html, extra_class)``."""
    head = "".join(
        f'<th class="num">{h}</th>' if num else f"<th>{h}</th>" for h, num in zip(header, numeric, strict=True)
    )
    body = []
    for row in rows:
        cells = []
        for (content, extra), num in zip(row, numeric, strict=True):
            classes = " ".join(c for c in ("num" if num else "", extra) if c)
            cells.append(f'<td class="{classes}">{content}</td>' if classes else f"<td>{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _kv_table(items: Iterable[tuple[str, object]], *, code: Container[str] | None = None) -> str:
    """A two-column key/value table; values of the keys in ``code`` (every key when None) are set as code."""
    rows = []
    for key, value in items:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        cell = f"<code>{_esc(text)}</code>" if code is None or key in code else _esc(text)
        rows.append(f"<tr><th>{_esc(key)}</th><td>{cell}</td></tr>")
    return f'<table class="kv"><tbody>{"".join(rows)}</tbody></table>' if rows else "<p>Not recorded.</p>"


def _notes_html(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{_esc(n)}</li>" for n in notes)
    return f'<div class="note"><strong>Notes</strong><ul>{items}</ul></div>'


def _figure_html(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{_esc(alt)}">{cap}</figure>'


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


def _header_html(run: _Run) -> str:
    dataset = _dataset(run.meta)
    parts = ['<h2 id="data">Data set and run</h2><div class="cols"><div>']
    parts.append(f"<h3>{_esc(dataset.get('name', 'unnamed data set'))}</h3>")
    if dataset.get("description"):
        parts.append(f"<p>{_esc(dataset['description'])}</p>")
    raw_task = dataset.get("task")
    task: dict[str, Any] = raw_task if isinstance(raw_task, dict) else {}
    task_items: list[tuple[str, object]] = [("type", run.task)]
    if task.get("level"):
        task_items.append(("label level", str(task["level"])))
    if isinstance(task.get("class_names"), list) and task["class_names"]:
        task_items.append(("classes", ", ".join(str(c) for c in task["class_names"])))
    parts.append("<h3>Task</h3>" + _kv_table(task_items, code=()))
    sizes = dataset.get("sizes")
    if isinstance(sizes, dict) and sizes:
        rows = [
            [(_esc(k), ""), (_fmt_int(float(v)) if isinstance(v, int | float) else _esc(v), "")]
            for k, v in sizes.items()
        ]
        parts.append("<h3>Split sizes (samples)</h3>" + _table(["split", "samples"], rows, [False, True]))
    modalities = dataset.get("modalities")
    if isinstance(modalities, dict) and modalities:
        specs = {str(k): (v if isinstance(v, dict) else {}) for k, v in sorted(modalities.items())}
        described = any(spec.get("description") for spec in specs.values())
        header = ["modality", "dim", "kind"] + (["description"] if described else [])
        rows = []
        for name, spec in specs.items():
            row = [
                (f"<code>{_esc(name)}</code>", ""),
                (_esc(spec.get("dim", "–")), ""),
                (_esc(spec.get("kind", "–")), ""),
            ]
            if described:
                row.append((_esc(spec.get("description", "")), ""))
            rows.append(row)
        parts.append("<h3>Modalities</h3>" + _table(header, rows, [False, True, False, False][: len(header)]))
    parts.append("</div><div>")
    parts.append("<h3>Run</h3>")
    run_items: list[tuple[str, object]] = [("date", _when(run.meta))]
    if run.meta.get("command"):
        run_items.append(("command", str(run.meta["command"])))
    listed = run.meta.get("fusions")
    fusions = [str(f) for f in listed] if isinstance(listed, list) and listed else run.fusions
    run_items.append(("fusions", ", ".join(fusions)))
    run_items.append(("seeds", ", ".join(str(s) for s in sorted(run.results["seed"].unique()))))
    parts.append(_kv_table(run_items, code={"command"}))
    versions = run.meta.get("versions")
    if isinstance(versions, dict) and versions:
        parts.append("<h3>Versions</h3>" + _kv_table(versions.items(), code=()))
    for key, title in (("train_config", "Training configuration"), ("model_config", "Model configuration")):
        config = run.meta.get(key)
        if isinstance(config, dict) and config:
            parts.append(f"<details><summary>{title}</summary>{_kv_table(sorted(config.items()))}</details>")
    parts.append("</div></div>")
    return "".join(parts)


def _comparison_table(run: _Run) -> str:
    header = ["Fusion", "Seeds"] + [_esc(_metric_label(m)) for m in run.metrics] + ["Parameters", "Train time [s]"]
    numeric = [False, True] + [True] * len(run.metrics) + [True, True]
    columns: list[list[tuple[str, str]]] = [
        [(f"<strong>{_esc(f)}</strong>" if i == 0 else _esc(f), "") for i, f in enumerate(run.fusions)],
        [(str(run.n_seeds[f]), "") for f in run.fusions],
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
        flags = best_flags([s.mean for s in stats], _higher_is_better(metric))
        columns.append([(_esc(_fmt_stat(s, dec)), flag) for s, flag in zip(stats, flags, strict=True)])
    params = [run.params[f] for f in run.fusions]
    columns.append([(_fmt_int(p), flag) for p, flag in zip(params, best_flags(params, False), strict=True)])
    seconds = [run.train_seconds[f] for f in run.fusions]
    columns.append([(_fmt(s, 1), flag) for s, flag in zip(seconds, best_flags(seconds, False), strict=True)])
    rows = [list(row) for row in zip(*columns, strict=True)]
    return _table(header, rows, numeric)


def _per_seed_table(run: _Run) -> str:
    results = run.results.sort_values(
        ["fusion", "seed"], key=lambda s: s.map(run.fusions.index) if s.name == "fusion" else s
    )
    header = [_esc(c) for c in results.columns]
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
            row.append((_esc(text), ""))
        rows.append(row)
    return _table(header, rows, numeric)


def _report_html(run: _Run, title: str) -> str:
    figures = 1
    sections: list[str] = []
    dataset_name = str(_dataset(run.meta).get("name", "unnamed data set"))
    seeds = sorted(run.results["seed"].unique())
    sub = (
        f"{dataset_name} · {run.task} · {len(run.fusions)} fusion{'s' if len(run.fusions) != 1 else ''} × "
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} · {_when(run.meta)}"
    )
    nav_items = [("summary", "Summary"), ("data", "Data set and run"), ("comparison", "Comparison"),
                 ("curves", "Training curves")]  # fmt: skip
    if run.task == "classification":
        nav_items.append(("confusion", "Confusion matrices"))
    analysis = _analysis_sections(run)
    nav_items += [(sec["id"], sec["title"]) for sec in analysis]
    nav_items.append(("per-seed", "Per-seed results"))
    nav = "".join(f'<a href="#{anchor}">{text}</a>' for anchor, text in nav_items)
    sections.append(f'<header><h1>{_esc(title)}</h1><p class="sub">{_esc(sub)}</p><nav>{nav}</nav></header>')

    headline = _headline(
        run, name=lambda f: f"<code>{_esc(f)}</code>", strong=lambda f: f"<strong>{_esc(f)}</strong>", text=_esc
    )
    sections.append(
        '<h2 id="summary">Summary</h2><div class="headline">' + "".join(f"<p>{s}</p>" for s in headline) + "</div>"
    )
    sections.append(_notes_html(run.notes))
    sections.append(_header_html(run))

    main_label = _metric_label(run.main_metric)
    sections.append('<h2 id="comparison">Comparison</h2>')
    sections.append(
        _figure_html(
            _comparison_figure(run),
            f"Test {main_label} per fusion",
            f"Fusions sorted best first by test {main_label}. Diamonds: mean over seeds; bars: ± one standard "
            "deviation; dots: individual seeds.",
        )
    )
    sections.append(
        "<p>Every test metric as mean ± standard deviation over seeds; the best value of each column is "
        "highlighted (fewest parameters and shortest training time count as best).</p>"
    )
    sections.append(_comparison_table(run))

    curve_notes: list[str] = []
    curve_figures: list[str] = []
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
            curve_notes.append(_missing_note("training curves", fusion, problems, nothing_left=not histories))
        if not histories:
            continue
        uri = _curves_figure(run, fusion, histories)
        if uri is None:
            curve_notes.append(
                f"No training curves for {fusion}: its histories record neither a validation metric nor a loss."
            )
            continue
        figures += 1
        curve_figures.append(_figure_html(uri, f"Training curves of {fusion}"))
    sections.append('<h2 id="curves">Training curves</h2>')
    sections.append(
        "<p>Validation metric per epoch (thin lines: seeds, thick line: their mean, stars: the epoch whose "
        "checkpoint was kept) and the training and validation loss (mean ± std over seeds).</p>"
    )
    sections.append(_notes_html(curve_notes))
    sections.append('<div class="grid">' + "".join(curve_figures) + "</div>")

    if run.task == "classification":
        confusion_notes: list[str] = []
        confusion_figures: list[str] = []
        too_many_classes = False
        for fusion in run.fusions:
            problems = []
            summed = _summed_confusion(run, fusion, problems)
            if problems or summed is None:
                problems = problems or ["no seed has a test_metrics.json"]
                confusion_notes.append(_missing_note("confusion matrix", fusion, problems, nothing_left=summed is None))
            if summed is None:
                continue
            counts, names, used = summed
            too_many_classes |= counts.shape[0] > _MAX_ANNOTATED_CLASSES
            confusion_figures.append(
                _figure_html(
                    _confusion_figure(fusion, counts, names, used),
                    f"Confusion matrix of {fusion} ({int(counts.sum())} test predictions over "
                    f"{used} seed{'s' if used != 1 else ''})",
                )
            )
            figures += 1
        sections.append('<h2 id="confusion">Confusion matrices</h2>')
        sections.append(
            "<p>Test-set confusion matrices summed over seeds. Colour: share of each true class (rows sum to "
            "100 %); cell text: count and share.</p>"
        )
        if too_many_classes:
            confusion_notes.append(
                f"Matrices with more than {_MAX_ANNOTATED_CLASSES} classes show colours only: the counts would not fit."
            )
        sections.append(_notes_html(confusion_notes))
        sections.append('<div class="grid">' + "".join(confusion_figures) + "</div>")

    analysis_html, analysis_figures = _analysis_html(run, analysis)
    sections.append(analysis_html)
    figures += analysis_figures

    sections.append('<h2 id="per-seed">Per-seed results</h2>')
    sections.append(
        f"<details><summary>Show all {len(run.results)} rows of {_RESULTS_CSV}</summary>"
        f"{_per_seed_table(run)}</details>"
    )
    version = run.meta.get("versions", {}).get("mmfuse") if isinstance(run.meta.get("versions"), dict) else None
    sections.append(
        f"<footer>Written by mmfuse{' ' + _esc(version) if version else ''} from the run directory "
        f"<code>{_esc(run.run_dir.name)}</code>; {figures} embedded figure{'s' if figures != 1 else ''}.</footer>"
    )
    body = "\n".join(s for s in sections if s)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


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


def _analysis_html(run: _Run, sections: Sequence[Mapping[str, Any]]) -> tuple[str, int]:
    """The analysis sections as HTML, their PNG figures read from ``analysis/`` and embedded; and the figure count."""
    parts: list[str] = []
    count = 0
    folder = run.run_dir / _ANALYSIS_DIR
    for sec in sections:
        parts.append(f'<h2 id="{_esc(sec["id"])}">{_esc(sec["title"])}</h2>')
        parts += [f"<p>{_esc(p)}</p>" for p in sec.get("paragraphs", []) if isinstance(p, str)]
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
            figs.append(_figure_html(uri, str(fig.get("alt", path.stem)), str(fig.get("caption", ""))))
            count += 1
        parts.append(_notes_html(notes))
        if figs:
            parts.append("".join(figs) if len(figs) < 3 else '<div class="grid">' + "".join(figs) + "</div>")
        for table in sec.get("tables", []):
            header = [_esc(h) for h in table.get("header", [])]
            rows = [[(_esc(c), "") for c in r] for r in table.get("rows", []) if len(r) == len(header)]
            numeric = list(table.get("numeric", [False] * len(header)))
            if len(numeric) != len(header):
                numeric = [False] * len(header)
            if table.get("caption"):
                parts.append(f"<p>{_esc(table['caption'])}</p>")
            parts.append(_table(header, rows, numeric))
    return "\n".join(p for p in parts if p), count


# --------------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------------


def _summary_markdown(run: _Run) -> str:
    main = run.main_metric
    sign = 1.0 if _higher_is_better(main) else -1.0
    dataset_name = str(_dataset(run.meta).get("name", "unnamed data set"))
    lines = [f"# Fusion comparison on {_md(dataset_name)}", ""]
    lines.append(
        f"Task: {run.task}. Main metric: test {_md(_metric_label(main))} "
        f"({'higher' if sign > 0 else 'lower'} is better). Run: {_md(_when(run.meta))}."
    )
    lines.append("")
    lines.extend(_headline(run, name=_md, strong=lambda f: f"**{_md(f)}**", text=_md))
    lines.append("")
    best = run.stats[run.fusions[0]][main].mean
    metrics = [main] + [m for m in run.metrics if m != main and not m.startswith("val_")]
    header = ["Rank", "Fusion", "Seeds"] + [f"{_md(_metric_label(m))} (mean ± std)" for m in metrics]
    header += [f"Δ {_md(_metric_label(main))} vs best", "Parameters", "Train time [s]"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---:", ":---", "---:"] + ["---:"] * (len(header) - 3)) + "|")
    decimals = {
        m: _decimals([run.stats[f][m].mean for f in run.fusions], [run.stats[f][m].std for f in run.fusions])
        for m in metrics
    }
    for rank, fusion in enumerate(run.fusions, start=1):
        stats = run.stats[fusion]
        delta = stats[main].mean - best
        cells = [str(rank), _md(fusion), str(run.n_seeds[fusion])]
        cells += [_fmt_stat(stats[m], decimals[m]) for m in metrics]
        cells.append("–" if rank == 1 else f"{delta:+.{decimals[main]}f}" if math.isfinite(delta) else "–")
        cells += [_fmt_int(run.params[fusion]), _fmt(run.train_seconds[fusion], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    if run.notes:
        lines += ["", "Notes:", ""] + [f"- {_md(n)}" for n in run.notes]
    analysis_md = run.run_dir / _ANALYSIS_DIR / "summary.md"
    if analysis_md.is_file():  # written by mmfuse.evaluate.analysis.analyze_run (already Markdown-escaped)
        lines += ["", analysis_md.read_text(encoding="utf-8").rstrip("\n")]
    return "\n".join(lines) + "\n"


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
    target = Path(out_path) if out_path is not None else run.run_dir / "report.html"
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
    return atomic_write_text(run.run_dir / "summary.md", _summary_markdown(run), newline="\n")
