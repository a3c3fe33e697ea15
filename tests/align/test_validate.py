"""Validation report numbers on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmfuse.align import Stream, Timeline, ValidationReport, validate_streams
from mmfuse.errors import StreamError

GRID = Timeline.grid(1.0, 0.0, 10.0)  # 11 steps, 0..10 s


def test_coverage_gaps_and_warnings():
    rep = validate_streams(
        {
            "short": ([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]),  # present at 0, 1, 2 -> 3/11; gap 2..10
            "offset": (np.arange(10) + 0.5, np.ones(10)),  # present at 1..9 -> 9/11, every present step interpolated
            "words": ([0.0, 4.0], [1.0, 2.0], "interval", [1.5, 10.0]),  # uncovered 1.5..4.0
        },
        GRID,
        gap_threshold=1.0,
    )
    by = {s.name: s for s in rep.streams}
    assert by["short"].coverage == pytest.approx(3 / 11)
    assert by["short"].interpolated == 0.0
    assert by["short"].gaps == [(2.0, 10.0, 8.0)]
    assert by["offset"].coverage == pytest.approx(9 / 11)
    assert by["offset"].interpolated == 1.0
    assert by["offset"].gaps == []
    assert by["words"].gaps == [(1.5, 4.0, 2.5)]
    # words present at 0, 1 (row 0) and 4..9 (row 1; 10 is its end, not covered) -> 8 / 11
    assert by["words"].coverage == pytest.approx(8 / 11)
    assert by["words"].dim == 1 and by["words"].kind == "interval"
    assert len(rep.warnings) == 2
    assert any("'short'" in w and "5 s" in w and "8.00" in w for w in rep.warnings)
    assert any("'offset'" in w and "100.0%" in w for w in rep.warnings)
    assert rep.ok


def test_broken_raw_streams_are_counted_not_raised():
    t = [0.0, 2.0, 1.0, 1.0, np.nan, 3.0, 2.5]
    v = [0.0, 1.0, 2.0, 3.0, 4.0, np.inf, 6.0]
    rep = validate_streams({"x": (t, v), "bad": ([0.0, 1.0], [1.0, 2.0, 3.0]), "gone": None}, GRID, recording="r1")
    by = {s.name: s for s in rep.streams}
    x = by["x"]
    assert x.n_samples == 7 and x.non_finite == 2
    # finite rows in order: 0, 2, 1, 1, 2.5 -> out-of-order pairs (2 > 1), (1 < ... no), 2.5 ok -> 1; duplicates: 1
    assert x.out_of_order == 1 and x.duplicates == 1
    assert x.start == 0.0 and x.end == 2.5 and not x.problems
    assert by["bad"].problems and "'bad'" in by["bad"].problems[0]
    assert not by["gone"].present and by["gone"].coverage == 0.0
    assert any("'gone'" in w and "absent" in w for w in rep.warnings)
    assert any("out-of-order" in w for w in rep.warnings) and any("duplicate" in w for w in rep.warnings)
    assert any("NaN/inf" in w for w in rep.warnings)
    assert not rep.ok and "recording 'r1'" in rep.errors[0]


def test_dict_markdown_and_merge():
    tl = Timeline.grid(2.0, 0.0, 2.0)  # 5 steps
    full = Stream.create("a", [0.0, 1.0, 2.0], [[0.0, 1.0]] * 3)
    r1 = validate_streams({"a": full, "b": ([0.0, 0.5], [1.0, 1.0])}, tl, recording="r1")
    r2 = validate_streams({"a": None, "b": ([0.0, 0.5, 1.0, 1.5, 2.0], np.zeros(5))}, tl, recording="r2")
    merged = ValidationReport.merge([r1, r2])
    assert len(merged.streams) == 4 and set(merged.recordings) == {"r1", "r2"}
    summ = merged.summary()
    assert summ["a"]["coverage"] == pytest.approx(0.5) and summ["a"]["present_in"] == 1
    assert summ["b"]["coverage"] == pytest.approx((2 + 5) / 10) and summ["b"]["dims"] == [1]
    d = merged.to_dict()
    text = json.dumps(d, allow_nan=False)  # JSON-safe
    assert '"recording": "r2"' in text and d["summary"]["a"]["dims"] == [2]
    md = merged.to_markdown()
    assert md.startswith("# Stream validation report")
    assert "| a |" in md and "absent" in md and "## Warnings" in md
    assert merged.warnings == r1.warnings + r2.warnings


def test_argument_errors():
    with pytest.raises(StreamError, match="mapping"):
        validate_streams([("a", [0.0], [1.0])], GRID)  # type: ignore[arg-type]
    with pytest.raises(StreamError, match="gap_threshold"):
        validate_streams({}, GRID, gap_threshold=-1)
