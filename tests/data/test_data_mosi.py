from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _data_testing import SHARED_DATA

from mmfuse.data import MultimodalDataset, dataset_info, load_dataset, make_loader
from mmfuse.data import _mosi as mosi
from mmfuse.errors import DataError
from mmfuse.types import LabelLevel, TaskType

SOURCE = SHARED_DATA / "mosi-utterance"
pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not (SOURCE / "transcripts.csv").is_file(),
        reason=f"the CMU-MOSI utterance files are not at {SOURCE} (../shared/data relative to the repo root)",
    ),
]


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> MultimodalDataset:
    return load_dataset("mosi-utterance", data_dir=SHARED_DATA, cache_dir=tmp_path_factory.mktemp("mosi-cache"))


@pytest.fixture
def raw_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "raw" / "mosi-utterance"
    shutil.copytree(SOURCE, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def test_counts_and_task(ds: MultimodalDataset) -> None:
    assert len(ds) == 93 and int(ds.lengths.sum()) == 2199 and int(ds.lengths.max()) == 63
    assert {m: s.dim for m, s in ds.modalities.items()} == {"audio": 73, "text": 100, "video": 100}
    assert ds.task.type is TaskType.CLASSIFICATION and ds.task.level is LabelLevel.STEP
    assert ds.task.class_names == ("negative", "positive")
    steps = {s: int(ds.split(s).lengths.sum()) for s in ds.split_names}
    assert steps["train"] + steps["val"] == 1447 and steps["test"] == 752
    videos = {s: len(ds.split(s)) for s in ds.split_names}
    assert videos == {"test": 31, "train": 50, "val": 12}


def test_no_video_in_two_splits(ds: MultimodalDataset) -> None:
    assert ds.groups == ds.ids and len(set(ds.groups)) == 93
    groups = {s: set(ds.split(s).groups) for s in ds.split_names}
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])


def test_test_positive_rate(ds: MultimodalDataset) -> None:
    test = ds.split("test")
    labels = np.concatenate([test[i].label for i in range(len(test))])
    assert labels.size == 752 and abs(labels.mean() - 0.621) < 0.001


def test_utterance_order_and_values_follow_the_source(ds: MultimodalDataset) -> None:
    rec = ds[ds.ids.index("03bSnISJMiM")]
    np.testing.assert_array_equal(rec.timestamps, np.arange(len(rec)))
    # transcripts.csv: utterances 1, 2, 3, 10 of this video are labelled 1, 0, 0, 0
    assert rec.label[[0, 1, 2, 9]].tolist() == [1, 0, 0, 0]
    assert all(rec.masks[m].all() for m in ds.modalities)
    # text_test.csv row k holds (rounded) the text features of transcripts row int(col 0)
    transcripts = [line.split(",")[0].strip('"') for line in (SOURCE / "transcripts.csv").read_text().splitlines()]
    first = (SOURCE / "text_test.csv").read_text().splitlines()[0].replace('"', "").split(",")
    uid = transcripts[int(first[0])]
    video, number = uid.rsplit("_", 1)
    got = ds[ds.ids.index(video)].values["text"][int(number) - 1]
    np.testing.assert_allclose(got, np.array(first[1:], dtype=np.float32), atol=1e-4)


def test_loader_pads_step_labels(ds: MultimodalDataset) -> None:
    batch = next(iter(make_loader(ds.split("test"), batch_size=8)))
    assert batch.targets is not None and batch.targets.shape == batch.padding_mask.shape
    assert (batch.targets[~batch.padding_mask] == -100).all()
    assert set(batch.targets[batch.padding_mask].unique().tolist()) <= {0, 1}


def test_info_available_locally(tmp_path: Path) -> None:
    info = dataset_info("mosi-utterance", data_dir=SHARED_DATA, cache_dir=tmp_path)
    assert info.available and info.where == str(SOURCE) and "Poria" in info.citation
    missing = dataset_info("mosi-utterance", data_dir=tmp_path / "none", cache_dir=tmp_path)
    assert not missing.available and missing.where.startswith("download from https://raw.githubusercontent.com/")


def test_pins_match_the_local_copy() -> None:
    pins = mosi.mosi_pins()
    files = sorted(p.relative_to(SOURCE).as_posix() for p in SOURCE.rglob("*.csv"))
    assert sorted(pins["files"]) == files
    assert pins["url_template"].startswith(
        "https://raw.githubusercontent.com/declare-lab/contextual-utterance-level-multimodal-sentiment-analysis/"
        "3874cf25a7fb/data/"
    )


def test_changed_local_file_is_refused(raw_copy: Path, tmp_path: Path) -> None:
    with open(raw_copy / "audio" / "audio_test0.csv", "a") as fh:
        fh.write("1\n")
    with pytest.raises(DataError, match=r"audio_test0\.csv differs from the pinned release"):
        load_dataset("mosi-utterance", data_dir=raw_copy.parent, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "datasets" / "mosi-utterance-v1").exists()


def test_pinned_download_route(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pins = mosi.mosi_pins()
    pins["url_template"] = SOURCE.as_uri() + "/{file}"
    monkeypatch.setattr(mosi, "mosi_pins", lambda: json.loads(json.dumps(pins)))
    cache = tmp_path / "cache"
    assert not dataset_info("mosi-utterance", cache_dir=cache).available
    ds = load_dataset("mosi-utterance", cache_dir=cache)
    assert len(ds) == 93
    assert (cache / "downloads" / "mosi-utterance" / "video" / "video_train0.csv").is_file()
    assert dataset_info("mosi-utterance", cache_dir=cache).available


def test_truncated_modality_file(raw_copy: Path) -> None:
    path = raw_copy / "video" / "video_train0.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-10]))
    with pytest.raises(DataError, match=r"video_train0\.csv has 1437 rows but text_train\.csv has 1447"):
        mosi._parse(raw_copy)


def test_cut_row_names_file_and_line(raw_copy: Path) -> None:
    path = raw_copy / "audio" / "audio_test0.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[-1] = lines[-1][: len(lines[-1]) // 2] + "\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"audio_test0\.csv, line 752: expected 74 columns"):
        mosi._parse(raw_copy)


def test_non_numeric_value_names_file_line_column(raw_copy: Path) -> None:
    path = raw_copy / "text" / "text_train0.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[4] = '"oops",' + lines[4].split(",", 1)[1]
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"text_train0\.csv, line 5, column 1: 'oops' is not a number"):
        mosi._parse(raw_copy)


def test_label_disagreement_is_reported(raw_copy: Path) -> None:
    path = raw_copy / "video" / "video_test0.csv"
    lines = path.read_text().splitlines(keepends=True)
    head, last = lines[2].rstrip("\r\n").rsplit(",", 1)
    lines[2] = head + (',"0"' if last == '"1"' else ',"1"') + "\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"video_test0\.csv, line 3: label \d disagrees with transcripts\.csv line \d+"):
        mosi._parse(raw_copy)


def test_shuffled_rows_are_detected(raw_copy: Path) -> None:
    path = raw_copy / "text" / "text_test0.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"text_test0\.csv, line 1: (the features differ|label)"):
        mosi._parse(raw_copy)
