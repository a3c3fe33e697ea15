"""Turn what users pass as data (a data set, a loader, a list of batches) into batches, epoch after epoch.

A :class:`~mmfuse.data.MultimodalDataset` that fits in memory (:data:`IN_MEMORY_LIMIT_BYTES`; every data set
mmfuse ships) is read and collated once; each epoch's batches are then drawn by indexing those tensors, in the
order and with the padding that :func:`mmfuse.data.make_loader` gives for the same seed, so the batches are
identical to the streaming loader's. Larger data sets are streamed through the loader, batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from mmfuse.types import Batch, LabelLevel

__all__ = ["IN_MEMORY_LIMIT_BYTES", "BatchSource", "take_rows", "task_spec_of"]

#: Largest padded size (bytes) of a data set that is collated once and kept in memory.
IN_MEMORY_LIMIT_BYTES = 1 << 30


def task_spec_of(data: Any) -> Any:
    """Return the ``TaskSpec`` of a data set (``data.task``), or ``None`` for loaders and lists of batches."""
    if isinstance(data, torch.utils.data.Dataset):
        return getattr(data, "task", None)
    return None


def take_rows(batch: Batch, index: Tensor, steps: int | None = None, *, step_targets: bool = False) -> Batch:
    """The rows ``index`` (``[b]`` int64) of ``batch`` as a new batch, cut to the first ``steps`` steps if given.

    Args:
        batch: The batch.
        index: Row indices.
        steps: Keep the first ``steps`` steps of the time axis (``None``: all).
        step_targets: The targets are step-level (``[B, T]`` / ``[B, T, C]``) and are cut to ``steps`` too.

    Example:
        >>> pad = torch.ones(3, 2, dtype=torch.bool)
        >>> b = Batch({"x": torch.arange(6.0).reshape(3, 2, 1)}, {"x": pad}, pad, torch.tensor([0, 1, 2]),
        ...           ids=["a", "b", "c"])
        >>> sub = take_rows(b, torch.tensor([2, 0]), steps=1)
        >>> sub.ids, sub.targets.tolist(), tuple(sub.inputs["x"].shape)
        (['c', 'a'], [2, 0], (2, 1, 1))
    """
    rows = index.tolist()
    t = batch.num_steps if steps is None else steps
    targets = batch.targets
    if targets is not None:
        targets = targets[index, :t] if step_targets else targets[index]
    return replace(
        batch,
        inputs={k: v[index, :t] for k, v in batch.inputs.items()},  # [b, t, D_m]
        masks={k: v[index, :t] for k, v in batch.masks.items()},  # [b, t]
        padding_mask=batch.padding_mask[index, :t],  # [b, t]
        targets=targets,
        ids=[batch.ids[i] for i in rows] if batch.ids else [],
        groups=[batch.groups[i] for i in rows] if batch.groups else [],
        context={k: v[index] for k, v in batch.context.items()},
    )


def _padded_bytes(data: Any) -> int | None:
    """The size of ``data`` collated into one padded batch, or ``None`` when it cannot be told without reading."""
    lengths, modalities = getattr(data, "lengths", None), getattr(data, "modalities", None)
    if lengths is None or not isinstance(modalities, dict) or not hasattr(data, "collate_fn"):
        return None
    n, t = len(lengths), int(max(lengths, default=0))
    per_step = sum(4 * int(getattr(spec, "dim", 1)) + 1 for spec in modalities.values()) + 1 + 8
    return n * t * per_step


class BatchSource:
    """Batches of one data argument, re-iterable once per epoch.

    A map-style ``torch`` data set (such as :class:`~mmfuse.data.MultimodalDataset`) is shuffled per epoch when
    ``shuffle``, with a seed derived from the epoch: collated once and indexed when it fits in memory, else read
    through :func:`mmfuse.data.make_loader`; both give the same batches. Any other re-iterable (a list of
    :class:`~mmfuse.types.Batch`, a ``DataLoader``) is iterated as it is. The in-memory path assumes that the data
    set's transforms are deterministic (normalisers are); pass ``in_memory=False`` for random augmentation.

    Args:
        data: The data argument.
        name: Its parameter name, used in error messages.
        batch_size: Sequences per batch (data sets only).
        shuffle: Shuffle data sets each epoch.
        num_workers: Loader worker processes (data sets read through the loader only).
        in_memory: ``None``: collate once when the data set fits in :data:`IN_MEMORY_LIMIT_BYTES`;
            ``False``: always stream through the loader.
    """

    def __init__(
        self,
        data: Any,
        name: str,
        *,
        batch_size: int,
        shuffle: bool,
        num_workers: int = 0,
        in_memory: bool | None = None,
    ) -> None:
        if data is None or isinstance(data, (str, bytes, Batch)):
            raise TypeError(
                f"The {name!r} parameter must be a data set or a re-iterable of Batch objects. "
                f"Got {type(data).__name__}."
            )
        self.is_dataset = isinstance(data, torch.utils.data.Dataset)
        if not self.is_dataset:
            if not isinstance(data, Iterable):
                raise TypeError(
                    f"The {name!r} parameter must be a data set or a re-iterable of Batch objects. "
                    f"Got {type(data).__name__}."
                )
            if iter(data) is data:
                raise TypeError(
                    f"The {name!r} parameter is a one-shot iterator; pass a list (or a DataLoader) so that it can be "
                    "read once per epoch."
                )
        self.data = data
        self.name = name
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.num_workers = num_workers
        size = _padded_bytes(data) if self.is_dataset and in_memory is not False else None
        self.in_memory = size is not None and size <= IN_MEMORY_LIMIT_BYTES and len(data) > 0
        self._full: Batch | None = None
        self._lengths: Tensor | None = None

    def batches(self, seed: int = 0) -> Iterator[Batch]:
        """Yield the batches of one pass; ``seed`` orders a shuffled data set."""
        if self.in_memory:
            yield from self._indexed(seed)
            return
        if self.is_dataset:
            from mmfuse.data import make_loader

            source: Iterable[Any] = make_loader(
                self.data, batch_size=self.batch_size, shuffle=self.shuffle, seed=seed, num_workers=self.num_workers
            )
        else:
            source = self.data
        for i, batch in enumerate(source):
            if not isinstance(batch, Batch):
                raise TypeError(
                    f"The {self.name!r} data yielded a {type(batch).__name__} at position {i}; "
                    "expected mmfuse.types.Batch."
                )
            yield batch

    def _indexed(self, seed: int) -> Iterator[Batch]:
        """The loader's batches for ``seed``, drawn from the data set collated once."""
        if self._full is None:
            data = self.data
            self._full = data.collate_fn([data[i] for i in range(len(data))])
            self._lengths = self._full.padding_mask.sum(dim=1)  # [N] real steps of each sequence
        full, lengths = self._full, self._lengths
        assert lengths is not None  # set with _full
        n = full.batch_size
        if self.shuffle:
            # make_loader's order: the DataLoader draws its base seed from the generator, then the sampler permutes.
            generator = torch.Generator().manual_seed(int(seed))
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        step_level = getattr(getattr(self.data, "task", None), "level", None) == LabelLevel.STEP
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            steps = int(lengths[index].max())  # collate pads each batch to its longest sequence
            yield take_rows(full, index, steps, step_targets=step_level)
