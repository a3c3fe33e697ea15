"""``analyze_run``: every analysis over every saved model of a ``mmfuse compare`` run directory.

For each run ``models/<fusion>-seed<k>/`` the saved model and normalisers are loaded, the data set's splits are
read once per distinct normaliser and collated once, and every perturbation of one analysis is stacked along the
batch axis so a model runs one forward pass per kind of analysis, not one per perturbation. Results land in
``RUN_DIR/analysis/`` (CSV and JSON tables, PNG figures, ``sections.json`` for the report, ``summary.md``), in
``RUN_DIR/final_results.csv`` (one row per run with every metric), and the run's ``summary.md`` and
``report.html`` are rewritten with the analysis in them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from mmfuse._io import atomic_write_csv, atomic_write_json, atomic_write_text
from mmfuse.data import make_loader, open_or_load_dataset
from mmfuse.errors import DataError
from mmfuse.evaluate.analysis import _plots
from mmfuse.evaluate.analysis.ablation import modality_subsets, remove_context, subset_label
from mmfuse.evaluate.analysis.calibration import (
    AffineCalibrator,
    TemperatureScaler,
    calibration_errors,
    paired_improvement_test,
    reliability_curve,
)
from mmfuse.evaluate.analysis.complexity import measure_latency, peak_forward_memory
from mmfuse.evaluate.analysis.failures import error_agreement, error_patterns, worst_rows
from mmfuse.evaluate.analysis.inspection import fusion_weights
from mmfuse.evaluate.analysis.robustness import (
    add_noise,
    drop_steps,
    effective_robustness,
    feature_std,
    relative_robustness,
)
from mmfuse.evaluate.analysis.separability import EMBEDDING_METHODS, embed_2d, separability_score, subsample
from mmfuse.evaluate.analysis.uncertainty import (
    classification_uncertainty,
    enable_mc_dropout,
    regression_uncertainty,
    risk_coverage,
)
from mmfuse.evaluate.figures import md_escape
from mmfuse.models import load_model, parameter_report
from mmfuse.preprocess import ModalityNormalizers
from mmfuse.train import select_rows
from mmfuse.types import Batch

__all__ = ["ANALYSES", "AnalysisConfig", "AnalysisResult", "analyze_run"]

logger = logging.getLogger(__name__)

ANALYSES = (
    "ablation",
    "robustness",
    "calibration",
    "uncertainty",
    "separability",
    "failures",
    "inspection",
    "complexity",
)
"""Every analysis :func:`analyze_run` can run, in report order."""

_ANALYSIS_DIR = "analysis"


@dataclass
class AnalysisConfig:
    """What :func:`analyze_run` computes, and how.

    Attributes:
        analyses: Which analyses to run (names in :data:`ANALYSES`).
        split: The split analysed (the test split of the compare run).
        calibration_split: The split calibrators are fitted on (never the analysed one).
        dataset: The data set (registered name or native folder); default: the one named in ``run.json``.
        data_dir: Folder of local data sets (else ``$MMFUSE_DATA_DIR``).
        runs: Only these run names (fusions / baselines) of the run directory; None = every one.
        noise_levels: Gaussian noise levels relative to each feature's standard deviation; start with 0.
        missing_rates: Probabilities of marking a present step missing; start with 0.
        ece_bins: Bins of the (equal-width and adaptive) calibration errors.
        affine_l2: L2 strength of the regression affine calibrator (towards the identity).
        alpha: Significance level of the paired test that decides whether the affine calibrator is kept.
        mc_passes: MC-dropout passes.
        tta_passes: Test-time-augmentation passes with feature noise.
        tta_noise: Noise level (relative to feature std) of those passes.
        tta_shifts: Time shifts (steps) added as augmentation passes, for sample-level labels only (a shift
            would move step-level features off their labels).
        embedding_methods: 2-D maps drawn of the fused representation (``pca``, ``tsne``, ``umap``).
        encoder_embedding_methods: 2-D maps drawn of each unimodal encoder's representation (PCA by default:
            t-SNE and UMAP cost about a second per map, and a 16-fusion run has 64 encoder representations; pass
            ``EMBEDDING_METHODS`` for all three).
        embedding_points: Rows subsampled for the maps and silhouette scores.
        embedding_seed: The seed whose models are used for single-model analyses (maps, inspection, complexity,
            worst cases).
        worst_cases: How many worst rows are listed per run.
        top_patterns: How many error patterns are listed per run.
        inspect_samples: How many sequences (the longest of the split) have their fusion weights plotted.
        latency_repeats: Timed forward passes per run.
        seed: Seed of every random perturbation (the same draws for every model, so they compare fairly).
        batch_size: Sequences per collated batch of the split.
        max_stacked_sequences: Upper bound on sequences stacked into one forward pass.
        device: Where the models run.
        num_threads: Torch intra-op threads during the analysis (restored after); None leaves it unchanged.
        write_report: Rewrite ``summary.md`` and ``report.html`` with the analysis sections.

    Example:
        >>> cfg = AnalysisConfig(analyses=("ablation", "calibration"), mc_passes=5)
        >>> cfg.split, cfg.mc_passes
        ('test', 5)
    """

    analyses: tuple[str, ...] = ANALYSES
    split: str = "test"
    calibration_split: str = "val"
    dataset: str | None = None
    data_dir: str | None = None
    runs: tuple[str, ...] | None = None
    noise_levels: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    missing_rates: tuple[float, ...] = (0.0, 0.3, 0.6, 0.9)
    ece_bins: int = 15
    affine_l2: float = 0.1
    alpha: float = 0.05
    mc_passes: int = 10
    tta_passes: int = 4
    tta_noise: float = 0.1
    tta_shifts: tuple[int, ...] = (-1, 1)
    embedding_methods: tuple[str, ...] = EMBEDDING_METHODS
    encoder_embedding_methods: tuple[str, ...] = ("pca",)
    embedding_points: int = 300
    embedding_seed: int = 0
    worst_cases: int = 10
    top_patterns: int = 10
    inspect_samples: int = 2
    latency_repeats: int = 20
    seed: int = 0
    batch_size: int = 256
    max_stacked_sequences: int = 4096
    device: str = "cpu"
    num_threads: int | None = 1
    write_report: bool = True

    def __post_init__(self) -> None:
        self.analyses = tuple(self.analyses)
        unknown = [a for a in self.analyses if a not in ANALYSES]
        if unknown:
            raise ValueError(f"Unknown analysis {unknown[0]!r} in AnalysisConfig. Valid: {', '.join(ANALYSES)}.")
        for name in ("noise_levels", "missing_rates"):
            levels = tuple(float(v) for v in getattr(self, name))
            if len(levels) < 2 or levels[0] != 0.0 or any(b <= a for a, b in itertools.pairwise(levels)):
                raise ValueError(
                    f"The {name!r} parameter of AnalysisConfig must be increasing, start at 0 and have at least two "
                    f"values. Got {list(levels)}."
                )
            setattr(self, name, levels)
        if any(r > 1.0 for r in self.missing_rates):
            raise ValueError(f"The 'missing_rates' of AnalysisConfig must be <= 1. Got {list(self.missing_rates)}.")
        self.embedding_methods = tuple(self.embedding_methods)
        self.encoder_embedding_methods = tuple(self.encoder_embedding_methods)
        unknown_methods = [
            m for m in (*self.embedding_methods, *self.encoder_embedding_methods) if m not in EMBEDDING_METHODS
        ]
        if unknown_methods:
            raise ValueError(
                f"Unknown embedding method {unknown_methods[0]!r} in AnalysisConfig. "
                f"Valid: {', '.join(EMBEDDING_METHODS)}."
            )
        for name in (
            "ece_bins",
            "mc_passes",
            "embedding_points",
            "latency_repeats",
            "batch_size",
            "max_stacked_sequences",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"The {name!r} parameter of AnalysisConfig must be a positive integer. Got {value!r}.")
        for name in ("tta_passes", "worst_cases", "top_patterns", "inspect_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"The {name!r} parameter of AnalysisConfig must be an integer >= 0. Got {value!r}.")
        if self.split == self.calibration_split:
            raise ValueError(
                f"The 'calibration_split' of AnalysisConfig must differ from the analysed split {self.split!r}: "
                "calibrators are never fitted on the data they are judged on."
            )
        if self.runs is not None:
            self.runs = tuple(self.runs)


@dataclass
class AnalysisResult:
    """What :func:`analyze_run` returns.

    Attributes:
        run_dir: The compare run directory.
        out_dir: ``run_dir/analysis``.
        final_results: One dict per run (fusion x seed) with every metric (the rows of ``final_results.csv``).
        files: Every file written.
        seconds: Wall time per analysis (and ``"total"``).
        notes: What was skipped, and why.
    """

    run_dir: Path
    out_dir: Path
    final_results: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Split:
    """One split, normalised and collated, with its labelled rows described once."""

    batches: list[Batch]
    row_index: list[tuple[Tensor, Tensor | None]]  # per batch: (sample [S_b], step [S_b] or None) of labelled rows
    modalities: list[str]
    targets: np.ndarray  # [S] (class index) or [S] / [S, K] (regression)
    row_ids: list[str]  # sequence id of each labelled row
    row_steps: np.ndarray | None  # [S] step of each row (step labels)
    availability: list[str]  # per row: the modalities present ("text+video")
    std: dict[str, Tensor]  # per modality [D_m], over present real steps (normalised)
    lengths: np.ndarray  # [n_sequences]


@dataclass
class _Loaded:
    name: str
    seed: int
    directory: Path
    model: nn.Module
    data_key: str


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "run"


def _read_meta(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise DataError(
            f"The compare run directory '{run_dir}' has no run.json: pass a directory `mmfuse compare` wrote."
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"The run description '{path}' is not valid JSON: {exc}.") from exc
    if not isinstance(meta, dict):
        raise DataError(f"The run description '{path}' must hold a JSON object.")
    return meta


def _read_runs(run_dir: Path, only: Sequence[str] | None) -> list[tuple[str, int]]:
    path = run_dir / "results.csv"
    if not path.is_file():
        raise DataError(f"The results table '{path}' does not exist: the compare run recorded no finished run.")
    try:
        frame = pd.read_csv(path, converters={"fusion": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"The results table '{path}' could not be read: {exc}.") from exc
    if "fusion" not in frame.columns or "seed" not in frame.columns or frame.empty:
        raise DataError(f"The results table '{path}' must have rows with the columns 'fusion' and 'seed'.")
    runs = [(str(f), int(s)) for f, s in zip(frame["fusion"], frame["seed"], strict=True)]
    if only is not None:
        known = {f for f, _ in runs}
        missing = [r for r in only if r not in known]
        if missing:
            raise ValueError(
                f"Unknown run {missing[0]!r} for AnalysisConfig.runs. This run directory has: {sorted(known)}."
            )
        runs = [r for r in runs if r[0] in set(only)]
    return runs


def _open_data(meta: Mapping[str, Any], config: AnalysisConfig) -> Any:
    name = config.dataset
    if name is None:
        ds = meta.get("dataset")
        recorded = ds.get("path") if isinstance(ds, dict) else None  # a native folder, when compare records it
        name = (
            recorded
            if recorded and Path(str(recorded)).is_dir()
            else (ds.get("name") if isinstance(ds, dict) else None)
        )
    if not name:
        raise DataError("run.json names no data set; pass AnalysisConfig(dataset=NAME_OR_FOLDER).")
    try:
        return open_or_load_dataset(name, data_dir=config.data_dir)
    except (ValueError, FileNotFoundError) as exc:
        raise DataError(
            f"Cannot open the data set {name!r} of this run ({exc}). Pass AnalysisConfig(dataset=..., data_dir=...) "
            "or set MMFUSE_DATA_DIR."
        ) from exc


def _normalizer_key(directory: Path) -> str:
    digest = hashlib.sha256()
    for fname in ("normalizers.json", "normalizers.safetensors"):
        path = directory / fname
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _collate_split(dataset: Any, split: str, normalizers: Any, batch_size: int, task: Any, level: Any) -> _Split:
    view = dataset.split(split).with_transform(normalizers.transform_record)
    batches = list(make_loader(view, batch_size=batch_size, shuffle=False))
    modalities = sorted(batches[0].inputs)
    targets: list[np.ndarray] = []
    ids: list[str] = []
    steps: list[np.ndarray] = []
    avail: list[str] = []
    row_index: list[tuple[Tensor, Tensor | None]] = []
    for b in batches:
        if b.targets is not None and b.targets.is_floating_point():
            probe = torch.zeros_like(b.targets)  # regression: outputs shaped like the targets
        else:
            probe = torch.zeros(*b.padding_mask.shape, 2) if level == "step" else torch.zeros(b.batch_size, 2)
        rows = select_rows(probe, b, task, level)
        row_index.append((rows.sample, rows.step))
        sample = rows.sample.numpy()
        targets.append(rows.targets.numpy() if rows.targets is not None else np.zeros(len(sample)))
        ids.extend(b.ids[i] for i in sample.tolist())
        present = []
        for m in modalities:
            if rows.step is not None:
                present.append(b.masks[m][rows.sample, rows.step].numpy())
            else:
                frac = (b.masks[m] & b.padding_mask).float().sum(1) / b.padding_mask.float().sum(1).clamp(min=1)
                present.append(frac[rows.sample].numpy() > 0)
        pres = np.stack(present, axis=1)  # [S, M]
        avail.extend("+".join(m for m, p in zip(modalities, row, strict=True) if p) or "none" for row in pres)
        if rows.step is not None:
            steps.append(rows.step.numpy())
    merged = _concat_batches(batches)
    std = {m: feature_std(merged, m) for m in modalities}
    return _Split(
        batches=batches,
        row_index=row_index,
        modalities=modalities,
        targets=np.concatenate(targets),
        row_ids=ids,
        row_steps=np.concatenate(steps) if steps else None,
        availability=avail,
        std=std,
        lengths=np.concatenate([b.padding_mask.sum(1).numpy() for b in batches]),
    )


def _concat_batches(batches: Sequence[Batch]) -> Batch:
    """Stack batches along B, padding every one to the longest T."""
    t = max(b.num_steps for b in batches)

    def pad(x: Tensor, value: Any = 0) -> Tensor:
        extra = t - x.shape[1]
        if extra == 0:
            return x
        shape = list(x.shape)
        shape[1] = extra
        return torch.cat([x, torch.full(shape, value, dtype=x.dtype)], dim=1)

    first = batches[0]
    targets = None
    if first.targets is not None:
        step = first.targets.dim() >= 2 and first.targets.shape[1] == first.num_steps and first.num_steps > 1
        if step or any(b.targets is not None and b.targets.dim() >= 2 for b in batches if b.num_steps != t):
            fill = -100 if not first.targets.is_floating_point() else 0.0
            targets = torch.cat([pad(b.targets, fill) for b in batches])  # type: ignore[arg-type]
        else:
            targets = torch.cat([b.targets for b in batches])  # type: ignore[misc]
    return Batch(
        inputs={m: torch.cat([pad(b.inputs[m]) for b in batches]) for m in first.inputs},
        masks={m: torch.cat([pad(b.masks[m], False) for b in batches]) for m in first.masks},
        padding_mask=torch.cat([pad(b.padding_mask, False) for b in batches]),
        targets=targets,
        ids=[i for b in batches for i in b.ids],
        groups=[g for b in batches for g in b.groups],
        context={k: torch.cat([b.context[k] for b in batches]) for k in first.context},
    )


# --------------------------------------------------------------------------------------------------------------
# Running models
# --------------------------------------------------------------------------------------------------------------


def _model_modalities(model: nn.Module, batch: Batch) -> list[str]:
    mods = getattr(model, "modalities", None)
    return list(mods) if mods else sorted(batch.inputs)


def _restrict(batch: Batch, modalities: Sequence[str]) -> Batch:
    return Batch(
        {m: batch.inputs[m] for m in modalities},
        {m: batch.masks[m] for m in modalities},
        batch.padding_mask,
        batch.targets,
        batch.ids,
        batch.groups,
        batch.context,
    )


def _task_level(model: nn.Module, meta: Mapping[str, Any]) -> tuple[str, str]:
    cfg = getattr(model, "config", None)
    task = getattr(getattr(cfg, "task", None), "value", getattr(cfg, "task", None))
    level = getattr(getattr(cfg, "label_level", None), "value", getattr(cfg, "label_level", None))
    ds = meta.get("dataset", {}) if isinstance(meta.get("dataset"), dict) else {}
    declared = ds.get("task", {}) if isinstance(ds.get("task"), dict) else {}
    return str(task or declared.get("type", "classification")), str(level or declared.get("level", "sample"))


def _take(outputs: Tensor, index: tuple[Tensor, Tensor | None]) -> Tensor:
    """Labelled rows of ``outputs`` ``[B, ...]`` / ``[B, T, ...]`` -> ``[S, ...]`` (pooled outputs repeat per step)."""
    sample, step = index
    if step is None:
        return outputs[sample]
    if outputs.dim() == 2:  # [B, C] for step labels: the same output for every step
        return outputs[sample]
    return outputs[sample, step]


def _stacked_rows(
    model: nn.Module,
    batch: Batch,
    variants: Sequence[Batch],
    task: str,
    level: str,
    max_sequences: int,
    index: tuple[Tensor, Tensor | None] | None = None,
) -> list[Tensor]:
    """Labelled-row outputs ``[S, C]`` of ``model`` on each variant of ``batch`` (same B, T), stacked per forward."""
    mods = _model_modalities(model, batch)
    per = max(1, max_sequences // max(batch.batch_size, 1))
    out: list[Tensor] = []
    with torch.no_grad():
        for start in range(0, len(variants), per):
            chunk = [_restrict(v, mods) for v in variants[start : start + per]]
            shared = set.intersection(*(set(v.context) for v in chunk))  # categorical context every variant has
            stacked = Batch(
                {m: torch.cat([v.inputs[m] for v in chunk]) for m in mods},  # [k*B, T, D_m]
                {m: torch.cat([v.masks[m] for v in chunk]) for m in mods},  # [k*B, T]
                torch.cat([v.padding_mask for v in chunk]),
                None,
                context={k: torch.cat([v.context[k] for v in chunk]) for k in sorted(shared)},  # [k*B]
            )
            outputs = model(stacked)  # [k*B, C] or [k*B, T, C]
            for k, piece in enumerate(outputs.split(batch.batch_size)):
                if index is not None:
                    out.append(_take(piece, index).float())
                else:
                    out.append(select_rows(piece, variants[start + k], task, level).outputs.float())
    return out


def _variant_rows(
    model: nn.Module,
    split: _Split,
    make: Callable[[Batch, torch.Generator], list[Batch]],
    task: str,
    level: str,
    config: AnalysisConfig,
) -> list[np.ndarray]:
    """Per variant, the labelled-row outputs over the whole split (batches concatenated)."""
    gen = torch.Generator().manual_seed(config.seed)
    parts: list[list[Tensor]] = []
    for batch, index in zip(split.batches, split.row_index, strict=True):
        outs = _stacked_rows(model, batch, make(batch, gen), task, level, config.max_stacked_sequences, index)
        parts.append(outs)
    return [torch.cat([p[k] for p in parts]).numpy() for k in range(len(parts[0]))]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _score(task: str, outputs: np.ndarray, targets: np.ndarray) -> float:
    if outputs.shape[0] == 0:
        return math.nan
    if task == "classification":
        return float((outputs.argmax(axis=-1) == targets).mean())
    return float(np.abs(outputs.reshape(targets.shape) - targets).mean())


def _row_loss(task: str, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    if task == "classification":
        p = _softmax(outputs.astype(np.float64))
        return -np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, 1.0))
    diff = np.abs(outputs.reshape(targets.shape) - targets)
    return diff if diff.ndim == 1 else diff.mean(axis=-1)


def _shift(batch: Batch, s: int) -> Batch:
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


def _representations(model: nn.Module, split: _Split, task: str, level: str) -> dict[str, np.ndarray]:
    """Labelled-row representations after each unimodal encoder and after the fusion (masked means for samples)."""
    reps: dict[str, list[Tensor]] = {}
    for batch, index in zip(split.batches, split.row_index, strict=True):
        mods = _model_modalities(model, batch)
        pad = batch.padding_mask
        masks = {m: batch.masks[m] & pad for m in mods}
        with torch.no_grad():
            encoded = model.encode({m: batch.inputs[m] for m in mods}, masks, pad)  # type: ignore[operator]
            fused = model.fuse(encoded, masks)  # type: ignore[operator]
        named = {f"encoder: {m}": (encoded[m], masks[m]) for m in mods}
        named["after fusion"] = (fused, pad)
        for name, (h, present) in named.items():
            if h.dim() == 3 and level == "sample":
                w = present.float().unsqueeze(-1)  # [B, T, 1]
                h = (h * w).sum(1) / w.sum(1).clamp(min=1.0)  # [B, H]
            reps.setdefault(name, []).append(_take(h, index).float())
    return {k: torch.cat(v).numpy() for k, v in reps.items()}


# --------------------------------------------------------------------------------------------------------------
# The per-run analyses
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _RunOutput:
    name: str
    seed: int
    clean: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)
    ablation: dict[str, float] = field(default_factory=dict)
    curves: list[dict[str, Any]] = field(default_factory=list)
    calib: dict[str, Any] = field(default_factory=dict)
    uncert: dict[str, Any] = field(default_factory=dict)


def _analyse_one(
    loaded: _Loaded,
    test: _Split,
    val: _Split | None,
    task: str,
    level: str,
    config: AnalysisConfig,
    timings: dict[str, float],
    notes: list[str],
) -> _RunOutput:
    model = loaded.model
    y = test.targets
    want = set(config.analyses)
    clean = _variant_rows(model, test, lambda b, g: [b], task, level, config)[0]
    out = _RunOutput(loaded.name, loaded.seed, clean)
    main = _score(task, clean, y)
    out.metrics["clean"] = main

    if "ablation" in want:
        t0 = time.perf_counter()
        subsets = modality_subsets(test.modalities)
        outs = _variant_rows(
            model, test, lambda b, g: [b.select_modalities(list(s)) for s in subsets], task, level, config
        )
        for s, o in zip(subsets, outs, strict=True):
            out.ablation[subset_label(s)] = _score(task, o, y)
        if level == "step" and test.lengths.max() > 1:
            no_ctx = []
            for batch in test.batches:
                no_ctx.extend(
                    _stacked_rows(
                        model, remove_context(batch), [remove_context(batch)], task, level, config.max_stacked_sequences
                    )
                )
            out.ablation["no context"] = _score(task, torch.cat(no_ctx).numpy(), y)
        if getattr(getattr(model, "config", None), "context_sizes", None) and any(b.context for b in test.batches):
            # categorical context (domain, interaction, ...) off: the model sees "unknown" for every context
            off = _variant_rows(model, test, lambda b, g: [dataclasses.replace(b, context={})], task, level, config)[0]
            out.ablation["context off"] = _score(task, off, y)
        timings["ablation"] += time.perf_counter() - t0

    if "robustness" in want:
        t0 = time.perf_counter()
        targets = [*test.modalities, "all"]
        specs: list[tuple[str, str, float]] = []
        for kind, levels in (("noise", config.noise_levels), ("missing", config.missing_rates)):
            specs += [(kind, tgt, lv) for tgt in targets for lv in levels[1:]]

        def make(b: Batch, g: torch.Generator) -> list[Batch]:
            res = []
            for kind, tgt, lv in specs:
                mods = list(test.modalities) if tgt == "all" else [tgt]
                res.append(add_noise(b, mods, lv, test.std, g) if kind == "noise" else drop_steps(b, mods, lv, g))
            return res

        outs = _variant_rows(model, test, make, task, level, config)
        for (kind, tgt, lv), o in zip(specs, outs, strict=True):
            out.curves.append({"kind": kind, "target": tgt, "level": lv, "metric": _score(task, o, y)})
        for kind in ("noise", "missing"):
            for tgt in targets:
                out.curves.append({"kind": kind, "target": tgt, "level": 0.0, "metric": main})
        timings["robustness"] += time.perf_counter() - t0

    if "calibration" in want and val is not None:
        t0 = time.perf_counter()
        val_out = _variant_rows(model, val, lambda b, g: [b], task, level, config)[0]
        if task == "classification":
            scaler = TemperatureScaler().fit(val_out, val.targets)
            before = _softmax(clean.astype(np.float64))
            after = scaler.predict_proba(clean)
            out.calib = {
                "temperature": scaler.temperature_,
                "before": calibration_errors(before, y, config.ece_bins),
                "after": calibration_errors(after, y, config.ece_bins),
                "accuracy_before": float((before.argmax(1) == y).mean()),
                "accuracy_after": float((after.argmax(1) == y).mean()),
                "probs_before": before,
                "probs_after": after,
            }
        else:
            cal = AffineCalibrator(l2=config.affine_l2).fit(val_out.reshape(val.targets.shape), val.targets)
            fixed = cal.transform(clean.reshape(y.shape))
            out.calib = {
                "scale": cal.scale_.tolist(),
                "shift": cal.shift_.tolist(),
                "mae_before": float(np.abs(clean.reshape(y.shape) - y).mean()),
                "mae_after": float(np.abs(fixed - y).mean()),
            }
        timings["calibration"] += time.perf_counter() - t0

    if "uncertainty" in want:
        t0 = time.perf_counter()
        with enable_mc_dropout(model) as n_dropout:
            mc = _variant_rows(model, test, lambda b, g: [b] * config.mc_passes, task, level, config)
        if n_dropout == 0:
            notes.append(f"{loaded.name}: the model has no active dropout layer; MC-dropout passes are identical.")

        def tta(b: Batch, g: torch.Generator) -> list[Batch]:
            res = [add_noise(b, list(test.modalities), config.tta_noise, test.std, g) for _ in range(config.tta_passes)]
            if level == "sample":
                res += [_shift(b, s) for s in config.tta_shifts]
            return res or [b]

        aug = _variant_rows(model, test, tta, task, level, config)
        for name, passes in (("mc_dropout", mc), ("tta", aug)):
            if task == "classification":
                u = classification_uncertainty(np.stack([_softmax(p.astype(np.float64)) for p in passes]))
                pred = u["mean_probs"].argmax(1)
                err = (pred != y).astype(np.float64)
                rc = risk_coverage(-u["entropy"], err)
                out.uncert[name] = {
                    "metric": float(1 - err.mean()),
                    "mean_entropy": float(u["entropy"].mean()),
                    "mean_mutual_information": float(u["mutual_information"].mean()),
                    "aurc": rc["aurc"],
                    "rc": rc,
                }
            else:
                u = regression_uncertainty(np.stack([p.reshape(y.shape) for p in passes]))
                err = np.abs(u["mean"] - y)
                err = err if err.ndim == 1 else err.mean(axis=-1)
                rc = risk_coverage(-u["variance"], err)
                out.uncert[name] = {
                    "metric": float(err.mean()),
                    "mean_variance": float(u["variance"].mean()),
                    "aurc": rc["aurc"],
                    "rc": rc,
                }
        if task == "classification":
            probs = _softmax(clean.astype(np.float64))
            rc = risk_coverage(probs.max(1), (probs.argmax(1) != y).astype(np.float64))
            out.uncert["softmax"] = {"aurc": rc["aurc"], "rc": rc}
        timings["uncertainty"] += time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], files: list[Path]) -> Path:
    files.append(atomic_write_csv(path, rows, nan=""))
    return path


def _n(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


class _Report:
    """Collects report sections (JSON for report.html) and Markdown for summary.md."""

    def __init__(self) -> None:
        self.sections: list[dict[str, Any]] = []
        self.md: list[str] = []

    def section(self, sid: str, title: str, paragraphs: Sequence[str]) -> dict[str, Any]:
        sec = {"id": sid, "title": title, "paragraphs": list(paragraphs), "figures": [], "tables": [], "notes": []}
        self.sections.append(sec)
        self.md += [f"### {title}", "", *[p + "\n" for p in paragraphs]]
        return sec

    def table(self, sec: dict[str, Any], caption: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[str(c) for c in r] for r in rows]
        numeric = [all(_is_num(r[i]) for r in cells) and bool(cells) for i in range(len(header))]
        sec["tables"].append({"caption": caption, "header": list(header), "rows": cells, "numeric": numeric})
        self.md += [
            caption,
            "",
            "| " + " | ".join(_md(h) for h in header) + " |",
            "|" + "|".join("---:" if n else ":---" for n in numeric) + "|",
        ]
        self.md += ["| " + " | ".join(_md(c) for c in r) + " |" for r in cells] + [""]

    @staticmethod
    def figure(sec: dict[str, Any], file: str, alt: str, caption: str = "") -> None:
        sec["figures"].append({"file": file, "alt": alt, "caption": caption})


def _is_num(text: str) -> bool:
    try:
        float(text.replace("–", "nan").replace("±", "").split()[0])
        return True
    except (ValueError, IndexError):
        return False


_md = md_escape


def _calibration_warnings(means: pd.DataFrame) -> list[str]:
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


# --------------------------------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------------------------------


def analyze_run(run_dir: str | Path, *, config: AnalysisConfig | None = None) -> AnalysisResult:
    """Run every analysis of ``config`` over the saved models of a ``mmfuse compare`` run directory.

    Writes ``run_dir/analysis/`` (tables as CSV/JSON, figures as PNG, ``sections.json``, ``summary.md``,
    ``result.json``), ``run_dir/final_results.csv`` and, with ``config.write_report``, rewrites
    ``run_dir/summary.md`` and ``run_dir/report.html`` with the analysis added. Models get only the
    modalities their config lists, so unimodal baselines and decision-level fusions are handled like any other.

    Args:
        run_dir: The directory ``mmfuse compare`` wrote.
        config: What to compute; defaults to :class:`AnalysisConfig` ().

    Returns:
        The per-run metrics, the files written, the time per analysis and notes on anything skipped.

    Raises:
        DataError: the run directory lacks ``run.json`` / ``results.csv`` or a saved model, or the data set
            cannot be opened.
        ValueError: a bad configuration (unknown analysis, run name or method).

    Example:
        >>> from mmfuse.evaluate.analysis import AnalysisConfig, analyze_run
        >>> result = analyze_run("runs/mosi-utterance", config=AnalysisConfig())  # doctest: +SKIP
        >>> result.seconds["total"] < 300  # doctest: +SKIP
        True
    """
    config = config or AnalysisConfig()
    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        return _analyze(Path(run_dir), config)
    finally:
        torch.set_num_threads(previous_threads)


def _analyze(run_dir: Path, config: AnalysisConfig) -> AnalysisResult:
    t_start = time.perf_counter()
    if not run_dir.is_dir():
        raise DataError(f"The compare run directory '{run_dir}' does not exist or is not a directory.")
    meta = _read_meta(run_dir)
    runs = _read_runs(run_dir, config.runs)
    out_dir = run_dir / _ANALYSIS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    notes: list[str] = []
    rows: list[dict[str, Any]]
    timings = dict.fromkeys(("loading", *ANALYSES), 0.0)
    want = set(config.analyses)

    warmup = None
    if "separability" in want and "umap" in (*config.embedding_methods, *config.encoder_embedding_methods):
        # umap-learn compiles its numba kernels on first use (tens of seconds); do it on the other core while the
        # models run, so it is ready when the maps are drawn.
        warmup = threading.Thread(target=_warm_up_umap, name="mmfuse-umap-warmup", daemon=True)
        warmup.start()
    t0 = time.perf_counter()
    dataset = _open_data(meta, config)
    if config.split not in dataset.split_names:
        raise DataError(f"The data set has no split {config.split!r}; its splits: {dataset.split_names}.")
    has_val = config.calibration_split in dataset.split_names
    if not has_val and "calibration" in want:
        notes.append(f"No {config.calibration_split!r} split: calibration skipped (it is never fitted on test).")
    class_names = list(getattr(dataset.task, "class_names", []) or [])
    loaded: list[_Loaded] = []
    for name, seed in runs:
        directory = run_dir / "models" / f"{name}-seed{seed}"
        if not (directory / "model.safetensors").is_file():
            raise DataError(f"The saved model of {name} seed {seed} is missing: '{directory}/model.safetensors'.")
        model = load_model(directory, map_location=config.device).eval()
        loaded.append(_Loaded(name, seed, directory, model, _normalizer_key(directory)))
    task, level = _task_level(loaded[0].model, meta)
    splits: dict[tuple[str, str], _Split] = {}

    def get_split(key: str, split: str, directory: Path) -> _Split:
        if (key, split) not in splits:
            normalizers = ModalityNormalizers.load(directory)
            splits[(key, split)] = _collate_split(dataset, split, normalizers, config.batch_size, task, level)
        return splits[(key, split)]

    timings["loading"] = time.perf_counter() - t0

    outputs: list[_RunOutput] = []
    for item in loaded:
        t0 = time.perf_counter()
        test = get_split(item.data_key, config.split, item.directory)
        val = (
            get_split(item.data_key, config.calibration_split, item.directory)
            if has_val and "calibration" in want
            else None
        )
        timings["loading"] += time.perf_counter() - t0
        outputs.append(_analyse_one(item, test, val, task, level, config, timings, notes))

    test0 = get_split(loaded[0].data_key, config.split, loaded[0].directory)
    names = list(dict.fromkeys(o.name for o in outputs))
    by_name: dict[str, list[_RunOutput]] = {n: [o for o in outputs if o.name == n] for n in names}
    single = {n: next((o for o in by_name[n] if o.seed == config.embedding_seed), by_name[n][0]) for n in names}
    single_model = {n: next(x for x in loaded if x.name == n and x.seed == single[n].seed) for n in names}
    higher = task == "classification"
    metric_label = "accuracy" if higher else "MAE"
    final = {
        (o.name, o.seed): {
            "fusion": o.name,
            "seed": o.seed,
            f"test_{'accuracy' if higher else 'mae'}": o.metrics["clean"],
        }
        for o in outputs
    }
    report = _Report()
    report.md += ["## Analysis", ""]

    # ---- ablation -------------------------------------------------------------------------------------------
    if "ablation" in want:
        t0 = time.perf_counter()
        cols = list(outputs[0].ablation)
        rows = [
            {"fusion": o.name, "seed": o.seed, "subset": c, metric_label: o.ablation[c]} for o in outputs for c in cols
        ]
        _write_csv(out_dir / "ablation.csv", rows, files)
        mat = np.array([[_mean([o.ablation[c] for o in by_name[n]]) for c in cols] for n in names])
        for o in outputs:
            for c in cols:
                final[(o.name, o.seed)][f"ablation_{c.replace(' ', '_')}"] = o.ablation[c]
        fig = _plots.ablation_matrix(
            names, cols, mat, f"test {metric_label}", f"Modality ablation: test {metric_label}, mean over seeds"
        )
        files.append(_plots.save_figure(fig, out_dir / "ablation.png"))
        full_label = subset_label(test0.modalities)
        single_cols = [c for c in cols if "+" not in c and c not in ("no context", "context off")]
        sign = 1.0 if higher else -1.0
        best_single = [
            single_cols[int(np.argmax(np.nan_to_num([sign * mat[i, cols.index(c)] for c in single_cols], nan=-np.inf)))]
            for i in range(len(names))
        ]
        dominant = pd.Series(best_single).value_counts()
        text = [
            f"Each model was tested with every non-empty subset of the {len(test0.modalities)} modalities "
            f"({len(modality_subsets(test0.modalities))} subsets): the modalities left out are marked missing at every "
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
            + f"The single modality that keeps the most {metric_label} is '{dominant.index[0]}' for "
            f"{int(dominant.iloc[0])} "
            f"of {len(names)} runs."
        ]
        sec = report.section("analysis-ablation", "Modality ablation", text)
        report.figure(
            sec,
            "ablation.png",
            "Modality ablation matrix",
            f"Rows: fusions; columns: modalities kept; cell: test {metric_label} (mean over seeds).",
        )
        report.table(
            sec,
            f"Test {metric_label} per kept subset (mean over seeds); full set = '{full_label}'.",
            ["fusion", *cols],
            [[n, *[_n(v) for v in mat[i]]] for i, n in enumerate(names)],
        )
        timings["ablation"] += time.perf_counter() - t0

    # ---- robustness -----------------------------------------------------------------------------------------
    if "robustness" in want:
        t0 = time.perf_counter()
        rows = [{"fusion": o.name, "seed": o.seed, **c} for o in outputs for c in o.curves]
        _write_csv(out_dir / "robustness_curves.csv", rows, files)
        frame = pd.DataFrame(rows)
        mean_curves = frame.groupby(["fusion", "kind", "target", "level"], sort=False)["metric"].mean()
        targets = [*test0.modalities, "all"]
        reference, ref_why = None, ""
        if "late" in names:
            reference, ref_why = "late", "the late-fusion runs of this directory"
        else:
            uni = [n for n in names if n.startswith("unimodal")]
            if uni:
                ref_score = {n: _mean([o.metrics["clean"] for o in by_name[n]]) for n in uni}
                reference = max(uni, key=lambda n: ref_score[n] if higher else -ref_score[n])
                ref_why = f"no late-fusion run here; the best unimodal baseline '{reference}'"
            else:
                ref_why = "neither a late-fusion run nor a unimodal baseline here: effective robustness not computed"
        summary_rows = []
        for kind, levels, xlabel in (
            ("noise", config.noise_levels, "noise level (× feature std)"),
            ("missing", config.missing_rates, "missing rate"),
        ):
            curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
            for n in names:
                curves[n] = {}
                for tgt in targets:
                    ys = np.array([mean_curves.get((n, kind, tgt, lv), math.nan) for lv in levels])
                    curves[n][tgt] = (np.array(levels), ys)
            for o in outputs:
                for tgt in targets:
                    ys = np.array(
                        [
                            next(
                                c["metric"]
                                for c in o.curves
                                if c["kind"] == kind and c["target"] == tgt and c["level"] == lv
                            )
                            for lv in levels
                        ]
                    )
                    rr = relative_robustness(levels, ys)
                    er = math.nan
                    if reference is not None and reference in curves:
                        er = effective_robustness(levels, ys, curves[reference][tgt][1], higher_is_better=higher)
                    summary_rows.append(
                        {
                            "fusion": o.name,
                            "seed": o.seed,
                            "kind": kind,
                            "target": tgt,
                            "relative_robustness": rr,
                            "effective_robustness": er,
                            "reference": reference or "",
                        }
                    )
                    final[(o.name, o.seed)][f"rel_robustness_{kind}_{tgt}"] = rr
                    final[(o.name, o.seed)][f"eff_robustness_{kind}_{tgt}"] = er
            fig = _plots.robustness_grid(
                curves,
                targets,
                xlabel,
                f"test {metric_label}",
                f"Robustness to {'Gaussian noise' if kind == 'noise' else 'missing steps'} (mean over seeds)",
            )
            files.append(_plots.save_figure(fig, out_dir / f"robustness_{kind}.png"))
        _write_csv(out_dir / "robustness.csv", summary_rows, files)
        sf = pd.DataFrame(summary_rows)
        sec = report.section(
            "analysis-robustness",
            "Robustness",
            [
                "Test "
                + metric_label
                + " as Gaussian noise (relative to each feature's standard deviation) is added, and as "
                "a growing share of steps is marked missing, for each modality alone and for all at once. Relative "
                "robustness is the normalised area under each curve (MultiBench); effective robustness is the area of "
                "the "
                "drop from the clean score minus the reference's (positive: degrades less than the reference). "
                f"Reference: {ref_why}.",
            ],
        )
        report.figure(
            sec, "robustness_noise.png", "Robustness to noise", "One panel per perturbed modality; lines: fusions."
        )
        report.figure(sec, "robustness_missing.png", "Robustness to missing steps", "One panel per perturbed modality.")
        agg = (
            sf[sf["target"] == "all"]
            .groupby(["fusion", "kind"], sort=False)[["relative_robustness", "effective_robustness"]]
            .mean()
        )
        report.table(
            sec,
            "Robustness with every modality perturbed (mean over seeds).",
            ["fusion", "relative (noise)", "effective (noise)", "relative (missing)", "effective (missing)"],
            [
                [
                    n,
                    _n(agg.loc[(n, "noise")].iloc[0]),
                    _n(agg.loc[(n, "noise")].iloc[1]),
                    _n(agg.loc[(n, "missing")].iloc[0]),
                    _n(agg.loc[(n, "missing")].iloc[1]),
                ]
                for n in names
            ],
        )
        timings["robustness"] += time.perf_counter() - t0

    # ---- calibration ----------------------------------------------------------------------------------------
    if "calibration" in want and has_val:
        t0 = time.perf_counter()
        rows = []
        if task == "classification":
            for o in outputs:
                cal_out = o.calib
                row = {
                    "fusion": o.name,
                    "seed": o.seed,
                    "temperature": cal_out["temperature"],
                    **{f"{k}_before": v for k, v in cal_out["before"].items()},
                    **{f"{k}_after": v for k, v in cal_out["after"].items()},
                    "accuracy_before": cal_out["accuracy_before"],
                    "accuracy_after": cal_out["accuracy_after"],
                }
                rows.append(row)
                final[(o.name, o.seed)].update({k: v for k, v in row.items() if k not in ("fusion", "seed")})
            _write_csv(out_dir / "calibration.csv", rows, files)
            panels = {}
            for n in names:
                y_all = np.concatenate([test0.targets] * len(by_name[n]))
                pb = np.concatenate([o.calib["probs_before"] for o in by_name[n]])
                pa = np.concatenate([o.calib["probs_after"] for o in by_name[n]])
                panels[n] = {
                    "before": reliability_curve(pb, y_all, config.ece_bins),
                    "temperature-scaled": reliability_curve(pa, y_all, config.ece_bins),
                }
            files.append(
                _plots.save_figure(
                    _plots.reliability_grid(panels, "Reliability diagrams (test, seeds pooled)"),
                    out_dir / "reliability.png",
                )
            )
            cf = pd.DataFrame(rows).groupby("fusion", sort=False).mean(numeric_only=True)
            sec = report.section(
                "analysis-calibration",
                "Calibration",
                [
                    f"Expected calibration error (ECE, {config.ece_bins} equal-width bins), its adaptive (equal-mass) "
                    "variant and the maximum calibration error (MCE) on test, before and after temperature scaling. "
                    f"The temperature is fitted by L-BFGS on the {config.calibration_split!r} split's logits (never on "
                    "test); dividing all logits by one positive number keeps every arg-max, so accuracy is unchanged.",
                ],
            )
            report.figure(sec, "reliability.png", "Reliability diagrams", "Dashed: perfect calibration.")
            sec["notes"].extend(_calibration_warnings(cf))
            report.table(
                sec,
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
                    [
                        n,
                        _n(r.temperature, 2),
                        _n(r.ece_before),
                        _n(r.ece_after),
                        _n(r.ece_adaptive_before),
                        _n(r.ece_adaptive_after),
                        _n(r.mce_before),
                        _n(r.mce_after),
                        _n(r.nll_before),
                        _n(r.nll_after),
                        _n(r.accuracy_before),
                        _n(r.accuracy_after),
                    ]
                    for n, r in cf.iterrows()
                ],
            )
        else:
            decisions = []
            for n in names:
                before = [o.calib["mae_before"] for o in by_name[n]]
                after = [o.calib["mae_after"] for o in by_name[n]]
                test_res = paired_improvement_test(before, after, lower_is_better=True, alpha=config.alpha)
                kept = bool(test_res["significant"])
                decisions.append(
                    [
                        n,
                        _n(_mean(before)),
                        _n(_mean(after)),
                        test_res["test"],
                        _n(test_res["p_value"], 4),
                        "kept" if kept else "not kept",
                    ]
                )
                for o in by_name[n]:
                    row = {
                        "fusion": n,
                        "seed": o.seed,
                        "scale": json.dumps(o.calib["scale"]),
                        "shift": json.dumps(o.calib["shift"]),
                        "mae_before": o.calib["mae_before"],
                        "mae_after": o.calib["mae_after"],
                        "test": test_res["test"],
                        "p_value": test_res["p_value"],
                        "kept": kept,
                    }
                    rows.append(row)
                    final[(o.name, o.seed)].update(
                        {
                            "affine_mae_after": o.calib["mae_after"],
                            "affine_kept": kept,
                            "affine_p_value": test_res["p_value"],
                        }
                    )
            _write_csv(out_dir / "calibration.csv", rows, files)
            sec = report.section(
                "analysis-calibration",
                "Calibration",
                [
                    f"An affine layer y -> a·y + b per target, L2-regularised towards the identity (strength "
                    f"{config.affine_l2}), fitted on the {config.calibration_split!r} split. It is kept only when a "
                    "one-sided paired t-test of the test MAE over the seeds shows an improvement at "
                    f"α = {config.alpha}.",
                ],
            )
            report.table(
                sec,
                "Affine calibration of regression outputs.",
                ["fusion", "MAE", "MAE (affine)", "test", "p-value", "decision"],
                decisions,
            )
        timings["calibration"] += time.perf_counter() - t0

    # ---- uncertainty ----------------------------------------------------------------------------------------
    if "uncertainty" in want:
        t0 = time.perf_counter()
        rows = []
        for o in outputs:
            urow: dict[str, Any] = {"fusion": o.name, "seed": o.seed}
            for name, u in o.uncert.items():
                for k, v in u.items():
                    if k != "rc":
                        urow[f"{name}_{k}"] = v
            rows.append(urow)
            final[(o.name, o.seed)].update({k: v for k, v in urow.items() if k not in ("fusion", "seed")})
        _write_csv(out_dir / "uncertainty.csv", rows, files)
        rc_curves = {
            n: (single[n].uncert["mc_dropout"]["rc"]["coverage"], single[n].uncert["mc_dropout"]["rc"]["risk"])
            for n in names
        }
        risk_label = "error rate of kept rows" if higher else "MAE of kept rows"
        files.append(
            _plots.save_figure(
                _plots.risk_coverage_plot(
                    rc_curves, risk_label, f"Risk-coverage, MC dropout (seed {config.embedding_seed})"
                ),
                out_dir / "risk_coverage.png",
            )
        )
        uf = pd.DataFrame(rows).groupby("fusion", sort=False).mean(numeric_only=True)
        spread = "mean_entropy" if higher else "mean_variance"
        sec = report.section(
            "analysis-uncertainty",
            "Uncertainty",
            [
                f"MC dropout ({config.mc_passes} passes with the dropout layers active) and test-time augmentation "
                f"({config.tta_passes} passes with feature noise at {config.tta_noise}× the feature std"
                + (
                    f", plus time shifts {list(config.tta_shifts)}"
                    if level == "sample"
                    else "; no time shifts for step labels"
                )
                + "). Risk-coverage: rows are kept most confident first (lowest predictive "
                + ("entropy" if higher else "variance")
                + "); AURC is the mean risk over coverages (lower is better).",
            ],
        )
        report.figure(sec, "risk_coverage.png", "Risk-coverage curves", "One line per fusion (MC dropout).")
        head = ["fusion", f"{metric_label} (MC mean)", "AURC (MC)", f"{spread.replace('_', ' ')} (MC)", "AURC (TTA)"]
        body = [
            [
                n,
                _n(r.mc_dropout_metric),
                _n(r.mc_dropout_aurc, 4),
                _n(getattr(r, f"mc_dropout_{spread}"), 4),
                _n(r.tta_aurc, 4),
            ]
            for n, r in uf.iterrows()
        ]
        if higher:
            head.append("AURC (softmax)")
            for b, (_, r) in zip(body, uf.iterrows(), strict=True):
                b.append(_n(r.softmax_aurc, 4))
        report.table(sec, "Uncertainty on test (mean over seeds).", head, body)
        timings["uncertainty"] += time.perf_counter() - t0

    # ---- separability ---------------------------------------------------------------------------------------
    if "separability" in want:
        t0 = time.perf_counter()
        if warmup is not None:
            warmup.join()
        idx = subsample(len(test0.targets), config.embedding_points, config.seed)
        all_methods = [
            m for m in EMBEDDING_METHODS if m in (*config.embedding_methods, *config.encoder_embedding_methods)
        ]
        labels = test0.targets[idx]
        label_vals = labels if higher else (labels if labels.ndim == 1 else labels[:, 0])
        rows = []
        sec = report.section(
            "analysis-separability",
            "Separability",
            [
                "Representations after each unimodal encoder and after the fusion "
                f"({len(idx)} test rows, the models of "
                f"seed {config.embedding_seed}), mapped to 2-D and coloured by label (fused: "
                f"{', '.join(m.upper() for m in config.embedding_methods) or 'none'}; encoders: "
                f"{', '.join(m.upper() for m in config.encoder_embedding_methods) or 'none'}; empty panels were not "
                "computed). The silhouette score (−1 to 1, higher: classes better separated) is computed in the "
                "representation space itself; compare the fused row with the encoder rows to see what fusion adds.",
            ],
        )
        for n in names:
            try:
                reps = _representations(single_model[n].model, test0, task, level)
            except Exception as exc:  # a model without encode/fuse stages
                notes.append(f"separability of {n}: representations unavailable ({type(exc).__name__}: {exc})")
                continue
            maps: dict[str, dict[str, np.ndarray | None]] = {}
            scores: dict[str, float] = {}
            for rep, x in reps.items():
                xs = x[idx]
                scores[rep] = separability_score(xs, labels) if higher else math.nan
                maps[rep] = {}
                for method in all_methods:
                    chosen = config.embedding_methods if rep == "after fusion" else config.encoder_embedding_methods
                    pts, why = embed_2d(xs, method, seed=config.seed) if method in chosen else (None, "")
                    if why and why not in notes:
                        notes.append(why)
                    maps[rep][method] = pts
                rows.append({"fusion": n, "seed": single[n].seed, "representation": rep, "silhouette": scores[rep]})
                if rep == "after fusion":
                    for o in by_name[n]:
                        if o.seed == single[n].seed:
                            final[(n, o.seed)]["silhouette_fused"] = scores[rep]
            fname = f"separability_{_safe(n)}.png"
            fig = _plots.embedding_grid(
                maps,
                label_vals,
                class_names if higher else None,
                scores,
                f"{n}: representations of test rows (seed {single[n].seed})",
            )
            files.append(_plots.save_figure(fig, out_dir / fname))
            report.figure(sec, fname, f"Representation maps of {n}")
        _write_csv(out_dir / "separability.csv", rows, files)
        if rows and higher:
            sf = pd.DataFrame(rows)
            piv = sf.pivot_table(index="fusion", columns="representation", values="silhouette", sort=False)
            report.table(
                sec,
                "Silhouette score by label per representation.",
                ["fusion", *piv.columns],
                [[n, *[_n(v) for v in piv.loc[n]]] for n in piv.index],
            )
        timings["separability"] += time.perf_counter() - t0

    # ---- failures -------------------------------------------------------------------------------------------
    if "failures" in want:
        t0 = time.perf_counter()
        y = test0.targets
        pattern_rows, worst_rows_out = [], []
        wrong: dict[str, np.ndarray] = {}
        for n in names:
            o = single[n]
            loss = _row_loss(task, o.clean, y)
            if higher:
                pred = o.clean.argmax(axis=1)
                for p in error_patterns(y, pred, class_names or None, config.top_patterns):
                    pattern_rows.append({"fusion": n, "seed": o.seed, **p})
                votes = np.mean([(r.clean.argmax(axis=1) != y) for r in by_name[n]], axis=0)
                wrong[n] = votes > 0.5
            else:
                pred = o.clean.reshape(y.shape)
                errs = np.stack([_row_loss(task, r.clean, y) for r in by_name[n]])
                wrong[n] = errs.mean(0) > np.quantile(errs.mean(0), 0.9)
            for rank, i in enumerate(worst_rows(loss, config.worst_cases), start=1):
                worst_rows_out.append(
                    {
                        "fusion": n,
                        "seed": o.seed,
                        "rank": rank,
                        "sample_id": test0.row_ids[i],
                        "step": int(test0.row_steps[i]) if test0.row_steps is not None else "",
                        "true": _class_name(class_names, y[i]) if higher else float(np.ravel(y[i])[0]),
                        "predicted": _class_name(class_names, pred[i]) if higher else float(np.ravel(pred[i])[0]),
                        "loss": float(loss[i]),
                        "available": test0.availability[i],
                    }
                )
        _write_csv(out_dir / "failure_patterns.csv", pattern_rows, files)
        _write_csv(out_dir / "worst_cases.csv", worst_rows_out, files)
        agree = error_agreement(wrong)
        agree_rows = [
            {"fusion": a, **{b: agree["jaccard"][i, j] for j, b in enumerate(agree["names"])}}
            for i, a in enumerate(agree["names"])
        ]
        _write_csv(out_dir / "failure_agreement.csv", agree_rows, files)
        files.append(
            _plots.save_figure(
                _plots.agreement_matrix(agree["names"], agree["jaccard"], "Overlap of the fusions' test errors"),
                out_dir / "failure_agreement.png",
            )
        )
        what = "misclassified by the majority of its seeds" if higher else "in its 10 % largest mean absolute errors"
        sec = report.section(
            "analysis-failures",
            "Failure cases",
            [
                f"A row counts as a failure of a fusion when it is {what}. {agree['all_wrong']} of {len(y)} test "
                f"rows are failures of every fusion and {agree['any_wrong']} of at least one: errors shared by all "
                "fusions point at "
                "the data (hard or mislabelled rows) rather than at the fusion.",
            ],
        )
        report.figure(
            sec, "failure_agreement.png", "Error agreement", "Jaccard overlap of the error sets of two fusions."
        )
        if pattern_rows:
            top = pd.DataFrame(pattern_rows).groupby(["true", "predicted"], sort=False)["count"].sum()
            top = top.sort_values(ascending=False).head(config.top_patterns)
            report.table(
                sec,
                f"Most frequent error patterns, summed over fusions (seed {config.embedding_seed}).",
                ["true", "predicted", "count"],
                [[t, p, int(c)] for (t, p), c in top.items()],
            )
        shown = [r for r in worst_rows_out if r["rank"] <= 5]
        report.table(
            sec,
            f"Worst test rows per fusion (top 5 of {config.worst_cases} in worst_cases.csv; seed "
            f"{config.embedding_seed}).",
            ["fusion", "rank", "sample id", "step", "true", "predicted", "loss", "modalities present"],
            [
                [
                    r["fusion"],
                    r["rank"],
                    r["sample_id"],
                    r["step"],
                    r["true"],
                    r["predicted"],
                    _n(r["loss"]),
                    r["available"],
                ]
                for r in shown
            ],
        )
        timings["failures"] += time.perf_counter() - t0

    # ---- inspection -----------------------------------------------------------------------------------------
    if "inspection" in want:
        t0 = time.perf_counter()
        whole = _concat_batches(test0.batches)
        order = np.argsort(-test0.lengths, kind="stable")[: config.inspect_samples]
        rows = []
        sec = report.section(
            "analysis-inspection",
            "Fusion weights",
            [
                "The weights each fusion reports from forward_with_weights (attention, gates or modality weights), "
                f"read by their shape, for the {len(order)} longest test sequences (seed {config.embedding_seed}). "
                "The table gives each modality's mean weight over all test steps where the fusion has per-modality "
                "weights.",
            ],
        )
        mean_rows = []
        for n in names:
            net = single_model[n].model
            try:
                fw = fusion_weights(net, whole)
            except Exception as exc:
                notes.append(f"inspection of {n}: weights unavailable ({type(exc).__name__}: {exc})")
                continue
            record: dict[str, Any] = {"fusion": n, "kind": fw.kind, "note": fw.note}
            if fw.values is not None and fw.kind == "modality_time":
                pad = whole.padding_mask
                means = fw.values[pad].mean(0).tolist()  # [M]
                record.update({f"mean_weight_{m}": v for m, v in zip(fw.labels, means, strict=True)})
                mean_rows.append([n, *[_n(v) for v in means]] if len(fw.labels) == len(test0.modalities) else None)
            elif fw.values is not None and fw.kind == "modality_static":
                means = fw.values.mean(0).tolist()
                record.update({f"mean_weight_{m}": v for m, v in zip(fw.labels, means, strict=True)})
                mean_rows.append([n, *[_n(v) for v in means]] if len(fw.labels) == len(test0.modalities) else None)
            rows.append(record)
            if fw.values is None:
                continue
            weight_panels = []
            for i in order.tolist():
                length = int(test0.lengths[i])
                vals = fw.values[i, :length].numpy() if fw.kind != "modality_static" else fw.values[i].numpy()
                weight_panels.append(
                    {
                        "title": f"sample {whole.ids[i] if i < len(whole.ids) else i} ({length} steps)",
                        "kind": fw.kind,
                        "values": vals,
                        "labels": fw.labels,
                    }
                )
            fname = f"inspection_{_safe(n)}.png"
            files.append(
                _plots.save_figure(
                    _plots.weights_figure(weight_panels, f"{n}: fusion weights ({fw.kind.replace('_', ' ')})"),
                    out_dir / fname,
                )
            )
            report.figure(sec, fname, f"Fusion weights of {n}")
        _write_csv(out_dir / "inspection.csv", rows, files)
        no_weights = [str(r["fusion"]) for r in rows if r["kind"] in ("none", "unsupported")]
        if no_weights:
            sec["notes"].append(
                "No weights drawn for: " + ", ".join(no_weights) + " (they return none, or an unsupported shape)."
            )
        good = [r for r in mean_rows if r is not None]
        if good:
            report.table(sec, "Mean weight per modality over all test steps.", ["fusion", *test0.modalities], good)
        timings["inspection"] += time.perf_counter() - t0

    # ---- complexity -----------------------------------------------------------------------------------------
    if "complexity" in want:
        t0 = time.perf_counter()
        whole = _concat_batches(test0.batches)
        rows = []
        mid = np.argsort(np.abs(test0.lengths - np.median(test0.lengths)), kind="stable")
        picks = mid[: min(5, len(test0.lengths))]  # sequences of typical length
        for n in names:
            net = single_model[n].model
            mods = _model_modalities(net, whole)
            samples = [_restrict(_slice(whole, int(i)), mods) for i in picks]
            lat = measure_latency(net, samples, repeats=config.latency_repeats)
            mem = peak_forward_memory(net, samples[0])
            params = parameter_report(net).trainable
            row = {"fusion": n, "params": params, **lat, **mem}
            rows.append(row)
            for o in by_name[n]:
                final[(n, o.seed)].update({"params": params, **lat, "peak_bytes": mem["peak_bytes"]})
        _write_csv(out_dir / "complexity.csv", rows, files)
        sec = report.section(
            "analysis-complexity",
            "Complexity",
            [
                "Trainable parameters, inference latency per sample (one sequence per forward pass, test sequences of "
                f"median length ({int(np.median(test0.lengths))} steps), {config.latency_repeats} timed passes after "
                f"warm-up, {config.device}, "
                f"{config.num_threads or torch.get_num_threads()} thread(s)) and the peak memory allocated during one "
                "forward pass (" + (rows[0]["memory_method"] if rows else "") + ").",
            ],
        )
        report.table(
            sec,
            f"Complexity (models of seed {config.embedding_seed}).",
            ["fusion", "parameters", "latency median [ms]", "latency p95 [ms]", "peak memory [KiB]"],
            [
                [
                    r["fusion"],
                    f"{r['params']:,}",
                    _n(r["latency_ms_median"], 2),
                    _n(r["latency_ms_p95"], 2),
                    _n(r["peak_bytes"] / 1024, 1),
                ]
                for r in rows
            ],
        )
        timings["complexity"] += time.perf_counter() - t0

    # ---- exports --------------------------------------------------------------------------------------------
    results_path = run_dir / "results.csv"
    base = pd.read_csv(results_path, converters={"fusion": str})
    final_rows = []
    for _, r in base.iterrows():
        key = (str(r["fusion"]), int(r["seed"]))
        if key in final:
            row = {k: (v.item() if hasattr(v, "item") else v) for k, v in r.to_dict().items()}
            row.update({k: v for k, v in final[key].items() if k not in ("fusion", "seed")})
            final_rows.append(row)
    _write_csv(run_dir / "final_results.csv", final_rows, files)
    timings = {k: round(v, 2) for k, v in timings.items() if v > 0 or k in want}
    timings["total"] = round(time.perf_counter() - t_start, 2)
    if notes:
        report.md += ["Notes:", ""] + [f"- {_md(n)}" for n in dict.fromkeys(notes)] + [""]
    sections_path = atomic_write_json(
        out_dir / "sections.json",
        {
            "format": "mmfuse-analysis-sections",
            "version": 1,
            "sections": report.sections,
            "notes": list(dict.fromkeys(notes)),
        },
    )
    files.append(sections_path)
    files.append(atomic_write_text(out_dir / "summary.md", "\n".join(report.md) + "\n", newline="\n"))
    files.append(
        atomic_write_json(
            out_dir / "result.json",
            {
                "config": asdict(config),
                "seconds": timings,
                "notes": list(dict.fromkeys(notes)),
                "runs": [f"{n}-seed{s}" for n, s in runs],
            },
        )
    )
    if config.write_report:
        from mmfuse.evaluate.report import write_report, write_summary_markdown

        files.append(write_summary_markdown(run_dir))
        files.append(write_report(run_dir))
    logger.info("analysis of %s done in %.1f s", run_dir, timings["total"])
    return AnalysisResult(run_dir, out_dir, final_rows, files, timings, list(dict.fromkeys(notes)))


def _class_name(names: Sequence[str], k: Any) -> str:
    return names[int(k)] if names and int(k) < len(names) else str(k)


def _warm_up_umap() -> None:
    try:
        embed_2d(np.random.default_rng(0).normal(size=(40, 4)), "umap")
    except Exception as exc:  # the real call reports the problem
        logger.debug("umap warm-up failed: %s", exc)


def _slice(batch: Batch, i: int) -> Batch:
    """The ``i``-th sequence as a one-sequence batch, trimmed to its real length."""
    n = int(batch.padding_mask[i].sum())
    return Batch(
        {m: x[i : i + 1, :n] for m, x in batch.inputs.items()},
        {m: k[i : i + 1, :n] for m, k in batch.masks.items()},
        batch.padding_mask[i : i + 1, :n],
        None,
        batch.ids[i : i + 1],
    )
