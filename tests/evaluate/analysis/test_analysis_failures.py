"""Failure-case counting, checked by hand on a tiny confusion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmfuse.evaluate.analysis import error_agreement, error_patterns, worst_rows


def test_error_patterns_on_a_tiny_confusion() -> None:
    #             rows: true a a a b b c c c c
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 0, 1, 0, 2])
    # errors: a->b x2, b->a x1, c->a x2, c->b x1  (6 errors)
    patterns = error_patterns(y_true, y_pred, ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"]) for p in patterns] == [
        ("a", "b", 2),
        ("c", "a", 2),
        ("b", "a", 1),
        ("c", "b", 1),
    ]
    assert patterns[0]["share_of_errors"] == pytest.approx(2 / 6)
    assert patterns[1]["share_of_class"] == pytest.approx(2 / 4)
    assert error_patterns(y_true, y_pred, top=1)[0]["true"] == "0"
    assert error_patterns([0, 1], [0, 1]) == []
    with pytest.raises(ValueError, match="equal length"):
        error_patterns([0, 1], [0])


def test_worst_rows_and_agreement() -> None:
    assert worst_rows([0.5, 3.0, 1.0, float("nan")], 3).tolist() == [1, 2, 0]
    agree = error_agreement(
        {
            "x": [True, True, False, False],
            "y": [True, False, True, False],
            "z": [False, False, False, False],
        }
    )
    assert agree["jaccard"][0, 1] == pytest.approx(1 / 3)
    assert agree["jaccard"][0, 0] == 1.0
    assert math.isnan(agree["jaccard"][2, 2])
    assert agree["all_wrong"] == 0 and agree["any_wrong"] == 3
    assert agree["n_errors"] == [2, 2, 0]
    with pytest.raises(ValueError, match="at least one"):
        error_agreement({})
