"""Saved per-item predictions of a run and the significance columns of summary.csv computed from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmfuse.errors import DataError
from mmfuse.evaluate.predictions import RunPredictions
from mmfuse.evaluate.rundir import RunDir
from mmfuse.evaluate.significance import SIGNIFICANCE_COLUMNS, significance_columns

N_TEST, N_VAL, SEEDS = 120, 40, [0, 1, 2]


def _predictions(y: np.ndarray, accuracy: float, rng: np.random.Generator, prefix: str) -> RunPredictions:
    pred = np.where(rng.random(y.shape[0]) < accuracy, y, 1 - y)
    probs = np.stack([1.0 - pred * 0.8 - 0.1, pred * 0.8 + 0.1], axis=1).astype(np.float32)
    return RunPredictions([f"{prefix}{i}@0" for i in range(y.shape[0])], y, pred, probs)


def _run(tmp_path: Path, test_accuracy: dict[str, float], val_accuracy: dict[str, float]) -> RunDir:
    """A run directory with saved predictions only (no training): each row right on test/val at the given rate."""
    run = RunDir(tmp_path / "run")
    rng = np.random.default_rng(0)
    y_test, y_val = rng.integers(0, 2, N_TEST), rng.integers(0, 2, N_VAL)
    for fusion in test_accuracy:
        for seed in SEEDS:
            run.write_predictions(fusion, seed, "test", _predictions(y_test, test_accuracy[fusion], rng, "t"))
            run.write_predictions(fusion, seed, "val", _predictions(y_val, val_accuracy[fusion], rng, "v"))
    return run


def test_predictions_round_trip_and_are_checked(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    saved = RunPredictions(["a", "b@1"], np.array([0, 1]), np.array([1, 1]), np.array([[0.4, 0.6], [0.1, 0.9]]))
    path = run.write_predictions("concat", 2, "test", saved)
    assert path == tmp_path / "run" / "predictions" / "test" / "concat-seed2.safetensors"
    back = run.read_predictions("concat", 2, "test")
    assert back.item_ids == ["a", "b@1"] and back.y_pred.tolist() == [1, 1] and back.probs is not None
    path.rename(run.predictions_file("gated", 2, "test"))
    with pytest.raises(DataError, match=r"belongs to fusion 'concat' seed 2 split 'test', not to 'gated'"):
        run.read_predictions("gated", 2, "test")
    with pytest.raises(DataError, match="has no saved test predictions"):
        run.read_predictions("concat", 2, "test")
    run.predictions_file("concat", 0).write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="could not be read as safetensors"):
        run.read_predictions("concat", 0)
    with pytest.raises(ValueError, match=r"'y_pred' has shape \(3,\), expected the shape of 'y_true' \(2,\)"):
        run.write_predictions("concat", 1, "test", RunPredictions(["a", "b"], np.zeros(2), np.zeros(3), None))


def test_the_reference_is_the_best_baseline_on_validation_not_on_test(tmp_path: Path) -> None:
    # unimodal-b is best on test, unimodal-a on validation: the tests compare with unimodal-a.
    run = _run(
        tmp_path,
        test_accuracy={"concat": 0.97, "gated": 0.72, "unimodal-a": 0.70, "unimodal-b": 0.75},
        val_accuracy={"concat": 0.9, "gated": 0.9, "unimodal-a": 0.9, "unimodal-b": 0.6},
    )
    found = significance_columns(run, ["concat", "gated", "unimodal-a", "unimodal-b"], SEEDS, "accuracy")
    assert found.reference == "unimodal-a" and found.settings["reference"] == "unimodal-a"
    cols = found.columns
    assert cols["unimodal-a"]["vs_best_unimodal"] == "reference" and cols["unimodal-a"]["p_vs_best_unimodal"] is None
    assert cols["concat"]["vs_best_unimodal"] == "better" and cols["concat"]["p_vs_best_unimodal"] < 0.001
    assert cols["gated"]["vs_best_unimodal"] == "not different" and cols["gated"]["p_vs_best_unimodal"] > 0.05
    for fusion, values in cols.items():
        assert set(values) == set(SIGNIFICANCE_COLUMNS)
        assert values["ci_low"] < values["ci_high"], fusion
    # the same inputs give the same columns (seeded resampling)
    again = significance_columns(run, ["concat", "gated", "unimodal-a", "unimodal-b"], SEEDS, "accuracy")
    assert again.columns == cols


def test_without_unimodal_rows_the_test_columns_are_empty_not_zero(tmp_path: Path) -> None:
    run = _run(tmp_path, test_accuracy={"concat": 0.9, "gated": 0.8}, val_accuracy={"concat": 0.9, "gated": 0.8})
    found = significance_columns(run, ["concat", "gated"], SEEDS, "accuracy")
    assert found.reference is None
    for values in found.columns.values():
        assert values["p_vs_best_unimodal"] is None and values["vs_best_unimodal"] is None
        assert isinstance(values["ci_low"], float)
    assert any("No unimodal baseline" in note for note in found.notes)


def test_missing_predictions_leave_the_columns_empty_with_a_note(tmp_path: Path) -> None:
    run = _run(tmp_path, {"concat": 0.9, "unimodal-a": 0.8}, {"concat": 0.9, "unimodal-a": 0.8})
    run.predictions_file("concat", 1, "test").unlink()
    found = significance_columns(run, ["concat", "unimodal-a"], SEEDS, "accuracy")
    assert found.columns["concat"] == dict.fromkeys(SIGNIFICANCE_COLUMNS)
    assert found.columns["unimodal-a"]["vs_best_unimodal"] == "reference"
    assert any("No saved per-item test predictions for concat seed 1" in note for note in found.notes)


def test_predictions_of_other_items_are_refused(tmp_path: Path) -> None:
    run = _run(tmp_path, {"concat": 0.9, "unimodal-a": 0.8}, {"concat": 0.9, "unimodal-a": 0.8})
    other = run.read_predictions("concat", 2)
    run.write_predictions("concat", 2, "test", RunPredictions(other.item_ids[::-1], other.y_true, other.y_pred, None))
    with pytest.raises(DataError, match=r"concat-seed2.safetensors' are not of the same items and targets"):
        significance_columns(run, ["concat", "unimodal-a"], SEEDS, "accuracy")


def test_a_lower_is_better_main_metric(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    rng = np.random.default_rng(1)
    y_test, y_val = rng.normal(size=N_TEST).astype(np.float32), rng.normal(size=N_VAL).astype(np.float32)
    noise = {"late": 0.2, "unimodal-a": 1.0, "unimodal-b": 1.5}
    for fusion, scale in noise.items():
        for seed in SEEDS:
            for split, y in (("test", y_test), ("val", y_val)):
                pred = (y + scale * rng.normal(size=y.shape)).astype(np.float32)
                run.write_predictions(
                    fusion, seed, split, RunPredictions([str(i) for i in range(len(y))], y, pred, None)
                )
    found = significance_columns(run, list(noise), SEEDS, "mae")
    assert found.reference == "unimodal-a"  # the lower validation MAE
    assert found.columns["late"]["vs_best_unimodal"] == "better"
    assert found.columns["unimodal-b"]["vs_best_unimodal"] == "worse"
