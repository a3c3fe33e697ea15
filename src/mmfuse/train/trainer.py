"""The training loop: AdamW, schedules, mixed precision, clipping, freezing, early stopping, checkpoints, resume."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse._io import json_fields
from mmfuse.errors import MmfuseWarning
from mmfuse.models import parameter_report
from mmfuse.train._data import BatchSource, task_spec_of
from mmfuse.train._state import write_json
from mmfuse.train.checkpoint import (
    load_last_checkpoint,
    save_best,
    save_last_checkpoint,
    state_dict_cpu,
)
from mmfuse.train.config import TrainConfig
from mmfuse.train.losses import IGNORE_INDEX, loss_and_count
from mmfuse.train.optim import _step_scheduler_per_batch, build_optimizer, build_scheduler, frozen_parameters
from mmfuse.train.predict import _infer_task, metrics_from_predictions, resolve_task_level, run_inference
from mmfuse.train.schedules import ramp_factor, steps_per_batch
from mmfuse.train.seeding import (
    capture_rng_state,
    deterministic_mode,
    epoch_seed,
    resolve_device,
    restore_rng_state,
    seed_everything,
)
from mmfuse.train.strategy import STRATEGIES, SingleProcess, Strategy, resolve_strategy
from mmfuse.types import LabelLevel, TaskType

__all__ = [
    "Precision",
    "TrainResult",
    "Trainer",
    "check_task_options",
    "forward_loss",
    "loss_options",
    "optimizer_step",
    "precision_for",
    "resolve_amp",
    "training_task",
]

logger = logging.getLogger(__name__)

#: Config fields that may change between an interrupted run and its resumption without a warning.
_RESUME_FREE_FIELDS = frozenset(
    {"epochs", "patience", "device", "num_workers", "restore_best", "checkpoint_every", "compile"}
)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        best_epoch: 1-based epoch whose weights scored best on the monitor (``None`` if no epoch ran).
        best_metric: The monitor's value at ``best_epoch`` (``None`` when it was not finite).
        monitor: The monitored name (``"loss"``, ``"f1_weighted"``...; ``"train_loss"`` without validation data).
        mode: ``"max"`` or ``"min"``.
        epochs_run: Epochs finished in total (including those before a resume).
        stopped_early: Whether early stopping ended the run.
        history: One dict per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_<metric>``..., ``lr``,
            ``trainable_params`` and ``frozen_params`` (counts during that epoch), ``modality_dropout`` (the rate
            used, for models with ``set_modality_dropout``), ``seconds``.
        out_dir: Where checkpoints were written, or ``None``.
        parameters: :func:`mmfuse.models.parameter_report` as dicts: ``"start"`` (the first epoch, with
            ``freeze`` applied) and, once ``unfreeze_epoch`` was reached, ``"after_unfreeze"``.
        precision: The mixed precision used for training: ``"off"``, ``"bf16"`` or ``"fp16"``.

    Example:
        >>> r = TrainResult(best_epoch=2, best_metric=0.9, monitor="accuracy", mode="max", epochs_run=3,
        ...                 stopped_early=False, history=[{"epoch": 1, "seconds": 0.5}, {"epoch": 2, "seconds": 0.25}])
        >>> r.train_seconds, r.to_dict()["best_epoch"]
        (0.75, 2)
    """

    best_epoch: int | None
    best_metric: float | None
    monitor: str
    mode: str
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    precision: str = "off"

    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds summed over the epochs of the history."""
        return float(sum(row.get("seconds") or 0.0 for row in self.history))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (a non-finite number in the history becomes ``None``)."""
        return json_fields(self)


@dataclass
class Precision:
    """How the training forward pass runs: autocast dtype (or none) and the gradient scaler of float16.

    One of the engine's public pieces (with :func:`forward_loss` and :func:`optimizer_step`) that the trainer,
    the LR finder and continual adaptation share.
    """

    mode: str  # "off", "bf16" or "fp16"
    device_type: str
    scaler: Any = None  # torch.amp.GradScaler with fp16, else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast in the mode's dtype, or a no-op context when the mode is ``"off"``."""
        if self.mode == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.mode == "bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)


def resolve_amp(amp: str, device: torch.device | str) -> str:
    """The mixed precision ``"off"``, ``"bf16"`` or ``"fp16"`` that ``TrainConfig.amp`` means on ``device``.

    ``"auto"`` is off on CPU; on CUDA it is ``"bf16"`` where ``torch.cuda.is_bf16_supported()``, else ``"fp16"``.

    Raises:
        ValueError: ``"fp16"`` on a CPU (float16 autocast with a gradient scaler needs CUDA), ``"bf16"`` on a CUDA
            device without bfloat16, or an unknown name.

    Example:
        >>> resolve_amp("auto", "cpu"), resolve_amp("bf16", "cpu")
        ('off', 'bf16')
    """
    kind = torch.device(device).type
    if amp == "off":
        return "off"
    if amp == "auto":
        if kind != "cuda":
            return "off"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "fp16":
        if kind != "cuda":
            raise ValueError(
                f"The 'amp' parameter of TrainConfig is 'fp16', which needs a CUDA device; this fit runs on {kind!r}. "
                "Use amp='bf16' or amp='off' on a CPU."
            )
        return "fp16"
    if amp == "bf16":
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(
                "The 'amp' parameter of TrainConfig is 'bf16', which this CUDA device does not support; "
                "use amp='fp16' or amp='auto'."
            )
        return "bf16"
    raise ValueError(f"The 'amp' parameter of TrainConfig must be one of ['auto', 'off', 'bf16', 'fp16']. Got {amp!r}.")


def precision_for(amp: str, device: torch.device) -> Precision:
    """The :class:`Precision` of ``TrainConfig.amp`` on ``device`` (with a gradient scaler for float16).

    Example:
        >>> precision_for("auto", torch.device("cpu")).mode
        'off'
    """
    mode = resolve_amp(amp, device)
    scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None
    return Precision(mode=mode, device_type=device.type, scaler=scaler)


def forward_loss(
    model: nn.Module,
    batch: Any,
    precision: Precision,
    task_type: TaskType,
    level: LabelLevel | None,
    loss_kwargs: dict[str, Any],
) -> tuple[Tensor, int]:
    """The training forward pass (under autocast when asked) and its loss, computed in float32."""
    with precision.autocast():
        outputs = model(batch)
    if outputs.dtype in (torch.float16, torch.bfloat16):
        outputs = outputs.float()
    return loss_and_count(outputs, batch, task_type, level=level, **loss_kwargs)


def optimizer_step(
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    precision: Precision,
    grad_clip: float | None,
) -> None:
    """Backward, (unscale and) clip, step: one optimiser update from ``loss``."""
    optimizer.zero_grad(set_to_none=True)
    scaler = precision.scaler
    if scaler is None:
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def _count_batches(source: BatchSource) -> int:
    """Batches of one pass over ``source`` (read once when the data cannot tell their number)."""
    if source.is_dataset:
        return max(1, math.ceil(len(source.data) / source.batch_size))
    try:
        n = len(source.data)
    except TypeError:
        n = sum(1 for _ in source.batches(0))
    return max(1, int(n))


def _modality_dropout_control(model: nn.Module, config: TrainConfig) -> tuple[Callable[[float], Any], float] | None:
    """``(set_modality_dropout, target rate)`` of a model that has the hook, else ``None``.

    Warns when ``config`` asks for a ramp that cannot be applied.
    """
    setter = getattr(model, "set_modality_dropout", None)
    target = getattr(model, "modality_dropout_target", None)
    if target is None:
        target = getattr(getattr(model, "config", None), "modality_dropout", None)
    if callable(setter) and isinstance(target, (int, float)) and not isinstance(target, bool):
        return setter, float(target)
    if config.modality_dropout_schedule != "constant" or config.modality_dropout_warmup_epochs:
        warnings.warn(
            f"TrainConfig asks for modality_dropout_schedule={config.modality_dropout_schedule!r} over "
            f"{config.modality_dropout_warmup_epochs} epoch(s), but the {type(model).__name__} has no "
            "'set_modality_dropout' method and 'modality_dropout_target'; the schedule is ignored.",
            MmfuseWarning,
            stacklevel=4,
        )
    return None


def _frozen_during(config: TrainConfig, epoch: int) -> bool:
    """Whether ``config.freeze`` holds during ``epoch`` (0-based)."""
    return bool(config.freeze) and (config.unfreeze_epoch is None or epoch + 1 < config.unfreeze_epoch)


def check_task_options(config: TrainConfig, task_type: TaskType) -> None:
    """Refuse classification-only options (class weights, label smoothing) for regression."""
    if task_type != TaskType.REGRESSION:
        return
    if config.class_weights is not None:
        raise ValueError(
            "The 'class_weights' parameter of TrainConfig applies to classification only; "
            f"this task is regression. Got {config.class_weights!r}."
        )
    if config.label_smoothing:
        raise ValueError(
            "The 'label_smoothing' parameter of TrainConfig applies to classification only; "
            f"this task is regression. Got {config.label_smoothing!r}."
        )


def training_task(
    model: nn.Module, train: Any, source: BatchSource, config: TrainConfig, task: Any, level: Any, owner: str
) -> tuple[TaskType, LabelLevel | None]:
    """The task type and label level a fit trains for, with ``config``'s task options checked against them.

    As :func:`~mmfuse.train.predict.resolve_task_level` tells them from the model, the data or ``task``/``level``;
    when it cannot, the task is inferred from the targets of ``source``'s first batch.

    Raises:
        ValueError: the training data are empty (``owner`` names the caller), or a classification-only option
            of ``config`` with a regression task.
    """
    task_type, label_level = resolve_task_level(model, train, task, level)
    if task_type is None:
        first = next(iter(source.batches(0)), None)
        if first is None:
            raise ValueError(f"The 'train' data of {owner} are empty.")
        task_type = _infer_task(first.targets)
    check_task_options(config, task_type)
    return task_type, label_level


def loss_options(config: TrainConfig, task_type: TaskType, train: Any, device: torch.device) -> dict[str, Any]:
    """Keyword arguments of :func:`~mmfuse.train.losses.loss_and_count` for training and validation.

    ``train`` (a data set or a re-iterable of batches, as :meth:`Trainer.fit` takes) is read only for
    ``class_weights="balanced"``.
    """
    class_weights = None
    if config.class_weights == "balanced" and task_type == TaskType.CLASSIFICATION:
        source = (
            train
            if isinstance(train, BatchSource)
            else BatchSource(train, "train", batch_size=config.batch_size, shuffle=False)
        )
        class_weights = _balanced_weights(source).to(device)
    return {"class_weights": class_weights, "label_smoothing": config.label_smoothing}


def _counts(model: nn.Module) -> dict[str, Any]:
    return parameter_report(model).to_dict()


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The scalar entries of a metrics dict (drops confusion matrices, per-class tables, names)."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if key in ("n", "n_targets"):  # counts, not scores
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
                value = value.item()
            else:
                continue
        out[key] = _finite_or_none(float(value))
    return out


def _improved(value: float | None, best: float | None, mode: str, min_delta: float) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _balanced_weights(source: BatchSource) -> Tensor:
    """``n / (k * n_c)`` per class over the labelled training rows; classes never seen weigh 1."""
    counts = torch.zeros(0, dtype=torch.float64)
    for batch in source.batches(0):
        if batch.targets is None:
            continue
        targets = batch.targets
        if targets.ndim == 2:  # step labels [B, T]
            targets = targets[batch.padding_mask.to(torch.bool)]
        targets = targets[targets != IGNORE_INDEX].long()
        if targets.numel() == 0:
            continue
        if int(targets.min()) < 0:
            raise ValueError(
                f"Classification targets must be class indices >= 0 (or {IGNORE_INDEX}). Got {int(targets.min())}."
            )
        bc = torch.bincount(targets, minlength=counts.numel()).to(torch.float64)
        if bc.numel() > counts.numel():
            counts = torch.cat([counts, torch.zeros(bc.numel() - counts.numel(), dtype=torch.float64)])
        counts += bc
    present = counts > 0
    if not bool(present.any()):
        raise ValueError("class_weights='balanced' found no labelled rows in the training data.")
    weights = torch.ones_like(counts)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights.to(torch.float32)


@dataclass(eq=False)
class _FitState:
    """What one fit carries from epoch to epoch: its fixed pieces, then its progress."""

    model: nn.Module  # the model being fitted (checkpoints, validation, best weights)
    net: nn.Module  # what the training forward pass calls: the model, or its DDP wrapper
    train_src: BatchSource
    val_src: BatchSource | None
    out_dir: Path | None  # None: nothing is written (no out_dir, or not the main process)
    model_config: dict[str, Any] | None
    device: torch.device
    task_type: TaskType
    label_level: LabelLevel | None
    monitor: str
    mode: str
    class_names: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    per_step: bool
    precision: Precision
    frozen: list[nn.Parameter]
    dropout: tuple[Callable[[float], Any], float] | None
    params: list[nn.Parameter]
    loss_kwargs: dict[str, Any]
    forward_loss: Callable[..., tuple[Tensor, int]] = field(default=lambda *a: forward_loss(*a))  # or compiled
    parameters: dict[str, Any] = field(default_factory=dict)
    unfrozen_counts: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0  # epochs finished
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    best_state: dict[str, Tensor] | None = None
    written_best: int = 0  # the best epoch whose weights out_dir holds


def _with_state(model: nn.Module, state: dict[str, Tensor] | None) -> nn.Module:
    """A copy of ``model`` holding ``state`` (the best weights kept in memory), for writing them."""
    clone = copy.deepcopy(model)
    if state is not None:
        clone.load_state_dict(state, strict=True)
    return clone


class Trainer:
    """Fits a model on training data with early stopping on validation data.

    The loop: AdamW (no decay on biases and norm weights) -> per epoch, freeze or unfreeze the ``freeze``
    parameters and set the modality-dropout rate of the schedule -> per batch, forward (under autocast with
    ``amp``), masked loss in float32 (cross-entropy or MSE over labelled samples / real steps), backward (scaled
    with float16), gradient clipping, step, one-cycle scheduler step -> per epoch, validation loss and metrics,
    epoch scheduler step, best-epoch tracking on the monitor, early stopping, checkpoints. Nothing is printed: follow a
    fit with callbacks (:class:`~mmfuse.train.Callback`) or the ``mmfuse.train`` logger.

    Where it runs is a strategy (:mod:`mmfuse.train.strategy`): one process, or data-parallel over a
    ``torch.distributed`` process group, with the same optimiser, schedule, clipping, precision and early stopping.

    Args:
        config: The recipe; defaults to ``TrainConfig()``.
        callbacks: Objects with any of ``on_train_begin``, ``on_batch_end``, ``on_epoch_end``, ``on_train_end``
            (called in the main process only).
        strategy: ``"auto"`` (data-parallel inside an initialised process group of several processes, else one
            process), ``"single"``, ``"ddp"``, or a :class:`~mmfuse.train.strategy.Strategy`.

    Example:
        >>> from mmfuse.types import Batch
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.lin = nn.Linear(1, 2)
        ...     def forward(self, batch):
        ...         return self.lin(batch.inputs["x"][:, 0, :])   # [B, 1] -> [B, C]
        >>> x = torch.tensor([[-1.0], [1.0], [-2.0], [2.0]]).reshape(4, 1, 1)
        >>> ones = torch.ones(4, 1, dtype=torch.bool)
        >>> data = [Batch({"x": x}, {"x": ones}, ones, torch.tensor([0, 1, 0, 1]))]
        >>> _ = torch.manual_seed(0)
        >>> cfg = TrainConfig(epochs=40, lr=0.1, monitor="loss", scheduler="none", patience=None)
        >>> result = Trainer(cfg).fit(Net(), data, data)
        >>> result.epochs_run, result.history[-1]["val_loss"] < result.history[0]["val_loss"]
        (40, True)
    """

    def __init__(
        self, config: TrainConfig | None = None, callbacks: Sequence[Any] = (), strategy: str | Strategy = "auto"
    ) -> None:
        if config is None:
            config = TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TypeError(f"The 'config' parameter of Trainer must be a TrainConfig. Got {type(config).__name__}.")
        self.config = config
        self.callbacks = list(callbacks)
        self._strategy_spec = strategy
        if not isinstance(strategy, Strategy) and strategy not in STRATEGIES:
            raise ValueError(
                f"The 'strategy' parameter of Trainer must be one of {list(STRATEGIES)}. Got {strategy!r} instead."
            )
        self.strategy: Strategy = SingleProcess()

    # -- callbacks -------------------------------------------------------------------------------------------
    def _emit(self, hook: str, *args: Any) -> None:
        if not self.strategy.is_main:
            return
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if callable(method):
                method(*args)

    # -- public ----------------------------------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        train: Any,
        val: Any = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        *,
        task: Any = None,
        level: Any = None,
        model_config: dict[str, Any] | None = None,
    ) -> TrainResult:
        """Train ``model`` (in place) and return the run's summary.

        Args:
            model: Called as ``model(batch)``; returns ``[B, C]`` (sample labels) or ``[B, T, C]`` (step labels).
            train: A data set of records (e.g. a :class:`~mmfuse.data.MultimodalDataset` view), read through
                :func:`mmfuse.data.make_loader` and reshuffled each epoch, or a re-iterable of
                :class:`~mmfuse.types.Batch` read as given.
            val: Validation data, same forms; ``None`` tracks the best epoch on the training loss instead.
            out_dir: Where checkpoints, ``history.json`` and the best model go; ``None`` keeps everything in memory.
            resume: Continue from ``out_dir/last`` (the same config and data give the same final weights as a run
                that was never interrupted).
            task: ``"classification"`` / ``"regression"`` / ``TaskSpec``; default: the model's config, the data
                set's task, else the dtype of the targets.
            level: ``"sample"`` / ``"step"``; default as for ``task``, else the rank of the model output.
            model_config: JSON-safe config written as ``config.json`` next to the weights of a model that is not a
                :class:`~mmfuse.models.MultimodalModel` (whose own config is written by ``save_model``).

        Returns:
            The :class:`TrainResult`. With ``restore_best`` the model ends with the best epoch's weights.

        Raises:
            FileNotFoundError / DataError: ``resume`` without a readable checkpoint (the message names the file).
            ValueError: inconsistent arguments (monitor unknown to the task, class weights for regression, ...).
        """
        cfg = self.config
        if resume and out_dir is None:
            raise ValueError("The 'resume' parameter of Trainer.fit needs an 'out_dir' to resume from.")
        if model_config is not None:
            try:  # fail now on a config that cannot be written, not after the first epoch
                json.dumps(dict(model_config), allow_nan=False)
            except (TypeError, ValueError) as err:
                raise ValueError(f"The 'model_config' parameter of Trainer.fit must be JSON-safe: {err}") from err
        device = resolve_device(cfg.device)
        self.strategy = resolve_strategy(self._strategy_spec)  # resolved per fit: a process group may start later
        with deterministic_mode(cfg.deterministic):
            return self._fit(
                model, train, val, None if out_dir is None else Path(out_dir), resume, task, level, model_config, device
            )

    # -- the loop --------------------------------------------------------------------------------------------
    def _fit(
        self,
        model: nn.Module,
        train: Any,
        val: Any,
        out_dir: Path | None,
        resume: bool,
        task: Any,
        level: Any,
        model_config: dict[str, Any] | None,
        device: torch.device,
    ) -> TrainResult:
        cfg = self.config
        strategy = self.strategy
        device = strategy.device_for(device)
        precision = precision_for(cfg.amp, device)  # fp16 on a CPU fails here, before any work
        train_src = BatchSource(train, "train", batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers)
        val_src = (
            None
            if val is None
            else BatchSource(val, "val", batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
        )
        task_type, label_level = training_task(model, train, train_src, cfg, task, level, "Trainer.fit")
        if val_src is None:
            monitor, mode = "train_loss", "min"
        else:
            monitor, mode = cfg.resolved_monitor(task_type.value), cfg.resolved_mode(task_type.value)
        class_names = getattr(task_spec_of(val), "class_names", None) or getattr(
            task_spec_of(train), "class_names", None
        )

        seed_everything(cfg.seed)
        model.to(device)
        frozen = [p for _, p in frozen_parameters(model, cfg.freeze)]
        flags = [(p, p.requires_grad) for p in model.parameters()]
        dropout = _modality_dropout_control(model, cfg)
        optimizer = build_optimizer(model, cfg)
        per_step = steps_per_batch(cfg.scheduler)
        scheduler = build_scheduler(
            optimizer, cfg, mode, steps_per_epoch=_count_batches(train_src) if per_step else None
        )
        state = _FitState(
            model=model,
            net=model,
            train_src=train_src,
            val_src=val_src,
            out_dir=out_dir if strategy.is_main else None,
            model_config=model_config,
            device=device,
            task_type=task_type,
            label_level=label_level,
            monitor=monitor,
            mode=mode,
            class_names=class_names,
            optimizer=optimizer,
            scheduler=scheduler,
            per_step=per_step,
            precision=precision,
            frozen=frozen,
            dropout=dropout,
            # Every parameter the optimiser holds; clipping skips those without a gradient (frozen ones).
            params=[p for group in optimizer.param_groups for p in group["params"]],
            loss_kwargs=loss_options(cfg, task_type, train_src, device),
        )
        try:
            self._count_parameters(state)
            if resume and out_dir is not None:  # fit() refuses resume without out_dir
                self._restore(state, out_dir)
            state.net = strategy.wrap(model, device)  # after a resume: DDP broadcasts the restored weights
            if cfg.compile:  # forward, loss and (through AOTAutograd) backward as compiled graphs
                state.forward_loss = torch.compile(forward_loss)
            return self._loop(state, resume)
        finally:  # a fit changes neither which parameters train nor the model's modality-dropout rate
            for param, flag in flags:
                param.requires_grad_(flag)
            if dropout is not None:
                dropout[0](dropout[1])

    @staticmethod
    def _count_parameters(state: _FitState) -> None:
        """Parameter counts before and after unfreezing (the flags are set again at the start of every epoch)."""
        for param in state.frozen:
            param.requires_grad_(False)
        state.parameters = {"start": _counts(state.model)}
        for param in state.frozen:
            param.requires_grad_(True)
        state.unfrozen_counts = _counts(state.model)

    def _restore(self, state: _FitState, out_dir: Path) -> None:
        """Load the model, optimiser, schedule, scaler, RNG and progress of ``out_dir/last`` into ``state``."""
        ck = load_last_checkpoint(out_dir)
        self._check_resume_config(ck.trainer_state.get("config", {}), ck.directory)
        state.model.load_state_dict(ck.model_state, strict=True)
        state.optimizer.load_state_dict(ck.optimizer_state)
        if state.scheduler is not None and ck.scheduler_state is not None:
            state.scheduler.load_state_dict(ck.scheduler_state)
        if state.precision.scaler is not None and ck.scaler_state:
            state.precision.scaler.load_state_dict(ck.scaler_state)
        restore_rng_state(ck.rng_tensors, ck.rng_info)
        st = ck.trainer_state
        state.epoch, state.history = ck.epoch, list(st.get("history", []))
        state.best_epoch, state.best_metric = st.get("best_epoch"), st.get("best_metric")
        state.bad_epochs, state.stopped_early = int(st.get("bad_epochs", 0)), bool(st.get("stopped_early", False))
        state.best_state = ck.best_state
        logger.info("Resuming from %s after epoch %d", ck.directory, ck.epoch)

    def _loop(self, state: _FitState, resume: bool) -> TrainResult:
        cfg = self.config
        self._emit("on_train_begin", {"epochs": cfg.epochs, "start_epoch": state.epoch + 1, "resumed": resume})
        while state.epoch < cfg.epochs and not state.stopped_early:
            row, value = self._epoch(state)
            improved = self._track_best(state, value)
            row["seconds"] = round(time.perf_counter() - row.pop("_started"), 4)
            state.history.append(row)
            self._write_checkpoint(state)
            logger.info("epoch %d/%d %s", state.epoch, cfg.epochs, {k: v for k, v in row.items() if k != "epoch"})
            self._emit(
                "on_epoch_end",
                state.epoch,
                {
                    **row,
                    "best_epoch": state.best_epoch,
                    "best_metric": state.best_metric,
                    "monitor": state.monitor,
                    "improved": improved,
                },
            )
        self.strategy.barrier()  # the main process has written its files before any process returns
        return self._finish(state)

    def _epoch(self, state: _FitState) -> tuple[dict[str, Any], float | None]:
        """Train and validate one epoch; return its history row and the monitored value."""
        cfg = self.config
        started = time.perf_counter()
        epoch = state.epoch
        is_frozen = _frozen_during(cfg, epoch)
        for param in state.frozen:
            param.requires_grad_(not is_frozen)
        counts = parameter_report(state.model)
        rate = None
        if state.dropout is not None:
            rate = state.dropout[1] * ramp_factor(
                cfg.modality_dropout_schedule, epoch, cfg.modality_dropout_warmup_epochs
            )
            state.dropout[0](rate)
        lr = float(state.optimizer.param_groups[0]["lr"])
        train_loss = self._train_epoch(state)
        row: dict[str, Any] = {"_started": started, "epoch": epoch + 1, "train_loss": train_loss}
        value = train_loss if state.val_src is None else self._validate(state, row)
        scheduler = state.scheduler
        if scheduler is not None and not state.per_step:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(value if value is not None else float("nan"))
            else:
                scheduler.step()
        row["lr"] = lr
        row["trainable_params"] = counts.trainable
        row["frozen_params"] = counts.frozen
        if rate is not None:
            row["modality_dropout"] = rate
        return row, value

    def _validate(self, state: _FitState, row: dict[str, Any]) -> float | None:
        """Score the validation data into ``row`` (``val_loss``, ``val_<metric>``); return the monitored value."""
        assert state.val_src is not None  # only called with validation data
        predictions, val_loss = run_inference(
            state.model, state.val_src.batches(), state.device, state.task_type, state.label_level, state.loss_kwargs
        )
        if state.label_level is None:
            state.label_level = LabelLevel(predictions.level)
        row["val_loss"] = _finite_or_none(val_loss)
        metrics = _scalar_metrics(metrics_from_predictions(predictions, state.class_names))
        row.update({f"val_{k}": v for k, v in metrics.items()})
        if state.monitor == "loss":
            return row["val_loss"]
        if state.monitor in metrics:
            return metrics[state.monitor]
        raise ValueError(
            f"The 'monitor' parameter of TrainConfig is {state.monitor!r}, which the {state.task_type.value} metrics "
            f"do not provide. Valid: {['loss', *sorted(metrics)]}."
        )

    def _track_best(self, state: _FitState, value: float | None) -> bool:
        """Advance the epoch counter, keep the best weights, count bad epochs; return whether ``value`` improved."""
        cfg = self.config
        improved = _improved(value, state.best_metric, state.mode, cfg.min_delta)
        state.epoch += 1
        if improved or state.best_epoch is None:
            state.best_epoch = state.epoch
            state.best_metric = value if improved else state.best_metric
            state.best_state = state_dict_cpu(state.model)
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        if cfg.patience is not None and state.val_src is not None and state.bad_epochs >= cfg.patience:
            state.stopped_early = True
        return improved

    def _write_checkpoint(self, state: _FitState) -> None:
        """The best model, ``history.json`` and the resumable ``last/`` checkpoint, every ``checkpoint_every``.

        Written after the last epoch in any case; the best weights wait in memory (``state.best_state``) between
        checkpoints, so a resumed run restores them from ``last/``.
        """
        out_dir = state.out_dir
        if out_dir is None:
            return
        every = self.config.checkpoint_every
        last = state.stopped_early or state.epoch >= self.config.epochs
        if not last and (every is None or state.epoch % every):
            return
        trainer_state = {
            "best_epoch": state.best_epoch,
            "best_metric": state.best_metric,
            "monitor": state.monitor,
            "mode": state.mode,
            "bad_epochs": state.bad_epochs,
            "stopped_early": state.stopped_early,
            "task": state.task_type.value,
            "level": None if state.label_level is None else state.label_level.value,
            "precision": state.precision.mode,
            "config": self.config.to_dict(),
            "history": state.history,
        }
        if state.best_epoch is not None and state.best_epoch > state.written_best:
            best = state.model if state.best_epoch == state.epoch else _with_state(state.model, state.best_state)
            save_best(best, out_dir, {**trainer_state, "epoch": state.best_epoch}, state.model_config)
            state.written_best = state.best_epoch
        write_json(out_dir / "history.json", state.history)
        rng_tensors, rng_info = capture_rng_state()
        save_last_checkpoint(
            out_dir,
            epoch=state.epoch,
            model=state.model,
            best_state=state.best_state,
            optimizer=state.optimizer,
            scheduler=state.scheduler,
            rng_tensors=rng_tensors,
            rng_info=rng_info,
            trainer_state=trainer_state,
            scaler=state.precision.scaler,
        )

    def _finish(self, state: _FitState) -> TrainResult:
        """Restore the best weights (``restore_best``) and build the :class:`TrainResult`."""
        cfg = self.config
        if cfg.restore_best and state.best_state is not None:
            state.model.load_state_dict(state.best_state, strict=True)
        reached = cfg.unfreeze_epoch is not None and any(row["epoch"] >= cfg.unfreeze_epoch for row in state.history)
        if state.frozen and reached:
            state.parameters["after_unfreeze"] = state.unfrozen_counts
        result = TrainResult(
            best_epoch=state.best_epoch,
            best_metric=_finite_or_none(state.best_metric),
            monitor=state.monitor,
            mode=state.mode,
            epochs_run=state.epoch,
            stopped_early=state.stopped_early,
            history=state.history,
            out_dir=state.out_dir,
            parameters=state.parameters,
            precision=state.precision.mode,
        )
        self._emit("on_train_end", result)
        return result

    def _train_epoch(self, state: _FitState) -> float:
        """One pass over the training batches; the mean loss over the labelled rows of every process."""
        cfg, strategy = self.config, self.strategy
        epoch = state.epoch
        step_scheduler = state.scheduler if state.per_step else None
        state.net.train()
        total, rows = 0.0, 0.0
        for index, full in enumerate(state.train_src.batches(epoch_seed(cfg.seed, epoch))):
            if full.targets is None:
                raise ValueError(f"Training batch {index} of epoch {epoch + 1} has no targets (targets=None).")
            batch, real = strategy.shard(full)
            batch = batch.to(state.device)
            loss, count = state.forward_loss(
                state.net, batch, state.precision, state.task_type, state.label_level, state.loss_kwargs
            )
            count = count if real else 0
            weighted, global_count, finite = strategy.weigh(loss, count)
            if global_count == 0:
                continue
            if not finite:
                raise FloatingPointError(
                    f"The training loss became {float(loss)} at epoch {epoch + 1}, batch {index}; "
                    "lower 'lr' or set 'grad_clip' in TrainConfig, and check the inputs for NaN."
                )
            optimizer_step(weighted, state.optimizer, state.params, state.precision, cfg.grad_clip)
            if step_scheduler is not None:
                _step_scheduler_per_batch(step_scheduler)
            value = float(loss.detach())
            total += value * count
            rows += count
            self._emit("on_batch_end", index, {"epoch": epoch + 1, "loss": value})
        total, rows = strategy.all_sum([total, rows])
        if rows == 0:
            raise ValueError(f"The training data yielded no labelled rows in epoch {epoch + 1}.")
        return total / rows

    def _check_resume_config(self, saved: dict[str, Any], directory: Path) -> None:
        current = self.config.to_dict()
        free = _RESUME_FREE_FIELDS
        if self.config.scheduler == "onecycle":  # its total number of steps is fixed by 'epochs'
            free = free - {"epochs"}
        changed = sorted(k for k in current if k not in free and saved.get(k, current[k]) != current[k])
        if changed:
            warnings.warn(
                f"Resuming from {str(directory)!r} with a TrainConfig that differs in {changed} from the one the "
                "checkpoint was written with; the result will not match an uninterrupted run.",
                MmfuseWarning,
                stacklevel=5,
            )
