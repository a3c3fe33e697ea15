"""Bad input through ``mmfuse align SRC --out DST``: broken stream files, label files, configs and options.

Every refusal is exit code 2 with one ``error:`` line naming the problem and the file (and row, column or
recording), no traceback, nothing written next to ``--out`` and the source folder unchanged.
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
from bad_input_table import (
    ACCEPTED,
    Case,
    align_source,
    assert_names,
    clean_failure,
    invoke,
    params,
    tree,
    write_csv,
)

from mmfuse.data import open_dataset

SURFACE = "mmfuse align"


# ----------------------------------------------------------------------------------------------------------
# breakers: each takes the source folder and breaks one thing


def _labels(text: str, encoding: str = "utf-8") -> Callable[[Path], None]:
    def edit(src: Path) -> None:
        (src / "labels.csv").write_bytes(text.encode(encoding))

    return edit


def _labels_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda src: (src / "labels.csv").write_bytes(data)


def _acc(edit_fn: Callable[[np.ndarray, np.ndarray], tuple[Any, np.ndarray]], header: str | None = None) -> Callable:
    def edit(src: Path) -> None:
        t = np.arange(20) / 10
        v = np.random.default_rng(1).normal(size=(20, 2))
        write_csv(src / "r2" / "acc.csv", *edit_fn(t, v), header=header)

    return edit


def _acc_text(text: str) -> Callable[[Path], None]:
    return lambda src: (src / "r2" / "acc.csv").write_text(text, encoding="utf-8")


def _acc_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda src: (src / "r2" / "acc.csv").write_bytes(data)


def _gyro(**arrays: Any) -> Callable[[Path], None]:
    def edit(src: Path) -> None:
        base: dict[str, Any] = {"timestamps": np.arange(10) / 5, "values": np.ones((10, 1))}
        base.update(arrays)
        np.savez(src / "r2" / "gyro.npz", **{k: v for k, v in base.items() if v is not None})

    return edit


def _gyro_parquet(table: pa.Table) -> Callable[[Path], None]:
    def edit(src: Path) -> None:
        (src / "r2" / "gyro.npz").unlink()
        pq.write_table(table, src / "r2" / "gyro.parquet")

    return edit


def _streams_json(text: str) -> Callable[[Path], None]:
    return lambda src: (src / "streams.json").write_text(text, encoding="utf-8")


def _set(t: np.ndarray, i: int, x: float) -> np.ndarray:
    t = t.copy()
    t[i] = x
    return t


def _rename(old: str, new: str) -> Callable[[Path], None]:
    return lambda src: (src / "r2" / old).rename(src / "r2" / new)


def _dangling(src: Path) -> None:
    (src / "r2" / "gyro.npz").unlink()
    os.symlink(src / "nowhere" / "gyro.npz", src / "r2" / "gyro.npz")


def _step_labels_in(recs: tuple[str, ...], text: str) -> Callable[[Path], None]:
    def edit(src: Path) -> None:
        for r in recs:
            (src / r / "labels.csv").write_text(text, encoding="utf-8")

    return edit


def _nothing(src: Path) -> None:
    return None


def _no_recordings(src: Path) -> None:
    import shutil

    for r in ("r1", "r2", "r3"):
        shutil.rmtree(src / r)


def _all(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(src: Path) -> None:
        for e in edits:
            e(src)

    return edit


def _set2(v: np.ndarray, i: int, j: int, x: float) -> np.ndarray:
    v = v.copy()
    v[i, j] = x
    return v


def _col_with(i: int, x: float) -> np.ndarray:
    v = np.ones((10, 1))
    v[i, 0] = x
    return v


_EPOCH_NS = 1_700_000_000 * 10**9

# (id, what, breaker, extra CLI args, expected error, names)
_ROWS: list[tuple[str, str, Callable[[Path], None], tuple[str, ...], str, tuple[str, ...]]] = [
    # --- stream files
    (
        "nan-in-csv",
        "NaN in a CSV value",
        _acc(lambda t, v: (t, _set2(v, 3, 1, np.nan))),
        (),
        "exit 2",
        ("r2", "acc.csv", "column 'x1'", "NaN", "data row 4", "finite"),
    ),
    (
        "inf-in-npz",
        "inf in an NPZ value",
        _gyro(values=_col_with(5, np.inf)),
        (),
        "exit 2",
        ("r2", "gyro.npz", "'gyro'", "finite", "inf", "row 5"),
    ),
    (
        "nan-timestamp-npz",
        "NaN timestamp in an NPZ file",
        _gyro(timestamps=_set(np.arange(10) / 5, 4, np.nan)),
        (),
        "exit 2",
        ("r2", "gyro.npz", "timestamps", "finite", "index 4"),
    ),
    (
        "unsorted-timestamps",
        "timestamps out of order",
        _acc(lambda t, v: (t[[0, 1, 2, 3, 5, 4, *range(6, 20)]], v)),
        (),
        "exit 2",
        ("r2", "acc.csv", "'acc'", "sorted", "index 5"),
    ),
    (
        "duplicate-timestamps",
        "a repeated timestamp",
        _acc(lambda t, v: (_set(t, 3, t[2]), v)),
        (),
        "exit 2",
        ("r2", "acc.csv", "duplicate timestamp", "indices 2 and 3"),
    ),
    (
        "duplicate-timestamps-parquet",
        "a repeated timestamp in a Parquet stream file",
        lambda s: (
            (s / "r2" / "acc.csv").unlink()
            or pq.write_table(
                pa.table({"timestamp": _set(np.arange(20) / 10, 3, 0.2), "x0": np.zeros(20), "x1": np.ones(20)}),
                s / "r2" / "acc.parquet",
            )
        ),
        (),
        "exit 2",
        ("r2", "acc.parquet", "'acc'", "duplicate timestamp", "indices 2 and 3"),
    ),
    (
        "header-only-csv",
        "a CSV with a header and no rows",
        _acc_text("timestamp,x0,x1\n"),
        (),
        "exit 2",
        ("r2", "acc.csv", "'acc'", "empty"),
    ),
    ("zero-byte-csv", "an empty (0-byte) CSV", _acc_bytes(b""), (), "exit 2", ("r2", "acc.csv", "empty", "0 bytes")),
    (
        "dims-differ",
        "3 features in one recording, 2 in the others",
        _acc(lambda t, v: (t, np.zeros((20, 3)))),
        (),
        "exit 2",
        ("'acc'", "2 features", "'r1'", "3 in recording 'r2'"),
    ),
    (
        "garbage-value",
        "a non-numeric value in a CSV",
        _acc_text("timestamp,x0,x1\n0,1,2\n0.1,abc,3\n"),
        (),
        "exit 2",
        ("r2", "acc.csv", "'x0'", "numeric", "data row 2", "'abc'"),
    ),
    (
        "short-row",
        "a CSV row with fewer cells than the header",
        _acc_text("timestamp,x0,x1\n0,1,2\n0.1,1\n"),
        (),
        "exit 2",
        ("r2", "acc.csv", "Expected 3 columns, got 2", "0.1,1"),
    ),
    (
        "long-row",
        "a CSV row with more cells than the header",
        _acc_text("timestamp,x0,x1\n0,1,2\n0.1,1,2,3\n"),
        (),
        "exit 2",
        ("r2", "acc.csv", "Expected 3 columns, got 4"),
    ),
    (
        "no-time-column",
        "a CSV without a timestamp column",
        _acc_text("a,b\n0,1\n0.1,2\n"),
        (),
        "exit 2",
        ("r2", "acc.csv", "no timestamp column", "['timestamp', 'time', 't']"),
    ),
    (
        "no-feature-columns",
        "a CSV with only a timestamp column",
        _acc_text("timestamp\n0\n0.1\n"),
        (),
        "exit 2",
        ("r2", "acc.csv", "no feature columns"),
    ),
    (
        "duplicate-column-names",
        "two CSV columns with one name",
        _acc_text("timestamp,x,x\n0,1,2\n0.1,1,2\n"),
        (),
        "exit 2",
        ("r2", "acc.csv", "['x']", "more than once"),
    ),
    (
        "duplicate-time-column",
        "the timestamp column given twice",
        _acc_text("timestamp,timestamp,x0,x1\n0,0,1,2\n0.1,0.1,1,2\n"),
        (),
        "exit 2",
        ("r2", "acc.csv", "['timestamp']", "more than once"),
    ),
    (
        "latin1-header",
        "a latin-1 CSV header",
        _acc_bytes(b"timestamp,caf\xe9,x1\n0,1,2\n0.1,1,2\n"),
        (),
        "exit 2",
        ("r2", "acc.csv", "not UTF-8", "latin-1", "Save it as UTF-8"),
    ),
    (
        "bool-time-column-parquet",
        "a Parquet time column of true/false",
        _gyro_parquet(pa.table({"timestamp": [False, True], "x0": [1.0, 2.0]})),
        (),
        "exit 2",
        ("r2", "gyro.parquet", "time column 'timestamp'", "true/false"),
    ),
    (
        "bool-timestamps-npz",
        "NPZ timestamps of true/false",
        _gyro(timestamps=np.array([False, True]), values=np.ones((2, 1))),
        (),
        "exit 2",
        ("r2", "gyro.npz", "'timestamps'", "true/false"),
    ),
    (
        "complex-values-npz",
        "complex NPZ values",
        _gyro(values=np.ones((10, 1)) * (1 + 2j)),
        (),
        "exit 2",
        ("r2", "gyro.npz", "'values'", "complex numbers"),
    ),
    (
        "complex-timestamps-npz",
        "complex NPZ timestamps",
        _gyro(timestamps=np.arange(10) / 5 + 0j),
        (),
        "exit 2",
        ("r2", "gyro.npz", "'timestamps'", "complex"),
    ),
    (
        "string-values-npz",
        "NPZ values of strings",
        _gyro(values=np.array(["a"] * 10)),
        (),
        "exit 2",
        ("r2", "gyro.npz", "'values'", "dtype <U1"),
    ),
    (
        "npz-no-values",
        "an NPZ file without a values array",
        _gyro(values=None),
        (),
        "exit 2",
        ("r2", "gyro.npz", "'timestamps' and 'values'"),
    ),
    ("npz-3d-values", "NPZ values of 3 dimensions", _gyro(values=np.ones((10, 1, 2))), (), "exit 2", ("gyro",)),
    (
        "npz-row-count",
        "NPZ values with more rows than timestamps",
        _gyro(values=np.ones((11, 1))),
        (),
        "exit 2",
        ("r2", "gyro.npz", "11 rows", "timestamps has 10"),
    ),
    (
        "corrupt-npz",
        "an NPZ file of garbage bytes",
        lambda s: (s / "r2" / "gyro.npz").write_bytes(b"PK\x03\x04junk"),
        (),
        "exit 2",
        ("r2", "gyro.npz", "truncated or corrupt"),
    ),
    (
        "truncated-parquet",
        "a truncated Parquet file",
        lambda s: (
            _gyro_parquet(pa.table({"timestamp": [0.0, 0.2], "x0": [1.0, 2.0]}))(s)
            or (s / "r2" / "gyro.parquet").write_bytes((s / "r2" / "gyro.parquet").read_bytes()[:30])
        ),
        (),
        "exit 2",
        ("r2", "gyro.parquet", "truncated or corrupt"),
    ),
    (
        "dangling-symlink",
        "a stream file that is a symbolic link to a missing file",
        _dangling,
        (),
        "exit 2",
        ("r2", "gyro.npz", "symbolic link to a missing file"),
    ),
    (
        "stream-is-a-folder",
        "a folder named like a stream file",
        lambda s: (s / "r2" / "mic.csv").mkdir(),
        (),
        "exit 2",
        ("r2", "mic.csv", "not a file"),
    ),
    (
        "modality-given-twice",
        "acc.csv and acc.parquet in one recording",
        lambda s: pq.write_table(pa.table({"timestamp": [0.0], "x0": [1.0], "x1": [1.0]}), s / "r2" / "acc.parquet"),
        (),
        "exit 2",
        ("r2", "modality 'acc'", "twice"),
    ),
    (
        "modality-given-twice-case",
        "acc.csv and acc.CSV in one recording",
        lambda s: (s / "r2" / "acc.CSV").write_text((s / "r2" / "acc.csv").read_text()),
        (),
        "exit 2",
        ("r2", "modality 'acc'", "twice"),
    ),
    (
        "epoch-ns-rate-10",
        "epoch-nanosecond timestamps with --rate 10",
        _acc(lambda t, v: (_EPOCH_NS + (t * 1e9).astype(np.int64), v)),
        (),
        "exit 2",
        ("r2", "recording 'r2'", "would need", "steps", "GB", "epoch milli- or nanoseconds"),
    ),
    (
        "rate-1e9",
        "--rate 1e9 over 2 s of data",
        _nothing,
        ("--rate", "1e9"),
        "exit 2",
        ("recording 'r1'", "1e+09 Hz", "would need", "1,900,000,001 steps", "over the limit"),
    ),
    (
        "out-inside-source",
        "--out inside the source folder",
        _nothing,
        ("--out", "SRC/ds"),
        "exit 2",
        ("cannot be written inside the source folder", "src/ds", "outside it"),
    ),
    (
        "out-is-source",
        "--out naming the source folder itself (with --overwrite)",
        _nothing,
        ("--out", "SRC", "--overwrite"),
        "exit 2",
        ("cannot be written inside the source folder",),
    ),
    ("rate-zero", "--rate 0", _nothing, ("--rate", "0"), "exit 2", ("'rate'", "positive number", "0")),
    ("rate-negative", "--rate -5", _nothing, ("--rate", "-5"), "exit 2", ("'rate'", "positive", "-5")),
    ("rate-nan", "--rate nan", _nothing, ("--rate", "nan"), "exit 2", ("'rate'", "positive", "nan")),
    ("rate-inf", "--rate inf", _nothing, ("--rate", "inf"), "exit 2", ("'rate'", "positive", "inf")),
    (
        "rate-and-reference",
        "--rate and --reference together",
        _nothing,
        ("--reference", "acc"),
        "exit 2",
        ("exactly one of 'rate'", "'reference'"),
    ),
    (
        "reference-unknown",
        "--reference naming no modality",
        _nothing,
        ("--no-rate", "--reference", "mic"),
        "exit 2",
        ("unknown reference modality 'mic'", "['acc', 'gyro']"),
    ),
    (
        "no-timeline",
        "neither --rate nor --reference",
        _nothing,
        ("--no-rate",),
        "exit 2",
        ("needs a reference timeline", "'r1'", "acc ~10 Hz"),
    ),
    (
        "average-unknown",
        "--average naming an unknown modality",
        _nothing,
        ("--average", "mic"),
        "exit 2",
        ("'average'", "['mic']", "['acc', 'gyro']"),
    ),
    (
        "label-tolerance-negative",
        "--label-tolerance -1",
        _nothing,
        ("--label-tolerance", "-1"),
        "exit 2",
        ("'label_tolerance'", ">= 0", "-1"),
    ),
    (
        "no-recordings",
        "a source folder without recording folders",
        _no_recordings,
        (),
        "exit 2",
        ("no recording folders found",),
    ),
    (
        "recording-without-streams",
        "a recording folder with no stream file",
        lambda s: [p.unlink() for p in (s / "r2").iterdir()] and None,
        (),
        "exit 2",
        ("recording 'r2' has no stream files",),
    ),
    # --- labels.csv
    (
        "no-labels-file",
        "labels.csv missing",
        lambda s: (s / "labels.csv").unlink(),
        (),
        "exit 2",
        ("labels.csv", "not found"),
    ),
    (
        "no-label-for-one",
        "a recording without a label row",
        _labels("recording,label\nr1,walk\nr2,run\n"),
        (),
        "exit 2",
        ("labels.csv", "no label", "r3"),
    ),
    (
        "labels-no-label-column",
        "labels.csv without a label column",
        _labels("recording,class\nr1,a\nr2,b\nr3,a\n"),
        (),
        "exit 2",
        ("labels.csv", "missing column 'label'", "['recording', 'class']"),
    ),
    (
        "labels-no-recording-column",
        "labels.csv without a recording column",
        _labels("name,label\nr1,a\nr2,b\nr3,a\n"),
        (),
        "exit 2",
        ("labels.csv", "missing column 'recording'"),
    ),
    (
        "labels-empty-cell",
        "an empty label cell",
        _labels("recording,label\nr1,walk\nr2,\nr3,walk\n"),
        (),
        "exit 2",
        ("labels.csv", "data row 2", "empty"),
    ),
    (
        "labels-listed-twice",
        "a recording listed twice",
        _labels("recording,label\nr1,a\nr2,b\nr3,a\nr1,b\n"),
        (),
        "exit 2",
        ("labels.csv", "'r1'", "listed twice", "data row 4"),
    ),
    (
        "labels-one-class",
        "every label the same",
        _labels("recording,label\nr1,a\nr2,a\nr3,a\n"),
        (),
        "exit 2",
        ("labels.csv", "at least two classes", "'a'"),
    ),
    (
        "labels-extra-cell",
        "a labels row with an extra cell",
        _labels("recording,label\nr1,walk\nr2,run,oops\nr3,a\n"),
        (),
        "exit 2",
        ("labels.csv", "data row 2", "line 3", "3 cells", "2 columns", "['oops']"),
    ),
    (
        "labels-two-extra-cells",
        "a labels row with two extra cells",
        _labels("recording,label,split\nr1,walk,train\nr2,run,test,x,y\nr3,a,val\n"),
        (),
        "exit 2",
        ("labels.csv", "data row 2", "5 cells", "['x', 'y']"),
    ),
    (
        "labels-duplicate-header",
        "labels.csv with the label column twice",
        _labels("recording,label,label\nr1,a,b\nr2,b,a\nr3,a,a\n"),
        (),
        "exit 2",
        ("labels.csv", "['label']", "more than once"),
    ),
    (
        "split-training",
        "split 'training'",
        _labels("recording,label,split\nr1,a,training\nr2,b,val\nr3,a,test\n"),
        (),
        "exit 2",
        ("labels.csv", "'r1'", "'training'", "['train', 'val', 'test']"),
    ),
    (
        "split-testing",
        "split 'testing' on two rows",
        _labels("recording,label,split\nr1,a,train\nr2,b,testing\nr3,a,testing\n"),
        (),
        "exit 2",
        ("labels.csv", "'testing'", "2 such rows", "['train', 'val', 'test']"),
    ),
    (
        "split-upper-case",
        "split 'Train'",
        _labels("recording,label,split\nr1,a,Train\nr2,b,val\nr3,a,test\n"),
        (),
        "exit 2",
        ("'Train'", "valid splits"),
    ),
    (
        "regression-nan-label",
        "a regression label NaN",
        _labels("recording,label\nr1,0.5\nr2,nan\nr3,1.5\n"),
        (),
        "exit 2",
        ("labels.csv", "'nan'", "'r2'", "not a finite number"),
    ),
    (
        "regression-inf-label",
        "a regression label inf",
        _labels("recording,label\nr1,0.5\nr2,1.5\nr3,inf\n"),
        (),
        "exit 2",
        ("labels.csv", "'inf'", "'r3'", "not a finite number"),
    ),
    (
        "regression-minus-inf-label",
        "a regression label -Infinity",
        _labels("recording,label\nr1,-Infinity\nr2,1.5\nr3,2\n"),
        (),
        "exit 2",
        ("'-Infinity'", "'r1'"),
    ),
    (
        "latin1-labels",
        "a latin-1 labels.csv",
        _labels("recording,label\nr1,café\nr2,thé\nr3,café\n", "latin-1"),
        (),
        "exit 2",
        ("labels.csv", "not UTF-8", "latin-1", "Save it as UTF-8"),
    ),
    (
        "labels-utf16",
        "a UTF-16 labels.csv",
        _labels("recording,label\nr1,a\nr2,b\nr3,a\n", "utf-16"),
        (),
        "exit 2",
        ("labels.csv", "not UTF-8"),
    ),
    # --- step labels
    (
        "step-labels-in-some",
        "step-label files in some recordings only",
        _step_labels_in(("r1",), "time,label\n0,a\n1,b\n"),
        (),
        "exit 2",
        ("1 of 3 recordings have a step-label file", "['r2', 'r3']"),
    ),
    (
        "step-labels-nan",
        "a NaN step label",
        _step_labels_in(("r1", "r2", "r3"), "time,label\n0,0.5\n1,nan\n"),
        (),
        "exit 2",
        ("labels.csv", "data row 2", "line 3", "finite"),
    ),
    (
        "step-labels-empty-file",
        "an empty (0-byte) step-label file",
        _all(
            _step_labels_in(("r1", "r2", "r3"), "time,label\n0,a\n1,b\n"),
            lambda s: (s / "r2" / "labels.csv").write_text(""),
        ),
        (),
        "exit 2",
        ("r2", "labels.csv", "0 bytes"),
    ),
    (
        "step-labels-no-time",
        "a step-label file without a time column",
        _step_labels_in(("r1", "r2", "r3"), "label\na\nb\n"),
        (),
        "exit 2",
        ("labels.csv", "'label' column and a time column"),
    ),
    (
        "step-labels-bool-time",
        "a step-label NPZ with true/false times",
        lambda s: (
            [
                np.savez(s / r / "labels.npz", timestamps=np.array([False, True]), labels=np.array(["a", "b"]))
                for r in ("r1", "r2", "r3")
            ]
            and None
        ),
        (),
        "exit 2",
        ("labels.npz", "'timestamps'", "dtype bool"),
    ),
    # --- streams.json
    (
        "streams-json-not-json",
        "streams.json is not JSON",
        _streams_json("{oops"),
        (),
        "exit 2",
        ("streams.json", "cannot read the stream config"),
    ),
    (
        "streams-json-deep",
        "streams.json nested 100000 levels deep",
        _streams_json("[" * 100_000 + "]" * 100_000),
        (),
        "exit 2",
        ("streams.json", "nested too deeply"),
    ),
    (
        "streams-json-list",
        "streams.json holds a list",
        _streams_json("[1, 2]"),
        (),
        "exit 2",
        ("streams.json", "modality ->"),
    ),
    (
        "streams-json-unknown-key",
        "streams.json with an unknown key",
        _streams_json('{"acc": {"rate": 5}}'),
        (),
        "exit 2",
        ("streams.json", "'acc'", "unknown keys ['rate']", "valid keys"),
    ),
    (
        "streams-json-unknown-kind",
        "streams.json with kind 'audio'",
        _streams_json('{"acc": {"kind": "audio"}}'),
        (),
        "exit 2",
        ("streams.json", "'acc'", "'audio'"),
    ),
    (
        "streams-json-bad-collapse",
        "streams.json with collapse 'median'",
        _streams_json('{"acc": {"collapse": "median"}}'),
        (),
        "exit 2",
        ("streams.json", "'median'", "'mean'"),
    ),
    (
        "streams-json-average-text",
        'streams.json with average "yes"',
        _streams_json('{"acc": {"average": "yes"}}'),
        (),
        "exit 2",
        ("streams.json", "'average'", "true or false", "'yes'"),
    ),
    (
        "streams-json-interval-no-end",
        "kind 'interval' for a file without an end column",
        _streams_json('{"acc": {"kind": "interval"}}'),
        (),
        "exit 2",
        ("acc.csv", "'interval'", "'end' column"),
    ),
    # --- valid inputs
    (
        "accepted-upper-case-suffix",
        "acc.CSV (upper-case suffix) is read like acc.csv",
        _rename("acc.csv", "acc.CSV"),
        (),
        ACCEPTED,
        (),
    ),
    (
        "accepted-upper-case-npz",
        "gyro.NPZ (upper-case suffix) is read like gyro.npz",
        _rename("gyro.npz", "gyro.NPZ"),
        (),
        ACCEPTED,
        (),
    ),
    (
        "accepted-bom-labels",
        "a labels.csv with a UTF-8 BOM (as spreadsheets write)",
        _labels_bytes(b"\xef\xbb\xbfrecording,label\nr1,walk\nr2,run\nr3,walk\n"),
        (),
        ACCEPTED,
        (),
    ),
    (
        "accepted-bom-stream",
        "a stream CSV with a UTF-8 BOM",
        lambda s: (s / "r2" / "acc.csv").write_bytes(b"\xef\xbb\xbf" + (s / "r2" / "acc.csv").read_bytes()),
        (),
        ACCEPTED,
        (),
    ),
    (
        "accepted-bom-streams-json",
        "a streams.json with a UTF-8 BOM",
        lambda s: (s / "streams.json").write_bytes(b'\xef\xbb\xbf{"acc": {"kind": "continuous"}}'),
        (),
        ACCEPTED,
        (),
    ),
    (
        "accepted-missing-modality",
        "a recording without one modality (masked out)",
        lambda s: (s / "r2" / "gyro.npz").unlink(),
        (),
        ACCEPTED,
        (),
    ),
    (
        "accepted-integer-labels",
        "integer labels (classes '0', '1')",
        _labels("recording,label\nr1,0\nr2,1\nr3,0\n"),
        (),
        ACCEPTED,
        (),
    ),
    (
        "accepted-regression-labels",
        "finite numeric labels (regression)",
        _labels("recording,label\nr1,0.5\nr2,-1e3\nr3,2\n"),
        (),
        ACCEPTED,
        (),
    ),
    (
        "accepted-hidden-files",
        "hidden files and folders are skipped",
        lambda s: ((s / ".cache").mkdir(), (s / "r2" / ".acc.csv").write_text("garbage")) and None,
        (),
        ACCEPTED,
        (),
    ),
]


CASES = [Case(SURFACE, cid, what, error, names, (breaker, args)) for cid, what, breaker, args, error, names in _ROWS]


def _args(extra: tuple[str, ...]) -> list[str]:
    args = list(extra)
    if "--no-rate" in args:
        args.remove("--no-rate")
        return args
    return args if "--rate" in args else ["--rate", "10", *args]


@pytest.mark.parametrize("case", params(CASES))
def test_align(tmp_path: Path, case: Case) -> None:
    src = align_source(tmp_path)
    breaker, extra = case.data
    breaker(src)
    before = tree(src)
    out = tmp_path / "out" / "ds"
    args = [str(src) + a[3:] if a.startswith("SRC") else a for a in _args(extra)]
    result = invoke("align", src, *([] if "--out" in args else ["--out", out]), *args)
    assert tree(src) == before, "align modified its source folder"
    if case.error == ACCEPTED:
        assert result.exit_code == 0, result.output
        ds = open_dataset(out)
        recs = {ds[i].id: ds[i] for i in range(len(ds))}
        assert sorted(recs) == ["r1", "r2", "r3"] and sorted(ds.modalities) == ["acc", "gyro"]
        assert ds.modalities["acc"].dim == 2 and ds.modalities["gyro"].dim == 1
        assert recs["r2"].masks["acc"].all()
        assert sorted(p.name for p in out.iterdir()) == [
            "meta.json",
            "modalities",
            "samples.parquet",
            "steps.parquet",
            "validation.json",
            "validation.md",
        ]
        if case.id == "accepted-missing-modality":
            assert not recs["r2"].masks["gyro"].any() and not recs["r2"].values["gyro"].any()
            assert recs["r1"].masks["gyro"].any() and recs["r3"].masks["gyro"].any()
        else:
            assert all(r.masks["gyro"].any() for r in recs.values())
        if case.id == "accepted-regression-labels":
            assert ds.task.type.value == "regression" and recs["r2"].label == pytest.approx(-1000.0)
        elif case.id == "accepted-integer-labels":
            assert ds.task.class_names == ("0", "1") and recs["r2"].label == 1
        else:
            assert ds.task.class_names == ("run", "walk") and recs["r2"].label == 0
        return
    line = clean_failure(result)
    assert_names(line, *case.names)
    assert not (tmp_path / "out").exists(), "a refused align left files behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize("case", params(c for c in CASES if c.id in {"split-training", "nan-in-csv"}))
def test_align_overwrite_refusal_keeps_the_data_set(tmp_path: Path, case: Case) -> None:
    src = align_source(tmp_path)
    out = tmp_path / "ds"
    assert invoke("align", src, "--out", out, "--rate", "10").exit_code == 0
    before = tree(out)
    breaker, _ = case.data
    breaker(src)
    assert_names(clean_failure(invoke("align", src, "--out", out, "--rate", "10", "--overwrite")), *case.names)
    assert tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ds", "src"]
