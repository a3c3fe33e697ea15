"""Reading stream files and turning a folder of recordings into an mmfuse data set.

Layout read by :func:`align_folder`::

    SRC_DIR/
      labels.csv              recording,label[,split][,group]   (with step labels: optional, recording[,split][,group])
      streams.json            optional: {"modality": {"kind": "embedding", "tolerance": 0.1, ...}}
      <recording>/<modality>.csv | .npz | .parquet
      <recording>/labels.csv | .npz | .parquet                   optional step labels (in every recording or none)
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.align.core import COINCIDENCE_ATOL, DEFAULT_CHUNK_SIZE, align, align_stream
from mmfuse.align.stream import COLLAPSE_RULES, DUPLICATE_POLICIES, Stream, StreamKind, check_choice
from mmfuse.align.timeline import Timeline
from mmfuse.align.validate import ValidationReport, validate_streams
from mmfuse.errors import DataError, MmfuseWarning, StreamError
from mmfuse.types import LabelLevel, TaskType

__all__ = ["LABEL_STEM", "SPLIT_NAMES", "STREAM_SUFFIXES", "TIME_COLUMNS", "align_folder", "read_stream_file"]

log = logging.getLogger(__name__)

STREAM_SUFFIXES: tuple[str, ...] = (".csv", ".npz", ".parquet")
"""File types :func:`align_folder` reads as streams."""

TIME_COLUMNS: tuple[str, ...] = ("timestamp", "time", "t")
"""Timestamp column names recognised in CSV/Parquet files, in order of preference."""

END_COLUMN = "end"
"""A CSV/Parquet column of this name makes the file an interval stream (its rows ``[time, end)``)."""

LABEL_STEM = "labels"
"""Reserved file name (without suffix) of a recording's step-label stream; never a modality."""

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
"""The split names a ``split`` column of ``labels.csv`` may hold."""

_LABEL_COLUMN = "label"
_START_COLUMN = "start"

_STREAM_KEYS = ("kind", "tolerance", "collapse", "time_column", "description", "average")


@dataclass
class _Raw:
    timestamps: np.ndarray  # [N] float64
    values: np.ndarray  # [N, D] float32
    ends: np.ndarray | None  # [N] float64
    columns: list[str]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _row_name(path: Path, index: int) -> str:
    """Row ``index`` (0-based) of a table file, named as a person finds it (the one rule for every message here).

    Data row 1 is the first row under the header, and a CSV's line number (the header is line 1) comes with it.
    An NPZ file has array elements, not rows.
    """
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return f"element {index} (0-based)"
    return f"data row {index + 1}" + (f" (line {index + 2})" if suffix == ".csv" else "")


def _numeric_column(table: Any, col: str, path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = table.column(col)
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)):
        if pa.types.is_null(arr.type) and len(arr) == 0:
            return np.zeros(0, dtype=np.float64)
        at = ""
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            bad = next((i for i, s in enumerate(arr.to_pylist()) if s is not None and not _is_number(s)), None)
            at = "" if bad is None else f"; {_row_name(path, bad)} holds {arr[bad].as_py()!r}"
        raise DataError(f"{path}: column {col!r} must be numeric. Got type {arr.type}{at}.")
    if arr.null_count:
        first = int(pc.index(pc.is_null(arr), True).as_py())
        raise DataError(
            f"{path}: column {col!r} has an empty or NaN/NA value at {_row_name(path, first)}; stream values must be "
            "finite numbers."
        )
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def _time_column(table: Any, col: str, path: Path) -> np.ndarray:
    """A timestamp column: numeric and not boolean (True/False are no times)."""
    import pyarrow as pa

    if pa.types.is_boolean(table.column(col).type):
        raise DataError(f"{path}: the time column {col!r} holds true/false values; timestamps must be numbers (s).")
    return _numeric_column(table, col, path)


def _not_utf8(path: Path, what: str, exc: UnicodeDecodeError) -> DataError:
    """The error for a text file (``what``: "the file", "the labels file") that is not UTF-8, naming the byte."""
    return DataError(
        f"{path}: {what} is not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at offset "
        f"{exc.start} cannot be decoded; latin-1 or another legacy encoding?). Save it as UTF-8."
    )


def _check_unique_columns(path: Path, names: Sequence[str], hint: str) -> None:
    """Refuse a table whose header names a column twice (``hint`` ends the message)."""
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise DataError(f"{path}: the column name(s) {repeated} appear more than once; {hint}.")


def _open_table(path: Path, *, string_columns: Sequence[str] = ()) -> Any:
    """Read a CSV or Parquet file into a pyarrow Table, or raise a DataError naming the file.

    ``string_columns`` are read as text from a CSV (so labels such as "01" keep their spelling).
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".csv":
            opts = pcsv.ConvertOptions(column_types={c: pa.string() for c in string_columns})
            table = pcsv.read_csv(path, convert_options=opts)
        else:
            table = pq.read_table(path)
        names = list(table.column_names)  # decodes the header: a non-UTF-8 one fails here
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, "the file", exc) from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot read this {path.suffix[1:].upper()} file (truncated or corrupt?): {exc}"
        ) from None
    _check_unique_columns(path, names, "every column needs its own name")
    return table


def _read_table(path: Path, time_column: str | None) -> _Raw:
    table = _open_table(path)
    cols = list(table.column_names)
    if time_column is not None:
        if time_column not in cols:
            raise DataError(f"{path}: no time column {time_column!r}. Columns: {cols}.")
        tcol = time_column
    else:
        found = [c for c in TIME_COLUMNS if c in cols]
        if not found:
            raise DataError(
                f"{path}: no timestamp column; expected one of {list(TIME_COLUMNS)} (or pass time_column). "
                f"Columns: {cols}."
            )
        tcol = found[0]
    feats = [c for c in cols if c not in (tcol, END_COLUMN)]
    if not feats:
        raise DataError(f"{path}: no feature columns besides {tcol!r}. Columns: {cols}.")
    t = _time_column(table, tcol, path)
    ends = _time_column(table, END_COLUMN, path) if END_COLUMN in cols else None
    values = np.empty((t.size, len(feats)), dtype=np.float32)
    for j, c in enumerate(feats):
        values[:, j] = _numeric_column(table, c, path)
    return _Raw(t, values, ends, feats)


def _read_npz(path: Path) -> _Raw:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if "timestamps" not in keys or "values" not in keys:
                raise DataError(
                    f"{path}: an NPZ stream needs arrays 'timestamps' and 'values' (optional 'ends'). Got {keys}."
                )
            arrays = {k: z[k] for k in ("timestamps", "values", "ends") if k in keys}
            for k, a in arrays.items():
                if a.dtype.kind not in "biuf" or (a.dtype.kind == "b" and k != "values"):
                    what = {"c": "complex numbers", "b": "true/false values"}.get(a.dtype.kind, f"dtype {a.dtype}")
                    raise DataError(
                        f"{path}: the array {k!r} holds {what}; a stream's {k} must be real numbers"
                        + (" (seconds)." if k != "values" else ".")
                    )
            t = np.asarray(arrays["timestamps"], dtype=np.float64)
            v = np.asarray(arrays["values"], dtype=np.float32)
            e = np.asarray(arrays["ends"], dtype=np.float64) if "ends" in arrays else None
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read this NPZ file (truncated or corrupt?): {exc}") from None
    if v.ndim == 1:
        v = v[:, None]  # [N] -> [N, 1]
    return _Raw(t, v, e, [f"f{j}" for j in range(v.shape[1] if v.ndim == 2 else 0)])


def _read_raw(path: Path, time_column: str | None = None) -> _Raw:
    if path.suffix.lower() not in STREAM_SUFFIXES:
        raise DataError(
            f"{path}: unsupported stream file type {path.suffix!r}; expected one of {list(STREAM_SUFFIXES)}."
        )
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            raise DataError(f"{path}: a symbolic link to a missing file ({os.readlink(path)}).")
        raise DataError(f"{path}: " + ("a folder, not a stream file." if path.is_dir() else "no such file."))
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes).")
    return _read_npz(path) if path.suffix.lower() == ".npz" else _read_table(path, time_column)


def _resolve_kind(raw: _Raw, kind: StreamKind | str | None, path: Path) -> StreamKind:
    if kind is None:
        return StreamKind.INTERVAL if raw.ends is not None else StreamKind.CONTINUOUS
    k = StreamKind.parse(kind, owner=f"file {path}")
    if k is StreamKind.INTERVAL and raw.ends is None:
        raise DataError(f"{path}: kind 'interval' needs an {END_COLUMN!r} column (NPZ: an 'ends' array).")
    if k is not StreamKind.INTERVAL and raw.ends is not None:
        raise DataError(f"{path}: has interval ends but its kind is {k.value!r}; declare it 'interval'.")
    return k


def read_stream_file(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    kind: StreamKind | str | None = None,
    time_column: str | None = None,
    duplicates: str = "error",
    tolerance: float | None = None,
) -> Stream:
    """Read one stream from a CSV, Parquet or NPZ file.

    CSV/Parquet: a timestamp column (``timestamp``, ``time`` or ``t``, or ``time_column``), every other column a
    feature, except an optional ``end`` column that makes it an interval stream. NPZ: arrays ``timestamps``,
    ``values`` and optional ``ends``.

    Args:
        path: The file.
        name: Stream name (default: the file name without its suffix).
        kind: Stream kind (default: interval when there are ends, else continuous).
        time_column: Name of the timestamp column (CSV/Parquet).
        duplicates: Duplicate-timestamp policy, see :meth:`Stream.create`.
        tolerance: Optional per-stream alignment tolerance (seconds).

    Raises:
        DataError: the file is missing, unreadable, truncated or corrupt, or lacks the needed columns/arrays
            (the message names the file).
        StreamError: the data is malformed (the message names the file, the problem and the place).

    Example:
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as d:
        ...     np.savez(f"{d}/imu.npz", timestamps=np.arange(3) / 10, values=np.ones((3, 2)))
        ...     s = read_stream_file(f"{d}/imu.npz")
        >>> s.name, s.values.shape
        ('imu', (3, 2))
    """
    p = Path(path)
    raw = _read_raw(p, time_column)
    k = _resolve_kind(raw, kind, p)
    try:
        return Stream.create(
            name or p.stem,
            raw.timestamps,
            raw.values,
            kind=k,
            ends=raw.ends,
            duplicates=duplicates,
            tolerance=tolerance,
        )
    except StreamError as exc:
        raise StreamError(f"{p}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------
# align_folder


@dataclass
class _Labels:
    """What ``SRC_DIR/labels.csv`` says: split and group per recording, and the sample labels when it has them."""

    split: dict[str, str]
    group: dict[str, str]
    rule: _LabelRule | None = None  # sample-level labels only
    label: dict[str, int | float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # how splits were filled in (also warned)


@dataclass
class _LabelRule:
    """The task that a set of label texts implies, and the class index of each text (classification)."""

    task_type: TaskType
    class_names: tuple[str, ...]
    codes: dict[str, int]

    def encode(self, text: str) -> int | float:
        return self.codes[text] if self.task_type is TaskType.CLASSIFICATION else float(text)


def _int_or_none(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None


def _float_or_none(s: str) -> float | None:
    try:
        x = float(s)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _label_rule(texts: Iterable[str], where: str) -> _LabelRule:
    """All integers -> classification over the sorted integers; all numbers -> regression; else sorted strings."""
    distinct = set(texts)
    ints = {s: _int_or_none(s) for s in distinct}
    if all(i is not None for i in ints.values()):
        classes = sorted({i for i in ints.values() if i is not None})
        index = {c: k for k, c in enumerate(classes)}
        rule = _LabelRule(
            TaskType.CLASSIFICATION,
            tuple(str(c) for c in classes),
            {s: index[i] for s, i in ints.items() if i is not None},
        )
    elif all(_float_or_none(s) is not None for s in distinct):
        rule = _LabelRule(TaskType.REGRESSION, (), {})
    else:
        names = tuple(sorted(distinct))
        rule = _LabelRule(TaskType.CLASSIFICATION, names, {s: k for k, s in enumerate(names)})
    if rule.task_type is TaskType.CLASSIFICATION and len(rule.class_names) < 2:
        raise DataError(f"{where}: classification needs at least two classes; every label is {rule.class_names[0]!r}.")
    return rule


def _assign_splits(groups: Sequence[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Deterministic group -> split: sorted groups, a seeded permutation, then train/val/test by fraction."""
    uniq = sorted(set(groups))
    n = len(uniq)
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_val = min(n_val, max(n - 1, 0))
    n_test = min(n_test, max(n - 1 - n_val, 0))
    names = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_val - n_test)
    return {uniq[int(i)]: names[k] for k, i in enumerate(order)}


def _read_labels(
    path: Path,
    recordings: Sequence[str],
    fractions: tuple[float, float, float],
    seed: int,
    *,
    step_level: bool = False,
    carve_val: bool = True,
) -> _Labels:
    """Read ``labels.csv``. With step labels (``step_level``) the file is optional and only its split/group count."""
    raw: dict[str, dict[str, str]] = {}
    if path.is_file() or not step_level:
        if not path.is_file():
            raise DataError(
                f"{path}: labels file not found; align_folder needs SRC_DIR/labels.csv (recording,label), or a "
                f"{LABEL_STEM}.csv|.npz|.parquet step-label file in every recording."
            )
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's BOM is not a column
                reader = csv.DictReader(fh)
                rows = list(reader)
                header = list(reader.fieldnames or [])
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, "the labels file", exc) from None
        except (OSError, csv.Error) as exc:
            raise DataError(f"{path}: cannot read the labels file: {exc}") from None
        _check_unique_columns(path, header, f"columns: {header}")
        for col in ("recording",) if step_level else ("recording", "label"):
            if col not in header:
                raise DataError(f"{path}: missing column {col!r}; columns: {header}.")
        if step_level and "label" in header:
            warnings.warn(
                f"{path}: the 'label' column is ignored: every recording has a {LABEL_STEM} file, so the labels are "
                "per step; this file only gives split and group.",
                MmfuseWarning,
                stacklevel=3,
            )
        for i, row in enumerate(rows):
            if None in row:
                raise DataError(
                    f"{path}: {_row_name(path, i)} has "
                    f"{len(header) + len(row[None])} cells but the header has {len(header)} columns {header}; "
                    f"extra cells {row[None]!r}."
                )
            rec = (row.get("recording") or "").strip()
            lab = (row.get("label") or "").strip()
            if not rec or (not lab and not step_level):
                raise DataError(f"{path}: {_row_name(path, i)} has an empty recording or label.")
            if rec in raw:
                raise DataError(f"{path}: recording {rec!r} is listed twice ({_row_name(path, i)}).")
            raw[rec] = {k: (v or "").strip() for k, v in row.items() if k is not None}
        missing = [r for r in recordings if r not in raw]
        if missing:
            what = "row" if step_level else "label"
            raise DataError(
                f"{path}: no {what} for recording(s) {missing[:10]}" + (" …" if len(missing) > 10 else "") + "."
            )
        extra = sorted(set(raw) - set(recordings))
        if extra:
            warnings.warn(
                f"{path}: labels for recordings with no folder are ignored: {extra[:10]}", MmfuseWarning, stacklevel=3
            )
    labels = _Labels(split={}, group={})
    if not step_level:
        texts = [raw[r]["label"] for r in recordings]
        for r, text in zip(recordings, texts, strict=True):
            if _is_number(text) and _float_or_none(text) is None:
                raise DataError(
                    f"{path}: the label {text!r} of recording {r!r} is not a finite number; a label is a string or a "
                    "finite number (leave a recording without a label out of the folder)."
                )
        labels.rule = _label_rule(texts, str(path))
        labels.label = {r: labels.rule.encode(s) for r, s in zip(recordings, texts, strict=True)}
    labels.group = {r: raw.get(r, {}).get("group") or r for r in recordings}
    labels.split = {r: raw.get(r, {}).get("split", "") for r in recordings}
    unknown = {r: sp for r, sp in labels.split.items() if sp and sp not in SPLIT_NAMES}
    if unknown:
        r, sp = next(iter(unknown.items()))
        raise DataError(
            f"{path}: recording {r!r} has the split {sp!r}"
            + (f" ({len(unknown)} such rows)" if len(unknown) > 1 else "")
            + f"; valid splits: {list(SPLIT_NAMES)}, or an empty cell to have one assigned."
        )
    todo = [r for r in recordings if not labels.split[r]]
    if todo:
        by_group = _assign_splits([labels.group[r] for r in todo], fractions, seed)
        for r in todo:
            labels.split[r] = by_group[labels.group[r]]
    given = len(todo) < len(recordings)  # the file has a split column with some cells filled
    if todo and given:
        counts = {k: sum(labels.split[r] == k for r in todo) for k in ("train", "val", "test")}
        labels.notes.append(
            f"{len(todo)} recording(s) have an empty 'split' cell {todo[:5]}"
            + (" …" if len(todo) > 5 else "")
            + f"; they were assigned by group ({len({labels.group[r] for r in todo})} group(s)): "
            + ", ".join(f"{n} {k}" for k, n in counts.items())
            + ". Fill the cells to choose."
        )
    if not any(labels.split[r] == "val" for r in recordings):
        if given and carve_val:
            labels.notes.append(_carve_val(labels, fractions, seed))
        else:
            labels.notes.append(
                "no recording is in the 'val' split; training runs without validation (early stopping and tuning "
                "need one)" + ("." if given else f" ({len(set(labels.group.values()))} group(s) to split).")
            )
    if not any(labels.split[r] == "test" for r in recordings):
        labels.notes.append("no recording is in the 'test' split; a comparison has nothing to test on.")
    for note in labels.notes:
        warnings.warn(f"{path}: {note}", MmfuseWarning, stacklevel=3)
    return labels


def _carve_val(labels: _Labels, fractions: tuple[float, float, float], seed: int) -> str:
    """Move a seeded share of the all-train groups to ``val`` (as the built-in data sets do); say what happened.

    The share is ``val / (train + val)`` of ``fractions``, at least one group and never every group.
    """
    split_of_group: dict[str, set[str]] = {}
    for r, g in labels.group.items():
        split_of_group.setdefault(g, set()).add(labels.split[r])
    train_groups = sorted(g for g, splits in split_of_group.items() if splits == {"train"})
    if len(train_groups) < 2:
        return (
            f"no recording is in the 'val' split and the train split has {len(train_groups)} group(s) that could be "
            "moved there; training runs without validation (early stopping and tuning need a 'val' split)."
        )
    share = fractions[1] / (fractions[0] + fractions[1]) if fractions[0] + fractions[1] > 0 else 0.0
    n = min(max(round(share * len(train_groups)), 1), len(train_groups) - 1)
    order = np.random.default_rng(seed).permutation(len(train_groups))
    moved = {train_groups[int(i)] for i in order[:n]}
    recs = [r for r, g in labels.group.items() if g in moved]
    for r in recs:
        labels.split[r] = "val"
    return (
        f"the 'split' column names no 'val' recording; {n} of the {len(train_groups)} train group(s) "
        f"({len(recs)} recording(s)) were moved to 'val' (seed {seed}). Name 'val' rows to choose, or pass "
        "carve_val=False (--no-carve-val) to keep them in train."
    )


# --- step labels: SRC_DIR/<recording>/labels.csv|.npz|.parquet


@dataclass
class _StepLabels:
    """One recording's label stream as read: times (interval starts), optional ends, and the label texts."""

    path: Path
    starts: np.ndarray  # [N] float64
    ends: np.ndarray | None  # [N] float64
    texts: list[str]


def _label_texts(values: Sequence[Any], path: Path) -> list[str]:
    """Each label as text (ints as written, floats by ``repr``); an empty, bool or non-finite label is refused."""
    texts = []
    for i, v in enumerate(values):
        where = f"{path}: {_row_name(path, i)}"
        if isinstance(v, (bool, np.bool_)) or not (v is None or isinstance(v, (str, int, float, np.number))):
            raise DataError(f"{where}: the label {v!r} must be a string or a number.")
        if isinstance(v, (float, np.floating)):
            if not math.isfinite(v):
                raise DataError(f"{where}: the label is {v!r}; a label must be a string or a finite number.")
            text = repr(float(v))
        else:
            text = "" if v is None else str(v).strip()
        if not text:
            raise DataError(f"{where}: the label is empty; leave unlabelled time out of the label file instead.")
        if _float_or_none(text) is None and _is_number(text):
            raise DataError(f"{where}: the label is {text!r}; a label must be a string or a finite number.")
        texts.append(text)
    return texts


def _read_step_label_npz(path: Path) -> _StepLabels:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read this NPZ file (truncated or corrupt?): {exc}") from None
    time_key = "timestamps" if "timestamps" in arrays else "starts"
    if "labels" not in arrays or time_key not in arrays or (time_key == "starts" and "ends" not in arrays):
        raise DataError(
            f"{path}: an NPZ label file needs arrays 'labels' and 'timestamps' (point labels) or 'starts' and 'ends' "
            f"(interval labels). Got {sorted(arrays)}."
        )
    lab = arrays["labels"]
    for key in (time_key, "ends"):
        if key in arrays and arrays[key].dtype.kind not in "iuf":
            raise DataError(f"{path}: the array {key!r} has dtype {arrays[key].dtype}; times must be real numbers (s).")
    try:
        starts = np.asarray(arrays[time_key], dtype=np.float64)
        ends = np.asarray(arrays["ends"], dtype=np.float64) if "ends" in arrays else None
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: the times must be numeric: {exc}") from None
    shapes = {"labels": lab.shape, time_key: starts.shape} | ({} if ends is None else {"ends": ends.shape})
    if any(len(shape) != 1 or shape != lab.shape for shape in shapes.values()):
        raise DataError(f"{path}: the arrays must be 1-D and of one length. Got shapes {shapes}.")
    return _StepLabels(path, starts, ends, _label_texts(lab.tolist(), path))


def _read_step_labels(path: Path, time_column: str | None) -> _StepLabels:
    """Read a step-label file: CSV/Parquet ``time|start[,end],label`` or NPZ ``timestamps|starts[,ends],labels``."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes).")
    if path.suffix.lower() == ".npz":
        out = _read_step_label_npz(path)
    else:
        table = _open_table(path, string_columns=(_LABEL_COLUMN,))
        cols = list(table.column_names)
        names = ([time_column] if time_column else []) + [*TIME_COLUMNS, _START_COLUMN]
        tcol = next((c for c in names if c in cols), None)
        if tcol is None or _LABEL_COLUMN not in cols:
            raise DataError(
                f"{path}: a label file needs a {_LABEL_COLUMN!r} column and a time column ({list(TIME_COLUMNS)}: point "
                f"labels) or {_START_COLUMN!r} and {END_COLUMN!r} columns (interval labels). Columns: {cols}."
            )
        if tcol == _START_COLUMN and END_COLUMN not in cols:
            raise DataError(f"{path}: the {_START_COLUMN!r} column needs an {END_COLUMN!r} column (interval labels).")
        starts = _time_column(table, tcol, path)
        ends = _time_column(table, END_COLUMN, path) if END_COLUMN in cols else None
        values = table.column(_LABEL_COLUMN).to_pylist()
        out = _StepLabels(path, starts, ends, _label_texts(values, path))
    if not out.texts:
        raise DataError(f"{path}: the label file has no rows.")
    return out


def _align_step_labels(
    raw: _StepLabels,
    rule: _LabelRule,
    timeline: Timeline,
    *,
    tolerance: float | None,
    duplicates: str,
    chunk_size: int,
) -> np.ndarray:
    """Put one recording's labels onto its timeline with :func:`align_stream`.

    Classification labels travel as one-hot rows (a discrete stream, or an interval stream for segments), so a
    step gets a held label, the first label inside it, or the class with the largest covering share (the
    argmax of the overlap-weighted one-hot mean; ties go to the lower class index), never a mean of codes.
    Regression labels are a continuous (interpolated) or interval stream.

    Returns:
        ``[T]`` int64 class indices with ``IGNORE_INDEX`` (-100) at unlabelled steps, or ``[T]`` float32 targets
        with NaN there.
    """
    from mmfuse.data import IGNORE_INDEX

    classification = rule.task_type is TaskType.CLASSIFICATION
    interval = raw.ends is not None
    if classification:
        codes = np.fromiter((rule.codes[s] for s in raw.texts), dtype=np.int64, count=len(raw.texts))
        values = np.zeros((codes.size, len(rule.class_names)), dtype=np.float32)  # [N, C] one-hot
        values[np.arange(codes.size), codes] = 1.0
        kind = StreamKind.INTERVAL if interval else StreamKind.DISCRETE
    else:
        values = np.array([float(s) for s in raw.texts], dtype=np.float32)[:, None]  # [N, 1]
        kind = StreamKind.INTERVAL if interval else StreamKind.CONTINUOUS
    try:
        stream = Stream.create(
            LABEL_STEM, raw.starts, values, kind, raw.ends, duplicates=duplicates, tolerance=tolerance
        )
    except StreamError as exc:
        raise StreamError(f"{raw.path}: {exc}") from None
    collapse = "first" if kind is StreamKind.DISCRETE else "mean"
    aligned = align_stream(stream, timeline, collapse=collapse, chunk_size=chunk_size)
    labelled = aligned.mask
    if kind is StreamKind.DISCRETE:
        # Hold a label no longer than the tolerance after it. (The discrete rule alone also counts a step as
        # present when the *next* label is within the tolerance.) Interval steps with samples inside them keep
        # the first; an empty one uses its midpoint, which is (b - a) / 2 before the end where staleness is taken.
        stale = aligned.staleness
        if timeline.ends is not None:
            stale = np.where(aligned.interpolated, stale - 0.5 * (timeline.ends - timeline.times), 0.0)
        labelled = labelled & (stale <= aligned.tolerance + COINCIDENCE_ATOL)
    if classification:
        out = np.full(len(timeline), IGNORE_INDEX, dtype=np.int64)
        out[labelled] = np.argmax(aligned.values[labelled], axis=1)
        return out
    target = np.full(len(timeline), np.nan, dtype=np.float32)
    target[labelled] = aligned.values[labelled, 0]
    return target


def _read_stream_config(src: Path) -> dict[str, dict[str, Any]]:
    path = src / "streams.json"
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text(encoding="utf-8-sig"))
    except RecursionError:
        raise DataError(f"{path}: cannot read the stream config: its JSON is nested too deeply.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read the stream config: {exc}") from None
    if not isinstance(cfg, dict) or not all(isinstance(v, dict) for v in cfg.values()):
        raise DataError(f"{path}: expected an object mapping modality -> {{'kind': ...}}.")
    for mod, entry in cfg.items():
        bad = sorted(set(entry) - set(_STREAM_KEYS))
        if bad:
            raise DataError(f"{path}: modality {mod!r} has unknown keys {bad}; valid keys: {list(_STREAM_KEYS)}.")
        if "kind" in entry:
            try:
                StreamKind.parse(entry["kind"], owner=f"{path} modality {mod!r}")
            except StreamError as exc:
                raise DataError(str(exc)) from None
        if "collapse" in entry:
            check_choice(entry["collapse"], COLLAPSE_RULES, parameter="collapse", owner=f"{path} modality {mod!r}")
        if "average" in entry and not isinstance(entry["average"], bool):
            raise DataError(f"{path}: modality {mod!r}: 'average' must be true or false. Got {entry['average']!r}.")
    return cfg


def _averaged(
    average: bool | Sequence[str] | None, cfg: Mapping[str, Mapping[str, Any]], modalities: Sequence[str], src: Path
) -> dict[str, bool]:
    """Modality -> whether it is averaged into its steps: the ``average`` argument, else ``streams.json``."""
    if average is None:
        return {m: bool(cfg.get(m, {}).get("average", False)) for m in modalities}
    if isinstance(average, bool):
        return {m: average for m in modalities}
    names = [average] if isinstance(average, str) else list(average)
    unknown = sorted(set(names) - set(modalities))
    if unknown:
        raise ValueError(
            f"The 'average' parameter of align_folder names unknown modalities {unknown}; modalities of {src}: "
            f"{list(modalities)}."
        )
    return {m: m in names for m in modalities}


def _boundary_only_steps(streams: Mapping[str, Stream], aligned: Mapping[str, Any], tl: Timeline) -> np.ndarray:
    """Times of the steps that no modality covers and that lie exactly on the end of some interval row.

    Interval rows cover ``[start, end)``, so such a step is masked everywhere although a row touches it: the
    sign of interval ends placed on grid points (a one-step hole between rows, or a step after the data).
    """
    ends = [s.ends for s in streams.values() if s.ends is not None]
    if not aligned or not ends or tl.ends is not None:
        return np.empty(0)
    present = np.zeros(len(tl), dtype=bool)
    for result in aligned.values():
        present |= np.asarray(result.mask, dtype=bool)
    x = tl.times[~present]  # [K] steps no modality covers
    if not x.size:
        return x
    all_ends = np.unique(np.concatenate(ends))  # [E] sorted
    right = np.clip(np.searchsorted(all_ends, x), 0, all_ends.size - 1)  # [K] nearest end at or after x
    left = np.clip(right - 1, 0, all_ends.size - 1)  # [K] nearest end before x
    nearest = np.minimum(np.abs(all_ends[left] - x), np.abs(all_ends[right] - x))  # [K]
    return x[nearest <= COINCIDENCE_ATOL * np.maximum(1.0, np.abs(x))]


def _discover(src: Path) -> tuple[dict[str, dict[str, Path]], dict[str, Path]]:
    """Recording -> modality -> file, and recording -> its step-label file (for those that have one)."""
    recordings: dict[str, dict[str, Path]] = {}
    label_files: dict[str, Path] = {}
    for d in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files: dict[str, Path] = {}
        for f in sorted(d.iterdir()):
            if f.name.startswith("."):  # hidden files (editor backups, OS metadata) are not streams
                continue
            if f.suffix.lower() in STREAM_SUFFIXES and not f.is_file():
                what = "a symbolic link to a missing file" if f.is_symlink() and not f.exists() else "not a file"
                raise DataError(f"{f}: this stream file is {what}; fix or remove it.")
            if f.is_file() and f.suffix.lower() in STREAM_SUFFIXES:
                if f.stem == LABEL_STEM:
                    if d.name in label_files:
                        raise DataError(
                            f"{d}: the step labels are given twice ({label_files[d.name].name} and {f.name})."
                        )
                    label_files[d.name] = f
                    continue
                if f.stem in files:
                    raise DataError(f"{d}: modality {f.stem!r} is given twice ({files[f.stem].name} and {f.name}).")
                files[f.stem] = f
        recordings[d.name] = files
    if not recordings:
        raise DataError(
            f"{src}: no recording folders found (expected SRC_DIR/<recording>/<modality>.csv|.npz|.parquet)."
        )
    return recordings, label_files


def align_folder(
    src_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    rate: float | None = None,
    reference: str | None = None,
    tolerance: float | Mapping[str, float] | None = None,
    gap_threshold: float = 1.0,
    collapse: str | Mapping[str, str] = "mean",
    duplicates: str = "error",
    time_column: str | None = None,
    name: str | None = None,
    description: str = "",
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    label_tolerance: float | None = None,
    average: bool | Sequence[str] | None = None,
    carve_val: bool = True,
    overwrite: bool = False,
) -> tuple[Path, ValidationReport]:
    r"""Align a folder of per-recording stream files and write it as an mmfuse data set.

    Every recording becomes one sample. Its reference timeline is a grid at ``rate`` Hz from the earliest to
    the latest sample of any of its streams, or the timestamps (rows, for an interval stream) of the modality
    named by ``reference``. On a grid, a modality is read at each grid point (interpolated, held or the
    covering row; see :func:`mmfuse.align.align`), or, when it is averaged (``average``, or ``"average": true``
    in ``streams.json``), every sample in the step's window ``[x - h/2, x + h/2)`` (``h = 1/rate``) is
    collapsed (``collapse``, the mean by default; an empty window falls back to the grid point): use it for
    streams denser than the grid, which point sampling would thin out (100 Hz frames on a 10 Hz grid: one in
    ten). Step timestamps stay the grid points either way. A modality a recording lacks is written as zeros
    with an all-False mask. Stream kinds come from ``SRC_DIR/streams.json`` (``{"mod": {"kind": ...,
    "tolerance": ..., "collapse": ..., "time_column": ..., "average": ...}}``), else continuous (interval when
    the file has ends).

    Labels come from ``SRC_DIR/labels.csv`` (``recording,label[,split][,group]``): if every label is an integer
    the task is classification with the sorted integers as class names; otherwise, if every label is a
    number, regression; otherwise classification with the sorted distinct strings as class names. A missing
    group is the recording name; a missing split is assigned per group (seeded permutation of the sorted
    groups, ``split_fractions`` for train/val/test, at least one group each when there are three or more).
    When the file has a ``split`` column, empty cells in it are assigned that way with a warning, and if no
    recording ends up in ``val``, a seeded share ``val / (train + val)`` of the groups that are wholly in
    ``train`` is moved to ``val`` (``carve_val``; at least one group, never all), with a warning. A data set
    left without a ``val`` or ``test`` split is warned about too. What was done is recorded in ``meta.json``
    (``extra_meta.align.split_notes``).

    Step labels: when every recording holds a label file ``labels.csv|.parquet`` (``time,label`` point labels or
    ``start,end,label`` segments) or ``labels.npz`` (``timestamps`` or ``starts``/``ends``, and ``labels``), the
    data set is step-level and ``SRC_DIR/labels.csv`` is optional (only its split and group columns are read).
    The task follows the same rule over all labels of all recordings. Each recording's labels are aligned onto
    its timeline: point labels are held (class labels) or interpolated (regression) within the tolerance
    (``label_tolerance``, default the label stream's median interval) and never past the last one; segments
    label the steps they cover (interval steps: the class with the largest overlap, or the overlap-weighted
    mean for regression). Unlabelled steps get ``IGNORE_INDEX`` (-100; classification) or NaN (regression),
    which losses and metrics skip.

    ``validation.json`` and ``validation.md`` (a :class:`ValidationReport` over all recordings, with the share
    of labelled steps per recording when the labels are per step) are written into the data set folder.

    Args:
        src_dir: The source folder.
        out: Where to write the data set (a folder).
        rate: Grid rate in Hz; give exactly one of ``rate`` and ``reference``.
        reference: Name of the modality whose timestamps are the reference timeline.
        tolerance: Alignment tolerance in seconds, global or per modality (see :func:`mmfuse.align.align`).
        gap_threshold: Gaps longer than this are listed in the report.
        collapse: Reduction of several rows into one step, global or per modality.
        duplicates: Duplicate-timestamp policy for every file (see :meth:`Stream.create`).
        time_column: Timestamp column name for CSV/Parquet files (default: ``timestamp``, ``time`` or ``t``).
        name: Data set name (default: the source folder's name).
        description: Free text stored with the data set.
        split_fractions: Train/val/test fractions for recordings without a split.
        seed: Seed of the split assignment.
        chunk_size: Alignment chunk size.
        label_tolerance: Alignment tolerance (seconds) of the step labels (default: their median interval for
            point labels, 0 for segments).
        average: Average each step's window instead of reading the grid point: True (every modality), False
            (none), or the modality names; None follows ``streams.json`` (default: no averaging). Needs ``rate``.
        carve_val: Move train groups to ``val`` when the ``split`` column names no ``val`` recording.
        overwrite: Replace an existing data set at ``out``.

    Returns:
        ``(path of the data set, validation report)``.

    Raises:
        ValueError: neither or both of ``rate`` and ``reference``.
        DataError: no recordings, missing labels file or labels, unreadable/truncated/corrupt files (named),
            feature sizes differing across recordings (both named), an unknown reference modality, a recording
            without the reference modality, step-label files in some recordings only (those without are named),
            a bad row in a label file (file and row named), a recording with no labelled step.
        StreamError: malformed stream data (the file is named).

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for i, rec in enumerate(["a", "b"]):
        ...         Path(d, "src", rec).mkdir(parents=True)
        ...         np.savez(Path(d, "src", rec, "imu.npz"), timestamps=np.arange(5) / 10, values=np.ones((5, 2)))
        ...     _ = Path(d, "src", "labels.csv").write_text("recording,label\na,walk\nb,run\n")
        ...     path, report = align_folder(Path(d, "src"), Path(d, "ds"), rate=10.0)
        ...     sorted(p.name for p in path.iterdir() if p.name.startswith("validation"))
        ['validation.json', 'validation.md']
    """
    if rate is not None and reference is not None:
        raise ValueError(
            "align_folder needs exactly one of 'rate' (grid in Hz) and 'reference' (a modality name). "
            f"Got rate={rate!r}, reference={reference!r}."
        )
    if rate is not None and (not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0):
        raise ValueError(f"The 'rate' parameter of align_folder must be a positive number (Hz). Got {rate!r}.")
    check_choice(duplicates, DUPLICATE_POLICIES, parameter="duplicates", owner="align_folder")
    if label_tolerance is not None and (
        isinstance(label_tolerance, bool) or not isinstance(label_tolerance, (int, float)) or not label_tolerance >= 0
    ):
        raise ValueError(
            f"The 'label_tolerance' parameter of align_folder must be a number >= 0 (seconds). Got {label_tolerance!r}."
        )
    src = Path(src_dir)
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found.")
    from mmfuse.data.format import recover_interrupted_write

    out_abs, src_abs = Path(out).resolve(), src.resolve()
    if out_abs == src_abs or src_abs in out_abs.parents:
        raise DataError(
            f"{out}: the data set cannot be written inside the source folder {src} (it would be read as a recording "
            "by the next run); choose an --out outside it."
        )
    recover_interrupted_write(out)  # a killed earlier run's leftovers go (or are named) before the long first pass
    cfg = _read_stream_config(src)
    recordings, label_files = _discover(src)
    rec_names = list(recordings)
    step_level = bool(label_files)
    if step_level and len(label_files) < len(rec_names):
        without = [r for r in rec_names if r not in label_files]
        raise DataError(
            f"{src}: {len(label_files)} of {len(rec_names)} recordings have a step-label file "
            f"({LABEL_STEM}.csv|.npz|.parquet) but these do not: {without[:10]}"
            + (" …" if len(without) > 10 else "")
            + ". Give every recording one (step-level labels) or none (sample-level labels from labels.csv)."
        )
    labels = _read_labels(
        src / "labels.csv", rec_names, split_fractions, seed, step_level=step_level, carve_val=carve_val
    )
    step_raw: dict[str, _StepLabels] = {}
    if step_level:
        step_raw = {r: _read_step_labels(label_files[r], time_column) for r in rec_names}
        labels.rule = _label_rule((t for raw in step_raw.values() for t in raw.texts), f"{src} (step labels)")
    rule = labels.rule
    assert rule is not None

    def step_labels(rec: str, tl: Timeline) -> np.ndarray:
        return _align_step_labels(
            step_raw[rec], rule, tl, tolerance=label_tolerance, duplicates=duplicates, chunk_size=chunk_size
        )

    modalities = sorted({m for files in recordings.values() for m in files})
    if reference is not None and reference not in modalities:
        raise DataError(f"{src}: unknown reference modality {reference!r}; modalities found: {modalities}.")
    unused = sorted(set(cfg) - set(modalities))
    if unused:
        warnings.warn(
            f"{src / 'streams.json'} configures modalities with no files: {unused}", MmfuseWarning, stacklevel=2
        )
    avg_of = _averaged(average, cfg, modalities, src)
    if any(avg_of.values()) and rate is None:
        raise ValueError(
            "align_folder can average modalities into steps only on a grid: give 'rate' (--rate) instead of "
            f"'reference', or drop 'average'. Averaged: {sorted(m for m, a in avg_of.items() if a)}."
        )
    tol_of = {m: (tolerance.get(m) if isinstance(tolerance, Mapping) else tolerance) for m in modalities}
    for m in modalities:
        if tol_of[m] is None and "tolerance" in cfg.get(m, {}):
            tol_of[m] = float(cfg[m]["tolerance"])
    rule_of = {m: (collapse.get(m, "mean") if isinstance(collapse, Mapping) else collapse) for m in modalities}
    for m in modalities:
        if "collapse" in cfg.get(m, {}) and not (isinstance(collapse, Mapping) and m in collapse):
            rule_of[m] = cfg[m]["collapse"]

    def load(rec: str) -> tuple[dict[str, Stream], dict[str, _Raw]]:
        streams: dict[str, Stream] = {}
        raws: dict[str, _Raw] = {}
        for m, path in recordings[rec].items():
            conf = cfg.get(m, {})
            raw = _read_raw(path, conf.get("time_column", time_column))
            kind = _resolve_kind(raw, conf.get("kind"), path)
            raws[m] = raw
            try:
                streams[m] = Stream.create(m, raw.timestamps, raw.values, kind, raw.ends, duplicates=duplicates)
            except StreamError as exc:
                raise StreamError(f"{path}: {exc}") from None
        return streams, raws

    if rate is None and reference is None:
        first, _ = load(rec_names[0])
        found = ", ".join(
            f"{m} ~{1.0 / s.median_interval:.4g} Hz" for m, s in sorted(first.items()) if s.median_interval > 0
        )
        raise ValueError(
            "align_folder needs a reference timeline: give 'rate' (a grid in Hz, --rate) or 'reference' (a "
            f"modality whose timestamps are the timeline, --reference). Recording {rec_names[0]!r} has: {found}."
        )

    def label_timeline(tl: Timeline) -> Timeline:
        """Step labels are aligned onto the windows when every modality is averaged, else onto the points."""
        windows = windows_of(tl)
        return windows if windows is not None and all(avg_of.values()) else tl

    def windows_of(tl: Timeline) -> Timeline | None:
        """The grid's steps as windows, when some modality is averaged."""
        if not any(avg_of.values()) or rate is None:
            return None
        return Timeline.windows(float(rate), tl.start, tl.end)

    def aligned_streams(streams: Mapping[str, Stream], tl: Timeline) -> dict[str, Any]:
        """Point-read modalities on ``tl``, averaged ones on its windows."""
        out: dict[str, Any] = {}
        windows = windows_of(tl)
        for group, target in ((False, tl), (True, windows)):
            part = {m: s for m, s in streams.items() if avg_of[m] is group}
            if part and target is not None:
                out.update(
                    align(
                        part,
                        target,
                        tolerance={m: t for m, t in tol_of.items() if m in part and t is not None},
                        collapse={m: r for m, r in rule_of.items() if m in part},
                        chunk_size=chunk_size,
                    ).streams
                )
        return out

    def timeline_of(rec: str, streams: Mapping[str, Stream]) -> Timeline:
        if reference is not None:
            if reference not in streams:
                raise DataError(f"{src / rec}: recording {rec!r} has no reference modality {reference!r}.")
            return Timeline.from_stream(streams[reference])
        if not streams:
            raise DataError(f"{src / rec}: recording {rec!r} has no stream files.")
        start = min(s.start for s in streams.values())
        # Interval rows cover [start, end): a grid point exactly on the last end would be covered by nothing.
        point_end = max((s.end for s in streams.values() if s.ends is None), default=-math.inf)
        interval_end = max((s.end for s in streams.values() if s.ends is not None), default=-math.inf)
        assert rate is not None
        try:
            if interval_end > point_end:
                return Timeline.grid(float(rate), start, interval_end, include_end=False)
            return Timeline.grid(float(rate), start, point_end)
        except StreamError as exc:
            raise DataError(f"{src / rec}: recording {rec!r}: {exc}") from None

    # Pass 1: read and check everything (nothing is written if a file is broken), fix dims and kinds.
    dims: dict[str, tuple[int, str]] = {}
    kinds: dict[str, tuple[StreamKind, str]] = {}
    reports = []
    for rec in rec_names:
        streams, raws = load(rec)
        for m, s in streams.items():
            if m in dims and dims[m][0] != s.dim:
                raise DataError(
                    f"Modality {m!r} has {dims[m][0]} features in recording {dims[m][1]!r} but {s.dim} in recording "
                    f"{rec!r} ({recordings[rec][m]})."
                )
            if m in kinds and kinds[m][0] is not s.kind:
                raise DataError(
                    f"Modality {m!r} is {kinds[m][0].value!r} in recording {kinds[m][1]!r} but {s.kind.value!r} in "
                    f"recording {rec!r}; declare its kind in streams.json."
                )
            dims.setdefault(m, (s.dim, rec))
            kinds.setdefault(m, (s.kind, rec))
        tl = timeline_of(rec, streams)
        windows = windows_of(tl)
        if windows is not None and all(avg_of.values()):
            tl = windows  # validation and step labels see the steps as they are aligned
        raw_map: dict[str, Any] = {
            m: ((raws[m].timestamps, raws[m].values, streams[m].kind, raws[m].ends) if m in raws else None)
            for m in modalities
        }
        rep = validate_streams(raw_map, tl, gap_threshold=gap_threshold, tolerance=tol_of, recording=rec)
        if step_level:
            target = step_labels(rec, tl)
            n_labelled = int(
                np.count_nonzero(target >= 0 if rule.task_type is TaskType.CLASSIFICATION else ~np.isnan(target))
            )
            if n_labelled == 0:
                raw = step_raw[rec]
                last = raw.ends.max() if raw.ends is not None else raw.starts.max()
                raise DataError(
                    f"{raw.path}: recording {rec!r} has no labelled step: none of its {len(tl)} steps "
                    f"({tl.start:.6g}–{tl.end:.6g} s) is covered by a label (labels span {raw.starts.min():.6g}–"
                    f"{last:.6g} s)."
                )
            rep.label_coverage[rec] = {"steps": len(tl), "labelled": n_labelled, "coverage": n_labelled / len(tl)}
        reports.append(rep)
    report = ValidationReport.merge(reports)
    report.gap_threshold = float(gap_threshold)
    if report.warnings:
        log.warning("align_folder: %d validation warning(s); see validation.md", len(report.warnings))

    from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset

    boundary_only: dict[str, list[float]] = {}  # recording -> steps covered by nothing but an interval's end

    def records() -> Iterator[SequenceRecord]:
        for rec in rec_names:
            streams, _ = load(rec)  # pass 2: read again, one recording at a time
            tl = timeline_of(rec, streams)
            aligned = aligned_streams(streams, tl)
            found = _boundary_only_steps(streams, aligned, tl)
            if found.size:
                boundary_only[rec] = found.tolist()
            values: dict[str, np.ndarray] = {}
            masks: dict[str, np.ndarray] = {}
            for m in modalities:
                if m in aligned:
                    values[m], masks[m] = aligned[m].values, aligned[m].mask
                else:
                    values[m] = np.zeros((len(tl), dims[m][0]), dtype=np.float32)
                    masks[m] = np.zeros(len(tl), dtype=bool)
            ts = tl.times if (tl.times.size < 2 or bool(np.all(np.diff(tl.times) > 0))) else None
            yield SequenceRecord(
                id=rec,
                group=labels.group[rec],
                split=labels.split[rec],
                values=values,
                masks=masks,
                label=step_labels(rec, label_timeline(tl)) if step_level else labels.label[rec],
                timestamps=ts,
            )

    specs = [
        ModalitySpec(m, dims[m][0], kinds[m][0].value, str(cfg.get(m, {}).get("description", ""))) for m in modalities
    ]
    level = LabelLevel.STEP if step_level else LabelLevel.SAMPLE
    task = TaskSpec(rule.task_type, level, class_names=rule.class_names)
    extra = {
        "align": {
            "source": str(src),
            "rate": rate,
            "reference": reference,
            "tolerance": {m: t for m, t in tol_of.items() if t is not None},
            "collapse": rule_of,
            "average": sorted(m for m, a in avg_of.items() if a),
            "gap_threshold": float(gap_threshold),
            "duplicates": duplicates,
            "label_level": level.value,
            "label_tolerance": label_tolerance,
            "split_notes": labels.notes,
        }
    }
    path = write_dataset(
        out,
        records(),
        name=name or src.name,
        modalities=specs,
        task=task,
        description=description,
        extra_meta=extra,
        overwrite=overwrite,
        extra_files={
            "validation.json": json.dumps(report.to_dict(), indent=2) + "\n",
            "validation.md": report.to_markdown(),
        },
    )
    if boundary_only:
        first_rec = next(iter(boundary_only))
        steps = sum(len(v) for v in boundary_only.values())
        warnings.warn(
            f"{steps} step(s) in {len(boundary_only)} recording(s) of {src} (first: {first_rec!r} at "
            f"{boundary_only[first_rec][0]:.6g} s) are covered by nothing but the end of an interval row: interval "
            "rows cover [start, end), so an end does not count, and every modality is masked there. Check the "
            "interval ends (or the rate) of those recordings.",
            MmfuseWarning,
            stacklevel=2,
        )
    return path, report
