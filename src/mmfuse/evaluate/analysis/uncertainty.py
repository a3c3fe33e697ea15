"""Uncertainty: predictive entropy / mutual information / variance from repeated stochastic passes, risk-coverage.

The passes come from MC dropout (dropout layers active at test time) or test-time augmentation (feature noise,
time shifts); :func:`enable_mc_dropout` switches only the dropout layers on, so nothing else about the model
(modality dropout, batch statistics) changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from mmfuse.evaluate.analysis.base import Analysis, Section, Summary, check_count, fmt, register_analysis
from mmfuse.evaluate.analysis.context import AnalysisContext, LoadedModel, softmax
from mmfuse.evaluate.analysis.robustness import add_noise
from mmfuse.evaluate.figures import colour, mpl_text, style_axes
from mmfuse.types import Batch

__all__ = [
    "UncertaintyAnalysis",
    "UncertaintyConfig",
    "classification_uncertainty",
    "enable_mc_dropout",
    "regression_uncertainty",
    "risk_coverage",
    "risk_coverage_plot",
    "shift_steps",
]


def classification_uncertainty(pass_probs: Any) -> dict[str, np.ndarray]:
    """Uncertainty of ``P`` stochastic passes over ``N`` rows and ``C`` classes.

    Args:
        pass_probs: ``[P, N, C]`` probabilities of each pass.

    Returns:
        ``mean_probs [N, C]``, ``entropy [N]`` (of the mean, nats: total uncertainty), ``expected_entropy [N]``
        (aleatoric part), ``mutual_information [N]`` (their difference: the epistemic part) and ``variance [N]``
        (variance over passes of the predicted class's probability).

    Example:
        >>> u = classification_uncertainty(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]))
        >>> round(float(u["entropy"][0]), 4), round(float(u["mutual_information"][0]), 4)
        (0.6931, 0.6931)
    """
    p = np.asarray(pass_probs, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] < 1:
        raise ValueError(
            f"The 'pass_probs' parameter of classification_uncertainty must be [P, N, C] with P >= 1. "
            f"Got {list(p.shape)}."
        )
    mean = p.mean(axis=0)  # [N, C]
    logp = np.log(np.clip(mean, 1e-12, 1.0))
    entropy = -(mean * logp).sum(axis=-1)  # [N]
    expected = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=-1).mean(axis=0)  # [N]
    top = mean.argmax(axis=-1)  # [N]
    var = p[:, np.arange(p.shape[1]), top].var(axis=0)  # [N]
    return {
        "mean_probs": mean,
        "entropy": entropy,
        "expected_entropy": expected,
        "mutual_information": np.maximum(entropy - expected, 0.0),
        "variance": var,
    }


def regression_uncertainty(pass_preds: Any) -> dict[str, np.ndarray]:
    """Mean and variance over ``P`` passes of regression outputs ``[P, N]`` or ``[P, N, K]`` (variance summed over K).

    Example:
        >>> u = regression_uncertainty(np.array([[1.0, 2.0], [3.0, 2.0]]))
        >>> u["mean"].tolist(), u["variance"].tolist()
        ([2.0, 2.0], [1.0, 0.0])
    """
    p = np.asarray(pass_preds, dtype=np.float64)
    if p.ndim not in (2, 3) or p.shape[0] < 1:
        raise ValueError(
            f"The 'pass_preds' parameter of regression_uncertainty must be [P, N] or [P, N, K]. Got {list(p.shape)}."
        )
    var = p.var(axis=0)
    return {"mean": p.mean(axis=0), "variance": var if var.ndim == 1 else var.sum(axis=-1)}


def risk_coverage(confidence: Any, loss: Any) -> dict[str, Any]:
    """Risk-coverage curve: keep the most confident rows first; risk = mean loss of the kept rows.

    Args:
        confidence: ``[N]``, higher = more confident (e.g. minus the predictive entropy).
        loss: ``[N]`` per-row loss: 0/1 error for classification, absolute error for regression.

    Returns:
        ``{"coverage": [N], "risk": [N], "aurc": float}``: coverage ``k / N`` and the risk of the ``k`` most
        confident rows for ``k = 1..N``; ``aurc`` is the mean risk over coverages (area under the curve).

    Example:
        >>> rc = risk_coverage([0.9, 0.8, 0.1, 0.2], [0, 0, 1, 0])   # the one error is the least confident
        >>> rc["risk"].tolist()
        [0.0, 0.0, 0.0, 0.25]
    """
    c = np.asarray(confidence, dtype=np.float64)
    err = np.asarray(loss, dtype=np.float64)
    if c.ndim != 1 or c.shape != err.shape:
        raise ValueError(
            f"The 'confidence' and 'loss' parameters of risk_coverage must be 1-D of equal length. "
            f"Got {list(c.shape)} and {list(err.shape)}."
        )
    if c.size == 0:
        return {"coverage": np.zeros(0), "risk": np.zeros(0), "aurc": math.nan}
    order = np.argsort(-c, kind="stable")
    kept = np.arange(1, c.size + 1)
    risk = np.cumsum(err[order]) / kept
    return {"coverage": kept / c.size, "risk": risk, "aurc": float(risk.mean())}


@contextmanager
def enable_mc_dropout(model: nn.Module) -> Iterator[int]:
    """Put only the dropout layers of ``model`` in training mode for the duration of the block.

    Yields:
        The number of dropout layers with ``p > 0`` (0 means MC dropout gives identical passes).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).eval()
        >>> with enable_mc_dropout(net) as n:
        ...     n, net[1].training, net.training
        (1, True, False)
        >>> net[1].training
        False
    """
    dropouts = [
        m
        for m in model.modules()
        if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)) and float(m.p) > 0
    ]
    before = [m.training for m in dropouts]
    try:
        for m in dropouts:
            m.train()
        yield len(dropouts)
    finally:
        for m, was in zip(dropouts, before, strict=True):
            m.train(was)


@dataclass
class UncertaintyConfig:
    """Settings of the uncertainty analysis.

    Attributes:
        mc_passes: MC-dropout passes.
        tta_passes: Test-time-augmentation passes with feature noise.
        tta_noise: Noise level (relative to feature std) of those passes.
        tta_shifts: Time shifts (steps) added as augmentation passes, for sample-level labels only (a shift
            would move step-level features off their labels).
    """

    mc_passes: int = 10
    tta_passes: int = 4
    tta_noise: float = 0.1
    tta_shifts: tuple[int, ...] = (-1, 1)

    def __post_init__(self) -> None:
        check_count(self, "mc_passes")
        check_count(self, "tta_passes", 0)
        self.tta_shifts = tuple(self.tta_shifts)


@register_analysis("uncertainty")
class UncertaintyAnalysis(Analysis[UncertaintyConfig, dict[str, dict[str, Any]]]):
    """MC dropout and test-time augmentation: spread of the passes and risk-coverage."""

    title = "Uncertainty"
    order = 40
    config_type = UncertaintyConfig

    def run(self, ctx: AnalysisContext, model: LoadedModel) -> dict[str, dict[str, Any]]:
        """Per method (``mc_dropout``, ``tta``, ``softmax`` for classification): metric, spread, AURC, curve."""
        cfg, test = self.config, ctx.test(model)
        with ctx.seeded(), enable_mc_dropout(model.model) as n_dropout:
            mc = ctx.outputs(model, lambda b, g: [b] * cfg.mc_passes)
        if n_dropout == 0:
            ctx.note(f"{model.name}: the model has no active dropout layer; MC-dropout passes are identical.")

        def tta(b: Batch, g: torch.Generator) -> list[Batch]:
            res = [add_noise(b, list(test.modalities), cfg.tta_noise, test.std, g) for _ in range(cfg.tta_passes)]
            if ctx.level == "sample":
                res += [shift_steps(b, s) for s in cfg.tta_shifts]
            return res or [b]

        aug = ctx.outputs(model, tta)
        out = {name: _pass_stats(ctx.task, passes, test.targets) for name, passes in (("mc_dropout", mc), ("tta", aug))}
        if ctx.task == "classification":
            probs = softmax(ctx.clean(model).astype(np.float64))
            rc = risk_coverage(probs.max(1), (probs.argmax(1) != test.targets).astype(np.float64))
            out["softmax"] = {"aurc": rc["aurc"], "rc": rc}
        return out

    def summarize(
        self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, dict[str, dict[str, Any]]]]
    ) -> Summary:
        """``uncertainty.csv``, ``risk_coverage.png`` (MC dropout, one seed) and the report section."""
        cfg, higher = self.config, ctx.higher_is_better
        rows = []
        for m, u in results:
            row: dict[str, Any] = {"fusion": m.name, "seed": m.seed}
            row.update({f"{name}_{k}": v for name, stats in u.items() for k, v in stats.items() if k != "rc"})
            rows.append(row)
        final = {(r["fusion"], r["seed"]): {k: v for k, v in r.items() if k not in ("fusion", "seed")} for r in rows}
        by_model = {id(m): u for m, u in results}
        curves = {}
        for n in ctx.names:
            rc = by_model[id(ctx.single(n))]["mc_dropout"]["rc"]
            curves[n] = (rc["coverage"], rc["risk"])
        risk_label = "error rate of kept rows" if higher else "MAE of kept rows"
        fig = risk_coverage_plot(curves, risk_label, f"Risk-coverage, MC dropout (seed {ctx.settings.embedding_seed})")
        shifts = (
            f", plus time shifts {list(cfg.tta_shifts)}"
            if ctx.level == "sample"
            else "; no time shifts for step labels"
        )
        sec = Section(
            self.title,
            [
                f"MC dropout ({cfg.mc_passes} passes with the dropout layers active) and test-time augmentation "
                f"({cfg.tta_passes} passes with feature noise at {cfg.tta_noise}× the feature std{shifts}). "
                "Risk-coverage: rows are kept most confident first (lowest predictive "
                + ("entropy" if higher else "variance")
                + "); AURC is the mean risk over coverages (lower is better).",
            ],
        )
        sec.figure("risk_coverage.png", "Risk-coverage curves", "One line per fusion (MC dropout).")
        uf = pd.DataFrame(rows).groupby("fusion", sort=False).mean(numeric_only=True)
        spread = "mean_entropy" if higher else "mean_variance"
        head = [
            "fusion",
            f"{ctx.metric_label} (MC mean)",
            "AURC (MC)",
            f"{spread.replace('_', ' ')} (MC)",
            "AURC (TTA)",
        ]
        body = [
            [
                n,
                fmt(r.mc_dropout_metric),
                fmt(r.mc_dropout_aurc, 4),
                fmt(getattr(r, f"mc_dropout_{spread}"), 4),
                fmt(r.tta_aurc, 4),
                *([fmt(r.softmax_aurc, 4)] if higher else []),
            ]
            for n, r in uf.iterrows()
        ]
        sec.table("Uncertainty on test (mean over seeds).", head + (["AURC (softmax)"] if higher else []), body)
        return Summary(sec, {"uncertainty.csv": rows}, {"risk_coverage.png": fig}, final)


def _pass_stats(task: str, passes: Sequence[np.ndarray], y: np.ndarray) -> dict[str, Any]:
    """Metric, spread and risk-coverage of repeated passes ``[S, C]`` over the rows with targets ``y``."""
    if task == "classification":
        u = classification_uncertainty(np.stack([softmax(p.astype(np.float64)) for p in passes]))
        err = (u["mean_probs"].argmax(1) != y).astype(np.float64)
        rc = risk_coverage(-u["entropy"], err)
        return {
            "metric": float(1 - err.mean()),
            "mean_entropy": float(u["entropy"].mean()),
            "mean_mutual_information": float(u["mutual_information"].mean()),
            "aurc": rc["aurc"],
            "rc": rc,
        }
    u = regression_uncertainty(np.stack([p.reshape(y.shape) for p in passes]))
    err = np.abs(u["mean"] - y)
    err = err if err.ndim == 1 else err.mean(axis=-1)
    rc = risk_coverage(-u["variance"], err)
    return {"metric": float(err.mean()), "mean_variance": float(u["variance"].mean()), "aurc": rc["aurc"], "rc": rc}


def shift_steps(batch: Batch, s: int) -> Batch:
    """Every modality moved ``s`` steps later in time (earlier for ``s < 0``); steps shifted in are missing."""
    pad = batch.padding_mask
    inputs, masks = {}, {}
    for m in batch.inputs:
        x = torch.roll(batch.inputs[m], s, dims=1)
        k = torch.roll(batch.masks[m], s, dims=1) & pad
        if s > 0:
            k[:, :s] = False
        elif s < 0:
            k[:, s:] = False
        masks[m] = k
        inputs[m] = torch.where(k.unsqueeze(-1), x, torch.zeros_like(x))
    return Batch(inputs, masks, pad, batch.targets, batch.ids, batch.groups, batch.context)


def risk_coverage_plot(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], risk_label: str, title: str) -> Figure:
    """Risk against coverage, one line per run."""
    fig = Figure(figsize=(8.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    style_axes(ax, labelsize=8)
    for i, (name, (cov, risk)) in enumerate(curves.items()):
        ax.plot(cov, risk, color=colour(i), linewidth=1.3, label=mpl_text(name))
    ax.set_xlabel("coverage (share of rows kept, most confident first)")
    ax.set_ylabel(risk_label)
    ax.set_title(mpl_text(title, 100), fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, title="fusion")
    fig.tight_layout()
    return fig
