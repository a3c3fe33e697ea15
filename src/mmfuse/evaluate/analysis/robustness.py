"""Robustness: metric-vs-imperfection curves and MultiBench's relative and effective robustness.

Perturbations (applied to normalised inputs, only at present steps; masked steps stay missing):

* Gaussian noise at level ``s``: ``x + s * std_d * N(0, 1)`` with ``std_d`` the per-feature standard deviation of
  the evaluated split, so ``s`` is relative to each feature's own spread;
* missing rate ``r``: every present step of the modality is marked missing with probability ``r``.

Each applies to one modality at a time or to all at once. Following MultiBench (Liang et al., 2021):

* relative robustness = the area under the metric-vs-level curve divided by the level range (the mean metric
  over the range); higher is better for accuracy-like metrics;
* effective robustness = the same area of the drop from the clean metric, minus that of a reference model
  (late fusion when the run has one), so the two are compared after equalising their clean performance.
  Positive means the model loses less than the reference as the imperfection grows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from mmfuse.evaluate.analysis.base import Analysis, Section, Summary, fmt, mean_finite, register_analysis
from mmfuse.evaluate.analysis.context import AnalysisContext, LoadedModel
from mmfuse.evaluate.figures import colour, mpl_text, style_axes
from mmfuse.metrics import get_metric
from mmfuse.types import Batch

__all__ = [
    "RobustnessAnalysis",
    "RobustnessConfig",
    "add_noise",
    "drop_steps",
    "effective_robustness",
    "feature_std",
    "relative_robustness",
    "robustness_grid",
]


def _curve(levels: Any, values: Any, owner: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(levels, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(
            f"The 'levels' and 'values' parameters of {owner} must be 1-D of equal length >= 2. "
            f"Got {list(x.shape)} and {list(y.shape)}."
        )
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"The 'levels' parameter of {owner} must be strictly increasing. Got {x.tolist()}.")
    return x, y


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0 / (x[-1] - x[0]))


def relative_robustness(levels: Any, values: Any) -> float:
    """Normalised area under the metric-vs-level curve (trapezoids; the mean metric over the level range).

    Example:
        >>> relative_robustness([0.0, 0.5, 1.0], [1.0, 0.8, 0.6])
        0.8
    """
    x, y = _curve(levels, values, "relative_robustness")
    return _area(x, y)


def effective_robustness(levels: Any, values: Any, reference: Any, *, higher_is_better: bool = True) -> float:
    """Area of the metric's change from its clean value, minus the reference's (positive: degrades less).

    Args:
        levels: ``[L]`` increasing imperfection levels, the first being the clean condition.
        values: ``[L]`` the model's metric at each level.
        reference: ``[L]`` the reference model's metric at the same levels.
        higher_is_better: Whether larger metric values are better (accuracy: True, MAE: False).

    Example:
        >>> effective_robustness([0, 1], [0.9, 0.8], [0.7, 0.4])   # drops 0.1 where the reference drops 0.3
        0.1
    """
    x, y = _curve(levels, values, "effective_robustness")
    _, r = _curve(levels, reference, "effective_robustness")
    gap = _area(x, y - y[0]) - _area(x, r - r[0])
    return round(gap if higher_is_better else -gap, 12)


def feature_std(batch: Batch, modality: str) -> Tensor:
    """Per-feature standard deviation ``[D_m]`` of ``modality`` over its present real steps (1 where undefined).

    Example:
        >>> x = torch.tensor([[[0.0], [2.0]]])
        >>> b = Batch({"a": x}, {"a": torch.ones(1, 2, dtype=torch.bool)}, torch.ones(1, 2, dtype=torch.bool))
        >>> feature_std(b, "a").tolist()
        [1.0]
    """
    present = batch.masks[modality] & batch.padding_mask  # [B, T]
    rows = batch.inputs[modality][present]  # [S, D_m]
    if rows.shape[0] < 2:
        return torch.ones(batch.inputs[modality].shape[-1])
    std = rows.std(dim=0, unbiased=False)
    return torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))


def add_noise(batch: Batch, modalities: list[str], level: float, std: dict[str, Tensor], generator: Any) -> Batch:
    """Add Gaussian noise ``level * std * N(0, 1)`` to the present steps of ``modalities``.

    Example:
        >>> x = torch.zeros(1, 3, 2)
        >>> b = Batch({"a": x}, {"a": torch.tensor([[True, False, True]])}, torch.ones(1, 3, dtype=torch.bool))
        >>> out = add_noise(b, ["a"], 1.0, {"a": torch.ones(2)}, torch.Generator().manual_seed(0))
        >>> bool(out.inputs["a"][0, 1].eq(0).all()), bool(out.inputs["a"][0, 0].ne(0).any())
        (True, True)
    """
    if level < 0 or not math.isfinite(level):
        raise ValueError(f"The noise 'level' must be a finite number >= 0. Got {level!r}.")
    inputs = dict(batch.inputs)
    for m in modalities:
        x = inputs[m]  # [B, T, D_m]
        noise = torch.randn(x.shape, generator=generator) * std[m] * level  # [B, T, D_m]
        present = (batch.masks[m] & batch.padding_mask).unsqueeze(-1)  # [B, T, 1]
        inputs[m] = torch.where(present, x + noise, x)
    return Batch(inputs, dict(batch.masks), batch.padding_mask, batch.targets, batch.ids, batch.groups, batch.context)


def drop_steps(batch: Batch, modalities: list[str], rate: float, generator: Any) -> Batch:
    """Mark each present step of ``modalities`` missing with probability ``rate`` (values zeroed there).

    Example:
        >>> b = Batch({"a": torch.ones(2, 50, 1)}, {"a": torch.ones(2, 50, dtype=torch.bool)},
        ...           torch.ones(2, 50, dtype=torch.bool))
        >>> out = drop_steps(b, ["a"], 0.5, torch.Generator().manual_seed(0))
        >>> 30 < int(out.masks["a"].sum()) < 70, bool((out.inputs["a"][~out.masks["a"]] == 0).all())
        (True, True)
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"The missing 'rate' must be in [0, 1]. Got {rate!r}.")
    inputs = dict(batch.inputs)
    masks = dict(batch.masks)
    for m in modalities:
        keep = torch.rand(masks[m].shape, generator=generator) >= rate  # [B, T]
        masks[m] = masks[m] & keep
        inputs[m] = torch.where(masks[m].unsqueeze(-1), inputs[m], torch.zeros_like(inputs[m]))
    return Batch(inputs, masks, batch.padding_mask, batch.targets, batch.ids, batch.groups, batch.context)


@dataclass
class RobustnessConfig:
    """Settings of the robustness analysis.

    Attributes:
        noise_levels: Gaussian noise levels relative to each feature's standard deviation; start with 0.
        missing_rates: Probabilities of marking a present step missing; start with 0.
    """

    noise_levels: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    missing_rates: tuple[float, ...] = (0.0, 0.3, 0.6, 0.9)

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in ("noise_levels", "missing_rates"):
            levels = tuple(float(v) for v in getattr(self, name))
            if len(levels) < 2 or levels[0] != 0.0 or any(b <= a for a, b in itertools.pairwise(levels)):
                raise ValueError(
                    f"The {name!r} parameter of {owner} must be increasing, start at 0 and have at least two "
                    f"values. Got {list(levels)}."
                )
            setattr(self, name, levels)
        if any(r > 1.0 for r in self.missing_rates):
            raise ValueError(f"The 'missing_rates' of {owner} must be <= 1. Got {list(self.missing_rates)}.")


Curve = dict[str, Any]  # {"kind", "target", "level", "metric"}
_KINDS = (
    ("noise", "noise level (× feature std)", "Gaussian noise"),
    ("missing", "missing rate", "missing steps"),
)


@register_analysis("robustness")
class RobustnessAnalysis(Analysis[RobustnessConfig, list[Curve]]):
    """Metric-vs-imperfection curves per modality and for all at once; relative and effective robustness."""

    title = "Robustness"
    order = 20
    config_type = RobustnessConfig

    def _levels(self, kind: str) -> tuple[float, ...]:
        return self.config.noise_levels if kind == "noise" else self.config.missing_rates

    def run(self, ctx: AnalysisContext, model: LoadedModel) -> list[Curve]:
        """One row per kind, perturbed target and level (level 0: the clean score)."""
        test = ctx.test(model)
        targets = [*test.modalities, "all"]
        specs = [(kind, tgt, lv) for kind, *_ in _KINDS for tgt in targets for lv in self._levels(kind)[1:]]

        def make(b: Batch, g: torch.Generator) -> list[Batch]:
            res = []
            for kind, tgt, lv in specs:
                mods = list(test.modalities) if tgt == "all" else [tgt]
                res.append(add_noise(b, mods, lv, test.std, g) if kind == "noise" else drop_steps(b, mods, lv, g))
            return res

        outs = ctx.outputs(model, make)
        curves = [
            {"kind": kind, "target": tgt, "level": lv, "metric": ctx.score(o, test.targets)}
            for (kind, tgt, lv), o in zip(specs, outs, strict=True)
        ]
        main = ctx.score(ctx.clean(model), test.targets)
        return curves + [
            {"kind": kind, "target": tgt, "level": 0.0, "metric": main} for kind, *_ in _KINDS for tgt in targets
        ]

    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, list[Curve]]]) -> Summary:
        """The curves, the robustness scores per run, one figure per kind (y axes shared) and the final columns."""
        rows = [{"fusion": m.name, "seed": m.seed, **c} for m, curves in results for c in curves]
        mean_curves = pd.DataFrame(rows).groupby(["fusion", "kind", "target", "level"], sort=False)["metric"].mean()
        targets = [*ctx.reference.modalities, "all"]
        reference, ref_why = _reference(ctx)
        summary_rows: list[dict[str, Any]] = []
        plotted: dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
        for kind, *_ in _KINDS:
            levels = self._levels(kind)
            plotted[kind] = {
                n: {
                    t: (np.array(levels), np.array([mean_curves.get((n, kind, t, lv), math.nan) for lv in levels]))
                    for t in targets
                }
                for n in ctx.names
            }
            ref = plotted[kind].get(reference) if reference is not None else None
            for m, curves in results:
                for tgt in targets:
                    ys = np.array([_at(curves, kind, tgt, lv) for lv in levels])
                    er = math.nan
                    if ref is not None:
                        er = effective_robustness(levels, ys, ref[tgt][1], higher_is_better=ctx.higher_is_better)
                    summary_rows.append(
                        {
                            "fusion": m.name,
                            "seed": m.seed,
                            "kind": kind,
                            "target": tgt,
                            "relative_robustness": relative_robustness(levels, ys),
                            "effective_robustness": er,
                            "reference": reference or "",
                        }
                    )
        final: dict[tuple[str, int], dict[str, Any]] = {}
        for r in summary_rows:
            cols = final.setdefault((r["fusion"], r["seed"]), {})
            cols[f"rel_robustness_{r['kind']}_{r['target']}"] = r["relative_robustness"]
            cols[f"eff_robustness_{r['kind']}_{r['target']}"] = r["effective_robustness"]
        ylim = _shared_limits(plotted, ctx.main_metric)
        figures = {
            f"robustness_{kind}.png": robustness_grid(
                plotted[kind],
                targets,
                xlabel,
                f"test {ctx.metric_label}",
                f"Robustness to {what} (mean over seeds)",
                ylim,
            )
            for kind, xlabel, what in _KINDS
        }
        tables = {"robustness_curves.csv": rows, "robustness.csv": summary_rows}
        return Summary(self._section(ctx, ref_why, summary_rows), tables, figures, final)

    def _section(self, ctx: AnalysisContext, ref_why: str, summary_rows: list[dict[str, Any]]) -> Section:
        sec = Section(
            self.title,
            [
                "Test "
                + ctx.metric_label
                + " as Gaussian noise (relative to each feature's standard deviation) is added, and as "
                "a growing share of steps is marked missing, for each modality alone and for all at once. Relative "
                "robustness is the normalised area under each curve (MultiBench); effective robustness is the area of "
                "the drop from the clean score minus the reference's (positive: degrades less than the reference). "
                f"Reference: {ref_why}.",
            ],
        )
        sec.figure(
            "robustness_noise.png",
            "Robustness to noise",
            "One panel per perturbed modality; lines: fusions; every panel on the same y axis.",
        )
        sec.figure(
            "robustness_missing.png",
            "Robustness to missing steps",
            "One panel per perturbed modality; the y axis is that of the noise figure.",
        )
        sf = pd.DataFrame(summary_rows)
        agg = (
            sf[sf["target"] == "all"]
            .groupby(["fusion", "kind"], sort=False)[["relative_robustness", "effective_robustness"]]
            .mean()
        )
        sec.table(
            "Robustness with every modality perturbed (mean over seeds).",
            ["fusion", "relative (noise)", "effective (noise)", "relative (missing)", "effective (missing)"],
            [
                [n, *[fmt(agg.loc[(n, kind)].iloc[k]) for kind in ("noise", "missing") for k in (0, 1)]]
                for n in ctx.names
            ],
        )
        return sec


def _at(curves: Sequence[Curve], kind: str, target: str, level: float) -> float:
    return float(
        next(c["metric"] for c in curves if c["kind"] == kind and c["target"] == target and c["level"] == level)
    )


def _reference(ctx: AnalysisContext) -> tuple[str | None, str]:
    """The reference run of effective robustness (late fusion, else the best unimodal baseline) and why."""
    if "late" in ctx.names:
        return "late", "the late-fusion runs of this directory"
    uni = [n for n in ctx.names if n.startswith("unimodal")]
    if not uni:
        return None, "neither a late-fusion run nor a unimodal baseline here: effective robustness not computed"
    targets = ctx.reference.targets
    score = {n: mean_finite([ctx.score(ctx.clean(m), targets) for m in ctx.seeds_of(n)]) for n in uni}
    best = max(uni, key=lambda n: score[n] if ctx.higher_is_better else -score[n])
    return best, f"no late-fusion run here; the best unimodal baseline '{best}'"


def _shared_limits(
    curves: Mapping[str, Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]], metric: str
) -> tuple[float, float] | None:
    """One y range for every panel of every robustness figure, padded and kept within the metric's bounds."""
    values = np.array(
        [v for per_run in curves.values() for per in per_run.values() for _, y in per.values() for v in y]
    )
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = float(values.min()), float(values.max())
    pad = max(0.05 * (hi - lo), 0.02 * max(abs(hi), 1e-3))
    low, high = get_metric(metric).bounds
    return (
        lo - pad if low is None else max(low, lo - pad),
        hi + pad if high is None else min(high, hi + pad),
    )


def robustness_grid(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    targets: Sequence[str],
    xlabel: str,
    metric: str,
    title: str,
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """One panel per perturbed target (a modality or "all"), all on one y axis; one line per run.

    ``curves[run][target] = (x, y)``; ``ylim`` fixes the shared y range (so figures of one metric compare too).
    """
    n = len(targets)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols + 1.8, 3.0 * rows + 0.6))
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for k, (target, ax) in enumerate(zip(targets, axes, strict=False)):
        style_axes(ax, labelsize=8)
        for i, (name, per_target) in enumerate(curves.items()):
            if target in per_target:
                x, y = per_target[target]
                ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, color=colour(i), label=mpl_text(name))
        ax.set_title(f"perturbed: {mpl_text(target)}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        if k % cols == 0:
            ax.set_ylabel(mpl_text(metric), fontsize=8)
    if ylim is not None:
        axes[0].set_ylim(*ylim)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, title="fusion", title_fontsize=8, frameon=False)
    fig.suptitle(mpl_text(title, 120), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / (3.6 * cols + 1.8), 0.95))
    return fig
