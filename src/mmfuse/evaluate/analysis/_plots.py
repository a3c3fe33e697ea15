"""Figures of the analysis, drawn with the figure kit of :mod:`mmfuse.evaluate.figures` and saved as PNG files."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mmfuse.evaluate.figures import colour, mpl_text, save_png, style_axes

__all__ = [
    "ablation_matrix",
    "agreement_matrix",
    "colour",
    "embedding_grid",
    "reliability_grid",
    "risk_coverage_plot",
    "robustness_grid",
    "save_figure",
    "weights_figure",
]


def _txt(text: str, limit: int = 40) -> str:
    return mpl_text(text, limit)


def _style(ax: Any) -> None:
    style_axes(ax, labelsize=8)


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG (atomically, at the kit's DPI) and release it."""
    return save_png(fig, path)


def ablation_matrix(rows: Sequence[str], cols: Sequence[str], values: np.ndarray, metric: str, title: str) -> Figure:
    """Heat map of ``values`` ``[R, S]`` (runs x modality subsets), each cell annotated."""
    r, s = values.shape
    fig = Figure(figsize=(max(6.0, 1.0 + 0.95 * s + 0.09 * max(len(c) for c in rows)), 1.6 + 0.42 * r))
    ax = fig.add_subplot(1, 1, 1)
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    im = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-9, aspect="auto")
    for i in range(r):
        for j in range(s):
            v = values[i, j]
            if math.isfinite(v):
                ax.text(
                    j,
                    i,
                    f"{v:.3f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v < (vmin + vmax) / 2 else "black",
                )
    ax.set_xticks(range(s), [_txt(c, 24) for c in cols], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(r), [_txt(c) for c in rows], fontsize=8)
    ax.set_xlabel("Modalities kept at test time (the others masked as missing)")
    ax.set_ylabel("Fusion / run")
    ax.set_title(_txt(title, 100), fontsize=10)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label(_txt(metric), fontsize=8)
    fig.tight_layout()
    return fig


def robustness_grid(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    targets: Sequence[str],
    xlabel: str,
    metric: str,
    title: str,
) -> Figure:
    """One panel per perturbed target (a modality or "all"); one line per run: ``curves[run][target] = (x, y)``."""
    n = len(targets)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols + 1.8, 3.0 * rows + 0.6))
    names = list(curves)
    for k, target in enumerate(targets):
        ax = fig.add_subplot(rows, cols, k + 1)
        _style(ax)
        for i, name in enumerate(names):
            if target in curves[name]:
                x, y = curves[name][target]
                ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, color=colour(i), label=_txt(name))
        ax.set_title(f"perturbed: {_txt(target)}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(_txt(metric), fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, title="fusion", title_fontsize=8, frameon=False)
    fig.suptitle(_txt(title, 120), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / (3.6 * cols + 1.8), 0.95))
    return fig


def reliability_grid(panels: Mapping[str, Mapping[str, dict[str, np.ndarray]]], title: str) -> Figure:
    """Reliability diagrams, one panel per run: ``panels[run][label] = reliability_curve(...)``."""
    names = list(panels)
    cols = min(len(names), 4)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.3 * cols, 3.2 * rows + 0.5))
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        _style(ax)
        ax.plot([0, 1], [0, 1], linestyle="--", color="#9ca3af", linewidth=1, label="perfect")
        for i, (label, curve) in enumerate(panels[name].items()):
            used = curve["count"] > 0
            ax.plot(
                curve["confidence"][used],
                curve["accuracy"][used],
                marker="o",
                markersize=3,
                color=colour(i),
                label=_txt(label),
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(_txt(name), fontsize=9)
        ax.set_xlabel("confidence (top-class probability)", fontsize=8)
        ax.set_ylabel("accuracy in bin", fontsize=8)
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.suptitle(_txt(title, 120), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def risk_coverage_plot(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], risk_label: str, title: str) -> Figure:
    """Risk against coverage, one line per run."""
    fig = Figure(figsize=(8.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    _style(ax)
    for i, (name, (cov, risk)) in enumerate(curves.items()):
        ax.plot(cov, risk, color=colour(i), linewidth=1.3, label=_txt(name))
    ax.set_xlabel("coverage (share of rows kept, most confident first)")
    ax.set_ylabel(risk_label)
    ax.set_title(_txt(title, 100), fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, title="fusion")
    fig.tight_layout()
    return fig


def embedding_grid(
    maps: Mapping[str, Mapping[str, np.ndarray | None]],
    labels: np.ndarray,
    label_names: Sequence[str] | None,
    scores: Mapping[str, float],
    title: str,
) -> Figure:
    """Rows: representations; columns: methods; points coloured by label (class or a continuous target)."""
    reps = list(maps)
    methods = list(next(iter(maps.values())))
    fig = Figure(figsize=(3.1 * len(methods) + 1.6, 2.9 * len(reps) + 0.6))
    discrete = label_names is not None
    for r, rep in enumerate(reps):
        for c, method in enumerate(methods):
            ax = fig.add_subplot(len(reps), len(methods), r * len(methods) + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            pts = maps[rep][method]
            if pts is None:
                ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            elif discrete:
                for k in np.unique(labels):
                    sel = labels == k
                    name = label_names[int(k)] if label_names and int(k) < len(label_names) else str(k)
                    ax.scatter(pts[sel, 0], pts[sel, 1], s=5, color=colour(int(k)), label=_txt(name, 20), alpha=0.7)
            else:
                ax.scatter(pts[:, 0], pts[:, 1], s=5, c=labels, cmap="viridis", alpha=0.7)
            score = scores.get(rep, math.nan)
            sil = f"silhouette {score:.3f}" if math.isfinite(score) else "silhouette n/a"
            ax.set_title(f"{_txt(rep, 24)} · {method.upper()}" + (f"\n{sil}" if c == 0 else ""), fontsize=8)
            if c == 0:
                ax.set_ylabel("dimension 2", fontsize=7)
            if r == len(reps) - 1:
                ax.set_xlabel("dimension 1", fontsize=7)
    if discrete and fig.axes:
        handles, names = [], []
        for ax in fig.axes:
            h, n = ax.get_legend_handles_labels()
            if h:
                handles, names = h, n
                break
        if handles:
            fig.legend(
                handles,
                names,
                loc="upper right",
                fontsize=7,
                title="label",
                title_fontsize=7,
                frameon=False,
                markerscale=2,
            )
    fig.suptitle(_txt(title, 120), fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 0.96))
    return fig


def agreement_matrix(names: Sequence[str], jaccard: np.ndarray, title: str) -> Figure:
    """Pairwise Jaccard overlap of the runs' error sets."""
    n = len(names)
    fig = Figure(figsize=(2.5 + 0.5 * n, 1.8 + 0.45 * n))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.nan_to_num(jaccard, nan=0.0), cmap="magma", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            v = jaccard[i, j]
            ax.text(
                j,
                i,
                "–" if not math.isfinite(v) else f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if (math.isfinite(v) and v < 0.5) or not math.isfinite(v) else "black",
            )
    ax.set_xticks(range(n), [_txt(x, 20) for x in names], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), [_txt(x, 20) for x in names], fontsize=8)
    ax.set_title(_txt(title, 100), fontsize=10)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("Jaccard overlap of errors", fontsize=8)
    fig.tight_layout()
    return fig


def weights_figure(panels: Sequence[dict[str, Any]], title: str) -> Figure:
    """Fusion weights of chosen samples: one panel per sample.

    Each panel: ``{"title", "kind", "values" (ndarray), "labels", "steps" (real length)}``.
    """
    n = max(len(panels), 1)
    fig = Figure(figsize=(5.2 * min(n, 2) + 1.2, 3.0 * math.ceil(n / 2) + 0.6))
    for k, panel in enumerate(panels):
        ax = fig.add_subplot(math.ceil(n / 2), min(n, 2), k + 1)
        _style(ax)
        vals = np.asarray(panel["values"])
        kind = panel["kind"]
        if kind == "modality_time":
            steps = np.arange(vals.shape[0])
            for i, label in enumerate(panel["labels"]):
                ax.plot(
                    steps, vals[:, i], color=colour(i), linewidth=1.4, marker="o", markersize=2.5, label=_txt(label)
                )
            ax.set_xlabel("time step", fontsize=8)
            ax.set_ylabel("weight", fontsize=8)
            ax.legend(
                fontsize=7,
                frameon=False,
                title="modality",
                title_fontsize=7,
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
            )
        elif kind == "channel_time":
            im = ax.imshow(vals.T, aspect="auto", cmap="viridis", origin="lower")
            ax.set_xlabel("time step", fontsize=8)
            ax.set_ylabel("weight channel", fontsize=8)
            cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
            cb.set_label("weight", fontsize=7)
        else:  # modality_static
            ax.bar(range(len(panel["labels"])), vals, color=[colour(i) for i in range(len(panel["labels"]))])
            ax.set_xticks(range(len(panel["labels"])), [_txt(x, 16) for x in panel["labels"]], fontsize=8)
            ax.set_xlabel("modality", fontsize=8)
            ax.set_ylabel("weight", fontsize=8)
        ax.set_title(_txt(panel["title"], 60), fontsize=9)
    fig.suptitle(_txt(title, 120), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig
