"""ModalityNormalizers: fitting per modality, records, and the JSON + safetensors save format."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import safetensors.numpy

from mmfuse.errors import DataError, NotFittedError
from mmfuse.preprocess import (
    JSON_NAME,
    TENSORS_NAME,
    IdentityNormalizer,
    L2Normalizer,
    ModalityNormalizers,
    Normalizer,
    ZScoreNormalizer,
    default_normalizers,
    register_normalizer,
)


@dataclass
class Record:
    """Stands in for mmfuse.data.SequenceRecord (same field names)."""

    id: str
    values: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    label: int = 0
    context: dict[str, str] = field(default_factory=dict)


class StackedViews:
    """Stands in for a MultimodalDataset view: stacked(modality) -> ([S, D], [S])."""

    def __init__(self, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.arrays = arrays
        self.modalities = {m: SimpleNamespace(kind="continuous") for m in arrays}

    def stacked(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        return self.arrays[modality]


def _arrays(seed: int = 0, s: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, d in (("acc", 3), ("emb", 5), ("codes", 2)):
        X = rng.normal(2.0, 3.0, size=(s, d)).astype(np.float32)
        mask = rng.random(s) > 0.3
        mask[0] = True
        X[~mask] = np.nan
        out[name] = (X, mask)
    out["codes"] = (np.where(out["codes"][1][:, None], 1.0, np.nan).astype(np.float32), out["codes"][1])
    return out


def _norms(clip: float | None = None) -> ModalityNormalizers:
    return default_normalizers({"acc": "continuous", "emb": "embedding", "codes": "discrete"}, clip=clip)


def test_default_normalizers_pick_by_kind() -> None:
    specs = {
        "b": SimpleNamespace(kind="interval"),
        "a": SimpleNamespace(kind="continuous"),
        "e": SimpleNamespace(kind="embedding"),
        "d": SimpleNamespace(kind="discrete"),
    }
    norms = default_normalizers(specs, clip=4.0)
    assert norms.modalities == ["a", "b", "d", "e"]  # canonical sorted order
    assert [type(norms[m]) for m in norms] == [ZScoreNormalizer, ZScoreNormalizer, IdentityNormalizer, L2Normalizer]
    assert norms["a"].get_params()["clip"] == 4.0
    with pytest.raises(ValueError, match=r"modality 'x': its kind must be one of .* Got 'audio'"):
        default_normalizers({"x": SimpleNamespace(kind="audio")})


def test_default_normalizers_accept_modality_spec() -> None:
    spec_module = pytest.importorskip("mmfuse.data")
    specs = {"acc": spec_module.ModalitySpec("acc", 3), "txt": spec_module.ModalitySpec("txt", 8, kind="embedding")}
    norms = default_normalizers(specs)
    assert isinstance(norms["acc"], ZScoreNormalizer) and isinstance(norms["txt"], L2Normalizer)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="non-empty mapping"):
        ModalityNormalizers({})
    with pytest.raises(TypeError, match=r"modality 'a' of ModalityNormalizers must be a Normalizer\. Got str"):
        ModalityNormalizers({"a": "zscore"})  # type: ignore[dict-item]


def test_fit_arrays_matches_individual_normalisers() -> None:
    arrays = _arrays()
    norms = _norms().fit_arrays(arrays)
    assert norms.is_fitted
    single = ZScoreNormalizer().fit(*arrays["acc"])
    np.testing.assert_array_equal(norms["acc"].mean_, single.mean_)
    out = norms.transform_arrays(arrays)
    assert set(out) == {"acc", "emb", "codes"}
    for m, (_, mask) in arrays.items():
        np.testing.assert_array_equal(out[m][~mask], 0.0)
        assert np.isfinite(out[m]).all()
    np.testing.assert_allclose(np.linalg.norm(out["emb"][arrays["emb"][1]], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["codes"][arrays["codes"][1]], 1.0)
    back = norms.inverse_transform_arrays({m: (out[m], mask) for m, (_, mask) in arrays.items()})
    mask = arrays["acc"][1]
    np.testing.assert_allclose(back["acc"][mask], arrays["acc"][0][mask], rtol=1e-5, atol=1e-5)


def test_fit_from_dataset_view() -> None:
    arrays = _arrays()
    norms = _norms().fit(StackedViews(arrays))
    np.testing.assert_array_equal(norms["acc"].mean_, ZScoreNormalizer().fit(*arrays["acc"]).mean_)
    with pytest.raises(DataError, match=r"The data set must hold exactly .* missing \['emb'\]"):
        _norms().fit(StackedViews({k: v for k, v in arrays.items() if k != "emb"}))


def test_fit_arrays_is_all_or_nothing_and_names_the_modality() -> None:
    arrays = _arrays()
    bad = arrays["emb"][0].copy()
    bad[0, 0] = np.inf  # row 0 is present
    arrays["emb"] = (bad, arrays["emb"][1])
    norms = _norms()
    with pytest.raises(DataError, match=r"Modality 'emb' \(L2Normalizer\): .* at row 0"):
        norms.fit_arrays(arrays)
    assert not any(n.is_fitted for n in norms.values())


def test_modality_set_must_match() -> None:
    arrays = _arrays()
    norms = _norms().fit_arrays(arrays)
    extra = {**arrays, "gyro": arrays["acc"]}
    with pytest.raises(DataError, match=r"without a normaliser \['gyro'\]"):
        norms.transform_arrays(extra)
    with pytest.raises(DataError, match=r"missing \['acc'\]"):
        norms.fit_arrays({k: v for k, v in arrays.items() if k != "acc"})


def test_transform_record_returns_new_record() -> None:
    arrays = _arrays()
    norms = _norms().fit_arrays(arrays)
    rec = Record(
        id="s1", values={m: X[:7] for m, (X, _) in arrays.items()}, masks={m: k[:7] for m, (_, k) in arrays.items()}
    )
    original = {m: v.copy() for m, v in rec.values.items()}
    out = norms.transform_record(rec)
    assert out is not rec and out.id == "s1" and out.label == rec.label
    expected = norms.transform_arrays({m: (rec.values[m], rec.masks[m]) for m in rec.values})
    for m in arrays:
        np.testing.assert_array_equal(out.values[m], expected[m])
        np.testing.assert_array_equal(out.masks[m], rec.masks[m])
        np.testing.assert_array_equal(out.values[m][~rec.masks[m]], 0.0)
        np.testing.assert_array_equal(rec.values[m], original[m])  # input untouched (NaN stays NaN)
    assert norms(rec).values["acc"].tolist() == out.values["acc"].tolist()  # callable form
    bad = Record(id="s2", values={"acc": rec.values["acc"]}, masks={"acc": rec.masks["acc"]})
    with pytest.raises(DataError, match=r"Record 's2'.values must hold exactly"):
        norms.transform_record(bad)


def test_transform_record_with_real_sequence_record() -> None:
    spec_module = pytest.importorskip("mmfuse.data")
    arrays = _arrays()
    norms = _norms().fit_arrays(arrays)
    rec = spec_module.SequenceRecord(
        id="r",
        group="g",
        split="train",
        values={m: np.nan_to_num(X[:5]) for m, (X, _) in arrays.items()},
        masks={m: k[:5] for m, (_, k) in arrays.items()},
        label=1,
    )
    out = norms.transform_record(rec)
    assert type(out) is type(rec) and out.group == "g"
    np.testing.assert_allclose(np.linalg.norm(out.values["emb"][rec.masks["emb"]], axis=1), 1.0, rtol=1e-5)


def test_unfitted_collection_raises() -> None:
    with pytest.raises(NotFittedError, match="ZScoreNormalizer is not fitted"):
        _norms().transform_arrays(_arrays())


# ---------------------------------------------------------------------------------------------- save/load
def test_save_load_round_trip(tmp_path: Path) -> None:
    arrays = _arrays()
    norms = _norms(clip=6.0).fit_arrays(arrays)
    path = norms.save(tmp_path)
    assert path == tmp_path / JSON_NAME
    assert sorted(p.name for p in tmp_path.iterdir()) == [JSON_NAME, TENSORS_NAME]  # no temp files, no pickle
    loaded = ModalityNormalizers.load(tmp_path)
    assert loaded.modalities == norms.modalities
    assert {m: type(n) for m, n in loaded.items()} == {m: type(n) for m, n in norms.items()}
    assert loaded["acc"].get_params() == {"clip": 6.0, "with_mean": True, "with_std": True}
    np.testing.assert_array_equal(loaded["acc"].mean_, norms["acc"].mean_)
    assert loaded["acc"].mean_.dtype == np.float64
    assert loaded["emb"].n_samples_seen_ == norms["emb"].n_samples_seen_
    test_arrays = _arrays(seed=5, s=11)
    before, after = norms.transform_arrays(test_arrays), loaded.transform_arrays(test_arrays)
    for m in before:
        np.testing.assert_allclose(after[m], before[m], rtol=1e-7, atol=0)


def test_saved_json_describes_owners(tmp_path: Path) -> None:
    _norms().fit_arrays(_arrays()).save(tmp_path)
    index = json.loads((tmp_path / JSON_NAME).read_text())
    assert index["modalities"]["acc"]["normalizer"] == "zscore"
    assert index["modalities"]["acc"]["tensors"] == {"mean_": "acc/mean_", "scale_": "acc/scale_"}
    assert index["modalities"]["emb"]["normalizer"] == "l2" and index["modalities"]["emb"]["tensors"] == {}
    assert index["tensors_sha256"] == hashlib.sha256((tmp_path / TENSORS_NAME).read_bytes()).hexdigest()
    assert set(safetensors.numpy.load_file(str(tmp_path / TENSORS_NAME))) == {"acc/mean_", "acc/scale_"}


def test_unfitted_entries_round_trip(tmp_path: Path) -> None:
    ModalityNormalizers({"a": ZScoreNormalizer(with_std=False), "b": L2Normalizer(eps=1e-3)}).save(tmp_path)
    loaded = ModalityNormalizers.load(tmp_path)
    assert not loaded.is_fitted
    assert loaded["a"].get_params()["with_std"] is False and loaded["b"].get_params() == {"eps": 1e-3}


def test_save_overwrites_previous_save(tmp_path: Path) -> None:
    _norms().fit_arrays(_arrays(seed=1)).save(tmp_path)
    second = _norms().fit_arrays(_arrays(seed=2))
    second.save(tmp_path)
    np.testing.assert_array_equal(ModalityNormalizers.load(tmp_path)["acc"].mean_, second["acc"].mean_)


def test_save_refuses_unregistered_class(tmp_path: Path) -> None:
    class Local(IdentityNormalizer):
        pass

    with pytest.raises(ValueError, match="Local is not a registered normaliser"):
        ModalityNormalizers({"a": Local()}).save(tmp_path)
    assert not (tmp_path / JSON_NAME).exists()


def _rewrite_index(folder: Path, edit) -> None:  # type: ignore[no-untyped-def]
    index = json.loads((folder / JSON_NAME).read_text())
    edit(index)
    (folder / JSON_NAME).write_text(json.dumps(index))


def test_load_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=JSON_NAME):
        ModalityNormalizers.load(tmp_path)
    _norms().fit_arrays(_arrays()).save(tmp_path)
    (tmp_path / TENSORS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=TENSORS_NAME):
        ModalityNormalizers.load(tmp_path)


def test_load_corrupt_tensor_file(tmp_path: Path) -> None:
    _norms().fit_arrays(_arrays()).save(tmp_path)
    blob = (tmp_path / TENSORS_NAME).read_bytes()
    (tmp_path / TENSORS_NAME).write_bytes(blob[:-8])
    with pytest.raises(DataError, match=f"{TENSORS_NAME} does not match .*{JSON_NAME}"):
        ModalityNormalizers.load(tmp_path)
    # A garbage file whose checksum was also updated still fails, naming the file.
    (tmp_path / TENSORS_NAME).write_bytes(b"not a safetensors file")
    _rewrite_index(tmp_path, lambda ix: ix.update(tensors_sha256=hashlib.sha256(b"not a safetensors file").hexdigest()))
    with pytest.raises(DataError, match=f"{TENSORS_NAME} is not a readable safetensors file"):
        ModalityNormalizers.load(tmp_path)


def test_load_corrupt_json(tmp_path: Path) -> None:
    _norms().fit_arrays(_arrays()).save(tmp_path)
    (tmp_path / JSON_NAME).write_text('{"format": "mmfuse-normalizers", ')
    with pytest.raises(DataError, match=f"{JSON_NAME} is not a valid JSON file"):
        ModalityNormalizers.load(tmp_path)
    (tmp_path / JSON_NAME).write_text("[1, 2]")
    with pytest.raises(DataError, match="is not an mmfuse normalisers file"):
        ModalityNormalizers.load(tmp_path)


def test_load_unknown_normaliser_name(tmp_path: Path) -> None:
    _norms().fit_arrays(_arrays()).save(tmp_path)
    _rewrite_index(tmp_path, lambda ix: ix["modalities"]["acc"].update(normalizer="robust"))
    with pytest.raises(DataError, match=rf"{JSON_NAME}, modality 'acc': unknown normaliser 'robust'. Registered: "):
        ModalityNormalizers.load(tmp_path)


def test_load_missing_tensor(tmp_path: Path) -> None:
    _norms().fit_arrays(_arrays()).save(tmp_path)
    tensors = safetensors.numpy.load_file(str(tmp_path / TENSORS_NAME))
    del tensors["acc/scale_"]
    blob = safetensors.numpy.save(tensors)
    (tmp_path / TENSORS_NAME).write_bytes(blob)
    _rewrite_index(tmp_path, lambda ix: ix.update(tensors_sha256=hashlib.sha256(blob).hexdigest()))
    with pytest.raises(DataError, match=r"modality 'acc': the tensor 'scale_' \('acc/scale_'\) is missing from .*"):
        ModalityNormalizers.load(tmp_path)


def test_load_wrong_tensor_shape_and_bad_params(tmp_path: Path) -> None:
    _norms().fit_arrays(_arrays()).save(tmp_path)
    tensors = safetensors.numpy.load_file(str(tmp_path / TENSORS_NAME))
    tensors["acc/mean_"] = np.zeros(7)
    blob = safetensors.numpy.save(tensors)
    (tmp_path / TENSORS_NAME).write_bytes(blob)
    _rewrite_index(tmp_path, lambda ix: ix.update(tensors_sha256=hashlib.sha256(blob).hexdigest()))
    with pytest.raises(DataError, match=r"modality 'acc': ZScoreNormalizer.mean_ must have shape \(3,\)"):
        ModalityNormalizers.load(tmp_path)
    _norms().fit_arrays(_arrays()).save(tmp_path)
    _rewrite_index(tmp_path, lambda ix: ix["modalities"]["emb"]["params"].update(eps=-1))
    with pytest.raises(DataError, match=r"modality 'emb': bad parameters for 'l2'"):
        ModalityNormalizers.load(tmp_path)


@register_normalizer("test-offset")
class Offset(Normalizer):
    """A user-defined normaliser: adds the training mean plus a fixed shift."""

    fitted_arrays = ("offset_",)

    def __init__(self, *, shift: float = 0.0) -> None:
        self.shift = shift

    def _fit(self, X: np.ndarray) -> None:
        self.offset_ = X.mean(axis=0) + self.shift

    def _transform(self, X):  # type: ignore[no-untyped-def]
        return X - self.offset_

    def _inverse_transform(self, X):  # type: ignore[no-untyped-def]
        return X + self.offset_


def test_custom_registered_normaliser_round_trip(tmp_path: Path) -> None:
    norms = ModalityNormalizers({"a": Offset(shift=2.5)})
    norms.fit_arrays({"a": (np.array([[1.0, 2.0], [3.0, 4.0]]), None)})
    norms.save(tmp_path)
    loaded = ModalityNormalizers.load(tmp_path)
    assert isinstance(loaded["a"], Offset) and loaded["a"].shift == 2.5
    np.testing.assert_array_equal(loaded["a"].offset_, [4.5, 5.5])
    assert isinstance(loaded["a"], Normalizer)


def test_fit_on_training_split_of_a_real_dataset(tmp_path: Path) -> None:
    data = pytest.importorskip("mmfuse.data")
    rng = np.random.default_rng(3)
    records = []
    for i in range(6):
        T = 4 + i
        acc = rng.normal(10.0 if i < 4 else -50.0, 2.0, size=(T, 3)).astype(np.float32)
        mask = rng.random(T) > 0.25
        acc[~mask] = 0.0
        records.append(
            data.SequenceRecord(
                id=f"s{i}",
                group=f"g{i}",
                split="train" if i < 4 else "test",
                values={"acc": acc},
                masks={"acc": mask},
                label=i % 2,
            )
        )
    path = data.write_dataset(
        tmp_path / "ds",
        records,
        name="toy",
        modalities=[data.ModalitySpec("acc", 3)],
        task=data.TaskSpec(type="classification", level="sample", class_names=("a", "b")),
    )
    ds = data.open_dataset(path)
    train = ds.split("train")
    norms = default_normalizers(ds.modalities).fit(train)
    X, mask = train.stacked("acc")
    np.testing.assert_allclose(norms["acc"].mean_, X[mask].astype(np.float64).mean(axis=0))  # train only
    assert norms["acc"].mean_.min() > 0  # the shifted test sequences did not leak into the statistics
    rec = train.with_transform(norms)[0]
    np.testing.assert_array_equal(
        rec.values["acc"], norms["acc"].transform(train[0].values["acc"], train[0].masks["acc"])
    )
