"""The metric registry: lookups, column names, directions, and refusal of bad registrations."""

from __future__ import annotations

import pytest

from mmfuse.metrics import (
    MetricInfo,
    default_metrics,
    get_metric,
    is_metric,
    list_metrics,
    main_metric,
    metric_info_for_column,
    register_metric,
)

LOWER_IS_BETTER = {"loss", "mae", "mse", "rmse", "log_loss", "brier", "ece"}


def test_builtin_metrics_are_registered_with_their_direction() -> None:
    expected = {
        "accuracy", "f1_weighted", "f1_macro", "top3_accuracy", "top5_accuracy", "log_loss", "brier", "ece",
        "roc_auc", "mae", "rmse", "mse", "pearson", "ccc", "acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc5",
        "acc7", "loss",
    }  # fmt: skip
    assert expected <= set(list_metrics())
    for name in expected:
        assert get_metric(name).higher_is_better is (name not in LOWER_IS_BETTER), name
        assert get_metric(name).mode == ("min" if name in LOWER_IS_BETTER else "max")


def test_list_metrics_by_task() -> None:
    classification, regression = set(list_metrics("classification")), set(list_metrics("regression"))
    assert {"accuracy", "ece", "loss"} <= classification and not {"mae", "acc7"} & classification
    assert {"mae", "ccc", "acc7", "loss"} <= regression and "accuracy" not in regression
    with pytest.raises(ValueError, match="Unknown task 'ranking'"):
        list_metrics("ranking")


@pytest.mark.parametrize(
    ("column", "name"),
    [
        ("accuracy", "accuracy"),
        ("val_accuracy", "accuracy"),
        ("accuracy_mean", "accuracy"),
        ("accuracy_std", "accuracy"),
        ("val_f1_weighted_mean", "f1_weighted"),
        ("test_nll", "log_loss"),
        ("val_loss", "loss"),
        ("train_loss", "loss"),
        ("val_corr", "pearson"),
        ("acc2_non0_mean", "acc2_non0"),
    ],
)
def test_metric_info_for_column(column: str, name: str) -> None:
    assert metric_info_for_column(column).name == name


@pytest.mark.parametrize("column", ["params", "seed", "val_", "train_seconds", "mean"])
def test_non_metric_columns_are_refused_with_the_valid_names(column: str) -> None:
    with pytest.raises(ValueError, match=r"names no registered metric.*accuracy"):
        metric_info_for_column(column)
    with pytest.raises(ValueError, match="non-empty string"):
        metric_info_for_column("")


def test_get_metric_unknown_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"Unknown metric 'acc'\. Valid names: .*accuracy"):
        get_metric("acc")
    assert is_metric("nll") and is_metric("accuracy") and not is_metric("val_accuracy")


def test_main_and_default_metrics() -> None:
    assert main_metric("classification") == "accuracy" and main_metric("regression") == "mae"
    assert main_metric("regression", "acc7") == "acc7" and main_metric("classification", "nll") == "log_loss"
    with pytest.raises(ValueError, match="does not apply to regression"):
        main_metric("regression", "accuracy")
    for task in ("classification", "regression"):
        defaults = default_metrics(task)
        assert defaults[0] == main_metric(task)
        assert all(get_metric(m).applies_to(task) for m in defaults)


def test_registration_is_checked() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_metric("accuracy", label="x", higher_is_better=True, tasks=["classification"])
    with pytest.raises(ValueError, match="already a metric name or alias"):
        register_metric("test_reg_x", label="x", higher_is_better=True, tasks=["regression"], aliases=["nll"])
    with pytest.raises(ValueError, match="alias named 'corr'"):
        register_metric("corr", label="x", higher_is_better=True, tasks=["regression"])
    with pytest.raises(ValueError, match="'tasks' of metric"):
        register_metric("test_reg_y", label="x", higher_is_better=True, tasks=["ranking"])
    with pytest.raises(ValueError, match="higher_is_better"):
        MetricInfo("z", "z", "yes", ("regression",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="low < high"):
        MetricInfo("z", "z", True, ("regression",), bounds=(1.0, 0.0))
    assert not is_metric("test_reg_x") and not is_metric("test_reg_y")


def test_a_user_metric_is_read_by_every_consumer() -> None:
    """Registering a metric is all it takes: the trainer's monitor direction and the tuner read the same entry."""
    from mmfuse.train import TrainConfig, monitor_mode

    register_metric(
        "test_user_spearman", label="Spearman", higher_is_better=True, tasks=["regression"], bounds=(-1.0, 1.0)
    )
    assert monitor_mode("val_test_user_spearman") == "max"
    assert TrainConfig(monitor="test_user_spearman").resolved_mode("regression") == "max"


def test_a_metric_family_registers_its_functions_with_the_docstring_as_description() -> None:
    import numpy as np

    from mmfuse.metrics import MetricFamily, compute_metric

    probs_family = MetricFamily(tasks=("classification",), higher_is_better=True, bounds=(0.0, 1.0), needs_probs=True)

    @probs_family.metric("test_family_true_prob", "p(true)", options={"power": 2})
    def true_prob(y_true, probs, power=1):
        """Mean ``power``-th power of the probability given to the true class.

        Second line: not part of the description.
        """
        p = np.asarray(probs)[np.arange(len(y_true)), np.asarray(y_true)]
        return float(np.mean(p**power))

    info = get_metric("test_family_true_prob")
    assert info.description == "Mean power-th power of the probability given to the true class."
    assert (info.needs_probs, info.higher_is_better, info.bounds, info.tasks) == (
        True, True, (0.0, 1.0), ("classification",),
    )  # fmt: skip
    assert compute_metric("test_family_true_prob", [0, 1], [9, 9], [[0.5, 0.5], [0.0, 1.0]]) == 0.625
    assert true_prob([0], [[0.5, 0.5]]) == 0.5  # the decorator returns the function itself

    errors = MetricFamily(tasks=("regression",), higher_is_better=False, bounds=(0.0, None), unit="target units")
    with pytest.raises(ValueError, match="needs a docstring"):
        errors.metric("test_family_undocumented", "?")(lambda t, p: 0.0)
    errors.metric("test_family_max", "max", bounds=(0.0, 10.0), unit="", description="Largest error.")(
        lambda t, p: float(np.max(np.abs(np.asarray(t) - np.asarray(p))))
    )
    assert (get_metric("test_family_max").bounds, get_metric("test_family_max").unit) == ((0.0, 10.0), "")
    assert compute_metric("test_family_max", [1.0, 2.0], [1.5, 4.0]) == 2.0
