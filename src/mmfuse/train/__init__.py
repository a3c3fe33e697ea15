"""Fitting models: the recipe, the loop with early stopping and resumable checkpoints, prediction, and more.

The more: the learning-rate range test (:func:`find_lr`), the transfer of pretrained weights
(:func:`load_pretrained`) and staged training (:func:`fit_staged`: an expert first, its features cached, then the
fusion).

Example:
    >>> from mmfuse.train import TrainConfig, Trainer
    >>> Trainer(TrainConfig(epochs=3)).config.epochs
    3
"""

from __future__ import annotations

from mmfuse.train.callbacks import Callback, HistoryRecorder
from mmfuse.train.checkpoint import load_pretrained, load_weights, save_weights
from mmfuse.train.config import TrainConfig, monitor_mode
from mmfuse.train.losses import IGNORE_INDEX, compute_loss, select_rows
from mmfuse.train.lr_finder import LRFinderResult, find_lr, suggest_lr
from mmfuse.train.optim import build_optimizer, build_scheduler, frozen_parameters
from mmfuse.train.predict import Predictions, evaluate_model, metrics_from_predictions, predict
from mmfuse.train.schedules import ramp_factor
from mmfuse.train.seeding import resolve_device, seed_everything
from mmfuse.train.staged import ExpertStage, StagedResult, fit_staged
from mmfuse.train.trainer import (
    Trainer,
    TrainResult,
    resolve_amp,
)

__all__ = [
    "IGNORE_INDEX",
    "Callback",
    "ExpertStage",
    "HistoryRecorder",
    "LRFinderResult",
    "Predictions",
    "StagedResult",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "compute_loss",
    "evaluate_model",
    "find_lr",
    "fit_staged",
    "frozen_parameters",
    "load_pretrained",
    "load_weights",
    "metrics_from_predictions",
    "monitor_mode",
    "predict",
    "ramp_factor",
    "resolve_amp",
    "resolve_device",
    "save_weights",
    "seed_everything",
    "select_rows",
    "suggest_lr",
]
