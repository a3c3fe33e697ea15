"""Metric functions against hand-computed values, the batch accumulator, and the run summary."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from mmfuse.metrics import MetricAccumulator, classification_metrics, regression_metrics, summarize_runs

# Imbalanced 3-class case (supports 6, 2, 2), worked out by hand:
#   confusion (rows true, cols predicted) = [[5, 1, 0], [0, 1, 1], [1, 0, 1]]
#   precision = recall = f1 = (5/6, 1/2, 1/2)
#   f1_macro = (5/6 + 1/2 + 1/2) / 3 = 11/18;  f1_weighted = (6 * 5/6 + 2 * 1/2 + 2 * 1/2) / 10 = 0.7
Y_TRUE = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
Y_PRED = [0, 0, 0, 0, 0, 1, 1, 2, 2, 0]


def test_classification_known_values() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["confusion_matrix"] == [[5, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert m["f1_macro"] == pytest.approx(11 / 18)
    assert m["f1_weighted"] == pytest.approx(0.7)
    assert m["per_class"]["a"] == {
        "precision": pytest.approx(5 / 6),
        "recall": pytest.approx(5 / 6),
        "f1": pytest.approx(5 / 6),
        "support": 6,
    }
    assert m["per_class"]["c"]["precision"] == pytest.approx(0.5) and m["per_class"]["c"]["support"] == 2
    assert m["class_names"] == ["a", "b", "c"] and m["notes"] == []


def test_classification_output_is_json_safe_plain_types() -> None:
    m = classification_metrics(np.array(Y_TRUE), torch.tensor(Y_PRED))
    json.dumps(m, allow_nan=False)
    assert m["class_names"] == ["0", "1", "2"]
    assert type(m["accuracy"]) is float and type(m["n"]) is int
    assert all(type(v) is int for row in m["confusion_matrix"] for v in row)
    assert type(m["per_class"]["0"]["support"]) is int and type(m["per_class"]["0"]["f1"]) is float


def test_absent_class_is_still_reported() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])
    assert m["confusion_matrix"] == [[5, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["f1_macro"] == pytest.approx(11 / 18)  # averaged over the 3 classes that occur
    assert m["f1_weighted"] == pytest.approx(0.7)
    assert any("3 of 4 classes" in note for note in m["notes"])


def test_one_class_present() -> None:
    m = classification_metrics([1, 1, 1], [1, 1, 0], ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[0, 0], [1, 2]]
    assert m["per_class"]["neg"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["pos"]["f1"] == pytest.approx(0.8)  # p = 1, r = 2/3
    assert m["f1_weighted"] == pytest.approx(0.8)
    assert m["f1_macro"] == pytest.approx(0.4)


def test_classification_with_probs() -> None:
    probs = np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    m = classification_metrics([0, 1, 1], [0, 1, 1], probs=probs)
    assert m["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6) + math.log(0.7)) / 3)
    assert m["roc_auc"] == pytest.approx(1.0)
    assert m["class_names"] == ["0", "1"]  # C taken from probs
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    m3 = classification_metrics([0, 1], [0, 1], ["x", "y", "z"], probs=three)
    assert math.isnan(m3["roc_auc"]) and any("[2] never occur" in n for n in m3["notes"])
    assert m3["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.8)) / 2)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "kwargs", "message"),
    [
        ([], [], {}, "needs at least one sample"),
        ([0, 1, 1], [0, 1], {}, r"Got len\(y_true\)=3 and len\(y_pred\)=2"),
        ([0, 1, 2], [0, 3, 1], {"class_names": ["a", "b", "c"]}, r"'y_pred' .* label 3 at index 1, outside the 3"),
        ([0, -1], [0, 0], {}, r"'y_true' .* label -1 at index 1"),
        ([0.0, 1.5], [0, 1], {}, r"integer class indices\. Got 1\.5 at index 1"),
        ([[0, 1]], [[0, 1]], {}, r"must be 1-D \[n\]\. Got shape \(1, 2\)"),
        ([0, 1], [0, 1], {"class_names": ["a", "a"]}, "duplicates"),
        ([0, 1], [0, 1], {"probs": np.full((2, 3), 1 / 3), "class_names": ["a", "b"]}, "must have C=2 columns"),
        ([0, 1], [0, 1], {"probs": np.array([[0.5, 0.2], [0.5, 0.5]])}, "Row 0 sums to 0.7"),
        ([0, 1], [0, 1], {"probs": np.ones(2)}, r"shape \[n=2, C\]"),
    ],
)
def test_classification_input_errors(y_true: list, y_pred: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_pred, **kwargs)


# --------------------------------------------------------------------------------------------- regression
def test_regression_known_values() -> None:
    # errors (1, 0, -1, 2): MAE = 1, MSE = 6/4; r = 6 / sqrt(5 * 12)
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 6.0])
    assert m["n"] == 4 and m["n_targets"] == 1
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(1.5))
    assert m["pearson"] == pytest.approx(6 / math.sqrt(60))
    assert m["notes"] == [] and len(m["per_target"]) == 1
    json.dumps(m, allow_nan=False)


def test_regression_multi_output_per_target_and_mean() -> None:
    t = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    p = np.array([[2.0, 1.0], [2.0, -1.0], [2.0, 1.0], [6.0, -1.0]])
    m = regression_metrics(t, p)
    assert m["n_targets"] == 2
    assert m["per_target"][0]["mae"] == pytest.approx(1.0) and m["per_target"][1]["mae"] == pytest.approx(1.0)
    assert m["per_target"][1]["rmse"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx((math.sqrt(1.5) + 1.0) / 2)
    assert math.isnan(m["per_target"][1]["pearson"]) and math.isnan(m["pearson"])  # y_true[:, 1] is constant
    assert m["notes"] == ["pearson[1] is nan: y_true is constant, so the correlation is 0/0."]


def test_constant_predictions_give_nan_pearson_without_crash() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning either: the case is handled before scipy
        m = regression_metrics(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([3.0, 3.0, 3.0]))
    assert math.isnan(m["pearson"]) and "y_pred is constant" in m["notes"][0]
    assert m["mae"] == pytest.approx(4 / 3)
    single = regression_metrics([1.0], [2.0])
    assert math.isnan(single["pearson"]) and "at least two samples" in single["notes"][0]


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([], [], "needs at least one sample"),
        ([1.0, 2.0], [1.0], r"same shape\. Got \(2,\) and \(1,\)"),
        ([1.0, np.nan], [1.0, 2.0], "'y_true' .* NaN or inf at index 1"),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), r"\[n\] or \[n, K\]"),
    ],
)
def test_regression_input_errors(y_true: object, y_pred: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        regression_metrics(y_true, y_pred)


# ------------------------------------------------------------------------------------------- accumulator
def test_accumulator_equals_one_shot_on_sample_batches() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=50)
    yhat = rng.integers(0, 3, size=50)
    logits = torch.randn(50, 3)
    probs = torch.softmax(logits, dim=1)
    acc = MetricAccumulator("classification", ["a", "b", "c"])
    for start in range(0, 50, 16):
        acc.update(torch.from_numpy(y[start : start + 16]), yhat[start : start + 16], probs=probs[start : start + 16])
    assert acc.n == 50
    expected = classification_metrics(y, yhat, ["a", "b", "c"], probs=probs.numpy())
    got = acc.compute()
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    assert got["f1_macro"] == pytest.approx(expected["f1_macro"])
    assert got["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-6)


def test_accumulator_step_level_excludes_masked_steps() -> None:
    rng = np.random.default_rng(1)
    B, T, C = 4, 6, 3
    y = rng.integers(0, C, size=(B, T))
    yhat = rng.integers(0, C, size=(B, T))
    probs = rng.dirichlet(np.ones(C), size=(B, T))
    lengths = np.array([6, 3, 1, 4])
    mask = np.arange(T)[None, :] < lengths[:, None]  # [B, T]
    y_pad, yhat_pad, probs_pad = y.copy(), yhat.copy(), probs.copy()
    y_pad[~mask], yhat_pad[~mask], probs_pad[~mask] = 99, -5, np.nan  # garbage that would fail if used
    acc = MetricAccumulator("classification")
    acc.update(
        torch.from_numpy(y_pad),
        torch.from_numpy(yhat_pad),
        probs=torch.from_numpy(probs_pad),
        mask=torch.from_numpy(mask),
    )
    assert acc.n == lengths.sum()
    expected = classification_metrics(y[mask], yhat[mask], probs=probs[mask])
    got = acc.compute()
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    assert got["accuracy"] == pytest.approx(expected["accuracy"])
    assert got["log_loss"] == pytest.approx(expected["log_loss"])


def test_accumulator_regression_step_level_multi_target() -> None:
    rng = np.random.default_rng(2)
    y, yhat = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 5, 2))
    mask = rng.random((3, 5)) > 0.4
    y_pad = y.copy()
    y_pad[~mask] = np.nan
    acc = MetricAccumulator("regression")
    acc.update(y_pad[:2], yhat[:2], mask=mask[:2])
    acc.update(torch.from_numpy(y_pad[2:]), torch.from_numpy(yhat[2:]), mask=torch.from_numpy(mask[2:]))
    got = acc.compute()
    expected = regression_metrics(y[mask], yhat[mask])
    assert got["n"] == mask.sum() and got["n_targets"] == 2
    assert got["mae"] == pytest.approx(expected["mae"]) and got["pearson"] == pytest.approx(expected["pearson"])


def test_accumulator_reset_and_errors() -> None:
    acc = MetricAccumulator("classification")
    with pytest.raises(ValueError, match="has no data"):
        acc.compute()
    acc.update([0, 1], [0, 0])
    with pytest.raises(ValueError, match="'probs' for every batch or for none"):
        acc.update([1], [1], probs=[[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"same shape\. Got \(2,\) and \(3,\)"):
        acc.update([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match=r"'mask' parameter of MetricAccumulator\.update must be bool"):
        acc.update([[0, 1]], [[0, 1]], mask=[[1, 0]])
    acc.reset()
    assert acc.n == 0
    acc.update([1, 1], [1, 1])
    assert acc.compute()["accuracy"] == 1.0
    with pytest.raises(ValueError, match="'task' parameter of MetricAccumulator must be one of"):
        MetricAccumulator("ranking")
    with pytest.raises(ValueError, match="for classification only"):
        MetricAccumulator("regression").update([1.0], [1.0], probs=[[1.0]])


# --------------------------------------------------------------------------------------------- summaries
RUNS = [
    {"fusion": "concat", "seed": 0, "accuracy": 0.8, "params": 100, "note": "x"},
    {"fusion": "gated", "seed": 0, "accuracy": 0.6, "params": 120, "note": "y"},
    {"fusion": "concat", "seed": 1, "accuracy": 0.9, "params": 100, "note": "x"},
    {"fusion": "concat", "seed": 2, "accuracy": 0.7, "params": 100, "note": "x"},
]


def test_summarize_runs_mean_std_and_order() -> None:
    out = summarize_runs(RUNS, by="fusion", metrics=["accuracy", "params"])
    assert [r["fusion"] for r in out] == ["concat", "gated"]  # order of first appearance
    concat, gated = out
    assert concat["n_seeds"] == 3
    assert concat["accuracy_mean"] == pytest.approx(0.8)
    assert concat["accuracy_std"] == pytest.approx(0.1)  # sample std (ddof=1) of 0.8, 0.9, 0.7
    assert concat["params_mean"] == 100.0 and concat["params_std"] == 0.0
    assert gated["n_seeds"] == 1 and gated["accuracy_std"] == 0.0


def test_summarize_runs_default_metrics_and_errors() -> None:
    out = summarize_runs(RUNS)
    assert set(out[0]) == {"fusion", "n_seeds", "accuracy_mean", "accuracy_std", "params_mean", "params_std"}
    with pytest.raises(ValueError, match="needs at least one row"):
        summarize_runs([])
    with pytest.raises(ValueError, match=r"Row 1 .* needs a number for metric 'accuracy'\. Got None"):
        summarize_runs([{"fusion": "a", "accuracy": 1.0}, {"fusion": "b"}], metrics=["accuracy"])
    with pytest.raises(ValueError, match="Row 0 passed to summarize_runs has no 'model' key"):
        summarize_runs(RUNS, by="model")
    nan_out = summarize_runs([{"fusion": "a", "r": float("nan")}, {"fusion": "a", "r": 1.0}], metrics=["r"])
    assert math.isnan(nan_out[0]["r_mean"]) and math.isnan(nan_out[0]["r_std"])


def test_reliability_bins_are_what_ece_and_the_calibration_curve_read() -> None:
    from mmfuse.evaluate.analysis.calibration import reliability_curve
    from mmfuse.metrics import expected_calibration_error, reliability_bins

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 60)
    y = rng.integers(0, 3, 60)
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == y).astype(float)
    for adaptive in (False, True):
        bins = reliability_bins(conf, correct, 5, adaptive=adaptive)
        assert bins.count.sum() == 60 and bins.correct.sum() == correct.sum()
        assert np.isclose(bins.confidence.sum(), conf.sum())
        ece = np.abs(bins.correct - bins.confidence).sum() / 60
        assert expected_calibration_error(y, probs, 5, adaptive=adaptive) == ece
        curve = reliability_curve(probs, y, 5, adaptive=adaptive)
        assert np.array_equal(curve["count"], bins.count) and np.array_equal(curve["edges"], bins.edges)
    empty = reliability_bins([], [], 4, adaptive=True)  # no predictions: equal-width edges, empty bins
    assert empty.edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0] and empty.count.tolist() == [0.0] * 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": [0.5, 0.6], "correct": [1.0]}, "same length"),
        ({"confidence": [[0.5]], "correct": [[1.0]]}, "1-D"),
        ({"confidence": [0.5], "correct": [1.0], "n_bins": 0}, "'n_bins' parameter of reliability_bins"),
    ],
)
def test_reliability_bins_refuses_bad_input(kwargs: dict, message: str) -> None:
    from mmfuse.metrics import reliability_bins

    with pytest.raises(ValueError, match=message):
        reliability_bins(**kwargs)
