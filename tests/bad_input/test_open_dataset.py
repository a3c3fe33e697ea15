"""Bad input through :func:`mmfuse.data.open_dataset`: edited metadata, tables edited with their sha256 updated.

``meta.json`` is sealed by its own checksum, so a plain edit is refused as such; the "sealed" cases recompute
that checksum too (a tool that knows the format), so the schema checks behind it are reached. The "table"
cases rewrite a Parquet file and update its sha256 and the seal: only the content checks can catch them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_input_table import ACCEPTED, Case, assert_names, params

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, open_dataset, write_dataset
from mmfuse.data.format import _meta_digest, _sha256
from mmfuse.errors import DataError

SURFACE = "open_dataset (a data set folder)"

_SPECS = [ModalitySpec("acc", 2), ModalitySpec("gyro", 1)]


def _records(task: TaskSpec, n: int = 6, t: int = 4, context: bool = False) -> list[SequenceRecord]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if task.is_classification:
            label: Any = np.arange(t) % 2 if task.level.value == "step" else i % 2
        else:
            label = np.linspace(0, 1, t).astype(np.float32) if task.level.value == "step" else float(i) / 2
        out.append(
            SequenceRecord(
                id=f"s{i}",
                group=f"g{i}",
                split=("train", "val", "test")[i % 3],
                values={"acc": rng.normal(size=(t, 2)).astype(np.float32), "gyro": np.ones((t, 1), np.float32)},
                masks={"acc": np.array([True, True, True, False]), "gyro": np.ones(t, bool)},
                label=label,
                timestamps=np.arange(t) / 10,
                context={"device": ("watch", "phone")[i % 2]} if context else {},
            )
        )
    return out


_TASKS = {
    "cls": TaskSpec("classification", "sample", ("walk", "run")),
    "reg": TaskSpec("regression", "sample"),
    "step-cls": TaskSpec("classification", "step", ("walk", "run")),
    "step-reg": TaskSpec("regression", "step"),
}


def _write(root: Path, kind: str = "cls", context: bool = False) -> Path:
    return write_dataset(
        root / "ds", _records(_TASKS[kind], context=context), name="ds", modalities=_SPECS, task=_TASKS[kind]
    )


# ----------------------------------------------------------------------------------------------------------
# editing helpers


def _meta(fn: Callable[[dict[str, Any]], Any], *, seal: bool) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        meta = json.loads((path / "meta.json").read_text())
        fn(meta)
        if seal:
            meta["meta_sha256"] = _meta_digest(meta)
        (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    return edit


def _reseal(path: Path, rel: str) -> None:
    """Update the sha256 of ``rel`` in meta.json and the seal, as a tool that rewrites a table would."""
    meta = json.loads((path / "meta.json").read_text())
    meta["files"][rel]["sha256"] = _sha256(path / rel)
    meta["meta_sha256"] = _meta_digest(meta)
    (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def _table(rel: str, fn: Callable[[pa.Table], pa.Table]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        table = pq.read_table(path / rel)
        pq.write_table(fn(table), path / rel)
        _reseal(path, rel)

    return edit


def _set_column(table: pa.Table, name: str, values: Any, type_: pa.DataType | None = None) -> pa.Table:
    i = table.column_names.index(name)
    arr = values if isinstance(values, pa.Array) else pa.array(values, type=type_ or table.schema.field(name).type)
    return table.set_column(i, pa.field(name, arr.type), arr)


def _column_edit(
    rel: str, name: str, fn: Callable[[list[Any]], list[Any]], type_: Any = None
) -> Callable[[Path], None]:
    return _table(rel, lambda t: _set_column(t, name, fn(t.column(name).to_pylist()), type_))


def _at(values: list[Any], i: int, v: Any) -> list[Any]:
    values = list(values)
    values[i] = v
    return values


def _modality_values(name: str, fn: Callable[[np.ndarray], np.ndarray], width: int | None = None) -> Callable:
    def table_fn(t: pa.Table) -> pa.Table:
        values = np.asarray(t.column("values").to_pylist(), dtype=np.float32)  # [S, D]
        values = fn(values)
        d = values.shape[1] if width is None else width
        flat = pa.array(values.reshape(-1), type=pa.float32())
        return _set_column(t, "values", pa.FixedSizeListArray.from_arrays(flat, d))

    return _table(f"modalities/{name}.parquet", table_fn)


def _set_value(step: int, v: float) -> Callable[[np.ndarray], np.ndarray]:
    def fn(a: np.ndarray) -> np.ndarray:
        a[step, 0] = v
        return a

    return fn


def _swap_modality_files(path: Path) -> None:
    a, g = path / "modalities" / "acc.parquet", path / "modalities" / "gyro.parquet"
    tmp = a.with_suffix(".x")
    a.rename(tmp)
    g.rename(a)
    tmp.rename(g)
    meta = json.loads((path / "meta.json").read_text())
    files = meta["files"]
    files["modalities/acc.parquet"], files["modalities/gyro.parquet"] = (
        files["modalities/gyro.parquet"],
        files["modalities/acc.parquet"],
    )
    meta["meta_sha256"] = _meta_digest(meta)
    (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def _truncate(rel: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        data = (path / rel).read_bytes()
        (path / rel).write_bytes(data[: len(data) // 2])

    return edit


def _garbage_resealed(rel: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        (path / rel).write_bytes(b"PAR1 this is not parquet PAR1")
        _reseal(path, rel)

    return edit


def _nested(depth: int) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        text = (path / "meta.json").read_text()
        (path / "meta.json").write_text(text[:-2] + ', "deep": ' + "[" * depth + "]" * depth + "}\n")

    return edit


def _drop_steps_row(path: Path) -> None:
    _table("steps.parquet", lambda t: t.slice(0, t.num_rows - 1))(path)


def _v1(path: Path) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = 1
    del meta["meta_sha256"]
    (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


_UNSEALED = ("meta.json", "was modified after the data set was written", "meta_sha256")

# (id, what, data-set kind, edit, expected error, names)
_ROWS: list[tuple[str, str, str, Callable[[Path], None], str, tuple[str, ...]]] = [
    # --- meta.json edited by hand (the seal catches every one)
    (
        "meta-dim-2-to-1",
        "a modality's dim edited 2 -> 1 in meta.json",
        "cls",
        _meta(lambda m: m["modalities"][0].update(dim=1), seal=False),
        "DataError",
        _UNSEALED,
    ),
    (
        "meta-class-names-swapped",
        "the class names swapped in meta.json",
        "cls",
        _meta(lambda m: m["task"].update(class_names=["run", "walk"]), seal=False),
        "DataError",
        _UNSEALED,
    ),
    (
        "meta-task-to-regression",
        "the task changed to regression in meta.json",
        "cls",
        _meta(lambda m: m["task"].update(type="regression", class_names=[]), seal=False),
        "DataError",
        _UNSEALED,
    ),
    (
        "meta-modalities-emptied",
        "the modality list emptied in meta.json",
        "cls",
        _meta(lambda m: m.update(modalities=[]), seal=False),
        "DataError",
        _UNSEALED,
    ),
    (
        "meta-has-timestamps-false",
        "has_timestamps set false in meta.json",
        "cls",
        _meta(lambda m: m.update(has_timestamps=False), seal=False),
        "DataError",
        _UNSEALED,
    ),
    (
        "meta-name-edited",
        "the data set name edited in meta.json",
        "cls",
        _meta(lambda m: m.update(name="other"), seal=False),
        "DataError",
        _UNSEALED,
    ),
    (
        "meta-table-sha-edited",
        "a table's sha256 edited in meta.json",
        "cls",
        _meta(lambda m: m["files"]["samples.parquet"].update(sha256="0" * 64), seal=False),
        "DataError",
        _UNSEALED,
    ),
    (
        "meta-seal-removed",
        "the meta_sha256 entry deleted",
        "cls",
        _meta(lambda m: m.pop("meta_sha256"), seal=False),
        "DataError",
        _UNSEALED,
    ),
    (
        "meta-seal-garbage",
        "meta_sha256 replaced by another string",
        "cls",
        _meta(lambda m: m.update(meta_sha256="abc"), seal=False),
        "DataError",
        (*_UNSEALED, "abc"),
    ),
    (
        "meta-seal-not-a-string",
        "meta_sha256 replaced by a number",
        "cls",
        _meta(lambda m: m.update(meta_sha256=12), seal=False),
        "DataError",
        _UNSEALED,
    ),
    (
        "meta-format-version-99",
        "format_version 99 (newer than this mmfuse)",
        "cls",
        _meta(lambda m: m.update(format_version=99), seal=True),
        "DataError",
        ("meta.json", "format_version 99", "1..2"),
    ),
    (
        "meta-format-version-0",
        "format_version 0",
        "cls",
        _meta(lambda m: m.update(format_version=0), seal=True),
        "DataError",
        ("format_version 0",),
    ),
    (
        "meta-format-version-text",
        'format_version given as the string "2"',
        "cls",
        _meta(lambda m: m.update(format_version="2"), seal=True),
        "DataError",
        ("format_version '2'",),
    ),
    (
        "meta-format-version-bool",
        "format_version true",
        "cls",
        _meta(lambda m: m.update(format_version=True), seal=True),
        "DataError",
        ("format_version True",),
    ),
    (
        "meta-format-other",
        "format names another file type",
        "cls",
        _meta(lambda m: m.update(format="other"), seal=True),
        "DataError",
        ("meta.json", "'mmfuse-dataset'"),
    ),
    (
        "meta-is-a-list",
        "meta.json holds a JSON list",
        "cls",
        lambda p: (p / "meta.json").write_text("[1, 2]"),
        "DataError",
        ("meta.json", "does not describe"),
    ),
    (
        "meta-not-json",
        "meta.json is not JSON",
        "cls",
        lambda p: (p / "meta.json").write_text("{not json"),
        "DataError",
        ("meta.json", "cannot be read as JSON"),
    ),
    (
        "meta-empty-file",
        "meta.json is empty (0 bytes)",
        "cls",
        lambda p: (p / "meta.json").write_text(""),
        "DataError",
        ("meta.json", "cannot be read as JSON"),
    ),
    (
        "meta-not-utf8",
        "meta.json holds latin-1 bytes",
        "cls",
        lambda p: (p / "meta.json").write_bytes(b'{"name": "caf\xe9"}'),
        "DataError",
        ("meta.json", "cannot be read"),
    ),
    (
        "meta-deeply-nested",
        "meta.json nested 100000 levels deep",
        "cls",
        _nested(100_000),
        "DataError",
        ("meta.json", "nested too deeply"),
    ),
    (
        "meta-missing",
        "meta.json deleted",
        "cls",
        lambda p: (p / "meta.json").unlink(),
        "DataError",
        ("meta.json", "missing", "not an mmfuse data set"),
    ),
    # --- meta.json edited and re-sealed: the schema checks
    (
        "sealed-dim-2-to-1",
        "dim 2 -> 1, checksum updated",
        "cls",
        _meta(lambda m: m["modalities"][0].update(dim=1), seal=True),
        "DataError",
        ("acc.parquet", "modality 'acc'", "width 1", "float>[2]"),
    ),
    (
        "sealed-dim-2-to-3",
        "dim 2 -> 3, checksum updated",
        "cls",
        _meta(lambda m: m["modalities"][0].update(dim=3), seal=True),
        "DataError",
        ("acc.parquet", "width 3"),
    ),
    (
        "sealed-dim-zero",
        "dim 0, checksum updated",
        "cls",
        _meta(lambda m: m["modalities"][0].update(dim=0), seal=True),
        "DataError",
        ("meta.json", "malformed", "'dim'"),
    ),
    (
        "sealed-modalities-empty",
        "modality list emptied, checksum updated",
        "cls",
        _meta(lambda m: m.update(modalities=[]), seal=True),
        "DataError",
        ("meta.json", "'modalities'", "non-empty"),
    ),
    (
        "sealed-modalities-not-a-list",
        "modalities is an object, checksum updated",
        "cls",
        _meta(lambda m: m.update(modalities={"acc": 2}), seal=True),
        "DataError",
        ("meta.json", "'modalities'"),
    ),
    (
        "sealed-modality-repeated",
        "a modality listed twice, checksum updated",
        "cls",
        _meta(lambda m: m["modalities"].append(m["modalities"][0]), seal=True),
        "DataError",
        ("meta.json", "repeats a name", "'acc'"),
    ),
    (
        "sealed-modality-path-name",
        "a modality named '../x', checksum updated",
        "cls",
        _meta(lambda m: m["modalities"][0].update(name="../x"), seal=True),
        "DataError",
        ("meta.json", "'../x'"),
    ),
    (
        "sealed-modality-dropped",
        "a modality removed from the list, checksum updated",
        "cls",
        _meta(lambda m: m["modalities"].pop(), seal=True),
        "DataError",
        ("meta.json", "'files' lists", "modalities/gyro.parquet"),
    ),
    (
        "sealed-task-to-regression",
        "task changed to regression, checksum updated",
        "cls",
        _meta(lambda m: m["task"].update(type="regression", class_names=[]), seal=True),
        "DataError",
        ("samples.parquet", "label column has type int64", "regression"),
    ),
    (
        "sealed-task-to-classification",
        "task changed to classification, checksum updated",
        "reg",
        _meta(lambda m: m["task"].update(type="classification", class_names=["a", "b"]), seal=True),
        "DataError",
        ("samples.parquet", "label column has type float", "classification"),
    ),
    (
        "sealed-task-unknown-type",
        "task type 'ranking', checksum updated",
        "cls",
        _meta(lambda m: m["task"].update(type="ranking"), seal=True),
        "DataError",
        ("meta.json", "'ranking'"),
    ),
    (
        "sealed-one-class",
        "one class name left, checksum updated",
        "cls",
        _meta(lambda m: m["task"].update(class_names=["walk"]), seal=True),
        "DataError",
        ("meta.json", "class_names"),
    ),
    (
        "sealed-duplicate-class",
        "class names ['a', 'a'], checksum updated",
        "cls",
        _meta(lambda m: m["task"].update(class_names=["a", "a"]), seal=True),
        "DataError",
        ("meta.json", "class_names"),
    ),
    (
        "sealed-task-to-step-level",
        "label level changed to step, checksum updated",
        "cls",
        _meta(lambda m: m["task"].update(level="step"), seal=True),
        "DataError",
        ("steps.parquet", "['timestamp']", "['label', 'timestamp']"),
    ),
    (
        "sealed-task-to-sample-level",
        "label level changed to sample, checksum updated",
        "step-cls",
        _meta(lambda m: m["task"].update(level="sample"), seal=True),
        "DataError",
        ("samples.parquet", "lacks a column", "label", "its columns"),
    ),
    (
        "sealed-has-timestamps-false",
        "has_timestamps false, checksum updated",
        "cls",
        _meta(lambda m: m.update(has_timestamps=False), seal=True),
        "DataError",
        ("meta.json", "'files' lists", "has_timestamps"),
    ),
    (
        "sealed-has-timestamps-false-step",
        "has_timestamps false on a step-level set, checksum updated",
        "step-cls",
        _meta(lambda m: m.update(has_timestamps=False), seal=True),
        "DataError",
        ("steps.parquet", "['label', 'timestamp']", "['label']"),
    ),
    (
        "sealed-has-timestamps-text",
        'has_timestamps "yes", checksum updated',
        "cls",
        _meta(lambda m: m.update(has_timestamps="yes"), seal=True),
        "DataError",
        ("has_timestamps", "'yes'"),
    ),
    (
        "sealed-num-samples-5",
        "num_samples 6 -> 5, checksum updated",
        "cls",
        _meta(lambda m: m.update(num_samples=5), seal=True),
        "DataError",
        ("samples.parquet", "6 rows", "5"),
    ),
    (
        "sealed-num-samples-0",
        "num_samples 0, checksum updated",
        "cls",
        _meta(lambda m: m.update(num_samples=0), seal=True),
        "DataError",
        ("'num_samples'", ">= 1", "0"),
    ),
    (
        "sealed-num-samples-text",
        'num_samples "6", checksum updated',
        "cls",
        _meta(lambda m: m.update(num_samples="6"), seal=True),
        "DataError",
        ("'num_samples'", "'6'"),
    ),
    (
        "sealed-num-steps-wrong",
        "num_steps 24 -> 23, checksum updated",
        "cls",
        _meta(lambda m: m.update(num_steps=23), seal=True),
        "DataError",
        ("num_steps is 23",),
    ),
    (
        "sealed-splits-wrong",
        "split counts edited, checksum updated",
        "cls",
        _meta(lambda m: m.update(splits={"train": 6}), seal=True),
        "DataError",
        ("'splits' records {'train': 6}", "{'test': 2, 'train': 2, 'val': 2}"),
    ),
    (
        "sealed-splits-not-a-dict",
        "splits is a list, checksum updated",
        "cls",
        _meta(lambda m: m.update(splits=["train"]), seal=True),
        "DataError",
        ("'splits'", "sample counts"),
    ),
    (
        "sealed-file-entry-dropped",
        "a modality file's entry removed from 'files', checksum updated",
        "cls",
        _meta(lambda m: m["files"].pop("modalities/gyro.parquet"), seal=True),
        "DataError",
        ("'files' lists", "modalities/gyro.parquet"),
    ),
    (
        "sealed-file-entry-added",
        "an unknown file added to 'files', checksum updated",
        "cls",
        _meta(lambda m: m["files"].update({"extra.parquet": {"rows": 1, "sha256": "0"}}), seal=True),
        "DataError",
        ("'files' lists", "extra.parquet"),
    ),
    (
        "sealed-file-rows-wrong",
        "a file's row count edited, checksum updated",
        "cls",
        _meta(lambda m: m["files"]["modalities/acc.parquet"].update(rows=25), seal=True),
        "DataError",
        ("'modalities/acc.parquet' 25 rows", "num_steps is 24"),
    ),
    (
        "sealed-file-entry-no-sha",
        "a file entry without sha256, checksum updated",
        "cls",
        _meta(lambda m: m["files"]["samples.parquet"].pop("sha256"), seal=True),
        "DataError",
        ("'samples.parquet'", "'sha256'"),
    ),
    (
        "sealed-context-unsorted",
        "a context vocabulary unsorted, checksum updated",
        "ctx",
        _meta(lambda m: m["context"].update(device=["watch", "phone"]), seal=True),
        "DataError",
        ("context vocabulary of 'device'", "sorted"),
    ),
    (
        "sealed-context-value-dropped",
        "a value removed from a context vocabulary, checksum updated",
        "ctx",
        _meta(lambda m: m["context"].update(device=["phone"]), seal=True),
        "DataError",
        ("samples.parquet", "context 'device' = 'watch'", "vocabulary"),
    ),
    # --- a table rewritten with its sha256 updated: the content checks
    (
        "table-negative-label",
        "a sample label -1",
        "cls",
        _column_edit("samples.parquet", "label", lambda v: _at(v, 2, -1)),
        "DataError",
        ("samples.parquet", "row 2", "class index -1", "0..1"),
    ),
    (
        "table-label-out-of-range",
        "a sample label 5 of 2 classes",
        "cls",
        _column_edit("samples.parquet", "label", lambda v: _at(v, 4, 5)),
        "DataError",
        ("samples.parquet", "row 4", "class index 5", "2 classes"),
    ),
    (
        "table-label-ignore-index",
        "a sample label -100 (IGNORE_INDEX is for steps only)",
        "cls",
        _column_edit("samples.parquet", "label", lambda v: _at(v, 0, -100)),
        "DataError",
        ("row 0", "class index -100"),
    ),
    (
        "table-label-float-type",
        "the classification label column stored as float",
        "cls",
        _column_edit("samples.parquet", "label", lambda v: [float(x) for x in v], pa.float64()),
        "DataError",
        ("label column has type double", "int64"),
    ),
    (
        "table-label-null",
        "a sample label missing (null)",
        "cls",
        _column_edit("samples.parquet", "label", lambda v: _at(v, 1, None)),
        "DataError",
        ("samples.parquet",),
    ),
    (
        "table-regression-nan",
        "a regression label NaN",
        "reg",
        _column_edit("samples.parquet", "label", lambda v: _at(v, 3, float("nan"))),
        "DataError",
        ("samples.parquet", "row 3", "not finite"),
    ),
    (
        "table-regression-inf",
        "a regression label inf",
        "reg",
        _column_edit("samples.parquet", "label", lambda v: _at(v, 5, float("inf"))),
        "DataError",
        ("samples.parquet", "row 5", "not finite"),
    ),
    (
        "table-duplicate-ids",
        "two samples with the same id",
        "cls",
        _column_edit("samples.parquet", "id", lambda v: _at(v, 3, "s1")),
        "DataError",
        ("samples.parquet", "'s1'", "twice", "rows 1 and 3"),
    ),
    (
        "table-empty-id",
        "an empty sample id",
        "cls",
        _column_edit("samples.parquet", "id", lambda v: _at(v, 2, "")),
        "DataError",
        ("samples.parquet", "row 2", "empty id"),
    ),
    (
        "table-empty-group",
        "an empty group",
        "cls",
        _column_edit("samples.parquet", "group", lambda v: _at(v, 1, "")),
        "DataError",
        ("row 1", "empty group"),
    ),
    (
        "table-split-renamed",
        "a split renamed 'train' -> 'training' in the table only",
        "cls",
        _column_edit("samples.parquet", "split", lambda v: _at(v, 0, "training")),
        "DataError",
        ("'splits' records", "'training': 1"),
    ),
    (
        "table-n-steps-edited",
        "a sample's n_steps edited",
        "cls",
        _column_edit("samples.parquet", "n_steps", lambda v: _at(v, 0, 5)),
        "DataError",
        ("samples.parquet", "n_steps/offset"),
    ),
    (
        "table-offset-edited",
        "a sample's offset edited",
        "cls",
        _column_edit("samples.parquet", "offset", lambda v: _at(v, 2, 7)),
        "DataError",
        ("n_steps/offset",),
    ),
    (
        "table-split-column-dropped",
        "the split column removed",
        "cls",
        _table("samples.parquet", lambda t: t.drop_columns(["split"])),
        "DataError",
        ("lacks a column", "split", "its columns"),
    ),
    (
        "table-context-value-unknown",
        "a context value outside its vocabulary",
        "ctx",
        _column_edit("samples.parquet", "ctx.device", lambda v: _at(v, 1, "tablet")),
        "DataError",
        ("row 1", "'tablet'", "['phone', 'watch']"),
    ),
    (
        "table-row-dropped",
        'a modality file one row short ("has 23 rows; meta.json records 24")',
        "cls",
        _table("modalities/gyro.parquet", lambda t: t.slice(0, t.num_rows - 1)),
        "DataError",
        ("gyro.parquet has 23 rows; meta.json records 24",),
    ),
    (
        "table-nan-present",
        "NaN at a present step",
        "cls",
        _modality_values("acc", _set_value(5, float("nan"))),
        "DataError",
        ("acc.parquet", "step 1 of sample 's1' (row 5)", "present", "not finite"),
    ),
    (
        "table-inf-present",
        "inf at a present step",
        "cls",
        _modality_values("gyro", _set_value(9, float("inf"))),
        "DataError",
        ("gyro.parquet", "step 1 of sample 's2'", "not finite"),
    ),
    (
        "table-nonzero-masked",
        "a value at a masked step that is not zero",
        "cls",
        _modality_values("acc", _set_value(3, 2.5)),
        "DataError",
        ("acc.parquet", "step 3 of sample 's0'", "marked missing", "not zero"),
    ),
    (
        "table-nan-masked",
        "NaN at a masked step (stored values there are zero)",
        "cls",
        _modality_values("acc", _set_value(7, float("nan"))),
        "DataError",
        ("step 3 of sample 's1'", "marked missing"),
    ),
    (
        "table-modality-width-3",
        "a modality file rewritten 3 wide",
        "cls",
        _modality_values("gyro", lambda a: np.ones((a.shape[0], 3), np.float32)),
        "DataError",
        ("gyro.parquet", "width 1", "[3]", "swapped"),
    ),
    (
        "table-modality-float64",
        "a modality file's values stored as float64",
        "cls",
        _table(
            "modalities/gyro.parquet",
            lambda t: t.cast(pa.schema([("values", pa.list_(pa.float64(), 1)), ("present", pa.bool_())])),
        ),
        "DataError",
        ("gyro.parquet", "double"),
    ),
    (
        "table-present-dropped",
        "the present column removed",
        "cls",
        _table("modalities/acc.parquet", lambda t: t.drop_columns(["present"])),
        "DataError",
        ("acc.parquet", "[values: fixed_size_list"),
    ),
    (
        "table-present-null",
        "a null in the present column",
        "cls",
        _column_edit("modalities/acc.parquet", "present", lambda v: _at(v, 0, None)),
        "DataError",
        ("acc.parquet", "null"),
    ),
    (
        "table-files-swapped",
        "two modality files swapped, with their sha256 entries",
        "cls",
        _swap_modality_files,
        "DataError",
        ("acc.parquet", "modality 'acc'", "width 2", "swapped"),
    ),
    (
        "table-timestamps-decreasing",
        "timestamps decreasing inside a sample",
        "cls",
        _column_edit("steps.parquet", "timestamp", lambda v: _at(v, 6, 0.0)),
        "DataError",
        ("steps.parquet", "not strictly increasing", "step 2 of sample 's1'"),
    ),
    (
        "table-timestamps-repeated",
        "a timestamp repeated inside a sample",
        "cls",
        _column_edit("steps.parquet", "timestamp", lambda v: _at(v, 1, 0.0)),
        "DataError",
        ("strictly increasing", "step 1 of sample 's0'"),
    ),
    (
        "table-timestamp-nan",
        "a NaN timestamp",
        "cls",
        _column_edit("steps.parquet", "timestamp", lambda v: _at(v, 10, float("nan"))),
        "DataError",
        ("steps.parquet", "step 2 of sample 's2'", "not finite"),
    ),
    (
        "table-timestamp-int",
        "the timestamps stored as integers",
        "cls",
        _column_edit("steps.parquet", "timestamp", lambda v: list(range(len(v))), pa.int64()),
        "DataError",
        ("steps.parquet", "float64"),
    ),
    (
        "table-steps-extra-column",
        "an extra column in steps.parquet",
        "cls",
        _table("steps.parquet", lambda t: t.append_column("x", pa.array(np.zeros(t.num_rows)))),
        "DataError",
        ("steps.parquet", "['timestamp', 'x']"),
    ),
    (
        "table-steps-row-dropped",
        "steps.parquet one row short",
        "cls",
        _drop_steps_row,
        "DataError",
        ("steps.parquet has 23 rows; meta.json records 24",),
    ),
    (
        "table-step-label-out-of-range",
        "a step label 7 of 2 classes",
        "step-cls",
        _column_edit("steps.parquet", "label", lambda v: _at(v, 6, 7)),
        "DataError",
        ("steps.parquet", "step 6", "class index 7", "or -100"),
    ),
    (
        "table-step-label-null",
        "a step label missing (null)",
        "step-cls",
        _column_edit("steps.parquet", "label", lambda v: _at(v, 5, None)),
        "DataError",
        ("steps.parquet", "label of row 5", "missing (null)"),
    ),
    (
        "table-step-label-negative",
        "a step label -3 (only -100 marks an unlabelled step)",
        "step-cls",
        _column_edit("steps.parquet", "label", lambda v: _at(v, 2, -3)),
        "DataError",
        ("step 2", "class index -3"),
    ),
    (
        "table-step-regression-inf",
        "a step regression target inf",
        "step-reg",
        _column_edit("steps.parquet", "label", lambda v: _at(v, 3, float("inf"))),
        "DataError",
        ("steps.parquet", "step 3", "not finite"),
    ),
    (
        "table-step-label-float",
        "classification step labels stored as float",
        "step-cls",
        _column_edit("steps.parquet", "label", lambda v: [float(x) for x in v], pa.float32()),
        "DataError",
        ("steps.parquet", "label column has type float", "int64"),
    ),
    # --- files damaged without updating the checksums
    (
        "file-truncated",
        "a modality file truncated",
        "cls",
        _truncate("modalities/acc.parquet"),
        "DataError",
        ("acc.parquet", "corrupt or was modified"),
    ),
    (
        "file-samples-truncated",
        "samples.parquet truncated",
        "cls",
        _truncate("samples.parquet"),
        "DataError",
        ("samples.parquet", "corrupt or was modified"),
    ),
    (
        "file-missing",
        "a modality file deleted",
        "cls",
        lambda p: (p / "modalities" / "gyro.parquet").unlink(),
        "DataError",
        ("gyro.parquet", "missing"),
    ),
    (
        "file-garbage-resealed",
        "samples.parquet replaced by garbage, sha256 updated",
        "cls",
        _garbage_resealed("samples.parquet"),
        "DataError",
        ("samples.parquet", "not a readable Parquet file"),
    ),
    ("path-is-a-file", "the data set path is a file", "cls", lambda p: None, "DataError", ("is not a directory",)),
    # --- valid inputs
    (
        "accepted-step-ignore-index",
        "step labels -100 (unlabelled steps)",
        "step-cls",
        _column_edit("steps.parquet", "label", lambda v: _at(v, 1, -100)),
        ACCEPTED,
        (),
    ),
    (
        "accepted-step-regression-nan",
        "a step regression target NaN (an unlabelled step)",
        "step-reg",
        _column_edit("steps.parquet", "label", lambda v: _at(v, 2, float("nan"))),
        ACCEPTED,
        (),
    ),
    ("accepted-format-1", "a format-1 data set (no meta_sha256), as older mmfuse wrote", "cls", _v1, ACCEPTED, ()),
    ("accepted-timestamps-restart", "each sample's timestamps start again at 0", "cls", lambda p: None, ACCEPTED, ()),
    (
        "accepted-huge-finite-values",
        "present values of 3e38 whose row sum overflows float32 (still finite)",
        "cls",
        _modality_values("acc", lambda a: np.where(np.arange(a.shape[0])[:, None] == 0, np.float32(3e38), a)),
        ACCEPTED,
        (),
    ),
]

CASES = [Case(SURFACE, cid, what, error, names, (kind, edit)) for cid, what, kind, edit, error, names in _ROWS]


def _read_everything(path: Path) -> Any:
    ds = open_dataset(path)
    for m in ds.modalities:  # modalities and steps are read lazily: touch every one
        ds.stacked(m)
    return ds, [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize("case", params(CASES))
def test_open_dataset(tmp_path: Path, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    kind, edit = case.data
    path = _write(tmp_path, "cls" if kind == "ctx" else kind, context=kind == "ctx")
    if case.id == "path-is-a-file":
        path = tmp_path / "file"
        path.write_text("x")
    else:
        edit(path)
    if case.error == ACCEPTED:
        with caplog.at_level(logging.WARNING, logger="mmfuse.data.format"):
            ds, records = _read_everything(path)
        assert len(records) == 6 and sorted(ds.split_names) == ["test", "train", "val"]
        if case.id == "accepted-format-1":
            assert "not covered by a checksum" in caplog.text
        if case.id == "accepted-step-ignore-index":
            assert records[0].label.tolist() == [0, -100, 0, 1]
        if case.id == "accepted-huge-finite-values":
            assert records[0].values["acc"][0].tolist() == [pytest.approx(3e38)] * 2
        if case.id == "accepted-step-regression-nan":
            assert np.isnan(records[0].label[2]) and records[0].label[1] == pytest.approx(1 / 3)
        return
    with pytest.raises(DataError) as info:
        _read_everything(path)
    assert_names(str(info.value), *case.names)
