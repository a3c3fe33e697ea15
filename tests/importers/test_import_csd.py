"""CMU Multimodal SDK .csd import: the SDK's HDF5 layout written with h5py, word-level alignment, training."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from mmfuse.data import open_dataset  # noqa: E402
from mmfuse.errors import DataError, MmfuseWarning, StreamError  # noqa: E402
from mmfuse.importers import import_csd, read_csd, write_csd  # noqa: E402

VIDEOS = [f"vid{i}" for i in range(6)]
# words (start, end, token): "sp" is the SDK's silence marker; the last word lies after the facet frames end.
WORDS = [(0.105, 0.26, "so"), (0.26, 0.52, "this"), (0.52, 0.60, "sp"), (0.60, 0.95, "movie"), (1.5, 1.8, "rocks")]
FACET_END = 1.2  # 30 Hz frames cover [0, 1.2) s
COVAREP_END = 2.0  # 100 Hz frames cover [0, 2.0) s
SEGMENTS = [(0.0, 1.0), (1.0, 2.0)]


def _frames(rate: float, end: float) -> np.ndarray:
    k = np.arange(round(end * rate))
    return np.c_[k / rate, (k + 1) / rate]  # [n, 2] per-frame intervals, as the SDK stores them


def _corpus(tmp: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    words, covarep, facet, labels = {}, {}, {}, {}
    for i, v in enumerate(VIDEOS):
        words[v] = (np.array([w[:2] for w in WORDS]), np.array([[w[2].encode()] for w in WORDS]))
        iv = _frames(100, COVAREP_END)
        covarep[v] = (iv, rng.normal(size=(iv.shape[0], 74)))
        iv = _frames(30, FACET_END)
        facet[v] = (iv, rng.normal(size=(iv.shape[0], 35)))
        labels[v] = (np.array(SEGMENTS), np.array([[1.5 - i, 0.2], [-0.5 + i, 0.1]]))
    del facet["vid5"]  # one video has no facet at all: kept, masked
    meta = {"dimension names": ["sentiment", "happy"], "computational sequence description": "test labels"}
    return {
        "words": write_csd(tmp / "words.csd", words, root_name="TimestampedWords"),
        "covarep": write_csd(tmp / "covarep.csd", covarep, root_name="COVAREP"),
        "facet": write_csd(tmp / "facet.csd", facet, root_name="FACET 4.2"),
        "labels": write_csd(tmp / "labels.csd", labels, root_name="All Labels", metadata=meta),
    }


SPLITS = {"train": ["vid0", "vid1", "vid2"], "valid": ["vid3"], "test": ["vid4", "vid5"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _corpus(tmp_path_factory.mktemp("csd"))


@pytest.fixture(scope="module")
def imported(corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    seqs = {m: corpus[m] for m in ("words", "covarep", "facet")}
    out = tmp_path_factory.mktemp("ds") / "mosi-like"
    return import_csd(seqs, out, labels=corpus["labels"], reference="words", splits=SPLITS)


def _hand_mean(frames: np.ndarray, values: np.ndarray, a: float, b: float) -> np.ndarray | None:
    """Overlap-weighted mean of the frames overlapping [a, b), one frame at a time."""
    total, acc = 0.0, np.zeros(values.shape[1])
    for (s, e), x in zip(frames, values, strict=True):
        w = min(e, b) - max(s, a)
        if w > 0:
            total += w
            acc += w * x
    return acc / total if total > 0 else None


def test_read_csd_layout_and_metadata(corpus):
    seq = read_csd(corpus["labels"])
    assert seq.name == "All Labels" and seq.video_ids == VIDEOS and seq.dim == 2
    assert seq.metadata["dimension names"] == ["sentiment", "happy"]
    assert seq.metadata["root name"] == "All Labels"
    words = read_csd(corpus["words"])
    assert words.is_text and words.features["vid0"].tolist() == [w[2] for w in WORDS]
    with pytest.raises(DataError, match="holds words"):
        words.stream("vid0")
    cov = read_csd(corpus["covarep"], videos=["vid1"])
    s = cov.stream("vid1")
    assert s.kind.value == "interval" and s.values.shape == (200, 74) and s.ends[0] == pytest.approx(0.01)


def test_word_level_alignment_matches_hand_computation(imported, corpus):
    path, report = imported
    ds = open_dataset(path)
    assert sorted(ds.modalities) == ["covarep", "facet"]  # the words reference holds strings: a timeline only
    assert ds.ids == [f"{v}[{k}]" for v in VIDEOS for k in range(2)]
    assert ds.groups == [v for v in VIDEOS for _ in range(2)]
    split = {"vid3": "val", "vid4": "test", "vid5": "test"}
    assert ds.splits == [split.get(v, "train") for v in VIDEOS for _ in range(2)]
    # segment [0, 1): the words so, this, movie ("sp" is not a step); segment [1, 2): rocks
    assert ds.lengths.tolist() == [3, 1] * 6
    cov = read_csd(corpus["covarep"], videos=["vid2"])
    fac = read_csd(corpus["facet"], videos=["vid2"])
    rec0, rec1 = ds[4], ds[5]  # vid2[0], vid2[1]
    np.testing.assert_allclose(rec0.timestamps, [0.105, 0.26, 0.60])
    for j, (a, b, _) in enumerate([WORDS[0], WORDS[1], WORDS[3]]):
        want_c = _hand_mean(cov.intervals["vid2"], cov.features["vid2"], a, b)
        want_f = _hand_mean(fac.intervals["vid2"], fac.features["vid2"], a, b)
        np.testing.assert_allclose(rec0.values["covarep"][j], want_c, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rec0.values["facet"][j], want_f, rtol=1e-5, atol=1e-6)
    assert rec0.masks["facet"].all() and rec0.masks["covarep"].all()
    # "rocks" [1.5, 1.8) lies after the last facet frame: masked (zeros), covarep present
    assert rec1.masks["facet"].tolist() == [False] and rec1.masks["covarep"].tolist() == [True]
    assert np.all(rec1.values["facet"] == 0)
    want = _hand_mean(cov.intervals["vid2"], cov.features["vid2"], 1.5, 1.8)
    np.testing.assert_allclose(rec1.values["covarep"][0], want, rtol=1e-5, atol=1e-6)
    assert [ds[i].label for i in (4, 5)] == pytest.approx([1.5 - 2, -0.5 + 2])
    # vid5 has no facet sequence: kept, facet masked everywhere, and reported
    assert not ds[10].masks["facet"].any() and ds[10].masks["covarep"].all()
    assert report.missing["facet"] == ["vid5"] and report.samples == 12
    saved = json.loads((path / "import_report.json").read_text())
    assert saved["missing"] == {"facet": ["vid5"]}


@pytest.mark.slow  # about 7 s: compare also writes its report
def test_round_trip_trains(imported, tmp_path):
    from mmfuse.evaluate.compare import CompareConfig, compare

    path, _ = imported
    cfg = CompareConfig(
        dataset=str(path),
        fusions=["concat"],
        seeds=1,
        epochs=2,
        model_overrides={"hidden": 8},
        out_dir=str(tmp_path / "run"),
        device="cpu",
    )
    result = compare(cfg)
    assert len(result.rows) == 1
    metrics = json.loads((tmp_path / "run" / "models" / "concat-seed0" / "test_metrics.json").read_text())
    assert metrics["n"] == 4 and np.isfinite(metrics["mae"])


def test_binary_task_csv_labels_and_reported_leftovers(corpus, tmp_path):
    rows = ["video,label"] + [f"{v},{(-1) ** i * 0.5}" for i, v in enumerate(VIDEOS[:5])] + ["ghost,1.0"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    seqs = {m: corpus[m] for m in ("words", "covarep")}
    path, report = import_csd(seqs, tmp_path / "ds", labels=tmp_path / "labels.csv", task="binary", seed=1)
    ds = open_dataset(path)
    assert ds.ids == VIDEOS[:5] and ds.lengths.tolist() == [4] * 5  # one sample per video, all words but "sp"
    assert ds.task.class_names == ("negative", "positive")
    assert [int(ds[i].label) for i in range(5)] == [1, 0, 1, 0, 1]
    assert report.skipped == {"no labels": ["vid5"], "labels but no reference 'words'": ["ghost"]}
    assert set(ds.split_names) == {"train", "val", "test"}


def test_label_column_by_dimension_name(corpus, tmp_path):
    seqs = {m: corpus[m] for m in ("words", "covarep")}
    path, _ = import_csd(seqs, tmp_path / "ds", labels=corpus["labels"], label_column="happy", splits=SPLITS)
    assert open_dataset(path)[0].label == pytest.approx(0.2)
    with pytest.raises(DataError, match="no label dimension 'angry'"):
        import_csd(seqs, tmp_path / "ds2", labels=corpus["labels"], label_column="angry")


def test_numeric_reference_is_a_modality_and_identity_aligned(corpus, tmp_path):
    glove = {v: (np.array([w[:2] for w in WORDS]), np.arange(10.0).reshape(5, 2) + i) for i, v in enumerate(VIDEOS)}
    g = write_csd(tmp_path / "glove.csd", glove, root_name="glove_vectors")
    path, _ = import_csd({"glove": g, "covarep": corpus["covarep"]}, tmp_path / "ds", reference="glove",
                         labels=corpus["labels"], splits=SPLITS)  # fmt: skip
    rec = open_dataset(path)[0]  # vid0[0]: words 0-3 have their midpoint in [0, 1) (no "sp" removal: numbers)
    np.testing.assert_array_equal(rec.values["glove"], glove["vid0"][1][:4])


# --------------------------------------------------------------------------------------------- bad input


def _one(tmp: Path, name: str, fill) -> Path:
    p = tmp / f"{name}.csd"
    with h5py.File(p, "w") as f:
        fill(f.create_group("seq").create_group("data").create_group("v1"))
    return p


def test_clear_errors_name_file_video_and_dataset(tmp_path):
    iv = np.array([[0.0, 0.1], [0.1, 0.2]])
    p = _one(tmp_path, "nofeat", lambda g: g.create_dataset("intervals", data=iv))
    with pytest.raises(DataError, match=r"nofeat\.csd.*video 'v1'.*no 'features' dataset"):
        read_csd(p)

    def mismatch(g):
        g.create_dataset("intervals", data=iv)
        g.create_dataset("features", data=np.zeros((3, 2)))

    with pytest.raises(DataError, match="'features' has 3 rows but 'intervals' has 2"):
        read_csd(_one(tmp_path, "mismatch", mismatch))

    def nan(g):
        g.create_dataset("intervals", data=iv)
        g.create_dataset("features", data=np.array([[0.0], [np.nan]]))

    match = r"video 'v1', dataset 'features': features must be finite. Got nan at row 1, column 0 \(1 non-finite"
    with pytest.raises(DataError, match=match):
        read_csd(_one(tmp_path, "nan", nan))

    def backwards(g):
        g.create_dataset("intervals", data=np.array([[0.0, 0.1], [0.3, 0.2]]))
        g.create_dataset("features", data=np.zeros((2, 1)))

    with pytest.raises(DataError, match=r"dataset 'intervals': row 1 ends at 0.2 before it starts at 0.3"):
        read_csd(_one(tmp_path, "backwards", backwards))

    def shape(g):
        g.create_dataset("intervals", data=np.zeros((2, 3)))
        g.create_dataset("features", data=np.zeros((2, 1)))

    with pytest.raises(DataError, match=r"must be \[n, 2\]"):
        read_csd(_one(tmp_path, "shape", shape))


def test_unsorted_intervals_are_sorted_with_a_warning(tmp_path):
    def unsorted(g):
        g.create_dataset("intervals", data=np.array([[0.2, 0.3], [0.0, 0.1], [0.1, 0.2]]))
        g.create_dataset("features", data=np.array([[3.0], [1.0], [2.0]]))

    with pytest.warns(MmfuseWarning, match="not sorted"):
        seq = read_csd(_one(tmp_path, "unsorted", unsorted))
    assert seq.features["v1"][:, 0].tolist() == [1.0, 2.0, 3.0]
    assert seq.intervals["v1"][:, 0].tolist() == [0.0, 0.1, 0.2]


def test_corrupt_truncated_and_odd_files(tmp_path, corpus):
    bad = tmp_path / "garbage.csd"
    bad.write_bytes(b"this is not hdf5")
    with pytest.raises(DataError, match=r"garbage\.csd: not a readable HDF5 file"):
        read_csd(bad)
    data = corpus["covarep"].read_bytes()
    cut = tmp_path / "truncated.csd"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"truncated\.csd"):
        read_csd(cut)
    with pytest.raises(DataError, match="not found"):
        read_csd(tmp_path / "nope.csd")
    two = tmp_path / "two.csd"
    with h5py.File(two, "w") as f:
        f.create_group("a")
        f.create_group("b")
    with pytest.raises(DataError, match="one root group"):
        read_csd(two)


def test_import_refuses_bad_options_and_nested_rows(corpus, tmp_path):
    seqs = {m: corpus[m] for m in ("words", "covarep")}
    with pytest.raises(ValueError, match="'reference' parameter of import_csd"):
        import_csd(seqs, tmp_path / "a", labels=corpus["labels"], reference="nope")
    with pytest.raises(StreamError, match="'collapse' parameter"):
        import_csd(seqs, tmp_path / "a", labels=corpus["labels"], collapse="median")
    with pytest.raises(ValueError, match="'task' parameter of import_csd"):
        import_csd(seqs, tmp_path / "a", labels=corpus["labels"], task="ordinal")
    dup = {v: (np.array([[0.0, 0.5], [0.0, 0.5], [0.5, 1.0]]), np.ones((3, 1))) for v in VIDEOS}
    p = write_csd(tmp_path / "dup.csd", dup, root_name="dup")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(StreamError, match=r"dup\.csd.*video 'vid0'.*duplicate timestamp"):
            import_csd({"words": corpus["words"], "dup": p}, tmp_path / "b", labels=corpus["labels"])
    path, _ = import_csd({"words": corpus["words"], "dup": p}, tmp_path / "c", labels=corpus["labels"],
                         duplicates="mean")  # fmt: skip
    assert open_dataset(path)[0].masks["dup"].all()
    assert not (tmp_path / "b").exists()  # nothing half-written
