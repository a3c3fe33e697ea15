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

from mmfuse.layers.pretrained import PretrainedTextEncoder, decay_exempt_parameters
from mmfuse.train.config import TrainConfig

__all__ = ["backbone_parameters", "build_optimizer", "build_scheduler", "frozen_parameters"]


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


def backbone_parameters(model: nn.Module) -> set[int]:
    """The ids of the parameters of every pretrained backbone inside ``model`` (``ModelConfig.pretrained``)."""
    return {id(p) for m in model.modules() if isinstance(m, PretrainedTextEncoder) for p in m.backbone.parameters()}


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and normalisation weights get no weight decay.

    The fused AdamW kernel is used where PyTorch has one (CPU and CUDA), else the foreach one.

    A parameter is exempt from decay by mmfuse's one rule (:func:`mmfuse.layers.pretrained.decay_exempt_parameters`:
    at most one dimension, or a normalisation layer's). The parameters of pretrained backbones (see
    :func:`backbone_parameters`) go into groups of their own, after the others, at ``config.backbone_lr`` and
    ``config.backbone_weight_decay`` (each ``None``: the same as the rest). The parameters that ``config.freeze``
    selects go into groups of their own (after all others), at their rate times ``unfreeze_lr_scale``, whether
    they require gradients now or not, so that unfreezing them later needs no new optimiser (and a checkpoint
    restores it exactly). Parameters outside ``freeze`` that do not require gradients (a backbone built with
    ``trainable=False``) are left out. Each group has a ``"name"``: ``"rest"`` or ``"backbone"``, then
    ``"_no_decay"`` when exempt, then ``"_frozen"`` for the ``freeze`` groups.

    Raises:
        ValueError: when nothing is left to train (no trainable parameter outside ``freeze``), or a ``freeze``
            prefix selects no parameter.

    Example:
        >>> opt = build_optimizer(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), TrainConfig(weight_decay=0.1))
        >>> [(g["name"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
        [('rest', 0.1, 1), ('rest_no_decay', 0.0, 3)]
        >>> cfg = TrainConfig(lr=0.1, freeze=["0"], unfreeze_epoch=3, unfreeze_lr_scale=0.5)
        >>> opt = build_optimizer(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), cfg)
        >>> [(g["name"], g["lr"], len(g["params"])) for g in opt.param_groups]
        [('rest_no_decay', 0.1, 2), ('rest_frozen', 0.05, 1), ('rest_no_decay_frozen', 0.05, 1)]
    """
    exempt = decay_exempt_parameters(model)
    backbone = backbone_parameters(model)
    frozen = {id(p) for _, p in frozen_parameters(model, config.freeze)}
    rates = {
        "rest": (config.lr, config.weight_decay),
        "backbone": (
            config.lr if config.backbone_lr is None else config.backbone_lr,
            config.weight_decay if config.backbone_weight_decay is None else config.backbone_weight_decay,
        ),
    }
    groups: dict[str, dict[str, Any]] = {}
    for later in (False, True):  # groups of the parameters that train now first, then the freeze groups
        for part, (lr, wd) in rates.items():
            for no_decay in (False, True):
                name = part + ("_no_decay" if no_decay else "") + ("_frozen" if later else "")
                scale = config.unfreeze_lr_scale if later else 1.0
                groups[name] = {"name": name, "params": [], "lr": lr * scale, "weight_decay": 0.0 if no_decay else wd}
    for param in model.parameters():
        if id(param) not in frozen and not param.requires_grad:
            continue
        name = "backbone" if id(param) in backbone else "rest"
        name += ("_no_decay" if id(param) in exempt else "") + ("_frozen" if id(param) in frozen else "")
        groups[name]["params"].append(param)
    if not any(g["params"] for name, g in groups.items() if not name.endswith("_frozen")):
        if frozen:
            raise ValueError(
                f"The 'freeze' parameter of TrainConfig ({config.freeze}) leaves the model no trainable parameter "
                "before 'unfreeze_epoch'; freeze less of it."
            )
        raise ValueError("The model passed to Trainer.fit has no trainable parameters.")
    fused = _fusable(model)
    return torch.optim.AdamW(
        [g for g in groups.values() if g["params"]], lr=config.lr, fused=fused or None, foreach=None if fused else True
    )


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
