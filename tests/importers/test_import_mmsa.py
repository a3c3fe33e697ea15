"""MMSA pickles: refused without allow_pickle, a warning with it, padding turned into masks."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from mmfuse.data import open_dataset
from mmfuse.errors import DataError, MmfuseWarning, UnsafeLoadError
from mmfuse.importers import import_mmsa


def _aligned_split(n: int, rng: np.random.Generator, prefix: str) -> dict:
    """Aligned MMSA layout: every modality padded to L = 6; sample k is real at positions [k % 3, 6)."""
    x = {m: rng.normal(size=(n, 6, d)) for m, d in (("text", 5), ("audio", 3), ("vision", 4))}
    for k in range(n):
        for m in x:
            x[m][k, : k % 3] = 0.0  # left padding (the aligned CMU files pad at the front)
    x["vision"][0, 4] = 0.0  # one all-zero vision row inside: a masked step
    x["audio"][1, 3, 0] = -np.inf  # MMSA audio holds -inf
    ids = np.array([f"{prefix}vid{k // 2}$_${k % 2}" for k in range(n)])
    return {**x, "regression_labels": np.linspace(-2, 2, n).astype(np.float32), "id": ids, "raw_text": ["w"] * n}


def _write(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def _import(src: Path, out: Path, **kw):
    with pytest.warns(MmfuseWarning) as caught:
        try:
            return import_mmsa(src, out, allow_pickle=True, **kw)
        finally:
            assert any("allow_pickle=True" in str(w.message) for w in caught)


def test_refused_without_allow_pickle(tmp_path):
    src = _write(tmp_path / "f.pkl", {"train": {}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for allow in (False, "yes", 1):
            refused = r"f\.pkl: refusing to load .* pass allow_pickle=True \(CLI: --allow-pickle\)"
            with pytest.raises(UnsafeLoadError, match=refused):
                import_mmsa(src, tmp_path / "ds", allow_pickle=allow)  # type: ignore[arg-type]
    assert not (tmp_path / "ds").exists()


def test_aligned_values_masks_and_splits(tmp_path):
    rng = np.random.default_rng(0)
    data = {
        "train": _aligned_split(4, rng, "a"),
        "valid": _aligned_split(2, rng, "b"),
        "test": _aligned_split(3, rng, "c"),
    }
    src = _write(tmp_path / "aligned_50.pkl", data)
    path, report = _import(src, tmp_path / "ds")
    ds = open_dataset(path)
    assert ds.split_names == ["test", "train", "val"] and len(ds) == 9
    assert ds.ids[:2] == ["avid0$_$0", "avid0$_$1"] and ds.groups[:2] == ["avid0", "avid0"]
    tr = data["train"]
    rec1 = ds[1]  # real from position 1: T = 5
    assert len(rec1) == 5
    np.testing.assert_allclose(rec1.values["text"], tr["text"][1, 1:], rtol=1e-6)
    want_audio = np.where(np.isfinite(tr["audio"][1, 1:]), tr["audio"][1, 1:], 0.0)
    np.testing.assert_allclose(rec1.values["audio"], want_audio, rtol=1e-6)
    assert ds[0].masks["vision"].tolist() == [True, True, True, True, False, True]
    assert ds[0].label == pytest.approx(-2.0)
    assert any("-inf" in w for w in report.warnings)
    assert report.samples == 9 and not any(report.missing.values())


def test_unaligned_lengths_become_masks_and_are_spread(tmp_path):
    n = 3
    text = np.zeros((n, 4, 2))
    text[:, :2] = [[1.0, 1.0], [3.0, 3.0]]  # 2 real words, then padding
    audio = np.zeros((n, 8, 1))
    audio[:, :4, 0] = [1.0, 2.0, 3.0, 4.0]  # 4 real frames: 2 per word
    vision = np.zeros((n, 5, 1))
    vision[:, :1, 0] = 7.0  # 1 real frame covering both words
    split = {"text": text, "audio": audio, "vision": vision, "audio_lengths": np.array([4, 4, 4]),
             "vision_lengths": np.array([1, 1, 0]), "regression_labels": np.array([0.5, -0.5, 1.0])}  # fmt: skip
    src = _write(tmp_path / "unaligned.pkl", {"train": split, "valid": split, "test": split})
    path, report = _import(src, tmp_path / "ds", task="binary")
    ds = open_dataset(path)
    rec = ds[0]
    assert len(rec) == 2  # the real text rows
    assert rec.values["audio"][:, 0].tolist() == [1.5, 3.5]  # mean of the two frames in each word
    assert rec.values["vision"][:, 0].tolist() == [7.0, 7.0]
    assert not ds[2].masks["vision"].any()  # vision length 0: kept, masked, reported
    assert "train-2" in report.missing["vision"]
    assert ds.task.class_names == ("negative", "positive") and [ds[i].label for i in range(3)] == [1, 0, 1]


def test_corrupt_and_malformed_pickles(tmp_path):
    good = pickle.dumps({"train": _aligned_split(2, np.random.default_rng(0), "a")})
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.pkl: cannot unpickle"):
        _import(cut, tmp_path / "ds")
    with pytest.raises(DataError, match="no split found"):
        _import(_write(tmp_path / "a.pkl", {"foo": 1}), tmp_path / "ds")
    bad = _aligned_split(2, np.random.default_rng(0), "a")
    del bad["vision"]
    with pytest.raises(DataError, match=r"split 'train': no 'vision' array"):
        _import(_write(tmp_path / "b.pkl", {"train": bad}), tmp_path / "ds")
    bad = _aligned_split(2, np.random.default_rng(0), "a")
    bad["regression_labels"] = np.array([0.0, np.nan])
    with pytest.raises(DataError, match="not finite at sample 1"):
        _import(_write(tmp_path / "c.pkl", {"train": bad}), tmp_path / "ds")
    bad = _aligned_split(2, np.random.default_rng(0), "a")
    bad["vision"] = bad["vision"][:1]
    with pytest.raises(DataError, match="'vision' has 1 samples but 'audio' has 2"):
        _import(_write(tmp_path / "d.pkl", {"train": bad}), tmp_path / "ds")
