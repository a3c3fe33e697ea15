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

from bad_input.bad_input_table import assert_names
from mmfuse.data import SequenceRecord
from mmfuse.errors import DataError
from mmfuse.models import ModelConfig, build_model, load_model, save_model
from mmfuse.preprocess import ModalityNormalizers, ZScoreNormalizer


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


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
