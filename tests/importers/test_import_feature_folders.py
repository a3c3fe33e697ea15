"""Feature folders: one folder per modality, one file per video, matched by name; nothing dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmfuse.data import open_dataset
from mmfuse.errors import DataError, StreamError
from mmfuse.importers import import_feature_folders


def _csv(path: Path, t: np.ndarray, values: np.ndarray, fmt: str = "%.6g") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "timestamp," + ",".join(f"f{j}" for j in range(values.shape[1]))
    np.savetxt(path, np.c_[t, values], delimiter=",", header=header, comments="", fmt=fmt)


def _tree(tmp: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """audio (CSV, 10 Hz), clip (CSV, float16 text, 2 Hz), face (NPZ float16, 5 Hz); v3 has no clip."""
    rng = np.random.default_rng(0)
    root = tmp / "feats"
    clip16 = {}
    for v in ["v0", "v1", "v2", "v3", "v4"]:
        t = np.arange(20) / 10
        _csv(root / "audio" / f"{v}.csv", t, rng.normal(size=(20, 3)))
        if v != "v3":
            emb = rng.normal(size=(4, 8)).astype(np.float16)  # CLIP-like embeddings stored as float16
            clip16[v] = emb
            _csv(root / "clip" / f"{v}.csv", np.arange(4) / 2, emb.astype(np.float64), fmt="%.5g")
        (root / "face").mkdir(parents=True, exist_ok=True)
        np.savez(
            root / "face" / f"{v}.npz", timestamps=np.arange(10) / 5, values=rng.normal(size=(10, 2)).astype(np.float16)
        )
    _csv(root / "audio" / "Extra_1.csv", np.arange(3) / 10, np.zeros((3, 3)))  # features, no label
    labels = (
        "video,label,split\nv0,pos,train\nv1,neg,train\nv2,pos,val\nv3,neg,test\nv4,pos,test\nextra1,neg,\nghost,pos,\n"
    )
    (root / "labels.csv").write_text(labels)
    return root, clip16


def test_import_keeps_masks_and_reports(tmp_path):
    root, clip16 = _tree(tmp_path)
    path, report = import_feature_folders(root, tmp_path / "ds", rate=2.0, kinds={"clip": "embedding"})
    ds = open_dataset(path)
    assert ds.ids == ["v0", "v1", "v2", "v3", "v4"]
    assert sorted(ds.modalities) == ["audio", "clip", "face"] and ds.modalities["clip"].kind == "embedding"
    assert ds.splits == ["train", "train", "val", "test", "test"]
    rec3 = ds[3]  # v3 has no clip file: kept, clip masked, audio and face present
    assert not rec3.masks["clip"].any() and rec3.masks["audio"].all() and np.all(rec3.values["clip"] == 0)
    assert report.missing == {"audio": [], "clip": ["v3"], "face": []}
    assert report.skipped == {"no label": ["Extra_1"], "label but no feature file": ["extra1", "ghost"]}
    assert any("'Extra_1' (audio)" in m and "'extra1' (labels)" in m for m in report.mismatched)
    # the clip grid steps (0, 0.5, 1.0, 1.5 s) are the clip rows: float16 values come back exactly, unit-normed
    rec0 = ds[0]
    want = clip16["v0"].astype(np.float32)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(rec0.values["clip"][:4], want, rtol=2e-3, atol=1e-4)
    saved = json.loads((path / "import_report.json").read_text())
    assert saved["missing"] == {"clip": ["v3"]} and saved["ok"] is False
    meta = json.loads((path / "meta.json").read_text())
    assert meta["extra_meta"]["align"]["source"] == str(root)
    assert (path / "validation.md").is_file()


def test_reference_mode_leaves_out_videos_without_the_reference(tmp_path):
    root, _ = _tree(tmp_path)
    path, report = import_feature_folders(root, tmp_path / "ds", reference="clip", modalities=["audio", "clip"])
    ds = open_dataset(path)
    assert "v3" not in ds.ids and report.skipped["no reference modality 'clip'"] == ["v3"]
    assert ds.lengths.tolist() == [4] * len(ds) and sorted(ds.modalities) == ["audio", "clip"]


def test_errors_name_the_users_files(tmp_path):
    root, _ = _tree(tmp_path)
    (root / "audio" / "v1.csv").write_text("timestamp,f0,f1,f2\n0.0,1,2,3\n0.1,1,oops,3\n")
    with pytest.raises(DataError, match=r"feats/audio/v1\.csv"):
        import_feature_folders(root, tmp_path / "ds", rate=2.0)
    (root / "audio" / "v1.csv").write_text("timestamp,f0,f1,f2\n0.2,1,2,3\n0.1,1,2,3\n")
    with pytest.raises(StreamError, match=r"feats/audio/v1\.csv.*sorted"):
        import_feature_folders(root, tmp_path / "ds", rate=2.0)
    assert not (tmp_path / "ds").exists()


def test_bad_options(tmp_path):
    root, _ = _tree(tmp_path)
    with pytest.raises(ValueError, match="exactly one of 'rate'"):
        import_feature_folders(root, tmp_path / "ds")
    with pytest.raises(ValueError, match="'reference' parameter of import_feature_folders"):
        import_feature_folders(root, tmp_path / "ds", reference="video")
    with pytest.raises(DataError, match="modality folder not found"):
        import_feature_folders(root, tmp_path / "ds", rate=2.0, modalities=["audio", "text"])
    (root / "labels.csv").write_text("name,label\nv0,pos\n")
    with pytest.raises(DataError, match="video id column"):
        import_feature_folders(root, tmp_path / "ds", rate=2.0)
    np.savez(root / "audio" / "v0.npz", timestamps=np.arange(2.0), values=np.ones((2, 3)))
    (root / "labels.csv").write_text("video,label\nv0,pos\n")
    with pytest.raises(DataError, match="'v0' is given twice"):
        import_feature_folders(root, tmp_path / "ds", rate=2.0)
