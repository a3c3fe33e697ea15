"""Hyperparameter search on the validation split only, on Optuna: the test split is never opened.

:func:`tune` runs one Optuna study per fusion (``<study>:<fusion>``) in a SQLAlchemy storage (by default
``sqlite:///<out>/tune.db``). Every trial trains a configuration on the training split with early stopping on the
validation split, for a few seeds, and is scored by a validation criterion chosen before the search (by default
the validation negative log-likelihood, a proper scoring rule that still ranks configurations when validation
accuracy saturates); the study's direction is the criterion's ``higher_is_better`` in the metric registry.

* Samplers: TPE (default, seeded) or random. Pruners: median (default), Hyperband or none; a trial is pruned from
  seed 0's per-epoch validation curve (``val_loss`` when the criterion is the task's loss, ``nll`` or ``mse``,
  else ``val_<criterion>``).
* Trial 0 is the data set's current preset (the preset's value of every searched key, or the config default,
  joins that key's candidates). When the budget covers the whole discrete space the full grid is enqueued, so
  nothing is sampled twice; a sampled configuration that was already scored reuses the stored score
  (``repeat_of``) instead of retraining.
* ``workers`` processes optimise the same study in the same storage; the budget (COMPLETE + PRUNED trials) is
  exact. Heartbeats fail a killed worker's trial and enqueue it again.
* ``resume`` continues a stored study after checking that its settings (data set, space, criterion, seeds,
  epochs) are the same; without it an existing study or output folder is refused.

It writes ``trials.csv`` (every finished trial, with its state and the epoch it was pruned at), ``best.json`` (a
preset, :class:`~mmfuse.evaluate.protocol.Preset`'s file form: the data set's preset with each tuned fusion's entry
set to the chosen settings, which ``mmfuse compare --preset OUT/best.json`` trains as they are) and ``tune.json``
(the search space, criterion, sampler, pruner, storage without password, study names, command and versions).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from filelock import FileLock
from optuna.trial import FrozenTrial, TrialState

from mmfuse._io import atomic_write_csv, atomic_write_json
from mmfuse.data import MultimodalDataset, open_or_load_dataset
from mmfuse.errors import ConfigError, DataError
from mmfuse.evaluate.executors import executor_or_none, make_executor
from mmfuse.evaluate.protocol import (
    Preset,
    fit_normalizers,
    model_config_for,
    resolve_fusions,
    resolve_preset,
    torch_threads,
    versions,
)
from mmfuse.metrics import compute_metric, get_metric, is_metric, list_metrics
from mmfuse.models import ModelConfig, build_model, parameter_report
from mmfuse.train import TrainConfig, Trainer, predict, seed_everything
from mmfuse.train.tracking import Tracker, TrackingConfig, close_all, closing_all

__all__ = ["PRUNERS", "SAMPLERS", "SEARCH_SPACES", "TuneConfig", "TuneResult", "grid_points", "tune"]

#: Default search spaces: ``"model.<field>"`` / ``"train.<field>"`` -> the candidate values (categorical).
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

SAMPLERS: tuple[str, ...] = ("tpe", "random")
"""Valid ``sampler`` names: Optuna's TPE (default) and random samplers, both seeded."""

PRUNERS: tuple[str, ...] = ("median", "hyperband", "none")
"""Valid ``pruner`` names: ``MedianPruner(n_startup_trials=2, n_warmup_steps=2)``, Hyperband, no pruning."""

_SCALARS = (bool, int, float, str, type(None))
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_ATTRS = ("val_accuracy_mean", "params", "train_seconds", "pruned_at_epoch")


@dataclass
class TuneConfig:
    """What :func:`tune` searches.

    Attributes:
        dataset: Registered data-set name or native data-set folder.
        fusions: Fusion names (as for ``compare``: ``"all"``, ``"unimodal-<m>"``...). Each is tuned on its own.
        trials: The budget of every fusion: COMPLETE + PRUNED trials (the first is the current preset); at most
            the size of the search space.
        seeds: Seeds each configuration is trained with; the criterion is averaged over them.
        out_dir: Where ``trials.csv``, ``best.json``, ``tune.json`` (and the default storage ``tune.db``) go.
        criterion: ``"nll"`` (validation negative log-likelihood of the restored best model, without label
            smoothing; classification), ``"mse"`` (regression), both lower-is-better, or a validation metric name
            such as ``"accuracy"`` or ``"mae"``.
        search_space: ``"model.<field>"`` / ``"train.<field>"`` -> candidate values (numbers, strings, booleans or
            ``None``); default ``SEARCH_SPACES["default"]``.
        sampler: ``"tpe"`` or ``"random"``.
        pruner: ``"median"``, ``"hyperband"`` or ``"none"``.
        sampler_seed: Seed of the sampler, mixed with the fusion, the worker and the number of trials already
            stored (a one-worker search is reproducible; a resumed one draws new configurations).
        storage: SQLAlchemy URL of the Optuna storage; default ``sqlite:///<out_dir>/tune.db``.
        study: Study name; default the data set's name. Fusion ``f`` is tuned in the study ``<study>:<f>``.
        resume: Continue the stored studies (their settings must match); without it they must not exist.
        workers: Worker processes optimising each study at the same time (spawned; 1: in this process).
        executor: Where the workers run, through :mod:`mmfuse.evaluate.executors` as compare's runs do:
            ``"local"`` (processes of this machine) or ``"ray"`` (one Ray task per worker, 1 CPU each, on
            ``ray_address`` or a local Ray instance; a worker that raises or whose node dies is run once more, and
            a dead worker's unfinished trial goes stale and is trained again). A worker that still fails raises
            :class:`~mmfuse.evaluate.executors.RunFailed` naming it, its fusion and study. Ray workers need a
            storage and ``out_dir`` that every node reaches (the budget lock lives in ``out_dir``).
        ray_address: The Ray cluster to join (``"auto"``, ``"ray://head:10001"``); only with ``executor="ray"``.
        epochs: Overrides the preset's maximum epochs.
        data_dir: Folder of local data sets (else ``MMFUSE_DATA_DIR``).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        num_threads: Torch intra-op threads per process during the search.
        heartbeat_s: Seconds between a running trial's heartbeats; a trial silent for twice as long (its worker
            was killed) is failed and enqueued again.
        command: The command line, recorded in ``tune.json``.
        preset: Where the search starts (trial 0) and what it leaves unsearched: a
            :class:`~mmfuse.evaluate.protocol.Preset`, its file form, or a preset file / tune folder path (a
            resumed search must name the same one); default the data set's registered preset.
        log: Experiment trackers (``"tensorboard"``, ``"mlflow"``; :mod:`mmfuse.train.tracking`): one tracker run
            per trained trial (``<fusion>-trial<k>``: its settings, seed 0's per-epoch curves, the columns of
            ``trials.csv`` such as ``val_<criterion>_mean``; a pruned trial records ``pruned_at_epoch``; a repeated
            configuration is neither retrained nor logged), and a ``summary`` run with ``trials.csv``, ``best.json``
            and ``tune.json``. The test split stays unopened: no test metrics.
        tracking_uri: MLflow's tracking URI (default: ``out_dir/mlflow.db``, artifacts in ``out_dir/mlartifacts``).

    Example:
        >>> TuneConfig(dataset="basic-motions", fusions=["concat"], trials=4).sampler
        'tpe'
    """

    dataset: str
    fusions: list[str] = field(default_factory=lambda: ["concat"])
    trials: int = 12
    seeds: int = 2
    out_dir: str = "runs/tune"
    criterion: str = "nll"
    search_space: dict[str, list[Any]] | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    sampler_seed: int = 0
    storage: str | None = None
    study: str | None = None
    resume: bool = False
    workers: int = 1
    executor: str = "local"
    ray_address: str | None = None
    epochs: int | None = None
    data_dir: str | None = None
    device: str = "auto"
    num_threads: int | None = 1
    heartbeat_s: int = 30
    command: str = ""
    preset: str | Mapping[str, Any] | Preset | None = None
    log: list[str] = field(default_factory=list)
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        _tracking(self)  # the tracker names and options are checked before any work
        make_executor(self.executor, address=self.ray_address)  # a bad name or option is refused before any work
        for name in ("trials", "seeds", "workers", "heartbeat_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"The {name!r} parameter of TuneConfig must be a positive integer. Got {value!r}.")
        if not isinstance(self.criterion, str) or not is_metric(self.criterion) or self.criterion == "loss":
            raise ValueError(
                f"The 'criterion' parameter of TuneConfig must be a registered metric name such as 'nll', 'mse', "
                f"'accuracy' or 'mae' (see mmfuse.metrics.list_metrics()). Got {self.criterion!r}."
            )
        for name, valid in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"The {name!r} parameter of TuneConfig must be one of {', '.join(valid)}. "
                    f"Got {getattr(self, name)!r}."
                )
        if self.study is not None and (not isinstance(self.study, str) or not self.study.strip()):
            raise ValueError(f"The 'study' parameter of TuneConfig must be a non-empty name. Got {self.study!r}.")
        _check_space(self.search_space if self.search_space is not None else SEARCH_SPACES["default"])


def _check_space(space: Mapping[str, Any]) -> None:
    fields = {"model": _fields(ModelConfig), "train": _fields(TrainConfig)}
    for key, values in space.items():
        scope, _, name = key.partition(".")
        if scope not in fields or not name:
            raise ValueError(
                f"The search_space key {key!r} of TuneConfig must look like 'model.<field>' or 'train.<field>'."
            )
        if name not in fields[scope]:
            owner = "ModelConfig" if scope == "model" else "TrainConfig"
            raise ValueError(
                f"The search_space key {key!r} of TuneConfig names no field of {owner}. Valid: "
                f"{', '.join(sorted(fields[scope]))}."
            )
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"The search_space entry {key!r} of TuneConfig must be a non-empty list of values.")
        bad = [v for v in values if not isinstance(v, _SCALARS)]
        if bad:
            raise ValueError(
                f"The search_space entry {key!r} of TuneConfig must list numbers, strings, booleans or None. "
                f"Got {bad[0]!r}."
            )


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


@dataclass
class TuneResult:
    """What :func:`tune` returns.

    Attributes:
        out_dir: The tuning folder.
        trials: Every finished trial (the rows of ``trials.csv``).
        best: Per fusion, the chosen trial: the searched ``model`` / ``train`` settings, its ``criterion`` value
            and ``trial`` number.
        preset: What ``best.json`` holds: the data set's preset with each tuned fusion's entry set to the settings
            of its chosen trial (``compare`` reads it with ``preset=``, the CLI with ``--preset``).
    """

    out_dir: Path
    trials: list[dict[str, Any]]
    best: dict[str, dict[str, Any]]
    preset: Preset | None = None


def grid_points(space: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every configuration of a discrete space, in a fixed order (sorted keys, each key's values as listed).

    Example:
        >>> grid_points({"train.lr": [0.1, 0.01], "model.hidden": [8]})
        [{'model.hidden': 8, 'train.lr': 0.1}, {'model.hidden': 8, 'train.lr': 0.01}]
    """
    keys = sorted(space)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(space[k] for k in keys))]


@dataclass
class _Plan:
    """One fusion's study: its name, space (with the preset's values), first trial, budget and settings."""

    fusion: str
    study: str
    space: dict[str, list[Any]]
    first: dict[str, Any]
    base_model: dict[str, Any]
    base_train: dict[str, Any]
    budget: int
    enqueue: list[dict[str, Any]]
    signature: dict[str, Any]
    index: int


def tune(config: TuneConfig, *, progress: Callable[[dict[str, Any]], None] | None = None) -> TuneResult:
    """Optuna search per fusion, scored on the validation split only.

    Args:
        config: What to search.
        progress: Called with every finished trial row (in this process, also when workers train).

    Returns:
        The trial rows and, per fusion, ``{"model": {...}, "train": {...}, "criterion": value, "trial": i}``.

    Raises:
        DataError: if the data set lacks a ``train`` or ``val`` split.
        ConfigError: if the output folder or a study exists without ``resume``, or a resumed study was stored
            with other settings (the message lists the differing keys).
    """
    with torch_threads(config.num_threads), _quiet_optuna():
        return _tune(config, progress)


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """The library never prints: Optuna's per-trial INFO lines are silenced for the duration of the search."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _open(config: TuneConfig) -> tuple[MultimodalDataset, MultimodalDataset, MultimodalDataset]:
    """The data set and its normalised train and val views; the test split is never opened."""
    dataset = open_or_load_dataset(config.dataset, data_dir=config.data_dir)
    _check_splits(dataset)
    train_view, val_view = dataset.split("train"), dataset.split("val")
    normalizers = fit_normalizers(train_view)
    train_t, val_t = (v.with_transform(normalizers.transform_record) for v in (train_view, val_view))
    return dataset, train_t, val_t


def _check_splits(dataset: MultimodalDataset) -> None:
    missing = [s for s in ("train", "val") if s not in dataset.split_names]
    if missing:
        raise DataError(
            f"Data set {dataset.name!r} lacks the split(s) {missing}; tuning needs 'train' and 'val' (and never "
            f"reads 'test'). Its splits: {dataset.split_names}."
        )


def _tune(config: TuneConfig, progress: Callable[[dict[str, Any]], None] | None) -> TuneResult:
    dataset = open_or_load_dataset(config.dataset, data_dir=config.data_dir)
    _check_splits(dataset)
    fusions = resolve_fusions(config.fusions, modalities=list(dataset.modalities))
    _check_criterion(config.criterion, dataset.task.type.value)
    out_dir = Path(config.out_dir).resolve()
    _check_out_dir(out_dir, config.resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    _tracking(config).prepare()  # the MLflow experiment exists before any worker opens a run in it
    url = config.storage or f"sqlite:///{out_dir / 'tune.db'}"
    preset = resolve_preset(config.preset, dataset)
    base = config.study or dataset.name
    plans = [_plan(config, dataset, preset, fusion, f"{base}:{fusion}", i) for i, fusion in enumerate(fusions)]
    storage = _storage(url, config.heartbeat_s)
    for plan in plans:  # every study is checked before any trial runs
        _prepare_study(storage, plan, config)
    rows: list[dict[str, Any]] = []
    best: dict[str, dict[str, Any]] = {}
    chosen_preset = _chosen_preset(out_dir, config, dataset.name, preset, best)
    for plan in plans:
        done = _run_fusion(config, url, plan, out_dir, rows, progress)
        rows = [*rows, *done]
        chosen = _best(_load(storage, plan, config, 0), plan, config.criterion)
        if chosen is not None:
            best[plan.fusion] = chosen
        atomic_write_csv(out_dir / "trials.csv", rows)
        chosen_preset = _chosen_preset(out_dir, config, dataset.name, preset, best)
        atomic_write_json(out_dir / "best.json", chosen_preset.to_dict())
    _write_meta(out_dir, config, dataset, preset, plans, url)
    if config.log:
        _track_summary(config, out_dir)
    return TuneResult(out_dir=out_dir, trials=rows, best=best, preset=chosen_preset)


def _chosen_preset(
    out_dir: Path, config: TuneConfig, dataset: str, preset: Preset, best: Mapping[str, Mapping[str, Any]]
) -> Preset:
    """``best.json``: the preset the search started from, with each tuned fusion's entry set to its chosen trial.

    A fusion's entry holds its preset entry and the chosen values of the searched keys (and ``epochs`` when the
    search overrode it), so ``compare`` with this preset trains exactly the chosen configuration.
    """
    epochs = {"epochs": config.epochs} if config.epochs is not None else {}
    fusions = {name: {k: dict(v) for k, v in entry.items()} for name, entry in preset.fusions.items()}
    for fusion, chosen in best.items():
        entry = preset.fusions.get(fusion, {})
        fusions[fusion] = {
            "model": {**entry.get("model", {}), **chosen["model"]},
            "train": {**entry.get("train", {}), **chosen["train"], **epochs},
        }
    source = {
        "made_by": "mmfuse tune",
        "dataset": dataset,
        "preset": preset.name,
        "criterion": config.criterion,
        "chosen": {f: {"trial": c["trial"], "criterion": c["criterion"]} for f, c in best.items()},
    }
    return Preset(
        name=str(out_dir / "best.json"),
        model=dict(preset.model),
        train={**preset.train, **epochs},
        fusions=fusions,
        source=source,
    )


def _check_out_dir(out_dir: Path, resume: bool) -> None:
    present = [n for n in ("tune.json", "trials.csv", "best.json", "tune.db") if (out_dir / n).exists()]
    if present and not resume:
        raise ConfigError(
            f"The tuning folder {out_dir} already holds {', '.join(present)}. Pass --resume (TuneConfig(resume=True))"
            " to continue its studies, or choose another --out."
        )


def _plan(config: TuneConfig, dataset: MultimodalDataset, preset: Preset, fusion: str, study: str, index: int) -> _Plan:
    """The fusion's space with the preset's values among the candidates, its first trial, budget and signature."""
    base_model, base_train = preset.settings(fusion)
    space: dict[str, list[Any]] = {}
    first: dict[str, Any] = {}
    for key, values in sorted((config.search_space or SEARCH_SPACES["default"]).items()):
        scope, _, name = key.partition(".")
        current = _current(base_model if scope == "model" else base_train, scope, name, key)
        space[key] = [_plain(v) for v in values]
        if current not in space[key]:
            space[key].append(current)
        first[key] = current
    grid = math.prod(len(v) for v in space.values())
    budget = min(config.trials, grid)
    enqueue = [first]
    if config.trials >= grid:
        enqueue += [p for p in grid_points(space) if p != first]
    signature = _json_safe(
        {
            "dataset": dataset.name,
            "preset": preset.name,
            "fusion": fusion,
            "search_space": space,
            "first_trial": first,
            "criterion": get_metric(config.criterion).name,
            "seeds": config.seeds,
            "epochs": config.epochs,
            "splits_read": ["train", "val"],
        }
    )
    return _Plan(fusion, study, space, first, base_model, base_train, budget, enqueue, signature, index)


def _current(base: Mapping[str, Any], scope: str, name: str, key: str) -> Any:
    """The preset's value of a searched field, else the config class's default."""
    if name in base:
        value = base[name]
    else:
        spec = _fields(ModelConfig if scope == "model" else TrainConfig)[name]
        if spec.default is not dataclasses.MISSING:
            value = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            value = spec.default_factory()
        else:
            raise ValueError(f"The search_space key {key!r} of TuneConfig names a field without a default.")
    if not isinstance(value, _SCALARS):
        raise ValueError(
            f"The search_space key {key!r} of TuneConfig: its current value {value!r} is not a number, string, "
            "boolean or None, so it cannot be searched."
        )
    return _plain(value)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value))


# -- storage and studies ------------------------------------------------------------------------------------------
def _storage(url: str, heartbeat_s: int) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: a trial silent for two intervals is failed and enqueued again."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}  # workers wait for each other's writes
    with warnings.catch_warnings():  # heartbeats and the retry callback are marked experimental by Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        if retry_cls is not None:  # Optuna >= 4.9
            retry = {"heartbeat_stale_trial_callback": retry_cls(max_retry=3)}
        else:
            retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s, **retry
            )
        except Exception as exc:  # SQLAlchemy: unknown dialect, unreachable server, malformed URL
            raise ValueError(f"The 'storage' of TuneConfig, {_redact(url)!r}, cannot be opened: {exc}") from exc


def _redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"


def _prepare_study(storage: optuna.storages.RDBStorage, plan: _Plan, config: TuneConfig) -> None:
    """Create the study (and enqueue its planned trials), or check a stored one before resuming it."""
    names = {s.study_name for s in storage.get_all_studies()}
    if plan.study in names and not config.resume:
        raise ConfigError(
            f"The study {plan.study!r} already exists in {_redact(storage.url)}. Pass --resume "
            "(TuneConfig(resume=True)) to continue it, or choose another --study or --out."
        )
    if plan.study not in names and config.resume:
        raise ConfigError(
            f"Cannot resume: no study {plan.study!r} in {_redact(storage.url)} (studies there: "
            f"{', '.join(sorted(names)) or 'none'}). Run without --resume to start it."
        )
    higher = get_metric(config.criterion).higher_is_better  # the one direction rule: the metric registry's
    direction = optuna.study.StudyDirection.MAXIMIZE if higher else optuna.study.StudyDirection.MINIMIZE
    if plan.study in names:
        study = optuna.load_study(study_name=plan.study, storage=storage)
        _check_signature(study, plan)
    else:
        study = optuna.create_study(study_name=plan.study, storage=storage, direction=direction)
        study.set_user_attr("mmfuse_settings", plan.signature)
    taken = [t.params for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL]
    for params in plan.enqueue:
        if params not in taken:
            study.enqueue_trial(params)


def _check_signature(study: optuna.Study, plan: _Plan) -> None:
    stored = study.user_attrs.get("mmfuse_settings")
    if not isinstance(stored, dict):
        raise ConfigError(f"The study {plan.study!r} was not written by mmfuse tune (no stored settings).")
    keys = sorted(set(stored) | set(plan.signature))
    differ = [k for k in keys if stored.get(k) != plan.signature.get(k)]
    if differ:
        detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {plan.signature.get(k)!r}" for k in differ)
        raise ConfigError(
            f"Cannot resume the study {plan.study!r}: its settings differ in {', '.join(differ)} ({detail}). "
            "Use the stored settings, or start a new study (--study NAME or another --out)."
        )


def _load(storage: Any, plan: _Plan, config: TuneConfig, worker: int) -> optuna.Study:
    """The study with this worker's sampler and the pruner.

    The sampler's seed mixes ``sampler_seed``, the fusion, the worker and the number of trials already stored, so
    workers draw differently and a resumed search draws new configurations instead of replaying the first run's.
    """
    stored = len(storage.get_all_trials(storage.get_study_id_from_name(plan.study), deepcopy=False))
    entropy = [config.sampler_seed, plan.index, worker, stored]
    seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.TPESampler(seed=seed) if config.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    )
    pruner: optuna.pruners.BasePruner
    if config.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    elif config.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    else:
        pruner = optuna.pruners.NopPruner()
    return optuna.load_study(study_name=plan.study, storage=storage, sampler=sampler, pruner=pruner)


# -- running a study ----------------------------------------------------------------------------------------------
def _run_fusion(
    config: TuneConfig,
    url: str,
    plan: _Plan,
    out_dir: Path,
    earlier: list[dict[str, Any]],
    progress: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    """Optimise one study until its budget is met, in this process or in ``config.workers`` executor tasks."""
    storage = _storage(url, config.heartbeat_s)
    study = _load(storage, plan, config, 0)
    seen = {r["trial"] for r in _rows(study, plan, config.criterion)}  # trials of an earlier run (resume)

    def report() -> None:
        rows = _rows(study, plan, config.criterion)
        for row in rows:
            if row["trial"] not in seen:
                seen.add(row["trial"])
                if progress is not None:
                    progress(row)
        atomic_write_csv(out_dir / "trials.csv", [*earlier, *rows])

    executor = executor_or_none(
        config.executor, workers=config.workers, num_threads=config.num_threads, address=config.ray_address
    )
    try:
        if executor is None:
            _optimise(study, plan, config, _open(config), out_dir, on_trial=report)
        else:  # the study's workers as tasks of the shared executor; trials.csv follows the storage meanwhile
            executor.run(
                [{"worker": w} for w in range(config.workers)],
                functools.partial(_worker, config, url, plan, str(out_dir)),
                lambda _index, _row: report(),
                describe=lambda spec: f"tune worker {spec['worker']} of fusion {plan.fusion!r} (study {plan.study!r})",
                on_wait=report,
            )
    finally:
        report()  # trials.csv holds every stored trial, those of a failed search too
    return _rows(study, plan, config.criterion)


def _worker(config: TuneConfig, url: str, plan: _Plan, out_dir: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One worker task (module level, so ``spawn`` can import it; the executor set its torch threads)."""
    with _quiet_optuna():
        study = _load(_storage(url, config.heartbeat_s), plan, config, spec["worker"])
        _optimise(study, plan, config, _open(config), Path(out_dir), on_trial=None)
    return dict(spec)


def _optimise(
    study: optuna.Study,
    plan: _Plan,
    config: TuneConfig,
    data: tuple[MultimodalDataset, MultimodalDataset, MultimodalDataset],
    out_dir: Path,
    on_trial: Callable[[], None] | None,
) -> None:
    """Run trials until COMPLETE + PRUNED reaches the budget.

    Counting the trials and creating the next one happen under one file lock shared by every worker, so the budget
    is exact; the objective releases the lock as soon as its trial exists. Trials still running elsewhere are
    waited for: when their worker dies, the heartbeat fails them and the retry lands in this loop.
    """
    lock = FileLock(str(out_dir / f".{plan.fusion}.tune.lock"))
    callbacks = [lambda _study, _trial: on_trial()] if on_trial is not None else []
    while True:
        with lock:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            states = [t.state for t in study.get_trials(deepcopy=False)]
            finished = sum(s in _FINISHED for s in states)
            running = states.count(TrialState.RUNNING)
            if finished >= plan.budget:
                return
            if finished + running < plan.budget:
                study.optimize(lambda t: _objective(t, plan, config, data, lock), n_trials=1, callbacks=callbacks)
                continue
        time.sleep(1.0)  # every slot is taken by a running trial: wait for it to finish (or go stale)


def _objective(
    trial: optuna.Trial,
    plan: _Plan,
    config: TuneConfig,
    data: tuple[MultimodalDataset, MultimodalDataset, MultimodalDataset],
    lock: FileLock,
) -> float:
    lock.release()  # the trial exists: let the other workers count it and start theirs
    params = {key: trial.suggest_categorical(key, values) for key, values in plan.space.items()}
    twin = _twin(trial.study, trial.number, params)
    if twin is not None:  # already scored: reuse it instead of retraining
        trial.set_user_attr("repeat_of", twin.number)
        for key, value in twin.user_attrs.items():
            if key != "repeat_of":
                trial.set_user_attr(key, value)
        if twin.state == TrialState.PRUNED:
            raise optuna.TrialPruned(f"repeats the pruned trial {twin.number}")
        return float(twin.value)  # type: ignore[arg-type]
    model_delta, train_delta = _split(params)
    model_kwargs = {**plan.base_model, **model_delta}
    train_kwargs = {**plan.base_train, **train_delta, "device": config.device}
    if config.epochs is not None:
        train_kwargs["epochs"] = config.epochs
    trackers = _tracking(config).open(f"{plan.fusion}-trial{trial.number}") if config.log else []
    for tracker in trackers:
        tracker.log_params(
            {"fusion": plan.fusion, "trial": trial.number, "searched": params}
            | {"model": model_kwargs, "train": train_kwargs}
        )
    try:
        value = _train_trial(trial, plan, config, data, model_kwargs, train_kwargs, trackers)
    except optuna.TrialPruned:
        for tracker in trackers:
            tracker.log_metrics({"pruned_at_epoch": trial.user_attrs.get("pruned_at_epoch")}, prefix="")
        close_all(trackers)
        raise
    except BaseException:
        close_all(trackers, failed=True)
        raise
    for tracker in trackers:
        attrs = trial.user_attrs
        tracker.log_metrics(
            {f"val_{config.criterion}_mean": attrs["mean"], f"val_{config.criterion}_std": attrs["std"]}
            | {"val_accuracy_mean": attrs["val_accuracy_mean"]}
            | {"train_seconds": attrs["train_seconds"], "params": attrs["params"]},
            prefix="",
        )
    close_all(trackers)
    return value


def _train_trial(
    trial: optuna.Trial,
    plan: _Plan,
    config: TuneConfig,
    data: tuple[MultimodalDataset, MultimodalDataset, MultimodalDataset],
    model_kwargs: Mapping[str, Any],
    train_kwargs: Mapping[str, Any],
    trackers: Sequence[Tracker],
) -> float:
    """Train the trial's configuration with every seed; the criterion's mean (seed 0's curve may prune it)."""
    dataset, train_t, val_t = data
    scores, accs, seconds, n_params = [], [], 0.0, 0
    for seed in range(config.seeds):
        seed_everything(seed)
        model = build_model(model_config_for(dataset, plan.fusion, **model_kwargs))
        n_params = parameter_report(model).trainable
        callbacks: list[Any] = (
            [*trackers, _PruneOnCurve(trial, _curve_column(config.criterion, dataset))] if seed == 0 else []
        )
        start = time.perf_counter()
        try:
            result = Trainer(TrainConfig(**{**train_kwargs, "seed": seed}), callbacks=callbacks).fit(
                model, train_t, val_t
            )
        finally:
            seconds += time.perf_counter() - start
            trial.set_user_attr("params", n_params)
            trial.set_user_attr("train_seconds", round(seconds, 2))
        scores.append(_criterion(model, val_t, dataset, config.criterion))
        epoch = result.history[(result.best_epoch or len(result.history)) - 1]
        accs.append(float(epoch.get("val_accuracy", float("nan"))))
    mean = float(np.mean(scores))
    trial.set_user_attr("mean", mean)
    trial.set_user_attr("std", float(np.std(scores)))
    trial.set_user_attr("val_accuracy_mean", float(np.mean(accs)))
    if math.isnan(mean):  # Optuna fails a NaN value: rank it last instead, the row keeps the NaN
        return -math.inf if get_metric(config.criterion).higher_is_better else math.inf
    return mean


def _tracking(config: TuneConfig) -> TrackingConfig:
    """The trackers of a search: the same in every worker (the experiment is found by name)."""
    return TrackingConfig(config.log, str(Path(config.out_dir).resolve()), config.tracking_uri)


def _track_summary(config: TuneConfig, out_dir: Path) -> None:
    """One ``summary`` tracker run: the search's settings and ``trials.csv``, ``best.json``, ``tune.json``."""
    with closing_all(_tracking(config).open("summary")) as trackers:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("trials.csv", "best.json", "tune.json"):
                if (out_dir / name).is_file():
                    shutil.copy2(out_dir / name, Path(tmp) / name)
            for tracker in trackers:
                tracker.log_params(
                    {"dataset": config.dataset, "fusions": config.fusions, "trials": config.trials}
                    | {"seeds": config.seeds, "criterion": config.criterion, "sampler": config.sampler}
                    | {"pruner": config.pruner}
                )
                tracker.log_artifacts(tmp, "tune")


class _PruneOnCurve:
    """Trainer callback: reports seed 0's per-epoch validation curve to the trial and prunes when told to."""

    def __init__(self, trial: optuna.Trial, column: str) -> None:
        self.trial = trial
        self.column = column

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> None:
        value = logs.get(self.column)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", epoch)
            raise optuna.TrialPruned(f"pruned at epoch {epoch} on {self.column}")


def _curve_column(criterion: str, dataset: MultimodalDataset) -> str:
    """``val_loss`` when the criterion is the task's loss (cross-entropy / MSE), else ``val_<criterion>``."""
    name = get_metric(criterion).name
    loss = "log_loss" if dataset.task.type.value == "classification" else "mse"
    return "val_loss" if name == loss else f"val_{name}"


def _twin(study: optuna.Study, number: int, params: Mapping[str, Any]) -> FrozenTrial | None:
    same = [t for t in study.get_trials(deepcopy=False, states=_FINISHED) if t.number != number and t.params == params]
    return min(same, key=lambda t: t.number) if same else None


def _split(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model = {k.removeprefix("model."): v for k, v in params.items() if k.startswith("model.")}
    train = {k.removeprefix("train."): v for k, v in params.items() if k.startswith("train.")}
    return model, train


# -- outputs ------------------------------------------------------------------------------------------------------
def _rows(study: optuna.Study, plan: _Plan, criterion: str) -> list[dict[str, Any]]:
    """One ``trials.csv`` row per finished trial (COMPLETE, PRUNED or FAIL); pruned rows have no criterion value."""
    trials = study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.FAIL))
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        attrs = t.user_attrs
        complete = t.state == TrialState.COMPLETE
        rows.append(
            {
                "fusion": plan.fusion,
                "trial": t.number,
                "state": t.state.name,
                **{k: t.params.get(k) for k in plan.space},
                f"val_{criterion}_mean": attrs.get("mean") if complete else None,
                f"val_{criterion}_std": attrs.get("std") if complete else None,
                **{k: attrs.get(k) for k in _ATTRS},
                "repeat_of": attrs.get("repeat_of"),
            }
        )
    return rows


def _best(study: optuna.Study, plan: _Plan, criterion: str) -> dict[str, Any] | None:
    """The best COMPLETE trial in the study's direction (the earliest among ties: a repeat never wins)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    chosen = min(complete, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]
    model, train = _split(chosen.params)
    return {"model": model, "train": train, "criterion": chosen.user_attrs.get("mean"), "trial": chosen.number}


def _write_meta(
    out_dir: Path, config: TuneConfig, dataset: MultimodalDataset, preset: Preset, plans: Sequence[_Plan], url: str
) -> None:
    atomic_write_json(
        out_dir / "tune.json",
        {
            "dataset": dataset.name,
            "preset": preset.name,
            "fusions": [p.fusion for p in plans],
            "trials": config.trials,
            "budget": {p.fusion: p.budget for p in plans},
            "seeds": list(range(config.seeds)),
            "criterion": config.criterion,
            "lower_is_better": not get_metric(config.criterion).higher_is_better,
            "search_space": {p.fusion: copy.deepcopy(p.space) for p in plans},
            "first_trial": {p.fusion: p.first for p in plans},
            "sampler": config.sampler,
            "sampler_seed": config.sampler_seed,
            "pruner": config.pruner,
            "storage": _redact(url),
            "studies": {p.fusion: p.study for p in plans},
            "workers": config.workers,
            "resumed": config.resume,
            "epochs": config.epochs,
            "splits_read": ["train", "val"],
            "command": config.command,
            "versions": {**versions(), "optuna": optuna.__version__},
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


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
