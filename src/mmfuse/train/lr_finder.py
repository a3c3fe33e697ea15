"""The learning-rate range test (Smith 2017): train briefly while the rate grows exponentially, watch the loss.

Example:
    >>> from mmfuse.train import find_lr
    >>> callable(find_lr)
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmfuse._io import atomic_write, json_fields
from mmfuse.train._data import BatchSource
from mmfuse.train.checkpoint import state_dict_cpu
from mmfuse.train.config import TrainConfig
from mmfuse.train.optim import build_optimizer, frozen_parameters
from mmfuse.train.seeding import (
    capture_rng_state,
    deterministic_mode,
    epoch_seed,
    resolve_device,
    restore_rng_state,
    seed_everything,
)
from mmfuse.train.trainer import forward_loss, loss_options, optimizer_step, precision_for, training_task
from mmfuse.types import Batch

__all__ = ["LRFinderResult", "find_lr", "suggest_lr"]

#: Fewest points of falling loss before a suggestion is made.
_MIN_POINTS = 3


def suggest_lr(lrs: list[float] | np.ndarray, losses: list[float] | np.ndarray) -> float | None:
    """The rate at the steepest descent of ``losses`` against log(lrs) before the lowest loss, at most a tenth of it.

    The slope of the (smoothed) loss against the logarithm of the rate is taken by central differences
    (``numpy.gradient``) over the points up to the lowest loss, leaving out the first tenth of all points (where
    the moving average still follows single batches). The rate of the most negative slope strictly before the
    lowest loss is taken (the lowest point itself only has a one-sided slope: the cliff into it), and the result
    is never more than a tenth of the rate at the lowest loss, which is already too high to train at.
    ``None`` when fewer than 3 points remain or the loss never falls there (the range started too high, or the
    model does not learn): widen the range.

    Args:
        lrs: ``[N]`` increasing positive rates.
        losses: ``[N]`` the loss seen at each rate.

    Raises:
        ValueError: when the two lengths differ or a rate is not positive.

    Example:
        >>> lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
        >>> suggest_lr(lrs, [1.0, 0.98, 0.6, 0.3, 2.0])
        0.01
        >>> suggest_lr(lrs, [1.0, 2.0, 3.0, 4.0, 5.0]) is None
        True
    """
    x = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"The 'lrs' and 'losses' of suggest_lr must be 1-D and of equal length. Got {x.shape} and {y.shape}."
        )
    if x.size and not bool(np.all(x > 0)):
        raise ValueError("The 'lrs' of suggest_lr must all be positive.")
    if x.size == 0:
        return None
    skip = x.size // 10
    stop = int(np.argmin(y)) + 1  # points up to and including the lowest loss
    if stop - skip < _MIN_POINTS:
        return None
    slopes = np.gradient(y[skip:stop], np.log10(x[skip:stop]))[:-1]  # [stop - skip - 1]: before the lowest loss
    best = int(np.argmin(slopes))
    if not slopes[best] < 0:
        return None
    return float(min(x[skip + best], x[stop - 1] / 10.0))


@dataclass
class LRFinderResult:
    """What :func:`find_lr` measured.

    Attributes:
        lrs: The rate of every step taken, increasing.
        losses: The smoothed training loss at each step (an exponential moving average with bias correction).
        raw_losses: The training loss of each step's batch.
        suggestion: :func:`suggest_lr` over ``lrs`` and ``losses``, or ``None`` (see there).
        diverged: Whether the test stopped early because the smoothed loss exceeded ``diverge_factor`` times its
            lowest value (or a loss was not finite).
        config: The settings of the test (start and end rate, steps, smoothing, divergence factor).

    Example:
        >>> r = LRFinderResult([1e-3, 1e-2, 1e-1], [1.0, 0.5, 0.4], [1.0, 0.4, 0.4], 1e-2, False)
        >>> r.to_dict()["suggestion"], r.lowest_loss_lr
        (0.01, 0.1)
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float | None
    diverged: bool
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def lowest_loss_lr(self) -> float | None:
        """The rate at the lowest smoothed loss (about ten times the suggestion, typically; too high to train at)."""
        if not self.losses:
            return None
        return float(self.lrs[int(np.argmin(self.losses))])

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (a non-finite loss becomes ``None``)."""
        names = ["lrs", "losses", "raw_losses", "suggestion", "lowest_loss_lr", "diverged", "config"]
        return json_fields(self, names)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        r"""Draw the smoothed (and raw) loss against the rate on a log axis into a PNG file, atomically.

        The suggestion is marked with a vertical line. Uses matplotlib's Agg canvas: no display is needed and the
        global pyplot state is not touched.

        Returns:
            ``path`` as a Path.

        Example:
            >>> import tempfile, pathlib
            >>> r = LRFinderResult([1e-3, 1e-2, 1e-1], [1.0, 0.5, 0.4], [1.0, 0.4, 0.4], 1e-2, False)
            >>> r.plot(pathlib.Path(tempfile.mkdtemp()) / "lr.png").read_bytes()[:4]
            b'\x89PNG'
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.0), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        if self.lrs:
            ax.plot(self.lrs, self.raw_losses, color="0.75", linewidth=0.8, label="loss")
            ax.plot(self.lrs, self.losses, color="C0", linewidth=1.6, label="smoothed loss")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="C3", linestyle="--", label=f"suggestion {self.suggestion:.2e}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title("Learning-rate range test" + (" (stopped: loss diverged)" if self.diverged else ""))
        ax.grid(True, which="both", alpha=0.3)
        if self.lrs:
            ax.legend(loc="best")
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.91)  # fixed: tight_layout costs a second
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"The {name!r} parameter of find_lr must be a positive finite number. Got {value!r} instead.")
    return float(value)


def _endless(source: BatchSource, seed: int) -> Iterator[Batch]:
    """Batches of epoch after epoch, each epoch ordered as the trainer orders it."""
    epoch = 0
    while True:
        empty = True
        for batch in source.batches(epoch_seed(seed, epoch)):
            empty = False
            yield batch
        if empty:
            raise ValueError("The 'train' data of find_lr are empty.")
        epoch += 1


def find_lr(
    model: nn.Module,
    train: Any,
    *,
    config: TrainConfig | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    num_steps: int = 100,
    smooth: float = 0.05,
    diverge_factor: float = 4.0,
    task: Any = None,
    level: Any = None,
) -> LRFinderResult:
    """Run the learning-rate range test on ``model`` and leave the model as it was.

    Step ``i`` of ``num_steps`` trains one batch at ``start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))``
    with the optimiser, precision, clipping, loss options and frozen parameters of ``config`` (its scheduler and
    epochs are not used), reading the training data epoch after epoch as the trainer does. The loss is smoothed
    by an exponential moving average (weight ``smooth`` on the newest loss, bias-corrected); the test stops when
    the smoothed loss exceeds ``diverge_factor`` times its lowest value, or a loss is not finite. The suggestion
    is the rate of steepest descent of the smoothed loss (:func:`suggest_lr`).

    Afterwards the model's weights and buffers, which parameters require gradients, its train/eval mode and
    device, and the global random generators (Python, NumPy, torch) are what they were before; the optimiser is
    a temporary one.

    Args:
        model: Called as ``model(batch)``, as for :meth:`Trainer.fit`.
        train: Training data: a data set (e.g. ``dataset.split("train")``) or a re-iterable of batches.
        config: The recipe whose optimiser settings are tested (default ``TrainConfig()``).
        start_lr: First rate.
        end_lr: Last rate (greater than ``start_lr``).
        num_steps: Most steps (at least 5).
        smooth: Weight of the newest loss in the moving average, in (0, 1]; 1 means no smoothing.
        diverge_factor: Stop once the smoothed loss exceeds this multiple of its lowest value (> 1).
        task: ``"classification"`` / ``"regression"``; default as for :meth:`Trainer.fit`.
        level: ``"sample"`` / ``"step"``; default as for :meth:`Trainer.fit`.

    Returns:
        The :class:`LRFinderResult`.

    Raises:
        ValueError: on a bad argument (named), empty data, or options the task does not allow.

    Example:
        >>> from mmfuse.models import ModelConfig, build_model
        >>> from mmfuse.types import Batch
        >>> net = build_model(ModelConfig({"x": 1}, out_dim=2, hidden=4, encoder="none"))
        >>> x = torch.tensor([-1.0, 1.0, -2.0, 2.0]).reshape(4, 1, 1)  # [B, T, D_x]
        >>> ones = torch.ones(4, 1, dtype=torch.bool)  # [B, T]
        >>> data = [Batch({"x": x}, {"x": ones}, ones, torch.tensor([0, 1, 0, 1]))]
        >>> before = {k: v.clone() for k, v in net.state_dict().items()}
        >>> result = find_lr(net, data, config=TrainConfig(device="cpu"), start_lr=1e-5, end_lr=10.0, num_steps=30)
        >>> 1e-5 < result.suggestion < 10.0, all(torch.equal(before[k], v) for k, v in net.state_dict().items())
        (True, True)
    """
    cfg = TrainConfig() if config is None else config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"The 'config' parameter of find_lr must be a TrainConfig. Got {type(cfg).__name__}.")
    start_lr = _positive("start_lr", start_lr)
    end_lr = _positive("end_lr", end_lr)
    if end_lr <= start_lr:
        raise ValueError(
            f"The 'end_lr' parameter of find_lr must be greater than 'start_lr' ({start_lr!r}). Got {end_lr!r} instead."
        )
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 5:
        raise ValueError(f"The 'num_steps' parameter of find_lr must be an integer >= 5. Got {num_steps!r} instead.")
    smooth = _positive("smooth", smooth)
    if smooth > 1:
        raise ValueError(f"The 'smooth' parameter of find_lr must be a number in (0, 1]. Got {smooth!r} instead.")
    diverge_factor = _positive("diverge_factor", diverge_factor)
    if diverge_factor <= 1:
        raise ValueError(
            f"The 'diverge_factor' parameter of find_lr must be a number greater than 1. "
            f"Got {diverge_factor!r} instead."
        )
    settings = {
        "start_lr": start_lr,
        "end_lr": end_lr,
        "num_steps": num_steps,
        "smooth": smooth,
        "diverge_factor": diverge_factor,
    }

    device = resolve_device(cfg.device)
    precision = precision_for(cfg.amp, device)
    source = BatchSource(train, "train", batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers)
    task_type, label_level = training_task(model, train, source, cfg, task, level, "find_lr")

    # Everything the test changes, to put back afterwards.
    weights = state_dict_cpu(model)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    home = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    rng = capture_rng_state()
    try:
        with deterministic_mode(cfg.deterministic):
            seed_everything(cfg.seed)
            model.to(device)
            for _, param in frozen_parameters(model, cfg.freeze):
                param.requires_grad_(False)
            optimizer = build_optimizer(model, cfg)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            loss_kwargs = loss_options(cfg, task_type, source, device)
            lrs, smoothed, raw, diverged = _range_test(
                model,
                _endless(source, cfg.seed),
                optimizer,
                params,
                precision,
                cfg,
                task_type,
                label_level,
                loss_kwargs,
                device,
                settings,
            )
    finally:
        model.to(home)
        model.load_state_dict(weights, strict=True)
        for param, flag in flags:
            param.requires_grad_(flag)
        model.train(was_training)
        restore_rng_state(*rng)
    return LRFinderResult(
        lrs=lrs,
        losses=smoothed,
        raw_losses=raw,
        suggestion=suggest_lr(lrs, smoothed),
        diverged=diverged,
        config=settings,
    )


def _range_test(
    model: nn.Module,
    batches: Iterator[Batch],
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    precision: Any,
    cfg: TrainConfig,
    task_type: Any,
    label_level: Any,
    loss_kwargs: dict[str, Any],
    device: torch.device,
    settings: dict[str, Any],
) -> tuple[list[float], list[float], list[float], bool]:
    """The steps of the test.

    Returns:
        The rates, smoothed losses and raw losses of the steps taken, and whether the loss diverged.
    """
    start, end, steps = settings["start_lr"], settings["end_lr"], settings["num_steps"]
    beta = 1.0 - settings["smooth"]
    lrs: list[float] = []
    smoothed: list[float] = []
    raw: list[float] = []
    average, lowest = 0.0, math.inf
    model.train()
    skipped = 0
    while len(lrs) < steps:
        lr = start * (end / start) ** (len(lrs) / (steps - 1))
        batch = next(batches)
        if batch.targets is None:
            raise ValueError("A training batch given to find_lr has no targets (targets=None).")
        loss, count = forward_loss(model, batch.to(device), precision, task_type, label_level, loss_kwargs)
        if count == 0:  # nothing labelled in this batch: take the next one at the same rate
            skipped += 1
            if skipped > 1000:
                raise ValueError("The training data given to find_lr yield no labelled rows.")
            continue
        value = float(loss.detach())
        if not math.isfinite(value):
            return lrs, smoothed, raw, True
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer_step(loss, optimizer, params, precision, cfg.grad_clip)
        average = beta * average + (1.0 - beta) * value
        current = average / (1.0 - beta ** (len(lrs) + 1))
        lrs.append(lr)
        raw.append(value)
        smoothed.append(current)
        lowest = min(lowest, current)
        if current > settings["diverge_factor"] * lowest:
            return lrs, smoothed, raw, True
    return lrs, smoothed, raw, False
