"""The main job: train and test every chosen fusion for every seed under one protocol, and write the results.

One protocol for every fusion: the same data splits, the same normalisers (fitted on the training split only),
the same model around the fusion (projection -> temporal encoder -> fusion -> head), the same training recipe
and early stopping on the validation split, and the test split touched once per run, after training. Only
the fusion module changes between rows of the comparison.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfuse import __version__
from mmfuse._io import atomic_write_json, atomic_write_text
from mmfuse.data import MultimodalDataset, is_dataset, load_dataset, open_dataset
from mmfuse.errors import DataError
from mmfuse.evaluate.metrics import summarize_runs
from mmfuse.fusion import list_fusions
from mmfuse.models import ModelConfig, build_model, load_model, parameter_report, save_model
from mmfuse.preprocess import default_normalizers
from mmfuse.train import TrainConfig, Trainer, evaluate_model, seed_everything
from mmfuse.types import TaskType

__all__ = [
    "DATASET_PRESETS",
    "CompareConfig",
    "CompareProgress",
    "CompareResult",
    "compare",
    "resolve_fusions",
]

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "basic-motions"

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
    "mosi-utterance": {
        "model": {
            "hidden": 64,
            "encoder": "gru",
            "bidirectional": True,
            "dropout": 0.3,
            "input_dropout": 0.2,
            "projection_norm": False,
            "encoder_residual": False,
        },
        "train": {
            "epochs": 15,
            "batch_size": 8,
            "lr": 1e-3,
            "weight_decay": 1e-2,
            "scheduler": "none",
            "patience": 5,
            "monitor": "accuracy",
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

    def __post_init__(self) -> None:
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


def resolve_fusions(names: Sequence[str]) -> list[str]:
    """Expand ``"all"`` and check every name against the fusion registry.

    Raises:
        ValueError: naming the unknown fusion and listing the valid ones.

    Example:
        >>> "concat" in resolve_fusions(["all"])
        True
    """
    valid = list_fusions()
    out: list[str] = []
    for name in names:
        for part in str(name).split(","):
            part = part.strip()
            if not part:
                continue
            if part == "all":
                out.extend(valid)
            elif part not in valid:
                raise ValueError(f"Unknown fusion {part!r}. Valid names: {', '.join(valid)} (or 'all').")
            else:
                out.append(part)
    # keep the first occurrence of each name, in order
    return list(dict.fromkeys(out))


def _open(dataset: str, data_dir: str | None) -> MultimodalDataset:
    path = Path(dataset)
    if path.is_dir() and ((path / "meta.json").exists() or not is_dataset(dataset)):
        return open_dataset(path)  # a folder that is not a data set: DataError naming its missing meta.json
    return load_dataset(dataset, data_dir=data_dir)


def _versions() -> dict[str, str]:
    return {
        "mmfuse": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


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

    fusions = resolve_fusions(config.fusions)
    dataset = _open(config.dataset, config.data_dir)
    out_dir = Path(config.out_dir)

    preset = DATASET_PRESETS.get(dataset.name, {"model": {}, "train": {}})
    model_kwargs = {**preset.get("model", {}), **config.model_overrides}
    train_kwargs = {**preset.get("train", {}), **config.train_overrides}
    if config.epochs is not None:
        train_kwargs["epochs"] = config.epochs
    train_kwargs.setdefault("device", config.device)

    # Check everything that can be checked before the first file is written: every model config builds within
    # the parameter budget, the training config is valid, and a resumed run directory used the same settings.
    model_configs = {f: _model_config(dataset, f, model_kwargs) for f in fusions}
    for cfg in model_configs.values():
        build_model(cfg, max_params=config.max_params)
    TrainConfig(**train_kwargs)
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

    rows: list[dict[str, Any]] = []
    total = len(fusions) * config.seeds
    run_index = 0
    for fusion in fusions:
        for seed in range(config.seeds):
            run_index += 1
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
                    train_kwargs=train_kwargs,
                    metric_names=metric_names,
                    out_dir=out_dir,
                    max_params=config.max_params,
                    resume=config.resume,
                    keep_checkpoints=config.keep_checkpoints,
                    progress=progress,
                    run_index=run_index,
                    total_runs=total,
                )
            )
            _write_csv(out_dir / "results.csv", rows)

    summary = summarize_runs(rows, by="fusion", metrics=["params", "train_seconds", *metric_names])
    higher_is_better = main_metric != "mae"
    summary.sort(key=lambda r: r[f"{main_metric}_mean"], reverse=higher_is_better)
    _write_csv(out_dir / "summary.csv", summary)
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


def _model_config(dataset: MultimodalDataset, fusion: str, model_kwargs: Mapping[str, Any]) -> ModelConfig:
    task = dataset.task
    return ModelConfig(
        modality_dims={m: s.dim for m, s in dataset.modalities.items()},
        out_dim=task.out_dim,
        task=task.type.value,
        label_level=task.level.value,
        fusion=fusion,
        **model_kwargs,
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
