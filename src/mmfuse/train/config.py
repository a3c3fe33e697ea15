"""The training recipe as one typed, validated, JSON-safe dataclass."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmfuse.metrics import default_monitor, metric_info_for_column

__all__ = ["TrainConfig", "monitor_mode"]

SCHEDULERS: tuple[str, ...] = ("cosine", "onecycle", "plateau", "none")
OPTIMIZERS: tuple[str, ...] = ("adamw",)
MODES: tuple[str, ...] = ("auto", "max", "min")
RAMPS: tuple[str, ...] = ("constant", "linear", "cosine")
AMP_MODES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")


def monitor_mode(monitor: str) -> str:
    """Return ``"min"`` or ``"max"``: the direction in which ``monitor`` improves, from the metric registry.

    The name may carry a ``val_`` prefix. The direction is the registered metric's (:mod:`mmfuse.metrics`), the
    one table every consumer reads; register a metric of your own with
    :func:`mmfuse.metrics.register_metric`, or set ``TrainConfig.mode``.

    Raises:
        ValueError: when ``monitor`` names no registered metric.

    Example:
        >>> monitor_mode("f1_weighted"), monitor_mode("mae"), monitor_mode("val_loss")
        ('max', 'min', 'min')
    """
    try:
        return metric_info_for_column(monitor).mode
    except ValueError as exc:
        raise ValueError(
            f"The 'mode' of TrainConfig cannot be inferred for monitor {monitor!r}: set mode='max' or mode='min', "
            f"or register the metric. {exc}"
        ) from None


def _fail(field_name: str, expected: str, got: Any) -> ValueError:
    return ValueError(f"The {field_name!r} parameter of TrainConfig must be {expected}. Got {got!r} instead.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrainConfig:
    """How a model is fitted: optimiser, schedule, early stopping, seeds and device.

    The optimiser is always AdamW; biases and normalisation weights (every parameter with at most one
    dimension) get no weight decay.

    Attributes:
        epochs: Maximum number of passes over the training data.
        batch_size: Sequences per mini-batch when a data set is given (ignored for lists of batches).
        lr: Peak learning rate.
        weight_decay: AdamW decoupled weight decay of the matrices (not of biases or norm weights).
        optimizer: Must be ``"adamw"``; kept so configs read back state what was used.
        scheduler: ``"cosine"`` (linear warm-up over ``warmup_epochs``, then cosine decay over the remaining
            epochs; stepped once per epoch), ``"onecycle"`` (``torch.optim.lr_scheduler.OneCycleLR`` over
            ``epochs * batches per epoch`` optimiser steps, rising from ``lr / 25`` to ``lr`` during the first
            ``warmup_epochs / epochs`` of the run, then annealing to ``lr / 25e4`` by cosine, with AdamW's beta1
            cycled between 0.95 and 0.85; stepped after every optimiser step), ``"plateau"`` (multiply the rate
            by ``plateau_factor`` after ``plateau_patience`` epochs without improvement of the monitor; stepped
            once per epoch) or ``"none"``.
        warmup_epochs: Epochs of linear warm-up of the cosine schedule, or of the rising phase of the one-cycle
            schedule (0 disables warm-up; with ``"onecycle"`` it must be smaller than ``epochs``).
        plateau_factor: Factor in (0, 1) applied by the plateau scheduler.
        plateau_patience: Epochs without improvement before the plateau scheduler lowers the rate.
        grad_clip: Maximum global L2 norm of the gradients; ``None`` disables clipping.
        patience: Stop after this many epochs without improvement of the monitor; ``None`` disables early
            stopping.
        min_delta: Smallest change of the monitor that counts as an improvement.
        monitor: Validation quantity that picks the best epoch: ``"loss"`` (the validation loss) or a key of
            the metrics dict (``"f1_weighted"``, ``"accuracy"``, ``"mae"``, ...). ``"auto"`` means
            ``"f1_weighted"`` for classification and ``"mae"`` for regression.
        mode: ``"max"``, ``"min"`` or ``"auto"`` (inferred from the monitor's name).
        class_weights: ``"balanced"`` weighs each class by ``n / (k * n_c)`` over the training labels
            (classification only); ``None`` weighs all classes alike.
        label_smoothing: Cross-entropy label smoothing in [0, 1).
        seed: Seed of Python, NumPy and torch, and of the shuffling order of every epoch.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or ``"auto"`` (CUDA when available).
        num_workers: Data-loader worker processes.
        deterministic: Ask torch for deterministic kernels during training (slower on GPU).
        restore_best: After training, load the weights of the best epoch into the model.
        modality_dropout_schedule: How the model's modality-dropout rate reaches its configured target
            (``model.modality_dropout_target``) for models that have ``set_modality_dropout``: ``"constant"``
            (the target from the first epoch), ``"linear"`` or ``"cosine"`` (a ramp from 0 at the first epoch
            to the target at epoch ``modality_dropout_warmup_epochs + 1``).
        modality_dropout_warmup_epochs: Epochs of that ramp (0: the target from the first epoch).
        freeze: Parameter-name prefixes (``"encoders.text"``, ``"projections"``) of parameters held fixed at
            the start of training; each prefix must match at least one parameter.
        unfreeze_epoch: 1-based epoch from which the frozen parameters train again; ``None`` keeps them
            frozen for the whole fit.
        unfreeze_lr_scale: Factor on the learning rate of the once-frozen parameters (their own optimiser
            parameter groups, so that the schedule and resumption treat them like the others).
        backbone_lr: Learning rate of the pretrained backbones inside the model (``ModelConfig.pretrained``;
            typically 10-100x below ``lr``, e.g. 2e-5); ``None``: ``lr``. Their parameter groups come after the
            others'; a backbone also named in ``freeze`` trains from ``unfreeze_epoch`` at
            ``backbone_lr * unfreeze_lr_scale``.
        backbone_weight_decay: Weight decay of those backbones' matrices; ``None``: ``weight_decay``.
        amp: Mixed precision of the training forward pass: ``"off"``; ``"bf16"`` (bfloat16 autocast, on CPU
            or CUDA); ``"fp16"`` (float16 autocast with a gradient scaler, CUDA only); ``"auto"`` (bf16 on a
            CUDA device that supports it, else fp16 with a gradient scaler on CUDA; off on CPU). Losses are
            computed in float32; validation runs in full precision.
        checkpoint_every: With an ``out_dir``, write the resumable ``last/`` checkpoint, the best model and
            ``history.json`` after every this many epochs and after the last one; ``None``: after the last one
            only. A resumed run restarts from the latest checkpoint and ends with the same weights either way.
        compile: Compile the training step (forward, loss and backward) with ``torch.compile`` (inductor, CPU or
            CUDA). Same maths up to float rounding; the first steps pay the compilation (tens of seconds), so it
            pays off on long fits, not on small ones.

    Example:
        >>> cfg = TrainConfig(epochs=5, lr=1e-3, monitor="accuracy")
        >>> cfg.resolved_mode("classification")
        'max'
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    warmup_epochs: int = 1
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    grad_clip: float | None = 1.0
    patience: int | None = 10
    min_delta: float = 0.0
    monitor: str = "auto"
    mode: str = "auto"
    class_weights: str | None = None
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    deterministic: bool = False
    restore_best: bool = True
    modality_dropout_schedule: str = "constant"
    modality_dropout_warmup_epochs: int = 0
    freeze: list[str] = field(default_factory=list)
    unfreeze_epoch: int | None = None
    unfreeze_lr_scale: float = 1.0
    backbone_lr: float | None = None
    backbone_weight_decay: float | None = None
    amp: str = "auto"
    checkpoint_every: int | None = 1
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise _fail(name, "a positive integer", value)
        for name in ("warmup_epochs", "plateau_patience", "num_workers", "modality_dropout_warmup_epochs"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise _fail(name, "a non-negative integer", value)
        if not _is_int(self.seed) or self.seed < 0:
            raise _fail("seed", "a non-negative integer", self.seed)
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 1):
            raise _fail("patience", "a positive integer or None", self.patience)
        if self.checkpoint_every is not None and (not _is_int(self.checkpoint_every) or self.checkpoint_every < 1):
            raise _fail("checkpoint_every", "a positive integer or None", self.checkpoint_every)
        if not isinstance(self.compile, bool):
            raise _fail("compile", "True or False", self.compile)
        if not _is_number(self.lr) or self.lr <= 0:
            raise _fail("lr", "a positive finite number", self.lr)
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise _fail("weight_decay", "a non-negative finite number", self.weight_decay)
        if not _is_number(self.min_delta) or self.min_delta < 0:
            raise _fail("min_delta", "a non-negative finite number", self.min_delta)
        if not _is_number(self.plateau_factor) or not 0 < self.plateau_factor < 1:
            raise _fail("plateau_factor", "a number in (0, 1)", self.plateau_factor)
        if not _is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise _fail("label_smoothing", "a number in [0, 1)", self.label_smoothing)
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip <= 0):
            raise _fail("grad_clip", "a positive finite number or None", self.grad_clip)
        if self.optimizer not in OPTIMIZERS:
            raise _fail("optimizer", f"one of {list(OPTIMIZERS)}", self.optimizer)
        if self.scheduler not in SCHEDULERS:
            raise _fail("scheduler", f"one of {list(SCHEDULERS)}", self.scheduler)
        if self.mode not in MODES:
            raise _fail("mode", f"one of {list(MODES)}", self.mode)
        if self.class_weights not in (None, "balanced"):
            raise _fail("class_weights", "'balanced' or None", self.class_weights)
        if not isinstance(self.monitor, str) or not self.monitor.strip():
            raise _fail(
                "monitor", "a non-empty metric name such as 'f1_weighted', 'accuracy', 'loss' or 'mae'", self.monitor
            )
        if self.monitor != "auto" and self.mode == "auto":
            monitor_mode(self.monitor)  # raises when the direction cannot be inferred
        if not isinstance(self.device, str) or not _valid_device(self.device):
            raise _fail("device", "'cpu', 'cuda', 'cuda:<index>' or 'auto'", self.device)
        for name in ("deterministic", "restore_best"):
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, "a bool", getattr(self, name))
        if self.scheduler == "onecycle" and self.warmup_epochs >= self.epochs:
            raise _fail(
                "warmup_epochs", f"smaller than 'epochs' ({self.epochs}) with scheduler='onecycle'", self.warmup_epochs
            )
        if self.modality_dropout_schedule not in RAMPS:
            raise _fail("modality_dropout_schedule", f"one of {list(RAMPS)}", self.modality_dropout_schedule)
        if self.amp not in AMP_MODES:
            raise _fail("amp", f"one of {list(AMP_MODES)}", self.amp)
        if isinstance(self.freeze, str) or not isinstance(self.freeze, (list, tuple)):
            raise _fail("freeze", "a list of parameter-name prefixes such as ['encoders.text']", self.freeze)
        for prefix in self.freeze:
            if not isinstance(prefix, str) or not prefix.strip(". "):
                raise _fail("freeze", "a list of non-empty parameter-name prefixes", self.freeze)
        self.freeze = list(self.freeze)
        if self.unfreeze_epoch is not None:
            if not _is_int(self.unfreeze_epoch) or self.unfreeze_epoch < 1:
                raise _fail("unfreeze_epoch", "a positive integer (1-based epoch) or None", self.unfreeze_epoch)
            if not self.freeze:
                raise _fail("unfreeze_epoch", "None when 'freeze' is empty (nothing is frozen)", self.unfreeze_epoch)
        if not _is_number(self.unfreeze_lr_scale) or self.unfreeze_lr_scale <= 0:
            raise _fail("unfreeze_lr_scale", "a positive finite number", self.unfreeze_lr_scale)
        if self.backbone_lr is not None:
            if not _is_number(self.backbone_lr) or self.backbone_lr <= 0:
                raise _fail("backbone_lr", "a positive finite number or None (the same as 'lr')", self.backbone_lr)
            self.backbone_lr = float(self.backbone_lr)
        if self.backbone_weight_decay is not None:
            if not _is_number(self.backbone_weight_decay) or self.backbone_weight_decay < 0:
                raise _fail(
                    "backbone_weight_decay",
                    "a non-negative finite number or None (the same as 'weight_decay')",
                    self.backbone_weight_decay,
                )
            self.backbone_weight_decay = float(self.backbone_weight_decay)
        self.lr = float(self.lr)
        self.weight_decay = float(self.weight_decay)
        self.min_delta = float(self.min_delta)
        self.plateau_factor = float(self.plateau_factor)
        self.label_smoothing = float(self.label_smoothing)
        self.unfreeze_lr_scale = float(self.unfreeze_lr_scale)
        if self.grad_clip is not None:
            self.grad_clip = float(self.grad_clip)

    def resolved_monitor(self, task: str) -> str:
        """Return the monitored name for ``task`` (``"classification"`` or ``"regression"``), resolving ``auto``.

        Example:
            >>> TrainConfig().resolved_monitor("regression")
            'mae'
        """
        if self.monitor != "auto":
            return self.monitor.removeprefix("val_")
        return default_monitor(str(getattr(task, "value", task)))

    def resolved_mode(self, task: str) -> str:
        """Return ``"max"`` or ``"min"`` for the monitor of ``task``, resolving ``auto``.

        Example:
            >>> TrainConfig(monitor="loss").resolved_mode("classification")
            'min'
        """
        if self.mode != "auto":
            return self.mode
        return monitor_mode(self.resolved_monitor(task))

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-safe dict.

        Example:
            >>> TrainConfig(epochs=3).to_dict()["epochs"]
            3
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build a configuration from :meth:`to_dict` output; unknown keys are refused.

        Raises:
            ValueError: naming unknown keys, or the first invalid value.

        Example:
            >>> TrainConfig.from_dict({"epochs": 2, "scheduler": "none"}).scheduler
            'none'
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"TrainConfig.from_dict expects a mapping. Got {type(data).__name__} instead.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown TrainConfig keys {unknown}. Valid keys: {sorted(known)}.")
        return cls(**dict(data))


def _valid_device(device: str) -> bool:
    if device in ("cpu", "cuda", "auto"):
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()
