"""The main job: train and test every chosen fusion for every seed under one protocol, and write the results.

One protocol for every fusion: the same data splits, the same normalisers (fitted on the training split only),
the same model around the fusion (projection -> temporal encoder -> fusion -> head), the same training recipe
and early stopping on the validation split, and the test split touched once per run, after training. Only
the fusion module changes between rows of the comparison.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfuse import __version__
from mmfuse._io import atomic_write_csv, atomic_write_json
from mmfuse.data import MultimodalDataset, open_dataset, open_or_load_dataset
from mmfuse.errors import DataError
from mmfuse.evaluate.metrics import summarize_runs
from mmfuse.fusion import list_fusions
from mmfuse.models import ModelConfig, build_model, load_model, parameter_report, save_model
from mmfuse.preprocess import default_normalizers
from mmfuse.train import TrainConfig, Trainer, evaluate_model, seed_everything
from mmfuse.types import TaskType

__all__ = [
    "DATASET_PRESETS",
    "UNIMODAL_PREFIX",
    "CompareConfig",
    "CompareProgress",
    "CompareResult",
    "compare",
    "resolve_fusions",
]

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "basic-motions"

UNIMODAL_PREFIX = "unimodal-"
"""Run names ``unimodal-<modality>`` are the unimodal baselines: the same model on that modality alone."""

#: Hyperparameters per built-in data set (how each was chosen: README, "Data sets" and "Results on MOSI-utterance").
#: Keys ``model`` and ``train`` hold keyword arguments of :class:`ModelConfig` and :class:`TrainConfig`.
DATASET_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "basic-motions": {
        "model": {"hidden": 32, "encoder": "conv", "encoder_layers": 2, "dropout": 0.2, "pooling": "mean"},
        "train": {
            "epochs": 60,
            "batch_size": 8,
            "lr": 3e-3,
            "weight_decay": 1e-2,
            "patience": 15,
            # 8 validation recordings: accuracy saturates at 1.0, the loss still ranks epochs
            "monitor": "loss",
        },
    },
    # Chosen on the validation split only (validation NLL, the test split never read) by
    #   mmfuse tune --dataset mosi-utterance --fusion concat --trials 16 --seeds 2
    # (trial 11 of 16; trial 0 was the previous preset) and shared by every fusion: one recipe for all rows.
    "mosi-utterance": {
        "model": {
            "hidden": 128,
            "encoder": "gru",
            "bidirectional": True,
            "dropout": 0.3,
            "input_dropout": 0.2,
            "modality_dropout": 0.3,
            "projection_norm": False,
            "encoder_residual": True,
        },
        "train": {
            "epochs": 15,
            "batch_size": 16,
            "lr": 3e-3,
            "weight_decay": 1e-2,
            "label_smoothing": 0.0,
            "scheduler": "none",
            "patience": 5,
            "monitor": "loss",
        },
    },
}

_CLASSIFICATION_METRICS = ("accuracy", "f1_weighted", "f1_macro")
_REGRESSION_METRICS = ("mae", "rmse", "pearson")


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
        resume: Reuse the runs of ``out_dir`` that finished (their ``result.json``) and continue an interrupted run
            from its last checkpoint, instead of starting every run afresh.
        keep_checkpoints: Keep each run's ``last/`` checkpoint (optimizer, scheduler and RNG state, about three
            times the model's size) after the run has finished; by default it is removed once the run is done.
        num_threads: Torch intra-op threads; small sequence models run fastest with 1 on a busy machine.
        jobs: Runs trained at the same time, each in its own process (1: in this process). On a machine with
            ``n`` cores, ``jobs = n`` with ``num_threads = 1`` is usually fastest for small models. Results do not
            depend on ``jobs``: every run is seeded on its own.

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
    keep_checkpoints: bool = False
    num_threads: int | None = 1
    jobs: int = 1

    def __post_init__(self) -> None:
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
        if not self.fusions:
            raise ValueError("The 'fusions' parameter of CompareConfig must name at least one fusion (or 'all').")


@dataclass
class CompareProgress:
    """A progress event passed to the ``progress`` callback of :func:`compare`."""

    fusion: str
    seed: int
    run_index: int
    total_runs: int
    epoch: int | None = None
    epochs: int | None = None
    logs: dict[str, Any] = field(default_factory=dict)
    done: bool = False


@dataclass
class CompareResult:
    """What :func:`compare` returns.

    Attributes:
        out_dir: The run directory.
        rows: One dict per fusion x seed (the rows of ``results.csv``).
        summary: One dict per fusion (the rows of ``summary.csv``), best first.
        main_metric: The metric the summary is sorted by.
    """

    out_dir: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    main_metric: str

    @property
    def best(self) -> dict[str, Any]:
        """The summary row of the best fusion."""
        return self.summary[0]


def resolve_fusions(names: Sequence[str], modalities: Sequence[str] | None = None) -> list[str]:
    """Expand ``"all"`` / ``"unimodal"`` and check every name against the fusion registry.

    ``"all"`` means every registered fusion followed by the unimodal baselines ``unimodal-<m>`` (one per
    modality, when ``modalities`` is given); ``"unimodal"`` means the unimodal baselines alone. A baseline name
    is checked against ``modalities`` when they are given, else only its form is checked.

    Raises:
        ValueError: naming the unknown fusion or modality and listing the valid ones.

    Example:
        >>> names = resolve_fusions(["all"], modalities=["audio", "text"])
        >>> "concat" in names, names[-2:]
        (True, ['unimodal-audio', 'unimodal-text'])
        >>> resolve_fusions(["gated,unimodal-text"], modalities=["audio", "text"])
        ['gated', 'unimodal-text']
    """
    valid = list_fusions()
    baselines = [f"{UNIMODAL_PREFIX}{m}" for m in sorted(modalities)] if modalities is not None else []
    out: list[str] = []
    for name in names:
        for part in str(name).split(","):
            part = part.strip()
            if not part:
                continue
            if part == "all":
                out.extend([*valid, *baselines])
            elif part == "unimodal":
                out.extend(baselines)
            elif part.startswith(UNIMODAL_PREFIX):
                modality = part.removeprefix(UNIMODAL_PREFIX)
                if not modality or (modalities is not None and modality not in modalities):
                    choices = ", ".join(baselines) if baselines else "unimodal-<modality>"
                    raise ValueError(f"Unknown unimodal baseline {part!r}: the data set's baselines are {choices}.")
                out.append(part)
            elif part not in valid:
                raise ValueError(
                    f"Unknown fusion {part!r}. Valid names: {', '.join(valid)} (or 'all', 'unimodal', "
                    "'unimodal-<modality>')."
                )
            else:
                out.append(part)
    # keep the first occurrence of each name, in order
    return list(dict.fromkeys(out))


def _versions() -> dict[str, str]:
    return {
        "mmfuse": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


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
    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        return _compare(config, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _compare(config: CompareConfig, progress: Callable[[CompareProgress], None] | None) -> CompareResult:
    from mmfuse.evaluate.report import write_report, write_summary_markdown

    dataset = open_or_load_dataset(config.dataset, data_dir=config.data_dir)
    fusions = resolve_fusions(config.fusions, modalities=list(dataset.modalities))
    out_dir = Path(config.out_dir)

    preset = DATASET_PRESETS.get(dataset.name, {"model": {}, "train": {}})
    model_kwargs, train_kwargs = _settings(preset, None, config)
    per_fusion = {f: _settings(preset, f, config) for f in fusions}

    # Check everything that can be checked before the first file is written: every model config builds within
    # the parameter budget, the training config is valid, and a resumed run directory used the same settings.
    model_configs = {f: _model_config(dataset, f, per_fusion[f][0]) for f in fusions}
    for cfg in model_configs.values():
        build_model(cfg, max_params=config.max_params)
    for _, fusion_train in per_fusion.values():
        TrainConfig(**fusion_train)
    if config.resume:
        _check_resumable(out_dir, dataset.name, model_kwargs, train_kwargs)
    # The three splits exist, and every stored file of the data set is read (and its checksum checked) by
    # fitting the normalisers and reading one sample, so a missing split or a corrupt file is refused here.
    missing = [s for s in ("train", "val", "test") if s not in dataset.split_names]
    if missing:
        raise DataError(
            f"Data set {dataset.name!r} ({dataset.path}) lacks the split(s) {missing}; compare needs 'train', 'val' "
            f"and 'test'. Its splits: {dataset.split_names}."
        )
    train_view, val_view, test_view = (dataset.split(s) for s in ("train", "val", "test"))
    # Normalisers are fitted on the training split only, once, and shared by every run.
    normalizers = default_normalizers(dataset.modalities).fit(train_view)
    _ = dataset[0]
    (out_dir / "models").mkdir(parents=True, exist_ok=True)

    task = dataset.task
    classification = task.type == TaskType.CLASSIFICATION
    metric_names = _CLASSIFICATION_METRICS if classification else _REGRESSION_METRICS
    main_metric = metric_names[0]

    train_t, val_t, test_t = (v.with_transform(normalizers.transform_record) for v in (train_view, val_view, test_view))

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run_meta: dict[str, Any] = {
        "dataset": {
            "name": dataset.name,
            "path": str(Path(dataset.path).resolve()),
            "description": getattr(dataset, "description", ""),
            "modalities": {m: {"dim": s.dim, "kind": s.kind} for m, s in dataset.modalities.items()},
            "task": {"type": task.type.value, "level": task.level.value, "class_names": list(task.class_names)},
            "sizes": {"train": len(train_view), "val": len(val_view), "test": len(test_view)},
        },
        "fusions": fusions,
        "seeds": list(range(config.seeds)),
        "train_config": train_kwargs,
        "model_config": model_kwargs,
        "versions": _versions(),
        "started": started,
        "finished": None,
        "command": config.command,
    }
    atomic_write_json(out_dir / "run.json", run_meta)

    if any(per_fusion[f] != (model_kwargs, train_kwargs) for f in fusions):
        run_meta["per_fusion"] = {f: {"model_config": mk, "train_config": tk} for f, (mk, tk) in per_fusion.items()}
        atomic_write_json(out_dir / "run.json", run_meta)

    jobs = [(fusion, seed) for fusion in fusions for seed in range(config.seeds)]
    total = len(jobs)
    common: dict[str, Any] = {
        "metric_names": metric_names,
        "out_dir": out_dir,
        "max_params": config.max_params,
        "resume": config.resume,
        "keep_checkpoints": config.keep_checkpoints,
        "total_runs": total,
    }
    rows: list[dict[str, Any]] = []
    if config.jobs == 1 or total == 1:
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
                    train_kwargs=per_fusion[fusion][1],
                    progress=progress,
                    run_index=run_index,
                    **common,
                )
            )
            atomic_write_csv(out_dir / "results.csv", rows)
    else:
        rows = _run_parallel(config, dataset, normalizers, jobs, model_configs, per_fusion, common, progress)

    summary = summarize_runs(rows, by="fusion", metrics=["params", "train_seconds", *metric_names])
    higher_is_better = main_metric != "mae"
    summary.sort(key=lambda r: r[f"{main_metric}_mean"], reverse=higher_is_better)
    atomic_write_csv(out_dir / "summary.csv", summary)
    run_meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(out_dir / "run.json", run_meta)
    write_summary_markdown(out_dir)
    write_report(out_dir)
    return CompareResult(out_dir=out_dir, rows=rows, summary=summary, main_metric=main_metric)


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
    train_kwargs: dict[str, Any],
    metric_names: Sequence[str],
    out_dir: Path,
    max_params: int | None,
    resume: bool,
    keep_checkpoints: bool,
    progress: Callable[[CompareProgress], None] | None,
    run_index: int,
    total_runs: int,
) -> dict[str, Any]:
    task = dataset.task
    run_dir = out_dir / "models" / f"{fusion}-seed{seed}"
    done_file = run_dir / "result.json"
    if resume and done_file.exists():
        finished = _read_result(done_file)
        logger.info("%s seed %d: reusing the finished run in %s", fusion, seed, run_dir)
        if progress is not None:
            progress(CompareProgress(fusion, seed, run_index, total_runs, logs=finished, done=True))
        return finished
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    model = build_model(model_config, max_params=max_params)
    train_config = TrainConfig(seed=seed, **train_kwargs)

    callbacks = []
    if progress is not None:
        callbacks.append(_ProgressCallback(progress, fusion, seed, run_index, total_runs, train_config.epochs))
    start = time.perf_counter()
    resume_run = resume and (run_dir / "last").is_dir()
    result = Trainer(train_config, callbacks=callbacks).fit(model, train, val, out_dir=run_dir, resume=resume_run)
    train_seconds = time.perf_counter() - start

    best = load_model(run_dir)
    metrics = evaluate_model(best, test, task)
    atomic_write_json(run_dir / "test_metrics.json", metrics)
    normalizers.save(run_dir)
    save_model(best, run_dir, extra={"train_config": train_config.to_dict(), "dataset": dataset.name})

    row: dict[str, Any] = {
        "fusion": fusion,
        "seed": seed,
        "params": parameter_report(best).trainable,
        "train_seconds": round(train_seconds, 2),
        "best_epoch": result.best_epoch,
    }
    for name in metric_names:
        row[name] = float(metrics[name]) if metrics.get(name) is not None else float("nan")
    row[f"val_{result.monitor}"] = result.best_metric
    atomic_write_json(done_file, row)
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "last", ignore_errors=True)
    if progress is not None:
        progress(CompareProgress(fusion, seed, run_index, total_runs, logs=row, done=True))
    logger.info("%s seed %d: %s", fusion, seed, json.dumps({k: row[k] for k in metric_names}))
    return row


def _preset_settings(preset: Mapping[str, Any], fusion: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A preset's model and training keyword arguments, with its per-fusion entry for ``fusion`` applied."""
    specific = preset.get("fusions", {}).get(fusion, {}) if fusion is not None else {}
    return (
        {**preset.get("model", {}), **specific.get("model", {})},
        {**preset.get("train", {}), **specific.get("train", {})},
    )


def _settings(
    preset: Mapping[str, Any], fusion: str | None, config: CompareConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model and training keyword arguments: preset, then the preset's per-fusion entry, then the overrides."""
    base_model, base_train = _preset_settings(preset, fusion)
    model_kwargs = {**base_model, **config.model_overrides}
    train_kwargs = {**base_train, **config.train_overrides}
    if config.epochs is not None:
        train_kwargs["epochs"] = config.epochs
    train_kwargs.setdefault("device", config.device)
    return model_kwargs, train_kwargs


def _run_parallel(
    config: CompareConfig,
    dataset: MultimodalDataset,
    normalizers: Any,
    jobs: Sequence[tuple[str, int]],
    model_configs: Mapping[str, ModelConfig],
    per_fusion: Mapping[str, tuple[dict[str, Any], dict[str, Any]]],
    common: Mapping[str, Any],
    progress: Callable[[CompareProgress], None] | None,
) -> list[dict[str, Any]]:
    """Train the runs in ``config.jobs`` worker processes; each reopens the data set and the shared normalisers."""
    out_dir = Path(config.out_dir)
    shared = out_dir / "normalizers"
    normalizers.save(shared)
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe with torch's thread pools
    results: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(
        max_workers=config.jobs, mp_context=ctx, initializer=_worker_init, initargs=(config.num_threads,)
    ) as pool:
        futures = {}
        for run_index, (fusion, seed) in enumerate(jobs, start=1):
            spec = {
                "dataset_path": str(dataset.path),
                "normalizers": str(shared),
                "fusion": fusion,
                "seed": seed,
                "model_config": model_configs[fusion].to_dict(),
                "train_kwargs": per_fusion[fusion][1],
                "run_index": run_index,
                **common,
            }
            futures[pool.submit(_worker_run, spec)] = run_index
        done_count = 0
        for future in as_completed(futures):
            row = future.result()  # a failed run re-raises its error here
            results[futures[future]] = row
            done_count += 1
            ordered = [results[i] for i in sorted(results)]
            atomic_write_csv(out_dir / "results.csv", ordered)
            if progress is not None:
                progress(CompareProgress(row["fusion"], row["seed"], done_count, len(jobs), logs=row, done=True))
    return [results[i] for i in sorted(results)]


def _worker_init(num_threads: int | None) -> None:
    if num_threads is not None:
        torch.set_num_threads(num_threads)


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
        train_kwargs=spec["train_kwargs"],
        metric_names=spec["metric_names"],
        out_dir=Path(spec["out_dir"]),
        max_params=spec["max_params"],
        resume=spec["resume"],
        keep_checkpoints=spec["keep_checkpoints"],
        progress=None,
        run_index=spec["run_index"],
        total_runs=spec["total_runs"],
    )


def _model_config(dataset: MultimodalDataset, fusion: str, model_kwargs: Mapping[str, Any]) -> ModelConfig:
    """The model of one row: every modality and ``fusion``, or one modality alone for ``unimodal-<m>``."""
    task = dataset.task
    dims = {m: s.dim for m, s in dataset.modalities.items()}
    kwargs = dict(model_kwargs)
    if fusion.startswith(UNIMODAL_PREFIX):
        modality = fusion.removeprefix(UNIMODAL_PREFIX)
        dims = {modality: dims[modality]}
        fusion = "concat"  # one modality: the fusion is a projection, the rest of the model is unchanged
        kwargs.pop("fusion_kwargs", None)
        kwargs["modality_dropout"] = 0.0
    vocab = getattr(dataset, "context_vocab", {}) or {}
    if vocab and "context_sizes" not in kwargs:
        kwargs["context_sizes"] = {k: len(v) for k, v in vocab.items()}
    return ModelConfig(
        modality_dims=dims,
        out_dim=task.out_dim,
        task=task.type.value,
        label_level=task.level.value,
        fusion=fusion,
        **kwargs,
    )


def _check_resumable(
    out_dir: Path, dataset_name: str, model_kwargs: Mapping[str, Any], train_kwargs: Mapping[str, Any]
) -> None:
    """Refuse to resume a run directory whose finished runs used other settings than the ones given now."""
    path = out_dir / "run.json"
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
        before = {
            "dataset": previous["dataset"]["name"],
            "model_config": previous["model_config"],
            "train_config": previous["train_config"],
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"Cannot resume from {path}: the file is unreadable or incomplete ({exc!r}).") from exc
    now = json.loads(
        json.dumps({"dataset": dataset_name, "model_config": model_kwargs, "train_config": train_kwargs}, default=str)
    )
    changed = [key for key in now if now[key] != before[key]]
    if changed:
        details = "; ".join(f"{key}: was {before[key]!r}, now {now[key]!r}" for key in changed)
        raise DataError(
            f"Cannot resume the run in {out_dir}: its settings differ from this command's ({details}). "
            "Use another --out, or the original settings."
        )


def _read_result(path: Path) -> dict[str, Any]:
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot resume from {path}: the file is unreadable or not JSON ({exc}).") from exc
    if not isinstance(row, dict) or "fusion" not in row or "seed" not in row:
        raise DataError(f"Cannot resume from {path}: expected a JSON object with 'fusion' and 'seed'. Got {row!r}.")
    return {k: (float("nan") if v is None else v) for k, v in row.items()}


class _ProgressCallback:
    """Forwards the trainer's epoch events to the compare progress callback."""

    def __init__(
        self,
        progress: Callable[[CompareProgress], None],
        fusion: str,
        seed: int,
        run_index: int,
        total_runs: int,
        epochs: int,
    ) -> None:
        self.progress = progress
        self.fusion = fusion
        self.seed = seed
        self.run_index = run_index
        self.total_runs = total_runs
        self.epochs = epochs

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
