"""Train one fusion on a data set with the comparison protocol, in one process or data-parallel (``mmfuse train``).

The model, normalisers and recipe are those of one ``mmfuse compare`` row (:mod:`mmfuse.evaluate.protocol`); the
result is a normal model directory (``config.json``, ``model.safetensors``, the normalisers, ``history.json``,
and with a test split ``test_metrics.json``, written as ``compare`` writes it) that
:func:`mmfuse.models.load_model`, ``mmfuse serve`` (with ``causal=True``) and :func:`mmfuse.stream.load_model_assets`
read. Under ``torchrun`` (or :func:`mmfuse.train.distributed.launch_local`)
every process runs this function and the :class:`~mmfuse.train.Trainer` trains data-parallel; the main process
alone writes.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from mmfuse._io import json_fields
from mmfuse.data import open_or_load_dataset
from mmfuse.errors import DataError, MmfuseWarning
from mmfuse.evaluate.protocol import (
    causal_settings,
    fit_normalizers,
    model_config_for,
    preset_for,
    settings_for,
    stream_info,
    write_test_metrics,
)
from mmfuse.models import build_model, save_model
from mmfuse.train import TrainConfig, Trainer, predict, seed_everything
from mmfuse.train.strategy import init_distributed
from mmfuse.train.tracking import Tracker, TrackingConfig, close_all

__all__ = ["TrainRunResult", "train_model"]

logger = logging.getLogger(__name__)


@dataclass
class TrainRunResult:
    """What :func:`train_model` did (the same in every process).

    Attributes:
        out_dir: The model directory.
        world_size: Processes that trained the model.
        best_epoch: The epoch whose weights were kept.
        history: One row per epoch (see :class:`~mmfuse.train.TrainResult`).
        test_metrics: Scalar metrics of the kept model on the test split: the numbers of its ``test_metrics.json``
            (empty, and no file, without a test split).
        is_main: Whether this process wrote the directory (rank 0).
    """

    out_dir: Path
    world_size: int
    best_epoch: int | None
    history: list[dict[str, Any]]
    test_metrics: dict[str, float]
    is_main: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (without ``is_main``)."""
        return json_fields(self, exclude=("is_main",))


def train_model(
    dataset: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fusion: str = "concat",
    seed: int = 0,
    epochs: int | None = None,
    causal: bool = False,
    model_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    device: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    log: Sequence[str] = (),
    tracking_uri: str | None = None,
) -> TrainRunResult:
    """Train ``fusion`` on ``dataset`` as one ``mmfuse compare`` row would, and write a model directory.

    Args:
        dataset: Registered data-set name or native data-set folder (with ``train`` and ``val`` splits; ``test``
            is scored when present).
        out_dir: The model directory to write.
        fusion: Registered fusion or ``unimodal-<modality>``.
        seed: Seeds the weights and the batch order.
        epochs: Overrides the preset's number of epochs.
        causal: Train a streaming-ready model (as ``compare --causal``), which ``mmfuse serve`` can stream.
        model_overrides: :class:`~mmfuse.models.ModelConfig` keyword arguments over the preset's.
        train_overrides: :class:`~mmfuse.train.TrainConfig` keyword arguments over the preset's.
        device: Training device (default: the preset's, else ``"auto"``).
        data_dir: Folder of local data sets (else ``$MMFUSE_DATA_DIR``).
        overwrite: Replace a model directory that ``out_dir`` already holds.
        log: Experiment trackers (``"tensorboard"``, ``"mlflow"``; :mod:`mmfuse.train.tracking`): per-epoch
            metrics, the configuration, test metrics and the model directory, logged by the main process.
            TensorBoard writes to ``out_dir/tensorboard/<name>``; MLflow to ``tracking_uri``.
        tracking_uri: MLflow's tracking URI (default: ``out_dir/mlflow.db``, artifacts in ``out_dir/mlartifacts``).

    Returns:
        A :class:`TrainRunResult`.

    Raises:
        FileExistsError: ``out_dir`` already holds a model (``config.json``) and ``overwrite`` is false.
        DataError: the data set lacks a ``train`` or ``val`` split.
        ValueError: an unknown fusion, or one that cannot be causal with ``causal``.

    Example:
        >>> import tempfile
        >>> res = train_model("basic-motions", tempfile.mkdtemp(), epochs=1, model_overrides={"hidden": 8})
        >>> res.world_size, sorted(p.name for p in res.out_dir.glob("*.safetensors"))
        (1, ['model.safetensors', 'normalizers.safetensors'])
    """
    out = Path(out_dir)
    if (out / "config.json").exists() and not overwrite:
        raise FileExistsError(
            f"The 'out_dir' of train_model, {str(out)!r}, already holds a model (config.json); "
            "choose another directory or pass overwrite=True (--overwrite)."
        )
    tracking = TrackingConfig(log, str(out), tracking_uri, experiment="mmfuse-train")
    started_group = init_distributed(device or "auto")
    try:
        return _train(
            dataset, out, fusion, seed, epochs, causal, model_overrides, train_overrides, device, data_dir, tracking
        )
    finally:
        if started_group:
            dist.destroy_process_group()


def _train(
    dataset_arg: str | os.PathLike[str],
    out: Path,
    fusion: str,
    seed: int,
    epochs: int | None,
    causal: bool,
    model_overrides: Mapping[str, Any] | None,
    train_overrides: Mapping[str, Any] | None,
    device: str | None,
    data_dir: str | os.PathLike[str] | None,
    tracking: TrackingConfig,
) -> TrainRunResult:
    dataset = open_or_load_dataset(dataset_arg, data_dir=data_dir)
    missing = [s for s in ("train", "val") if s not in dataset.split_names]
    if missing:
        raise DataError(
            f"Data set {dataset.name!r} ({dataset.path}) lacks the split(s) {missing}; train_model needs 'train' "
            f"and 'val'. Its splits: {dataset.split_names}."
        )
    preset = preset_for(dataset)
    model_kwargs, train_kwargs = settings_for(
        preset,
        fusion,
        model_overrides=model_overrides,
        train_overrides=train_overrides,
        epochs=epochs,
        device=device,
    )
    if causal:
        model_kwargs = causal_settings(fusion, model_kwargs, label_level=dataset.task.level.value)
    model_config = model_config_for(dataset, fusion, **model_kwargs)
    train_config = TrainConfig(seed=seed, **train_kwargs)
    normalizers = fit_normalizers(dataset.split("train"))
    views = {s: dataset.split(s).with_transform(normalizers.transform_record) for s in dataset.split_names}
    seed_everything(seed)  # the same initial weights in every process
    model = build_model(model_config)
    main = not dist.is_initialized() or dist.get_rank() == 0
    trackers = tracking.prepare().open(f"{fusion}-seed{seed}") if tracking.enabled and main else []
    try:
        return _fit_and_write(
            dataset, out, fusion, causal, preset.name, model, model_config, train_config, normalizers, views, trackers
        )
    except BaseException:
        close_all(trackers, failed=True)
        raise


def _fit_and_write(
    dataset: Any,
    out: Path,
    fusion: str,
    causal: bool,
    preset_name: str,
    model: Any,
    model_config: Any,
    train_config: TrainConfig,
    normalizers: Any,
    views: Mapping[str, Any],
    trackers: list[Tracker],
) -> TrainRunResult:
    """Fit, test and write the model directory; log to ``trackers`` (closed here when all went well)."""
    for tracker in trackers:
        tracker.log_params(
            {"fusion": fusion, "dataset": dataset.name, "preset": preset_name, "model": model_config.to_dict()}
            | {"train": train_config.to_dict()}
        )
    trainer = Trainer(train_config, callbacks=trackers)
    result = trainer.fit(model, views["train"], views["val"], out_dir=out)
    strategy = trainer.strategy
    test_metrics: dict[str, float] = {}
    if "test" in views:  # the main process writes test_metrics.json as compare does; every process gets the scalars
        predictions = predict(model, views["test"], task=dataset.task)
        raw = write_test_metrics(out if strategy.is_main else None, predictions, dataset.task)
        test_metrics = {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if strategy.is_main:
        extra: dict[str, Any] = {
            "train_config": train_config.to_dict(),
            "dataset": dataset.name,
            "preset": preset_name,
            "world_size": strategy.world_size,
        }
        if causal:
            extra["stream"] = _stream_info(dataset)
        normalizers.save(out)
        save_model(model.cpu(), out, extra=extra)
        shutil.rmtree(out / "last", ignore_errors=True)  # the resumable checkpoint: the run is finished
        for tracker in trackers:
            tracker.log_metrics(test_metrics)
            tracker.log_artifacts(out, "model")
        close_all(trackers)
    strategy.barrier()
    logger.info("trained %s on %s in %d process(es): %s", fusion, dataset.name, strategy.world_size, test_metrics)
    return TrainRunResult(
        out, strategy.world_size, result.best_epoch, result.history, test_metrics, is_main=strategy.is_main
    )


def _stream_info(dataset: Any) -> dict[str, Any] | None:
    """:func:`~mmfuse.evaluate.protocol.stream_info` (``config.json``'s ``"stream"``), warning when it is None."""
    info = stream_info(dataset)
    if info is None:
        warnings.warn(
            f"Data set {dataset.name!r} ({dataset.path}) records no regular grid rate; give it to "
            "'mmfuse serve --rate HZ'.",
            MmfuseWarning,
            stacklevel=4,
        )
    return info
