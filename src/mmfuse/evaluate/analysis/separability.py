"""Separability: 2-D maps (PCA, t-SNE, UMAP) of representations and silhouette scores by label.

The representations are those a model computes after each unimodal encoder and after the fusion
(:meth:`MultimodalModel.encode` / :meth:`MultimodalModel.fuse`), one row per labelled sample or step. The
silhouette score is computed in the representation space itself (not on the 2-D map), with Euclidean distance.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from mmfuse.evaluate.analysis.base import Analysis, Section, Summary, check_count, file_stem, fmt, register_analysis
from mmfuse.evaluate.analysis.context import AnalysisContext, LoadedModel, SplitData, model_modalities, take_rows
from mmfuse.evaluate.figures import colour, mpl_text

__all__ = [
    "EMBEDDING_METHODS",
    "SeparabilityAnalysis",
    "SeparabilityConfig",
    "embed_2d",
    "embedding_grid",
    "representations",
    "separability_score",
    "subsample",
]

logger = logging.getLogger(__name__)

EMBEDDING_METHODS = ("pca", "tsne", "umap")


def subsample(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``min(n, k)`` rows drawn without replacement.

    Example:
        >>> subsample(5, 10).tolist(), len(subsample(100, 10))
        ([0, 1, 2, 3, 4], 10)
    """
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def separability_score(x: Any, labels: Any) -> float:
    """Silhouette score of ``x`` ``[N, H]`` grouped by ``labels`` ``[N]`` (NaN with fewer than 2 classes).

    Example:
        >>> x = np.array([[0.0], [0.1], [5.0], [5.1]])
        >>> round(separability_score(x, [0, 0, 1, 1]), 2)
        0.98
    """
    from sklearn.metrics import silhouette_score

    a = np.asarray(x, dtype=np.float64)
    y = np.asarray(labels)
    n_labels = len(np.unique(y))
    if a.ndim != 2 or a.shape[0] != y.shape[0]:
        raise ValueError(f"separability_score needs x [N, H] and labels [N]. Got {list(a.shape)} and {list(y.shape)}.")
    if n_labels < 2 or n_labels >= a.shape[0] or not np.isfinite(a).all():
        return math.nan
    return float(silhouette_score(a, y, metric="euclidean"))


def embed_2d(x: Any, method: str, seed: int = 0) -> tuple[np.ndarray | None, str]:
    """A 2-D map ``[N, 2]`` of ``x`` ``[N, H]`` by ``"pca"``, ``"tsne"`` or ``"umap"``.

    Returns:
        ``(points, note)``: points is None (with the reason in ``note``) when the method cannot run here, e.g.
        umap-learn is not installed or there are too few rows.

    Example:
        >>> pts, note = embed_2d(np.random.default_rng(0).normal(size=(20, 5)), "pca")
        >>> pts.shape, note
        ((20, 2), '')
    """
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"Unknown embedding method {method!r}. Valid: {', '.join(EMBEDDING_METHODS)}.")
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"embed_2d needs x of shape [N, H]. Got {list(a.shape)}.")
    n = a.shape[0]
    if n < 5:
        return None, f"{method}: too few rows ({n}) for a map"
    if a.shape[1] == 1:
        a = np.concatenate([a, np.zeros_like(a)], axis=1)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(a), ""
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=300)
        return tsne.fit_transform(a), ""
    try:
        import umap
    except Exception as exc:  # an absent or broken umap-learn (numba) must not stop the analysis
        return None, f"UMAP skipped: umap-learn could not be imported ({type(exc).__name__}: {exc})"
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(a)), ""


@dataclass
class SeparabilityConfig:
    """Settings of the separability analysis.

    Attributes:
        embedding_methods: 2-D maps drawn of the fused representation (``pca``, ``tsne``, ``umap``).
        encoder_embedding_methods: 2-D maps drawn of each unimodal encoder's representation (PCA by default:
            t-SNE and UMAP cost about a second per map, and a 16-fusion run has 64 encoder representations; pass
            ``EMBEDDING_METHODS`` for all three).
        embedding_points: Rows subsampled for the maps and silhouette scores.
    """

    embedding_methods: tuple[str, ...] = EMBEDDING_METHODS
    encoder_embedding_methods: tuple[str, ...] = ("pca",)
    embedding_points: int = 300

    def __post_init__(self) -> None:
        owner = type(self).__name__
        self.embedding_methods = tuple(self.embedding_methods)
        self.encoder_embedding_methods = tuple(self.encoder_embedding_methods)
        unknown = [m for m in (*self.embedding_methods, *self.encoder_embedding_methods) if m not in EMBEDDING_METHODS]
        if unknown:
            raise ValueError(
                f"Unknown embedding method {unknown[0]!r} in {owner}. Valid: {', '.join(EMBEDDING_METHODS)}."
            )
        check_count(self, "embedding_points")


@dataclass
class _Maps:
    maps: dict[str, dict[str, np.ndarray | None]] = field(default_factory=dict)  # representation -> method -> [N, 2]
    scores: dict[str, float] = field(default_factory=dict)  # representation -> silhouette


@register_analysis("separability")
class SeparabilityAnalysis(Analysis[SeparabilityConfig, _Maps | None]):
    """2-D maps and silhouette scores of the representations after each encoder and after the fusion."""

    title = "Separability"
    order = 50
    config_type = SeparabilityConfig

    def __init__(self, config: SeparabilityConfig) -> None:
        super().__init__(config)
        self._warmup: threading.Thread | None = None

    def prepare(self, ctx: AnalysisContext) -> None:
        """Compile umap-learn's numba kernels (tens of seconds) on another core while the other analyses run."""
        if "umap" in (*self.config.embedding_methods, *self.config.encoder_embedding_methods):
            self._warmup = threading.Thread(target=_warm_up_umap, name="mmfuse-umap-warmup", daemon=True)
            self._warmup.start()

    def _rows(self, ctx: AnalysisContext) -> np.ndarray:
        return subsample(len(ctx.reference.targets), self.config.embedding_points, ctx.settings.seed)

    def run(self, ctx: AnalysisContext, model: LoadedModel) -> _Maps | None:
        """Maps and scores of the fusion's single-model seed (None for its other seeds and without stages)."""
        if model is not ctx.single(model.name):
            return None
        if self._warmup is not None:
            self._warmup.join()
        try:
            reps = representations(model.model, ctx.reference, ctx.level)
        except Exception as exc:  # a model without encode/fuse stages
            ctx.note(f"separability of {model.name}: representations unavailable ({type(exc).__name__}: {exc})")
            return None
        cfg, idx = self.config, self._rows(ctx)
        labels = ctx.reference.targets[idx]
        methods = [m for m in EMBEDDING_METHODS if m in (*cfg.embedding_methods, *cfg.encoder_embedding_methods)]
        out = _Maps()
        for rep, x in reps.items():
            xs = x[idx]
            out.scores[rep] = separability_score(xs, labels) if ctx.higher_is_better else math.nan
            chosen = cfg.embedding_methods if rep == "after fusion" else cfg.encoder_embedding_methods
            out.maps[rep] = {}
            for method in methods:
                pts, why = embed_2d(xs, method, seed=ctx.settings.seed) if method in chosen else (None, "")
                if why:
                    ctx.note(why)
                out.maps[rep][method] = pts
        return out

    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, _Maps | None]]) -> Summary:
        """``separability.csv``, one ``separability_<fusion>.png`` per fusion and the silhouette table."""
        higher, idx = ctx.higher_is_better, self._rows(ctx)
        labels = ctx.reference.targets[idx]
        label_vals = labels if higher or labels.ndim == 1 else labels[:, 0]
        sec = Section(self.title, [self._intro(ctx, len(idx))])
        rows, figures, final = [], {}, {}
        for m, maps in results:
            if maps is None:
                continue
            for rep, score in maps.scores.items():
                rows.append({"fusion": m.name, "seed": m.seed, "representation": rep, "silhouette": score})
            final[(m.name, m.seed)] = {"silhouette_fused": maps.scores["after fusion"]}
            fname = f"separability_{file_stem(m.name)}.png"
            figures[fname] = embedding_grid(
                maps.maps,
                label_vals,
                ctx.class_names if higher else None,
                maps.scores,
                f"{m.name}: representations of test rows (seed {m.seed})",
            )
            sec.figure(fname, f"Representation maps of {m.name}")
        if rows and higher:
            piv = pd.DataFrame(rows).pivot_table(
                index="fusion", columns="representation", values="silhouette", sort=False
            )
            sec.table(
                "Silhouette score by label per representation.",
                ["fusion", *piv.columns],
                [[n, *[fmt(v) for v in piv.loc[n]]] for n in piv.index],
            )
        return Summary(sec, {"separability.csv": rows}, figures, final)

    def _intro(self, ctx: AnalysisContext, n_rows: int) -> str:
        cfg = self.config
        return (
            "Representations after each unimodal encoder and after the fusion "
            f"({n_rows} test rows, the models of seed {ctx.settings.embedding_seed}), mapped to 2-D and coloured by "
            f"label (fused: {', '.join(m.upper() for m in cfg.embedding_methods) or 'none'}; encoders: "
            f"{', '.join(m.upper() for m in cfg.encoder_embedding_methods) or 'none'}; empty panels were not "
            "computed). The silhouette score (−1 to 1, higher: classes better separated) is computed in the "
            "representation space itself; compare the fused row with the encoder rows to see what fusion adds."
        )


def representations(model: nn.Module, split: SplitData, level: str) -> dict[str, np.ndarray]:
    """Labelled-row representations after each unimodal encoder and after the fusion (masked means for samples)."""
    reps: dict[str, list[Tensor]] = {}
    device = next(model.parameters()).device
    for batch, index in zip(split.batches, split.row_index, strict=True):
        mods = model_modalities(model, batch)
        pad = batch.padding_mask.to(device)
        masks = {m: batch.masks[m].to(device) & pad for m in mods}
        with torch.no_grad():
            encoded = model.encode({m: batch.inputs[m].to(device) for m in mods}, masks, pad)  # type: ignore[operator]
            fused = model.fuse(encoded, masks)  # type: ignore[operator]
        named = {f"encoder: {m}": (encoded[m], masks[m]) for m in mods}
        named["after fusion"] = (fused, pad)
        for name, (h, present) in named.items():
            if h.dim() == 3 and level == "sample":
                w = present.float().unsqueeze(-1)  # [B, T, 1]
                h = (h * w).sum(1) / w.sum(1).clamp(min=1.0)  # [B, H]
            reps.setdefault(name, []).append(take_rows(h.cpu(), index).float())
    return {k: torch.cat(v).numpy() for k, v in reps.items()}


def _warm_up_umap() -> None:
    try:
        embed_2d(np.random.default_rng(0).normal(size=(40, 4)), "umap")
    except Exception as exc:  # the real call reports the problem
        logger.debug("umap warm-up failed: %s", exc)


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
            _draw_map(ax, maps[rep][method], labels, label_names)
            score = scores.get(rep, math.nan)
            sil = f"silhouette {score:.3f}" if math.isfinite(score) else "silhouette n/a"
            ax.set_title(f"{mpl_text(rep, 24)} · {method.upper()}" + (f"\n{sil}" if c == 0 else ""), fontsize=8)
            if c == 0:
                ax.set_ylabel("dimension 2", fontsize=7)
            if r == len(reps) - 1:
                ax.set_xlabel("dimension 1", fontsize=7)
    handles, names = next(((h, n) for h, n in (ax.get_legend_handles_labels() for ax in fig.axes) if h), ([], []))
    if discrete and handles:
        fig.legend(
            handles, names, loc="upper right", fontsize=7, title="label", title_fontsize=7, frameon=False, markerscale=2
        )
    fig.suptitle(mpl_text(title, 120), fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 0.96))
    return fig


def _draw_map(ax: Any, pts: np.ndarray | None, labels: np.ndarray, label_names: Sequence[str] | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if pts is None:
        ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    elif label_names is not None:
        for k in np.unique(labels):
            sel = labels == k
            name = label_names[int(k)] if label_names and int(k) < len(label_names) else str(k)
            ax.scatter(pts[sel, 0], pts[sel, 1], s=5, color=colour(int(k)), label=mpl_text(name, 20), alpha=0.7)
    else:
        ax.scatter(pts[:, 0], pts[:, 1], s=5, c=labels, cmap="viridis", alpha=0.7)
