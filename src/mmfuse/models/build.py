"""Building, saving, loading and inspecting :class:`MultimodalModel` instances."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mmfuse._io import atomic_write, atomic_write_text
from mmfuse.errors import DataError
from mmfuse.layers.encoders import rename_legacy_keys
from mmfuse.layers.pretrained import PretrainedTextEncoder
from mmfuse.models.config import ModelConfig
from mmfuse.models.model import MultimodalModel, _module_key

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "ParameterReport",
    "build_model",
    "load_model",
    "parameter_report",
    "read_model_info",
    "save_model",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_FORMAT = "mmfuse.model"
_FORMAT_VERSION = 1
_REFERENCES = "pretrained_references"
_RESERVED = ("format", "format_version", "model_config", _REFERENCES)


@dataclass(frozen=True)
class ParameterReport:
    """Parameter counts of a model.

    Attributes:
        trainable: Parameters with ``requires_grad``.
        frozen: Parameters without it.
        by_module: Top-level child module name -> its parameter count (trainable + frozen).
    """

    trainable: int
    frozen: int
    by_module: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """``trainable + frozen``."""
        return self.trainable + self.frozen

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"trainable": self.trainable, "frozen": self.frozen, "total": self.total, "by_module": self.by_module}


def parameter_report(model: nn.Module) -> ParameterReport:
    """Count a model's trainable and frozen parameters, in total and per top-level child module.

    Example:
        >>> model = build_model(ModelConfig({"a": 3}, out_dim=2, hidden=8))
        >>> report = parameter_report(model)
        >>> report.total == sum(report.by_module.values()), report.frozen
        (True, 0)
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    by_module = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        by_module["(own)"] = own
    return ParameterReport(trainable=trainable, frozen=frozen, by_module=by_module)


def build_model(config: ModelConfig, max_params: int | None = None) -> MultimodalModel:
    """Build a :class:`MultimodalModel`, refusing one with more than ``max_params`` parameters.

    Args:
        config: The model description.
        max_params: Parameter budget (None: no limit).

    Raises:
        ValueError: if the model exceeds the budget (naming both numbers and the largest modules).

    Example:
        >>> cfg = ModelConfig({"audio": 73, "text": 100}, out_dim=2)
        >>> build_model(cfg, max_params=1_000_000).config.fusion
        'concat'
        >>> build_model(cfg, max_params=100)
        Traceback (most recent call last):
        ...
        ValueError: The model built from this ModelConfig has ... parameters, over the max_params budget of 100...
    """
    _check_arguments("build_model", config, max_params)
    if max_params is not None:
        report = _meta_report(config)  # a config far over budget is refused before any memory is allocated
        if report is not None:
            _check_budget(report, config, max_params)
    model = MultimodalModel(config)
    if max_params is not None and report is None:
        _check_budget(parameter_report(model), config, max_params)
    return model


def count_parameters(config: ModelConfig, max_params: int | None = None) -> ParameterReport:
    """The :func:`parameter_report` of the model ``config`` describes, without initialising its weights.

    The model is built on the meta device (shapes only, no memory, no initialisation, no random draws), which
    is what a parameter-budget check needs; a component that cannot be built there is built for real.

    Args:
        config: The model description.
        max_params: Parameter budget, checked as :func:`build_model` checks it (None: no limit).

    Raises:
        ValueError: if the model exceeds the budget, or ``config`` does not build.

    Example:
        >>> cfg = ModelConfig({"a": 3}, out_dim=2, hidden=8)
        >>> count_parameters(cfg) == parameter_report(build_model(cfg))
        True
    """
    _check_arguments("count_parameters", config, max_params)
    report = _meta_report(config)
    if report is None:
        return parameter_report(build_model(config, max_params=max_params))
    if max_params is not None:
        _check_budget(report, config, max_params)
    return report


def _check_arguments(owner: str, config: Any, max_params: Any) -> None:
    if not isinstance(config, ModelConfig):
        raise TypeError(f"The 'config' parameter of {owner} must be a ModelConfig. Got {type(config).__name__}.")
    if max_params is not None and (not isinstance(max_params, int) or max_params < 1):
        raise ValueError(f"The 'max_params' parameter of {owner} must be a positive integer. Got {max_params!r}.")


def _meta_report(config: ModelConfig) -> ParameterReport | None:
    """The parameter report of ``config``'s model built on the meta device; None where it cannot be built there."""
    try:
        with torch.device("meta"):
            return parameter_report(MultimodalModel(config))
    except (RuntimeError, NotImplementedError, ValueError, TypeError):
        return None  # a component that cannot be built on the meta device is counted after building


def _check_budget(report: ParameterReport, config: ModelConfig, max_params: int) -> None:
    if report.total > max_params:
        biggest = sorted(report.by_module.items(), key=lambda kv: -kv[1])[:3]
        raise ValueError(
            f"The model built from this ModelConfig has {report.total:,} parameters, over the max_params budget "
            f"of {max_params:,} (largest parts: {', '.join(f'{k}={v:,}' for k, v in biggest)}). Lower "
            f"'hidden' (now {config.hidden}) or 'encoder_layers' (now {config.encoder_layers}), or raise the "
            "budget."
        )


def save_model(
    model: MultimodalModel, directory: str | os.PathLike[str], extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed), atomically.

    ``config.json`` holds ``{"format", "format_version", "model_config", **extra}``; weights never go
    through pickle. Each file is written to a temporary name, fsynced and moved into place with ``os.replace``.

    A frozen pretrained encoder (``ModelConfig.pretrained[m]["trainable"]`` False, and not unfrozen since) is a
    fixed function of its source: its backbone's weights are not written; ``config.json`` records
    ``pretrained_references[m] = {"source", "fingerprint"}`` (:func:`~mmfuse.layers.pretrained.encoder_fingerprint`
    of the source's files) and :func:`load_model` rebuilds it from the source, refusing one whose fingerprint
    differs. A trainable (fine-tuned) backbone's weights are saved with the rest.

    Args:
        model: The model to save.
        directory: Target directory.
        extra: JSON-safe entries added at the top level of ``config.json`` (e.g. ``{"train_config": ...}``);
            may not use the reserved keys "format", "format_version", "model_config".

    Returns:
        The directory.

    Example:
        >>> import tempfile
        >>> model = build_model(ModelConfig({"a": 3}, out_dim=2, hidden=8))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = save_model(model, d, extra={"note": "demo"})
        ...     sorted(p.name for p in Path(d).iterdir()), read_model_info(d)["note"]
        (['config.json', 'model.safetensors'], 'demo')
    """
    if not isinstance(model, MultimodalModel):
        raise TypeError(f"The 'model' parameter of save_model must be a MultimodalModel. Got {type(model).__name__}.")
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"The 'extra' parameter of save_model may not use the reserved key(s) {clash}.")
    references = {
        m: {"source": model.config.pretrained[m]["source"], "fingerprint": encoder.fingerprint}
        for m, encoder in _token_encoders(model).items()
        if not encoder.trainable
    }
    info = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "model_config": model.config.to_dict(), **extra}
    if references:
        info[_REFERENCES] = references
    try:
        text = json.dumps(info, indent=2, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The 'extra' parameter of save_model must be JSON-serialisable: {exc}") from None
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    referenced = _backbone_prefixes(references)
    tensors = {
        k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if not k.startswith(referenced)
    }
    atomic_write(out / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": _FORMAT}))
    atomic_write_text(out / CONFIG_FILE, text + "\n")
    return out


def read_model_info(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a saved model's ``config.json`` (including any ``extra`` entries).

    Raises:
        FileNotFoundError: naming the missing file.
        DataError: if the file is not valid JSON or not an mmfuse model description.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     info = read_model_info(save_model(build_model(ModelConfig({"a": 3}, out_dim=2, hidden=8)), d))
        >>> info["model_config"]["out_dim"]
        2
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No saved mmfuse model here: {path} does not exist.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); the saved model is corrupt.") from None
    except RecursionError:
        raise DataError(f"{path} is nested too deeply to be a model description; the saved model is corrupt.") from None
    if not isinstance(info, dict) or info.get("format") != _FORMAT or "model_config" not in info:
        raise DataError(f"{path} is not an mmfuse model description (expected format {_FORMAT!r} and 'model_config').")
    if info.get("format_version") != _FORMAT_VERSION:
        raise DataError(
            f"{path} has format_version {info.get('format_version')!r}; this mmfuse reads version {_FORMAT_VERSION}."
        )
    return info


def _token_encoders(model: MultimodalModel) -> dict[str, PretrainedTextEncoder]:
    """Token modality -> its pretrained encoder inside ``model``."""
    return {m: cast(PretrainedTextEncoder, model.pretrained[m]) for m in model.config.pretrained}


def _backbone_prefixes(modalities: Mapping[str, Any]) -> tuple[str, ...]:
    """The state-dict name prefixes of the backbones of these token modalities."""
    return tuple(f"pretrained.{_module_key(m)}.backbone." for m in modalities)


def _read_references(info: Mapping[str, Any], config: ModelConfig, config_path: Path) -> dict[str, dict[str, str]]:
    """The ``pretrained_references`` of ``config.json``, checked against its model config."""
    refs = info.get(_REFERENCES, {})
    if not isinstance(refs, dict):
        raise DataError(f"{config_path}: {_REFERENCES!r} must be a dict of modality -> {{source, fingerprint}}.")
    for m, ref in refs.items():
        spec = config.pretrained.get(m)
        if spec is None or not isinstance(ref, dict) or ref.get("source") != spec["source"]:
            raise DataError(
                f"{config_path}: {_REFERENCES}[{m!r}] = {ref!r} does not match the model config's pretrained encoders "
                f"({ {k: v['source'] for k, v in config.pretrained.items()} }); the saved model is corrupt."
            )
        if not isinstance(ref.get("fingerprint"), str) or len(ref["fingerprint"]) != 64:
            raise DataError(
                f"{config_path}: {_REFERENCES}[{m!r}] has no SHA-256 'fingerprint'; the saved model is corrupt."
            )
    return refs


def _check_references(model: MultimodalModel, refs: Mapping[str, Mapping[str, str]], config_path: Path) -> None:
    """Refuse a referenced encoder whose source files here differ from those the model was saved with."""
    for m, ref in refs.items():
        encoder = _token_encoders(model)[m]
        if encoder.fingerprint != ref["fingerprint"]:
            raise DataError(
                f"{config_path}: the frozen pretrained encoder of modality {m!r} was saved as a reference to "
                f"{ref['source']!r} with fingerprint {ref['fingerprint'][:16]}..., but {ref['source']!r} here "
                f"({encoder.path}) has fingerprint {encoder.fingerprint[:16]}...: its files (weights, vocabulary or "
                "config) are not the ones the model was trained with. Install the version it was saved with."
            )


def _head(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "") if keys else "none"


def load_model(directory: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> MultimodalModel:
    """Rebuild a model saved by :func:`save_model`, in eval mode.

    Args:
        directory: The directory holding ``config.json`` and ``model.safetensors``.
        map_location: Device for the weights.

    A frozen pretrained encoder saved as a reference (see :func:`save_model`) is rebuilt from its source
    (offline: a packaged model or a local folder).

    Raises:
        FileNotFoundError: naming a missing file.
        DataError: naming the file when it is corrupt, its config invalid, or its tensors do not match the
            model (missing/unexpected keys, wrong shapes or dtypes) or hold NaN or infinity; or when a referenced
            pretrained encoder's files here differ from those it was saved with (its fingerprint).

    Example:
        >>> import tempfile
        >>> model = build_model(ModelConfig({"a": 3}, out_dim=2, hidden=8))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     again = load_model(save_model(model, d))
        >>> again.training, all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())
        (False, True)
    """
    info = read_model_info(directory)
    config_path = Path(directory) / CONFIG_FILE
    try:
        config = ModelConfig.from_dict(info["model_config"])
        with torch.device("meta"):  # shapes and dtypes only: a config far larger than its weights costs nothing
            skeleton = MultimodalModel(config)
        expected = {k: (tuple(v.shape), v.dtype) for k, v in skeleton.state_dict().items()}
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise DataError(f"{config_path} holds an invalid model_config: {exc}") from None
    refs = _read_references(info, config, config_path)
    referenced = _backbone_prefixes(refs)
    expected = {k: v for k, v in expected.items() if not k.startswith(referenced)}  # rebuilt from their source
    weights_path = Path(directory) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"Incomplete saved mmfuse model: {weights_path} does not exist.")
    try:
        state = load_file(weights_path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(
            f"{weights_path} could not be read as safetensors ({exc}); the saved model is corrupt."
        ) from None
    state = rename_legacy_keys(skeleton, state)  # weights saved by an older mmfuse under older submodule names
    _check_weights(state, expected, weights_path, config_path)
    model = MultimodalModel(config)
    _check_references(model, refs, config_path)
    model.load_state_dict(state, strict=not refs)  # _check_weights matched the keys; references load from source
    return model.to(map_location).eval()


def _check_weights(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    weights_path: Path,
    config_path: Path,
) -> None:
    """Refuse weights that do not match the model of ``config.json`` exactly, or that hold NaN or infinity.

    ``load_state_dict`` would cast a tensor of another dtype silently (float weights stored as int64 load as
    truncated whole numbers) and copy NaN as it is: both give a model that runs and answers nonsense.
    """
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DataError(
            f"{weights_path} does not match the model in {config_path}: missing keys {_head(missing)}, "
            f"unexpected keys {_head(unexpected)}."
        )
    wrong = [f"{k} {list(state[k].shape)} vs {list(s)}" for k, (s, _) in expected.items() if tuple(state[k].shape) != s]
    if wrong:
        raise DataError(f"{weights_path} has tensors of the wrong shape for {config_path}: {'; '.join(wrong[:5])}.")
    dtypes = [f"{k} is {state[k].dtype}, expected {d}" for k, (_, d) in expected.items() if state[k].dtype != d]
    if dtypes:
        raise DataError(
            f"{weights_path} has tensors of the wrong dtype (converted or truncated weights): {'; '.join(dtypes[:5])}."
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise DataError(f"{weights_path} holds NaN or infinite values in {_head(bad)}; the saved model is corrupt.")
