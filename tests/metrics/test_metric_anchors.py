"""Every registered metric against its anchor (scikit-learn, SciPy, torchmetrics) and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm

from mmfuse.metrics import (
    acc2,
    brier_score,
    ccc,
    compute_metric,
    expected_calibration_error,
    f1_binary,
    get_metric,
    list_metrics,
    log_loss,
    mae,
    mse,
    multiclass_sentiment_accuracy,
    pearson,
    rmse,
    roc_auc,
    sentiment_metrics,
    top_k_accuracy,
)

tm = pytest.importorskip("torchmetrics.functional", reason="torchmetrics (a dev dependency) anchors some values")

RNG = np.random.default_rng(7)
N, C = 200, 5
Y = RNG.integers(0, C, N)
LOGITS = RNG.normal(size=(N, C)) + 1.5 * np.eye(C)[Y]
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)
PRED = PROBS.argmax(axis=1)
T = RNG.uniform(-3, 3, N)
P = 0.7 * T + RNG.normal(0, 0.8, N)


def _tm_probs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(PROBS), torch.tensor(Y)


CLASSIFICATION_ANCHORS = [
    ("accuracy", skm.accuracy_score(Y, PRED)),
    ("f1_weighted", skm.f1_score(Y, PRED, average="weighted")),
    ("f1_macro", skm.f1_score(Y, PRED, average="macro")),
    ("top3_accuracy", skm.top_k_accuracy_score(Y, PROBS, k=3)),
    ("top5_accuracy", 1.0),  # k >= C
    ("log_loss", skm.log_loss(Y, PROBS)),
    ("nll", skm.log_loss(Y, PROBS)),
    ("brier", skm.brier_score_loss(Y, PROBS, scale_by_half=False)),
    ("roc_auc", skm.roc_auc_score(Y, PROBS, multi_class="ovr", average="macro")),
]


@pytest.mark.parametrize(("name", "expected"), CLASSIFICATION_ANCHORS, ids=[c[0] for c in CLASSIFICATION_ANCHORS])
def test_classification_metric_matches_scikit_learn(name: str, expected: float) -> None:
    assert compute_metric(name, Y, PRED, PROBS) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_classification_metrics_match_torchmetrics() -> None:
    probs, target = _tm_probs()
    assert top_k_accuracy(Y, PROBS, k=3) == pytest.approx(
        float(tm.accuracy(probs, target, task="multiclass", num_classes=C, top_k=3, average="micro"))
    )
    assert expected_calibration_error(Y, PROBS) == pytest.approx(
        float(tm.calibration_error(probs, target, task="multiclass", num_classes=C, n_bins=15, norm="l1")), abs=1e-6
    )
    assert roc_auc(Y, PROBS) == pytest.approx(
        float(tm.auroc(probs, target, task="multiclass", num_classes=C, average="macro")), abs=1e-6
    )


REGRESSION_ANCHORS = [
    ("mae", skm.mean_absolute_error(T, P)),
    ("mse", skm.mean_squared_error(T, P)),
    ("rmse", skm.root_mean_squared_error(T, P)),
    ("pearson", stats.pearsonr(T, P).statistic),
    ("corr", stats.pearsonr(T, P).statistic),
]


@pytest.mark.parametrize(("name", "expected"), REGRESSION_ANCHORS, ids=[c[0] for c in REGRESSION_ANCHORS])
def test_regression_metric_matches_scikit_learn_and_scipy(name: str, expected: float) -> None:
    assert compute_metric(name, T, P) == pytest.approx(expected, rel=1e-12)
    # MOSI-style [n, 1] targets give the same value
    assert compute_metric(name, T[:, None], P[:, None]) == pytest.approx(expected, rel=1e-12)
    assert compute_metric(name, torch.tensor(T[:, None]), P) == pytest.approx(expected, rel=1e-12)


def test_ccc_is_lin_and_agrees_with_torchmetrics_when_the_means_agree() -> None:
    cov = np.mean((T - T.mean()) * (P - P.mean()))
    lin = 2 * cov / (T.var() + P.var() + (T.mean() - P.mean()) ** 2)
    assert ccc(T, P) == pytest.approx(lin, rel=1e-12)
    centred = P - P.mean() + T.mean()  # equal means: torchmetrics' sample moments give the same number
    assert ccc(T, centred) == pytest.approx(float(tm.concordance_corrcoef(torch.tensor(centred), torch.tensor(T))))
    # torchmetrics' example values, worked by hand with population moments: t=[3,-.5,2,7], p=[2.5,0,2,8]
    t, p = np.array([3, -0.5, 2, 7]), np.array([2.5, 0.0, 2, 8])
    cov = np.mean((t - t.mean()) * (p - p.mean()))
    assert ccc(t, p) == pytest.approx(2 * cov / (t.var() + p.var() + (t.mean() - p.mean()) ** 2))
    assert ccc(t, p) == pytest.approx(0.9777, abs=0.02)


def test_multi_target_regression_is_the_mean_over_targets() -> None:
    t2 = np.stack([T, -T], axis=1)  # [n, 2]
    p2 = np.stack([P, -P + 1.0], axis=1)
    for fn in (mae, mse, rmse, pearson, ccc):
        assert fn(t2, p2) == pytest.approx(np.mean([fn(t2[:, 0], p2[:, 0]), fn(t2[:, 1], p2[:, 1])]))


# --------------------------------------------------------------------------------- MOSI sentiment conventions
def _mmsa_reference(t: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """MMSA's MetricsTop.__eval_mosi_regression, written out from its published definition."""
    non_zeros = np.array([i for i, e in enumerate(t) if e != 0])

    def multiclass_acc(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sum(np.round(a) == np.round(b)) / float(len(b)))

    return {
        "acc7": multiclass_acc(np.clip(p, -3.0, 3.0), np.clip(t, -3.0, 3.0)),
        "acc5": multiclass_acc(np.clip(p, -2.0, 2.0), np.clip(t, -2.0, 2.0)),
        "acc2_non0": skm.accuracy_score(p[non_zeros] > 0, t[non_zeros] > 0),
        "f1_non0": skm.f1_score(t[non_zeros] > 0, p[non_zeros] > 0, average="weighted"),
        "acc2_has0": skm.accuracy_score(p >= 0, t >= 0),
        "f1_has0": skm.f1_score(t >= 0, p >= 0, average="weighted"),
    }


def test_sentiment_conventions_match_mmsa() -> None:
    t = np.round(T * 3) / 3  # MOSI labels are averages of 3 annotators: thirds, zeros included
    t[:10] = 0.0
    reference = _mmsa_reference(t, P)
    got = sentiment_metrics(t[:, None], P[:, None])
    assert got == pytest.approx(reference, rel=1e-12)
    for name, value in reference.items():
        assert compute_metric(name, t, P) == pytest.approx(value, rel=1e-12)


def test_sentiment_hand_computed_cases() -> None:
    t = [-3.0, -0.4, 0.0, 0.0, 1.2, 2.6]
    p = [-2.4, 0.2, -0.1, 0.6, 1.6, 3.9]
    # has-0: t >= 0 -> [F F T T T T], p >= 0 -> [F T F T T T]: 4 of 6
    assert acc2(t, p) == pytest.approx(4 / 6)
    # non-0 drops the two zeros: t > 0 -> [F F T T], p > 0 -> [F T T T]: 3 of 4
    assert acc2(t, p, non_zero=True) == pytest.approx(3 / 4)
    # acc7: round(clip) t -> [-3, -0, 0, 0, 1, 3], p -> [-2, 0, -0, 1, 2, 3]: hits at 2, 3, 6
    assert multiclass_sentiment_accuracy(t, p) == pytest.approx(3 / 6)
    # acc5: clip to [-2, 2]: t -> [-2, -0, 0, 0, 1, 2], p -> [-2, 0, -0, 1, 2, 2]: hits at 1, 2, 3, 6
    assert multiclass_sentiment_accuracy(t, p, classes=5) == pytest.approx(4 / 6)
    # banker's rounding as np.round: 0.5 -> 0 and 2.5 -> 2, so these agree
    assert multiclass_sentiment_accuracy([0.5, 2.5], [0.0, 2.0]) == 1.0


@pytest.mark.parametrize("fn", [acc2, f1_binary])
def test_non_zero_reading_without_non_zero_labels_is_nan(fn: object) -> None:
    assert math.isnan(fn([0.0, 0.0], [1.0, -1.0], non_zero=True))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([1.0, 2.0], [1.0]), "same length"),
        (([], []), "at least one sample"),
        ((np.zeros((3, 2)), np.zeros((3, 2))), r"one sentiment score per sample"),
        (([1.0, np.nan], [1.0, 2.0]), "NaN or inf at index 1"),
        ((["a"], ["b"]), "real numbers"),
    ],
)
def test_sentiment_input_errors(args: tuple[object, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sentiment_metrics(*args)


# ------------------------------------------------------------------------------------------------- edge cases
def test_constant_input() -> None:
    t = np.array([1.0, 2.0, 3.0])
    assert math.isnan(pearson(t, np.full(3, 2.0)))
    assert ccc(t, np.full(3, 2.0)) == 0.0  # a constant prediction concords with nothing
    assert math.isnan(ccc(np.full(3, 2.0), np.full(3, 2.0)))  # 0/0
    assert mae(np.full(3, 2.0), np.full(3, 2.0)) == 0.0


def test_fewer_than_two_samples() -> None:
    assert math.isnan(pearson([1.0], [2.0])) and math.isnan(ccc([1.0], [2.0]))
    assert mae([1.0], [2.0]) == 1.0 and rmse([1.0], [3.0]) == 2.0 and mse([1.0], [3.0]) == 4.0
    assert compute_metric("accuracy", [1], [1]) == 1.0


def test_one_class() -> None:
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.9, 0.1]])
    assert math.isnan(roc_auc([0, 0, 0], probs))  # class 1 never occurs: no ROC curve
    assert log_loss([0, 0, 0], probs) == pytest.approx(skm.log_loss([0, 0, 0], probs, labels=[0, 1]))
    assert math.isnan(log_loss([0, 0], [[1.0], [1.0]]))  # a single class: nothing to predict
    assert brier_score([0, 0, 0], probs) == pytest.approx(np.mean(2 * np.array([0.2, 0.4, 0.1]) ** 2))
    assert compute_metric("f1_macro", [1, 1], [1, 1]) == 1.0


@pytest.mark.parametrize("name", ["mae", "pearson", "ccc", "acc7"])
def test_nan_targets_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        compute_metric(name, [1.0, 2.0, 3.0], [1.0, math.nan, 2.0])


@pytest.mark.parametrize("name", ["log_loss", "brier", "ece", "roc_auc", "top3_accuracy"])
def test_probability_metrics_refuse_bad_probs(name: str) -> None:
    with pytest.raises(ValueError, match="finite values in"):
        compute_metric(name, [0, 1], [0, 1], [[math.nan, 1.0], [0.5, 0.5]])
    with pytest.raises(ValueError, match="sum to 1"):
        compute_metric(name, [0, 1], [0, 1], [[0.2, 0.2], [0.5, 0.5]])
    with pytest.raises(ValueError, match="needs class probabilities"):
        compute_metric(name, [0, 1], [0, 1])


def test_every_registered_scorer_returns_a_value_in_its_bounds() -> None:
    for task in ("classification", "regression"):
        for name in list_metrics(task):
            info = get_metric(name)
            if info.scorer is None:
                continue
            value = compute_metric(name, Y, PRED, PROBS) if task == "classification" else compute_metric(name, T, P)
            low, high = info.bounds
            assert math.isfinite(value), name
            assert (low is None or value >= low) and (high is None or value <= high), (name, value)


@pytest.mark.parametrize("seed", range(6))
def test_classification_metrics_counts_match_scikit_learn(seed: int) -> None:
    """The one-confusion-matrix scores equal scikit-learn's, with classes absent from y_true, y_pred or both."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    from mmfuse.metrics import classification_metrics

    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 7))
    y_true = rng.integers(0, n_classes - 1 if seed % 2 else n_classes, size=int(rng.integers(1, 40)))
    y_pred = np.where(rng.random(y_true.size) < 0.6, y_true, rng.integers(0, n_classes, size=y_true.size))
    m = classification_metrics(y_true, y_pred, [str(i) for i in range(n_classes)])
    labels = np.arange(n_classes)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0.0)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert m["f1_weighted"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"), abs=1e-12)
    assert m["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    got = np.array([[c["precision"], c["recall"], c["f1"], c["support"]] for c in m["per_class"].values()])
    np.testing.assert_allclose(got, np.stack([p, r, f, s], axis=1), atol=1e-12)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_rank_based_roc_auc_matches_scikit_learn(n_classes: int, seed: int) -> None:
    """The one-ranking Mann-Whitney area equals scikit-learn's ROC AUC, ties included."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(n_classes, 60))
    y = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, size=n - n_classes)])
    # Eighths (exact in float32 and float64, rows summing to exactly 1) give many tied scores.
    probs = rng.multinomial(8, np.ones(n_classes) / n_classes, size=n) / 8.0
    expected = (
        skm.roc_auc_score(y, probs[:, 1])
        if n_classes == 2
        else skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=np.arange(n_classes))
    )
    assert roc_auc(y, probs) == pytest.approx(expected, abs=1e-12)
