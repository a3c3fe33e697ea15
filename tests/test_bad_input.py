"""Bad input through the public entry points a user hits.

The project rule: bad input gets a clear error that names the problem and the place, and nothing half-written
is left behind. Every case below drives one kind of bad input through ``mmfuse align`` / ``mmfuse compare``
(the CLI: exit code 2, one ``error:`` line, no traceback), :meth:`mmfuse.align.Stream.create`,
:func:`mmfuse.data.write_dataset` / :func:`~mmfuse.data.open_dataset`,
:meth:`mmfuse.preprocess.ModalityNormalizers.load` or :func:`mmfuse.models.load_model`, and checks the error
type, that the message names the problem and the place, and that the destination was not written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bad_input.bad_input_table import assert_names, clean_failure, invoke
from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, open_dataset, write_dataset
from mmfuse.errors import DataError
from mmfuse.models import ModelConfig, build_model, load_model, save_model
from mmfuse.preprocess import ModalityNormalizers, ZScoreNormalizer

# ----------------------------------------------------------------------------------------------------------
# write_dataset / open_dataset

_SPECS = [ModalitySpec("acc", 2), ModalitySpec("gyro", 1)]
_CLASSES = TaskSpec("classification", "sample", ("walk", "run"))


def _record(rid: str, t: int = 4, label: object = 0, **changes: object) -> SequenceRecord:
    rec = SequenceRecord(
        id=rid,
        group=rid,
        split="train",
        values={"acc": np.ones((t, 2), np.float32), "gyro": np.ones((t, 1), np.float32)},
        masks={"acc": np.ones(t, bool), "gyro": np.ones(t, bool)},
        label=label,  # type: ignore[arg-type]
        timestamps=np.arange(t) / 10,
    )
    for k, v in changes.items():
        setattr(rec, k, v)
    return rec


def _native(tmp_path: Path) -> Path:
    records = [_record(f"s{i}", label=i % 2, split=("train", "val", "test")[i % 3]) for i in range(6)]
    return write_dataset(tmp_path / "native", records, name="native", modalities=_SPECS, task=_CLASSES)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


OPEN_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "truncated-modality-file": (
        lambda p: _truncate(p / "modalities" / "acc.parquet"),
        ("acc.parquet", "corrupt or was modified"),
    ),
    "missing-modality-file": (lambda p: (p / "modalities" / "gyro.parquet").unlink(), ("gyro.parquet", "missing")),
    "truncated-samples-file": (lambda p: _truncate(p / "samples.parquet"), ("samples.parquet", "corrupt")),
    "missing-meta": (lambda p: (p / "meta.json").unlink(), ("meta.json", "missing", "not an mmfuse data set")),
    "corrupt-meta": (lambda p: (p / "meta.json").write_text("{not json"), ("meta.json", "cannot be read as JSON")),
}


@pytest.mark.parametrize("case", list(OPEN_CASES))
def test_open_dataset_names_the_broken_file(tmp_path: Path, case: str) -> None:
    path = _native(tmp_path)
    breaker, expected = OPEN_CASES[case]
    breaker(path)
    with pytest.raises(DataError) as info:
        ds = open_dataset(path)
        for m in ds.modalities:  # modalities are read lazily: touch every one
            ds.stacked(m)
    assert_names(str(info.value), *expected)


# ----------------------------------------------------------------------------------------------------------
# mmfuse compare


def test_compare_cli_unknown_fusion_lists_the_valid_ones(tmp_path: Path) -> None:
    native = _native(tmp_path)
    out = tmp_path / "run"
    line = clean_failure(invoke("compare", "--dataset", native, "--fusion", "concat,nope", "--out", out))
    assert_names(line, "Unknown fusion 'nope'", "concat", "cross_attention", "gated", "weighted")
    assert not out.exists()


def test_compare_cli_unknown_dataset_lists_the_valid_ones(tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = clean_failure(invoke("compare", "--dataset", "no-such-set", "--out", out))
    assert_names(line, "Unknown data set 'no-such-set'", "basic-motions", "mosi-utterance")
    assert not out.exists()


def test_compare_cli_folder_that_is_not_a_data_set(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-dataset"
    folder.mkdir()
    out = tmp_path / "run"
    line = clean_failure(invoke("compare", "--dataset", folder, "--out", out))
    assert_names(line, "not-a-dataset", "meta.json")
    assert not out.exists()


def test_compare_cli_native_data_set_without_a_test_split(tmp_path: Path) -> None:
    records = [_record(f"s{i}", label=i % 2, split=("train", "val")[i % 2]) for i in range(4)]
    native = write_dataset(tmp_path / "native", records, name="native", modalities=_SPECS, task=_CLASSES)
    out = tmp_path / "run"
    line = clean_failure(invoke("compare", "--dataset", native, "--seeds", "1", "--epochs", "1", "--out", out))
    assert_names(line, "'native'", "['test']", "'train', 'val' and 'test'", "['train', 'val']")
    assert not out.exists(), "a refused compare left a run directory behind"


@pytest.mark.parametrize("case", ["truncated-modality-file", "truncated-samples-file", "corrupt-meta"])
def test_compare_cli_corrupt_native_data_set(tmp_path: Path, case: str) -> None:
    native = _native(tmp_path)
    breaker, expected = OPEN_CASES[case]
    breaker(native)
    out = tmp_path / "run"
    line = clean_failure(invoke("compare", "--dataset", native, "--seeds", "1", "--epochs", "1", "--out", out))
    assert_names(line, *expected)
    assert not out.exists(), "a refused compare left a run directory behind"


# ----------------------------------------------------------------------------------------------------------
# ModalityNormalizers.load


def _saved_normalizers(tmp_path: Path) -> Path:
    norms = ModalityNormalizers({"acc": ZScoreNormalizer(), "gyro": ZScoreNormalizer()})
    rng = np.random.default_rng(0)
    norms.fit_arrays({"acc": (rng.normal(size=(8, 2)), None), "gyro": (rng.normal(size=(8, 1)), None)})
    folder = tmp_path / "norms"
    norms.save(folder)
    return folder


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


NORMALIZER_CASES: dict[str, tuple[Callable[[Path], None], type[Exception], tuple[str, ...]]] = {
    "missing-index": (
        lambda d: (d / "normalizers.json").unlink(),
        FileNotFoundError,
        ("normalizers.json", "does not exist"),
    ),
    "missing-tensors": (
        lambda d: (d / "normalizers.safetensors").unlink(),
        FileNotFoundError,
        ("normalizers.safetensors", "does not exist"),
    ),
    "truncated-tensors": (
        lambda d: _truncate(d / "normalizers.safetensors"),
        DataError,
        ("normalizers.safetensors", "corrupt, truncated"),
    ),
    "corrupt-index": (
        lambda d: (d / "normalizers.json").write_text('{"format": '),
        DataError,
        ("normalizers.json", "not a valid JSON"),
    ),
    "unknown-normalizer": (
        lambda d: _edit_json(d / "normalizers.json", lambda j: j["modalities"]["gyro"].update(normalizer="robust")),
        DataError,
        ("normalizers.json", "'gyro'", "unknown normaliser 'robust'", "zscore"),
    ),
    "unknown-parameter": (
        lambda d: _edit_json(d / "normalizers.json", lambda j: j["modalities"]["acc"]["params"].update(scale=2)),
        DataError,
        ("normalizers.json", "'acc'", "bad parameters", "scale"),
    ),
}


@pytest.mark.parametrize("case", list(NORMALIZER_CASES))
def test_modality_normalizers_load_names_the_problem(tmp_path: Path, case: str) -> None:
    folder = _saved_normalizers(tmp_path)
    breaker, error, expected = NORMALIZER_CASES[case]
    breaker(folder)
    with pytest.raises(error) as info:
        ModalityNormalizers.load(folder)
    assert_names(str(info.value), *expected)


# ----------------------------------------------------------------------------------------------------------
# load_model


def _saved_model(tmp_path: Path) -> Path:
    model = build_model(ModelConfig(modality_dims={"acc": 2, "gyro": 1}, out_dim=2, hidden=8, num_heads=2))
    folder = tmp_path / "model"
    save_model(model, folder)
    return folder


MODEL_CASES: dict[str, tuple[Callable[[Path], None], type[Exception], tuple[str, ...]]] = {
    "truncated-weights": (
        lambda d: _truncate(d / "model.safetensors"),
        DataError,
        ("model.safetensors", "corrupt"),
    ),
    "missing-weights": (
        lambda d: (d / "model.safetensors").unlink(),
        FileNotFoundError,
        ("model.safetensors", "does not exist"),
    ),
    "unknown-config-key": (
        lambda d: _edit_json(d / "config.json", lambda j: j["model_config"].update(hiddden=16)),
        DataError,
        ("config.json", "Unknown ModelConfig key(s) ['hiddden']", "valid keys", "'hidden'"),
    ),
    "unknown-fusion-in-config": (
        lambda d: _edit_json(d / "config.json", lambda j: j["model_config"].update(fusion="nope")),
        DataError,
        ("config.json", "'fusion'", "'nope'", "concat"),
    ),
    "config-not-json": (
        lambda d: (d / "config.json").write_text("{oops"),
        DataError,
        ("config.json", "not valid JSON"),
    ),
    "missing-config": (
        lambda d: (d / "config.json").unlink(),
        FileNotFoundError,
        ("config.json", "does not exist"),
    ),
    "weights-of-another-model": (
        lambda d: _edit_json(d / "config.json", lambda j: j["model_config"].update(hidden=16)),
        DataError,
        ("model.safetensors", "wrong shape", "config.json"),
    ),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_load_model_names_the_problem(tmp_path: Path, case: str) -> None:
    folder = _saved_model(tmp_path)
    breaker, error, expected = MODEL_CASES[case]
    breaker(folder)
    with pytest.raises(error) as info:
        load_model(folder)
    assert_names(str(info.value), *expected)


def test_collate_names_a_mask_of_the_wrong_length():
    from mmfuse.data import collate

    good = SequenceRecord("ok", "g", "train", {"x": np.ones((3, 2), np.float32)}, {"x": np.ones(3, bool)}, 0)
    bad = SequenceRecord("short-mask", "g", "train", {"x": np.ones((3, 2), np.float32)}, {"x": np.ones(2, bool)}, 0)
    with pytest.raises(DataError, match=r"sample 'short-mask', modality 'x': mask \(2,\), expected \(3,\)"):
        collate([good, bad])
