"""What every importer shares: the import report, split and label files, label tasks."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse._io import atomic_write_json, atomic_write_text, json_fields
from mmfuse.errors import DataError
from mmfuse.types import LabelLevel, TaskType

__all__ = [
    "ID_COLUMNS",
    "LABEL_TASKS",
    "SPLIT_ALIASES",
    "ImportReport",
    "LabelRow",
    "SplitsLike",
    "encode_labels",
    "label_task",
    "read_label_table",
    "read_splits",
    "task_spec",
]

ID_COLUMNS: tuple[str, ...] = ("video", "video_id", "recording", "id")
"""Column names that name the video / recording in a labels or splits CSV, in order of preference."""

LABEL_TASKS: tuple[str, ...] = ("regression", "binary")
"""``regression``: the label value as it is; ``binary``: ``negative`` (< 0) / ``positive`` (>= 0)."""

SPLIT_ALIASES: dict[str, str] = {"valid": "val", "validation": "val", "dev": "val"}
"""Split names that are renamed on import (MMSA's ``valid`` is mmfuse's ``val``)."""

SplitsLike = Mapping[str, Sequence[str]] | str | os.PathLike[str]
"""Split name -> video ids, or a ``.json`` file holding that mapping, or a ``.csv`` file ``video,split``."""


def _nonempty(table: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The entries of ``table`` that list something, sorted by key (what a report shows of it)."""
    return {k: v for k, v in sorted(table.items()) if v}


@dataclass
class ImportReport:
    """What an import found: what was kept, what was masked, what was left out and why.

    Nothing is dropped silently: every recording that was not imported is listed in ``skipped`` under the
    reason, every recording kept with a modality masked for its whole length in ``missing``.

    Attributes:
        source: What was imported (a file or folder; several joined by ", ").
        format: ``"csd"``, ``"mmsa"`` or ``"feature-folders"``.
        samples: Number of samples written.
        modalities: The modalities of the data set (sorted).
        missing: Modality -> recordings kept with that modality absent (zeros, all-False mask).
        skipped: Reason -> recordings (or files) not imported.
        mismatched: Human-readable notes on names that look alike but do not match.
        warnings: Other things worth a look (sorted intervals, replaced values, fallbacks).

    Example:
        >>> r = ImportReport(source="x.csd", format="csd", samples=2, modalities=["audio"])
        >>> r.missing["audio"] = ["v3"]
        >>> r.ok, "v3" in r.to_markdown()
        (False, True)
    """

    source: str
    format: str
    samples: int = 0
    modalities: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    mismatched: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is missing, skipped or mismatched (warnings aside)."""
        return not (any(self.missing.values()) or any(self.skipped.values()) or self.mismatched)

    def skip(self, reason: str, names: Sequence[str]) -> None:
        """Record ``names`` as not imported because of ``reason`` (nothing happens for an empty list)."""
        if names:
            self.skipped.setdefault(reason, []).extend(names)

    def summary(self) -> str:
        """One line: samples, modalities and counts of missing / skipped / mismatched."""
        n_missing = sum(len(v) for v in self.missing.values())
        n_skipped = sum(len(v) for v in self.skipped.values())
        return (
            f"{self.format} import of {self.source}: {self.samples} samples, modalities {self.modalities}; "
            f"{n_missing} modality absences (kept, masked), {n_skipped} left out, {len(self.mismatched)} mismatched "
            f"name(s), {len(self.warnings)} warning(s)."
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field."""
        return json_fields(self, missing=_nonempty(self.missing), skipped=_nonempty(self.skipped), ok=self.ok)

    def to_markdown(self) -> str:
        """The report as a short Markdown page."""
        lines = [f"# Import report ({self.format})", "", self.summary(), ""]

        def listing(title: str, table: Mapping[str, list[str]], what: str) -> None:
            rows = _nonempty(table)
            if not rows:
                return
            lines.extend([f"## {title}", "", f"| {what} | count | names |", "| --- | ---: | --- |"])
            for key, names in rows.items():
                shown = ", ".join(names[:20]) + (" …" if len(names) > 20 else "")
                lines.append(f"| {key} | {len(names)} | {shown} |")
            lines.append("")

        listing("Missing modalities (kept, masked)", self.missing, "modality")
        listing("Left out", self.skipped, "reason")
        for title, items in (("Mismatched names", self.mismatched), ("Warnings", self.warnings)):
            if items:
                lines.extend([f"## {title}", "", *[f"- {x}" for x in items], ""])
        return "\n".join(lines)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``import_report.json`` and ``import_report.md`` into ``directory`` (atomically)."""
        atomic_write_json(Path(directory) / "import_report.json", self.to_dict())
        atomic_write_text(Path(directory) / "import_report.md", self.to_markdown())


def _split_name(name: str) -> str:
    return SPLIT_ALIASES.get(name, name)


def _read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = [c.strip() for c in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read this CSV file: {exc}") from None
    rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in rows]
    return columns, rows


def _id_column(columns: Sequence[str], path: Path) -> str:
    for c in ID_COLUMNS:
        if c in columns:
            return c
    raise DataError(f"{path}: no video id column; expected one of {list(ID_COLUMNS)}. Columns: {list(columns)}.")


def read_splits(splits: SplitsLike) -> dict[str, str]:
    """Video id -> split name, from a mapping, a JSON file or a CSV file.

    ``valid``, ``validation`` and ``dev`` are renamed ``val``.

    Args:
        splits: Split name -> list of video ids (e.g. the standard CMU-MOSI folds), or the path of a ``.json``
            file holding such a mapping, or of a ``.csv`` file with a video id column (``video``, ``video_id``,
            ``recording`` or ``id``) and a ``split`` column.

    Returns:
        Video id -> split name.

    Raises:
        DataError: an unreadable file, a missing column, a video listed in two splits, an empty split name.

    Example:
        >>> read_splits({"train": ["a", "b"], "valid": ["c"]})
        {'a': 'train', 'b': 'train', 'c': 'val'}
    """
    where = "splits"
    if isinstance(splits, (str, os.PathLike)):
        path = Path(splits)
        where = str(path)
        if not path.is_file():
            raise DataError(f"{path}: splits file not found.")
        if path.suffix.lower() == ".json":
            try:
                mapping = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"{path}: cannot read the splits JSON: {exc}") from None
            if not isinstance(mapping, dict) or not all(isinstance(v, list) for v in mapping.values()):
                raise DataError(f"{path}: expected an object mapping split name -> list of video ids.")
        elif path.suffix.lower() == ".csv":
            columns, rows = _read_csv_rows(path)
            vid = _id_column(columns, path)
            if "split" not in columns:
                raise DataError(f"{path}: no 'split' column. Columns: {columns}.")
            mapping = {}
            for r in rows:
                mapping.setdefault(r["split"], []).append(r[vid])
        else:
            raise DataError(f"{path}: a splits file must be .json or .csv. Got {path.suffix!r}.")
    elif isinstance(splits, Mapping):
        mapping = {str(k): list(v) for k, v in splits.items()}
    else:
        raise DataError(
            "The 'splits' parameter must be a mapping split -> video ids, or a .json / .csv file. "
            f"Got {type(splits).__name__} instead."
        )
    out: dict[str, str] = {}
    for split, vids in mapping.items():
        name = _split_name(str(split).strip())
        if not name:
            raise DataError(f"{where}: an empty split name.")
        for v in vids:
            v = str(v)
            if v in out and out[v] != name:
                raise DataError(f"{where}: video {v!r} is listed in two splits ({out[v]!r} and {name!r}).")
            out[v] = name
    return out


@dataclass
class LabelRow:
    """One row of a labels table: a video, an optional ``[start, end)`` segment, a value."""

    video: str
    value: float
    start: float | None = None
    end: float | None = None


def read_label_table(path: str | os.PathLike[str], *, column: str = "label") -> list[LabelRow]:
    """Read a labels CSV: a video id column, a numeric label column, optional ``start`` and ``end`` columns.

    Raises:
        DataError: naming the file and the row for a missing column, a non-numeric or non-finite label, or a
            segment whose end is before its start.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: labels file not found.")
    columns, rows = _read_csv_rows(p)
    vid = _id_column(columns, p)
    if column not in columns:
        raise DataError(f"{p}: no label column {column!r}. Columns: {columns}.")
    segments = "start" in columns and "end" in columns
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            value = float(r[column])
        except ValueError:
            raise DataError(f"{p}: line {i}: label {r[column]!r} is not a number.") from None
        if not math.isfinite(value):
            raise DataError(f"{p}: line {i}: label {r[column]!r} is not finite.")
        start = end = None
        if segments:
            try:
                start, end = float(r["start"]), float(r["end"])
            except ValueError:
                raise DataError(f"{p}: line {i}: start/end must be numbers (seconds).") from None
            if not (math.isfinite(start) and math.isfinite(end)) or end < start:
                raise DataError(f"{p}: line {i}: segment [{start}, {end}) must be finite with end >= start.")
        out.append(LabelRow(r[vid], value, start, end))
    return out


def label_task(task: str, owner: str) -> tuple[TaskType, tuple[str, ...]]:
    """The task type and class names of a label task name (see :data:`LABEL_TASKS`)."""
    if task not in LABEL_TASKS:
        raise ValueError(
            f"The 'task' parameter of {owner} must be one of {', '.join(map(repr, LABEL_TASKS))}. Got {task!r}."
        )
    if task == "binary":
        return TaskType.CLASSIFICATION, ("negative", "positive")
    return TaskType.REGRESSION, ()


def encode_labels(values: np.ndarray, task: str) -> np.ndarray:
    """``[N]`` float values -> float32 regression targets, or int64 classes (binary: ``value >= 0`` positive)."""
    if task == "binary":
        return (np.asarray(values) >= 0).astype(np.int64)
    return np.asarray(values, dtype=np.float32)


def task_spec(task: str, owner: str) -> Any:
    """The sample-level :class:`~mmfuse.data.TaskSpec` of a label task name."""
    from mmfuse.data import TaskSpec

    kind, classes = label_task(task, owner)
    return TaskSpec(kind, LabelLevel.SAMPLE, class_names=classes)
