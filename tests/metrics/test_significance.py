"""Tests for mmfuse.metrics.significance: bootstrap intervals and paired permutation tests over items and seeds."""

from __future__ import annotations

import numpy as np
import pytest

from mmfuse.metrics import compute_metric, get_metric
from mmfuse.metrics.significance import (
    bootstrap_ci,
    paired_permutation_test,
    seed_mean_metric,
    verdict,
)


def _labels(rng: np.random.Generator, n: int, n_classes: int, accuracy: float, seeds: int) -> tuple:
    y = rng.integers(0, n_classes, n)
    wrong = (y[None, :] + rng.integers(1, n_classes, (seeds, n))) % n_classes
    return y, np.where(rng.random((seeds, n)) < accuracy, y[None, :], wrong)


@pytest.mark.parametrize(
    "metric",
    ["accuracy", "f1_weighted", "f1_macro", "mae", "mse", "rmse", "pearson", "ccc", "acc2_non0", "log_loss"],
)
def test_the_resampled_metric_equals_the_registered_scorer(metric: str) -> None:
    """Vectorised kernels (and the row-by-row fallback) give what compute_metric gives on every resample."""
    rng = np.random.default_rng(1)
    n, seeds = 30, 3
    probs = None
    if "classification" in get_metric(metric).tasks:
        y, pred = _labels(rng, n, 3, 0.6, seeds)
        pred[0, :3] = 2  # a class predicted but never true in some resamples (F1's zero division)
        probs = rng.dirichlet(np.ones(3), (seeds, n)).astype(np.float32) if get_metric(metric).needs_probs else None
    else:
        y = rng.normal(size=n).astype(np.float32)
        pred = (y[None, :] + rng.normal(size=(seeds, n))).astype(np.float32)
    index = rng.integers(0, n, (7, n))
    got = seed_mean_metric(metric, y, pred, probs, index=index)
    want = [
        np.mean(
            [compute_metric(metric, y[i], pred[s, i], None if probs is None else probs[s, i]) for s in range(seeds)]
        )
        for i in index
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_the_interval_covers_the_population_value_at_its_level() -> None:
    """Items differ in difficulty and seeds share it: the interval must account for items, not only seeds."""
    rng = np.random.default_rng(0)
    truth, covered, runs = 0.75, 0, 40
    for _ in range(runs):
        difficulty = rng.beta(3.0, 1.0, 200)  # per-item chance of being right, mean 3 / (3 + 1) = 0.75
        y = rng.integers(0, 2, 200)
        right = rng.random((5, 200)) < difficulty[None, :]  # [S, N], correlated over seeds through the item
        low, high = bootstrap_ci("accuracy", y, np.where(right, y, 1 - y), n_resamples=400, seed=1)
        covered += low <= truth <= high
    assert covered / runs >= 0.85  # nominal 0.95; a seeds-only interval would cover far less often


def test_the_interval_is_reproducible_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(2)
    y, pred = _labels(rng, 300, 4, 0.7, 3)
    first = bootstrap_ci("f1_macro", y, pred, seed=7)
    assert first == bootstrap_ci("f1_macro", y, pred, seed=7)
    assert first != bootstrap_ci("f1_macro", y, pred, seed=8)
    estimate = seed_mean_metric("f1_macro", y, pred)[0]
    assert first[0] < estimate < first[1]


def test_a_clearly_better_model_has_a_small_p_and_a_copy_a_large_one() -> None:
    rng = np.random.default_rng(3)
    y, good = _labels(rng, 400, 2, 0.9, 4)
    _, weak = _labels(rng, 400, 2, 0.7, 4)
    better = paired_permutation_test("accuracy", y, good, weak)
    assert better.difference > 0.15 and better.p_value < 0.001
    assert verdict("accuracy", better.difference, better.p_value) == "better"
    assert verdict("accuracy", -better.difference, better.p_value) == "worse"
    copy = paired_permutation_test("accuracy", y, good, good.copy())
    assert copy.difference == 0.0 and copy.p_value == 1.0
    assert verdict("accuracy", copy.difference, copy.p_value) == "not different"


def test_lower_is_better_metrics_read_their_direction_from_the_registry() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=300)
    close = y[None, :] + 0.3 * rng.normal(size=(3, 300))
    far = y[None, :] + 1.0 * rng.normal(size=(3, 300))
    test = paired_permutation_test("mae", y, close, far)
    assert test.difference < 0 and test.p_value < 0.001
    assert verdict("mae", test.difference, test.p_value) == "better"
    assert verdict("mae", -test.difference, test.p_value) == "worse"
    assert verdict("ccc", test.difference, test.p_value) == "worse"  # the same sign, a higher-is-better metric


def test_a_small_difference_on_few_items_is_not_significant() -> None:
    rng = np.random.default_rng(5)
    y, a = _labels(rng, 40, 2, 0.75, 3)
    b = a.copy()
    b[:, :2] = 1 - b[:, :2]  # two items flipped in every seed
    test = paired_permutation_test("accuracy", y, a, b)
    assert test.p_value > 0.2
    assert verdict("accuracy", test.difference, test.p_value) == "not different"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bootstrap_ci("accuracy", [0, 1], [0, 1]), r"'y_pred' parameter of bootstrap_ci must be .* = \[S, 2\]"),
        (lambda: bootstrap_ci("accuracy", [0, 1], [[0, 1]], n_resamples=0), "'n_resamples' parameter"),
        (lambda: bootstrap_ci("accuracy", [0, 1], [[0, 1]], confidence_level=95), "'confidence_level' parameter"),
        (lambda: bootstrap_ci("log_loss", [0, 1], [[0, 1]]), "needs class probabilities"),
        (lambda: bootstrap_ci("loss", [0, 1], [[0, 1]]), "must be computed from predictions"),
        (lambda: bootstrap_ci("nope", [0, 1], [[0, 1]]), "nope"),
        (
            lambda: paired_permutation_test("accuracy", [0, 1], [[0, 1]], [[0, 1], [1, 0]]),
            "must have the same shape",
        ),
        (lambda: verdict("accuracy", 0.1, 0.01, alpha=5), "'alpha' parameter of verdict"),
    ],
)
def test_invalid_inputs_are_refused_with_the_parameter_named(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_an_undefined_difference_has_no_verdict() -> None:
    assert verdict("accuracy", float("nan"), 0.01) is None
