"""Splits in align_folder: empty 'split' cells are warned about, and validation is carved from train by group."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from mmfuse.align import align_folder
from mmfuse.data import open_dataset
from mmfuse.errors import MmfuseWarning


def _src(tmp: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """One tiny stream per recording; ``rows`` are (recording, label, split, group)."""
    src = tmp / "src"
    for rec, *_ in rows:
        (src / rec).mkdir(parents=True)
        np.savez(src / rec / "imu.npz", timestamps=np.arange(4) / 10, values=np.ones((4, 2)))
    lines = ["recording,label,split,group", *(",".join(r) for r in rows)]
    (src / "labels.csv").write_text("\n".join(lines) + "\n")
    return src


def _splits(path: Path) -> dict[str, str]:
    ds = open_dataset(path)
    return dict(zip(ds.ids, ds.splits, strict=True))


def test_val_is_carved_from_train_by_group_with_a_warning(tmp_path):
    # 6 train groups of two recordings each, one test group; no 'val' named
    rows = [(f"r{g}{k}", "ab"[g % 2], "train", f"g{g}") for g in range(6) for k in range(2)]
    rows += [("t0", "a", "test", "gt"), ("t1", "b", "test", "gt")]
    src = _src(tmp_path, rows)
    with pytest.warns(MmfuseWarning, match=r"names no 'val' recording; 1 of the 6 train group\(s\) \(2 recording"):
        path, _ = align_folder(src, tmp_path / "ds", rate=10.0)
    split = _splits(path)
    val = sorted(r for r, s in split.items() if s == "val")
    assert len(val) == 2 and val[0][:2] == val[1][:2]  # one whole group, never split across
    assert split["t0"] == split["t1"] == "test"
    notes = json.loads((path / "meta.json").read_text())["extra_meta"]["align"]["split_notes"]
    assert len(notes) == 1 and "moved to 'val'" in notes[0]
    # deterministic, and a different seed may pick another group
    path2, _ = align_folder(src, tmp_path / "ds2", rate=10.0, seed=0)
    assert _splits(path2) == split
    # opting out keeps them in train, and says there is no validation
    with pytest.warns(MmfuseWarning, match="no recording is in the 'val' split"):
        path3, _ = align_folder(src, tmp_path / "ds3", rate=10.0, carve_val=False)
    assert sorted(set(_splits(path3).values())) == ["test", "train"]


def test_named_val_is_left_alone_and_nothing_is_warned(tmp_path):
    rows = [("a", "x", "train", "g1"), ("b", "y", "train", "g2"), ("c", "x", "val", "g3"), ("d", "y", "test", "g4")]
    src = _src(tmp_path, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MmfuseWarning)
        path, _ = align_folder(src, tmp_path / "ds", rate=10.0)
    assert _splits(path) == {"a": "train", "b": "train", "c": "val", "d": "test"}


def test_empty_split_cells_are_assigned_by_group_and_warned_about(tmp_path):
    # the case: two groups, some cells empty; before, they all went to train without a word
    rows = [("a", "x", "train", "g1"), ("b", "y", "", "g1"), ("c", "x", "", "g2"), ("d", "y", "test", "g3")]
    src = _src(tmp_path, rows)
    with pytest.warns(MmfuseWarning) as caught:
        path, _ = align_folder(src, tmp_path / "ds", rate=10.0)
    messages = [str(w.message) for w in caught]
    assert any("2 recording(s) have an empty 'split' cell ['b', 'c']" in m for m in messages)
    assert any("names no 'val' recording" in m for m in messages)
    split = _splits(path)
    assert split["d"] == "test" and split["a"] == split["b"]  # a group never straddles train and val
    assert "val" in split.values()


def test_a_single_train_group_cannot_give_validation(tmp_path):
    rows = [("a", "x", "train", "g"), ("b", "y", "train", "g"), ("c", "x", "test", "h"), ("d", "y", "test", "h")]
    with pytest.warns(MmfuseWarning, match=r"the train split has 1 group\(s\) that could be moved"):
        path, _ = align_folder(_src(tmp_path, rows), tmp_path / "ds", rate=10.0)
    assert sorted(set(_splits(path).values())) == ["test", "train"]
