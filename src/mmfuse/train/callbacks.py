"""Training callbacks: how a caller (the CLI's progress bar, a logger) follows a fit without the library printing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmfuse.train.trainer import TrainResult

__all__ = ["Callback", "HistoryRecorder"]


class Callback:
    """Base class of training callbacks; every hook does nothing unless overridden.

    The trainer also accepts any object that has some of these methods (duck typing): a missing hook is
    skipped. Hooks receive plain dicts and must not modify the model.

    Example:
        >>> class Losses(Callback):
        ...     def __init__(self):
        ...         self.seen = []
        ...     def on_epoch_end(self, epoch, logs):
        ...         self.seen.append((epoch, logs["train_loss"]))
        >>> cb = Losses()
        >>> cb.on_epoch_end(1, {"train_loss": 0.5})
        >>> cb.seen
        [(1, 0.5)]
    """

    def on_train_begin(self, logs: Mapping[str, Any]) -> None:
        """Called once before the first epoch.

        ``logs`` holds ``epochs`` (the total), ``start_epoch`` (1-based) and ``resumed``.
        """

    def on_batch_end(self, batch: int, logs: Mapping[str, Any]) -> None:
        """Called after every optimiser step with the 0-based batch index, ``epoch`` and the batch ``loss``."""

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> None:
        """Called after every epoch (1-based).

        ``logs`` is the epoch's history row (losses, validation metrics, lr, seconds) plus ``best_epoch``,
        ``best_metric``, ``monitor`` and ``improved``.
        """

    def on_train_end(self, result: TrainResult) -> None:
        """Called once with the :class:`~mmfuse.train.TrainResult`."""


class HistoryRecorder(Callback):
    """A callback that keeps every epoch's logs in memory (handy in notebooks and tests).

    Example:
        >>> rec = HistoryRecorder()
        >>> rec.on_epoch_end(1, {"val_loss": 0.3})
        >>> rec.epochs
        [{'val_loss': 0.3}]
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.result: TrainResult | None = None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> None:
        """Store a copy of the epoch's logs."""
        self.epochs.append(dict(logs))

    def on_train_end(self, result: TrainResult) -> None:
        """Keep the result."""
        self.result = result
