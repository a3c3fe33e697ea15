"""Staged training: fine-tune an expert on one modality, cache its features, then train the fusion on them.

The recipe MISA- and Self-MM-style pipelines use for text, as one call of :func:`fit_staged`:

1. **Expert stage.** A unimodal :class:`~mmfuse.models.MultimodalModel` on the expert's modality (``hidden``,
   encoder, ... from ``ExpertStage.model``) is trained with :class:`~mmfuse.train.Trainer` on the ``train`` split
   only, *without* validation data: it runs its fixed number of epochs and keeps the epoch with the lowest training
   loss, so the validation split is never read while the expert learns and stays clean for choosing the fusion.
2. **Features, cached.** The expert's representation before its head (``fuse(encode(...))``, ``[T, H]`` per
   sequence) is computed, in evaluation mode and without gradients, for every sequence of every split, and written
   with all other modalities as an mmfuse data set under ``cache_dir/<key>/``. ``key`` is the SHA-256 of the
   expert's weights and of the records it read, so an unchanged expert on unchanged data reuses the cache.
3. **Fusion stage.** The fusion model (``fusion`` settings) is trained with the same engine on the cached data
   set's ``train`` split, with early stopping on its ``val`` split: the expert's features replace (or, with
   ``replace=False``, join) the modality it read.

No optimiser step of any stage sees a validation or test item (``tests/train/test_staged.py`` records the ids of
every batch that reaches ``optimizer.step``). ``train`` must be the training split *minus* validation, as the
``train`` split of mmfuse's data sets is; a ``train`` that shares a sequence id with ``val`` or ``test`` is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfuse.data import ModalitySpec, MultimodalDataset, SequenceRecord, collate, open_dataset, write_dataset
from mmfuse.errors import DataError
from mmfuse.models import ModelConfig, MultimodalModel, build_model
from mmfuse.train.config import TrainConfig
from mmfuse.train.trainer import Trainer, TrainResult

__all__ = ["ExpertStage", "StagedResult", "expert_features", "fit_staged"]

logger = logging.getLogger(__name__)

_FEATURES_DIR = "features"
_FEATURE_CHUNK = 1024  # records read and featurised together (sorted by length within), then written


@dataclass(frozen=True)
class ExpertStage:
    """One expert of a staged recipe: the modality it reads, its model and its training recipe.

    Attributes:
        modality: The data set modality the expert reads.
        model: :class:`~mmfuse.models.ModelConfig` keyword arguments of the expert (``hidden``, ``encoder``,
            ``dropout``...); ``modality_dims``, ``out_dim``, ``task`` and ``label_level`` come from the data set.
        train: :class:`~mmfuse.train.TrainConfig` of its stage (``epochs``, ``lr``, ``seed``...). The stage never
            reads validation data, so early stopping does not apply (``patience`` is set to None).
        name: The feature modality it produces (default ``"<modality>_expert"``).
        replace: The features replace ``modality`` in the fusion stage (else both are fused).

    Example:
        >>> ExpertStage("text", model={"hidden": 32}, train=TrainConfig(epochs=5)).feature_name
        'text_expert'
    """

    modality: str
    model: Mapping[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str | None = None
    replace: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.modality, str) or not self.modality:
            raise ValueError(f"The 'modality' parameter of ExpertStage must be a modality name. Got {self.modality!r}.")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"The 'train' parameter of ExpertStage must be a TrainConfig. Got {type(self.train)}.")
        taken = {"modality_dims", "out_dim", "task", "label_level"} & set(self.model)
        if taken:
            raise ValueError(
                f"The 'model' parameter of ExpertStage must not set {sorted(taken)}: they come from the data set."
            )

    @property
    def feature_name(self) -> str:
        """The name of the feature modality the expert writes."""
        return self.name or f"{self.modality}_expert"


@dataclass
class StagedResult:
    """What :func:`fit_staged` produced.

    Attributes:
        experts: Feature modality -> the expert's :class:`TrainResult`.
        expert_models: Feature modality -> the trained expert (its kept epoch's weights).
        features: The cached data set the fusion stage read (the experts' features and the other modalities).
        reused_features: Whether the features came from the cache.
        fusion: The fusion stage's :class:`TrainResult`.
        model: The trained fusion model.
    """

    experts: dict[str, TrainResult]
    expert_models: dict[str, MultimodalModel]
    features: MultimodalDataset
    reused_features: bool
    fusion: TrainResult
    model: MultimodalModel


def _check_disjoint(train: MultimodalDataset, others: Mapping[str, MultimodalDataset | None]) -> None:
    seen = set(train.ids)
    for split, view in others.items():
        if view is None:
            continue
        shared = sorted(seen & set(view.ids))
        if shared:
            raise DataError(
                f"The 'train' data of fit_staged share {len(shared)} sequence id(s) with '{split}' "
                f"({', '.join(shared[:3])}{'...' if len(shared) > 3 else ''}): every stage must learn from the "
                "training split minus validation and test only."
            )


def _model_config(dataset: MultimodalDataset, dims: Mapping[str, int], settings: Mapping[str, Any]) -> ModelConfig:
    task = dataset.task
    return ModelConfig(
        modality_dims=dict(dims),
        out_dim=task.out_dim,
        task=task.type,
        label_level=task.level,
        **dict(settings),
    )


@torch.no_grad()
def expert_features(
    expert: MultimodalModel, records: Sequence[SequenceRecord], *, batch_size: int = 32
) -> list[np.ndarray]:
    """The expert's representation of each sequence before its head: one ``[T, H]`` float32 per record, in order.

    It is ``expert.fuse(expert.encode(...))`` in evaluation mode, without gradients (for a decision-level fusion,
    its per-step outputs), zero where the expert's modality is missing. The records are sorted by length and run
    ``batch_size`` at a time, padded by :func:`~mmfuse.data.collate` with the padding masked, so a sequence's
    features do not depend on what it shares a batch with: they equal its features computed alone to float
    rounding (the batched matrix products may round differently, so equality is to about 1e-6, not bit for bit;
    ``tests/train/test_staged.py`` checks every encoder).

    Args:
        expert: The trained expert (its mode is restored afterwards).
        records: The sequences, each with the expert's modalities.
        batch_size: Sequences per forward pass.

    Raises:
        ValueError: ``batch_size`` is not a positive whole number.

    Example:
        >>> from mmfuse.models import ModelConfig, build_model
        >>> expert = build_model(ModelConfig(modality_dims={"a": 2}, out_dim=2, hidden=4))
        >>> recs = [
        ...     SequenceRecord(f"s{t}", "g", "train", {"a": np.ones((t, 2), np.float32)}, {"a": np.ones(t, bool)}, 0)
        ...     for t in (3, 5)
        ... ]
        >>> [f.shape for f in expert_features(expert, recs)]
        [(3, 4), (5, 4)]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"The 'batch_size' parameter of expert_features must be a positive integer. Got {batch_size!r}."
        )
    order = np.argsort([len(r) for r in records], kind="stable")  # similar lengths share a batch: little padding
    out: list[np.ndarray] = [np.empty(0)] * len(records)
    was_training = expert.training
    expert.eval()
    try:
        device = next(expert.parameters()).device
        for start in range(0, len(order), batch_size):
            chunk = [int(i) for i in order[start : start + batch_size]]
            batch = collate(  # only the expert's modalities; no context (the expert reads none)
                [
                    replace(
                        records[i],
                        values={m: records[i].values[m] for m in expert.modalities},
                        masks={m: records[i].masks[m] for m in expert.modalities if m in records[i].masks},
                        context={},
                    )
                    for i in chunk
                ]
            ).to(device)
            # collate's masks are False at padding, as encode and fuse expect
            fused = expert.fuse(expert.encode(batch.inputs, batch.masks, batch.padding_mask), batch.masks)  # [B, T, H]
            feats = fused.float().cpu().numpy()  # [B, T, H]
            for row, i in enumerate(chunk):
                out[i] = feats[row, : len(records[i])].copy()  # [T_i, H]
    finally:
        expert.train(was_training)
    return out


def _records_digest(views: Sequence[MultimodalDataset], modalities: Sequence[str]) -> str:
    """SHA-256 of the ids, splits, masks and values the experts read (the data half of the cache key)."""
    digest = hashlib.sha256()
    for view in views:
        for i in range(len(view)):
            rec = view[i]
            digest.update(json.dumps([rec.id, rec.split, len(rec)]).encode())
            for m in modalities:
                digest.update(np.ascontiguousarray(rec.values[m], dtype=np.float32).tobytes())
                digest.update(np.ascontiguousarray(rec.masks[m], dtype=bool).tobytes())
    return digest.hexdigest()


def _weights_digest(models: Mapping[str, MultimodalModel]) -> str:
    digest = hashlib.sha256()
    for name in sorted(models):
        digest.update(name.encode())
        for key, tensor in sorted(models[name].state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _write_features(
    path: Path,
    views: Sequence[MultimodalDataset],
    dataset: MultimodalDataset,
    experts: Sequence[ExpertStage],
    models: Mapping[str, MultimodalModel],
) -> None:
    replaced = {e.modality for e in experts if e.replace}
    kept = [spec for name, spec in dataset.modalities.items() if name not in replaced]
    first = views[0][0]
    specs = kept + [  # the feature size as the expert gives it (H, or C for a decision-level expert fusion)
        ModalitySpec(
            e.feature_name,
            expert_features(models[e.feature_name], [first])[0].shape[1],
            "embedding",
            f"{e.modality} expert features",
        )
        for e in experts
    ]

    def records() -> Any:
        for view in views:
            for start in range(0, len(view), _FEATURE_CHUNK):
                chunk = [view[i] for i in range(start, min(start + _FEATURE_CHUNK, len(view)))]
                features = {  # each expert at its training batch size: it fitted with gradients, so it fits here
                    e.feature_name: expert_features(models[e.feature_name], chunk, batch_size=e.train.batch_size)
                    for e in experts
                }
                for k, rec in enumerate(chunk):
                    values = {s.name: rec.values[s.name] for s in kept}
                    masks = {s.name: rec.masks[s.name] for s in kept}
                    for e in experts:
                        values[e.feature_name] = features[e.feature_name][k]  # [T, H]
                        masks[e.feature_name] = rec.masks[e.modality]
                    yield replace(rec, values=values, masks=masks)

    write_dataset(
        path,
        records(),
        name=f"{dataset.name}-staged",
        modalities=specs,
        task=dataset.task,
        description=f"{dataset.name} with the features of {', '.join(e.feature_name for e in experts)} (fit_staged).",
        overwrite=True,
    )


def fit_staged(
    train: MultimodalDataset,
    val: MultimodalDataset,
    experts: ExpertStage | Sequence[ExpertStage],
    *,
    fusion: Mapping[str, Any] | None = None,
    fusion_train: TrainConfig | None = None,
    test: MultimodalDataset | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    callbacks: Sequence[Any] = (),
) -> StagedResult:
    """Train the experts on ``train``, cache their features for every split, then train the fusion on them.

    Args:
        train: The training split minus validation (a view of one mmfuse data set).
        val: The validation split: read only by the fusion stage, for early stopping and model selection.
        experts: One expert or several (each on its own modality).
        fusion: :class:`~mmfuse.models.ModelConfig` keyword arguments of the fusion model (``fusion``,
            ``hidden``...); the modality sizes, task and label level come from the cached data set.
        fusion_train: The fusion stage's :class:`~mmfuse.train.TrainConfig`.
        test: The test split, whose features are cached too (no stage trains or selects on it).
        out_dir: Where each stage's checkpoints and best model go (``experts/<name>/``, ``fusion/``); None keeps
            them in memory.
        cache_dir: Where the features are cached (default ``out_dir/features``, else a folder under the system's
            temporary directory).
        callbacks: Passed to every stage's :class:`~mmfuse.train.Trainer`.

    Returns:
        A :class:`StagedResult`.

    Raises:
        DataError: ``train`` shares a sequence id with ``val`` or ``test``, or the views come from other data sets.
        ValueError: an expert's modality is not in the data set, two experts produce one feature name, or a feature
            name is already a modality.
    """
    stages = [experts] if isinstance(experts, ExpertStage) else list(experts)
    if not stages:
        raise ValueError("The 'experts' parameter of fit_staged must name at least one ExpertStage.")
    dataset = train
    _check_disjoint(train, {"val": val, "test": test})
    views = [v for v in (train, val, test) if v is not None]
    if any(Path(v.path) != Path(train.path) for v in views):
        raise DataError("The 'train', 'val' and 'test' data of fit_staged must be views of one data set.")
    names = [e.feature_name for e in stages]
    for e in stages:
        if e.modality not in dataset.modalities:
            raise ValueError(
                f"The expert's modality {e.modality!r} is not in data set {dataset.name!r}. "
                f"Its modalities: {', '.join(dataset.modalities)}."
            )
    if len(set(names)) != len(names) or set(names) & set(dataset.modalities):
        raise ValueError(f"The experts' feature names {names} must be distinct and new to the data set.")
    root = None if out_dir is None else Path(out_dir)

    # 1. the experts: the training split only, no validation data
    results: dict[str, TrainResult] = {}
    models: dict[str, MultimodalModel] = {}
    for e in stages:
        config = _model_config(dataset, {e.modality: dataset.modalities[e.modality].dim}, e.model)
        torch.manual_seed(e.train.seed)
        model = build_model(config)
        recipe = replace(e.train, patience=None)
        where = None if root is None else root / "experts" / e.feature_name
        logger.info("fit_staged: training the %s expert on %d sequences", e.modality, len(train))
        results[e.feature_name] = Trainer(recipe, callbacks=callbacks).fit(model, train, None, out_dir=where)
        models[e.feature_name] = model

    # 2. the features of every split, cached by expert weights + data
    key = hashlib.sha256(
        (_weights_digest(models) + _records_digest(views, sorted({e.modality for e in stages}))).encode()
    ).hexdigest()[:32]
    base = Path(cache_dir) if cache_dir is not None else (root / _FEATURES_DIR if root is not None else None)
    if base is None:
        base = Path(tempfile.gettempdir()) / "mmfuse-staged-features"
    path = base / key
    reused = (path / "meta.json").is_file()
    if not reused:
        _write_features(path, views, dataset, stages, models)
    features = open_dataset(path)

    # 3. the fusion: train on the cached train split, early stopping on the cached val split
    dims = {name: spec.dim for name, spec in features.modalities.items()}
    model_cfg = _model_config(features, dims, fusion or {})
    recipe = fusion_train or TrainConfig()
    torch.manual_seed(recipe.seed)
    model = build_model(model_cfg)
    result = Trainer(recipe, callbacks=callbacks).fit(
        model, features.split("train"), features.split("val"), out_dir=None if root is None else root / "fusion"
    )
    return StagedResult(results, models, features, reused, result, model)
