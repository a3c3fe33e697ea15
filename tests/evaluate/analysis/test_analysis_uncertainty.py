"""Uncertainty measures and risk-coverage on inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from mmfuse.evaluate.analysis import (
    classification_uncertainty,
    enable_mc_dropout,
    regression_uncertainty,
    risk_coverage,
)


def test_perfect_ranking_has_zero_risk_up_to_the_error_fraction() -> None:
    rng = np.random.default_rng(0)
    n, n_err = 200, 30
    errors = np.zeros(n)
    errors[:n_err] = 1
    confidence = np.where(errors == 1, rng.uniform(0.0, 0.4, n), rng.uniform(0.6, 1.0, n))  # errors least confident
    rc = risk_coverage(confidence, errors)
    keep = rc["coverage"] <= 1 - n_err / n + 1e-12
    assert np.all(rc["risk"][keep] == 0)
    assert rc["risk"][-1] == pytest.approx(n_err / n)
    assert np.all(np.diff(rc["risk"][~keep]) > 0)
    worst = risk_coverage(-confidence, errors)  # the reverse ranking
    assert worst["aurc"] > rc["aurc"]


def test_identical_passes_carry_no_epistemic_uncertainty() -> None:
    p = np.array([[0.7, 0.3], [0.5, 0.5]])
    u = classification_uncertainty(np.stack([p] * 5))
    np.testing.assert_allclose(u["mutual_information"], 0.0, atol=1e-12)
    np.testing.assert_allclose(u["entropy"], [-(0.7 * np.log(0.7) + 0.3 * np.log(0.3)), np.log(2)])
    np.testing.assert_allclose(u["variance"], 0.0)
    r = regression_uncertainty(np.array([[[1.0, 2.0]], [[3.0, 2.0]]]))  # [P=2, N=1, K=2]
    assert r["variance"].tolist() == [1.0]


def test_mc_dropout_switches_only_dropout_layers() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.3), nn.Dropout(0.0), nn.BatchNorm1d(2)).eval()
    with enable_mc_dropout(net) as n:
        assert n == 1
        assert net[1].training and not net[2].training and not net[3].training and not net.training
    assert not net[1].training


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="equal length"):
        risk_coverage([0.1, 0.2], [1])
    with pytest.raises(ValueError, match=r"\[P, N, C\]"):
        classification_uncertainty(np.zeros((2, 2)))
