"""Hand-computed cases: interval collapse, duplicate policies, tolerance precedence, every bad-input error."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mmfuse.align import Stream, StreamKind, Timeline, align, align_stream
from mmfuse.errors import StreamError


@pytest.fixture
def words() -> Stream:
    # rows [0, 0.5) -> 1, [1, 1.5) -> 2, [1.5, 3) -> 4
    return Stream.create("words", [0.0, 1.0, 1.5], [1.0, 2.0, 4.0], kind="interval", ends=[0.5, 1.5, 3.0])


TARGETS = Timeline.from_intervals([0.0, 0.25, 1.0, 3.0], [1.0, 1.25, 2.0, 3.5])


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # [0, 1): only row 0 (0.5 s). [0.25, 1.25): row 0 for 0.25 s (1), row 1 for 0.25 s (2) -> 1.5.
        # [1, 2): row 1 for 0.5 s (2), row 2 for 0.5 s (4) -> 3. [3, 3.5): nothing -> missing.
        ("mean", [1.0, 1.5, 3.0, 0.0]),
        ("max", [1.0, 2.0, 4.0, 0.0]),
        ("first", [1.0, 1.0, 2.0, 0.0]),
        ("last", [1.0, 2.0, 4.0, 0.0]),
    ],
)
def test_interval_collapse_hand_computed(words, rule, expected):
    a = align_stream(words, TARGETS, collapse=rule)
    np.testing.assert_allclose(a.values[:, 0], expected)
    assert a.mask.tolist() == [True, True, True, False]
    assert not a.interpolated.any()


def test_overlap_weighted_mean_unequal_weights():
    s = Stream.create("u", [0.0, 0.9], [[10.0, 0.0], [20.0, 1.0]], kind="interval", ends=[1.0, 2.0])
    a = align_stream(s, Timeline.from_intervals([0.5], [1.5]))
    # overlaps: row 0 -> 0.5 s, row 1 -> 0.6 s
    np.testing.assert_allclose(a.values[0], [(0.5 * 10 + 0.6 * 20) / 1.1, 0.6 / 1.1], rtol=1e-6)


def test_point_source_on_intervals_and_midpoint_fallback():
    s = Stream.create("audio", [0.0, 0.1, 0.2, 0.3, 1.0], [1.0, 3.0, 2.0, 6.0, 0.0])
    tl = Timeline.from_intervals([0.0, 0.1, 0.31, 0.5], [0.2, 0.4, 0.32, 0.6])
    for rule, first_two in {"mean": [2.0, 11 / 3], "max": [3.0, 6.0], "first": [1.0, 3.0], "last": [3.0, 6.0]}.items():
        a = align_stream(s, tl, collapse=rule, tolerance=0.05)
        np.testing.assert_allclose(a.values[:2, 0], first_two, rtol=1e-6)
        # [0.31, 0.32) holds no sample: midpoint 0.315 is 0.015 s from 0.3 -> interpolated between 6 and 0
        assert a.mask.tolist() == [True, True, True, False]
        assert a.interpolated.tolist() == [False, False, True, False]
        np.testing.assert_allclose(a.values[2, 0], 6.0 + (0.315 - 0.3) / 0.7 * (0.0 - 6.0), rtol=1e-5)
        # staleness at each interval's end
        np.testing.assert_allclose(a.staleness, [0.0, 0.1, 0.02, 0.3], atol=1e-12)


def test_interval_source_on_points(words):
    tl = Timeline([-0.1, 0.0, 0.4, 0.5, 0.75, 1.2, 2.9, 3.0, 3.2])
    a = align_stream(words, tl)
    assert a.mask.tolist() == [False, True, True, False, False, True, True, False, False]
    np.testing.assert_allclose(a.values[:, 0], [0, 1, 1, 0, 0, 2, 4, 0, 0])
    np.testing.assert_allclose(a.staleness, [np.inf, 0, 0, 0, 0.25, 0, 0, 0, 0.2])
    # a tolerance bridges the gap [0.5, 1) near its edges but never extends past the last end
    b = align_stream(words, tl, tolerance=0.3)
    # (x = 3.0 is the last end itself: inside the span, reached through the tolerance)
    assert b.mask.tolist() == [False, True, True, True, True, True, True, True, False]
    assert b.interpolated.tolist() == [False, False, False, True, True, False, False, True, False]
    np.testing.assert_allclose(b.values[4, 0], 1.5)  # window [0.45, 1.05]: 0.05 s of row 0 (1), 0.05 s of row 1 (2)
    np.testing.assert_allclose(b.values[3, 0], 1.0)  # window [0.2, 0.8] overlaps row 0 only


def test_discrete_and_embedding_on_grid():
    d = Stream.create("speaking", [0.0, 1.0, 2.0], [0, 1, 0], kind="discrete")
    a = align_stream(d, Timeline.grid(4.0, 0.0, 2.0))
    assert a.values[:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0]
    e = Stream.create("clip", [0.0, 1.0], [[1.0, 0.0], [0.0, 1.0]], kind="embedding")
    b = align_stream(e, Timeline([0.5]))
    np.testing.assert_allclose(b.values[0], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    # antipodal neighbours: the interpolated vector is zero -> falls back to the nearest sample
    f = Stream.create("clip", [0.0, 1.0], [[1.0, 0.0], [-1.0, 0.0]], kind="embedding")
    c = align_stream(f, Timeline([0.5, 0.6]))
    np.testing.assert_allclose(c.values, [[1.0, 0.0], [-1.0, 0.0]])
    assert np.isfinite(c.values).all()


@pytest.mark.parametrize(
    ("policy", "values", "ends"),
    [
        ("mean", [1.0, 3.0, 5.0], [0.5, 2.0, 2.5]),
        ("first", [1.0, 2.0, 5.0], [0.5, 1.5, 2.5]),
        ("last", [1.0, 4.0, 5.0], [0.5, 2.0, 2.5]),
    ],
)
def test_duplicate_policies(policy, values, ends):
    t = [0.0, 1.0, 1.0, 2.0]
    s = Stream.create("x", t, [1.0, 2.0, 4.0, 5.0], duplicates=policy)
    assert s.timestamps.tolist() == [0.0, 1.0, 2.0]
    assert s.values[:, 0].tolist() == values
    w = Stream.create("w", t, [1.0, 2.0, 4.0, 5.0], kind="interval", ends=[0.5, 1.5, 2.0, 2.5], duplicates=policy)
    assert w.ends is not None and w.ends.tolist() == ends
    with pytest.raises(StreamError, match=r"'x'.*duplicate timestamp 1.0 at indices 1 and 2"):
        Stream.create("x", t, [1.0, 2.0, 4.0, 5.0])


def test_tolerance_precedence():
    s = Stream.create("s", [0.0, 1.0, 10.0], [0.0, 1.0, 2.0])  # median interval 5.0
    tl = Timeline([5.0])
    assert align([s], tl)["s"].mask.tolist() == [True]
    assert align([s], tl, tolerance=1.0)["s"].mask.tolist() == [False]
    own = Stream.create("s", [0.0, 1.0, 10.0], [0.0, 1.0, 2.0], tolerance=4.5)
    assert align([own], tl, tolerance=1.0)["s"].tolerance == 4.5  # the stream's own beats the global number
    assert align([own], tl, tolerance={"s": 0.5})["s"].tolerance == 0.5  # a per-stream entry beats both
    out = align({"renamed": s}, tl, collapse={"renamed": "max"})
    assert list(out.streams) == ["renamed"] and out["renamed"].name == "renamed"


def _err(fn, *patterns):
    with pytest.raises(StreamError) as info:
        fn()
    msg = str(info.value)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in {msg!r}"
    return msg


def test_bad_stream_inputs_name_stream_and_place():
    _err(lambda: Stream.create("aud", [0.0, np.nan, 2.0], [1, 2, 3]), "'aud'", "finite", "index 1")
    _err(lambda: Stream.create("aud", [0.0, np.inf], [1, 2]), "'aud'", "index 1")
    _err(lambda: Stream.create("aud", [0, 1, 2], [[0, 1], [0, np.nan], [0, 0]]), "'aud'", "row 1, column 1")
    _err(lambda: Stream.create("aud", [0, 1, 2], [[0, 1], [0, 0], [np.inf, 0]]), "'aud'", "row 2, column 0")
    _err(lambda: Stream.create("aud", [0.0, 2.0, 1.0, 3.0], [1, 2, 3, 4]), "'aud'", "sorted", "index 2")
    _err(lambda: Stream.create("aud", [], []), "'aud'", "empty")
    _err(lambda: Stream.create("aud", [0.0, 1.0], np.zeros((2, 2, 2))), "'aud'", r"\[N, D\]", r"\(2, 2, 2\)")
    _err(lambda: Stream.create("aud", [[0.0, 1.0]], [1, 2]), "'aud'", "1-D")
    _err(lambda: Stream.create("aud", [0.0, 1.0], [1, 2, 3]), "'aud'", "3 rows", "2")
    _err(lambda: Stream.create("aud", [0.0, 1.0], np.zeros((2, 0))), "'aud'", "at least one feature")
    _err(lambda: Stream.create("aud", ["a", "b"], [1, 2]), "'aud'", "numbers")
    _err(lambda: Stream.create("w", [0, 1], [1, 2], kind="interval", ends=[0.5, 0.9]), "'w'", "Row 1", ">= starts")
    _err(lambda: Stream.create("w", [0, 1], [1, 2], kind="interval", ends=[3.0, 2.0]), "'w'", "nested", "Row 1")
    _err(lambda: Stream.create("w", [0, 1], [1, 2], kind="interval", ends=[3.0]), "'w'", "ends has 1")
    _err(lambda: Stream.create("w", [0, 1], [1, 2], kind="interval"), "'w'", "needs 'ends'")
    _err(lambda: Stream.create("w", [0, 1], [1, 2], kind="interval", ends=[0.5, np.nan]), "'w'", "ends", "index 1")
    _err(lambda: Stream.create("c", [0, 1], [1, 2], ends=[1, 2]), "'c'", "only allowed")
    msg = _err(lambda: Stream.create("c", [0, 1], [1, 2], kind="audio"), "'c'", "Unknown stream kind 'audio'")
    assert all(k.value in msg for k in StreamKind)
    _err(lambda: Stream.create("c", [0, 1], [1, 2], duplicates="avg"), "'c'", "'duplicates'", "'mean'", "'avg'")
    _err(lambda: Stream.create("c", [0, 1], [1, 2], tolerance=-1.0), "'c'", "tolerance")
    _err(lambda: Stream.create("", [0, 1], [1, 2]), "name")


def test_bad_align_inputs():
    s = Stream.create("s", [0.0, 1.0], [0.0, 1.0])
    tl = Timeline([0.5])
    msg = _err(lambda: align([s], tl, collapse="median"), "'s'", "'collapse'", "'median'")
    assert all(r in msg for r in ("'mean'", "'max'", "'first'", "'last'"))
    _err(lambda: align([s, s], tl), "two streams named 's'")
    _err(lambda: align([s], tl, tolerance={"t": 0.1}), "unknown streams", "'t'")
    _err(lambda: align([s], tl, tolerance=-0.1), "'s'", "tolerance")
    _err(lambda: align([s], tl, chunk_size=0), "chunk_size")
    _err(lambda: align([np.zeros(3)], tl), "Stream objects")  # type: ignore[list-item]
    _err(lambda: Timeline([0.0, 0.0]), "strictly increasing", "index 1")
    _err(lambda: Timeline([0.0, np.nan]), "finite", "index 1")
    _err(lambda: Timeline.from_intervals([0.0, 1.0], [0.5, 0.9]), "interval 1", "before it starts")
    _err(lambda: Timeline.from_intervals([1.0, 0.0], [1.5, 0.9]), "sorted", "index 1")
    _err(lambda: Timeline.from_intervals([1.0], [1.5, 2.0]), "ends has 2")
    _err(lambda: Timeline.grid(0.0, 0.0, 1.0), "'rate'")
    _err(lambda: Timeline.grid(10.0, 1.0, 0.0), "start <= end")


def test_streams_are_read_only_and_timeline_from_stream(words):
    with pytest.raises(ValueError):
        words.values[0, 0] = 3.0
    tl = Timeline.from_stream(words)
    assert tl.is_interval and len(tl) == 3 and tl.end == 3.0
    aligned = align([words], tl)["words"]
    assert aligned.mask.all() and not aligned.interpolated.any()
    pts = Stream.create("p", [0.0, 0.5], [1.0, 2.0])
    assert not Timeline.from_stream(pts).is_interval
