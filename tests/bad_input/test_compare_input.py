"""Bad input through ``mmfuse compare``: names, options, run directories and broken data sets.

Every case is refused before anything is written: exit code 2, one ``error:`` line naming the problem, no
traceback, and no run directory (no ``run.json``) left behind, or an existing one left as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_input_table import Case, assert_names, clean_failure, invoke, params, tree

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset
from mmfuse.data.format import _meta_digest, _sha256

SURFACE = "mmfuse compare"


_SPECS = [ModalitySpec("acc", 2), ModalitySpec("gyro", 1)]
_TASK = TaskSpec("classification", "sample", ("walk", "run"))
_USAGE = "exit 2 (option parser)"
"""The expected error of a case the option parser refuses (a boxed usage error, not an ``error:`` line)."""


def _native(root: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    rng = np.random.default_rng(0)
    records = [
        SequenceRecord(
            id=f"s{i}",
            group=f"g{i}",
            split=splits[i % len(splits)],
            values={"acc": rng.normal(size=(4, 2)).astype(np.float32), "gyro": np.ones((4, 1), np.float32)},
            masks={},
            label=i % 2,
        )
        for i in range(12)
    ]
    return write_dataset(root / "native", records, name="native", modalities=_SPECS, task=_TASK)


def _reseal_table(rel: str, fn: Callable[[pa.Table], pa.Table]) -> Callable[[Path], None]:
    def edit(ds: Path) -> None:
        pq.write_table(fn(pq.read_table(ds / rel)), ds / rel)
        meta = json.loads((ds / "meta.json").read_text())
        meta["files"][rel]["sha256"] = _sha256(ds / rel)
        meta["meta_sha256"] = _meta_digest(meta)
        (ds / "meta.json").write_text(json.dumps(meta))

    return edit


def _label(i: int, v: int) -> Callable[[pa.Table], pa.Table]:
    def fn(t: pa.Table) -> pa.Table:
        labels = t.column("label").to_pylist()
        labels[i] = v
        return t.set_column(t.column_names.index("label"), "label", pa.array(labels, pa.int64()))

    return fn


def _nan_value(t: pa.Table) -> pa.Table:
    values = np.asarray(t.column("values").to_pylist(), dtype=np.float32)
    values[5, 1] = np.nan
    arr = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), 2)
    return t.set_column(0, "values", arr)


def _edit_meta(ds: Path) -> None:
    meta = json.loads((ds / "meta.json").read_text())
    meta["modalities"][0]["dim"] = 1
    (ds / "meta.json").write_text(json.dumps(meta))


def _halve(rel: str) -> Callable[[Path], None]:
    def edit(ds: Path) -> None:
        data = (ds / rel).read_bytes()
        (ds / rel).write_bytes(data[: len(data) // 2])

    return edit


def _existing_run(out: Path) -> None:
    out.mkdir()
    (out / "run.json").write_text('{"dataset": "native"}')
    (out / "results.csv").write_text("fusion,seed\nconcat,0\n")


def _existing_files(out: Path) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("mine")


# (id, what, CLI args (DS = the native data set, OUT = --out), setup of the data set / of --out, error, names)
_ROWS: list[
    tuple[str, str, tuple[str, ...], Callable[[Path], None] | None, Callable[[Path], None] | None, tuple[str, ...]]
] = [
    ("fusion-empty", "--fusion ''", ("-f", ""), None, None, ("fusion names ['']", "select no fusion", "concat")),
    ("fusion-comma", "--fusion ','", ("-f", ","), None, None, ("fusion names [',']", "select no fusion")),
    ("fusion-spaces", "--fusion ' , '", ("-f", " , "), None, None, ("select no fusion",)),
    ("fusion-unknown", "--fusion nope", ("-f", "nope"), None, None, ("Unknown fusion 'nope'", "concat", "gated")),
    (
        "fusion-unknown-in-list",
        "--fusion concat,nope",
        ("-f", "concat,nope"),
        None,
        None,
        ("Unknown fusion 'nope'", "concat", "cross_attention", "gated", "weighted"),
    ),
    ("fusion-unknown-unimodal", "--fusion unimodal-mic", ("-f", "unimodal-mic"), None, None, ("mic",)),
    ("dataset-empty", "--dataset ''", ("--dataset", ""), None, None, ("'dataset'", "Got ''")),
    ("dataset-spaces", "--dataset '  '", ("--dataset", "  "), None, None, ("Unknown data set '  '", "basic-motions")),
    (
        "dataset-unknown",
        "--dataset no-such-set",
        ("--dataset", "no-such-set"),
        None,
        None,
        ("Unknown data set 'no-such-set'", "basic-motions", "mosi-utterance"),
    ),
    (
        "dataset-missing-folder",
        "--dataset naming a folder that does not exist",
        ("--dataset", "MISSING"),
        None,
        None,
        ("--dataset path", "missing/ds", "does not exist", "not a registered data set", "basic-motions"),
    ),
    (
        "dataset-is-a-file",
        "--dataset naming a file",
        ("--dataset", "AFILE"),
        None,
        None,
        ("--dataset path", "a-file.txt", "is a file, not a data-set folder"),
    ),
    (
        "dataset-not-a-data-set",
        "--dataset naming a folder without meta.json",
        ("--dataset", "EMPTY"),
        None,
        None,
        ("not-a-dataset", "meta.json"),
    ),
    (
        "dataset-no-test-split",
        "a data set without a test split",
        ("--dataset", "NOTEST"),
        None,
        None,
        ("'native'", "['test']", "'train', 'val' and 'test'", "['train', 'val']"),
    ),
    (
        "dataset-meta-edited",
        "a data set whose meta.json was edited",
        (),
        _edit_meta,
        None,
        ("meta.json", "was modified", "meta_sha256"),
    ),
    (
        "dataset-label-out-of-range",
        "a label 7 of 2 classes, sha256 updated",
        (),
        _reseal_table("samples.parquet", _label(3, 7)),
        None,
        ("samples.parquet", "row 3", "class index 7"),
    ),
    (
        "dataset-nan-present",
        "NaN at a present step, sha256 updated",
        (),
        _reseal_table("modalities/acc.parquet", _nan_value),
        None,
        ("acc.parquet", "step 1 of sample 's1'", "finite"),
    ),
    (
        "dataset-truncated-file",
        "a truncated modality file",
        (),
        lambda ds: (ds / "modalities" / "gyro.parquet").write_bytes(b"PAR1"),
        None,
        ("gyro.parquet", "corrupt or was modified"),
    ),
    (
        "dataset-samples-truncated",
        "samples.parquet cut to half its bytes",
        (),
        _halve("samples.parquet"),
        None,
        ("samples.parquet", "corrupt or was modified"),
    ),
    (
        "dataset-meta-not-json",
        "a data set whose meta.json is not JSON",
        (),
        lambda ds: (ds / "meta.json").write_text("{not json"),
        None,
        ("meta.json", "cannot be read as JSON"),
    ),
    (
        "seeds-zero",
        "--seeds 0",
        ("--seeds", "0"),
        None,
        None,
        ("Invalid value for '--seeds", "greater than or equal to 1"),
    ),
    (
        "epochs-zero",
        "--epochs 0",
        ("--epochs", "0"),
        None,
        None,
        ("Invalid value for '--epochs", "greater than or equal to 1"),
    ),
    ("jobs-zero", "--jobs 0", ("--jobs", "0"), None, None, ("Invalid value for '--jobs", "greater than or equal to 1")),
    (
        "hidden-zero",
        "--hidden 0",
        ("--hidden", "0"),
        None,
        None,
        ("Invalid value for '--hidden", "greater than or equal to 1"),
    ),
    (
        "max-params-10",
        "--max-params 10",
        ("--max-params", "10"),
        None,
        None,
        ("parameters, over the max_params budget of 10", "'hidden'"),
    ),
    (
        "hidden-20000",
        "--hidden 20000 (billions of parameters; refused before allocating)",
        ("--hidden", "20000"),
        None,
        None,
        ("parameters, over the max_params budget of 100,000,000", "'hidden' (now 20000)"),
    ),
    (
        "hidden-20000-max-params",
        "--hidden 20000 --max-params 1000000",
        ("--hidden", "20000", "--max-params", "1000000"),
        None,
        None,
        ("over the max_params budget of 1,000,000",),
    ),
    ("resume-and-overwrite", "--resume --overwrite", ("--resume", "--overwrite"), None, None, ("resume", "overwrite")),
    ("out-is-a-file", "--out naming a file", (), None, lambda out: out.write_text("x"), ("is a file",)),
    (
        "out-holds-a-run",
        "--out holding a run, without --resume/--overwrite",
        (),
        None,
        _existing_run,
        ("already holds a run", "--resume", "--overwrite"),
    ),
    ("out-holds-files", "--out holding other files", (), None, _existing_files, ("already holds files",)),
    (
        "resume-not-a-run",
        "--resume into a folder that is not a run",
        ("--resume",),
        None,
        _existing_files,
        ("Cannot resume", "run.json"),
    ),
    ("modalities-unknown", "--modalities mic", ("--modalities", "mic"), None, None, ("'mic'", "acc", "gyro")),
    ("modalities-empty", "--modalities ''", ("--modalities", ""), None, None, ("'modalities'",)),
]

CASES = [
    Case(SURFACE, cid, what, _USAGE if "Invalid value" in names[0] else "exit 2", names, tuple(data))
    for cid, what, *data, names in _ROWS
]


@pytest.mark.parametrize("case", params(CASES))
def test_compare(tmp_path: Path, case: Case) -> None:
    args, ds_edit, out_setup = case.data
    native = _native(tmp_path)
    if ds_edit is not None:
        ds_edit(native)
    out = tmp_path / "run"
    if out_setup is not None:
        out_setup(out)
    named: dict[str, Any] = {
        "EMPTY": tmp_path / "not-a-dataset",
        "MISSING": tmp_path / "missing" / "ds",
        "AFILE": tmp_path / "a-file.txt",
        "NOTEST": _native(tmp_path / "notest", ("train", "val")),
    }
    (tmp_path / "not-a-dataset").mkdir()
    (tmp_path / "a-file.txt").write_text("x")
    args = [str(named.get(a, a)) for a in args]
    if "--dataset" not in args:
        args = ["--dataset", str(native), *args]
    if "-f" not in args:
        args = ["-f", "concat", *args]
    before = tree(tmp_path)
    line = clean_failure(
        invoke("compare", *args, "--seeds", "1", "--epochs", "1", "--out", out)
        if "--seeds" not in args and "--epochs" not in args
        else invoke("compare", *args, "--out", out),
        usage=case.error == _USAGE,
    )
    assert_names(line, *case.names)
    assert tree(tmp_path) == before, "a refused compare wrote or changed files"
    if out_setup is None:
        assert not out.exists(), "a refused compare left a run directory behind"
