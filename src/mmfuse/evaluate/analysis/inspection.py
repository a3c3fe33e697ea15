"""Inspection: the weights a fusion uses (attention, gates, modality weights), read generically by shape.

:meth:`Fusion.forward_with_weights` returns fusion-specific weights. They are interpreted by shape only:

* ``[B, T, M]`` (or ``[B, T, M, ...]``, averaged over the trailing dimensions): per-modality weights over time;
* ``[B, T, K]`` with ``K != M``: ``K`` channels over time (e.g. a gate vector), shown as a heat map;
* ``[B, M]`` (or ``[B, M, ...]``): one weight per modality and sample;
* anything else is reported with its shape and not plotted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from mmfuse.evaluate.analysis.base import Analysis, Section, Summary, check_count, file_stem, fmt, register_analysis
from mmfuse.evaluate.analysis.context import AnalysisContext, LoadedModel
from mmfuse.evaluate.figures import colour, mpl_text, style_axes
from mmfuse.types import Batch

__all__ = [
    "FusionWeights",
    "InspectionAnalysis",
    "InspectionConfig",
    "fusion_weights",
    "interpret_weights",
    "weights_figure",
]


@dataclass
class FusionWeights:
    """Fusion weights in one of the shapes the report can draw.

    Attributes:
        kind: ``"modality_time"`` ([B, T, M]), ``"channel_time"`` ([B, T, K]), ``"modality_static"`` ([B, M]) or
            ``"none"`` / ``"unsupported"``.
        values: The weights in that layout (None for ``none`` / ``unsupported``).
        labels: Names of the last axis (modalities, or channel numbers).
        note: Why nothing is shown, or the raw shape.
    """

    kind: str
    values: Tensor | None
    labels: list[str]
    note: str = ""


def interpret_weights(weights: Any, batch_size: int, steps: int, modalities: list[str]) -> FusionWeights:
    """Put the raw weights of ``forward_with_weights`` into a drawable layout, by shape alone.

    Example:
        >>> w = interpret_weights(torch.rand(2, 5, 3), 2, 5, ["a", "t", "v"])
        >>> w.kind, w.labels
        ('modality_time', ['a', 't', 'v'])
        >>> interpret_weights(torch.rand(2, 4, 5, 5), 2, 5, ["a", "t", "v"]).kind
        'unsupported'
    """
    if weights is None:
        return FusionWeights("none", None, [], "this fusion returns no weights")
    if isinstance(weights, Mapping):
        weights = next((v for v in weights.values() if isinstance(v, Tensor)), None)
    elif isinstance(weights, (tuple, list)):
        weights = next((v for v in weights if isinstance(v, Tensor)), None)
    if not isinstance(weights, Tensor):
        return FusionWeights("none", None, [], "this fusion returns no weight tensor")
    w = weights.detach().float().cpu()
    m = len(modalities)
    shape = list(w.shape)
    if w.dim() >= 3 and shape[0] == batch_size and shape[1] == steps:
        if shape[2] == m:
            if w.dim() > 3:
                w = w.flatten(3).mean(dim=3)  # [B, T, M]
            return FusionWeights("modality_time", w, list(modalities), f"raw shape {shape}")
        w = w.flatten(2)  # [B, T, K]
        return FusionWeights("channel_time", w, [str(i) for i in range(w.shape[-1])], f"raw shape {shape}")
    if w.dim() >= 2 and shape[0] == batch_size and shape[1] == m:
        if w.dim() > 2:
            w = w.flatten(2).mean(dim=2)  # [B, M]
        return FusionWeights("modality_static", w, list(modalities), f"raw shape {shape}")
    return FusionWeights("unsupported", None, [], f"weights of shape {shape} are not drawn (not [B, T, ...] or [B, M])")


def fusion_weights(model: nn.Module, batch: Batch) -> FusionWeights:
    """Run ``model``'s encoders and its fusion's ``forward_with_weights`` on ``batch`` and interpret the weights.

    The model must expose ``modalities``, ``encode`` and ``fusion`` (as :class:`~mmfuse.models.MultimodalModel`
    does); the batch may carry more modalities than the model, which are ignored.

    Example:
        >>> from mmfuse.models import ModelConfig, build_model
        >>> model = build_model(ModelConfig({"a": 2, "b": 3}, out_dim=2, hidden=8, fusion="weighted")).eval()
        >>> ones = torch.ones(1, 4, dtype=torch.bool)
        >>> b = Batch({"a": torch.randn(1, 4, 2), "b": torch.randn(1, 4, 3)}, {"a": ones, "b": ones}, ones)
        >>> fusion_weights(model, b).kind
        'modality_time'
    """
    mods = list(getattr(model, "modalities", sorted(batch.inputs)))
    fusion = getattr(model, "fusion", None)
    if fusion is None or not hasattr(fusion, "forward_with_weights"):
        return FusionWeights("none", None, [], "the model has no fusion module with forward_with_weights")
    pad = batch.padding_mask
    masks = {m: batch.masks[m] & pad for m in mods}
    with torch.no_grad():
        encoded = model.encode({m: batch.inputs[m] for m in mods}, masks, pad)  # type: ignore[operator]
        _, raw = fusion.forward_with_weights(encoded, masks)
    return interpret_weights(raw, pad.shape[0], pad.shape[1], mods)


@dataclass
class InspectionConfig:
    """Settings of the fusion-weight inspection.

    Attributes:
        inspect_samples: How many sequences (the longest of the split) have their fusion weights plotted.
    """

    inspect_samples: int = 2

    def __post_init__(self) -> None:
        check_count(self, "inspect_samples", 0)


@dataclass
class _Weights:
    record: dict[str, Any]  # the row of inspection.csv
    means: list[float] | None  # mean weight per modality over real steps (when there is one per modality)
    panels: list[dict[str, Any]]  # what weights_figure draws (empty: nothing to draw)


@register_analysis("inspection")
class InspectionAnalysis(Analysis[InspectionConfig, _Weights | None]):
    """The weights each fusion reports (attention, gates, modality weights), read by shape and plotted."""

    title = "Fusion weights"
    order = 70
    config_type = InspectionConfig

    def run(self, ctx: AnalysisContext, model: LoadedModel) -> _Weights | None:
        """The weights of the fusion's single-model seed on the whole split (None for its other seeds)."""
        if model is not ctx.single(model.name):
            return None
        test = ctx.reference
        whole = test.whole
        try:
            fw = fusion_weights(model.model, whole.to(ctx.device))
        except Exception as exc:
            ctx.note(f"inspection of {model.name}: weights unavailable ({type(exc).__name__}: {exc})")
            return None
        if fw.values is not None:
            fw = dataclasses.replace(fw, values=fw.values.cpu())
        record: dict[str, Any] = {"fusion": model.name, "kind": fw.kind, "note": fw.note}
        means = None
        if fw.values is not None and fw.kind in ("modality_time", "modality_static"):
            # [B, T, M] over real steps, or [B, M]
            values = fw.values[whole.padding_mask] if fw.kind == "modality_time" else fw.values
            means = values.mean(0).tolist()  # [M]
            record.update({f"mean_weight_{m}": v for m, v in zip(fw.labels, means, strict=True)})
        panels = []
        if fw.values is not None:
            for i in np.argsort(-test.lengths, kind="stable")[: self.config.inspect_samples].tolist():
                length = int(test.lengths[i])
                vals = fw.values[i, :length].numpy() if fw.kind != "modality_static" else fw.values[i].numpy()
                sample = whole.ids[i] if i < len(whole.ids) else i
                panels.append(
                    {"title": f"sample {sample} ({length} steps)", "kind": fw.kind, "values": vals, "labels": fw.labels}
                )
        return _Weights(record, means, panels)

    def summarize(self, ctx: AnalysisContext, results: Sequence[tuple[LoadedModel, _Weights | None]]) -> Summary:
        """``inspection.csv``, one ``inspection_<fusion>.png`` per fusion with weights, and the mean weights."""
        modalities = ctx.reference.modalities
        n_shown = min(self.config.inspect_samples, len(ctx.reference.lengths))
        sec = Section(
            self.title,
            [
                "The weights each fusion reports from forward_with_weights (attention, gates or modality weights), "
                f"read by their shape, for the {n_shown} longest test sequences (seed "
                f"{ctx.settings.embedding_seed}). The table gives each modality's mean weight over all test steps "
                "where the fusion has per-modality weights.",
            ],
        )
        rows, figures, mean_rows = [], {}, []
        for m, w in results:
            if w is None:
                continue
            rows.append(w.record)
            if w.means is not None and len(w.means) == len(modalities):
                mean_rows.append([m.name, *[fmt(v) for v in w.means]])
            if w.panels:
                fname = f"inspection_{file_stem(m.name)}.png"
                kind = str(w.record["kind"]).replace("_", " ")
                figures[fname] = weights_figure(w.panels, f"{m.name}: fusion weights ({kind})")
                sec.figure(fname, f"Fusion weights of {m.name}")
        no_weights = [str(r["fusion"]) for r in rows if r["kind"] in ("none", "unsupported")]
        if no_weights:
            sec.notes.append(
                "No weights drawn for: " + ", ".join(no_weights) + " (they return none, or an unsupported shape)."
            )
        if mean_rows:
            sec.table("Mean weight per modality over all test steps.", ["fusion", *modalities], mean_rows)
        return Summary(sec, {"inspection.csv": rows}, figures)


def weights_figure(panels: Sequence[dict[str, Any]], title: str) -> Figure:
    """Fusion weights of chosen samples: one panel per sample.

    Each panel: ``{"title", "kind", "values" (ndarray), "labels"}``.
    """
    n = max(len(panels), 1)
    fig = Figure(figsize=(5.2 * min(n, 2) + 1.2, 3.0 * math.ceil(n / 2) + 0.6))
    for k, panel in enumerate(panels):
        ax = fig.add_subplot(math.ceil(n / 2), min(n, 2), k + 1)
        style_axes(ax, labelsize=8)
        _draw_weights(fig, ax, np.asarray(panel["values"]), panel["kind"], list(panel["labels"]))
        ax.set_title(mpl_text(panel["title"], 60), fontsize=9)
    fig.suptitle(mpl_text(title, 120), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def _draw_weights(fig: Figure, ax: Any, vals: np.ndarray, kind: str, labels: list[str]) -> None:
    if kind == "modality_time":
        steps = np.arange(vals.shape[0])
        for i, label in enumerate(labels):
            ax.plot(
                steps, vals[:, i], color=colour(i), linewidth=1.4, marker="o", markersize=2.5, label=mpl_text(label)
            )
        ax.set_xlabel("time step", fontsize=8)
        ax.set_ylabel("weight", fontsize=8)
        ax.legend(
            fontsize=7, frameon=False, title="modality", title_fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5)
        )
    elif kind == "channel_time":
        im = ax.imshow(vals.T, aspect="auto", cmap="viridis", origin="lower")
        ax.set_xlabel("time step", fontsize=8)
        ax.set_ylabel("weight channel", fontsize=8)
        cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
        cb.set_label("weight", fontsize=7)
    else:  # modality_static
        ax.bar(range(len(labels)), vals, color=[colour(i) for i in range(len(labels))])
        ax.set_xticks(range(len(labels)), [mpl_text(x, 16) for x in labels], fontsize=8)
        ax.set_xlabel("modality", fontsize=8)
        ax.set_ylabel("weight", fontsize=8)
