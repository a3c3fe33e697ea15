"""Turn what users pass as data (a data set, a loader, a list of batches) into batches, epoch after epoch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from mmfuse.types import Batch

__all__ = ["BatchSource", "task_spec_of"]


def task_spec_of(data: Any) -> Any:
    """Return the ``TaskSpec`` of a data set (``data.task``), or ``None`` for loaders and lists of batches."""
    if isinstance(data, torch.utils.data.Dataset):
        return getattr(data, "task", None)
    return None


class BatchSource:
    """Batches of one data argument, re-iterable once per epoch.

    A map-style ``torch`` data set (such as :class:`~mmfuse.data.MultimodalDataset`) is read through
    :func:`mmfuse.data.make_loader`, shuffled per epoch when ``shuffle`` with a seed derived from the epoch; any
    other re-iterable (a list of :class:`~mmfuse.types.Batch`, a ``DataLoader``) is iterated as it is.

    Args:
        data: The data argument.
        name: Its parameter name, used in error messages.
        batch_size: Sequences per batch (data sets only).
        shuffle: Shuffle data sets each epoch.
        num_workers: Loader worker processes (data sets only).
    """

    def __init__(self, data: Any, name: str, *, batch_size: int, shuffle: bool, num_workers: int = 0) -> None:
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

    def batches(self, seed: int = 0) -> Iterator[Batch]:
        """Yield the batches of one pass; ``seed`` orders a shuffled data set."""
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
