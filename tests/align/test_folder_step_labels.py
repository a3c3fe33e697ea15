"""align_folder with per-step label files: codes per step, unlabelled steps, errors, and a compare run on top."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmfuse.align import align_folder
from mmfuse.data import IGNORE_INDEX, ModalitySpec, SequenceRecord, TaskSpec, open_dataset, write_dataset
from mmfuse.errors import DataError, MmfuseWarning, StreamError
from mmfuse.train.losses import compute_loss, select_rows
from mmfuse.types import Batch, LabelLevel, TaskType

# Segments per recording (start, end, label); the grid is k / 10 s for k = 0..29 (imu at 20 Hz over 0..2.95 s).
SEGMENTS: dict[str, list[tuple[float, float, str]]] = {
    "r0": [(0.0, 1.0, "walk"), (1.0, 1.5, "run"), (2.0, 2.55, "sit")],
    "r1": [(0.0, 3.0, "run")],
    "r2": [(0.25, 0.75, "sit"), (0.75, 2.0, "walk"), (2.0, 3.0, "run")],
    "r3": [(0.5, 1.0, "walk"), (1.0, 2.0, "sit")],
    "r4": [(-1.0, 0.35, "sit"), (1.15, 2.9, "walk")],
    "r5": [(0.0, 1.5, "run"), (1.5, 3.0, "walk")],
}
# Hand-computed: a step x is labelled by the segment with start <= x < end. r = run (0), s = sit (1),
# w = walk (2), - = unlabelled (-100).
EXPECTED = {
    "r0": "wwwwwwwwwwrrrrr-----ssssss----",
    "r1": "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
    "r2": "---ssssswwwwwwwwwwwwrrrrrrrrrr",
    "r3": "-----wwwwwssssssssss----------",
    "r4": "ssss--------wwwwwwwwwwwwwwwww-",
    "r5": "rrrrrrrrrrrrrrrwwwwwwwwwwwwwww",
}
CODE = {"r": 0, "s": 1, "w": 2, "-": IGNORE_INDEX}


def _streams(d: Path, rng: np.random.Generator) -> None:
    t = np.arange(60) / 20  # 20 Hz, 0 .. 2.95 s
    lines = ["timestamp,ax,ay"] + [
        f"{float(ti)!r},{float(a)!r},{float(b)!r}" for ti, (a, b) in zip(t, rng.normal(size=(60, 2)), strict=True)
    ]
    (d / "imu.csv").write_text("\n".join(lines) + "\n")
    th = np.arange(15) / 5  # 5 Hz heart rate, 0 .. 2.8 s
    np.savez(d / "hr.npz", timestamps=th, values=rng.normal(size=th.size))


def _write_segments(d: Path, segments: list[tuple[float, float, str | float]], fmt: str = "csv") -> None:
    starts = [s for s, _, _ in segments]
    ends = [e for _, e, _ in segments]
    labels = [lab for _, _, lab in segments]
    if fmt == "csv":
        rows = ["start,end,label"] + [f"{s!r},{e!r},{lab}" for s, e, lab in segments]
        (d / "labels.csv").write_text("\n".join(rows) + "\n")
    elif fmt == "parquet":
        pq.write_table(pa.table({"start": starts, "end": ends, "label": labels}), d / "labels.parquet")
    else:
        np.savez(d / "labels.npz", starts=np.array(starts), ends=np.array(ends), labels=np.array(labels))


def _make(root: Path, segments: dict[str, list[tuple[float, float, str | float]]] = SEGMENTS) -> Path:  # type: ignore[assignment]
    src = root / "src"
    rng = np.random.default_rng(0)
    formats = {"r4": "parquet", "r5": "npz"}
    for rec, segs in segments.items():
        d = src / rec
        d.mkdir(parents=True)
        _streams(d, rng)
        _write_segments(d, segs, formats.get(rec, "csv"))
    return src


def _codes(text: str) -> list[int]:
    return [CODE[c] for c in text]


def test_interval_labels_give_the_hand_computed_step_codes(tmp_path: Path) -> None:
    path, report = align_folder(_make(tmp_path), tmp_path / "ds", rate=10.0)
    ds = open_dataset(path)
    assert ds.task.type is TaskType.CLASSIFICATION and ds.task.level is LabelLevel.STEP
    assert ds.task.class_names == ("run", "sit", "walk")
    assert sorted(ds.modalities) == ["hr", "imu"]  # labels.* is not a modality
    got = {ds[i].id: ds[i].label for i in range(len(ds))}
    for rec, text in EXPECTED.items():
        assert got[rec].dtype == np.int64 and got[rec].tolist() == _codes(text), rec
    # label coverage in the report and in validation.json / validation.md
    assert report.label_coverage["r0"] == {"steps": 30, "labelled": 21, "coverage": 0.7}
    assert report.label_coverage["r1"]["coverage"] == 1.0
    saved = json.loads((path / "validation.json").read_text())
    assert saved["label_coverage"]["r3"] == {"steps": 30, "labelled": 15, "coverage": 0.5}
    md = (path / "validation.md").read_text()
    assert "## Step labels" in md and "| r4 | 30 | 21 | 70.0 |" in md
    assert ds.extra_meta["align"]["label_level"] == "step"


def test_point_labels_hold_within_the_tolerance(tmp_path: Path) -> None:
    src = tmp_path / "src"
    times = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 2.2, 2.4]  # median interval 0.2 s; a 1 s gap after 1.0
    names = ["idle", "idle", "move", "move", "move", "idle", "move", "move", "idle"]
    rng = np.random.default_rng(1)
    for rec in ("a", "b"):
        (src / rec).mkdir(parents=True)
        _streams(src / rec, rng)
        rows = ["time,label"] + [f"{t!r},{n}" for t, n in zip(times, names, strict=True)]
        (src / rec / "labels.csv").write_text("\n".join(rows) + "\n")
    path, report = align_folder(src, tmp_path / "ds", rate=10.0)
    ds = open_dataset(path)
    # i = idle (0), m = move (1). 1.2 s is held (0.2 s old); 1.3-1.9 s are older than the tolerance (1.9 s is
    # 0.1 s before the next label, which does not count); after the last label at 2.4 s nothing is labelled.
    expected = "iiii" + "mmmmmm" + "iii" + "-------" + "mmmm" + "i" + "-----"
    assert ds[0].label.tolist() == [{"i": 0, "m": 1, "-": IGNORE_INDEX}[c] for c in expected]
    assert report.label_coverage["a"]["labelled"] == 18
    # A longer tolerance bridges the gap, never past the last label.
    path, _ = align_folder(src, tmp_path / "ds2", rate=10.0, label_tolerance=1.0)
    held = open_dataset(path)[0].label.tolist()
    assert held[13:20] == [0] * 7 and held[25:] == [IGNORE_INDEX] * 5
    with pytest.raises(ValueError, match=r"'label_tolerance' parameter of align_folder must be a number >= 0"):
        align_folder(src, tmp_path / "ds3", rate=10.0, label_tolerance=-1.0)


def test_interval_timeline_takes_the_segment_with_the_largest_overlap(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rec in ("a", "b"):
        d = src / rec
        d.mkdir(parents=True)
        pq.write_table(
            pa.table({"time": [0.0, 1.0, 2.0], "end": [1.0, 2.0, 3.0], "v": [1.0, 2.0, 3.0]}), d / "words.parquet"
        )
        segs: list[tuple[float, float, str | float]] = [
            (0.0, 0.3, "A"),
            (0.3, 1.0, "B"),
            (1.0, 1.6, "A"),
            (1.6, 2.0, "B"),
        ]
        _write_segments(d, segs)
    path, report = align_folder(src, tmp_path / "ds", reference="words")
    assert open_dataset(path)[0].label.tolist() == [1, 0, IGNORE_INDEX]
    assert report.label_coverage["a"]["labelled"] == 2


def test_numeric_labels_make_step_regression_with_nan_where_unlabelled(tmp_path: Path) -> None:
    segments: dict[str, list[tuple[float, float, str | float]]] = {
        rec: [(0.0, 1.0, 0.5 + k), (1.0, 1.5, 3)] for k, rec in enumerate(["r0", "r1", "r2", "r3", "r4", "r5"])
    }
    path, report = align_folder(_make(tmp_path, segments), tmp_path / "ds", rate=10.0)
    ds = open_dataset(path)
    assert ds.task.type is TaskType.REGRESSION and ds.task.level is LabelLevel.STEP
    labels = {ds[i].id: ds[i].label for i in range(len(ds))}
    y = labels["r1"]
    assert y.dtype == np.float32 and y[:10].tolist() == [1.5] * 10 and y[10:15].tolist() == [3.0] * 5
    assert np.isnan(y[15:]).all()
    assert report.label_coverage["r1"]["labelled"] == 15


def test_label_files_in_some_recordings_only(tmp_path: Path) -> None:
    src = _make(tmp_path)
    (src / "r3" / "labels.csv").unlink()
    (src / "r5" / "labels.npz").unlink()
    with pytest.raises(DataError, match=r"4 of 6 recordings have a step-label file .* do not: \['r3', 'r5'\]"):
        align_folder(src, tmp_path / "ds", rate=10.0)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("start,end,label\n0.0,1.0,walk\n1.0,1.5,\n", r"data row 2 \(line 3\): the label is empty"),
        (
            "start,end,label\n0.0,1.0,walk\nabc,1.5,run\n",
            r"column 'start' must be numeric.*data row 2 \(line 3\) holds 'abc'",
        ),
        ("start,end,label\n0.0,1.0,walk\n1.0,1.5,nan\n", r"data row 2 \(line 3\): the label is 'nan'"),
        ("start,label\n0.0,walk\n", r"the 'start' column needs an 'end' column"),
        ("start,end,category\n0.0,1.0,walk\n", r"needs a 'label' column"),
    ],
)
def test_bad_label_file_names_file_and_row(tmp_path: Path, body: str, match: str) -> None:
    src = _make(tmp_path)
    (src / "r2" / "labels.csv").write_text(body)
    with pytest.raises(DataError, match=match) as info:
        align_folder(src, tmp_path / "ds", rate=10.0)
    assert str(src / "r2" / "labels.csv") in str(info.value)


def test_unsorted_label_rows_name_the_file(tmp_path: Path) -> None:
    src = _make(tmp_path)
    (src / "r1" / "labels.csv").write_text("start,end,label\n1.0,2.0,walk\n0.0,0.5,run\n")
    with pytest.raises(StreamError, match=str(src / "r1" / "labels.csv")):
        align_folder(src, tmp_path / "ds", rate=10.0)


def test_recording_without_any_labelled_step(tmp_path: Path) -> None:
    src = _make(tmp_path)
    (src / "r3" / "labels.csv").write_text("start,end,label\n5.0,6.0,walk\n")
    with pytest.raises(DataError, match=r"recording 'r3' has no labelled step"):
        align_folder(src, tmp_path / "ds", rate=10.0)


def test_top_level_labels_csv_gives_only_split_and_group(tmp_path: Path) -> None:
    src = _make(tmp_path)
    rows = [f"{r},x,{'test' if r == 'r2' else 'val' if r == 'r4' else 'train'}" for r in SEGMENTS]
    (src / "labels.csv").write_text("recording,label,split\n" + "\n".join(rows) + "\n")
    with pytest.warns(MmfuseWarning, match="'label' column is ignored"):
        path, _ = align_folder(src, tmp_path / "ds", rate=10.0)
    ds = open_dataset(path)
    assert dict(zip(ds.ids, ds.splits, strict=True))["r2"] == "test" and ds.task.level is LabelLevel.STEP
    (src / "labels.csv").write_text("recording,split\nr0,train\n")
    with pytest.raises(DataError, match=r"no row for recording\(s\) \['r1'"):
        align_folder(src, tmp_path / "ds2", rate=10.0)


# --- storing, batching, loss and metrics of unlabelled steps


def _record(label: np.ndarray) -> SequenceRecord:
    return SequenceRecord("s", "g", "train", {"x": np.ones((4, 1), np.float32)}, {}, label)


def test_write_dataset_stores_unlabelled_steps_and_stays_strict(tmp_path: Path) -> None:
    cls = TaskSpec("classification", "step", class_names=("a", "b"))
    reg = TaskSpec("regression", "step")
    x = [ModalitySpec("x", 1)]
    p = write_dataset(tmp_path / "c", [_record(np.array([0, -100, 1, -100]))], name="c", modalities=x, task=cls)
    assert open_dataset(p)[0].label.tolist() == [0, -100, 1, -100]
    p = write_dataset(tmp_path / "r", [_record(np.array([0.5, np.nan, 1.0, 2.0]))], name="r", modalities=x, task=reg)
    assert np.isnan(open_dataset(p)[0].label[1])
    with pytest.raises(DataError, match=r"class index -1 at step 1 is out of range"):
        write_dataset(tmp_path / "d", [_record(np.array([0, -1, 1, 0]))], name="d", modalities=x, task=cls)
    with pytest.raises(DataError, match=r"not finite \(inf, or NaN in some components only\) at step 2"):
        write_dataset(tmp_path / "d", [_record(np.array([0.0, 1.0, np.inf, 2.0]))], name="d", modalities=x, task=reg)
    with pytest.raises(DataError, match=r"regression label must be numeric"):
        write_dataset(tmp_path / "d", [_record(np.array(["a", "b", "c", "d"]))], name="d", modalities=x, task=reg)
    with pytest.raises(DataError, match=r"class index -100 is out of range"):  # sample level: no unlabelled mark
        write_dataset(
            tmp_path / "d",
            [_record(-100)],
            name="d",
            modalities=x,
            task=TaskSpec("classification", "sample", ("a", "b")),
        )


def test_loss_skips_nan_regression_steps() -> None:
    ones = torch.ones(1, 4, dtype=torch.bool)
    batch = Batch(
        {"x": torch.zeros(1, 4, 1)}, {"x": ones}, ones, torch.tensor([[1.0, float("nan"), 3.0, float("nan")]])
    )
    out = torch.tensor([[[0.0], [5.0], [1.0], [float("nan")]]])  # [B, T, 1]
    rows = select_rows(out, batch, "regression", "step")
    assert rows.step is not None and rows.step.tolist() == [0, 2]
    assert compute_loss(out, batch, "regression", level="step").item() == pytest.approx((1.0 + 4.0) / 2)


def test_compare_on_step_labels_counts_only_labelled_test_steps(tmp_path: Path) -> None:
    from mmfuse.evaluate.compare import CompareConfig, compare

    src = _make(tmp_path)
    splits = {"r0": "test", "r4": "test", "r3": "val"}  # test steps: 21 + 21 labelled of 60
    (src / "labels.csv").write_text("recording,split\n" + "".join(f"{r},{splits.get(r, 'train')}\n" for r in SEGMENTS))
    path, _ = align_folder(src, tmp_path / "ds", rate=10.0)
    config = CompareConfig(
        dataset=str(path),
        fusions=["concat"],
        seeds=1,
        epochs=3,
        model_overrides={"hidden": 16},
        out_dir=str(tmp_path / "run"),
        device="cpu",
    )
    compare(config)
    test = open_dataset(path).split("test")
    labelled = sum(int((test[i].label != IGNORE_INDEX).sum()) for i in range(len(test)))
    total = int(test.lengths.sum())
    assert (labelled, total) == (42, 60)  # the test split holds unlabelled steps, which must not count
    metrics = json.loads((tmp_path / "run" / "models" / "concat-seed0" / "test_metrics.json").read_text())
    assert metrics["n"] == labelled
    assert sum(map(sum, metrics["confusion_matrix"])) == labelled
