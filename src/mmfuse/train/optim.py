"""The optimiser and the learning-rate schedule of a :class:`~mmfuse.train.config.TrainConfig`.

One place builds them for every training path (``Trainer``, the DDP strategy, ``adapt_model``, the LR finder):
AdamW with no decay on biases and normalisation weights, the ``freeze`` groups (a backbone that starts frozen
and is unfrozen later, at its own rate), and the schedules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmfuse.train.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "frozen_parameters"]

_NORM_TYPES: tuple[type[nn.Module], ...] = tuple(
    t
    for t in (
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        nn.modules.batchnorm._NormBase,
        getattr(nn, "RMSNorm", None),
    )
    if isinstance(t, type)
)


def frozen_parameters(model: nn.Module, prefixes: Sequence[str]) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs of ``model`` that the name ``prefixes`` select (``TrainConfig.freeze``).

    A prefix selects the parameter of that exact name and every parameter below it: ``"encoders.text"`` selects
    ``encoders.text.rnn.weight_ih_l0`` but not ``encoders.text2.weight``. A trailing ``"."`` is ignored.

    Raises:
        ValueError: naming a prefix that selects no parameter, and listing the model's top-level names.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
        >>> [name for name, _ in frozen_parameters(model, ["0"])]
        ['0.weight', '0.bias']
    """
    named = list(model.named_parameters())
    selected: dict[str, nn.Parameter] = {}
    for prefix in prefixes:
        stem = prefix.strip().rstrip(".")
        hits = [(name, p) for name, p in named if name == stem or name.startswith(stem + ".")]
        if not hits:
            top = sorted({name.split(".")[0] for name, _ in named})
            raise ValueError(
                f"The 'freeze' parameter of TrainConfig names {prefix!r}, which matches no parameter of the "
                f"{type(model).__name__}. Valid top-level names: {top} (prefixes may go deeper, such as "
                f"'{top[0] if top else 'encoders'}.<name>')."
            )
        selected.update(hits)
    return list(selected.items())


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and normalisation weights get no weight decay.

    The fused AdamW kernel is used where PyTorch has one (CPU and CUDA), else the foreach one.

    A parameter is exempt from decay when it has at most one dimension (biases, norm scales) or belongs to a
    normalisation layer. The parameters that ``config.freeze`` selects go into groups of their own (after the
    others), at ``lr * unfreeze_lr_scale``, whether they require gradients now or not, so that unfreezing them
    later needs no new optimiser (and a checkpoint restores it exactly).

    Raises:
        ValueError: when nothing is left to train (no trainable parameter outside ``freeze``), or a ``freeze``
            prefix selects no parameter.

    Example:
        >>> opt = build_optimizer(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), TrainConfig(weight_decay=0.1))
        >>> [(g["weight_decay"], len(g["params"])) for g in opt.param_groups]
        [(0.1, 1), (0.0, 3)]
        >>> cfg = TrainConfig(lr=0.1, freeze=["0"], unfreeze_epoch=3, unfreeze_lr_scale=0.5)
        >>> opt = build_optimizer(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), cfg)
        >>> [(g["lr"], len(g["params"])) for g in opt.param_groups]
        [(0.1, 2), (0.05, 1), (0.05, 1)]
    """
    norm_params: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            norm_params.update(id(p) for p in module.parameters(recurse=False))
    frozen = {id(p) for _, p in frozen_parameters(model, config.freeze)}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    frozen_decay: list[nn.Parameter] = []
    frozen_no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        exempt = param.ndim <= 1 or id(param) in norm_params
        if id(param) in frozen:
            (frozen_no_decay if exempt else frozen_decay).append(param)
        elif param.requires_grad:
            (no_decay if exempt else decay).append(param)
    if not decay and not no_decay:
        if frozen:
            raise ValueError(
                f"The 'freeze' parameter of TrainConfig ({config.freeze}) leaves the model no trainable parameter "
                "before 'unfreeze_epoch'; freeze less of it."
            )
        raise ValueError("The model passed to Trainer.fit has no trainable parameters.")
    later_lr = config.lr * config.unfreeze_lr_scale
    groups: list[dict[str, Any]] = [
        {"params": params, "weight_decay": wd}
        for params, wd in ((decay, config.weight_decay), (no_decay, 0.0))
        if params
    ]
    groups += [
        {"params": params, "weight_decay": wd, "lr": later_lr}
        for params, wd in ((frozen_decay, config.weight_decay), (frozen_no_decay, 0.0))
        if params
    ]
    fused = _fusable(model)
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused or None, foreach=None if fused else True)


def _fusable(model: nn.Module) -> bool:
    """AdamW's fused kernel where PyTorch has one (floating-point parameters on CPU or CUDA), else foreach.

    The fused kernel updates every parameter in one call instead of a Python loop over them (5x less CPU per
    step on the preset models); the arithmetic is AdamW's, rounded differently.
    """
    params = list(model.parameters())
    fusable = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return fusable


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, mode: str = "max", steps_per_epoch: int | None = None
) -> Any:
    """The learning-rate schedule of ``config``, or ``None`` for ``"none"``.

    ``"cosine"``: during warm-up epoch ``e`` (0-based) runs at ``lr * (e + 1) / (warmup_epochs + 1)``; then the
    rate follows half a cosine from ``lr`` towards 0 over the remaining epochs (stepped once per epoch).
    ``"plateau"``: ``ReduceLROnPlateau`` on the monitor, in direction ``mode`` (stepped once per epoch).
    ``"onecycle"``: ``OneCycleLR`` over ``epochs * steps_per_epoch`` optimiser steps with ``pct_start =
    warmup_epochs / epochs`` and each parameter group's rate as its peak (stepped after every optimiser step;
    see :func:`mmfuse.train.schedules.steps_per_batch`).

    Args:
        optimizer: The optimiser whose groups' ``lr`` are the peak rates.
        config: The recipe.
        mode: ``"max"`` or ``"min"``: the monitor's direction (plateau only).
        steps_per_epoch: Optimiser steps per epoch (needed by ``"onecycle"``).

    Raises:
        ValueError: ``"onecycle"`` without a positive ``steps_per_epoch``.

    Example:
        >>> opt = torch.optim.AdamW(nn.Linear(1, 1).parameters(), lr=1.0)
        >>> sched = build_scheduler(opt, TrainConfig(epochs=4, warmup_epochs=1, scheduler="cosine"))
        >>> lrs = []
        >>> for _ in range(4):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 3)); opt.step(); sched.step()
        >>> lrs
        [0.5, 1.0, 0.75, 0.25]
        >>> opt = torch.optim.AdamW(nn.Linear(1, 1).parameters(), lr=1.0)
        >>> cfg = TrainConfig(epochs=2, warmup_epochs=1, scheduler="onecycle")
        >>> sched = build_scheduler(opt, cfg, steps_per_epoch=3)
        >>> lrs = []
        >>> for _ in range(6):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 3)); opt.step(); sched.step()
        >>> lrs
        [0.04, 0.52, 1.0, 0.75, 0.25, 0.0]
    """
    if config.scheduler == "none":
        return None
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max" if mode == "max" else "min",
            factor=config.plateau_factor,
            patience=config.plateau_patience,
        )
    if config.scheduler == "onecycle":
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(
                "The 'steps_per_epoch' parameter of build_scheduler must be a positive integer with "
                f"scheduler='onecycle'. Got {steps_per_epoch!r} instead."
            )
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[float(group["lr"]) for group in optimizer.param_groups],
            total_steps=config.epochs * steps_per_epoch,
            pct_start=config.warmup_epochs / config.epochs,
            anneal_strategy="cos",
        )
    warmup, total = config.warmup_epochs, config.epochs

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _step_scheduler_per_batch(scheduler: Any) -> None:
    """Step a per-step scheduler, never past its last step.

    OneCycleLR's rate at step ``total_steps`` (one past the last) is not the final rate, so the schedule stops at
    step ``total_steps - 1``: a resumed run given more epochs goes on at the final rate.
    """
    total = getattr(scheduler, "total_steps", None)
    if total is None or scheduler.last_epoch + 1 < total:
        scheduler.step()
