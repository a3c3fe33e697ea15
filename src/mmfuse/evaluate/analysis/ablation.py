"""Modality ablation: every non-empty subset of modalities, masked at test time, and temporal context off.

Masking a modality marks it missing at every step (values zeroed, mask False), exactly as a recording without
that stream would arrive, so every fusion sees it through the availability masks it already honours. "Context
off" cuts every sequence into one-step sequences, so step-level models see each step without its neighbours.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from mmfuse.evaluate.analysis.base import Analysis, NoConfig, Section, Summary, fmt, mean_finite, register_analysis
from mmfuse.evaluate.analysis.context import AnalysisContext, LoadedModel
from mmfuse.evaluate.figures import mpl_text
from mmfuse.types import Batch

__all__ = ["AblationAnalysis", "ablation_matrix", "modality_subsets", "remove_context", "subset_label"]


def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """All ``2^M - 1`` non-empty subsets, smallest first, each in the given order.

    Example:
        >>> modality_subsets(["audio", "text"])
        [('audio',), ('text',), ('audio', 'text')]
    """
    names = list(modalities)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"The 'modalities' of modality_subsets must be non-empty and unique. Got {names!r}.")
    return [c for k in range(1, len(names) + 1) for c in itertools.combinations(names, k)]


def subset_label(subset: Sequence[str]) -> str:
    """``"audio+text"``: the column name of a subset.

    Example:
        >>> subset_label(("audio", "text"))
        'audio+text'
    """
    return "+".join(subset)


def remove_context(batch: Batch) -> Batch:
    """Cut every sequence into one-step sequences: ``[B, T, D] -> [S, 1, D]`` over the ``S`` real steps.

    Rows keep the order of the real steps (sequence by sequence), so labelled rows line up with the full batch's.

    Example:
        >>> pad = torch.tensor([[True, True], [True, False]])
        >>> x = torch.arange(4.0).reshape(2, 2, 1)
        >>> b = Batch({"a": x}, {"a": pad.clone()}, pad, torch.tensor([[0, 1], [1, -100]]))
        >>> out = remove_context(b)
        >>> out.inputs["a"].flatten().tolist(), out.targets.flatten().tolist()
        ([0.0, 1.0, 2.0], [0, 1, 1])
    """
    pad = batch.padding_mask  # [B, T]
    inputs = {m: x[pad].unsqueeze(1) for m, x in batch.inputs.items()}  # [S, 1, D_m]
    masks = {m: k[pad].unsqueeze(1) for m, k in batch.masks.items()}  # [S, 1]
    s = int(pad.sum())
    targets = None if batch.targets is None else batch.targets[pad].unsqueeze(1)  # [S, 1, ...]
    b_idx = torch.nonzero(pad)[:, 0].tolist()
    ids = [batch.ids[i] for i in b_idx] if len(batch.ids) == pad.shape[0] else []
    groups = [batch.groups[i] for i in b_idx] if len(batch.groups) == pad.shape[0] else []
    context = {k: v.repeat_interleave(pad.sum(dim=1)) for k, v in batch.context.items()}  # [B] -> [S]
    return Batch(inputs, masks, torch.ones(s, 1, dtype=torch.bool), targets, ids, groups, context)


@register_analysis("ablation")
class AblationAnalysis(Analysis[NoConfig, dict[str, float]]):
    """The main test metric for every kept subset of modalities, without temporal context and without context."""

    title = "Modality ablation"
    order = 10

    def run(self, ctx: AnalysisContext, model: LoadedModel) -> dict[str, float]:
        """Subset label (or ``"no context"`` / ``"context off"``) -> the main metric of ``model``."""
        test, net = ctx.test(model), model.model
        subsets = modality_subsets(test.modalities)
        outs = ctx.outputs(model, lambda b, g: [b.select_modalities(list(s)) for s in subsets])
        scores = {subset_label(s): ctx.score(o, test.targets) for s, o in zip(subsets, outs, strict=True)}
        if ctx.level == "step" and test.lengths.max() > 1:
            no_ctx = [t for b in test.batches for t in ctx.stacked_rows(net, remove_context(b), [remove_context(b)])]
            scores["no context"] = ctx.score(torch.cat(no_ctx).numpy(), test.targets)
        if getattr(getattr(net, "config", None), "context_sizes", None) and any(b.context for b in test.batches):
            # categorical context (domain, interaction, ...) off: the model sees "unknown" for every context
            off = ctx.outputs(model, lambda b, g: [dataclasses.replace(b, context={})])[0]
            scores["context off"] = ctx.score(off, test.targets)
        return scores

    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, dict[str, float]]]) -> Summary:
        """``ablation.csv``, ``ablation.png`` and the per-subset columns of the final results."""
        label, names, modalities = ctx.metric_label, ctx.names, ctx.reference.modalities
        cols = list(results[0][1])
        rows = [{"fusion": m.name, "seed": m.seed, "subset": c, label: r[c]} for m, r in results for c in cols]
        final = {(m.name, m.seed): {f"ablation_{c.replace(' ', '_')}": r[c] for c in cols} for m, r in results}
        mat = np.array([[mean_finite([r[c] for m, r in results if m.name == n]) for c in cols] for n in names])
        fig = ablation_matrix(names, cols, mat, f"test {label}", f"Modality ablation: test {label}, mean over seeds")
        single_cols = [c for c in cols if "+" not in c and c not in ("no context", "context off")]
        sign = 1.0 if ctx.higher_is_better else -1.0
        best_single = [
            single_cols[int(np.argmax(np.nan_to_num([sign * mat[i, cols.index(c)] for c in single_cols], nan=-np.inf)))]
            for i in range(len(names))
        ]
        dominant = pd.Series(best_single).value_counts()
        text = (
            f"Each model was tested with every non-empty subset of the {len(modalities)} modalities "
            f"({len(modality_subsets(modalities))} subsets): the modalities left out are marked missing at every "
            "step, so no model is retrained. "
            + (
                "'no context' cuts each sequence into single steps, so the temporal encoder sees no neighbours. "
                if "no context" in cols
                else ""
            )
            + (
                "'context off' gives the model 'unknown' for every categorical context (domain, interaction...). "
                if "context off" in cols
                else ""
            )
            + f"The single modality that keeps the most {label} is '{dominant.index[0]}' for "
            f"{int(dominant.iloc[0])} of {len(names)} runs."
        )
        sec = Section(self.title, [text])
        sec.figure(
            "ablation.png",
            "Modality ablation matrix",
            f"Rows: fusions; columns: modalities kept; cell: test {label} (mean over seeds).",
        )
        sec.table(
            f"Test {label} per kept subset (mean over seeds); full set = '{subset_label(modalities)}'.",
            ["fusion", *cols],
            [[n, *[fmt(v) for v in mat[i]]] for i, n in enumerate(names)],
        )
        return Summary(sec, {"ablation.csv": rows}, {"ablation.png": fig}, final)


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
                colour = "white" if v < (vmin + vmax) / 2 else "black"
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(s), [mpl_text(c, 24) for c in cols], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(r), [mpl_text(c) for c in rows], fontsize=8)
    ax.set_xlabel("Modalities kept at test time (the others masked as missing)")
    ax.set_ylabel("Fusion / run")
    ax.set_title(mpl_text(title, 100), fontsize=10)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label(mpl_text(metric), fontsize=8)
    fig.tight_layout()
    return fig
