"""Bad input through :func:`mmfuse.align.read_stream_file` (one CSV, NPZ or Parquet file) and
:meth:`mmfuse.align.Stream.create` (arrays in memory).

A file problem is a ``DataError`` naming the file; malformed data inside a readable file is a ``StreamError``
naming the file, the stream and the row or index.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_input_table import ACCEPTED, Case, assert_names, params

from mmfuse.align import Stream, read_stream_file
from mmfuse.errors import DataError, StreamError

FILE_SURFACE = "read_stream_file (one stream file)"
CREATE_SURFACE = "Stream.create (arrays)"


def _text(name: str, text: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_text(text, encoding="utf-8")
        return d / name

    return make


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return make


def _npz(name: str = "imu.npz", **arrays: Any) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        np.savez(d / name, **arrays)
        return d / name

    return make


def _parquet(table: pa.Table, name: str = "imu.parquet") -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        pq.write_table(table, d / name)
        return d / name

    return make


def _link_to_nothing(d: Path) -> Path:
    os.symlink(d / "missing.csv", d / "imu.csv")
    return d / "imu.csv"


_T = np.arange(4) / 10

# (id, what, file maker, keyword arguments, expected error, names)
_FILE_ROWS: list[tuple[str, str, Callable[[Path], Path], dict[str, Any], str, tuple[str, ...]]] = [
    (
        "missing-file",
        "a path that does not exist",
        lambda d: d / "imu.csv",
        {},
        "DataError",
        ("imu.csv", "no such file"),
    ),
    (
        "dangling-link",
        "a symbolic link to a missing file",
        _link_to_nothing,
        {},
        "DataError",
        ("imu.csv", "symbolic link to a missing file", "missing.csv"),
    ),
    (
        "folder",
        "a folder named imu.csv",
        lambda d: (d / "imu.csv").mkdir() or d / "imu.csv",
        {},
        "DataError",
        ("imu.csv", "a folder, not a stream file"),
    ),
    (
        "unsupported-suffix",
        "a .json stream file",
        _text("imu.json", "{}"),
        {},
        "DataError",
        ("imu.json", "unsupported stream file type '.json'", "'.csv'"),
    ),
    ("empty-file", "an empty (0-byte) CSV", _bytes("imu.csv", b""), {}, "DataError", ("imu.csv", "0 bytes")),
    (
        "header-only",
        "a CSV with a header only",
        _text("imu.csv", "t,x\n"),
        {},
        "StreamError",
        ("imu.csv", "'imu'", "empty"),
    ),
    (
        "latin1",
        "a latin-1 CSV",
        _bytes("imu.csv", b"t,caf\xe9\n0,1\n"),
        {},
        "DataError",
        ("imu.csv", "not UTF-8", "latin-1"),
    ),
    (
        "binary-garbage",
        "a CSV of random bytes",
        _bytes("imu.csv", bytes(range(256)) * 4),
        {},
        "DataError",
        ("imu.csv",),
    ),
    (
        "duplicate-columns",
        "a CSV with two columns named x",
        _text("imu.csv", "t,x,x\n0,1,2\n"),
        {},
        "DataError",
        ("imu.csv", "['x']", "more than once"),
    ),
    (
        "time-column-missing",
        "time_column naming no column",
        _text("imu.csv", "t,x\n0,1\n"),
        {"time_column": "ts"},
        "DataError",
        ("imu.csv", "no time column 'ts'", "['t', 'x']"),
    ),
    (
        "bool-time-column",
        "a Parquet time column of true/false",
        _parquet(pa.table({"t": [False, True], "x": [1.0, 2.0]})),
        {},
        "DataError",
        ("imu.parquet", "time column 't'", "true/false"),
    ),
    (
        "string-time-column",
        "a CSV time column of words",
        _text("imu.csv", "t,x\nnoon,1\n"),
        {},
        "DataError",
        ("imu.csv", "column 't'", "numeric", "'noon'"),
    ),
    (
        "empty-value",
        "an empty CSV cell",
        _text("imu.csv", "t,x\n0,1\n0.1,\n"),
        {},
        "DataError",
        ("imu.csv", "column 'x'", "data row 2"),
    ),
    (
        "nan-value-parquet",
        "NaN in a Parquet value",
        _parquet(pa.table({"t": [0.0, 0.1], "x": [1.0, float("nan")]})),
        {},
        "StreamError",
        ("imu.parquet", "'imu'", "finite", "row 1"),
    ),
    (
        "inf-time-parquet",
        "inf in a Parquet time column",
        _parquet(pa.table({"t": [0.0, float("inf")], "x": [1.0, 2.0]})),
        {},
        "StreamError",
        ("imu.parquet", "timestamps", "finite", "index 1"),
    ),
    (
        "end-before-start",
        "an interval row ending before it starts",
        _text("imu.csv", "t,end,x\n0,1,1\n2,1.5,2\n"),
        {},
        "StreamError",
        ("imu.csv", "ends must be >= starts", "Row 1"),
    ),
    (
        "end-with-continuous",
        "an end column with kind 'continuous'",
        _text("imu.csv", "t,end,x\n0,1,1\n"),
        {"kind": "continuous"},
        "DataError",
        ("imu.csv", "interval ends", "'continuous'"),
    ),
    (
        "interval-without-end",
        "kind 'interval' without an end column",
        _text("imu.csv", "t,x\n0,1\n"),
        {"kind": "interval"},
        "DataError",
        ("imu.csv", "'interval'", "'end' column"),
    ),
    (
        "unknown-kind",
        "kind 'audio'",
        _text("imu.csv", "t,x\n0,1\n"),
        {"kind": "audio"},
        "StreamError",
        ("'audio'", "imu.csv"),
    ),
    (
        "unknown-duplicates",
        "duplicates 'median'",
        _text("imu.csv", "t,x\n0,1\n"),
        {"duplicates": "median"},
        "StreamError",
        ("'duplicates'", "'median'"),
    ),
    (
        "negative-tolerance",
        "tolerance -1",
        _text("imu.csv", "t,x\n0,1\n"),
        {"tolerance": -1.0},
        "StreamError",
        ("imu.csv", "'tolerance'", "-1"),
    ),
    (
        "npz-complex",
        "complex NPZ values",
        _npz(timestamps=_T, values=np.ones((4, 2), complex)),
        {},
        "DataError",
        ("imu.npz", "'values'", "complex numbers"),
    ),
    (
        "npz-bool-timestamps",
        "NPZ timestamps of true/false",
        _npz(timestamps=np.array([0, 1, 0, 1], bool), values=np.ones((4, 1))),
        {},
        "DataError",
        ("imu.npz", "'timestamps'", "true/false"),
    ),
    (
        "npz-object",
        "an NPZ array of Python objects (needs pickle)",
        _npz(timestamps=_T, values=np.array([{"a": 1}] * 4, dtype=object)),
        {},
        "DataError",
        ("imu.npz", "cannot read this NPZ file"),
    ),
    (
        "npz-missing-values",
        "an NPZ file without values",
        _npz(timestamps=_T),
        {},
        "DataError",
        ("imu.npz", "'timestamps' and 'values'", "['timestamps']"),
    ),
    (
        "npz-2d-timestamps",
        "NPZ timestamps of shape [4, 1]",
        _npz(timestamps=_T[:, None], values=np.ones((4, 1))),
        {},
        "StreamError",
        ("imu.npz", "1-D", "(4, 1)"),
    ),
    (
        "npz-truncated",
        "a truncated NPZ file",
        lambda d: _bytes("imu.npz", _npz_bytes(d)[:40])(d),
        {},
        "DataError",
        ("imu.npz", "truncated or corrupt"),
    ),
    ("accepted-upper-case", "imu.CSV (upper-case suffix)", _text("imu.CSV", "t,x\n0,1\n0.1,2\n"), {}, ACCEPTED, ()),
    ("accepted-bom", "a CSV with a UTF-8 BOM", _bytes("imu.csv", b"\xef\xbb\xbft,x\n0,1\n0.1,2\n"), {}, ACCEPTED, ()),
    (
        "accepted-bool-values",
        "true/false feature values (read as 0/1)",
        _parquet(pa.table({"t": [0.0, 0.1], "x": [True, False]})),
        {},
        ACCEPTED,
        (),
    ),
]


def _npz_bytes(d: Path) -> bytes:
    np.savez(d / "full.npz", timestamps=_T, values=np.ones((4, 1)))
    return (d / "full.npz").read_bytes()


CASES = [
    Case(FILE_SURFACE, cid, what, error, names, ("file", make, kw)) for cid, what, make, kw, error, names in _FILE_ROWS
]

# (id, what, changes to timestamps=[0, .1, .2], values=ones((3, 2)), expected error, names)
_CREATE_ROWS: list[tuple[str, str, dict[str, Any], str, tuple[str, ...]]] = [
    (
        "nan-value",
        "NaN in values",
        {"values": [[0.0, 1.0], [1.0, float("nan")], [2.0, 3.0]]},
        "StreamError",
        ("'imu'", "finite", "row 1, column 1"),
    ),
    (
        "inf-timestamp",
        "an inf timestamp",
        {"timestamps": [0.0, 0.1, float("inf")]},
        "StreamError",
        ("'imu'", "timestamps", "finite", "index 2"),
    ),
    (
        "unsorted",
        "timestamps out of order",
        {"timestamps": [0.0, 0.2, 0.1]},
        "StreamError",
        ("'imu'", "sorted", "index 2"),
    ),
    (
        "duplicate",
        "a repeated timestamp",
        {"timestamps": [0.0, 0.1, 0.1]},
        "StreamError",
        ("'imu'", "duplicate timestamp", "indices 1 and 2", "duplicates="),
    ),
    ("empty", "no samples", {"timestamps": [], "values": np.zeros((0, 2))}, "StreamError", ("'imu'", "empty")),
    (
        "row-count",
        "4 value rows for 3 timestamps",
        {"values": np.zeros((4, 2))},
        "StreamError",
        ("'imu'", "4 rows", "timestamps has 3"),
    ),
    (
        "no-feature-columns",
        "values of shape [3, 0]",
        {"values": np.zeros((3, 0))},
        "StreamError",
        ("'imu'", "at least one feature column"),
    ),
    (
        "values-3d",
        "values of 3 dimensions",
        {"values": np.zeros((3, 2, 1))},
        "StreamError",
        ("'imu'", "[N, D]", "(3, 2, 1)"),
    ),
    (
        "timestamps-2d",
        "timestamps of shape [3, 1]",
        {"timestamps": np.zeros((3, 1))},
        "StreamError",
        ("'imu'", "1-D", "(3, 1)"),
    ),
    (
        "timestamps-words",
        "timestamps that are words",
        {"timestamps": ["a", "b", "c"]},
        "StreamError",
        ("'imu'", "numbers (seconds)", "'a'"),
    ),
    (
        "timestamps-bool",
        "true/false timestamps",
        {"timestamps": [True, False, True]},
        "StreamError",
        ("'imu'", "timestamps", "real numbers", "true/false"),
    ),
    (
        "timestamps-complex",
        "complex timestamps",
        {"timestamps": np.array([0, 0.1, 0.2]) + 1j},
        "StreamError",
        ("'imu'", "timestamps", "complex"),
    ),
    (
        "values-complex",
        "complex values",
        {"values": np.ones((3, 2), complex)},
        "StreamError",
        ("'imu'", "values", "complex numbers"),
    ),
    (
        "values-words",
        "values that are words",
        {"values": [["a", "b"]] * 3},
        "StreamError",
        ("'imu'", "values must be numbers"),
    ),
    (
        "values-ragged",
        "rows of different lengths",
        {"values": [[1, 2], [3], [5, 6]]},
        "StreamError",
        ("'imu'", "values must be numbers"),
    ),
    (
        "unknown-kind",
        "kind 'audio'",
        {"kind": "audio"},
        "StreamError",
        ("'imu'", "Unknown stream kind 'audio'", "continuous", "interval"),
    ),
    (
        "unknown-duplicates",
        "duplicates 'median'",
        {"duplicates": "median"},
        "StreamError",
        ("'duplicates'", "'imu'", "'mean'", "'median'"),
    ),
    ("empty-name", "an empty name", {"name": ""}, "StreamError", ("'name'", "non-empty")),
    (
        "ends-on-continuous",
        "ends given for a continuous stream",
        {"ends": [0.1, 0.2, 0.3]},
        "StreamError",
        ("'imu'", "'ends' is only allowed for kind 'interval'"),
    ),
    (
        "interval-without-ends",
        "an interval stream without ends",
        {"kind": "interval"},
        "StreamError",
        ("'imu'", "'interval'", "needs 'ends'"),
    ),
    (
        "interval-ends-count",
        "2 ends for 3 rows",
        {"kind": "interval", "ends": [0.1, 0.2]},
        "StreamError",
        ("'imu'", "ends has 2 entries", "timestamps has 3"),
    ),
    (
        "interval-nested",
        "nested intervals (ends decreasing)",
        {"kind": "interval", "ends": [0.5, 0.15, 0.3]},
        "StreamError",
        ("'imu'", "non-decreasing", "Row 1"),
    ),
    ("tolerance-nan", "tolerance NaN", {"tolerance": float("nan")}, "StreamError", ("'tolerance'", "'imu'", "nan")),
    ("accepted-1d-values", "1-D values (one feature)", {"values": [1.0, 2.0, 3.0]}, ACCEPTED, ()),
    (
        "accepted-duplicates-mean",
        "a repeated timestamp with duplicates='mean'",
        {"timestamps": [0.0, 0.1, 0.1], "values": [[0, 0], [1, 1], [3, 3]], "duplicates": "mean"},
        ACCEPTED,
        (),
    ),
]

CASES += [Case(CREATE_SURFACE, cid, what, error, names, ("create", ch)) for cid, what, ch, error, names in _CREATE_ROWS]


@pytest.mark.parametrize("case", params(CASES))
def test_stream_input(tmp_path: Path, case: Case) -> None:
    if case.data[0] == "file":
        _, make, kw = case.data
        path = make(tmp_path)

        def call() -> Stream:
            return read_stream_file(path, **kw)
    else:
        changes = dict(case.data[1])
        name = changes.pop("name", "imu")
        kwargs: dict[str, Any] = {"timestamps": [0.0, 0.1, 0.2], "values": np.ones((3, 2)), **changes}

        def call() -> Stream:
            return Stream.create(name, **kwargs)

    if case.error == ACCEPTED:
        stream = call()
        if case.id == "accepted-duplicates-mean":
            assert stream.timestamps.tolist() == [0.0, 0.1] and stream.values[1].tolist() == [2.0, 2.0]
        elif case.id == "accepted-1d-values":
            assert stream.values.shape == (3, 1)
        elif case.id == "accepted-bool-values":
            assert stream.values[:, 0].tolist() == [1.0, 0.0]
        else:
            assert stream.name == "imu" and stream.values[:, 0].tolist() == [1.0, 2.0]
        return
    error = {"DataError": DataError, "StreamError": StreamError}[case.error]
    with pytest.raises(error) as info:
        call()
    assert_names(str(info.value), *case.names)
