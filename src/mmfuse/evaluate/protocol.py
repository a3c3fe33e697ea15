"""The evaluation protocol every experiment command shares: presets, the model of a row, normalisers, versions.

``compare``, ``tune``, ``lr-find`` and ``analyze`` build their models and data the same way through these public
functions, so a row of a comparison, a tuning trial and a learning-rate test of the same fusion on the same data
set are the same model on the same normalised data:

* :func:`preset_for` picks the data set's preset (registered beside the data set with
  ``register_dataset(..., preset=...)``), keyed by the data set's identity, not its name alone;
  :func:`read_preset` reads one from a YAML/JSON file (``mmfuse compare --preset``, a tune's ``best.json``) and
  :func:`resolve_preset` picks the given one or the data set's;
* :func:`settings_for` layers a preset, its per-fusion entry and the caller's overrides;
* :func:`model_config_for` is the model of one row (every modality and a fusion, a modality subset, or a
  unimodal baseline ``unimodal-<m>``);
* :func:`fit_normalizers` fits the default normalisers on a training view only;
* :func:`causal_settings` makes a row's model streaming-ready (``compare --causal``), :func:`not_causal_reason`
  says why a fusion cannot be, :func:`grid_rate` is the step rate of a data set's timeline and :func:`stream_info`
  what a causal model's ``config.json`` records for streaming;
* :func:`split_metrics` scores a model's predictions on a split, and :func:`write_test_metrics` writes a model
  directory's ``test_metrics.json`` (``compare`` and ``train`` both write it through it: one file, one content);
* :func:`versions` and :func:`torch_threads` make runs reproducible and their thread use explicit.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from mmfuse._io import atomic_write_json, read_settings_file
from mmfuse._version import __version__
from mmfuse.data import MultimodalDataset, TaskSpec, dataset_preset, registered_name_of
from mmfuse.errors import MmfuseWarning
from mmfuse.evaluate.rundir import RunDir
from mmfuse.fusion import fusion_kwargs, get_fusion_class, list_fusions
from mmfuse.metrics import compute_metric, default_metrics
from mmfuse.models import ModelConfig
from mmfuse.preprocess import ModalityNormalizers, default_normalizers
from mmfuse.train import Predictions, metrics_from_predictions

__all__ = [
    "UNIMODAL_PREFIX",
    "Preset",
    "causal_settings",
    "fit_normalizers",
    "grid_rate",
    "model_config_for",
    "not_causal_reason",
    "preset_for",
    "read_preset",
    "resolve_fusions",
    "resolve_preset",
    "settings_for",
    "split_metrics",
    "stream_info",
    "torch_threads",
    "versions",
    "write_test_metrics",
]

UNIMODAL_PREFIX = "unimodal-"
"""Run names ``unimodal-<modality>`` are the unimodal baselines: the same model on that modality alone."""


@dataclass(frozen=True)
class Preset:
    """Hyperparameters of a data set: model and training keyword arguments, and per-fusion entries over them.

    Attributes:
        name: What the run records as its preset: the data set's registered name, ``"defaults"`` (no preset:
            the library defaults) or the file it was read from.
        model: :class:`~mmfuse.models.ModelConfig` keyword arguments.
        train: :class:`~mmfuse.train.TrainConfig` keyword arguments.
        fusions: Fusion name -> ``{"model": {...}, "train": {...}}`` applied over ``model`` / ``train``.
        source: Where the preset came from (``mmfuse tune`` writes the data set, criterion and chosen trials);
            recorded, never applied.

    The file form (:meth:`from_dict`, :func:`read_preset`) holds the keys ``model``, ``train``, ``fusions`` and,
    optionally, ``name`` and ``source``.

    Example:
        >>> p = Preset("mine", model={"hidden": 16}, fusions={"gated": {"model": {"hidden": 8}}})
        >>> p.settings("gated"), p.settings("concat")
        (({'hidden': 8}, {}), ({'hidden': 16}, {}))
    """

    name: str
    model: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    fusions: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = ("name", "model", "train", "fusions", "source")
    """The keys of the file form."""

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> Preset:
        """Build a preset from ``{"model": ..., "train": ..., "fusions": ...}``; unknown keys are refused.

        A ``name`` key in ``data`` names the preset instead of ``name``. The ``model`` and ``train`` settings (and
        each fusion's) must be fields of :class:`~mmfuse.models.ModelConfig` and :class:`~mmfuse.train.TrainConfig`.

        Raises:
            ValueError: naming the preset, the unknown key and the valid ones.

        Example:
            >>> Preset.from_dict("p", {"train": {"lr": 0.01}}).settings("concat")
            ({}, {'lr': 0.01})
            >>> Preset.from_dict("p", {"train": {"learning_rate": 0.01}})
            Traceback (most recent call last):
            ...
            ValueError: The preset 'p': 'learning_rate' in 'train' is not a TrainConfig field. Valid: ...
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"The preset {name!r} must be a mapping. Got {type(data).__name__}.")
        unknown = sorted(set(data) - set(cls.KEYS))
        if unknown:
            raise ValueError(
                f"The preset {name!r} has unknown keys {unknown}; valid keys: {', '.join(sorted(cls.KEYS))}."
            )
        name = str(data.get("name") or name)
        fusions = data.get("fusions", {}) or {}
        if not isinstance(fusions, Mapping):
            raise ValueError(f"The preset {name!r}: 'fusions' must map fusion names to settings.")
        _check_sections(name, "", data)
        for fusion, entry in fusions.items():
            if not isinstance(entry, Mapping) or set(entry) - {"model", "train"}:
                raise ValueError(
                    f"The preset {name!r}: the entry of fusion {fusion!r} must hold only 'model' and 'train'."
                )
            _check_sections(name, f"fusions.{fusion}.", entry)
        source = data.get("source", {}) or {}
        if not isinstance(source, Mapping):
            raise ValueError(f"The preset {name!r}: 'source' must be a mapping. Got {type(source).__name__}.")
        return cls(
            name=name,
            model=copy.deepcopy(dict(data.get("model", {}) or {})),
            train=copy.deepcopy(dict(data.get("train", {}) or {})),
            fusions=copy.deepcopy({str(k): dict(v) for k, v in fusions.items()}),
            source=copy.deepcopy(dict(source)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"model", "train"[, "fusions"][, "source"]}`` as plain, JSON-safe dicts (the file form)."""
        out: dict[str, Any] = {"model": copy.deepcopy(dict(self.model)), "train": copy.deepcopy(dict(self.train))}
        if self.fusions:
            out["fusions"] = copy.deepcopy({k: dict(v) for k, v in self.fusions.items()})
        if self.source:
            out["source"] = copy.deepcopy(dict(self.source))
        return out

    def settings(self, fusion: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The model and training keyword arguments for ``fusion``: the preset, then its entry for the fusion."""
        specific = self.fusions.get(fusion, {}) if fusion is not None else {}
        return (
            {**copy.deepcopy(dict(self.model)), **copy.deepcopy(dict(specific.get("model", {})))},
            {**copy.deepcopy(dict(self.train)), **copy.deepcopy(dict(specific.get("train", {})))},
        )


def _check_sections(name: str, where: str, data: Mapping[str, Any]) -> None:
    """``model`` / ``train`` of a preset (or of one fusion's entry) hold only ModelConfig / TrainConfig fields."""
    from mmfuse.train import TrainConfig

    for section, owner in (("model", ModelConfig), ("train", TrainConfig)):
        values = data.get(section, {}) or {}
        if not isinstance(values, Mapping):
            raise ValueError(
                f"The preset {name!r}: '{where}{section}' must map {owner.__name__} fields to values. "
                f"Got {type(values).__name__}."
            )
        valid = [f.name for f in dataclasses.fields(owner)]
        for key in values:
            if key not in valid:
                raise ValueError(
                    f"The preset {name!r}: {key!r} in '{where}{section}' is not a {owner.__name__} field. "
                    f"Valid: {', '.join(sorted(valid))}."
                )


def read_preset(path: str | os.PathLike[str]) -> Preset:
    r"""Read a preset from a YAML or JSON file, or from a tuning folder (its ``best.json``, written by ``tune``).

    The preset is named by the path as given (unless the file has a ``name``); ``run.json`` records that name.

    Raises:
        FileNotFoundError: neither the file nor a ``best.json`` in the folder exists.
        ValueError: the file cannot be parsed, or holds an unknown key or setting (named, with the valid ones).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "mine.yaml"
        >>> _ = f.write_text("train: {lr: 3e-3, epochs: 5}\nfusions: {gated: {model: {hidden: 16}}}\n")
        >>> read_preset(f).settings("gated")
        ({'hidden': 16}, {'lr': 0.003, 'epochs': 5})
    """
    target = Path(path)
    if target.is_dir():
        target = target / "best.json"
    data = read_settings_file(target, "preset")
    return Preset.from_dict(str(path), data)


def resolve_preset(
    given: str | os.PathLike[str] | Mapping[str, Any] | Preset | None, dataset: MultimodalDataset
) -> Preset:
    """The preset a run starts from: the one given, else the data set's (:func:`preset_for`).

    ``given`` is a :class:`Preset`, its file form as a mapping (named ``"experiment file"`` unless it has a
    ``name``), or the path of a preset file or tune folder (:func:`read_preset`). A preset that records another data
    set (``source["dataset"]``, a tune result) is used with a warning.

    Example:
        >>> from mmfuse.data import load_dataset
        >>> resolve_preset({"train": {"lr": 0.01}}, load_dataset("basic-motions")).settings("concat")
        ({}, {'lr': 0.01})
    """
    if given is None:
        return preset_for(dataset)
    if isinstance(given, Preset):
        preset = given
    elif isinstance(given, Mapping):
        preset = Preset.from_dict("experiment file", given)
    else:
        preset = read_preset(given)
    made_for = preset.source.get("dataset")
    if isinstance(made_for, str) and made_for != dataset.name:
        warnings.warn(
            f"The preset {preset.name!r} was made for data set {made_for!r}, not for {dataset.name!r}; its settings "
            "are used as they are.",
            MmfuseWarning,
            stacklevel=3,
        )
    return preset


def preset_for(dataset: MultimodalDataset) -> Preset:
    """Return the preset of ``dataset``: the one registered with it, or ``Preset("defaults")``.

    A preset belongs to the data set a registered builder wrote, so a user's folder that carries a built-in's
    name gets the defaults, not the built-in's hyperparameters (:func:`mmfuse.data.registered_name_of`).

    Example:
        >>> from mmfuse.data import load_dataset
        >>> p = preset_for(load_dataset("basic-motions"))
        >>> p.name, p.train["monitor"]
        ('basic-motions', 'loss')
    """
    name = registered_name_of(dataset)
    registered = dataset_preset(name) if name is not None else None
    if name is None or registered is None:
        return Preset("defaults")
    return Preset.from_dict(name, registered)


def settings_for(
    preset: Preset,
    fusion: str | None,
    *,
    model_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    device: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model and training keyword arguments: the preset, its per-fusion entry, then the overrides.

    ``epochs`` overrides the number of epochs; ``device`` is the training device unless a layer above set one.

    Example:
        >>> settings_for(Preset("p", train={"epochs": 9, "lr": 0.1}), "concat", epochs=2, device="cpu")
        ({}, {'epochs': 2, 'lr': 0.1, 'device': 'cpu'})
    """
    base_model, base_train = preset.settings(fusion)
    model_kwargs = {**base_model, **copy.deepcopy(dict(model_overrides or {}))}
    train_kwargs = {**base_train, **copy.deepcopy(dict(train_overrides or {}))}
    if epochs is not None:
        train_kwargs["epochs"] = epochs
    if device is not None:
        train_kwargs.setdefault("device", device)
    return model_kwargs, train_kwargs


def resolve_fusions(names: Sequence[str], modalities: Sequence[str] | None = None) -> list[str]:
    """Expand ``"all"`` / ``"unimodal"`` and check every name against the fusion registry.

    ``"all"`` means every registered fusion followed by the unimodal baselines ``unimodal-<m>`` (one per
    modality, when ``modalities`` is given); ``"unimodal"`` means the unimodal baselines alone. A baseline name
    is checked against ``modalities`` when they are given, else only its form is checked.

    Raises:
        ValueError: naming the unknown fusion or modality and listing the valid ones, or when the names
            select nothing (empty, or only commas).

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
    if not out:
        raise ValueError(
            f"The fusion names {list(names)!r} select no fusion. Name at least one: {', '.join(valid)}, "
            "'all', 'unimodal' or 'unimodal-<modality>'."
        )
    return list(dict.fromkeys(out))  # the first occurrence of each name, in order


def model_config_for(
    dataset: MultimodalDataset,
    fusion: str,
    *,
    modalities: Sequence[str] | None = None,
    **overrides: Any,
) -> ModelConfig:
    """The model of one comparison row: the data set's modalities (or ``modalities``) fused by ``fusion``.

    ``unimodal-<m>`` is the unimodal baseline: the same model on modality ``m`` alone (a one-input ``concat``,
    without modality dropout). The data set's categorical context sizes are filled in unless given. Pretrained
    encoders (``pretrained``) are kept for the modalities in use; a ``"tokens"`` modality needs one.

    Args:
        dataset: The data set (its modalities, task and context vocabulary are read).
        fusion: A registered fusion name or ``unimodal-<modality>``.
        modalities: Use only these modalities of the data set (default: all of them).
        **overrides: :class:`~mmfuse.models.ModelConfig` keyword arguments (a preset's, then the user's).

    Raises:
        ValueError: for a modality the data set does not have, or a token modality without a pretrained encoder.

    Example:
        >>> from mmfuse.data import load_dataset
        >>> cfg = model_config_for(load_dataset("basic-motions"), "unimodal-gyroscope", hidden=16)
        >>> cfg.fusion, cfg.modality_dims, cfg.hidden
        ('concat', {'gyroscope': 3}, 16)
    """
    task = dataset.task
    dims = {m: s.dim for m, s in dataset.modalities.items()}
    if modalities is not None:
        unknown = [m for m in modalities if m not in dims]
        if unknown:
            raise ValueError(
                f"Unknown modality {unknown[0]!r} of data set {dataset.name!r}. Its modalities: {sorted(dims)}."
            )
        dims = {m: dims[m] for m in sorted(set(modalities))}
    kwargs = dict(overrides)
    if fusion.startswith(UNIMODAL_PREFIX):
        modality = fusion.removeprefix(UNIMODAL_PREFIX)
        if modality not in dims:
            raise ValueError(f"Unknown unimodal baseline {fusion!r}: the modalities in use are {sorted(dims)}.")
        dims = {modality: dims[modality]}
        fusion = "concat"  # one modality: the fusion is a projection, the rest of the model is unchanged
        kwargs.pop("fusion_kwargs", None)
        kwargs["modality_dropout"] = 0.0
    kwargs["pretrained"] = {m: spec for m, spec in (kwargs.get("pretrained") or {}).items() if m in dims}
    unread = [m for m in dims if dataset.modalities[m].kind == "tokens" and m not in kwargs["pretrained"]]
    if unread:
        raise ValueError(
            f"The modality {unread[0]!r} of data set {dataset.name!r} holds token ids (kind 'tokens'): the model needs "
            f"a pretrained encoder to read it, e.g. pretrained={{{unread[0]!r}: {{'source': 'minilm'}}}} in the "
            "model settings (a preset's 'model' section, or ModelConfig)."
        )
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


def not_causal_reason(fusion: str) -> str | None:
    """Why ``fusion`` cannot be made causal (streaming-ready), or None when it can.

    A fusion can be causal when its class is (``is_causal``, the pointwise fusions) or when it takes a
    ``causal`` keyword argument (``cross_attention``, ``mult``, ...). The reason of one that cannot is its
    class's ``limitations["is_causal"]``. A unimodal baseline (``unimodal-<m>``) is a one-input ``concat``.

    Example:
        >>> not_causal_reason("gated") is None, not_causal_reason("cross_attention") is None
        (True, True)
        >>> not_causal_reason("bottleneck")
        'the fusion tokens summarise the whole sequence, so the output at step t depends on later steps'
    """
    if fusion.startswith(UNIMODAL_PREFIX):
        return None
    cls = get_fusion_class(fusion)
    if cls.is_causal or "causal" in fusion_kwargs(fusion):
        return None
    return (
        cls.limitations.get("is_causal") or f"{cls.__name__} is not causal (is_causal=False) and has no causal option"
    )


def causal_settings(fusion: str | None, model_kwargs: Mapping[str, Any], *, label_level: str) -> dict[str, Any]:
    """``model_kwargs`` made streaming-ready: what ``compare --causal`` trains.

    Sets ``causal=True`` and ``bidirectional=False``, ``pooling="last"`` for sample labels (the prediction at the
    last step seen so far), and ``fusion_kwargs["causal"] = True`` for a fusion whose causality is an option.
    The rest of the preset is kept.

    Raises:
        ValueError: for a fusion that cannot be causal, with the reason (:func:`not_causal_reason`).

    Example:
        >>> causal_settings("cross_attention", {"hidden": 16, "pooling": "mean"}, label_level="sample")
        {'hidden': 16, 'pooling': 'last', 'causal': True, 'bidirectional': False, 'fusion_kwargs': {'causal': True}}
    """
    out = copy.deepcopy(dict(model_kwargs))
    if label_level == "sample":
        out["pooling"] = "last"
    out["causal"] = True
    out["bidirectional"] = False
    if fusion is None:
        return out
    reason = not_causal_reason(fusion)
    if reason is not None:
        raise ValueError(f"Fusion {fusion!r} cannot be trained causal (streaming-ready): {reason}.")
    if not fusion.startswith(UNIMODAL_PREFIX) and "causal" in fusion_kwargs(fusion):
        out["fusion_kwargs"] = {**dict(out.get("fusion_kwargs") or {}), "causal": True}
    return out


def grid_rate(dataset: MultimodalDataset) -> float | None:
    """The step rate (Hz) of a data set's timeline, or None when it is not regular or not known.

    Read from what wrote the data set (``extra_meta["rate_hz"]`` of a built-in, ``extra_meta["align"]["rate"]``
    of ``mmfuse align`` / ``extract`` / ``import folders`` on a grid), else from the median step of the first
    sample's timestamps.

    Example:
        >>> from mmfuse.data import load_dataset
        >>> grid_rate(load_dataset("basic-motions"))
        10.0
    """
    meta = getattr(dataset, "extra_meta", {}) or {}
    align: Mapping[str, Any] = meta["align"] if isinstance(meta.get("align"), Mapping) else {}
    for value in (meta.get("rate_hz"), align.get("rate")):
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and np.isfinite(value):
            return float(value)
    for i in range(min(len(dataset), 1)):
        times = dataset[i].timestamps
        if times is not None and len(times) > 1:
            step = float(np.median(np.diff(np.asarray(times, dtype=np.float64))))
            if step > 0:
                return round(1.0 / step, 6)
    return None


def stream_info(dataset: MultimodalDataset) -> dict[str, Any] | None:
    """What a streaming session needs to know of the training data: ``{"rate": Hz, "kinds": {m: kind}}``.

    A causal model's ``config.json`` records it as ``"stream"`` (``compare --causal``, ``mmfuse train --causal``);
    ``StreamingSession.from_dir`` and ``mmfuse serve`` read it when the directory has no ``stream.json``. None when
    the data set has no regular grid rate (:func:`grid_rate`).

    Example:
        >>> from mmfuse.data import load_dataset
        >>> stream_info(load_dataset("basic-motions"))
        {'rate': 10.0, 'kinds': {'accelerometer': 'continuous', 'gyroscope': 'continuous'}}
    """
    rate = grid_rate(dataset)
    if rate is None:
        return None
    return {"rate": rate, "kinds": {m: spec.kind for m, spec in sorted(dataset.modalities.items())}}


def fit_normalizers(train_view: MultimodalDataset) -> ModalityNormalizers:
    """Fit the default normaliser of every modality on the training view only (never on validation or test).

    Example:
        >>> from mmfuse.data import load_dataset
        >>> norms = fit_normalizers(load_dataset("basic-motions").split("train"))
        >>> sorted(norms)
        ['accelerometer', 'gyroscope']
    """
    return default_normalizers(train_view.modalities).fit(train_view)


def split_metrics(
    predictions: Predictions, task: TaskSpec, metric_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The metrics of one model's predictions on one split, as ``test_metrics.json`` holds them for the test split.

    :func:`mmfuse.train.metrics_from_predictions` (classification: accuracy, F1 scores, per-class scores, the
    confusion matrix and class names; regression: MAE, RMSE, Pearson), plus every registered metric of
    ``metric_names`` (default: :func:`mmfuse.metrics.default_metrics` of the task) that it lacks.

    Example:
        >>> import numpy as np
        >>> from mmfuse.train import Predictions
        >>> p = Predictions("regression", "sample", np.array([1.0, 2.0]), np.array([1.0, 3.0]), None, ["a", "b"],
        ...                 np.array([0, 1]), None)
        >>> split_metrics(p, TaskSpec("regression", "sample"))["mae"]
        0.5
    """
    names = default_metrics(task.type.value) if metric_names is None else metric_names
    metrics = metrics_from_predictions(predictions, task.class_names or None)
    for name in names:
        if metrics.get(name) is None:
            metrics[name] = compute_metric(name, predictions.y_true, predictions.y_pred, predictions.probs)
    return metrics


def write_test_metrics(
    model_dir: str | os.PathLike[str] | None,
    predictions: Predictions,
    task: TaskSpec,
    metric_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score a model's test predictions (:func:`split_metrics`) and write them as its ``test_metrics.json``.

    ``mmfuse compare`` and ``mmfuse train`` write the file through this function, so a model directory's
    ``test_metrics.json`` (:attr:`RunDir.TEST_METRICS_JSON`) holds the same keys for the same task whichever
    command wrote it. ``model_dir`` None: scored, not written (the other processes of a data-parallel ``train``).

    Returns:
        The metrics written.
    """
    metrics = split_metrics(predictions, task, metric_names)
    if model_dir is not None:
        atomic_write_json(Path(model_dir) / RunDir.TEST_METRICS_JSON, metrics)
    return metrics


def versions() -> dict[str, str]:
    """The versions a run records: mmfuse, torch, NumPy, Python and the platform.

    Example:
        >>> sorted(versions())
        ['mmfuse', 'numpy', 'platform', 'python', 'torch']
    """
    return {
        "mmfuse": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` and restore the previous count after it (``None``: as is).

    Example:
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    previous = torch.get_num_threads()
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"The thread count of torch_threads must be a positive integer or None. Got {n!r}.")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
