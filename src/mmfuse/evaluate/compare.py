"""The main job: train and test every chosen fusion for every seed under one protocol, and write the results.

One protocol for every fusion: the same data splits, the same normalisers (fitted on the training split only),
the same model around the fusion (projection -> temporal encoder -> fusion -> head), the same training recipe
and early stopping on the validation split, and the test split touched once per run, after training. Only
the fusion module changes between rows of the comparison.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.data import MultimodalDataset, open_dataset, open_or_load_dataset
from mmfuse.errors import DataError, MmfuseWarning
from mmfuse.evaluate.executors import RunExecutor, executor_or_none, make_executor
from mmfuse.evaluate.predictions import RunPredictions
from mmfuse.evaluate.protocol import (
    UNIMODAL_PREFIX,
    Preset,
    causal_settings,
    fit_normalizers,
    model_config_for,
    not_causal_reason,
    resolve_fusions,
    resolve_preset,
    settings_for,
    split_metrics,
    stream_info,
    torch_threads,
    versions,
    write_test_metrics,
)
from mmfuse.evaluate.rundir import RunDir
from mmfuse.evaluate.significance import significance_columns
from mmfuse.metrics import default_metrics, get_metric, main_metric, summarize_runs
from mmfuse.models import (
    ModelConfig,
    build_model,
    count_parameters,
    load_model,
    parameter_report,
    read_model_info,
    save_model,
)
from mmfuse.train import Predictions, TrainConfig, Trainer, predict, seed_everything
from mmfuse.train.tracking import TrackingConfig, closing_all

__all__ = [
    "UNIMODAL_PREFIX",
    "CompareConfig",
    "CompareProgress",
    "CompareResult",
    "compare",
    "resolve_fusions",
]

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "basic-motions"


@dataclass
class CompareConfig:
    """What ``mmfuse compare`` runs.

    Attributes:
        dataset: A registered data-set name, or the path of a data set in mmfuse's native format.
        fusions: Fusion names to compare (``["all"]`` means every registered fusion).
        seeds: How many seeds (``0 .. seeds-1``) each fusion is trained with.
        out_dir: Where the run directory is written.
        epochs: Overrides the preset's number of epochs when given.
        data_dir: Folder holding local copies of data sets (else ``MMFUSE_DATA_DIR``, else download/cache).
        model_overrides: Extra :class:`ModelConfig` keyword arguments applied over the preset.
        train_overrides: Extra :class:`TrainConfig` keyword arguments applied over the preset.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        max_params: Refuse models with more trainable parameters than this.
        command: The command line that started the run, recorded in ``run.json``.
        resume: Reuse the runs of ``out_dir`` that finished (their ``result.json``, checked against this run's
            settings and model directories) and continue an interrupted run from its last checkpoint, instead of
            starting every run afresh.
        overwrite: Replace an existing ``out_dir`` whole (its models, analysis and tables). The old directory
            is moved aside once every setting of the new run is validated and deleted when the new run has
            finished; a failed run puts it back. Without ``resume`` or ``overwrite`` an existing, non-empty
            ``out_dir`` is refused: a run directory holds one run.
        keep_checkpoints: Keep each run's ``last/`` checkpoint (optimizer, scheduler and RNG state, about three
            times the model's size) after the run has finished; by default it is removed once the run is done.
        num_threads: Torch intra-op threads; small sequence models run fastest with 1 on a busy machine.
        executor: Where the runs train: ``"local"`` (``jobs`` processes of this machine) or ``"ray"`` (one Ray task
            per fusion x seed run, 1 CPU and ``num_threads`` threads each, retried once, on ``ray_address`` or a
            local Ray instance); see :mod:`mmfuse.evaluate.executors`. Results are the same with every executor.
        ray_address: The Ray cluster to join (``"auto"``, ``"ray://head:10001"``); only with ``executor="ray"``.
        jobs: Runs trained at the same time, each in its own process (1: in this process). On a machine with
            ``n`` cores, ``jobs = n`` with ``num_threads = 1`` is usually fastest for small models. Results do not
            depend on ``jobs``: every run is seeded on its own.
        metrics: Test metrics recorded per run (registered names, see :func:`mmfuse.metrics.list_metrics`);
            default: :func:`mmfuse.metrics.default_metrics` of the task. The first ranks the summary unless
            ``main_metric`` is given.
        main_metric: The metric that ranks the fusions (default: the first of ``metrics``).
        modalities: Compare on these modalities of the data set only (default: all of them); ``"all"`` and
            ``"unimodal"`` then expand to the baselines of these modalities. Recorded in ``run.json``.
        causal: Train streaming-ready models (:func:`~mmfuse.evaluate.protocol.causal_settings`: causal
            encoders and fusion, unidirectional recurrent encoders, ``pooling="last"`` for sample labels), which
            :class:`~mmfuse.stream.StreamingSession` and ``mmfuse serve`` run on. A fusion named explicitly that
            cannot be causal is refused with the reason; one that ``"all"`` brought in is skipped with a
            warning (recorded in ``run.json``). Each model's ``config.json`` records the grid rate the stream
            needs (``"stream"``).
        preset: The settings to start from instead of the data set's registered preset: a
            :class:`~mmfuse.evaluate.protocol.Preset`, its file form as a mapping, or the path of a YAML/JSON preset
            file or of a ``tune`` folder (its ``best.json``). ``model_overrides``, ``train_overrides`` and
            ``epochs`` still apply over it. ``run.json`` records its name.
        experiment: The experiment file of this run in ``mmfuse compare --config`` form (the CLI passes its
            resolved options). When given, the run directory's ``config.yaml`` holds it with ``preset`` set to the
            preset the run used, written out in full, so that file alone reruns the comparison.
        log: Experiment trackers (``"tensorboard"``, ``"mlflow"``, see :mod:`mmfuse.train.tracking`): every run
            logs its per-epoch metrics, configuration, test metrics and model directory; a final ``summary`` run
            logs the summary metrics and the report. A reused run (``resume``) is not logged again.
        tracking_uri: MLflow's tracking URI (default: ``out_dir/mlflow.db``, artifacts in ``out_dir/mlartifacts``).

    Example:
        >>> cfg = CompareConfig(fusions=["concat", "gated"], seeds=2, epochs=5, device="cpu")
        >>> cfg.dataset == DEFAULT_DATASET, cfg.fusions
        (True, ['concat', 'gated'])
    """

    dataset: str = DEFAULT_DATASET
    fusions: list[str] = field(default_factory=lambda: ["all"])
    seeds: int = 3
    out_dir: str = "runs/compare"
    epochs: int | None = None
    data_dir: str | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    max_params: int | None = None
    command: str = ""
    resume: bool = False
    overwrite: bool = False
    keep_checkpoints: bool = False
    num_threads: int | None = 1
    jobs: int = 1
    executor: str = "local"
    ray_address: str | None = None
    metrics: list[str] | None = None
    main_metric: str | None = None
    modalities: list[str] | None = None
    causal: bool = False
    preset: str | Mapping[str, Any] | Preset | None = None
    experiment: dict[str, Any] | None = None
    log: list[str] = field(default_factory=list)
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        TrackingConfig(self.log, self.out_dir, self.tracking_uri)  # names and options checked before any work
        if self.resume and self.overwrite:
            raise ValueError(
                "The 'resume' and 'overwrite' parameters of CompareConfig exclude each other: resume continues the "
                "run in out_dir, overwrite replaces it. Choose one."
            )
        make_executor(self.executor, address=self.ray_address)  # a bad name or option is refused before any work
        if not isinstance(self.jobs, int) or isinstance(self.jobs, bool) or self.jobs < 1:
            raise ValueError(f"The 'jobs' parameter of CompareConfig must be a positive integer. Got {self.jobs!r}.")
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            raise ValueError(f"The 'seeds' parameter of CompareConfig must be a positive integer. Got {self.seeds!r}.")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ValueError(
                f"The 'epochs' parameter of CompareConfig must be a positive integer or None. Got {self.epochs!r}."
            )
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(
                f"The 'num_threads' parameter of CompareConfig must be a positive integer or None. "
                f"Got {self.num_threads!r}."
            )
        if not self.fusions or not any(str(f).replace(",", "").strip() for f in self.fusions):
            raise ValueError(
                f"The 'fusions' parameter of CompareConfig must name at least one fusion (or 'all'). "
                f"Got {self.fusions!r}."
            )
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(
                "The 'dataset' parameter of CompareConfig must be a registered data-set name or a data-set folder. "
                f"Got {self.dataset!r}."
            )
        if self.modalities is not None:
            if isinstance(self.modalities, str) or not all(isinstance(m, str) and m.strip() for m in self.modalities):
                raise ValueError(
                    "The 'modalities' parameter of CompareConfig must be a list of modality names. "
                    f"Got {self.modalities!r}."
                )
            self.modalities = list(dict.fromkeys(m.strip() for m in self.modalities))
            if not self.modalities:
                raise ValueError("The 'modalities' parameter of CompareConfig must name at least one modality.")
        if not isinstance(self.causal, bool):
            raise ValueError(f"The 'causal' parameter of CompareConfig must be a bool. Got {self.causal!r}.")
        for name in [*(self.metrics or []), *([self.main_metric] if self.main_metric else [])]:
            get_metric(name)  # an unknown name raises, listing the registered ones
        if self.preset is not None and not isinstance(self.preset, str | Mapping | Preset):
            raise ValueError(
                "The 'preset' parameter of CompareConfig must be a Preset, a mapping in preset form, or the path of "
                f"a preset file or tune folder. Got {type(self.preset).__name__}."
            )
        if self.experiment is not None and not isinstance(self.experiment, Mapping):
            raise ValueError(
                f"The 'experiment' parameter of CompareConfig must be a mapping. Got {type(self.experiment).__name__}."
            )

    def run_executor(self) -> RunExecutor | None:
        """Where the runs train, and where ``compare --analyze`` sends the analysis tasks; None: in this process.

        :func:`~mmfuse.evaluate.executors.executor_or_none` of ``executor``, ``jobs``, ``num_threads`` and
        ``ray_address``.

        Example:
            >>> CompareConfig(jobs=2).run_executor()
            LocalProcessExecutor(workers=2, num_threads=1)
        """
        return executor_or_none(
            self.executor, workers=self.jobs, num_threads=self.num_threads, address=self.ray_address
        )


@dataclass
class CompareProgress:
    """A progress event passed to the ``progress`` callback of :func:`compare`.

    ``done`` events carry the run's results row in ``logs`` and the metric that ranks the comparison in
    ``main_metric``; epoch events carry the trainer's epoch logs.
    """

    fusion: str
    seed: int
    run_index: int
    total_runs: int
    epoch: int | None = None
    epochs: int | None = None
    logs: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    main_metric: str | None = None


@dataclass
class CompareResult:
    """What :func:`compare` returns.

    Attributes:
        out_dir: The run directory.
        rows: One dict per fusion x seed (the rows of ``results.csv``).
        summary: One dict per fusion (the rows of ``summary.csv``), best first.
        main_metric: The metric the summary is sorted by.
        metrics: Every test metric recorded per run (the columns of ``results.csv``), in order.
    """

    out_dir: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    main_metric: str
    metrics: list[str] = field(default_factory=list)

    @property
    def best(self) -> dict[str, Any]:
        """The summary row of the best fusion."""
        return self.summary[0]


def compare(
    config: CompareConfig,
    *,
    progress: Callable[[CompareProgress], None] | None = None,
) -> CompareResult:
    """Train and test every chosen fusion for every seed, and write the run directory.

    The run directory holds ``results.csv``, ``summary.csv``, ``summary.md``, ``report.html``, ``run.json`` and
    ``models/<fusion>-seed<k>/`` (``model.safetensors``, ``config.json``, normalisers, history, test metrics);
    its layout is documented in ``docs/architecture.md``.

    Args:
        config: What to run.
        progress: Called after every epoch and at the end of every run (the CLI draws its progress bar from it).

    Returns:
        The rows written, the per-fusion summary (best first) and the main metric.
    """
    with torch_threads(config.num_threads):
        return _compare(config, progress)


def _metric_names(config: CompareConfig, task: str) -> tuple[list[str], str]:
    """The test metrics recorded per run and the one that ranks the summary, checked against the task."""
    names = [get_metric(m).name for m in config.metrics] if config.metrics else list(default_metrics(task))
    wrong = [m for m in names if not get_metric(m).applies_to(task) or get_metric(m).scorer is None]
    if wrong:
        raise ValueError(
            f"The metric(s) {wrong} cannot be computed on this {task} data set's test predictions. "
            f"Choose from: {', '.join(m for m in default_metrics(task))} or any of "
            f"{', '.join(n for n in _computable(task))}."
        )
    main = main_metric(task, config.main_metric or names[0])
    if main not in names:
        names.insert(0, main)
    return list(dict.fromkeys(names)), main


def _computable(task: str) -> list[str]:
    from mmfuse.metrics import list_metrics

    return [n for n in list_metrics(task) if get_metric(n).scorer is not None]


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""The errors of a disk that cannot take the run: a new run's unfinished model directories are removed."""


def _compare(config: CompareConfig, progress: Callable[[CompareProgress], None] | None) -> CompareResult:
    run = RunDir(config.out_dir)
    run.check_ready(resume=config.resume, overwrite=config.overwrite)  # refused before any data is read
    dataset = open_or_load_dataset(config.dataset, data_dir=config.data_dir)
    in_use = _modalities_in_use(config, dataset)
    fusions = resolve_fusions(config.fusions, modalities=in_use)
    task = dataset.task
    skipped = _drop_non_causal(config, fusions) if config.causal else []
    fusions = [f for f in fusions if f not in {name for name, _ in skipped}]

    preset = resolve_preset(config.preset, dataset)
    if config.experiment is not None:  # config.yaml: the preset the run used, in full
        config = dataclasses.replace(
            config, experiment={**config.experiment, "preset": {"name": preset.name, **preset.to_dict()}}
        )
    level = task.level.value
    model_kwargs, train_kwargs = _settings(preset, None, config, level)
    per_fusion = {f: _settings(preset, f, config, level) for f in fusions}
    metric_names, main = _metric_names(config, task.type.value)

    # Check everything that can be checked before the first file is written: every model config builds within
    # the parameter budget, the training config is valid, and a resumed run directory used the same settings.
    subset = in_use if config.modalities is not None else None
    model_configs = {f: model_config_for(dataset, f, modalities=subset, **per_fusion[f][0]) for f in fusions}
    params = {f: count_parameters(cfg, max_params=config.max_params).trainable for f, cfg in model_configs.items()}
    for _, fusion_train in per_fusion.values():
        TrainConfig(**fusion_train)
    if config.resume:
        _check_resumable(run, dataset.name, in_use, model_kwargs, train_kwargs)
    # The three splits exist, and every stored file of the data set is read (and its checksum checked) by
    # fitting the normalisers and reading one sample, so a missing split or a corrupt file is refused here.
    missing = [s for s in ("train", "val", "test") if s not in dataset.split_names]
    if missing:
        raise DataError(
            f"Data set {dataset.name!r} ({dataset.path}) lacks the split(s) {missing}; compare needs 'train', 'val' "
            f"and 'test'. Its splits: {dataset.split_names}."
        )
    views = {s: dataset.split(s) for s in ("train", "val", "test")}
    # Normalisers are fitted on the training split only, once, and shared by every run.
    normalizers = fit_normalizers(views["train"])
    _ = dataset[0]
    degenerate = _degenerate_inputs(dataset, views, in_use, fusions)
    degenerate += [
        f"Fusion {name!r} is skipped: --causal trains streaming-ready models and it cannot be causal ({reason})."
        for name, reason in skipped
    ]
    stream = _stream_info(dataset) if config.causal else None
    for text in degenerate:
        warnings.warn(text, MmfuseWarning, stacklevel=3)

    stale = run.stale_asides()
    if stale and not config.overwrite:
        logger.warning(
            "An interrupted --overwrite of %s left the earlier run aside in %s; delete it, or it goes with the "
            "next --overwrite.",
            run.path,
            ", ".join(str(p) for p in stale),
        )
    fresh = not (config.resume or config.overwrite)
    run.prepare(resume=config.resume, overwrite=config.overwrite)
    try:
        result = _train_and_report(
            config,
            run,
            dataset,
            views,
            normalizers,
            fusions,
            model_configs,
            params,
            per_fusion,
            progress,
            meta=_run_meta(
                config,
                dataset,
                views,
                fusions,
                per_fusion,
                (model_kwargs, train_kwargs),
                preset.name,
                metric_names,
                main,
            )
            | {"modalities": in_use, "warnings": degenerate, "causal": config.causal},
            metric_names=metric_names,
            main=main,
            stream=stream,
        )
    except BaseException as exc:
        run.rollback()  # an overwrite that failed puts the previous run back; otherwise a no-op
        if fresh and isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            # a new run on a full or read-only disk: no half-written model stays behind
            removed = run.discard_unfinished()
            logger.warning("%s: the disk cannot be written; removed the unfinished %s", run.path, removed)
        raise
    run.commit()
    return result


def _run_meta(
    config: CompareConfig,
    dataset: MultimodalDataset,
    views: Mapping[str, MultimodalDataset],
    fusions: Sequence[str],
    per_fusion: Mapping[str, tuple[dict[str, Any], dict[str, Any]]],
    settings: tuple[dict[str, Any], dict[str, Any]],
    preset_name: str,
    metric_names: Sequence[str],
    main: str,
) -> dict[str, Any]:
    """The contents of ``run.json`` at the start of the run (``finished`` is filled in at the end)."""
    task = dataset.task
    model_kwargs, train_kwargs = settings
    meta: dict[str, Any] = {
        "dataset": {
            "name": dataset.name,
            "path": str(Path(dataset.path).resolve()),
            "description": getattr(dataset, "description", ""),
            "modalities": {m: {"dim": s.dim, "kind": s.kind} for m, s in dataset.modalities.items()},
            "task": {"type": task.type.value, "level": task.level.value, "class_names": list(task.class_names)},
            "sizes": {name: len(view) for name, view in views.items()},
        },
        "fusions": list(fusions),
        "seeds": list(range(config.seeds)),
        "train_config": train_kwargs,
        "model_config": model_kwargs,
        "preset": preset_name,
        "metrics": list(metric_names),
        "main_metric": main,
        "versions": versions(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "finished": None,
        "command": config.command,
    }
    if any(per_fusion[f] != settings for f in fusions):
        meta["per_fusion"] = {f: {"model_config": mk, "train_config": tk} for f, (mk, tk) in per_fusion.items()}
    return meta


def _train_and_report(
    config: CompareConfig,
    run: RunDir,
    dataset: MultimodalDataset,
    views: Mapping[str, MultimodalDataset],
    normalizers: Any,
    fusions: Sequence[str],
    model_configs: Mapping[str, ModelConfig],
    params: Mapping[str, int],
    per_fusion: Mapping[str, tuple[dict[str, Any], dict[str, Any]]],
    progress: Callable[[CompareProgress], None] | None,
    *,
    meta: dict[str, Any],
    metric_names: list[str],
    main: str,
    stream: dict[str, Any] | None = None,
) -> CompareResult:
    """Everything that writes: ``run.json``, every run (in this process or in workers), the tables and report."""
    from mmfuse.evaluate.report import write_report, write_summary_markdown

    run.models_dir.mkdir(parents=True, exist_ok=True)
    run.write_meta(meta)
    tracking = TrackingConfig(config.log, str(run.path), config.tracking_uri).prepare()
    if config.experiment is not None:
        run.write_config(config.experiment)
    train_t, val_t, test_t = (views[s].with_transform(normalizers.transform_record) for s in ("train", "val", "test"))
    jobs = [(fusion, seed) for fusion in fusions for seed in range(config.seeds)]
    total = len(jobs)
    common: dict[str, Any] = {
        "metric_names": metric_names,
        "main_metric": main,
        "out_dir": run.path,
        "max_params": config.max_params,
        "resume": config.resume,
        "keep_checkpoints": config.keep_checkpoints,
        "total_runs": total,
        "stream": stream,
        "tracking": tracking.to_dict() if tracking.enabled else None,
    }
    rows: list[dict[str, Any]] = []
    executor = config.run_executor()
    if executor is None or (executor.name == "local" and total == 1):
        for run_index, (fusion, seed) in enumerate(jobs, start=1):
            rows.append(
                _run_one(
                    fusion=fusion,
                    seed=seed,
                    dataset=dataset,
                    train=train_t,
                    val=val_t,
                    test=test_t,
                    normalizers=normalizers,
                    model_config=model_configs[fusion],
                    expected_params=params[fusion],
                    train_kwargs=per_fusion[fusion][1],
                    progress=progress,
                    run_index=run_index,
                    **common,
                )
            )
            run.write_results(rows)
    else:
        rows = _run_parallel(
            executor, run, dataset, normalizers, jobs, model_configs, params, per_fusion, common, progress
        )

    summary = summarize_runs(rows, by="fusion", metrics=["params", "train_seconds", *metric_names])
    summary.sort(key=lambda r: r[f"{main}_mean"], reverse=get_metric(main).higher_is_better)
    significance = significance_columns(run, fusions, range(config.seeds), main)
    for row in summary:
        row.update(significance.columns[row["fusion"]])
    run.write_summary(summary)
    meta["significance"] = significance.settings | {"notes": significance.notes}
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run.write_meta(meta)
    write_summary_markdown(run.path)
    write_report(run.path)
    if tracking.enabled:
        _track_summary(tracking, run, meta, summary, main)
    return CompareResult(out_dir=run.path, rows=rows, summary=summary, main_metric=main, metrics=metric_names)


def _run_one(
    *,
    fusion: str,
    seed: int,
    dataset: MultimodalDataset,
    train: MultimodalDataset,
    val: MultimodalDataset,
    test: MultimodalDataset,
    normalizers: Any,
    model_config: ModelConfig,
    expected_params: int,
    train_kwargs: dict[str, Any],
    metric_names: Sequence[str],
    main_metric: str,
    out_dir: Path,
    max_params: int | None,
    resume: bool,
    keep_checkpoints: bool,
    progress: Callable[[CompareProgress], None] | None,
    run_index: int,
    total_runs: int,
    stream: dict[str, Any] | None = None,
    tracking: dict[str, Any] | None = None,
) -> dict[str, Any]:
    task = dataset.task
    run = RunDir(out_dir)
    run_dir = run.model_dir(fusion, seed)
    done_file = run.result_json(fusion, seed)
    if resume and done_file.exists():
        finished = _reused_row(run, fusion, seed, model_config, expected_params, metric_names, dataset.name)
        _ensure_predictions(run, fusion, seed, {"val": val, "test": test}, task)
        finished = _with_validation_columns(run, fusion, seed, finished, task, metric_names)
        logger.info("%s seed %d: reusing the finished run in %s", fusion, seed, run_dir)
        if progress is not None:
            progress(
                CompareProgress(fusion, seed, run_index, total_runs, logs=finished, done=True, main_metric=main_metric)
            )
        return finished
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    model = build_model(model_config, max_params=max_params)
    # The resumable checkpoint every 10 epochs (and at the end): a resumed run ends with the same weights.
    train_config = TrainConfig(seed=seed, **{"checkpoint_every": 10, **train_kwargs})

    callbacks: list[Any] = []
    if progress is not None:
        callbacks.append(_ProgressCallback(progress, fusion, seed, run_index, total_runs, train_config.epochs))
    trackers = TrackingConfig.from_dict(tracking).open(run_dir.name) if tracking else []
    with closing_all(trackers):
        for tracker in trackers:
            tracker.log_params(
                {"fusion": fusion, "seed": seed, "dataset": dataset.name, "model": model_config.to_dict()}
                | {"train": train_config.to_dict()}
            )
        callbacks.extend(trackers)
        row = _train_and_test(
            model,
            train_config,
            callbacks,
            fusion=fusion,
            seed=seed,
            dataset=dataset,
            splits=(train, val, test),
            normalizers=normalizers,
            metric_names=metric_names,
            run=run,
            resume=resume,
            stream=stream,
        )
        if not keep_checkpoints:
            shutil.rmtree(run_dir / "last", ignore_errors=True)
        for tracker in trackers:
            tracker.log_metrics({k: v for k, v in row.items() if k in metric_names})
            tracker.log_artifacts(run_dir, "model")
    if progress is not None:
        progress(CompareProgress(fusion, seed, run_index, total_runs, logs=row, done=True, main_metric=main_metric))
    logger.info("%s seed %d: %s", fusion, seed, json.dumps({k: row[k] for k in metric_names}))
    return row


def _train_and_test(
    model: Any,
    train_config: TrainConfig,
    callbacks: Sequence[Any],
    *,
    fusion: str,
    seed: int,
    dataset: MultimodalDataset,
    splits: tuple[MultimodalDataset, MultimodalDataset, MultimodalDataset],
    normalizers: Any,
    metric_names: Sequence[str],
    run: RunDir,
    resume: bool,
    stream: dict[str, Any] | None,
) -> dict[str, Any]:
    """Fit one run, test its best model, and write its model directory, predictions and ``result.json``."""
    task = dataset.task
    train, val, test = splits
    run_dir = run.model_dir(fusion, seed)
    start = time.perf_counter()
    resume_run = resume and (run_dir / "last").is_dir()
    result = Trainer(train_config, callbacks=callbacks).fit(model, train, val, out_dir=run_dir, resume=resume_run)
    train_seconds = time.perf_counter() - start

    best = load_model(run_dir)
    test_predictions = predict(best, test, task=task)
    val_predictions = predict(best, val, task=task)
    metrics = write_test_metrics(run_dir, test_predictions, task, metric_names)
    run.write_predictions(fusion, seed, "test", RunPredictions.from_predictions(test_predictions))
    run.write_predictions(fusion, seed, "val", RunPredictions.from_predictions(val_predictions))
    normalizers.save(run_dir)
    extra: dict[str, Any] = {"train_config": train_config.to_dict(), "dataset": dataset.name}
    if stream is not None:
        extra["stream"] = stream
    save_model(best, run_dir, extra=extra)

    row: dict[str, Any] = {
        "fusion": fusion,
        "seed": seed,
        "params": parameter_report(best).trainable,
        "train_seconds": round(train_seconds, 2),
        "best_epoch": result.best_epoch,
    }
    row.update(_metric_numbers(metrics, metric_names))
    row.update(_validation_columns(val_predictions, task, metric_names, result.history, result.best_epoch))
    run.write_result(fusion, seed, row)
    return row


def _metric_numbers(metrics: Mapping[str, Any], names: Sequence[str], prefix: str = "") -> dict[str, float]:
    """``{prefix + name: value}`` for every metric of ``names``: a float, NaN where it could not be computed."""
    return {f"{prefix}{n}": float(metrics[n]) if metrics.get(n) is not None else float("nan") for n in names}


def _validation_columns(
    predictions: Predictions,
    task: Any,
    metric_names: Sequence[str],
    history: Sequence[Mapping[str, Any]],
    best_epoch: Any,
) -> dict[str, float]:
    """A results row's validation columns: the same in every row, whatever each run monitored.

    ``val_<metric>`` for every metric of ``metric_names``, scored on the kept model's validation predictions, and
    ``val_loss``, the validation loss at the selected epoch in the trainer's history (what the ``loss`` monitor
    selects on), so the selection value is visible whatever the monitor.
    """
    columns = _metric_numbers(split_metrics(predictions, task, metric_names), metric_names, prefix="val_")
    losses = [h.get("val_loss") for h in history if isinstance(h, Mapping) and h.get("epoch") == best_epoch]
    loss = losses[0] if losses else None
    columns["val_loss"] = float(loss) if isinstance(loss, int | float) and not isinstance(loss, bool) else float("nan")
    return columns


def _with_validation_columns(
    run: RunDir, fusion: str, seed: int, row: dict[str, Any], task: Any, metric_names: Sequence[str]
) -> dict[str, Any]:
    """A reused row with the validation columns of :func:`_validation_columns`, from the run's saved files.

    A run finished before every row carried them recorded only ``val_<monitor>``: its columns are computed from its
    saved validation predictions and ``history.json`` (``val_loss`` is NaN without a readable history), and its
    ``result.json`` is rewritten with them, so ``results.csv`` has the same columns in every row.
    """
    wanted = {f"val_{name}" for name in metric_names} | {"val_loss"}
    if {k for k in row if k.startswith("val_")} == wanted:
        return row
    saved = run.read_predictions(fusion, seed, "val")
    predictions = Predictions(
        task.type.value,
        task.level.value,
        saved.y_pred,
        saved.y_true,
        saved.probs,
        saved.item_ids,
        np.arange(len(saved)),  # one row per item
        None,
    )
    try:
        history = json.loads((run.model_dir(fusion, seed) / RunDir.HISTORY_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        history = []
    rows = history if isinstance(history, list) else []
    columns = _validation_columns(predictions, task, metric_names, rows, row.get("best_epoch"))
    completed = {k: v for k, v in row.items() if not k.startswith("val_")} | columns
    run.write_result(fusion, seed, completed)
    logger.info("%s seed %d: added the validation columns %s to the reused run", fusion, seed, sorted(columns))
    return completed


def _track_summary(
    tracking: TrackingConfig, run: RunDir, meta: Mapping[str, Any], summary: Sequence[Mapping[str, Any]], main: str
) -> None:
    """One ``summary`` tracker run: the run's settings, each fusion's mean test metric, and the report as files."""
    with closing_all(tracking.open("summary")) as trackers:
        for tracker in trackers:
            tracker.log_params(
                {k: meta[k] for k in ("fusions", "seeds", "preset", "main_metric", "train_config", "model_config")}
            )
            tracker.log_metrics({str(row["fusion"]): row[f"{main}_mean"] for row in summary}, prefix=f"{main}_mean/")
            report_files = [p for p in sorted(run.path.iterdir()) if p.is_file() and p.suffix in _REPORT_SUFFIXES]
            with tempfile.TemporaryDirectory() as tmp:  # the tables and the report, not models/ or the tracker's db
                for path in report_files:
                    shutil.copy2(path, Path(tmp) / path.name)
                tracker.log_artifacts(tmp, "report")


_REPORT_SUFFIXES = (".html", ".csv", ".md", ".json", ".yaml")


def _ensure_predictions(
    run: RunDir, fusion: str, seed: int, splits: Mapping[str, MultimodalDataset], task: Any
) -> None:
    """Check a reused run's saved per-item predictions; predict them with its saved model where they are missing.

    Raises:
        DataError: when a saved predictions file is unreadable or inconsistent (the file is named).
    """
    model = None
    for split, data in splits.items():
        if run.predictions_file(fusion, seed, split).is_file():
            run.read_predictions(fusion, seed, split)  # raises, naming the file, when it does not fit together
            continue
        model = model if model is not None else load_model(run.model_dir(fusion, seed))
        run.write_predictions(fusion, seed, split, RunPredictions.from_predictions(predict(model, data, task=task)))
        logger.info("%s seed %d: predicted the missing %s predictions with the saved model", fusion, seed, split)


def _settings(
    preset: Preset, fusion: str | None, config: CompareConfig, level: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model and training keyword arguments: preset, then the preset's per-fusion entry, then the overrides.

    With ``config.causal`` the model keyword arguments are then made streaming-ready (:func:`causal_settings`).
    """
    model_kwargs, train_kwargs = settings_for(
        preset,
        fusion,
        model_overrides=config.model_overrides,
        train_overrides=config.train_overrides,
        epochs=config.epochs,
        device=config.device,
    )
    if config.causal:
        model_kwargs = causal_settings(fusion, model_kwargs, label_level=level)
    return model_kwargs, train_kwargs


def _drop_non_causal(config: CompareConfig, fusions: Sequence[str]) -> list[tuple[str, str]]:
    """The fusions ``--causal`` skips (brought in by ``all``), with the reason; refuses one named explicitly.

    Raises:
        ValueError: naming a fusion that the user named and that cannot be causal, with the reason.
    """
    named = {p.strip() for f in config.fusions for p in str(f).split(",")} - {"all", "unimodal"}
    skipped: list[tuple[str, str]] = []
    for fusion in fusions:
        reason = not_causal_reason(fusion)
        if reason is None:
            continue
        if fusion in named:
            raise ValueError(
                f"Fusion {fusion!r} cannot be trained with causal=True (--causal, streaming-ready): {reason}. "
                "Leave it out, or compare without --causal."
            )
        skipped.append((fusion, reason))
    if len(skipped) == len(fusions):
        raise ValueError(f"No fusion among {list(fusions)} can be trained with causal=True (--causal).")
    return skipped


def _stream_info(dataset: MultimodalDataset) -> dict[str, Any] | None:
    """:func:`~mmfuse.evaluate.protocol.stream_info`, warning when the data set has no regular grid rate.

    Without one the causal models carry none, and ``serve`` needs ``--rate``.
    """
    info = stream_info(dataset)
    if info is None:
        warnings.warn(
            f"Data set {dataset.name!r} ({dataset.path}) records no regular grid rate, so the causal models carry "
            "none: give the rate to 'mmfuse serve --rate HZ' or write a stream.json "
            "(mmfuse.stream.save_stream_config).",
            MmfuseWarning,
            stacklevel=5,
        )
    return info


def _run_parallel(
    executor: RunExecutor,
    run: RunDir,
    dataset: MultimodalDataset,
    normalizers: Any,
    jobs: Sequence[tuple[str, int]],
    model_configs: Mapping[str, ModelConfig],
    params: Mapping[str, int],
    per_fusion: Mapping[str, tuple[dict[str, Any], dict[str, Any]]],
    common: Mapping[str, Any],
    progress: Callable[[CompareProgress], None] | None,
) -> list[dict[str, Any]]:
    """Train the runs with ``executor`` (:mod:`mmfuse.evaluate.executors`).

    Each run reopens the data set and the shared normalisers; ``results.csv`` is rewritten as every run finishes.
    """
    shared = run.normalizers_dir
    normalizers.save(shared)
    specs = [
        {
            "dataset_path": str(Path(dataset.path).resolve()),
            "normalizers": str(shared.resolve()),
            "fusion": fusion,
            "seed": seed,
            "model_config": model_configs[fusion].to_dict(),
            "expected_params": params[fusion],
            "train_kwargs": per_fusion[fusion][1],
            "run_index": run_index,
            **common,
            "out_dir": str(Path(common["out_dir"]).resolve()),
        }
        for run_index, (fusion, seed) in enumerate(jobs, start=1)
    ]
    results: dict[int, dict[str, Any]] = {}

    def on_done(index: int, row: dict[str, Any]) -> None:
        results[index] = row
        run.write_results([results[i] for i in sorted(results)])
        if progress is not None:
            progress(
                CompareProgress(
                    row["fusion"],
                    row["seed"],
                    len(results),
                    len(jobs),
                    logs=row,
                    done=True,
                    main_metric=common["main_metric"],
                )
            )

    executor.run(specs, _worker_run, on_done)
    return [results[i] for i in sorted(results)]


def _worker_run(spec: dict[str, Any]) -> dict[str, Any]:
    """One run in a worker process (module level, so ``spawn`` can import it)."""
    from mmfuse.preprocess import ModalityNormalizers

    dataset = open_dataset(spec["dataset_path"])
    normalizers = ModalityNormalizers.load(spec["normalizers"])
    views = [dataset.split(s).with_transform(normalizers.transform_record) for s in ("train", "val", "test")]
    return _run_one(
        fusion=spec["fusion"],
        seed=spec["seed"],
        dataset=dataset,
        train=views[0],
        val=views[1],
        test=views[2],
        normalizers=normalizers,
        model_config=ModelConfig.from_dict(spec["model_config"]),
        expected_params=spec["expected_params"],
        train_kwargs=spec["train_kwargs"],
        metric_names=spec["metric_names"],
        main_metric=spec["main_metric"],
        out_dir=Path(spec["out_dir"]),
        max_params=spec["max_params"],
        resume=spec["resume"],
        keep_checkpoints=spec["keep_checkpoints"],
        progress=None,
        run_index=spec["run_index"],
        total_runs=spec["total_runs"],
        stream=spec["stream"],
        tracking=spec["tracking"],
    )


def _check_resumable(
    run: RunDir,
    dataset_name: str,
    modalities: Sequence[str],
    model_kwargs: Mapping[str, Any],
    train_kwargs: Mapping[str, Any],
) -> None:
    """Refuse to resume a run directory whose finished runs used other settings than the ones given now."""
    if not run.is_run():
        return
    try:
        previous = run.read_meta()  # DataError naming run.json when it is not a JSON object
        before = {
            "dataset": previous["dataset"]["name"],
            "modalities": previous.get("modalities", sorted(previous["dataset"]["modalities"])),
            "model_config": previous["model_config"],
            "train_config": previous["train_config"],
        }
    except (OSError, KeyError, TypeError) as exc:
        raise DataError(f"Cannot resume from {run.run_json}: the file is unreadable or incomplete ({exc!r}).") from exc
    now = json.loads(
        json.dumps(
            {
                "dataset": dataset_name,
                "modalities": list(modalities),
                "model_config": model_kwargs,
                "train_config": train_kwargs,
            },
            default=str,
        )
    )
    changed = [key for key in now if now[key] != before[key]]
    if changed:
        details = "; ".join(f"{key}: was {before[key]!r}, now {now[key]!r}" for key in changed)
        raise DataError(
            f"Cannot resume the run in {run.path}: its settings differ from this command's ({details}). "
            "Use another --out, or the original settings."
        )


def _modalities_in_use(config: CompareConfig, dataset: MultimodalDataset) -> list[str]:
    """The modalities the comparison uses: ``config.modalities`` checked against the data set, or all of them."""
    available = sorted(dataset.modalities)
    if config.modalities is None:
        return available
    unknown = [m for m in config.modalities if m not in dataset.modalities]
    if unknown:
        raise ValueError(
            f"The modalities {unknown} are not in data set {dataset.name!r} ({dataset.path}). "
            f"Its modalities: {', '.join(available)}."
        )
    return sorted(config.modalities)


MIN_SPLIT_ITEMS = 5
"""A split with fewer items than this gets a warning: its metrics are too noisy to compare fusions on."""
MIN_CLASS_ITEMS = 2
"""A split with fewer sample-level items of some class than this gets a warning."""


def _degenerate_inputs(
    dataset: MultimodalDataset,
    views: Mapping[str, MultimodalDataset],
    modalities: Sequence[str],
    fusions: Sequence[str],
) -> list[str]:
    """Warnings about a comparison whose numbers cannot mean much: tiny splits, missing classes, one modality."""
    found: list[str] = []
    task = dataset.task
    for name, view in views.items():
        if len(view) < MIN_SPLIT_ITEMS:
            found.append(
                f"The {name!r} split of data set {dataset.name!r} has {len(view)} item(s), fewer than "
                f"{MIN_SPLIT_ITEMS}: its metrics are too noisy to tell the fusions apart."
            )
        if task.type.value != "classification" or task.level.value != "sample" or not task.class_names:
            continue
        labels = np.asarray(view.sample_labels)
        if labels.ndim != 1:
            continue
        counts = np.bincount(labels.astype(np.int64), minlength=len(task.class_names))
        few = {
            task.class_names[i]: int(c) for i, c in enumerate(counts[: len(task.class_names)]) if c < MIN_CLASS_ITEMS
        }
        if few:
            shown = ", ".join(f"{c!r}: {n}" for c, n in few.items())
            found.append(
                f"The {name!r} split of data set {dataset.name!r} has fewer than {MIN_CLASS_ITEMS} items of "
                f"class(es) {shown}: per-class metrics on it are not meaningful."
            )
    if len(modalities) == 1:
        found.append(
            f"This comparison uses one modality ({modalities[0]!r}): every fusion sees the same single input, so "
            f"the {len(fusions)} row(s) compare fusion layers, not ways of combining modalities."
        )
    return found


def _reused_row(
    run: RunDir,
    fusion: str,
    seed: int,
    model_config: ModelConfig,
    expected_params: int,
    metric_names: Sequence[str],
    dataset_name: str,
) -> dict[str, Any]:
    """The ``result.json`` row of a finished run that ``--resume`` reuses, checked against this run and its model.

    Raises:
        DataError: naming the file, when the row or the model directory beside it does not belong to this run:
            another fusion or seed, a metric column missing or not a finite number (null is NaN as written),
            a parameter count or metric value that disagrees with the model's ``config.json`` or
            ``test_metrics.json``, or a model trained with other settings, seed or data set.
    """
    row = run.read_result(fusion, seed, metrics=metric_names)
    path = run.result_json(fusion, seed)
    model_dir = run.model_dir(fusion, seed)
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise DataError(f"Cannot reuse '{path}': the model directory has no '{weights.name}' (its weights).")
    try:
        info = read_model_info(model_dir)
    except FileNotFoundError as exc:
        raise DataError(f"Cannot reuse '{path}': {exc}") from None
    config_file = model_dir / "config.json"
    saved: dict[str, Any] = info["model_config"] if isinstance(info.get("model_config"), dict) else {}
    wanted = json.loads(json.dumps(model_config.to_dict()))
    if saved != wanted:
        keys = sorted(k for k in {*wanted, *saved} if saved.get(k) != wanted.get(k))
        raise DataError(
            f"Cannot reuse '{path}': the model in '{config_file}' was built with other settings than this run's "
            f"(differing: {', '.join(keys)}). Rerun with --overwrite, or delete that model directory."
        )
    trained: dict[str, Any] = info["train_config"] if isinstance(info.get("train_config"), dict) else {}
    if trained.get("seed") != seed or info.get("dataset") != dataset_name:
        raise DataError(
            f"Cannot reuse '{path}': '{config_file}' records seed {trained.get('seed')!r} on data set "
            f"{info.get('dataset')!r}; this run is seed {seed} on {dataset_name!r}."
        )
    if row.get("params") != expected_params:
        raise DataError(
            f"Cannot reuse '{path}': it records {row.get('params')!r} trainable parameters; the model of "
            f"{fusion!r} has {expected_params}. The file was edited or belongs to another model."
        )
    tested = model_dir / RunDir.TEST_METRICS_JSON
    try:
        metrics = json.loads(tested.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise DataError(f"Cannot reuse '{path}': '{tested}' is missing or not JSON ({exc}).") from None
    if not isinstance(metrics, dict):
        raise DataError(f"Cannot reuse '{path}': '{tested}' must hold a JSON object.")
    for name in metric_names:
        if name not in metrics:
            continue
        value = float("nan") if metrics[name] is None else metrics[name]
        if not _same_number(row[name], value):
            raise DataError(
                f"Cannot reuse '{path}': it records {name} = {row[name]!r} but '{tested}' holds {value!r}. "
                "The file was edited; delete it to retrain that run, or rerun with --overwrite."
            )
    return row


def _same_number(a: Any, b: Any) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)


@dataclass(frozen=True)
class _ProgressCallback:
    """Forwards the trainer's epoch events to the compare progress callback."""

    progress: Callable[[CompareProgress], None]
    fusion: str
    seed: int
    run_index: int
    total_runs: int
    epochs: int

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> None:
        self.progress(
            CompareProgress(
                self.fusion,
                self.seed,
                self.run_index,
                self.total_runs,
                epoch=epoch,
                epochs=self.epochs,
                logs=dict(logs),
            )
        )

    def on_train_end(self, result: Any) -> None:
        return None
