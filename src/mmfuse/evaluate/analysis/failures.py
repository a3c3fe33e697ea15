"""Failure cases: frequent error patterns, the worst rows, and how far fusions agree on what they get wrong."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mmfuse.evaluate.analysis.base import Analysis, Section, Summary, check_count, fmt, register_analysis
from mmfuse.evaluate.analysis.context import AnalysisContext, LoadedModel, softmax
from mmfuse.evaluate.figures import mpl_text

__all__ = [
    "FailuresAnalysis",
    "FailuresConfig",
    "agreement_matrix",
    "error_agreement",
    "error_patterns",
    "row_loss",
    "worst_rows",
]


def error_patterns(
    y_true: Any, y_pred: Any, class_names: Sequence[str] | None = None, top: int = 10
) -> list[dict[str, Any]]:
    """The most frequent ``true -> predicted`` confusions (errors only), most frequent first.

    Returns:
        Rows ``{"true", "predicted", "count", "share_of_errors", "share_of_class"}``; ties keep class order.

    Example:
        >>> error_patterns([0, 0, 1, 1, 2], [1, 1, 0, 1, 0], ["a", "b", "c"])[0]
        {'true': 'a', 'predicted': 'b', 'count': 2, 'share_of_errors': 0.5, 'share_of_class': 1.0}
    """
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(
            f"The 'y_true' and 'y_pred' of error_patterns must be 1-D of equal length. Got {t.shape} and {p.shape}."
        )
    n_classes = int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if class_names is not None:
        n_classes = max(n_classes, len(class_names))
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    counts = np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    support = counts.sum(axis=1)
    np.fill_diagonal(counts, 0)
    total = int(counts.sum())
    flat = np.argsort(-counts, axis=None, kind="stable")
    out = []
    for k in flat[:top]:
        i, j = divmod(int(k), n_classes)
        c = int(counts[i, j])
        if c == 0:
            break
        out.append(
            {
                "true": names[i],
                "predicted": names[j],
                "count": c,
                "share_of_errors": c / total,
                "share_of_class": c / int(support[i]),
            }
        )
    return out


def worst_rows(loss: Any, n: int = 10) -> np.ndarray:
    """Indices of the ``n`` rows with the largest loss, largest first (NaN last).

    Example:
        >>> worst_rows([0.1, 2.0, float("nan"), 0.5], 2).tolist()
        [1, 3]
    """
    v = np.asarray(loss, dtype=np.float64)
    key = np.where(np.isnan(v), -np.inf, v)
    return np.argsort(-key, kind="stable")[: max(int(n), 0)]


def error_agreement(wrong: Mapping[str, Any]) -> dict[str, Any]:
    """How far models agree on their errors, from a boolean ``[N]`` "wrong" vector per model.

    Returns:
        ``names``, ``jaccard`` ``[F, F]`` (intersection over union of the error sets; 1 on the diagonal, NaN when
        both sets are empty), ``n_errors`` per model, ``all_wrong`` (rows every model gets wrong), ``any_wrong``
        and ``wrong_count`` ``[N]`` (how many models get each row wrong).

    Example:
        >>> a = error_agreement({"x": [True, True, False], "y": [True, False, False]})
        >>> float(a["jaccard"][0, 1]), a["all_wrong"], a["any_wrong"]
        (0.5, 1, 2)
    """
    names = list(wrong)
    if not names:
        raise ValueError("The 'wrong' parameter of error_agreement must hold at least one model.")
    mat = np.stack([np.asarray(wrong[k], dtype=bool) for k in names])  # [F, N]
    inter = (mat[:, None, :] & mat[None, :, :]).sum(axis=-1).astype(np.float64)  # [F, F]
    union = (mat[:, None, :] | mat[None, :, :]).sum(axis=-1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(union > 0, inter / np.where(union > 0, union, 1.0), math.nan)
    count = mat.sum(axis=0)
    return {
        "names": names,
        "jaccard": jac,
        "n_errors": mat.sum(axis=1).tolist(),
        "all_wrong": int((count == len(names)).sum()),
        "any_wrong": int((count > 0).sum()),
        "wrong_count": count,
    }


@dataclass
class FailuresConfig:
    """Settings of the failure analysis.

    Attributes:
        worst_cases: How many worst rows are listed per run.
        top_patterns: How many error patterns are listed per run.
    """

    worst_cases: int = 10
    top_patterns: int = 10

    def __post_init__(self) -> None:
        check_count(self, "worst_cases", 0)
        check_count(self, "top_patterns", 0)


@register_analysis("failures")
class FailuresAnalysis(Analysis[FailuresConfig, np.ndarray]):
    """Frequent error patterns, the worst rows, and the overlap of the fusions' errors."""

    title = "Failure cases"
    order = 60
    config_type = FailuresConfig

    def run(self, ctx: AnalysisContext, model: LoadedModel) -> np.ndarray:
        """The model's clean outputs ``[S, C]`` on the analysed split."""
        return ctx.clean(model)

    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, np.ndarray]]) -> Summary:
        """``failure_patterns.csv``, ``worst_cases.csv``, ``failure_agreement.csv`` / ``.png`` and the section."""
        y, higher = ctx.reference.targets, ctx.higher_is_better
        outputs = {id(m): o for m, o in results}
        patterns: list[dict[str, Any]] = []
        worst: list[dict[str, Any]] = []
        wrong: dict[str, np.ndarray] = {}
        for n in ctx.names:
            single = ctx.single(n)
            clean = outputs[id(single)]
            seeds = [outputs[id(m)] for m in ctx.seeds_of(n)]
            if higher:
                pred = clean.argmax(axis=1)
                for p in error_patterns(y, pred, ctx.class_names or None, self.config.top_patterns):
                    patterns.append({"fusion": n, "seed": single.seed, **p})
                wrong[n] = np.mean([(o.argmax(axis=1) != y) for o in seeds], axis=0) > 0.5
            else:
                pred = clean.reshape(y.shape)
                errs = np.stack([row_loss(ctx.task, o, y) for o in seeds]).mean(0)
                wrong[n] = errs > np.quantile(errs, 0.9)
            worst += self._worst(ctx, single, clean, pred)
        agree = error_agreement(wrong)
        agree_rows = [
            {"fusion": a, **{b: agree["jaccard"][i, j] for j, b in enumerate(agree["names"])}}
            for i, a in enumerate(agree["names"])
        ]
        fig = agreement_matrix(agree["names"], agree["jaccard"], "Overlap of the fusions' test errors")
        tables = {"failure_patterns.csv": patterns, "worst_cases.csv": worst, "failure_agreement.csv": agree_rows}
        return Summary(self._section(ctx, agree, patterns, worst), tables, {"failure_agreement.png": fig})

    def _worst(self, ctx: AnalysisContext, model: LoadedModel, clean: np.ndarray, pred: np.ndarray) -> list[dict]:
        test, higher = ctx.reference, ctx.higher_is_better
        y, names = test.targets, ctx.class_names
        loss = row_loss(ctx.task, clean, y)
        return [
            {
                "fusion": model.name,
                "seed": model.seed,
                "rank": rank,
                "sample_id": test.row_ids[i],
                "step": int(test.row_steps[i]) if test.row_steps is not None else "",
                "true": _class_name(names, y[i]) if higher else float(np.ravel(y[i])[0]),
                "predicted": _class_name(names, pred[i]) if higher else float(np.ravel(pred[i])[0]),
                "loss": float(loss[i]),
                "available": test.availability[i],
            }
            for rank, i in enumerate(worst_rows(loss, self.config.worst_cases), start=1)
        ]

    def _section(
        self, ctx: AnalysisContext, agree: dict[str, Any], patterns: list[dict[str, Any]], worst: list[dict[str, Any]]
    ) -> Section:
        cfg, seed = self.config, ctx.settings.embedding_seed
        what = (
            "misclassified by the majority of its seeds"
            if ctx.higher_is_better
            else "in its 10 % largest mean absolute errors"
        )
        sec = Section(
            self.title,
            [
                f"A row counts as a failure of a fusion when it is {what}. {agree['all_wrong']} of "
                f"{len(ctx.reference.targets)} test rows are failures of every fusion and {agree['any_wrong']} of at "
                "least one: errors shared by all fusions point at the data (hard or mislabelled rows) rather than at "
                "the fusion.",
            ],
        )
        sec.figure("failure_agreement.png", "Error agreement", "Jaccard overlap of the error sets of two fusions.")
        if patterns:
            top = pd.DataFrame(patterns).groupby(["true", "predicted"], sort=False)["count"].sum()
            top = top.sort_values(ascending=False).head(cfg.top_patterns)
            sec.table(
                f"Most frequent error patterns, summed over fusions (seed {seed}).",
                ["true", "predicted", "count"],
                [[t, p, int(c)] for (t, p), c in top.items()],
            )
        keys = ("fusion", "rank", "sample_id", "step", "true", "predicted", "loss", "available")
        sec.table(
            f"Worst test rows per fusion (top 5 of {cfg.worst_cases} in worst_cases.csv; seed {seed}).",
            ["fusion", "rank", "sample id", "step", "true", "predicted", "loss", "modalities present"],
            [[fmt(r[k]) if k == "loss" else r[k] for k in keys] for r in worst if r["rank"] <= 5],
        )
        return sec


def row_loss(task: str, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-row loss: cross-entropy of the logits (classification) or mean absolute error (regression)."""
    if task == "classification":
        p = softmax(outputs.astype(np.float64))
        return -np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, 1.0))
    diff = np.abs(outputs.reshape(targets.shape) - targets)
    return diff if diff.ndim == 1 else diff.mean(axis=-1)


def _class_name(names: Sequence[str], k: Any) -> str:
    return names[int(k)] if names and int(k) < len(names) else str(k)


def agreement_matrix(names: Sequence[str], jaccard: np.ndarray, title: str) -> Figure:
    """Pairwise Jaccard overlap of the runs' error sets."""
    n = len(names)
    fig = Figure(figsize=(2.5 + 0.5 * n, 1.8 + 0.45 * n))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.nan_to_num(jaccard, nan=0.0), cmap="magma", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            v = jaccard[i, j]
            text, light = ("–", True) if not math.isfinite(v) else (f"{v:.2f}", v < 0.5)
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if light else "black")
    ax.set_xticks(range(n), [mpl_text(x, 20) for x in names], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), [mpl_text(x, 20) for x in names], fontsize=8)
    ax.set_title(mpl_text(title, 100), fontsize=10)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("Jaccard overlap of errors", fontsize=8)
    fig.tight_layout()
    return fig
