"""Checkpoints of a training run, written without pickle: tensors in safetensors, everything else in JSON.

Layout under a run's ``out_dir``::

    model.safetensors, config.json   best weights (``mmfuse.models.save_model`` for a MultimodalModel)
    trainer_state.json               best epoch, best metric, monitor, train config
    history.json                     one row per finished epoch
    last/                            everything needed to resume after the last finished epoch
        model.safetensors            current weights
        best.safetensors             weights of the best epoch so far
        optimizer.safetensors/.json  optimiser state: named tensors + JSON skeleton
        scheduler.safetensors/.json  scheduler state (skeleton ``null`` without a scheduler)
        scaler.safetensors/.json     gradient-scaler state (only with float16 mixed precision)
        rng.safetensors/.json        torch generators (uint8 tensors); Python and NumPy generators (JSON)
        trainer_state.json           epoch, counters, history, config (written last)

Every file is written atomically; ``last/`` is first written in full to ``last.tmp/`` and then swapped in, so a
crash leaves either the previous or the new checkpoint (``last.old/`` is used if the crash fell between the two
renames).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmfuse.errors import DataError
from mmfuse.train._state import flatten_state, read_json, read_tensors, unflatten_state, write_json, write_tensors

__all__ = [
    "LastCheckpoint",
    "load_last_checkpoint",
    "load_pretrained",
    "load_weights",
    "save_best",
    "save_last_checkpoint",
    "save_weights",
    "state_dict_cpu",
]

FORMAT = "mmfuse-trainer-checkpoint"
FORMAT_VERSION = 1


def state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return a detached CPU copy of ``model.state_dict()`` (no storage shared with the model or between keys)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_weights(
    model_or_state: nn.Module | dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write a model's state dict (or a state dict) to a safetensors file, atomically.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> lin = nn.Linear(2, 1)
        >>> _ = save_weights(lin, path)
        >>> other = nn.Linear(2, 1)
        >>> _ = load_weights(other, path)
        >>> bool(torch.equal(lin.weight, other.weight))
        True
    """
    state = state_dict_cpu(model_or_state) if isinstance(model_or_state, nn.Module) else model_or_state
    meta = {"format": "pt", **(metadata or {})}
    return write_tensors(Path(path), dict(state), meta)


def _check_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse floating-point tensors holding NaN or infinity (a model loaded from them answers NaN)."""
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise DataError(f"Weights file {str(path)!r} holds NaN or infinite values in {shown}; it is corrupt.")


def _check_kinds(tensors: dict[str, torch.Tensor], target: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a tensor whose kind (floating point, integer, bool) differs from the model's: a cast would truncate."""

    def kind(t: torch.Tensor) -> str:
        return "float" if t.is_floating_point() else "complex" if t.is_complex() else str(t.dtype)

    wrong = [
        f"{k} is {tensors[k].dtype}, the model's is {v.dtype}"
        for k, v in target.items()
        if k in tensors and kind(tensors[k]) != kind(v)
    ]
    if wrong:
        raise DataError(
            f"Weights file {str(path)!r} has tensors of the wrong dtype (converted or truncated weights): "
            f"{'; '.join(wrong[:5])}."
        )


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors state dict written by :func:`save_weights` into ``model`` (strict key match).

    Raises:
        FileNotFoundError: naming the file when it is missing.
        DataError: naming the file when it is corrupt, holds NaN or infinity, or does not fit the model (keys,
            shapes, or a tensor of another kind: integers where the model has floating-point weights).
    """
    tensors, _ = read_tensors(Path(path))
    _check_finite(tensors, Path(path))
    _check_kinds(tensors, model.state_dict(), Path(path))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise DataError(f"The weights in {str(path)!r} do not fit the model: {err}") from err
    return model


def _is_mmfuse_model(model: nn.Module) -> bool:
    if not type(model).__module__.startswith("mmfuse.models"):
        return False
    from mmfuse.models import MultimodalModel

    return isinstance(model, MultimodalModel)


def save_best(
    model: nn.Module,
    out_dir: Path,
    trainer_state: dict[str, Any],
    model_config: dict[str, Any] | None = None,
) -> None:
    """Write the best model (weights + config) and the trainer's summary into ``out_dir``.

    A :class:`~mmfuse.models.MultimodalModel` is saved with :func:`mmfuse.models.save_model`; any other module
    as ``model.safetensors`` plus ``config.json`` holding ``model_config`` (or the module's class path).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if _is_mmfuse_model(model):
        from mmfuse.models import save_model

        save_model(model, out_dir)  # type: ignore[arg-type]
    else:
        save_weights(model, out_dir / "model.safetensors")
        config = (
            dict(model_config)
            if model_config is not None
            else {"model_class": f"{type(model).__module__}.{type(model).__qualname__}"}
        )
        write_json(out_dir / "config.json", config)
    write_json(out_dir / "trainer_state.json", trainer_state)


def _write_state(directory: Path, stem: str, state: Any, epoch: int) -> None:
    tensors, skeleton = flatten_state(state)
    write_tensors(directory / f"{stem}.safetensors", tensors, {"epoch": str(epoch), "format": FORMAT})
    write_json(directory / f"{stem}.json", {"format": FORMAT, "epoch": epoch, "structure": skeleton})


def _read_state(directory: Path, stem: str, epoch: int) -> Any:
    tensor_path, json_path = directory / f"{stem}.safetensors", directory / f"{stem}.json"
    tensors, meta = read_tensors(tensor_path)
    doc = read_json(json_path)
    if not isinstance(doc, dict) or "structure" not in doc:
        raise DataError(f"Checkpoint file {str(json_path)!r} is not an mmfuse trainer state file.")
    for path, stamp in ((tensor_path, meta.get("epoch")), (json_path, doc.get("epoch"))):
        if str(stamp) != str(epoch):
            raise DataError(
                f"Checkpoint file {str(path)!r} belongs to epoch {stamp} but trainer_state.json says epoch {epoch}; "
                "the checkpoint is inconsistent."
            )
    return unflatten_state(tensors, doc["structure"])


def save_last_checkpoint(
    out_dir: Path,
    *,
    epoch: int,
    model: nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rng_tensors: dict[str, torch.Tensor],
    rng_info: dict[str, Any],
    trainer_state: dict[str, Any],
    scaler: Any = None,
) -> Path:
    """Write the resumable checkpoint of a finished ``epoch`` (1-based) to ``out_dir/last``; return its path.

    ``scaler`` (a ``torch.amp.GradScaler`` in use, or ``None``) is written as ``scaler.safetensors/.json``.
    """
    tmp, last, old = out_dir / "last.tmp", out_dir / "last", out_dir / "last.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        stamp = {"epoch": str(epoch)}
        save_weights(model, tmp / "model.safetensors", stamp)
        if best_state is not None:
            save_weights(best_state, tmp / "best.safetensors", stamp)
        _write_state(tmp, "optimizer", optimizer.state_dict(), epoch)
        _write_state(tmp, "scheduler", None if scheduler is None else scheduler.state_dict(), epoch)
        if scaler is not None:
            _write_state(tmp, "scaler", scaler.state_dict(), epoch)
        write_tensors(tmp / "rng.safetensors", rng_tensors, {"epoch": str(epoch), "format": FORMAT})
        write_json(tmp / "rng.json", {"format": FORMAT, "epoch": epoch, "structure": rng_info})
        write_json(
            tmp / "trainer_state.json", {"format": FORMAT, "version": FORMAT_VERSION, **trainer_state, "epoch": epoch}
        )
    except BaseException:  # a full disk, a read-only folder, an interrupt: leave no half-written checkpoint behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old.exists():
        shutil.rmtree(old)
    if last.exists():
        last.replace(old)
    tmp.replace(last)
    if old.exists():
        shutil.rmtree(old)
    return last


@dataclass
class LastCheckpoint:
    """A resumable checkpoint read back by :func:`load_last_checkpoint` (``scaler_state`` is ``None`` without AMP)."""

    directory: Path
    epoch: int
    trainer_state: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor] | None
    optimizer_state: dict[str, Any]
    scheduler_state: Any
    rng_tensors: dict[str, torch.Tensor]
    rng_info: dict[str, Any]
    scaler_state: dict[str, Any] | None = None


def load_last_checkpoint(out_dir: str | Path) -> LastCheckpoint:
    """Read ``out_dir/last`` (or ``out_dir/last.old`` left by a crash during the swap).

    Raises:
        FileNotFoundError: naming ``last/trainer_state.json`` when there is no checkpoint.
        DataError: naming the file that is corrupt, truncated or from another epoch.
    """
    out_dir = Path(out_dir)
    directory = out_dir / "last"
    if not (directory / "trainer_state.json").is_file() and (out_dir / "last.old" / "trainer_state.json").is_file():
        directory = out_dir / "last.old"
    state_path = directory / "trainer_state.json"
    if not state_path.is_file():
        raise FileNotFoundError(
            f"Cannot resume: checkpoint file {str(state_path)!r} does not exist (was the run started with this "
            "out_dir?). Use resume=False to start afresh."
        )
    trainer_state = read_json(state_path)
    if not isinstance(trainer_state, dict) or trainer_state.get("format") != FORMAT:
        raise DataError(f"Checkpoint file {str(state_path)!r} is not an mmfuse trainer checkpoint.")
    if trainer_state.get("version") != FORMAT_VERSION:
        raise DataError(
            f"Checkpoint file {str(state_path)!r} has format version {trainer_state.get('version')!r}; "
            f"this mmfuse reads version {FORMAT_VERSION}."
        )
    epoch = int(trainer_state["epoch"])
    model_state, meta = read_tensors(directory / "model.safetensors")
    if meta.get("epoch") != str(epoch):
        raise DataError(
            f"Checkpoint file {str(directory / 'model.safetensors')!r} belongs to epoch {meta.get('epoch')} "
            f"but trainer_state.json says epoch {epoch}."
        )
    _check_finite(model_state, directory / "model.safetensors")
    best_state = None
    if (directory / "best.safetensors").is_file():
        best_state, _ = read_tensors(directory / "best.safetensors")
        _check_finite(best_state, directory / "best.safetensors")
    optimizer_state = _read_state(directory, "optimizer", epoch)
    scheduler_state = _read_state(directory, "scheduler", epoch)
    scaler_state = None
    if (directory / "scaler.json").is_file() or (directory / "scaler.safetensors").is_file():
        scaler_state = _read_state(directory, "scaler", epoch)
    rng_tensors, rng_meta = read_tensors(directory / "rng.safetensors")
    rng_doc = read_json(directory / "rng.json")
    if rng_meta.get("epoch") != str(epoch) or not isinstance(rng_doc, dict) or rng_doc.get("epoch") != epoch:
        raise DataError(f"Checkpoint files {str(directory / 'rng.json')!r} do not belong to epoch {epoch}.")
    return LastCheckpoint(
        directory=directory,
        epoch=epoch,
        trainer_state=trainer_state,
        model_state=model_state,
        best_state=best_state,
        optimizer_state=optimizer_state,
        scheduler_state=scheduler_state,
        rng_tensors=rng_tensors,
        rng_info=rng_doc["structure"],
        scaler_state=scaler_state,
    )


def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike[str],
    *,
    include: Sequence[str] | None = ("projections.", "encoders."),
    strict_shapes: bool = True,
) -> list[str]:
    """Copy the tensors whose names start with an ``include`` prefix from a saved model into ``model``, in place.

    The usual use: start a model from the projections and temporal encoders of a model trained before (on
    another task, or with another fusion), then train it with ``TrainConfig(freeze=[...], unfreeze_epoch=...)``.
    Only names present in both state dicts are copied; values are cast to the target's dtype and device.

    Args:
        model: The model to fill.
        source: A directory written by :func:`mmfuse.models.save_model` (or a trainer's ``out_dir``), or a
            ``.safetensors`` file of a state dict.
        include: Name prefixes to copy; ``None`` copies every tensor the two models share.
        strict_shapes: Raise on a tensor whose shape differs between source and model; ``False`` skips it.

    Returns:
        The sorted names copied.

    Raises:
        FileNotFoundError: naming the weights file when it does not exist.
        DataError: naming the file when it is corrupt, when a tensor to copy holds NaN or infinity or is of
            another kind than the model's (integers for floating-point weights); naming the tensor and both shapes
            on a shape mismatch (``strict_shapes``); when no tensor was copied (listing what the source holds).

    Example:
        >>> import tempfile, pathlib
        >>> src, dst = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)), nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
        >>> path = save_weights(src, pathlib.Path(tempfile.mkdtemp()) / "model.safetensors")
        >>> load_pretrained(dst, path, include=["0."])
        ['0.bias', '0.weight']
        >>> bool(torch.equal(dst[0].weight, src[0].weight)), bool(torch.equal(dst[1].weight, src[1].weight))
        (True, False)
    """
    if isinstance(include, str):
        include = (include,)
    if include is not None and (
        not isinstance(include, Sequence) or not all(isinstance(p, str) and p for p in include)
    ):
        raise ValueError(
            f"The 'include' parameter of load_pretrained must be a sequence of non-empty name prefixes or None. "
            f"Got {include!r} instead."
        )
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"The 'source' parameter of load_pretrained names {str(path)!r}, which does not exist (expected a "
            "directory written by mmfuse.models.save_model, or a .safetensors file)."
        )
    if path.is_dir():
        path = path / "model.safetensors"
    tensors, _ = read_tensors(path)
    target = model.state_dict()
    _check_kinds(tensors, target, path)

    def wanted(name: str) -> bool:
        return include is None or any(name.startswith(prefix) for prefix in include)

    candidates = sorted(name for name in tensors if name in target and wanted(name))
    copied: list[str] = []
    for name in candidates:
        src, dst = tensors[name], target[name]
        if tuple(src.shape) != tuple(dst.shape):
            if strict_shapes:
                raise DataError(
                    f"Tensor {name!r} in {str(path)!r} has shape {list(src.shape)} but the model's has "
                    f"{list(dst.shape)}; pass strict_shapes=False to skip such tensors, or narrow 'include'."
                )
            continue
        copied.append(name)
    if not copied:
        shown = sorted({n.split(".")[0] for n in tensors})
        raise DataError(
            f"load_pretrained copied nothing from {str(path)!r}: no tensor of matching shape has a name in the model "
            f"starting with {list(include) if include is not None else 'anything'}. The file's top-level names: "
            f"{shown}."
        )
    _check_finite({name: tensors[name] for name in copied}, path)
    with torch.no_grad():
        for name in copied:
            target[name].copy_(tensors[name])  # state_dict() tensors share storage with the model
    return copied
