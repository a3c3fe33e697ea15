"""Experiment tracking: TensorBoard and MLflow as training callbacks (``--log tensorboard|mlflow``).

A tracker is a :class:`~mmfuse.train.Callback` the :class:`~mmfuse.train.Trainer` calls after every epoch (train
and validation metrics, the learning rate), plus three calls its owner makes around the fit: :meth:`log_params`
(the resolved configuration as hyperparameters), :meth:`log_metrics` (final test metrics) and
:meth:`log_artifacts` (a model directory, a report). :class:`TrackingConfig` says which trackers a command opens,
is JSON-safe (it travels to ``compare --jobs`` workers) and opens one tracker per backend for a named run.

Both backends are optional extras (``pip install 'mmfuse[tracking]'``):

- ``tensorboard``: one event folder per run under ``<out>/tensorboard/<run>`` (``tensorboard --logdir <out>``);
  hyperparameters and test metrics go to the HParams tab, the configuration also as text. TensorBoard has no
  artifact store: :meth:`TensorBoardTracker.log_artifacts` records the files' names as text.
- ``mlflow``: one MLflow run per training run in the experiment named by :attr:`TrackingConfig.experiment`, to
  ``tracking_uri`` (default: the SQLite database ``<out>/mlflow.db``, artifacts in ``<out>/mlartifacts``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from mmfuse.train.callbacks import Callback

__all__ = [
    "TRACKING_BACKENDS",
    "TRACKING_FILES",
    "MlflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "TrackingConfig",
    "close_all",
    "closing_all",
    "flatten_params",
]

TRACKING_BACKENDS = ("tensorboard", "mlflow")
"""The names ``--log`` accepts."""

TRACKING_FILES = ("tensorboard", "mlflow.db", "mlartifacts")
"""What the trackers write into an output folder by default; never uploaded as a run's artifacts."""

_SKIPPED_EPOCH_KEYS = frozenset({"epoch", "best_epoch", "improved", "monitor"})
_MLFLOW_PARAM_LIMIT = 6000  # characters MLflow keeps of a parameter value


def _missing(package: str, backend: str) -> ImportError:
    return ImportError(
        f"Tracking with --log {backend} needs the '{package}' package, which is not installed. "
        "Install the tracking extra: pip install 'mmfuse[tracking]'."
    )


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested settings as flat ``a.b`` keys with scalar values (lists and ``None`` as JSON text).

    Example:
        >>> flatten_params({"train": {"lr": 0.01, "freeze": ["a"]}, "fusion": "concat", "hidden": None})
        {'train.lr': 0.01, 'train.freeze': '["a"]', 'fusion': 'concat', 'hidden': 'null'}
    """
    flat: dict[str, str | int | float | bool] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


@contextlib.contextmanager
def _without_tracking_files(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """``directory`` itself, or a temporary copy without :data:`TRACKING_FILES` where it holds any of them."""
    root = Path(directory)
    if not any((root / name).exists() for name in TRACKING_FILES):
        yield root
        return
    with tempfile.TemporaryDirectory() as tmp:
        for item in root.iterdir():
            if item.name in TRACKING_FILES:
                continue
            if item.is_dir():
                shutil.copytree(item, Path(tmp) / item.name)
            else:
                shutil.copy2(item, Path(tmp) / item.name)
        yield Path(tmp)


def _scalars(logs: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of an epoch's logs, without the bookkeeping keys."""
    return {
        key: float(value)
        for key, value in logs.items()
        if key not in _SKIPPED_EPOCH_KEYS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


class Tracker(Callback):
    """A training callback that records a run in an experiment tracker.

    The trainer calls :meth:`on_epoch_end`; the owner of the run calls the other methods and :meth:`close`.
    """

    backend: ClassVar[str] = ""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the resolved configuration (nested mappings are flattened to ``a.b`` keys)."""
        raise NotImplementedError

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "test_") -> None:
        """Record final metrics (non-numbers are skipped) under ``prefix + name``."""
        raise NotImplementedError

    def log_artifacts(self, directory: str | os.PathLike[str], name: str | None = None) -> None:
        """Record the files of ``directory`` (recursively) as artifacts under ``name``."""
        raise NotImplementedError

    def close(self, failed: bool = False) -> None:
        """Finish the run (``failed`` marks it so where the backend can)."""
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """Writes a run's scalars, hyperparameters and test metrics as TensorBoard events in ``log_dir``.

    Args:
        log_dir: The run's event folder (created).
    """

    backend = "tensorboard"

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch's writer imports the tensorboard package
            raise _missing("tensorboard", self.backend) from err
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))
        self._params: dict[str, str | int | float | bool] = {}
        self._final: dict[str, float] = {}

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> None:
        """One scalar per epoch for every finite number of the epoch's logs (losses, validation metrics, lr)."""
        for key, value in _scalars(logs).items():
            self._writer.add_scalar(key, value, global_step=epoch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """The configuration as text (``config``) now, and as HParams with the final metrics at :meth:`close`."""
        self._params.update(flatten_params(params))
        self._writer.add_text("config", "```\n" + json.dumps(dict(params), indent=2, default=str) + "\n```")

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "test_") -> None:
        """Final metrics as scalars at step 0 (and in the HParams tab at :meth:`close`)."""
        for key, value in _scalars(metrics).items():
            self._writer.add_scalar(f"{prefix}{key}", value, global_step=0)
            self._final[f"{prefix}{key}"] = value

    def log_artifacts(self, directory: str | os.PathLike[str], name: str | None = None) -> None:
        """TensorBoard stores no files: the artifacts' paths are recorded as text (``artifacts/<name>``)."""
        root = Path(directory)
        files = sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] not in TRACKING_FILES
        )
        self._writer.add_text(f"artifacts/{name or root.name}", f"{root.resolve()}: " + ", ".join(files))

    def close(self, failed: bool = False) -> None:
        """Write the HParams summary (with a ``failed`` flag) and close the event file."""
        if self._params:
            self._writer.add_hparams(
                {k: v for k, v in self._params.items()}, {**self._final, "failed": float(failed)}, run_name="."
            )
        self._writer.close()


class MlflowTracker(Tracker):
    """Records a run in MLflow through :class:`mlflow.tracking.MlflowClient` (no global active run).

    Args:
        tracking_uri: Where MLflow stores runs (``sqlite:///path.db``, ``http://host:5000``, ...).
        experiment_id: The experiment the run belongs to (:meth:`TrackingConfig.prepare` creates it).
        run_name: The run's name in the MLflow UI.
    """

    backend = "mlflow"

    def __init__(self, tracking_uri: str, experiment_id: str, run_name: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise _missing("mlflow", self.backend) from err
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id: str = self._client.create_run(experiment_id, run_name=run_name).info.run_id

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> None:
        """Every finite number of the epoch's logs as a metric at step ``epoch`` (one batch per epoch)."""
        from mlflow.entities import Metric

        stamp = _now_ms()
        batch = [Metric(key, value, stamp, epoch) for key, value in _scalars(logs).items()]
        if batch:
            self._client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """The flattened configuration as MLflow params (values cut to MLflow's 6000 characters)."""
        from mlflow.entities import Param

        flat = flatten_params(params)
        batch = [Param(k, str(v)[:_MLFLOW_PARAM_LIMIT]) for k, v in flat.items()]
        for start in range(0, len(batch), 100):  # MLflow takes at most 100 params per batch
            self._client.log_batch(self.run_id, params=batch[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "test_") -> None:
        """Final metrics as MLflow metrics ``prefix + name``."""
        from mlflow.entities import Metric

        stamp = _now_ms()
        batch = [Metric(f"{prefix}{k}", v, stamp, 0) for k, v in _scalars(metrics).items()]
        if batch:
            self._client.log_batch(self.run_id, metrics=batch)

    def log_artifacts(self, directory: str | os.PathLike[str], name: str | None = None) -> None:
        """Upload the files of ``directory`` (but :data:`TRACKING_FILES`) to the run's artifact store under ``name``."""
        with _without_tracking_files(directory) as root:
            self._client.log_artifacts(self.run_id, str(root), artifact_path=name)

    def close(self, failed: bool = False) -> None:
        """Mark the run ``FINISHED`` (or ``FAILED``)."""
        self._client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


@dataclass(frozen=True)
class TrackingConfig:
    """Which trackers a command opens, and where they write.

    Attributes:
        backends: Names from :data:`TRACKING_BACKENDS` (empty: no tracking).
        out_dir: The command's output folder: TensorBoard events go to ``out_dir/tensorboard/<run>``, and the
            default MLflow store is ``out_dir/mlflow.db`` with artifacts in ``out_dir/mlartifacts``.
        tracking_uri: The MLflow tracking URI (default: the SQLite database above).
        experiment: The MLflow experiment's name (default: the name of ``out_dir``).
        experiment_id: Filled in by :meth:`prepare`.

    Example:
        >>> TrackingConfig(["tensorboard"], "runs/demo").enabled
        True
        >>> TrackingConfig(["wandb"], "runs/demo")
        Traceback (most recent call last):
        ...
        ValueError: The 'backends' parameter of TrackingConfig (--log) must name only ['tensorboard', 'mlflow']. \
Got ['wandb'] instead.
    """

    backends: Sequence[str] = ()
    out_dir: str = "."
    tracking_uri: str | None = None
    experiment: str | None = None
    experiment_id: str | None = field(default=None)

    def __post_init__(self) -> None:
        given = [self.backends] if isinstance(self.backends, str) else list(self.backends)
        backends = tuple(dict.fromkeys(str(b).strip().lower() for b in given))
        unknown = [b for b in backends if b not in TRACKING_BACKENDS]
        if unknown:
            raise ValueError(
                f"The 'backends' parameter of TrackingConfig (--log) must name only {list(TRACKING_BACKENDS)}. "
                f"Got {unknown} instead."
            )
        object.__setattr__(self, "backends", backends)
        object.__setattr__(self, "out_dir", str(self.out_dir))
        if self.tracking_uri is not None and "mlflow" not in backends:
            raise ValueError(
                "The 'tracking_uri' parameter of TrackingConfig (--tracking-uri) is MLflow's: it needs --log mlflow. "
                f"Got --log {list(backends) or 'nothing'}."
            )

    @property
    def enabled(self) -> bool:
        """Whether any backend is on."""
        return bool(self.backends)

    @property
    def resolved_uri(self) -> str:
        """The MLflow tracking URI: the one given, else ``sqlite:///<out_dir>/mlflow.db`` (absolute)."""
        if self.tracking_uri is not None:
            return self.tracking_uri
        return f"sqlite:///{(Path(self.out_dir) / 'mlflow.db').resolve()}"

    def prepare(self) -> TrackingConfig:
        """Check the backends are installed and create the MLflow experiment once, in the calling process.

        A missing package fails here, before any training. Returns the config with ``experiment_id`` set.
        """
        if "tensorboard" in self.backends:
            try:
                import tensorboard  # noqa: F401
            except ImportError as err:
                raise _missing("tensorboard", "tensorboard") from err
        if "mlflow" not in self.backends or self.experiment_id is not None:
            return self
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise _missing("mlflow", "mlflow") from err
        name = self.experiment or Path(self.out_dir).resolve().name
        client = MlflowClient(tracking_uri=self.resolved_uri)
        found = client.get_experiment_by_name(name)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = None
            if self.tracking_uri is None:  # the default store keeps its artifacts next to it, not in the cwd
                Path(self.out_dir).mkdir(parents=True, exist_ok=True)
                location = (Path(self.out_dir) / "mlartifacts").resolve().as_uri()
            experiment_id = client.create_experiment(name, artifact_location=location)
        return replace(self, experiment=name, experiment_id=experiment_id)

    def open(self, run_name: str) -> list[Tracker]:
        """One tracker per backend for the run ``run_name`` (call :meth:`prepare` first for MLflow)."""
        trackers: list[Tracker] = []
        for backend in self.backends:
            if backend == "tensorboard":
                trackers.append(TensorBoardTracker(Path(self.out_dir) / "tensorboard" / run_name))
            else:
                prepared = self if self.experiment_id is not None else self.prepare()
                trackers.append(MlflowTracker(prepared.resolved_uri, str(prepared.experiment_id), run_name))
        return trackers

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for worker processes); :meth:`from_dict` reads it back."""
        return {**asdict(self), "backends": list(self.backends)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrackingConfig:
        """The config :meth:`to_dict` wrote."""
        return cls(**dict(data))


def close_all(trackers: Iterable[Tracker], failed: bool = False) -> None:
    """Close every tracker (the first error is raised after all were tried)."""
    error: BaseException | None = None
    for tracker in trackers:
        try:
            tracker.close(failed=failed)
        except Exception as exc:  # one backend's failure does not leave the other's run open
            error = error or exc
    if error is not None:
        raise error


@contextlib.contextmanager
def closing_all(trackers: list[Tracker]) -> Iterator[list[Tracker]]:
    """Close ``trackers`` when the block ends: as failed when it raised (the error goes on), else as finished.

    Example:
        >>> with closing_all([]) as trackers:
        ...     trackers
        []
    """
    try:
        yield trackers
    except BaseException:
        close_all(trackers, failed=True)
        raise
    close_all(trackers)
