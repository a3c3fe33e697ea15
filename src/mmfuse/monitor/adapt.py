"""Continual adaptation: fine-tune on a labelled buffer of recent data, replaying reference data.

:func:`adapt_model` fine-tunes a *copy* of the model on recent labelled sequences mixed with a replayed sample
of the reference (training) sequences, so the model learns the new conditions without forgetting the old
ones, and reports metrics before and after on held-out recent sequences and on held-out reference sequences.
:class:`ContinualAdapter` is the hook a live deployment calls: it keeps a bounded buffer of recent labelled
sequences and runs :func:`adapt_model` on demand (for example when a :class:`DriftMonitor` alerts).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmfuse._io import json_fields
from mmfuse.data import SequenceRecord, collate
from mmfuse.models import MultimodalModel
from mmfuse.train import TrainConfig, evaluate_model
from mmfuse.train.optim import build_optimizer
from mmfuse.train.trainer import forward_loss, loss_options, optimizer_step, precision_for
from mmfuse.types import Batch, TaskType

__all__ = ["AdaptationResult", "ContinualAdapter", "adapt_model"]

_SCALARS = ("accuracy", "f1_weighted", "f1_macro", "mae", "rmse", "pearson")


@dataclass
class AdaptationResult:
    """What :func:`adapt_model` did.

    Attributes:
        model: The fine-tuned copy (the input model is unchanged).
        before: ``{"recent": metrics, "reference": metrics}`` of the input model on the held-out sequences.
        after: The same for the fine-tuned model.
        n_recent_train: Recent sequences trained on.
        n_replay: Reference sequences replayed per epoch.
        epochs: Epochs run.
    """

    model: MultimodalModel
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    n_recent_train: int
    n_replay: int
    epochs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (without the model)."""
        return json_fields(self, exclude=("model",))


def _batches(records: Sequence[SequenceRecord], batch_size: int) -> list[Batch]:
    return [collate(records[i : i + batch_size]) for i in range(0, len(records), batch_size)]


def _scores(model: MultimodalModel, records: Sequence[SequenceRecord], task: str) -> dict[str, float]:
    if not records:
        return {}
    metrics = evaluate_model(model, _batches(records, 64), task)
    return {k: float(metrics[k]) for k in _SCALARS if k in metrics and metrics[k] is not None}


def adapt_model(
    model: MultimodalModel,
    recent: Sequence[SequenceRecord],
    reference: Sequence[SequenceRecord],
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    replay_ratio: float = 1.0,
    holdout: float = 0.3,
    batch_size: int = 16,
    seed: int = 0,
    config: TrainConfig | None = None,
) -> AdaptationResult:
    """Fine-tune a copy of ``model`` on recent labelled sequences with replay of reference sequences.

    Each step is the training engine's (:class:`~mmfuse.train.Trainer`'s public pieces): its AdamW with weight
    decay off for biases and norm weights, its precision, loss options and gradient clipping.

    Args:
        model: The deployed model (left unchanged).
        recent: Labelled recent sequences (normalised as the model expects).
        reference: Labelled reference (training-distribution) sequences to replay and to check forgetting on.
        epochs: Passes over the recent training part.
        lr: AdamW learning rate.
        replay_ratio: Reference sequences replayed per recent sequence, drawn afresh every epoch.
        holdout: Fraction of ``recent`` (and of ``reference``) held out for the before/after metrics.
        batch_size: Sequences per step.
        seed: Seeds the split, the replay draws and the shuffling.
        config: The optimiser recipe (``weight_decay``, ``grad_clip``, ``amp``, ``label_smoothing``...); default
            ``TrainConfig(lr=lr, grad_clip=1.0, amp="off")``. Its ``lr`` is used, ``epochs``, ``batch_size`` and
            ``seed`` come from the arguments above, and schedules, early stopping and ``freeze`` do not apply.

    Returns:
        :class:`AdaptationResult` with metrics before and after on held-out recent and reference sequences.

    Raises:
        ValueError: fewer than two recent sequences, no reference sequence, or bad parameters.
    """
    if len(recent) < 2 or len(reference) < 1:
        raise ValueError(
            f"adapt_model needs >= 2 recent and >= 1 reference sequences. Got {len(recent)} and {len(reference)}."
        )
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"The 'holdout' parameter of adapt_model must be in (0, 1). Got {holdout!r}.")
    if replay_ratio < 0 or epochs < 1 or lr <= 0 or batch_size < 1:
        raise ValueError("adapt_model needs replay_ratio >= 0, epochs >= 1, lr > 0 and batch_size >= 1.")
    rng = np.random.default_rng(seed)
    task = TaskType(model.config.task).value

    def split(records: Sequence[SequenceRecord]) -> tuple[list[SequenceRecord], list[SequenceRecord]]:
        order = rng.permutation(len(records))
        n_out = max(1, round(holdout * len(records))) if len(records) > 1 else 0
        return [records[i] for i in order[n_out:]], [records[i] for i in order[:n_out]]

    recent_train, recent_eval = split(recent)
    ref_train, ref_eval = split(reference)
    ref_train = ref_train or list(reference)
    before = {"recent": _scores(model, recent_eval, task), "reference": _scores(model, ref_eval, task)}
    tuned = copy.deepcopy(model)
    recipe = config if config is not None else TrainConfig(lr=lr, grad_clip=1.0, amp="off")
    device = next(tuned.parameters()).device
    task_type = TaskType(task)
    optimizer = build_optimizer(tuned, recipe)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    precision = precision_for(recipe.amp, device)
    loss_kwargs = loss_options(recipe, task_type, _batches(recent_train, batch_size), device)
    n_replay = round(replay_ratio * len(recent_train))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        replay = [ref_train[i] for i in rng.integers(0, len(ref_train), n_replay)] if n_replay else []
        pool = recent_train + replay
        order = torch.randperm(len(pool), generator=gen).tolist()
        tuned.train()
        for batch in _batches([pool[i] for i in order], batch_size):
            loss, count = forward_loss(tuned, batch.to(device), precision, task_type, None, loss_kwargs)
            if count:
                optimizer_step(loss, optimizer, params, precision, recipe.grad_clip)
    tuned.eval()
    after = {"recent": _scores(tuned, recent_eval, task), "reference": _scores(tuned, ref_eval, task)}
    return AdaptationResult(tuned, before, after, len(recent_train), n_replay, epochs)


class ContinualAdapter:
    """A bounded buffer of recent labelled sequences and the adaptation hook that uses it.

    Args:
        model: The deployed model.
        reference: Reference (training) sequences to replay.
        buffer_size: Most recent sequences kept.
        min_sequences: :meth:`adapt` refuses to run with fewer buffered sequences.
        **adapt_kwargs: Passed to :func:`adapt_model` (epochs, lr, replay_ratio, holdout, batch_size, seed).

    Attributes:
        history: The :class:`AdaptationResult` summaries of every run.
    """

    def __init__(
        self,
        model: MultimodalModel,
        reference: Sequence[SequenceRecord],
        *,
        buffer_size: int = 64,
        min_sequences: int = 8,
        **adapt_kwargs: Any,
    ) -> None:
        if buffer_size < 2 or min_sequences < 2:
            raise ValueError("ContinualAdapter needs buffer_size >= 2 and min_sequences >= 2.")
        self.model = model
        self.reference = list(reference)
        self.buffer: deque[SequenceRecord] = deque(maxlen=buffer_size)
        self.min_sequences = min_sequences
        self.adapt_kwargs = adapt_kwargs
        self.history: list[dict[str, Any]] = []

    def add(self, record: SequenceRecord) -> None:
        """Buffer one labelled recent sequence (the oldest falls out when full)."""
        if not isinstance(record, SequenceRecord):
            raise ValueError(f"ContinualAdapter.add expects a SequenceRecord. Got {type(record).__name__}.")
        self.buffer.append(record)

    @property
    def ready(self) -> bool:
        """Whether enough sequences are buffered to adapt."""
        return len(self.buffer) >= self.min_sequences

    def adapt(self, *, replace: bool = True) -> AdaptationResult:
        """Fine-tune on the buffer with replay; with ``replace`` the adapted model becomes :attr:`model`.

        Raises:
            ValueError: fewer than ``min_sequences`` buffered.
        """
        if not self.ready:
            raise ValueError(
                f"ContinualAdapter has {len(self.buffer)} buffered sequence(s); it needs {self.min_sequences}."
            )
        result = adapt_model(self.model, list(self.buffer), self.reference, **self.adapt_kwargs)
        self.history.append(result.to_dict())
        if replace:
            self.model = result.model
        return result
