"""Calibration errors, temperature scaling and the affine regression calibrator, on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mmfuse.errors import NotFittedError
from mmfuse.evaluate.analysis import (
    AffineCalibrator,
    TemperatureScaler,
    calibration_errors,
    expected_calibration_error,
    paired_improvement_test,
    reliability_curve,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _calibrated_sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, probabilities and labels drawn from those very probabilities: a perfectly calibrated predictor."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, 3))
    probs = _softmax(logits)
    labels = (rng.random(n)[:, None] > probs.cumsum(axis=1)).sum(axis=1)
    return logits, probs, labels


def test_perfectly_calibrated_predictor_has_ece_near_zero() -> None:
    _, probs, y = _calibrated_sample(40_000)
    assert expected_calibration_error(probs, y) < 0.01
    assert expected_calibration_error(probs, y, adaptive=True) < 0.01


def test_overconfident_predictor_has_the_known_ece() -> None:
    # always 90 % sure, right half of the time: gap 0.4 in the single occupied bin
    probs = np.tile([0.9, 0.1], (10, 1))
    y = np.array([0, 1] * 5)
    errs = calibration_errors(probs, y)
    assert errs["ece"] == pytest.approx(0.4)
    assert errs["mce"] == pytest.approx(0.4)
    assert errs["nll"] == pytest.approx(-(np.log(0.9) + np.log(0.1)) / 2)


def test_reliability_curve_counts_every_row_once() -> None:
    _, probs, y = _calibrated_sample(500, seed=1)
    for adaptive in (False, True):
        curve = reliability_curve(probs, y, n_bins=10, adaptive=adaptive)
        assert curve["count"].sum() == 500
    assert len(reliability_curve(probs, y, n_bins=10)["count"]) == 10


def test_temperature_scaling_recovers_the_temperature_and_keeps_accuracy() -> None:
    logits, _, y = _calibrated_sample(6000, seed=2)
    sharp = logits * 3.0  # over-confident by a factor 3
    scaler = TemperatureScaler().fit(sharp, y)
    assert scaler.temperature_ == pytest.approx(3.0, rel=0.08)
    calibrated = scaler.predict_proba(sharp)
    assert (calibrated.argmax(1) == sharp.argmax(1)).all()  # accuracy unchanged
    assert expected_calibration_error(calibrated, y) < expected_calibration_error(_softmax(sharp), y) / 3


def test_temperature_scaler_refuses_bad_input() -> None:
    with pytest.raises(NotFittedError):
        TemperatureScaler().transform(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="logits"):
        TemperatureScaler().fit(np.array([[np.nan, 0.0]]), [0])
    with pytest.raises(ValueError, match="class indices"):
        TemperatureScaler().fit(np.zeros((2, 2)), [0, 5])
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        expected_calibration_error(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match=r"'y_true' parameter of reliability_curve must hold integer class indices"):
        reliability_curve(np.full((2, 2), 0.5), [0.0, 0.5])  # a fractional label is refused, not truncated to 0
    with pytest.raises(ValueError, match=r"'y_true' parameter of calibration_errors must be 1-D"):
        calibration_errors(np.full((2, 2), 0.5), [[0], [1]])


def test_affine_calibrator_recovers_the_map_and_l2_pulls_to_identity() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(200, 2))
    t = y * np.array([0.5, 2.0]) + np.array([1.0, -1.0])
    cal = AffineCalibrator(l2=0.0).fit(y, t)
    np.testing.assert_allclose(cal.scale_, [0.5, 2.0], atol=1e-9)
    np.testing.assert_allclose(cal.shift_, [1.0, -1.0], atol=1e-9)
    np.testing.assert_allclose(cal.transform(y), t, atol=1e-9)
    strong = AffineCalibrator(l2=1e6).fit(y, t)
    np.testing.assert_allclose(strong.scale_, [1.0, 1.0], atol=1e-3)
    np.testing.assert_allclose(strong.shift_, [0.0, 0.0], atol=1e-3)
    with pytest.raises(NotFittedError):
        AffineCalibrator().transform(y)
    with pytest.raises(ValueError, match="l2"):
        AffineCalibrator(l2=-1)


def test_paired_test_detects_a_real_improvement_and_not_noise() -> None:
    good = paired_improvement_test([1.0, 1.2, 0.9, 1.1, 1.0], [0.7, 0.9, 0.6, 0.8, 0.72])
    assert good["significant"] and good["p_value"] < 0.001 and good["mean_improvement"] > 0
    worse = paired_improvement_test([1.0, 1.2, 0.9], [1.1, 1.35, 1.02])
    assert not worse["significant"] and worse["p_value"] > 0.5
    one = paired_improvement_test([1.0], [0.5])
    assert not one["significant"] and np.isnan(one["p_value"])
    with pytest.raises(ValueError, match="equal length"):
        paired_improvement_test([1.0, 2.0], [1.0])
