"""Fitting models: the training recipe, the loop with early stopping and resumable checkpoints, prediction.

Example:
    >>> from mmfuse.train import TrainConfig, Trainer
    >>> Trainer(TrainConfig(epochs=3)).config.epochs
    3
"""

from __future__ import annotations

from mmfuse.train.callbacks import Callback, HistoryRecorder
from mmfuse.train.checkpoint import load_weights, save_weights
from mmfuse.train.config import TrainConfig, monitor_mode
from mmfuse.train.losses import IGNORE_INDEX, compute_loss, select_rows
from mmfuse.train.predict import Predictions, evaluate_model, predict
from mmfuse.train.seeding import resolve_device, seed_everything
from mmfuse.train.trainer import Trainer, TrainResult, build_optimizer, build_scheduler

__all__ = [
    "IGNORE_INDEX",
    "Callback",
    "HistoryRecorder",
    "Predictions",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "compute_loss",
    "evaluate_model",
    "load_weights",
    "monitor_mode",
    "predict",
    "resolve_device",
    "save_weights",
    "seed_everything",
    "select_rows",
]
