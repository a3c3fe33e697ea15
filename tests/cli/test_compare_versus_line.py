"""mmfuse compare's closing line: the best fusion's interval and its verdict against the best unimodal baseline."""

from __future__ import annotations

from mmfuse.cli._compare import _versus_line


def _row(fusion: str, **columns: object) -> dict[str, object]:
    return {"fusion": fusion, "ci_low": None, "ci_high": None, "p_vs_best_unimodal": None, "vs_best_unimodal": None} | (
        columns
    )


def test_the_best_fusion_is_stated_against_the_reference_chosen_on_validation() -> None:
    summary = [
        _row("unimodal-text", ci_low=0.80, ci_high=0.86, vs_best_unimodal="reference"),
        _row("gated", ci_low=0.78, ci_high=0.84, vs_best_unimodal="not different", p_vs_best_unimodal=0.4123),
        _row("concat", ci_low=0.70, ci_high=0.80, vs_best_unimodal="worse", p_vs_best_unimodal=0.001),
    ]
    assert _versus_line(summary, "accuracy") == (
        "gated: 95% CI of test accuracy [0.7800, 0.8400]; against unimodal-text (best unimodal baseline, chosen on "
        "validation): not different, paired test p = 0.41."
    )


def test_without_baselines_only_the_interval_and_without_columns_nothing() -> None:
    assert (
        _versus_line([_row("gated", ci_low=0.5, ci_high=0.6)], "mae") == "gated: 95% CI of test mae [0.5000, 0.6000]."
    )
    assert _versus_line([_row("gated")], "accuracy") == ""
    assert _versus_line([{"fusion": "gated", "accuracy_mean": 0.5}], "accuracy") == ""  # a summary of an older run
