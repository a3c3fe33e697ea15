"""The training loop: AdamW, a per-epoch schedule, gradient clipping, early stopping, checkpoints and resume."""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.errors import MmfuseWarning
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
from mmfuse.train.predict import _infer_task, metrics_from_predictions, resolve_task_level, run_inference
from mmfuse.train.seeding import (
    capture_rng_state,
    deterministic_mode,
    epoch_seed,
    resolve_device,
    restore_rng_state,
    seed_everything,
)
from mmfuse.types import LabelLevel, TaskType

__all__ = ["TrainResult", "Trainer", "build_optimizer", "build_scheduler"]

logger = logging.getLogger(__name__)

#: Config fields that may change between an interrupted run and its resumption without a warning.
_RESUME_FREE_FIELDS = frozenset({"epochs", "patience", "device", "num_workers", "restore_best"})

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
            ``seconds``.
        out_dir: Where checkpoints were written, or ``None``.

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

    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds summed over the epochs of the history."""
        return float(sum(row.get("seconds") or 0.0 for row in self.history))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "monitor": self.monitor,
            "mode": self.mode,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "history": [dict(row) for row in self.history],
            "out_dir": None if self.out_dir is None else str(self.out_dir),
        }


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and normalisation weights get no weight decay.

    A parameter is exempt from decay when it has at most one dimension (biases, norm scales) or belongs to a
    normalisation layer.

    Example:
        >>> opt = build_optimizer(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), TrainConfig(weight_decay=0.1))
        >>> [(g["weight_decay"], len(g["params"])) for g in opt.param_groups]
        [(0.1, 1), (0.0, 3)]
    """
    norm_params: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            norm_params.update(id(p) for p in module.parameters(recurse=False))
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or id(param) in norm_params else decay).append(param)
    if not decay and not no_decay:
        raise ValueError("The model passed to Trainer.fit has no trainable parameters.")
    groups = [
        {"params": params, "weight_decay": wd}
        for params, wd in ((decay, config.weight_decay), (no_decay, 0.0))
        if params
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, mode: str = "max") -> Any:
    """The learning-rate schedule of ``config`` (stepped once per epoch), or ``None`` for ``"none"``.

    ``"cosine"``: during warm-up epoch ``e`` (0-based) runs at ``lr * (e + 1) / (warmup_epochs + 1)``; then the
    rate follows half a cosine from ``lr`` towards 0 over the remaining epochs. ``"plateau"``: ``ReduceLROnPlateau``
    on the monitor, in direction ``mode``.

    Example:
        >>> opt = torch.optim.AdamW(nn.Linear(1, 1).parameters(), lr=1.0)
        >>> sched = build_scheduler(opt, TrainConfig(epochs=4, warmup_epochs=1, scheduler="cosine"))
        >>> lrs = []
        >>> for _ in range(4):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 3)); opt.step(); sched.step()
        >>> lrs
        [0.5, 1.0, 0.75, 0.25]
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
    warmup, total = config.warmup_epochs, config.epochs

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


class Trainer:
    """Fits a model on training data with early stopping on validation data.

    The loop: AdamW (no decay on biases and norm weights) -> per batch, masked loss (cross-entropy or MSE over
    labelled samples / real steps), backward, gradient clipping, step -> per epoch, validation loss and metrics,
    scheduler step, best-epoch tracking on the monitor, early stopping, checkpoints. Nothing is printed: follow a
    fit with callbacks (:class:`~mmfuse.train.Callback`) or the ``mmfuse.train`` logger.

    Args:
        config: The recipe; defaults to ``TrainConfig()``.
        callbacks: Objects with any of ``on_train_begin``, ``on_batch_end``, ``on_epoch_end``, ``on_train_end``.

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

    def __init__(self, config: TrainConfig | None = None, callbacks: Sequence[Any] = ()) -> None:
        if config is None:
            config = TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TypeError(f"The 'config' parameter of Trainer must be a TrainConfig. Got {type(config).__name__}.")
        self.config = config
        self.callbacks = list(callbacks)

    # -- callbacks -------------------------------------------------------------------------------------------
    def _emit(self, hook: str, *args: Any) -> None:
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
        train_src = BatchSource(train, "train", batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers)
        val_src = (
            None
            if val is None
            else BatchSource(val, "val", batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
        )
        task_type, label_level = resolve_task_level(model, train, task, level)
        if task_type is None:
            first = next(iter(train_src.batches(0)), None)
            if first is None:
                raise ValueError("The 'train' data of Trainer.fit are empty.")
            task_type = _infer_task(first.targets)
        if task_type == TaskType.REGRESSION:
            if cfg.class_weights is not None:
                raise ValueError(
                    "The 'class_weights' parameter of TrainConfig applies to classification only; "
                    f"this task is regression. Got {cfg.class_weights!r}."
                )
            if cfg.label_smoothing:
                raise ValueError(
                    "The 'label_smoothing' parameter of TrainConfig applies to classification only; "
                    f"this task is regression. Got {cfg.label_smoothing!r}."
                )
        if val_src is None:
            monitor, mode = "train_loss", "min"
        else:
            monitor, mode = cfg.resolved_monitor(task_type.value), cfg.resolved_mode(task_type.value)
        class_names = getattr(task_spec_of(val), "class_names", None) or getattr(
            task_spec_of(train), "class_names", None
        )

        seed_everything(cfg.seed)
        model.to(device)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, mode)
        class_weights = None
        if cfg.class_weights == "balanced" and task_type == TaskType.CLASSIFICATION:
            class_weights = _balanced_weights(train_src).to(device)
        loss_kwargs: dict[str, Any] = {"class_weights": class_weights, "label_smoothing": cfg.label_smoothing}

        start_epoch, history = 0, []
        best_epoch: int | None = None
        best_metric: float | None = None
        bad_epochs, stopped_early = 0, False
        best_state: dict[str, Tensor] | None = None
        if resume and out_dir is not None:  # fit() refuses resume without out_dir
            ck = load_last_checkpoint(out_dir)
            self._check_resume_config(ck.trainer_state.get("config", {}), ck.directory)
            model.load_state_dict(ck.model_state, strict=True)
            optimizer.load_state_dict(ck.optimizer_state)
            if scheduler is not None and ck.scheduler_state is not None:
                scheduler.load_state_dict(ck.scheduler_state)
            restore_rng_state(ck.rng_tensors, ck.rng_info)
            st = ck.trainer_state
            start_epoch, history = ck.epoch, list(st.get("history", []))
            best_epoch, best_metric = st.get("best_epoch"), st.get("best_metric")
            bad_epochs, stopped_early = int(st.get("bad_epochs", 0)), bool(st.get("stopped_early", False))
            best_state = ck.best_state
            logger.info("Resuming from %s after epoch %d", ck.directory, ck.epoch)

        self._emit("on_train_begin", {"epochs": cfg.epochs, "start_epoch": start_epoch + 1, "resumed": resume})
        params = [p for p in model.parameters() if p.requires_grad]
        epoch = start_epoch
        while epoch < cfg.epochs and not stopped_early:
            started = time.perf_counter()
            lr = float(optimizer.param_groups[0]["lr"])
            train_loss = self._train_epoch(
                model, train_src, optimizer, params, device, task_type, label_level, loss_kwargs, epoch
            )
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss}
            if val_src is not None:
                predictions, val_loss = run_inference(
                    model, val_src.batches(), device, task_type, label_level, loss_kwargs
                )
                if label_level is None:
                    label_level = LabelLevel(predictions.level)
                row["val_loss"] = _finite_or_none(val_loss)
                metrics = _scalar_metrics(metrics_from_predictions(predictions, class_names))
                row.update({f"val_{k}": v for k, v in metrics.items()})
                if monitor == "loss":
                    value = row["val_loss"]
                elif monitor in metrics:
                    value = metrics[monitor]
                else:
                    raise ValueError(
                        f"The 'monitor' parameter of TrainConfig is {monitor!r}, which the {task_type.value} metrics "
                        f"do not provide. Valid: {['loss', *sorted(metrics)]}."
                    )
            else:
                value = train_loss
            if scheduler is not None:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(value if value is not None else float("nan"))
                else:
                    scheduler.step()
            improved = _improved(value, best_metric, mode, cfg.min_delta)
            epoch += 1
            if improved or best_epoch is None:
                best_epoch = epoch
                best_metric = value if improved else best_metric
                best_state = state_dict_cpu(model)
            bad_epochs = 0 if improved else bad_epochs + 1
            if cfg.patience is not None and val_src is not None and bad_epochs >= cfg.patience:
                stopped_early = True
            row["lr"] = lr
            row["seconds"] = round(time.perf_counter() - started, 4)
            history.append(row)

            if out_dir is not None:
                state = {
                    "best_epoch": best_epoch,
                    "best_metric": best_metric,
                    "monitor": monitor,
                    "mode": mode,
                    "bad_epochs": bad_epochs,
                    "stopped_early": stopped_early,
                    "task": task_type.value,
                    "level": None if label_level is None else label_level.value,
                    "config": cfg.to_dict(),
                    "history": history,
                }
                if best_epoch == epoch:
                    save_best(model, out_dir, {**state, "epoch": epoch}, model_config)
                write_json(out_dir / "history.json", history)
                rng_tensors, rng_info = capture_rng_state()
                save_last_checkpoint(
                    out_dir,
                    epoch=epoch,
                    model=model,
                    best_state=best_state,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    rng_tensors=rng_tensors,
                    rng_info=rng_info,
                    trainer_state=state,
                )
            logger.info("epoch %d/%d %s", epoch, cfg.epochs, {k: v for k, v in row.items() if k != "epoch"})
            self._emit(
                "on_epoch_end",
                epoch,
                {**row, "best_epoch": best_epoch, "best_metric": best_metric, "monitor": monitor, "improved": improved},
            )

        if cfg.restore_best and best_state is not None:
            model.load_state_dict(best_state, strict=True)
        result = TrainResult(
            best_epoch=best_epoch,
            best_metric=_finite_or_none(best_metric),
            monitor=monitor,
            mode=mode,
            epochs_run=epoch,
            stopped_early=stopped_early,
            history=history,
            out_dir=out_dir,
        )
        self._emit("on_train_end", result)
        return result

    def _train_epoch(
        self,
        model: nn.Module,
        source: BatchSource,
        optimizer: torch.optim.Optimizer,
        params: list[nn.Parameter],
        device: torch.device,
        task_type: TaskType,
        level: LabelLevel | None,
        loss_kwargs: dict[str, Any],
        epoch: int,
    ) -> float:
        cfg = self.config
        model.train()
        total, rows = 0.0, 0
        for index, batch in enumerate(source.batches(epoch_seed(cfg.seed, epoch))):
            if batch.targets is None:
                raise ValueError(f"Training batch {index} of epoch {epoch + 1} has no targets (targets=None).")
            batch = batch.to(device)
            outputs = model(batch)
            loss, count = loss_and_count(outputs, batch, task_type, level=level, **loss_kwargs)
            if count == 0:
                continue
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"The training loss became {float(loss)} at epoch {epoch + 1}, batch {index}; "
                    "lower 'lr' or set 'grad_clip' in TrainConfig, and check the inputs for NaN."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            value = float(loss.detach())
            total += value * count
            rows += count
            self._emit("on_batch_end", index, {"epoch": epoch + 1, "loss": value})
        if rows == 0:
            raise ValueError(f"The training data yielded no labelled rows in epoch {epoch + 1}.")
        return total / rows

    def _check_resume_config(self, saved: dict[str, Any], directory: Path) -> None:
        current = self.config.to_dict()
        changed = sorted(k for k in current if k not in _RESUME_FREE_FIELDS and saved.get(k, current[k]) != current[k])
        if changed:
            warnings.warn(
                f"Resuming from {str(directory)!r} with a TrainConfig that differs in {changed} from the one the "
                "checkpoint was written with; the result will not match an uninterrupted run.",
                MmfuseWarning,
                stacklevel=3,
            )
