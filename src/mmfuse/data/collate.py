"""Turn a list of :class:`SequenceRecord` into a padded :class:`mmfuse.types.Batch`, and a seeded loader."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mmfuse.data._spec import SequenceRecord, TaskSpec
from mmfuse.errors import DataError
from mmfuse.types import Batch, LabelLevel, TaskType

__all__ = ["IGNORE_INDEX", "collate", "make_loader"]

IGNORE_INDEX = -100
"""Class index of an unlabelled step (stored) or a padded step (batches) in step-level classification; losses and
metrics skip it (``torch.nn.CrossEntropyLoss`` default)."""


def _infer_task(records: Sequence[SequenceRecord]) -> tuple[bool, bool]:
    """Return (classification, step_level) guessed from the labels of ``records``."""
    first = np.asarray(records[0].label)
    classification = bool(np.issubdtype(first.dtype, np.integer)) and first.dtype != bool
    if first.ndim == 0:
        return classification, False
    if first.ndim == 2:
        return classification, True
    if classification:
        return True, True
    # A 1-D float label is a step-level scalar target when it has one value per step in every record,
    # otherwise a sample-level vector target.
    step = all(np.ndim(r.label) == 1 and np.shape(r.label)[0] == len(r) for r in records)
    return False, step


def collate(
    records: Sequence[SequenceRecord],
    *,
    task: TaskSpec | None = None,
    context_vocab: Mapping[str, Sequence[str]] | None = None,
) -> Batch:
    """Pad ``records`` to the longest ``T`` and stack them into a :class:`~mmfuse.types.Batch`.

    Values are zero wherever the modality mask is False (set with ``np.where``, so NaN never leaks), masks and
    ``padding_mask`` are False at padding. Targets: sample level ``[B]`` (``[B, C]`` for vector regression
    targets); step level ``[B, T]`` (``[B, T, C]``) with padding filled with :data:`IGNORE_INDEX` (-100) for
    classification and ``0.0`` for regression. Class indices are int64, regression targets float32. Unlabelled
    steps keep their stored mark (:data:`IGNORE_INDEX` or NaN), which losses and metrics skip.

    Args:
        records: The samples, all with the same modalities.
        task: The task; when None it is inferred from the labels (integers -> classification; a 0-d label ->
            sample level; a 1-d integer label or one value per step -> step level).
            ``MultimodalDataset.collate_fn`` and :func:`make_loader` pass it.
        context_vocab: Context name -> vocabulary; each record's context value becomes its index (int64).
            Needed when the records carry context.

    Raises:
        DataError: empty batch, records with different modalities or feature sizes, context values outside
            the vocabulary, or context without a vocabulary.

    Example:
        >>> import numpy as np
        >>> recs = [
        ...     SequenceRecord(f"s{t}", "g", "train", {"x": np.ones((t, 2), np.float32)}, {"x": np.ones(t, bool)}, 0)
        ...     for t in (2, 3)
        ... ]
        >>> b = collate(recs)
        >>> tuple(b.inputs["x"].shape), b.padding_mask.sum(dim=1).tolist(), b.targets.tolist()
        ((2, 3, 2), [2, 3], [0, 0])
    """
    if len(records) == 0:
        raise DataError("collate got an empty list of records; a batch needs at least one.")
    b = len(records)
    lengths = [len(r) for r in records]
    t_max = max(lengths)
    names = sorted(records[0].values)
    inputs: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for m in names:
        dim = int(np.shape(records[0].values[m])[1])
        vals = np.zeros((b, t_max, dim), dtype=np.float32)  # [B, T, D_m]
        mk = np.zeros((b, t_max), dtype=bool)  # [B, T]
        for i, rec in enumerate(records):
            if m not in rec.values or len(rec.values) != len(names):
                raise DataError(
                    f"collate: sample {rec.id!r} has modalities {sorted(rec.values)}; the batch expects {names}."
                )
            v = np.asarray(rec.values[m], dtype=np.float32)
            n = lengths[i]
            if v.shape != (n, dim):
                raise DataError(f"collate: sample {rec.id!r}, modality {m!r}: values {v.shape}, expected ({n}, {dim}).")
            present = rec.masks.get(m)
            p = np.ones(n, dtype=bool) if present is None else np.asarray(present, dtype=bool)
            if p.shape != (n,):
                raise DataError(f"collate: sample {rec.id!r}, modality {m!r}: mask {p.shape}, expected ({n},).")
            vals[i, :n] = np.where(p[:, None], v, np.float32(0.0))
            mk[i, :n] = p
        inputs[m] = torch.from_numpy(vals)
        masks[m] = torch.from_numpy(mk)
    padding = np.arange(t_max)[None, :] < np.asarray(lengths)[:, None]  # [1, T] < [B, 1] -> [B, T]
    if task is not None:
        classification = task.type is TaskType.CLASSIFICATION
        step_level = task.level is LabelLevel.STEP
    else:
        classification, step_level = _infer_task(records)
    targets = _targets(records, lengths, t_max, classification, step_level)
    context: dict[str, torch.Tensor] = {}
    if any(r.context for r in records):
        if context_vocab is None:
            raise DataError(
                "collate: the records carry context but no 'context_vocab' was given; use "
                "dataset.collate_fn or make_loader, or pass context_vocab=dataset.context_vocab."
            )
        for key, vocab in context_vocab.items():
            index = {v: k for k, v in enumerate(vocab)}
            codes = np.empty(b, dtype=np.int64)
            for i, rec in enumerate(records):
                value = rec.context.get(key)
                if value not in index:
                    raise DataError(
                        f"collate: sample {rec.id!r} has context {key}={value!r}, which is not in the vocabulary "
                        f"{list(vocab)[:10]}{'...' if len(vocab) > 10 else ''}."
                    )
                codes[i] = index[value]
            context[key] = torch.from_numpy(codes)
    return Batch(
        inputs=inputs,
        masks=masks,
        padding_mask=torch.from_numpy(padding),
        targets=targets,
        ids=[r.id for r in records],
        groups=[r.group for r in records],
        context=context,
    )


def _targets(
    records: Sequence[SequenceRecord], lengths: list[int], t_max: int, classification: bool, step_level: bool
) -> torch.Tensor:
    dtype = np.int64 if classification else np.float32
    labels = [np.asarray(r.label, dtype=dtype) for r in records]
    if not step_level:
        return torch.from_numpy(np.stack(labels))  # [B] or [B, C]
    trailing = labels[0].shape[1:]
    fill = IGNORE_INDEX if classification else 0.0
    out = np.full((len(records), t_max, *trailing), fill, dtype=dtype)  # [B, T] or [B, T, C]
    for i, (lab, n) in enumerate(zip(labels, lengths, strict=True)):
        if lab.shape[:1] != (n,):
            raise DataError(f"collate: sample {records[i].id!r} has a step label of shape {lab.shape}; expected T={n}.")
        out[i, :n] = lab
    return torch.from_numpy(out)


def make_loader(
    dataset: Any,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader[Any]:
    """Return a ``DataLoader`` over ``dataset`` that yields :class:`~mmfuse.types.Batch` objects.

    The shuffle order comes from a ``torch.Generator`` seeded with ``seed``, so two loaders with the same seed
    yield the same batches. When ``dataset`` is a :class:`~mmfuse.data.MultimodalDataset` its task and context
    vocabulary are passed to :func:`collate`.

    Args:
        dataset: A map-style data set of :class:`SequenceRecord`.
        batch_size: Samples per batch (positive).
        shuffle: Reshuffle every epoch.
        seed: Seed of the shuffling generator.
        num_workers: Worker processes (0 = load in the main process).
        drop_last: Drop the last incomplete batch.

    Example:
        >>> from mmfuse.data import load_dataset
        >>> loader = make_loader(load_dataset("basic-motions").split("val"), batch_size=4, shuffle=True, seed=1)
        >>> batch = next(iter(loader))
        >>> tuple(batch.inputs["accelerometer"].shape), batch.targets.dtype
        ((4, 100, 3), torch.int64)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter of make_loader must be a positive integer. Got {batch_size!r}.")
    task = getattr(dataset, "task", None)
    vocab = getattr(dataset, "context_vocab", None)
    fn = functools.partial(collate, task=task if isinstance(task, TaskSpec) else None, context_vocab=vocab)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=fn,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=False,
    )
