"""Round trip with the real CMU Multimodal SDK: files it writes import here, files we write read back there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")
sdk = pytest.importorskip(
    "mmsdk.mmdatasdk", reason="the CMU Multimodal SDK is not installed (pip install cmu-multimodal-sdk)"
)

from mmsdk.mmdatasdk.computational_sequence.file_ops import writeCSD  # noqa: E402

from mmfuse.data import open_dataset  # noqa: E402
from mmfuse.importers import import_csd, read_csd, write_csd  # noqa: E402
from mmfuse.importers.csd import _metadata_value  # noqa: E402

VIDEOS = ["v0", "v1", "v2", "v3"]
WORDS = [(0.0, 0.4, "so"), (0.4, 0.5, "sp"), (0.5, 1.0, "good")]
# Every key the SDK's metadata template asks for, so its writer and reader do not complain.
SDK_META = {
    "root name": "",
    "computational sequence description": "test",
    "computational sequence version": "1.0",
    "alignment compatible": True,
    "dataset name": "toy",
    "dataset version": "1.0",
    "creator": "tests",
    "contact": "none",
    "featureset bib citation": "none",
    "dataset bib citation": "none",
}


def _sdk_write(path: Path, root: str, data: dict, **meta: object) -> Path:
    """Write ``path`` with the SDK's own writer (``str(value)`` for every metadata value)."""
    entries = {
        v: {"intervals": np.asarray(iv, dtype=np.float64), "features": np.asarray(f)} for v, (iv, f) in data.items()
    }
    writeCSD(entries, {**SDK_META, "root name": root, **meta}, root, str(path))
    return path


def _text(x: object) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def test_sdk_written_files_import_with_a_label_column_by_name(tmp_path, capsys):
    words = {v: (np.array([w[:2] for w in WORDS]), np.array([[w[2].encode()] for w in WORDS])) for v in VIDEOS}
    k = np.arange(100)
    audio = {v: (np.c_[k / 100, (k + 1) / 100], np.full((100, 3), float(i))) for i, v in enumerate(VIDEOS)}
    labels = {v: (np.array([[0.0, 1.0]]), np.array([[i - 1.5, 0.5 * i]])) for i, v in enumerate(VIDEOS)}
    w = _sdk_write(tmp_path / "words.csd", "words", words)
    a = _sdk_write(tmp_path / "covarep.csd", "COVAREP", audio)
    lab = _sdk_write(tmp_path / "labels.csd", "All Labels", labels, **{"dimension names": ["sentiment", "happy"]})
    capsys.readouterr()  # the SDK prints status lines

    seq = read_csd(lab)
    assert seq.metadata["dimension names"] == ["sentiment", "happy"]  # the SDK wrote "['sentiment', 'happy']"
    assert seq.metadata["root name"] == "All Labels" and seq.metadata["alignment compatible"] is True
    path, report = import_csd({"words": w, "audio": a}, tmp_path / "ds", labels=lab, label_column="happy")
    ds = open_dataset(path)
    assert report.samples == 4 and sorted(ds.ids) == [f"{v}[0]" for v in VIDEOS]
    assert {ds[i].id: float(ds[i].label) for i in range(4)} == {f"{v}[0]": 0.5 * i for i, v in enumerate(VIDEOS)}
    assert ds.lengths.tolist() == [2] * 4  # "so" and "good"; the SDK's "sp" is dropped


def test_files_we_write_read_back_in_the_sdk(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = {v: (np.c_[np.arange(5) / 10, np.arange(1, 6) / 10], rng.normal(size=(5, 4))) for v in VIDEOS}
    p = write_csd(tmp_path / "mine.csd", data, root_name="mine", metadata={"dimension names": list("abcd")})
    seq = sdk.computational_sequence(str(p))
    capsys.readouterr()
    assert _text(seq.metadata["root name"]) == "mine"  # before: b'"mine"'
    assert _metadata_value(_text(seq.metadata["dimension names"])) == list("abcd")
    assert sorted(seq.data) == VIDEOS
    for v, (iv, feats) in data.items():
        np.testing.assert_array_equal(seq.data[v]["intervals"][()], iv)
        np.testing.assert_allclose(seq.data[v]["features"][()], feats)
    back = read_csd(p)  # and our reader still reads our own files
    assert back.metadata == {"root name": "mine", "dimension names": list("abcd")}


def test_files_mmfuse_wrote_before_still_read(tmp_path):
    import h5py

    data = {"v": (np.array([[0.0, 1.0]]), np.ones((1, 2)))}
    p = write_csd(tmp_path / "old.csd", data, root_name="old", metadata={"dimension names": []})
    with h5py.File(p, "r+") as h5:  # what write_csd wrote before: every value JSON-encoded
        for key, value in (("root name", '"old"'), ("dimension names", '["x", "y"]')):
            h5["old/metadata"][key][0] = value
    assert read_csd(p).metadata == {"root name": "old", "dimension names": ["x", "y"]}
