"""Calibration: ECE / adaptive ECE / MCE, reliability curves, temperature scaling and affine regression calibration.

Pure functions on arrays plus two small fitted calibrators (fitted state ends in ``_``, as everywhere in mmfuse).
Temperature scaling is fitted on validation logits only; it divides every logit by one positive scalar, so the
arg-max (and hence accuracy) never changes. The affine calibrator for regression heads maps ``y -> a * y + b`` per
target with an L2 penalty pulling ``(a, b)`` towards the identity ``(1, 0)``; :func:`paired_improvement_test`
decides from repeated runs whether keeping it is justified.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from mmfuse.errors import NotFittedError
from mmfuse.evaluate.analysis.base import Analysis, Section, Summary, check_count, fmt, mean_finite, register_analysis
from mmfuse.evaluate.analysis.context import AnalysisContext, LoadedModel, softmax
from mmfuse.evaluate.figures import colour, mpl_text, style_axes
from mmfuse.metrics._checks import as_labels, to_numpy
from mmfuse.metrics.classification import reliability_bins

__all__ = [
    "AffineCalibrator",
    "CalibrationAnalysis",
    "CalibrationConfig",
    "TemperatureScaler",
    "calibration_errors",
    "calibration_warnings",
    "expected_calibration_error",
    "paired_improvement_test",
    "reliability_curve",
    "reliability_grid",
]


def _check_probs(probs: Any, y_true: Any, owner: str) -> tuple[np.ndarray, np.ndarray]:
    y = as_labels(owner, "y_true", y_true)  # [N] int64: the metrics' own rule for class indices
    p = to_numpy(probs).astype(np.float64)  # [N, C]
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(
            f"The 'probs' and 'y_true' parameters of {owner} must have shapes [N, C] and [N]. "
            f"Got {list(p.shape)} and {list(y.shape)} instead."
        )
    if not np.isfinite(p).all():
        raise ValueError(f"The 'probs' parameter of {owner} must be finite. Got NaN or inf.")
    if p.shape[0] and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"The 'y_true' parameter of {owner} must hold class indices in [0, {p.shape[1]}).")
    return p, y


def reliability_curve(probs: Any, y_true: Any, n_bins: int = 15, *, adaptive: bool = False) -> dict[str, np.ndarray]:
    """Per-bin confidence, accuracy and count of the top-class predictions.

    Args:
        probs: ``[N, C]`` predicted probabilities.
        y_true: ``[N]`` true class indices.
        n_bins: Number of bins (equal width over [0, 1], or equal mass with ``adaptive=True``).
        adaptive: Equal-mass bins (quantiles of the confidence) instead of equal-width ones.

    Returns:
        ``{"edges": [K+1], "confidence": [K], "accuracy": [K], "count": [K]}`` (NaN in empty bins).

    Example:
        >>> curve = reliability_curve([[0.9, 0.1], [0.2, 0.8]], [0, 0], n_bins=2)
        >>> curve["count"].tolist(), curve["accuracy"].tolist()
        ([0.0, 2.0], [nan, 0.5])
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"The 'n_bins' parameter of reliability_curve must be a positive integer. Got {n_bins!r}.")
    p, y = _check_probs(probs, y_true, "reliability_curve")
    bins = reliability_bins(p.max(axis=1), p.argmax(axis=1) == y, n_bins, adaptive=adaptive)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = bins.confidence / bins.count
        acc = bins.correct / bins.count
    return {"edges": bins.edges, "confidence": mean_conf, "accuracy": acc, "count": bins.count}


def expected_calibration_error(probs: Any, y_true: Any, n_bins: int = 15, *, adaptive: bool = False) -> float:
    """Expected calibration error: the count-weighted mean gap between confidence and accuracy over bins.

    Args:
        probs: ``[N, C]`` predicted probabilities.
        y_true: ``[N]`` true class indices.
        n_bins: Number of bins.
        adaptive: Equal-mass bins (adaptive ECE) instead of equal-width ones.

    Returns:
        ECE in [0, 1]; NaN for no rows.

    Example:
        >>> expected_calibration_error([[0.75, 0.25]] * 4, [0, 0, 0, 1])
        0.0
    """
    curve = reliability_curve(probs, y_true, n_bins, adaptive=adaptive)
    count = curve["count"]
    n = count.sum()
    if n == 0:
        return math.nan
    used = count > 0
    gap = np.abs(curve["accuracy"][used] - curve["confidence"][used])
    return float((gap * count[used]).sum() / n)


def calibration_errors(probs: Any, y_true: Any, n_bins: int = 15) -> dict[str, float]:
    """ECE (equal width), adaptive ECE (equal mass), MCE (largest bin gap), NLL and Brier score.

    Example:
        >>> errs = calibration_errors([[0.75, 0.25]] * 4, [0, 0, 0, 1])
        >>> errs["ece"], errs["mce"]
        (0.0, 0.0)
    """
    p, y = _check_probs(probs, y_true, "calibration_errors")
    curve = reliability_curve(p, y, n_bins)
    used = curve["count"] > 0
    gaps = np.abs(curve["accuracy"][used] - curve["confidence"][used])
    n = p.shape[0]
    onehot = np.zeros_like(p)
    onehot[np.arange(n), y] = 1.0
    return {
        "ece": expected_calibration_error(p, y, n_bins),
        "ece_adaptive": expected_calibration_error(p, y, n_bins, adaptive=True),
        "mce": float(gaps.max()) if gaps.size else math.nan,
        "nll": float(-np.log(np.clip(p[np.arange(n), y], 1e-12, 1.0)).mean()) if n else math.nan,
        "brier": float(((p - onehot) ** 2).sum(axis=1).mean()) if n else math.nan,
    }


class TemperatureScaler:
    """Divide logits by one temperature ``T > 0`` fitted by L-BFGS to minimise the NLL of validation logits.

    Attributes:
        temperature_: The fitted temperature (set by :meth:`fit`).

    Example:
        >>> logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
        >>> scaler = TemperatureScaler().fit(logits, [0, 1, 1, 0])   # half wrong: very over-confident
        >>> scaler.temperature_ > 1.0
        True
        >>> bool((scaler.transform(logits).argmax(1) == logits.argmax(1)).all())
        True
    """

    def __init__(self, *, max_iter: int = 100) -> None:
        self.max_iter = max_iter

    def fit(self, logits: Any, y_true: Any) -> TemperatureScaler:
        """Fit the temperature on ``[N, C]`` logits and ``[N]`` labels (use the validation split, never test)."""
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[0] == 0 or not np.isfinite(z).all():
            raise ValueError(
                f"The 'logits' parameter of TemperatureScaler.fit must be a finite, non-empty [N, C] array. "
                f"Got shape {list(z.shape)}."
            )
        _check_probs(np.zeros_like(z), y_true, "TemperatureScaler.fit")
        zt = torch.from_numpy(z)
        yt = torch.from_numpy(np.asarray(y_true, dtype=np.int64))
        log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(zt / log_t.exp(), yt)
            loss.backward()
            return loss

        opt.step(closure)
        t = float(log_t.detach().exp())
        self.temperature_ = t if math.isfinite(t) and t > 0 else 1.0
        return self

    def transform(self, logits: Any) -> np.ndarray:
        """Scaled logits ``logits / T``."""
        if not hasattr(self, "temperature_"):
            raise NotFittedError("This TemperatureScaler is not fitted yet: call fit(val_logits, val_labels) first.")
        return np.asarray(logits, dtype=np.float64) / self.temperature_

    def predict_proba(self, logits: Any) -> np.ndarray:
        """Calibrated probabilities ``softmax(logits / T)``."""
        return softmax(self.transform(logits))


class AffineCalibrator:
    """Per-target affine map ``y -> a * y + b`` for regression heads, L2-regularised towards the identity.

    Minimises ``sum((a * y + b - t)^2) + l2 * N * ((a - 1)^2 + b^2)`` in closed form per target.

    Attributes:
        scale_: ``[K]`` the fitted ``a``.
        shift_: ``[K]`` the fitted ``b``.

    Example:
        >>> y = np.linspace(-1, 1, 50)
        >>> cal = AffineCalibrator(l2=0.0).fit(y, 2 * y + 0.5)
        >>> np.round(cal.scale_, 3).tolist(), np.round(cal.shift_, 3).tolist()
        ([2.0], [0.5])
    """

    def __init__(self, *, l2: float = 0.1) -> None:
        if not isinstance(l2, (int, float)) or l2 < 0 or not math.isfinite(l2):
            raise ValueError(f"The 'l2' parameter of AffineCalibrator must be a finite number >= 0. Got {l2!r}.")
        self.l2 = float(l2)

    @staticmethod
    def _two_d(x: Any, name: str) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or not np.isfinite(a).all():
            raise ValueError(
                f"The {name!r} parameter of AffineCalibrator must be a finite [N] or [N, K] array. "
                f"Got shape {list(a.shape)}."
            )
        return a

    def fit(self, y_pred: Any, y_true: Any) -> AffineCalibrator:
        """Fit on validation predictions and targets (``[N]`` or ``[N, K]``)."""
        y = self._two_d(y_pred, "y_pred")
        t = self._two_d(y_true, "y_true")
        if y.shape != t.shape or y.shape[0] == 0:
            raise ValueError(
                f"The 'y_pred' and 't_true' of AffineCalibrator.fit must have the same non-empty shape. "
                f"Got {list(y.shape)} and {list(t.shape)}."
            )
        n = y.shape[0]
        lam = self.l2 * n
        # normal equations per target: [[Syy + lam, Sy], [Sy, n + lam]] [a, b] = [Syt + lam, St]
        syy, sy, st, syt = (y * y).sum(0), y.sum(0), t.sum(0), (y * t).sum(0)
        a11, a12, a22 = syy + lam, sy, n + lam
        det = a11 * a22 - a12 * a12
        safe = np.where(np.abs(det) > 1e-12, det, 1.0)
        a = np.where(np.abs(det) > 1e-12, ((syt + lam) * a22 - a12 * st) / safe, 1.0)
        b = np.where(np.abs(det) > 1e-12, (a11 * st - a12 * (syt + lam)) / safe, 0.0)
        self.scale_ = a
        self.shift_ = b
        return self

    def transform(self, y_pred: Any) -> np.ndarray:
        """Calibrated predictions, in the input's layout."""
        if not hasattr(self, "scale_"):
            raise NotFittedError("This AffineCalibrator is not fitted yet: call fit(val_pred, val_true) first.")
        arr = np.asarray(y_pred, dtype=np.float64)
        out = self._two_d(arr, "y_pred") * self.scale_ + self.shift_
        return out.reshape(arr.shape)


def paired_improvement_test(
    before: Sequence[float], after: Sequence[float], *, lower_is_better: bool = True, alpha: float = 0.05
) -> dict[str, Any]:
    """Does ``after`` improve on ``before`` over paired repeated runs? One-sided paired t-test (and Wilcoxon).

    Args:
        before: A metric per run without the calibration layer.
        after: The same runs with it.
        lower_is_better: Whether smaller metric values are better (MAE: True).
        alpha: Significance level.

    Returns:
        ``{"test": "ttest_rel (one-sided)", "n", "mean_improvement", "p_value", "wilcoxon_p", "significant"}``;
        ``p_value`` is NaN (and ``significant`` False) with fewer than 2 pairs or zero variance of the differences.

    Example:
        >>> r = paired_improvement_test([1.0, 1.1, 0.9, 1.0], [0.8, 0.85, 0.7, 0.79])
        >>> r["significant"], r["p_value"] < 0.01
        (True, True)
    """
    from scipy import stats

    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    if b.shape != a.shape or b.ndim != 1:
        raise ValueError(
            f"The 'before' and 'after' parameters of paired_improvement_test must be 1-D of equal length. "
            f"Got {list(b.shape)} and {list(a.shape)}."
        )
    gain = (b - a) if lower_is_better else (a - b)  # > 0 means improvement
    out: dict[str, Any] = {
        "test": "ttest_rel (one-sided)",
        "n": int(b.size),
        "mean_improvement": float(gain.mean()) if b.size else math.nan,
        "p_value": math.nan,
        "wilcoxon_p": math.nan,
        "significant": False,
    }
    if b.size >= 2 and np.std(gain) > 1e-9 * max(1.0, float(np.abs(gain).mean())):
        p = float(stats.ttest_rel(gain, np.zeros_like(gain), alternative="greater").pvalue)
        out["p_value"] = p
        if b.size >= 6 and np.any(gain != 0):
            out["wilcoxon_p"] = float(stats.wilcoxon(gain, alternative="greater").pvalue)
        out["significant"] = bool(p < alpha and out["mean_improvement"] > 0)
    return out


@dataclass
class CalibrationConfig:
    """Settings of the calibration analysis.

    Attributes:
        ece_bins: Bins of the (equal-width and adaptive) calibration errors.
        affine_l2: L2 strength of the regression affine calibrator (towards the identity).
        alpha: Significance level of the paired test that decides whether the affine calibrator is kept.
    """

    ece_bins: int = 15
    affine_l2: float = 0.1
    alpha: float = 0.05

    def __post_init__(self) -> None:
        check_count(self, "ece_bins")


@register_analysis("calibration")
class CalibrationAnalysis(Analysis[CalibrationConfig, dict[str, Any]]):
    """Temperature scaling (classification) or an affine layer (regression), fitted on the calibration split."""

    title = "Calibration"
    order = 30
    config_type = CalibrationConfig
    needs = frozenset({"calibration_split"})

    def run(self, ctx: AnalysisContext, model: LoadedModel) -> dict[str, Any]:
        """Fit the calibrator on the calibration split's outputs; score test before and after."""
        y, clean = ctx.test(model).targets, ctx.clean(model)
        val = ctx.split(model, ctx.settings.calibration_split)
        val_out = ctx.outputs(model, lambda b, g: [b], val)[0]
        if ctx.task == "classification":
            scaler = TemperatureScaler().fit(val_out, val.targets)
            before = softmax(clean.astype(np.float64))
            after = scaler.predict_proba(clean)
            return {
                "temperature": scaler.temperature_,
                "before": calibration_errors(before, y, self.config.ece_bins),
                "after": calibration_errors(after, y, self.config.ece_bins),
                "accuracy_before": float((before.argmax(1) == y).mean()),
                "accuracy_after": float((after.argmax(1) == y).mean()),
                "probs_before": before,
                "probs_after": after,
            }
        cal = AffineCalibrator(l2=self.config.affine_l2).fit(val_out.reshape(val.targets.shape), val.targets)
        fixed = cal.transform(clean.reshape(y.shape))
        return {
            "scale": cal.scale_.tolist(),
            "shift": cal.shift_.tolist(),
            "mae_before": float(np.abs(clean.reshape(y.shape) - y).mean()),
            "mae_after": float(np.abs(fixed - y).mean()),
        }

    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, dict[str, Any]]]) -> Summary:
        """``calibration.csv``, the reliability diagrams (classification) and the report section."""
        if ctx.task == "classification":
            return self._classification(ctx, results)
        return self._regression(ctx, results)

    def _intro(self, ctx: AnalysisContext) -> str:
        split = ctx.settings.calibration_split
        if ctx.task == "classification":
            return (
                f"Expected calibration error (ECE, {self.config.ece_bins} equal-width bins), its adaptive "
                "(equal-mass) variant and the maximum calibration error (MCE) on test, before and after temperature "
                f"scaling. The temperature is fitted by L-BFGS on the {split!r} split's logits (never on test); "
                "dividing all logits by one positive number keeps every arg-max, so accuracy is unchanged."
            )
        return (
            f"An affine layer y -> a·y + b per target, L2-regularised towards the identity (strength "
            f"{self.config.affine_l2}), fitted on the {split!r} split. It is kept only when a one-sided paired "
            f"t-test of the test MAE over the seeds shows an improvement at α = {self.config.alpha}."
        )

    def _classification(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, dict[str, Any]]]) -> Summary:
        rows = [
            {
                "fusion": m.name,
                "seed": m.seed,
                "temperature": c["temperature"],
                **{f"{k}_before": v for k, v in c["before"].items()},
                **{f"{k}_after": v for k, v in c["after"].items()},
                "accuracy_before": c["accuracy_before"],
                "accuracy_after": c["accuracy_after"],
            }
            for m, c in results
        ]
        final = {(r["fusion"], r["seed"]): {k: v for k, v in r.items() if k not in ("fusion", "seed")} for r in rows}
        panels = {}
        for n in ctx.names:
            mine = [c for m, c in results if m.name == n]
            y_all = np.concatenate([ctx.reference.targets] * len(mine))
            panels[n] = {
                "before": reliability_curve(
                    np.concatenate([c["probs_before"] for c in mine]), y_all, self.config.ece_bins
                ),
                "temperature-scaled": reliability_curve(
                    np.concatenate([c["probs_after"] for c in mine]), y_all, self.config.ece_bins
                ),
            }
        fig = reliability_grid(panels, "Reliability diagrams (test, seeds pooled)")
        cf = pd.DataFrame(rows).groupby("fusion", sort=False).mean(numeric_only=True)
        sec = Section(self.title, [self._intro(ctx)])
        sec.figure("reliability.png", "Reliability diagrams", "Dashed: perfect calibration.")
        sec.notes.extend(calibration_warnings(cf))
        keys = ("ece", "ece_adaptive", "mce", "nll", "accuracy")
        sec.table(
            "Calibration on test (mean over seeds).",
            [
                "fusion",
                "T",
                "ECE",
                "ECE (T-scaled)",
                "adaptive ECE",
                "adaptive (T)",
                "MCE",
                "MCE (T)",
                "NLL",
                "NLL (T)",
                "accuracy",
                "accuracy (T)",
            ],
            [
                [n, fmt(r.temperature, 2), *[fmt(getattr(r, f"{k}_{w}")) for k in keys for w in ("before", "after")]]
                for n, r in cf.iterrows()
            ],
        )
        return Summary(sec, {"calibration.csv": rows}, {"reliability.png": fig}, final)

    def _regression(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, dict[str, Any]]]) -> Summary:
        rows, decisions, final = [], [], {}
        for n in ctx.names:
            mine = [(m, c) for m, c in results if m.name == n]
            before, after = [c["mae_before"] for _, c in mine], [c["mae_after"] for _, c in mine]
            test = paired_improvement_test(before, after, lower_is_better=True, alpha=self.config.alpha)
            kept = bool(test["significant"])
            decisions.append(
                [
                    n,
                    fmt(mean_finite(before)),
                    fmt(mean_finite(after)),
                    test["test"],
                    fmt(test["p_value"], 4),
                    "kept" if kept else "not kept",
                ]
            )
            for m, c in mine:
                rows.append(
                    {
                        "fusion": n,
                        "seed": m.seed,
                        "scale": json.dumps(c["scale"]),
                        "shift": json.dumps(c["shift"]),
                        "mae_before": c["mae_before"],
                        "mae_after": c["mae_after"],
                        "test": test["test"],
                        "p_value": test["p_value"],
                        "kept": kept,
                    }
                )
                final[(n, m.seed)] = {
                    "affine_mae_after": c["mae_after"],
                    "affine_kept": kept,
                    "affine_p_value": test["p_value"],
                }
        sec = Section(self.title, [self._intro(ctx)])
        sec.table(
            "Affine calibration of regression outputs.",
            ["fusion", "MAE", "MAE (affine)", "test", "p-value", "decision"],
            decisions,
        )
        return Summary(sec, {"calibration.csv": rows}, {}, final)


def calibration_warnings(means: pd.DataFrame) -> list[str]:
    """One warning per fusion whose test ECE or NLL got worse with temperature scaling (it is no fix there).

    ``means`` is indexed by fusion with ``ece_before``/``ece_after`` and ``nll_before``/``nll_after`` columns.
    """
    out = []
    for name, row in means.iterrows():
        worse = [
            f"{label} {row[f'{key}_before']:.3f} -> {row[f'{key}_after']:.3f}"
            for key, label in (("ece", "ECE"), ("nll", "NLL"))
            if f"{key}_before" in row
            and f"{key}_after" in row
            and math.isfinite(row[f"{key}_before"])
            and math.isfinite(row[f"{key}_after"])
            and row[f"{key}_after"] > row[f"{key}_before"] + 1e-12
        ]
        if worse:
            out.append(
                f"Temperature scaling made the test calibration of {name} worse ({', '.join(worse)}): the "
                "temperature fitted on the calibration split does not transfer to test, so do not apply it."
            )
    return out


def reliability_grid(panels: Mapping[str, Mapping[str, dict[str, np.ndarray]]], title: str) -> Figure:
    """Reliability diagrams, one panel per run: ``panels[run][label] = reliability_curve(...)``."""
    names = list(panels)
    cols = min(len(names), 4)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.3 * cols, 3.2 * rows + 0.5))
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        style_axes(ax, labelsize=8)
        ax.plot([0, 1], [0, 1], linestyle="--", color="#9ca3af", linewidth=1, label="perfect")
        for i, (label, curve) in enumerate(panels[name].items()):
            used = curve["count"] > 0
            x, y = curve["confidence"][used], curve["accuracy"][used]
            ax.plot(x, y, marker="o", markersize=3, color=colour(i), label=mpl_text(label))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(mpl_text(name), fontsize=9)
        ax.set_xlabel("confidence (top-class probability)", fontsize=8)
        ax.set_ylabel("accuracy in bin", fontsize=8)
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.suptitle(mpl_text(title, 120), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig
