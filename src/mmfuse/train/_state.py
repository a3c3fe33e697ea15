"""Pickle-free persistence of nested state (optimiser and scheduler state dicts, RNG snapshots).

A nested structure of dicts, lists, tuples, scalars and tensors is split into

* a flat ``{name: Tensor}`` dict, stored with safetensors, and
* a JSON-safe skeleton in which every tensor is replaced by ``{"__tensor__": name}``,

and put back together exactly: tuples stay tuples, integer dict keys stay integers, ``inf``/``nan`` survive.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from mmfuse._io import atomic_write_bytes, atomic_write_text
from mmfuse.errors import DataError

__all__ = ["flatten_state", "read_json", "read_tensors", "unflatten_state", "write_json", "write_tensors"]

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_FLOAT = "__float__"
_DICT = "__dict__"
_RESERVED = frozenset({_TENSOR, _TUPLE, _FLOAT, _DICT})


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split ``obj`` into named tensors and a JSON-safe skeleton (see the module docstring).

    Example:
        >>> tensors, skeleton = flatten_state({"state": {0: {"step": torch.tensor(3.0)}}, "betas": (0.9, 0.99)})
        >>> sorted(tensors), skeleton["betas"]
        (['state.0.step'], {'__tuple__': [0.9, 0.99]})
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            if path in tensors:  # a key containing "." can collide with a nested path: keep both
                path = f"{path}#{len(tensors)}"
            tensors[path] = value.detach().cpu().contiguous().clone()
            return {_TENSOR: path}
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else {_FLOAT: repr(value)}
        if isinstance(value, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            plain = all(isinstance(k, str) for k in value) and not (_RESERVED & set(value))
            if plain:
                return {k: walk(v, f"{path}.{k}" if path else k) for k, v in value.items()}
            items = []
            for k, v in value.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise TypeError(f"flatten_state supports str and int dict keys only. Got key {k!r}.")
                items.append([k, walk(v, f"{path}.{k}" if path else str(k))])
            return {_DICT: items}
        raise TypeError(f"flatten_state cannot store a value of type {type(value).__name__} at {path or '<root>'!r}.")

    return tensors, walk(obj, prefix)


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Rebuild the structure that :func:`flatten_state` split.

    Raises:
        DataError: when the skeleton names a tensor that ``tensors`` lacks.

    Example:
        >>> state = {"a": (1, float("inf")), 2: [torch.ones(2)]}
        >>> back = unflatten_state(*flatten_state(state))
        >>> back["a"], back[2][0].tolist()
        ((1, inf), [1.0, 1.0])
    """

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        if _TENSOR in node:
            name = node[_TENSOR]
            if name not in tensors:
                raise DataError(f"The saved state names a tensor {name!r} that is missing from its tensor file.")
            return tensors[name]
        if _TUPLE in node:
            return tuple(walk(v) for v in node[_TUPLE])
        if _FLOAT in node:
            return float(node[_FLOAT])
        if _DICT in node:
            return {k: walk(v) for k, v in node[_DICT]}
        return {k: walk(v) for k, v in node.items()}

    return walk(skeleton)


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (moved to CPU, made contiguous) as a safetensors file, atomically."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write_bytes(path, safetensors_bytes(cpu, metadata=metadata))


def _existing_checkpoint_file(path: Path) -> Path:
    """Return ``path`` as a Path; a FileNotFoundError names it when it is not an existing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file {str(path)!r} does not exist.")
    return path


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file into CPU tensors and its metadata.

    Raises:
        FileNotFoundError: naming the file when it does not exist.
        DataError: naming the file when it is truncated or corrupt.
    """
    path = _existing_checkpoint_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types, and OSError on short reads
        raise DataError(f"Checkpoint file {str(path)!r} is corrupt or truncated: {err}") from err
    return tensors, metadata


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as strict JSON (no NaN literals), atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file.

    Raises:
        FileNotFoundError: naming the file when it does not exist.
        DataError: naming the file when it is not valid JSON.
    """
    path = _existing_checkpoint_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"Checkpoint file {str(path)!r} is corrupt (not valid JSON): {err}") from err
    except RecursionError:
        raise DataError(f"Checkpoint file {str(path)!r} is corrupt (JSON nested too deeply).") from None
