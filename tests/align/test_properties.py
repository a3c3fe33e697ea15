"""Property tests of the alignment rules, against naive per-step reference implementations."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfuse.align import COINCIDENCE_ATOL, Stream, Timeline, align, align_stream

SETTINGS = settings(max_examples=60, deadline=None)
ATOL = COINCIDENCE_ATOL


@st.composite
def times(draw: st.DrawFn, min_size: int = 1, max_size: int = 25, start: float = 0.0) -> np.ndarray:
    """Strictly increasing times from positive increments (some far apart, to make gaps)."""
    steps = draw(
        st.lists(
            st.one_of(st.floats(0.01, 0.5), st.floats(0.5, 4.0)),
            min_size=min_size,
            max_size=max_size,
        )
    )
    return start + np.cumsum(np.asarray(steps, dtype=np.float64))


@st.composite
def point_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
    t = draw(times())
    d = draw(st.integers(1, 3))
    vals = np.asarray(
        draw(st.lists(st.floats(-50, 50, width=32), min_size=t.size * d, max_size=t.size * d)), dtype=np.float32
    ).reshape(t.size, d)
    x = draw(times(max_size=40, start=-2.0))
    # also hit some sample times exactly, so coincidence is exercised
    hits = draw(st.lists(st.sampled_from(list(t)), max_size=5))
    x = np.unique(np.concatenate([x, np.asarray(hits, dtype=np.float64)]))
    tol = draw(st.one_of(st.none(), st.floats(0.0, 3.0)))
    return t, vals, x, tol


def _oracle_mask(t: np.ndarray, x: np.ndarray, tol: float) -> np.ndarray:
    out = np.zeros(x.size, dtype=bool)
    for j, xj in enumerate(x):
        inside = t[0] - ATOL <= xj <= t[-1] + ATOL
        out[j] = inside and bool(np.min(np.abs(t - xj)) <= tol + ATOL)
    return out


def _oracle_last(t: np.ndarray, xj: float) -> int:
    """Index of the last sample at or before xj (within the coincidence tolerance), -1 if none."""
    k = -1
    for i, ti in enumerate(t):
        if ti <= xj + ATOL:
            k = i
    return k


def _tol_of(t: np.ndarray, tol: float | None) -> float:
    if tol is not None:
        return tol
    return float(np.median(np.diff(t))) if t.size > 1 else 0.0


@SETTINGS
@given(point_case(), st.sampled_from(["continuous", "discrete", "embedding"]))
def test_mask_iff_sample_within_tolerance_and_inside_span(case, kind):
    t, v, x, tol = case
    if kind == "embedding":
        v = v + np.float32(100.0)  # keep vectors away from zero
    a = align_stream(Stream.create("s", t, v, kind=kind), Timeline(x), tolerance=tol)
    expected = _oracle_mask(t, x, _tol_of(t, tol))
    np.testing.assert_array_equal(a.mask, expected)
    assert a.tolerance == _tol_of(t, tol)


@SETTINGS
@given(point_case())
def test_continuous_equals_np_interp_inside_the_span(case):
    t, v, x, tol = case
    a = align_stream(Stream.create("s", t, v), Timeline(x), tolerance=tol)
    for j in range(v.shape[1]):
        ref = np.interp(x, t, v[:, j].astype(np.float64))
        np.testing.assert_allclose(a.values[a.mask, j], ref[a.mask], rtol=1e-5, atol=1e-4)


@SETTINGS
@given(point_case())
def test_continuous_within_bounds_of_neighbouring_samples(case):
    t, v, x, tol = case
    a = align_stream(Stream.create("s", t, v), Timeline(x), tolerance=tol)
    for j in np.flatnonzero(a.mask):
        k = max(_oracle_last(t, x[j]), 0)
        k1 = min(k + 1, t.size - 1)
        lo = np.minimum(v[k], v[k1])
        hi = np.maximum(v[k], v[k1])
        assert np.all(a.values[j] >= lo) and np.all(a.values[j] <= hi)


@SETTINGS
@given(point_case())
def test_discrete_holds_previous_sample_exactly(case):
    t, v, x, tol = case
    a = align_stream(Stream.create("s", t, v, kind="discrete"), Timeline(x), tolerance=tol)
    for j in np.flatnonzero(a.mask):
        k = _oracle_last(t, x[j])
        assert k >= 0
        np.testing.assert_array_equal(a.values[j], v[k])


@SETTINGS
@given(point_case())
def test_forward_fill_consistency(case):
    """Present discrete steps that share their last real sample carry identical values and staleness x - t_k."""
    t, v, x, tol = case
    a = align_stream(Stream.create("s", t, v, kind="discrete"), Timeline(x), tolerance=tol)
    last_time = x - a.staleness
    for j in np.flatnonzero(a.mask):
        same = a.mask & np.isclose(last_time, last_time[j], atol=1e-7)
        assert np.all(a.values[same] == a.values[j])
        # a step that coincides with its sample is not interpolated; every other present step is
        assert a.interpolated[j] == (a.staleness[j] > ATOL + 1e-12 or not np.any(np.abs(t - x[j]) <= ATOL))


@SETTINGS
@given(point_case())
def test_embedding_unit_length(case):
    t, v, x, tol = case
    v = v + np.float32(60.0) * np.sign(v[:, :1] + 0.5)  # non-zero, may point in opposite directions
    a = align_stream(Stream.create("e", t, v, kind="embedding"), Timeline(x), tolerance=tol)
    norms = np.linalg.norm(a.values[a.mask], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


@SETTINGS
@given(point_case(), st.sampled_from(["continuous", "discrete", "embedding"]))
def test_mask_consistency_and_staleness(case, kind):
    t, v, x, tol = case
    if kind == "embedding":
        v = v + np.float32(100.0)
    a = align_stream(Stream.create("s", t, v, kind=kind), Timeline(x), tolerance=tol)
    assert np.all(a.values[~a.mask] == 0)
    assert not np.any(a.interpolated & ~a.mask)
    assert a.values.dtype == np.float32 and a.staleness.dtype == np.float64
    for j, xj in enumerate(x):
        k = _oracle_last(t, xj)
        if k < 0:
            assert a.staleness[j] == np.inf
        else:
            assert a.staleness[j] == max(xj - t[k], 0.0)
    # never extrapolated past the span
    outside = (x < t[0] - ATOL) | (x > t[-1] + ATOL)
    assert not np.any(a.mask[outside])


@SETTINGS
@given(
    st.floats(0.5, 200.0),
    st.floats(-100.0, 100.0),
    st.floats(0.0, 30.0),
)
def test_grid_timeline_is_strictly_increasing(rate, start, length):
    tl = Timeline.grid(rate, start, start + length)
    assert len(tl) >= 1
    assert np.all(np.diff(tl.times) > 0)
    assert tl.times[0] == start and tl.times[-1] <= start + length + 1e-9
    assert tl.times[-1] + 1.0 / rate > start + length - 1e-6  # no step missing at the end
    s = Stream.create("s", [start, start + length + 1.0], [0.0, 1.0])
    out = align([s], tl)
    assert out["s"].values.shape == (len(tl), 1) and out.timeline is tl


@st.composite
def interval_rows(draw: st.DrawFn, max_size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Intervals sorted by start with non-decreasing ends (they may overlap or have zero length)."""
    starts = draw(times(max_size=max_size))
    lens = np.asarray(draw(st.lists(st.floats(0.0, 3.0), min_size=starts.size, max_size=starts.size)))
    ends = np.maximum.accumulate(starts + lens)
    return starts, ends


@SETTINGS
@given(point_case(), interval_rows(), st.sampled_from(["mean", "max", "first", "last"]))
def test_point_source_on_intervals_matches_naive_collapse(case, rows, rule):
    t, v, _, tol = case
    a_, b_ = rows
    a = align_stream(Stream.create("s", t, v), Timeline.from_intervals(a_, b_), tolerance=tol, collapse=rule)
    for j in range(a_.size):
        inside = np.flatnonzero((t >= a_[j]) & (t < b_[j]))
        if inside.size:
            sel = v[inside].astype(np.float64)
            ref = {"mean": sel.mean(0), "max": sel.max(0), "first": sel[0], "last": sel[-1]}[rule]
            assert a.mask[j] and not a.interpolated[j]
            np.testing.assert_allclose(a.values[j], ref, rtol=1e-5, atol=1e-4)
        else:  # the midpoint rule
            mid = 0.5 * (a_[j] + b_[j])
            p = align_stream(Stream.create("s", t, v), Timeline([mid]), tolerance=tol)
            assert a.mask[j] == p.mask[0] and a.interpolated[j] == p.mask[0]
            np.testing.assert_array_equal(a.values[j], p.values[0])


@SETTINGS
@given(interval_rows(), interval_rows(), st.sampled_from(["mean", "max", "first", "last"]))
def test_interval_source_on_intervals_matches_naive_overlap(src, tgt, rule):
    s_, e_ = src
    rng = np.random.default_rng(s_.size)
    v = rng.normal(size=(s_.size, 2)).astype(np.float32)
    a_, b_ = tgt
    a = align_stream(
        Stream.create("w", s_, v, kind="interval", ends=e_), Timeline.from_intervals(a_, b_), collapse=rule
    )
    for j in range(a_.size):
        rows = np.flatnonzero((s_ < b_[j]) & (e_ > a_[j]))
        if not rows.size:
            assert not a.mask[j] or a.interpolated[j]
            continue
        w = np.minimum(e_[rows], b_[j]) - np.maximum(s_[rows], a_[j])
        sel = v[rows].astype(np.float64)
        if rule == "mean":
            ref = (w[:, None] * sel).sum(0) / w.sum() if w.sum() > 1e-9 else sel.mean(0)
        else:
            ref = {"max": sel.max(0), "first": sel[0], "last": sel[-1]}[rule]
        assert a.mask[j] and not a.interpolated[j]
        np.testing.assert_allclose(a.values[j], ref, rtol=1e-4, atol=1e-4)


@st.composite
def disjoint_interval_rows(draw: st.DrawFn, max_size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Intervals that do not overlap each other (frames, words): the one-pass path of the overlap mean."""
    starts = draw(times(max_size=max_size))
    lens = np.asarray(draw(st.lists(st.floats(0.0, 3.0), min_size=starts.size, max_size=starts.size)))
    ends = np.minimum(starts + lens, np.append(starts[1:], np.inf))
    return starts, ends


@SETTINGS
@given(disjoint_interval_rows(), interval_rows(), st.integers(1, 5))
def test_disjoint_interval_source_matches_naive_overlap(src, tgt, block):
    s_, e_ = src
    v = np.random.default_rng(s_.size).normal(size=(s_.size, 3)).astype(np.float32)
    a_, b_ = tgt
    a = align_stream(
        Stream.create("w", s_, v, kind="interval", ends=e_), Timeline.from_intervals(a_, b_), chunk_size=block
    )
    for j in range(a_.size):
        rows = np.flatnonzero((s_ < b_[j]) & (e_ > a_[j]))
        if not rows.size:
            continue
        w = np.minimum(e_[rows], b_[j]) - np.maximum(s_[rows], a_[j])
        sel = v[rows].astype(np.float64)
        ref = (w[:, None] * sel).sum(0) / w.sum() if w.sum() > 1e-9 else sel.mean(0)
        assert a.mask[j] and not a.interpolated[j]
        np.testing.assert_allclose(a.values[j], ref, rtol=1e-4, atol=1e-4)


@SETTINGS
@given(
    point_case(),
    interval_rows(),
    st.integers(1, 7),
    st.sampled_from(["continuous", "discrete", "embedding", "interval"]),
    st.sampled_from(["mean", "max", "first", "last"]),
    st.booleans(),
)
def test_chunked_equals_unchunked(case, rows, chunk, kind, rule, on_intervals):
    t, v, x, tol = case
    if kind == "embedding":
        v = v + np.float32(100.0)
    ends = None
    if kind == "interval":
        ends = t + np.linspace(0.0, 0.4, t.size)
        ends = np.maximum.accumulate(ends)
        tol = None if tol is None else tol / 4
    s = Stream.create("s", t, v, kind=kind, ends=ends)
    tl = Timeline.from_intervals(*rows) if on_intervals else Timeline(x)
    full = align_stream(s, tl, tolerance=tol, collapse=rule, chunk_size=10_000)
    part = align_stream(s, tl, tolerance=tol, collapse=rule, chunk_size=chunk)
    np.testing.assert_array_equal(full.mask, part.mask)
    np.testing.assert_array_equal(full.interpolated, part.interpolated)
    np.testing.assert_array_equal(full.staleness, part.staleness)
    np.testing.assert_allclose(full.values, part.values, rtol=1e-5, atol=1e-5)
