"""Per-item predictions of a run, saved so that comparisons can be tested item by item.

``compare`` writes, for every fusion x seed, the best model's predictions on the validation and test splits into
``predictions/<split>/<fusion>-seed<k>.safetensors`` (through :class:`~mmfuse.evaluate.rundir.RunDir`): the arrays
``y_true``, ``y_pred`` and, for classification, ``probs``, with the item ids and the owning run in the file's
metadata. An item is a labelled sample, or a labelled step of a step-level data set (MOSI's utterances);
unlabelled steps (``IGNORE_INDEX``) are not items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from mmfuse._io import atomic_write
from mmfuse.errors import DataError

__all__ = ["PREDICTIONS_FORMAT", "RunPredictions", "read_predictions", "write_predictions"]

PREDICTIONS_FORMAT = "mmfuse-predictions/1"
"""The ``format`` entry of a predictions file's metadata."""


@dataclass(frozen=True)
class RunPredictions:
    """One run's per-item predictions on one split.

    Attributes:
        item_ids: ``[N]`` the id of each item: the sequence id, with ``@<step>`` for a step-level item.
        y_true: ``[N]`` class indices or ``[N]`` / ``[N, K]`` regression targets.
        y_pred: The predicted classes / values, in ``y_true``'s layout.
        probs: ``[N, C]`` class probabilities (classification), else None.

    Example:
        >>> p = RunPredictions(["a", "b"], np.array([0, 1]), np.array([0, 0]), None)
        >>> len(p), p.problem()
        (2, None)
        >>> RunPredictions(["a"], np.array([0, 1]), np.array([0, 0]), None).problem()
        "'y_true' has shape (2,), expected [1] or [1, K] for 1 item ids"
    """

    item_ids: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray | None

    def __len__(self) -> int:
        return len(self.item_ids)

    def problem(self) -> str | None:
        """What is inconsistent about the arrays (shapes, counts, ids), or None when they fit together."""
        n = len(self.item_ids)
        if self.y_true.ndim not in (1, 2) or self.y_true.shape[0] != n:
            return f"'y_true' has shape {self.y_true.shape}, expected [{n}] or [{n}, K] for {n} item ids"
        if self.y_pred.shape != self.y_true.shape:
            return f"'y_pred' has shape {self.y_pred.shape}, expected the shape of 'y_true' {self.y_true.shape}"
        if self.probs is not None and (self.probs.ndim != 2 or self.probs.shape[0] != n or self.probs.shape[1] < 2):
            return f"'probs' has shape {self.probs.shape}, expected [{n}, C] with C >= 2"
        if len(set(self.item_ids)) != n:
            return "the item ids are not unique"
        return None

    @classmethod
    def from_predictions(cls, predictions: Any) -> RunPredictions:
        """Build from :class:`mmfuse.train.Predictions` (one row per labelled sample or step).

        Raises:
            ValueError: when the predictions carry no targets.
        """
        if predictions.y_true is None:
            raise ValueError("Per-item predictions need targets, but the predictions carry none (y_true is None).")
        rows = predictions.row_ids
        if predictions.step_index is not None:
            rows = [f"{rid}@{int(step)}" for rid, step in zip(rows, predictions.step_index.tolist(), strict=True)]
        return cls(list(rows), np.asarray(predictions.y_true), np.asarray(predictions.y_pred), predictions.probs)


def write_predictions(path: str | Path, predictions: RunPredictions, *, fusion: str, seed: int, split: str) -> Path:
    """Write one run's predictions atomically as safetensors, the item ids and the run in the metadata.

    Raises:
        ValueError: when the arrays do not fit together (the problem is named).
    """
    problem = predictions.problem()
    if problem is not None:
        raise ValueError(f"The {split} predictions of {fusion} seed {seed} are inconsistent: {problem}.")
    arrays = {"y_true": np.ascontiguousarray(predictions.y_true), "y_pred": np.ascontiguousarray(predictions.y_pred)}
    if predictions.probs is not None:
        arrays["probs"] = np.ascontiguousarray(predictions.probs)
    meta = {
        "format": PREDICTIONS_FORMAT,
        "fusion": fusion,
        "seed": str(int(seed)),
        "split": split,
        "item_ids": json.dumps(predictions.item_ids),
    }
    return atomic_write(path, lambda tmp: save_file(arrays, str(tmp), metadata=meta))


def read_predictions(path: str | Path, *, fusion: str, seed: int, split: str) -> RunPredictions:
    """Read one run's predictions, checking that the file is this run's and that its arrays fit together.

    Raises:
        DataError: when the file is missing, not a safetensors file of mmfuse predictions, of another run or
            split, or its arrays do not fit together (the file and the problem are named).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"The run {fusion} seed {seed} has no saved {split} predictions '{path}'.")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            arrays = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"The predictions file '{path}' could not be read as safetensors: {exc}.") from exc
    if meta.get("format") != PREDICTIONS_FORMAT:
        raise DataError(
            f"The predictions file '{path}' is not mmfuse predictions: its metadata 'format' is "
            f"{meta.get('format')!r}, expected {PREDICTIONS_FORMAT!r}."
        )
    owner = (meta.get("fusion"), meta.get("seed"), meta.get("split"))
    if owner != (fusion, str(int(seed)), split):
        raise DataError(
            f"The predictions file '{path}' belongs to fusion {owner[0]!r} seed {owner[1]} split {owner[2]!r}, "
            f"not to {fusion!r} seed {seed} split {split!r}: the file was moved or edited."
        )
    try:
        ids = json.loads(meta.get("item_ids", ""))
    except json.JSONDecodeError as exc:
        raise DataError(f"The 'item_ids' metadata of the predictions file '{path}' is not JSON: {exc}.") from exc
    missing = [k for k in ("y_true", "y_pred") if k not in arrays]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or missing:
        raise DataError(
            f"The predictions file '{path}' must hold the arrays 'y_true' and 'y_pred' and a list of item ids. "
            f"Got the arrays {sorted(arrays)} and item ids of type {type(ids).__name__}."
        )
    found = RunPredictions(ids, arrays["y_true"], arrays["y_pred"], arrays.get("probs"))
    problem = found.problem()
    if problem is not None:
        raise DataError(f"The predictions file '{path}' is inconsistent: {problem}. Delete it to recompute it.")
    return found
