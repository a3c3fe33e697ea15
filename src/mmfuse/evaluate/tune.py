"""Hyperparameter search on the validation split only: random search per fusion, the test split never opened.

:func:`tune` trains every sampled configuration on the training split with early stopping on the validation
split, for a few seeds, and ranks configurations by a validation criterion chosen before the search (by default
the validation negative log-likelihood, a proper scoring rule that still ranks configurations when validation
accuracy saturates). It writes ``trials.csv`` (every trial), ``best.json`` (per fusion, the chosen model and training
keyword arguments, in the form of a compare preset) and ``tune.json`` (the search space, criterion, command and
versions). The test split is never read: :func:`tune` opens the data set's ``train`` and ``val`` splits and
nothing else.

The first trial of every fusion is the data set's current preset, so a search can only keep or improve on it
by the chosen criterion.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse._io import atomic_write_csv, atomic_write_json
from mmfuse.data import MultimodalDataset, open_or_load_dataset
from mmfuse.errors import DataError
from mmfuse.evaluate.protocol import (
    fit_normalizers,
    model_config_for,
    preset_for,
    resolve_fusions,
    torch_threads,
    versions,
)
from mmfuse.metrics import compute_metric, get_metric, is_metric, list_metrics
from mmfuse.models import build_model, parameter_report
from mmfuse.train import TrainConfig, Trainer, predict, seed_everything

__all__ = ["SEARCH_SPACES", "TuneConfig", "TuneResult", "sample_trials", "tune"]

#: Default search spaces: ``"model.<field>"`` / ``"train.<field>"`` -> the values to draw from (uniformly).
SEARCH_SPACES: dict[str, dict[str, list[Any]]] = {
    "default": {
        "model.hidden": [32, 64, 128],
        "model.dropout": [0.1, 0.2, 0.3, 0.4, 0.5],
        "model.input_dropout": [0.0, 0.1, 0.2, 0.3, 0.5],
        "model.modality_dropout": [0.0, 0.1, 0.2, 0.3],
        "model.projection_norm": [True, False],
        "model.encoder_residual": [True, False],
        "train.lr": [3e-4, 1e-3, 3e-3],
        "train.weight_decay": [1e-3, 1e-2, 1e-1],
        "train.batch_size": [4, 8, 16],
        "train.label_smoothing": [0.0, 0.1],
        "train.monitor": ["loss", "accuracy"],
    },
}


@dataclass
class TuneConfig:
    """What :func:`tune` searches.

    Attributes:
        dataset: Registered data-set name or native data-set folder.
        fusions: Fusion names (as for ``compare``: ``"all"``, ``"unimodal-<m>"``...). Each is tuned on its own.
        trials: Configurations per fusion (the first is the current preset).
        seeds: Seeds each configuration is trained with; the criterion is averaged over them.
        out_dir: Where ``trials.csv``, ``best.json`` and ``tune.json`` go.
        criterion: ``"nll"`` (validation negative log-likelihood of the restored best model, without label
            smoothing; classification), ``"mse"`` (regression), both lower-is-better, or a validation metric name
            such as ``"accuracy"`` or ``"mae"``.
        search_space: ``"model.<field>"`` / ``"train.<field>"`` -> candidate values; default
            ``SEARCH_SPACES["default"]``.
        sampler_seed: Seed of the random search (which configurations are drawn).
        epochs: Overrides the preset's maximum epochs.
        data_dir: Folder of local data sets (else ``MMFUSE_DATA_DIR``).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        num_threads: Torch intra-op threads during the search.
        command: The command line, recorded in ``tune.json``.

    Example:
        >>> TuneConfig(dataset="basic-motions", fusions=["concat"], trials=4).criterion
        'nll'
    """

    dataset: str
    fusions: list[str] = field(default_factory=lambda: ["concat"])
    trials: int = 12
    seeds: int = 2
    out_dir: str = "runs/tune"
    criterion: str = "nll"
    search_space: dict[str, list[Any]] | None = None
    sampler_seed: int = 0
    epochs: int | None = None
    data_dir: str | None = None
    device: str = "auto"
    num_threads: int | None = 1
    command: str = ""

    def __post_init__(self) -> None:
        for name in ("trials", "seeds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"The {name!r} parameter of TuneConfig must be a positive integer. Got {value!r}.")
        if not isinstance(self.criterion, str) or not is_metric(self.criterion) or self.criterion == "loss":
            raise ValueError(
                f"The 'criterion' parameter of TuneConfig must be a registered metric name such as 'nll', 'mse', "
                f"'accuracy' or 'mae' (see mmfuse.metrics.list_metrics()). Got {self.criterion!r}."
            )
        space = self.search_space if self.search_space is not None else SEARCH_SPACES["default"]
        for key, values in space.items():
            scope, _, name = key.partition(".")
            if scope not in ("model", "train") or not name:
                raise ValueError(
                    f"The search_space key {key!r} of TuneConfig must look like 'model.<field>' or 'train.<field>'."
                )
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"The search_space entry {key!r} of TuneConfig must be a non-empty list of values.")


@dataclass
class TuneResult:
    """What :func:`tune` returns: every trial row, and per fusion the chosen settings (a compare preset entry)."""

    out_dir: Path
    trials: list[dict[str, Any]]
    best: dict[str, dict[str, Any]]


def sample_trials(
    space: Mapping[str, Sequence[Any]], n: int, *, seed: int = 0, first: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Draw ``n`` distinct configurations from ``space`` (uniform per key), the first being ``first`` when given.

    Returns:
        A list of flat dicts ``{"model.<f>" | "train.<f>": value}``; fewer than ``n`` when the space is smaller.

    Example:
        >>> trials = sample_trials({"train.lr": [0.1, 0.01], "model.hidden": [8, 16]}, 10, seed=0)
        >>> len(trials), len({tuple(sorted(t.items())) for t in trials})
        (4, 4)
    """
    rng = np.random.default_rng(seed)
    keys = sorted(space)
    size = math.prod(len(space[k]) for k in keys)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    if first is not None:
        out.append(dict(first))
        seen.add(json.dumps(first, sort_keys=True, default=str))
    attempts = 0
    while len(out) < min(n, size + (1 if first is not None else 0)) and attempts < 100 * n:
        attempts += 1
        trial = {k: _plain(space[k][int(rng.integers(len(space[k])))]) for k in keys}
        key = json.dumps(trial, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(trial)
    return out[:n]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _split_trial(trial: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model = {k.removeprefix("model."): v for k, v in trial.items() if k.startswith("model.")}
    train = {k.removeprefix("train."): v for k, v in trial.items() if k.startswith("train.")}
    return model, train


def tune(config: TuneConfig, *, progress: Callable[[dict[str, Any]], None] | None = None) -> TuneResult:
    """Random search per fusion, scored on the validation split only.

    Args:
        config: What to search.
        progress: Called with every finished trial row.

    Returns:
        The trial rows and, per fusion, ``{"model": {...}, "train": {...}, "criterion": value, "trial": i}``.

    Raises:
        DataError: if the data set lacks a ``train`` or ``val`` split.
    """
    with torch_threads(config.num_threads):
        return _tune(config, progress)


def _tune(config: TuneConfig, progress: Callable[[dict[str, Any]], None] | None) -> TuneResult:
    dataset = open_or_load_dataset(config.dataset, data_dir=config.data_dir)
    missing = [s for s in ("train", "val") if s not in dataset.split_names]
    if missing:
        raise DataError(
            f"Data set {dataset.name!r} lacks the split(s) {missing}; tuning needs 'train' and 'val' (and never "
            f"reads 'test'). Its splits: {dataset.split_names}."
        )
    fusions = resolve_fusions(config.fusions, modalities=list(dataset.modalities))
    _check_criterion(config.criterion, dataset.task.type.value)
    space = config.search_space if config.search_space is not None else SEARCH_SPACES["default"]
    train_view, val_view = dataset.split("train"), dataset.split("val")  # the test split is never opened
    normalizers = fit_normalizers(train_view)
    train_t, val_t = (v.with_transform(normalizers.transform_record) for v in (train_view, val_view))
    preset = preset_for(dataset)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lower_is_better = not get_metric(config.criterion).higher_is_better

    rows: list[dict[str, Any]] = []
    best: dict[str, dict[str, Any]] = {}
    for fusion_index, fusion in enumerate(fusions):
        base_model, base_train = preset.settings(fusion)
        current: dict[str, Any] = {}
        for key in space:
            scope, _, name = key.partition(".")
            base = base_model if scope == "model" else base_train
            if name in base:
                current[key] = base[name]
        trials = sample_trials(space, config.trials, seed=config.sampler_seed + 1000 * fusion_index, first=current)
        for index, trial in enumerate(trials):
            model_delta, train_delta = _split_trial(trial)
            model_kwargs = {**base_model, **model_delta}
            train_kwargs = {**base_train, **train_delta, "device": config.device}
            if config.epochs is not None:
                train_kwargs["epochs"] = config.epochs
            scores, accs, seconds, params = [], [], 0.0, 0
            for seed in range(config.seeds):
                seed_everything(seed)
                model = build_model(model_config_for(dataset, fusion, **model_kwargs))
                params = parameter_report(model).trainable
                train_config = TrainConfig(**{**train_kwargs, "seed": seed})
                start = time.perf_counter()
                result = Trainer(train_config).fit(model, train_t, val_t)
                seconds += time.perf_counter() - start
                scores.append(_criterion(model, val_t, dataset, config.criterion))
                epoch = result.history[(result.best_epoch or len(result.history)) - 1]
                accs.append(float(epoch.get("val_accuracy", float("nan"))))
            row = {
                "fusion": fusion,
                "trial": index,
                **trial,
                f"val_{config.criterion}_mean": float(np.mean(scores)),
                f"val_{config.criterion}_std": float(np.std(scores)),
                "val_accuracy_mean": float(np.mean(accs)),
                "params": params,
                "train_seconds": round(seconds, 2),
            }
            rows.append(row)
            atomic_write_csv(out_dir / "trials.csv", rows)
            if progress is not None:
                progress(row)
            score = row[f"val_{config.criterion}_mean"]
            chosen = best.get(fusion)
            if chosen is None or (score < chosen["criterion"] if lower_is_better else score > chosen["criterion"]):
                best[fusion] = {"model": model_delta, "train": train_delta, "criterion": score, "trial": index}
        atomic_write_json(out_dir / "best.json", best)
    atomic_write_json(
        out_dir / "tune.json",
        {
            "dataset": dataset.name,
            "preset": preset.name,
            "fusions": fusions,
            "trials": config.trials,
            "seeds": list(range(config.seeds)),
            "criterion": config.criterion,
            "lower_is_better": lower_is_better,
            "search_space": space,
            "sampler_seed": config.sampler_seed,
            "splits_read": ["train", "val"],
            "command": config.command,
            "versions": versions(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return TuneResult(out_dir=out_dir, trials=rows, best=best)


def _check_criterion(criterion: str, task: str) -> None:
    """Refuse, before any training, a criterion that cannot be computed on this task's validation predictions."""
    info = get_metric(criterion)
    if not info.applies_to(task) or info.scorer is None:
        choices = [n for n in list_metrics(task) if get_metric(n).scorer is not None]
        raise ValueError(
            f"The tuning criterion {criterion!r} does not apply to this {task} data set; choose one of "
            f"{', '.join(choices)}."
        )


def _criterion(model: Any, val: MultimodalDataset, dataset: MultimodalDataset, criterion: str) -> float:
    """Score the fitted model on the validation split with a registered metric (NLL without label smoothing...)."""
    preds = predict(model, val, task=dataset.task)
    if preds.y_true is None:
        raise DataError("The validation split has no labels to tune on.")
    return compute_metric(criterion, preds.y_true, preds.y_pred, preds.probs)
