"""align_folder round trips on temporary folders, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmfuse.align import Stream, Timeline, align, align_folder, read_stream_file
from mmfuse.data import open_dataset
from mmfuse.errors import DataError, MmfuseWarning, StreamError
from mmfuse.types import TaskType


def _csv(path: Path, t: np.ndarray, v: np.ndarray, time_col: str = "timestamp") -> None:
    cols = [time_col] + [f"e{j}" for j in range(v.shape[1])]
    rows = [",".join(cols)] + [",".join(repr(float(x)) for x in (ti, *vi)) for ti, vi in zip(t, v, strict=True)]
    path.write_text("\n".join(rows) + "\n")


def _make(root: Path, *, labels: str | None = "recording,label,group\nr1,happy,g1\nr2,sad,g2\nr3,happy,g3\n") -> Path:
    src = root / "src"
    rng = np.random.default_rng(0)
    for k, rec in enumerate(["r1", "r2", "r3"]):
        d = src / rec
        d.mkdir(parents=True)
        dur = 3.0 + k
        ta = np.arange(0.0, dur, 0.01)
        _csv(d / "audio.csv", ta, rng.normal(size=(ta.size, 2)))
        if rec != "r2":  # r2 has no video at all
            tv = np.arange(0.0, dur, 1 / 30)
            emb = rng.normal(size=(tv.size, 4))
            np.savez(d / "video.npz", timestamps=tv, values=emb / np.linalg.norm(emb, axis=1, keepdims=True))
        starts = np.arange(0.2, dur - 0.5, 0.4)
        table = pa.table({"time": starts, "end": starts + 0.3, "v": rng.normal(size=starts.size)})
        pq.write_table(table, d / "words.parquet")
    (src / "streams.json").write_text(json.dumps({"video": {"kind": "embedding"}, "audio": {"description": "mel"}}))
    if labels is not None:
        (src / "labels.csv").write_text(labels)
    return src


def test_round_trip_with_missing_modality(tmp_path):
    src = _make(tmp_path)
    path, report = align_folder(src, tmp_path / "ds", rate=10.0)
    ds = open_dataset(path)
    assert len(ds) == 3 and sorted(ds.modalities) == ["audio", "video", "words"]
    assert ds.modalities["video"].kind == "embedding" and ds.modalities["video"].dim == 4
    assert ds.modalities["words"].kind == "interval" and ds.modalities["audio"].dim == 2
    assert ds.modalities["audio"].description == "mel"
    assert ds.task.type is TaskType.CLASSIFICATION and ds.task.class_names == ("happy", "sad")
    recs = {ds[i].id: ds[i] for i in range(len(ds))}
    r2 = recs["r2"]
    assert r2.label == 1 and recs["r1"].label == 0
    assert not r2.masks["video"].any() and np.all(r2.values["video"] == 0)
    assert r2.masks["audio"].all()
    # the stored values are exactly what align() gives for the same streams and grid
    r1 = recs["r1"]
    d = src / "r1"
    streams = [read_stream_file(d / "audio.csv"), read_stream_file(d / "video.npz", kind="embedding")]
    streams.append(read_stream_file(d / "words.parquet"))
    tl = Timeline.grid(10.0, 0.0, max(s.end for s in streams))
    direct = align(streams, tl)
    assert r1.timestamps is not None and np.allclose(r1.timestamps, tl.times)
    for m in ("audio", "video", "words"):
        np.testing.assert_array_equal(r1.masks[m], direct[m].mask)
        np.testing.assert_allclose(r1.values[m], direct[m].values, rtol=1e-6)
    # splits come from the groups, deterministically; every recording got one
    assert sorted(ds.splits) == sorted(open_dataset(align_folder(src, tmp_path / "ds2", rate=10.0)[0]).splits)
    assert set(ds.splits) == {"train", "val", "test"}
    # the validation report sits in the data set folder
    saved = json.loads((path / "validation.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert any("'video' is absent" in w for w in saved["warnings"])
    assert saved["summary"]["video"]["present_in"] == 2
    assert (path / "validation.md").read_text().startswith("# Stream validation report")


def test_reference_modality_and_regression_labels(tmp_path):
    src = _make(tmp_path, labels="recording,label,split\nr1,0.5,train\nr2,1.5,test\nr3,-2,train\n")
    with pytest.warns(MmfuseWarning, match="no recording is in the 'val' split"):
        path, _ = align_folder(src, tmp_path / "ds", reference="words", carve_val=False)
    ds = open_dataset(path)
    assert ds.task.type is TaskType.REGRESSION
    rec = ds[0]
    words = read_stream_file(src / rec.id / "words.parquet")
    assert len(rec) == len(words) and rec.masks["words"].all()
    np.testing.assert_allclose(rec.values["words"], words.values)
    assert rec.masks["audio"].all()
    assert sorted(ds.splits) == ["test", "train", "train"]


def test_integer_labels_are_classes(tmp_path):
    src = _make(tmp_path, labels="recording,label\nr1,2\nr2,10\nr3,2\n")
    ds = open_dataset(align_folder(src, tmp_path / "ds", rate=5.0)[0])
    assert ds.task.class_names == ("2", "10")  # sorted as numbers
    assert [ds[i].label for i in range(3)] == [0, 1, 0]


def test_corrupt_and_truncated_files_are_named(tmp_path):
    src = _make(tmp_path)
    bad = src / "r2" / "audio.csv"
    bad.write_text(bad.read_text()[:200] + "1.0,2.0,3.0,4.0\n")  # a row with too many columns
    with pytest.raises(DataError, match=r"r2.audio\.csv"):
        align_folder(src, tmp_path / "ds", rate=10.0)
    assert not (tmp_path / "ds").exists()
    npz = src / "r1" / "video.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.raises(DataError, match=r"r1.video\.npz"):
        read_stream_file(npz)
    pqf = src / "r3" / "words.parquet"
    pqf.write_bytes(pqf.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"r3.words\.parquet"):
        read_stream_file(pqf)


def test_folder_errors(tmp_path):
    src = _make(tmp_path, labels=None)
    with pytest.raises(DataError, match=r"labels.csv"):
        align_folder(src, tmp_path / "ds", rate=10.0)
    (src / "labels.csv").write_text("recording,label\nr1,a\nr2,b\n")
    with pytest.raises(DataError, match=r"no label for recording.*r3"):
        align_folder(src, tmp_path / "ds", rate=10.0)
    (src / "labels.csv").write_text("recording,label\nr1,a\nr2,b\nr3,a\n")
    with pytest.raises(DataError, match="unknown reference modality 'lidar'"):
        align_folder(src, tmp_path / "ds", reference="lidar")
    with pytest.raises(DataError, match=r"r2.*no reference modality 'video'"):
        align_folder(src, tmp_path / "ds", reference="video")
    with pytest.raises(ValueError, match=r"needs a reference timeline.*Recording 'r1' has: .*video ~\d"):
        align_folder(src, tmp_path / "ds")
    with pytest.raises(ValueError, match="exactly one of 'rate'"):
        align_folder(src, tmp_path / "ds", rate=10.0, reference="video")
    # feature sizes differ across recordings: both are named
    np.savez(src / "r3" / "video.npz", timestamps=np.arange(5) / 30, values=np.ones((5, 6)))
    with pytest.raises(DataError, match=r"'video' has 4 features in recording 'r1' but 6 in recording 'r3'"):
        align_folder(src, tmp_path / "ds", rate=10.0)
    # malformed data inside a readable file: StreamError naming the file and the place
    np.savez(src / "r3" / "video.npz", timestamps=[0.0, 0.2, 0.1], values=np.ones((3, 4)))
    with pytest.raises(StreamError, match=r"r3.video\.npz.*'video'.*sorted.*index 2"):
        align_folder(src, tmp_path / "ds", rate=10.0)
    (src / "streams.json").write_text('{"video": {"kind": "vector"}}')
    with pytest.raises(DataError, match="Unknown stream kind 'vector'"):
        align_folder(src, tmp_path / "ds", rate=10.0)


def test_read_stream_file_columns(tmp_path):
    p = tmp_path / "x.csv"
    _csv(p, np.array([0.0, 1.0]), np.ones((2, 1)), time_col="clock")
    with pytest.raises(DataError, match="no timestamp column"):
        read_stream_file(p)
    s = read_stream_file(p, time_column="clock", name="clk")
    assert isinstance(s, Stream) and s.name == "clk" and s.dim == 1
    (tmp_path / "y.csv").write_text("t,a\n0.0,1.0\n1.0,\n")
    with pytest.raises(DataError, match=r"y\.csv.*'a'.*data row 2 \(line 3\)"):
        read_stream_file(tmp_path / "y.csv")
    (tmp_path / "z.csv").write_text("t,a\n0.0,hello\n")
    with pytest.raises(DataError, match=r"z\.csv.*'a' must be numeric"):
        read_stream_file(tmp_path / "z.csv")
    (tmp_path / "d.csv").write_text("t,a\n0.0,1.0\n0.0,3.0\n")
    assert read_stream_file(tmp_path / "d.csv", duplicates="mean").values[:, 0].tolist() == [2.0]
    with pytest.raises(StreamError, match=r"d\.csv.*duplicate"):
        read_stream_file(tmp_path / "d.csv")
    with pytest.raises(DataError, match="no such file"):
        read_stream_file(tmp_path / "missing.npz")
