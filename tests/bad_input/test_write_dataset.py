"""Bad records and arguments through :func:`mmfuse.data.write_dataset`.

The second record is the bad one, so the streaming writer has already started: a refusal must leave nothing
(no target, no temporary folder) behind, and an existing data set untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bad_input_table import ACCEPTED, Case, assert_names, params, tree

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, open_dataset, write_dataset
from mmfuse.errors import DataError

SURFACE = "write_dataset (records)"

_SPECS = [ModalitySpec("acc", 2), ModalitySpec("gyro", 1)]
_TASKS = {
    "cls": TaskSpec("classification", "sample", ("walk", "run")),
    "reg": TaskSpec("regression", "sample"),
    "reg2": TaskSpec("regression", "sample", target_dim=2),
    "step-cls": TaskSpec("classification", "step", ("walk", "run")),
    "step-reg": TaskSpec("regression", "step"),
}
_GOOD_LABEL: dict[str, Any] = {
    "cls": 0,
    "reg": 1.5,
    "reg2": np.array([1.0, 2.0]),
    "step-cls": np.array([0, 1, 0, 1]),
    "step-reg": np.array([0.0, 0.5, 1.0, 1.5]),
}


def _record(rid: str, kind: str, **changes: Any) -> SequenceRecord:
    rec = SequenceRecord(
        id=rid,
        group=rid,
        split="train",
        values={"acc": np.ones((4, 2), np.float32), "gyro": np.ones((4, 1), np.float32)},
        masks={"acc": np.ones(4, bool), "gyro": np.ones(4, bool)},
        label=_GOOD_LABEL[kind],
        timestamps=np.arange(4) / 10,
    )
    for k, v in changes.items():
        setattr(rec, k, v)
    return rec


def _values(name: str = "acc", step: int = 0, value: float = 1.0, shape: tuple[int, ...] | None = None) -> dict:
    out = {"acc": np.ones((4, 2), np.float32), "gyro": np.ones((4, 1), np.float32)}
    if shape is not None:
        out[name] = np.ones(shape, np.float32)
    else:
        out[name][step, 0] = value
    return out


def _masks(**over: Any) -> dict[str, Any]:
    return {"acc": np.ones(4, bool), "gyro": np.ones(4, bool), **over}


# (id, what, task kind, changes to the second record, expected error, names)
_RECORD_ROWS: list[tuple[str, str, str, dict[str, Any], str, tuple[str, ...]]] = [
    (
        "nan-present",
        "NaN at a present step",
        "cls",
        {"values": _values("acc", 2, np.nan)},
        "DataError",
        ("'s2'", "'acc'", "step 2", "not finite"),
    ),
    (
        "inf-present",
        "inf at a present step",
        "cls",
        {"values": _values("gyro", 1, np.inf)},
        "DataError",
        ("'s2'", "'gyro'", "step 1", "not finite"),
    ),
    (
        "neg-inf-present",
        "-inf at a present step",
        "cls",
        {"values": _values("gyro", 3, -np.inf)},
        "DataError",
        ("'s2'", "'gyro'", "step 3"),
    ),
    ("duplicate-id", "two records with one id", "cls", {"id": "s1"}, "DataError", ("'s1'", "duplicate id")),
    ("empty-id", "an empty id", "cls", {"id": ""}, "DataError", ("Record #1", "invalid id ''")),
    ("int-id", "an integer id", "cls", {"id": 7}, "DataError", ("Record #1", "invalid id 7")),
    ("empty-group", "an empty group", "cls", {"group": ""}, "DataError", ("'s2'", "group", "non-empty")),
    ("empty-split", "an empty split", "cls", {"split": ""}, "DataError", ("'s2'", "split", "non-empty")),
    ("split-not-str", "a split that is not a string", "cls", {"split": 1}, "DataError", ("'s2'", "split", "Got 1")),
    (
        "values-not-dict",
        "values given as a list",
        "cls",
        {"values": [np.ones((4, 2))]},
        "DataError",
        ("'s2'", "'values' and 'masks' must be dicts"),
    ),
    (
        "missing-modality",
        "a modality missing from values",
        "cls",
        {"values": {"acc": np.ones((4, 2))}},
        "DataError",
        ("'s2'", "'gyro' is missing", "all-False mask"),
    ),
    (
        "unknown-modality",
        "an undeclared modality",
        "cls",
        {"values": {**_values(), "mic": np.ones((4, 1))}},
        "DataError",
        ("'s2'", "unknown modality 'mic'", "['acc', 'gyro']"),
    ),
    (
        "unknown-mask",
        "a mask for an undeclared modality",
        "cls",
        {"masks": _masks(mic=np.ones(4, bool))},
        "DataError",
        ("'s2'", "unknown modality 'mic'"),
    ),
    (
        "bool-values",
        "boolean values",
        "cls",
        {"values": {**_values(), "gyro": np.ones((4, 1), bool)}},
        "DataError",
        ("'s2'", "'gyro'", "numeric", "bool"),
    ),
    (
        "string-values",
        "string values",
        "cls",
        {"values": {**_values(), "gyro": np.array([["a"]] * 4)}},
        "DataError",
        ("'s2'", "'gyro'", "numeric"),
    ),
    (
        "complex-values",
        "complex values",
        "cls",
        {"values": {**_values(), "gyro": np.ones((4, 1), complex)}},
        "DataError",
        ("'s2'", "'gyro'", "numeric", "complex"),
    ),
    (
        "values-1d",
        "1-D values",
        "cls",
        {"values": {**_values(), "gyro": np.ones(4)}},
        "DataError",
        ("'s2'", "'gyro'", "[T, 1]", "(4,)"),
    ),
    (
        "values-wrong-dim",
        "3 features where the spec says 2",
        "cls",
        {"values": _values("acc", shape=(4, 3))},
        "DataError",
        ("'s2'", "'acc'", "[T, 2]", "(4, 3)"),
    ),
    (
        "empty-sequence",
        "a sequence of 0 steps",
        "cls",
        {"values": {"acc": np.ones((0, 2)), "gyro": np.ones((0, 1))}, "masks": {}},
        "DataError",
        ("'s2'", "'acc'", "empty"),
    ),
    (
        "steps-differ",
        "modalities of different lengths",
        "cls",
        {"values": _values("gyro", shape=(5, 1))},
        "DataError",
        ("'s2'", "'gyro'", "5 steps", "other modalities have 4"),
    ),
    (
        "mask-int",
        "an integer mask",
        "cls",
        {"masks": _masks(acc=np.ones(4, int))},
        "DataError",
        ("'s2'", "'acc'", "bool array", "int64"),
    ),
    (
        "mask-short",
        "a mask shorter than the values",
        "cls",
        {"masks": _masks(acc=np.ones(3, bool))},
        "DataError",
        ("'s2'", "'acc'", "(3,)", "expected (4,)"),
    ),
    (
        "timestamps-short",
        "timestamps shorter than the values",
        "cls",
        {"timestamps": np.arange(3) / 10},
        "DataError",
        ("'s2'", "timestamps", "(4,)", "(3,)"),
    ),
    (
        "timestamps-nan",
        "a NaN timestamp",
        "cls",
        {"timestamps": np.array([0, 0.1, np.nan, 0.3])},
        "DataError",
        ("'s2'", "step 2", "not finite"),
    ),
    (
        "timestamps-decreasing",
        "decreasing timestamps",
        "cls",
        {"timestamps": np.array([0, 0.2, 0.1, 0.3])},
        "DataError",
        ("'s2'", "step 2", "strictly increasing"),
    ),
    (
        "timestamps-repeated",
        "a repeated timestamp",
        "cls",
        {"timestamps": np.array([0, 0.1, 0.1, 0.3])},
        "DataError",
        ("'s2'", "step 2", "strictly increasing"),
    ),
    (
        "timestamps-some-only",
        "timestamps in the first record only",
        "cls",
        {"timestamps": None},
        "DataError",
        ("'s2'", "lacks timestamps", "all records or none"),
    ),
    (
        "context-keys-differ",
        "a context key the first record lacks",
        "cls",
        {"context": {"device": "watch"}},
        "DataError",
        ("'s2'", "context keys ['device']", "[]"),
    ),
    ("label-bool", "a bool class label", "cls", {"label": True}, "DataError", ("'s2'", "int class index", "True")),
    (
        "label-float-cls",
        "a float class label",
        "cls",
        {"label": 0.5},
        "DataError",
        ("'s2'", "int class index", "0.5", "float"),
    ),
    (
        "label-str-cls",
        "a string class label",
        "cls",
        {"label": "walk"},
        "DataError",
        ("'s2'", "int class index", "'walk'"),
    ),
    ("label-out-of-range", "class index 5 of 2", "cls", {"label": 5}, "DataError", ("'s2'", "class index 5", "0..1")),
    ("label-negative", "class index -1", "cls", {"label": -1}, "DataError", ("'s2'", "class index -1")),
    (
        "label-ignore-sample",
        "class index -100 on a sample-level label",
        "cls",
        {"label": -100},
        "DataError",
        ("'s2'", "class index -100"),
    ),
    (
        "regression-string",
        "a string regression target",
        "reg",
        {"label": "high"},
        "DataError",
        ("'s2'", "regression label", "numeric", "'high'"),
    ),
    (
        "regression-nan",
        "a NaN regression target",
        "reg",
        {"label": float("nan")},
        "DataError",
        ("'s2'", "regression target", "not finite"),
    ),
    ("regression-inf", "an inf regression target", "reg", {"label": float("inf")}, "DataError", ("'s2'", "not finite")),
    (
        "regression-bool",
        "a bool regression target",
        "reg",
        {"label": np.array(True)},
        "DataError",
        ("'s2'", "numeric", "bool"),
    ),
    (
        "regression-wrong-width",
        "3 targets where the task has 2",
        "reg2",
        {"label": np.ones(3)},
        "DataError",
        ("'s2'", "shape (2,)", "(3,)"),
    ),
    (
        "step-label-shape",
        "step labels of the wrong length",
        "step-cls",
        {"label": np.zeros(3, int)},
        "DataError",
        ("'s2'", "shape (4,)", "(3,)"),
    ),
    (
        "step-label-float",
        "float step class labels",
        "step-cls",
        {"label": np.zeros(4)},
        "DataError",
        ("'s2'", "integer array", "float64"),
    ),
    (
        "step-label-out-of-range",
        "a step class index 9",
        "step-cls",
        {"label": np.array([0, 1, 9, 0])},
        "DataError",
        ("'s2'", "class index 9", "at step 2"),
    ),
    (
        "step-regression-inf",
        "an inf step target",
        "step-reg",
        {"label": np.array([0, np.inf, 1, 2])},
        "DataError",
        ("'s2'", "not finite", "step 1"),
    ),
    (
        "record-not-a-record",
        "a dict instead of a SequenceRecord",
        "cls",
        {"__replace__": {"id": "s2"}},
        "DataError",
        ("Record #1", "dict", "not a SequenceRecord"),
    ),
    (
        "accepted-nan-masked",
        "NaN at a masked step (stored as 0)",
        "cls",
        {"values": _values("acc", 2, np.nan), "masks": _masks(acc=np.array([1, 1, 0, 1], bool))},
        ACCEPTED,
        (),
    ),
    (
        "accepted-step-ignore",
        "step label -100 (unlabelled step)",
        "step-cls",
        {"label": np.array([0, -100, 1, 0])},
        ACCEPTED,
        (),
    ),
    (
        "accepted-step-regression-nan",
        "a NaN step target (unlabelled step)",
        "step-reg",
        {"label": np.array([0, np.nan, 1, 2])},
        ACCEPTED,
        (),
    ),
    (
        "accepted-int-values",
        "integer values (stored as float32)",
        "cls",
        {"values": {**_values(), "gyro": np.arange(4).reshape(4, 1)}},
        ACCEPTED,
        (),
    ),
]

CASES = [
    Case(SURFACE, cid, what, error, names, ("record", kind, ch)) for cid, what, kind, ch, error, names in _RECORD_ROWS
]

# (id, what, keyword changes, expected error, names)
_ARG_ROWS: list[tuple[str, str, dict[str, Any], str, tuple[str, ...]]] = [
    ("no-records", "no records at all", {"records": []}, "DataError", ("no records for data set 'toy'",)),
    ("empty-name", "name ''", {"name": ""}, "ValueError", ("'name'", "non-empty")),
    ("no-modalities", "modalities []", {"modalities": []}, "ValueError", ("'modalities'", "non-empty")),
    (
        "repeated-modality",
        "a modality name twice",
        {"modalities": [*_SPECS, ModalitySpec("acc", 2)]},
        "ValueError",
        ("'modalities'", "repeats a name"),
    ),
    (
        "task-not-spec",
        "task given as a dict",
        {"task": {"type": "classification"}},
        "TypeError",
        ("'task'", "TaskSpec", "dict"),
    ),
    (
        "extra-meta-not-json",
        "extra_meta holding a set",
        {"extra_meta": {"x": {1, 2}}},
        "ValueError",
        ("'extra_meta'", "JSON-serialisable"),
    ),
    (
        "extra-file-reserved",
        "extra_files naming meta.json",
        {"extra_files": {"meta.json": "{}"}},
        "ValueError",
        ("'extra_files'", "'meta.json'"),
    ),
    (
        "extra-file-path",
        "extra_files naming a path",
        {"extra_files": {"../x.md": "x"}},
        "ValueError",
        ("'extra_files'", "'../x.md'"),
    ),
    (
        "extra-file-hidden",
        "extra_files naming a hidden file",
        {"extra_files": {".x": "x"}},
        "ValueError",
        ("'extra_files'", "'.x'"),
    ),
    (
        "target-exists",
        "an existing data set without overwrite",
        {"__existing__": "dataset"},
        "DataError",
        ("already exists", "overwrite=True"),
    ),
    (
        "target-not-a-data-set",
        "overwrite of a folder that is not a data set",
        {"__existing__": "folder", "overwrite": True},
        "DataError",
        ("not an mmfuse data set", "refusing to overwrite"),
    ),
    (
        "target-is-a-file",
        "overwrite of a file",
        {"__existing__": "file", "overwrite": True},
        "DataError",
        ("not an mmfuse data set",),
    ),
]

CASES += [Case(SURFACE, cid, what, error, names, ("args", ch)) for cid, what, ch, error, names in _ARG_ROWS]


def _arguments(case: Case, dest: Path) -> dict[str, Any]:
    """``write_dataset``'s arguments for the case (``records`` among them); sets up what it needs at ``dest``."""
    if case.data[0] == "record":
        _, kind, changes = case.data
        second: Any = dict(changes["__replace__"]) if "__replace__" in changes else _record("s2", kind, **changes)
        return {"records": [_record("s1", kind), second], "name": "toy", "modalities": _SPECS, "task": _TASKS[kind]}
    changes = dict(case.data[1])
    existing = changes.pop("__existing__", None)
    if existing == "dataset":
        write_dataset(dest, [_record("old", "cls")], name="old", modalities=_SPECS, task=_TASKS["cls"])
    elif existing == "folder":
        dest.mkdir()
        (dest / "notes.txt").write_text("mine")
    elif existing == "file":
        dest.write_text("mine")
    return {"records": [_record("s1", "cls")], "name": "toy", "modalities": _SPECS, "task": _TASKS["cls"], **changes}


def _assert_refused(case: Case, dest: Path, kwargs: dict[str, Any]) -> None:
    """``write_dataset`` raises the case's error naming what it lists, and nothing next to ``dest`` changes."""
    root = dest.parent
    before, entries = tree(root), sorted(p.name for p in root.iterdir())
    error = {"DataError": DataError, "ValueError": ValueError, "TypeError": TypeError}[case.error]
    with pytest.raises(error) as info:
        write_dataset(dest, **kwargs)
    assert type(info.value) is error or case.error == "ValueError"
    assert_names(str(info.value), *case.names)
    assert tree(root) == before, "a refused write_dataset changed the destination or left files behind"
    assert sorted(p.name for p in root.iterdir()) == entries, "a refused write_dataset left a folder behind"


@pytest.mark.parametrize("case", params(CASES))
def test_write_dataset(tmp_path: Path, case: Case) -> None:
    dest = tmp_path / "ds"
    kwargs = _arguments(case, dest)
    if case.error != ACCEPTED:
        _assert_refused(case, dest, kwargs)
        return
    rec = open_dataset(write_dataset(dest, **kwargs))[1]
    if case.id == "accepted-nan-masked":
        assert rec.values["acc"][2].tolist() == [0.0, 0.0] and rec.masks["acc"].tolist() == [1, 1, 0, 1]
    elif case.id == "accepted-step-ignore":
        assert rec.label.tolist() == [0, -100, 1, 0]
    elif case.id == "accepted-step-regression-nan":
        assert np.isnan(rec.label[1]) and rec.label[3] == 2.0
    else:
        assert rec.values["gyro"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("case", params(c for c in CASES if c.data[0] == "record" and c.error != ACCEPTED))
def test_write_dataset_refusal_keeps_the_data_set_it_would_overwrite(tmp_path: Path, case: Case) -> None:
    dest = tmp_path / "ds"
    kind = case.data[1]
    write_dataset(dest, [_record("old", kind)], name="old", modalities=_SPECS, task=_TASKS[kind])
    _assert_refused(case, dest, {**_arguments(case, dest), "overwrite": True})
