from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmfuse.data import MultimodalDataset, dataset_info, load_dataset, make_loader
from mmfuse.types import LabelLevel, TaskType


@pytest.fixture(scope="module")
def bm(tmp_path_factory: pytest.TempPathFactory) -> MultimodalDataset:
    return load_dataset("basic-motions", cache_dir=tmp_path_factory.mktemp("bm-cache"))


def test_shapes_task_and_metadata(bm: MultimodalDataset) -> None:
    assert len(bm) == 80
    assert {m: s.dim for m, s in bm.modalities.items()} == {"accelerometer": 3, "gyroscope": 3}
    assert all(s.kind == "continuous" for s in bm.modalities.values())
    assert bm.task.type is TaskType.CLASSIFICATION and bm.task.level is LabelLevel.SAMPLE
    assert bm.task.class_names == ("badminton", "running", "standing", "walking")
    assert bm.extra_meta["rate_hz"] == 10.0
    rec = bm[0]
    assert rec.values["accelerometer"].shape == (100, 3) and rec.masks["gyroscope"].all()
    np.testing.assert_allclose(rec.timestamps, np.arange(100) / 10.0)
    assert rec.group == rec.id and isinstance(rec.label, int)


def test_values_match_aeon(bm: MultimodalDataset) -> None:
    from aeon.datasets import load_basic_motions

    x, y = load_basic_motions(split="test")
    rec = bm[bm.ids.index("test-005")]
    np.testing.assert_allclose(rec.values["accelerometer"], x[5, 0:3].T, rtol=1e-6)
    np.testing.assert_allclose(rec.values["gyroscope"], x[5, 3:6].T, rtol=1e-6)
    assert bm.task.class_names[rec.label] == str(y[5]).lower()


def test_splits_disjoint_and_val_stratified(bm: MultimodalDataset) -> None:
    sizes = {s: len(bm.split(s)) for s in bm.split_names}
    assert sizes == {"test": 40, "train": 32, "val": 8}  # 25 % of 10 per class, rounded: 2 per class
    ids = {s: set(bm.split(s).ids) for s in bm.split_names}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert all(i.startswith("test-") for i in ids["test"])
    val_counts = Counter(bm.split("val").sample_labels.tolist())
    train_counts = Counter(bm.split("train").sample_labels.tolist())
    assert set(val_counts) == {0, 1, 2, 3} and len(set(val_counts.values())) == 1  # equal per class
    assert len(set(train_counts.values())) == 1


def test_rebuild_is_deterministic(bm: MultimodalDataset, tmp_path: Path) -> None:
    other = load_dataset("basic-motions", cache_dir=tmp_path)
    assert other.splits == bm.splits and other.ids == bm.ids


def test_info_and_loader(bm: MultimodalDataset) -> None:
    info = dataset_info("basic-motions")
    assert info.available and "aeon" in info.where and "1811.00075" in info.citation
    batch = next(iter(make_loader(bm.split("train"), batch_size=32)))
    assert batch.inputs["gyroscope"].shape == (32, 100, 3) and batch.padding_mask.all()
