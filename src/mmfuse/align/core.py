"""The alignment engine: every stream onto one timeline, with masks, staleness and interpolation flags.

All work is vectorised with ``np.searchsorted``, cumulative sums and ``ufunc.reduceat``. The target timeline
is processed in chunks of ``chunk_size`` steps; a chunk touches only the source rows it needs, and running
sums over those rows are taken in blocks of ``chunk_size`` rows, so the extra memory at any moment is
``O(chunk_size × D)`` on top of the preallocated outputs. Sums are accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmfuse.align.stream import COLLAPSE_RULES, Stream, StreamKind, check_choice
from mmfuse.align.timeline import Timeline
from mmfuse.errors import StreamError

__all__ = [
    "COINCIDENCE_ATOL",
    "DEFAULT_CHUNK_SIZE",
    "AlignedSet",
    "AlignedStream",
    "align",
    "align_stream",
]

DEFAULT_CHUNK_SIZE = 8192
"""Target steps processed at once (and source rows summed at once)."""

COINCIDENCE_ATOL = 1e-9
"""Seconds within which a target step and a source sample count as the same instant."""

_NORM_EPS = 1e-12


@dataclass
class AlignedStream:
    """One stream on the reference timeline.

    Attributes:
        name: Stream name.
        kind: The source stream's kind.
        values: ``[T, D]`` float32; exactly 0 where ``mask`` is False.
        mask: ``[T]`` bool; True where a real source sample supports the step (see :func:`align`).
        staleness: ``[T]`` float64 seconds since the last real sample at or before the step (interval steps:
            at the step's end); ``inf`` before the first sample. Defined for every step, masked or not.
        interpolated: ``[T]`` bool; True where the step is present but its value was estimated (interpolated,
            held or taken from a neighbour) rather than read from a sample at that instant / inside that
            interval. Always False where ``mask`` is False.
        tolerance: The tolerance (seconds) used for this stream.

    Example:
        >>> s = Stream.create("x", [0.0, 1.0], [0.0, 2.0])
        >>> a = align_stream(s, Timeline.from_points([0.0, 0.5, 2.0]))
        >>> a.values[:, 0].tolist(), a.mask.tolist(), a.interpolated.tolist()
        ([0.0, 1.0, 0.0], [True, True, False], [False, True, False])
        >>> a.coverage
        0.6666666666666666
    """

    name: str
    kind: StreamKind
    values: np.ndarray
    mask: np.ndarray
    staleness: np.ndarray
    interpolated: np.ndarray
    tolerance: float

    @property
    def dim(self) -> int:
        """``D``."""
        return int(self.values.shape[1])

    @property
    def coverage(self) -> float:
        """Fraction of steps present (0.0 for an empty timeline)."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def interpolated_fraction(self) -> float:
        """Fraction of the *present* steps that were interpolated (0.0 when none is present)."""
        n = int(self.mask.sum())
        return float(self.interpolated.sum()) / n if n else 0.0


@dataclass
class AlignedSet:
    """Several streams aligned onto one timeline.

    Attributes:
        timeline: The reference timeline (``T`` steps).
        streams: Name -> :class:`AlignedStream`, in sorted name order.

    Example:
        >>> a = Stream.create("a", [0.0, 1.0], [0.0, 1.0])
        >>> b = Stream.create("b", [0.5, 1.0], [1.0, 0.0], kind="discrete")
        >>> out = align([a, b], Timeline.grid(2.0, 0.0, 1.0))
        >>> sorted(out.masks), out.masks["b"].tolist()
        (['a', 'b'], [False, True, True])
    """

    timeline: Timeline
    streams: dict[str, AlignedStream] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, np.ndarray]:
        """Name -> ``[T, D]`` values."""
        return {k: s.values for k, s in self.streams.items()}

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """Name -> ``[T]`` masks."""
        return {k: s.mask for k, s in self.streams.items()}

    def __getitem__(self, name: str) -> AlignedStream:
        try:
            return self.streams[name]
        except KeyError:
            raise KeyError(f"No aligned stream {name!r}; streams: {sorted(self.streams)}.") from None

    def __len__(self) -> int:
        return len(self.timeline)


# ---------------------------------------------------------------------------------------------------------
# range machinery


def _prefix_at(v: np.ndarray, q: np.ndarray, weights: Sequence[np.ndarray | None], block: int) -> list[np.ndarray]:
    """Running sums ``sum(w[i] * v[i] for r0 <= i < q_k)`` at every position ``q_k``, ``r0 = min(q)``.

    Only differences of the results are meaningful. The source rows between ``min(q)`` and ``max(q)`` are
    visited once, ``block`` rows at a time, so memory stays ``O(block × D + len(q) × D)``.

    Returns:
        One ``[len(q), D]`` float64 array per entry of ``weights`` (None means weight 1).
    """
    d = v.shape[1]
    outs = [np.zeros((q.size, d), dtype=np.float64) for _ in weights]
    if q.size == 0:
        return outs
    r0, r1 = int(q.min()), int(q.max())
    order = np.argsort(q, kind="stable")
    qs = q[order]
    carry = [np.zeros(d, dtype=np.float64) for _ in weights]
    for b0 in range(r0, r1, block):
        b1 = min(b0 + block, r1)
        i0 = int(np.searchsorted(qs, b0, side="right"))
        i1 = int(np.searchsorted(qs, b1, side="right"))
        sel = order[i0:i1]
        rel = qs[i0:i1] - b0 - 1  # position q sums rows [b0, q) of this block -> cumsum index q - b0 - 1
        vb = v[b0:b1]  # [<=block, D]
        for j, w in enumerate(weights):
            src = vb if w is None else vb * w[b0:b1, None]
            cs = np.cumsum(src, axis=0, dtype=np.float64)  # [<=block, D]
            outs[j][sel] = carry[j] + cs[rel]
            carry[j] = carry[j] + cs[-1]
    return outs


def _range_max(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Column-wise max of ``v[lo_k:hi_k]`` for non-empty ranges; ``[K, D]`` without copying ``v``."""
    if lo.size == 0:
        return np.zeros((0, v.shape[1]), dtype=v.dtype)
    r0, r1 = int(lo.min()), int(hi.max())
    view = v[r0:r1]
    idx = np.empty(2 * lo.size, dtype=np.intp)
    idx[0::2] = lo - r0
    idx[1::2] = hi - 1 - r0
    part = np.maximum.reduceat(view, idx, axis=0)[0::2]  # max over [lo, hi - 1), or v[lo] when lo == hi - 1
    return np.maximum(part, v[hi - 1])


def _collapse(
    s: Stream,
    lo: np.ndarray,
    hi: np.ndarray,
    rule: str,
    block: int,
    win: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Collapse the source rows ``[lo_k, hi_k)`` (all non-empty) into one ``[K, D]`` float64 value each.

    For interval sources with windows ``win = (a, b)`` the mean weights each row by its overlap with
    ``[a_k, b_k)``; where the overlap is zero for every row (zero-length rows or windows) the plain mean is
    used. Point sources always use the plain mean.
    """
    v = s.values
    if rule == "first":
        return v[lo].astype(np.float64)
    if rule == "last":
        return v[hi - 1].astype(np.float64)
    if rule == "max":
        return _range_max(v, lo, hi).astype(np.float64)
    k = lo.size
    if s.kind is not StreamKind.INTERVAL or win is None:
        sums = _prefix_at(v, np.concatenate([lo, hi]), [None], block)[0]
        return (sums[k:] - sums[:k]) / (hi - lo)[:, None]
    # Overlap-weighted mean. With F(x) = sum_i v_i * clip(x - s_i, 0, e_i - s_i) the overlap-weighted sum over
    # [a, b) is F(b) - F(a), and F(x) = x*A - B - x*C + E, where A, B sum v and v*s over rows starting at or
    # before x, and C, E sum v and v*e over rows ending at or before x (rows are sorted by start and by end).
    a, b = win
    starts, ends = s.timestamps, s.ends
    assert ends is not None  # interval streams always carry ends (checked at construction)
    r0, r1 = int(lo.min()), int(hi.max())
    # rows that do not overlap each other, up to 1 ns of rounding (frame ends computed as t + 1/rate)
    if bool(np.all(ends[r0 : r1 - 1] <= starts[r0 + 1 : r1] + 1e-9)):
        return _disjoint_weighted_mean(v, starts, ends, lo, hi, a, b, block)
    origin = float(a.min())  # shift times so the products stay small
    i_sa = np.searchsorted(starts, a, side="right")
    i_sb = np.searchsorted(starts, b, side="right")
    i_ea = np.searchsorted(ends, a, side="right")
    i_eb = np.searchsorted(ends, b, side="right")
    q = np.concatenate([i_sa, i_sb, i_ea, i_eb, lo, hi])
    one, vs, ve = _prefix_at(v, q, [None, starts - origin, ends - origin], block)
    xa, xb = (a - origin)[:, None], (b - origin)[:, None]

    def f_at(j_s: slice, j_e: slice, x: np.ndarray) -> np.ndarray:
        return x * one[j_s] - vs[j_s] - x * one[j_e] + ve[j_e]

    weighted = f_at(slice(k, 2 * k), slice(3 * k, 4 * k), xb) - f_at(slice(0, k), slice(2 * k, 3 * k), xa)
    # Total overlap per window: the same formula with v = 1, from 1-D running sums over the rows involved.
    r0, r1 = int(q.min()), int(q.max())
    cs_s = np.concatenate([[0.0], np.cumsum(starts[r0:r1] - origin)])
    cs_e = np.concatenate([[0.0], np.cumsum(ends[r0:r1] - origin)])

    def w_at(i_s: np.ndarray, i_e: np.ndarray, x: np.ndarray) -> np.ndarray:
        return x * (i_s - r0) - cs_s[i_s - r0] - x * (i_e - r0) + cs_e[i_e - r0]

    weight = w_at(i_sb, i_eb, b - origin) - w_at(i_sa, i_ea, a - origin)  # [K]
    plain = (one[5 * k :] - one[4 * k : 5 * k]) / (hi - lo)[:, None]
    scale = np.maximum(np.abs(b - a), 1.0)
    use_w = weight > 1e-12 * scale
    out = plain
    out[use_w] = weighted[use_w] / weight[use_w, None]
    return out


def _disjoint_weighted_mean(
    v: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    block: int,
) -> np.ndarray:
    """Overlap-weighted mean when the source rows do not overlap each other (frames, words): one pass.

    Every row strictly inside a window is covered for its whole duration, so the weighted sum over rows
    ``[lo, hi)`` is one running sum of ``v * duration`` minus the uncovered parts of the two edge rows. Gives
    the same values as the general formula (three running sums) at a third of the work.
    """
    dur = ends - starts  # [N]
    first, last = lo, hi - 1
    inner_lo = lo + 1  # rows strictly between the edge rows are covered whole
    inner_hi = np.maximum(hi - 1, inner_lo)
    k = lo.size
    sums = _prefix_at(v, np.concatenate([inner_lo, inner_hi]), [dur], block)[0]  # [2K, D]
    w_first = np.minimum(ends[first], b) - np.maximum(starts[first], a)  # [K] covered part of each edge row
    w_last = np.where(last > first, np.minimum(ends[last], b) - np.maximum(starts[last], a), 0.0)
    # edges added directly (no subtraction of nearly equal sums), so tiny overlaps stay exact
    weighted = (sums[k:] - sums[:k]) + v[first] * w_first[:, None] + v[last] * w_last[:, None]
    cum = np.concatenate([[0.0], np.cumsum(dur[int(lo.min()) : int(hi.max())])])
    base = int(lo.min())
    weight = cum[inner_hi - base] - cum[inner_lo - base] + w_first + w_last  # [K] total overlap
    scale = np.maximum(np.abs(b - a), 1.0)
    use_w = weight > 1e-12 * scale
    out = np.empty_like(weighted)
    out[use_w] = weighted[use_w] / weight[use_w, None]
    rest = np.flatnonzero(~use_w)
    if rest.size:  # zero overlap everywhere (zero-length rows or window): the plain mean of the rows
        plain = _prefix_at(v, np.concatenate([lo[rest], hi[rest]]), [None], block)[0]
        out[rest] = (plain[rest.size :] - plain[: rest.size]) / (hi[rest] - lo[rest])[:, None]
    return out


def _renormalise(vals: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Scale rows to unit length; rows of (near) zero norm take ``fallback`` (scaled when it is non-zero)."""
    norm = np.linalg.norm(vals, axis=1)
    small = norm <= _NORM_EPS
    if small.any():
        vals[small] = fallback[small]
        norm[small] = np.linalg.norm(vals[small], axis=1)
    ok = norm > _NORM_EPS
    vals[ok] /= norm[ok, None]
    return vals


# ---------------------------------------------------------------------------------------------------------
# per-chunk kernels. Each returns (values [K, D] float32, mask [K], staleness [K], interpolated [K]).

_Chunk = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _staleness_points(s: Stream, x: np.ndarray) -> np.ndarray:
    """Seconds since the last sample at or before ``x`` (interval sources: 0 inside a row, else since its end)."""
    if s.kind is StreamKind.INTERVAL:
        assert s.ends is not None
        n_ended = np.searchsorted(s.ends, x, side="right")  # rows with end <= x
        n_started = np.searchsorted(s.timestamps, x, side="right")  # rows with start <= x
        covered = n_started > n_ended
        last_end = s.ends[np.maximum(n_ended - 1, 0)]
        return np.where(covered, 0.0, np.where(n_ended > 0, x - last_end, np.inf))
    t = s.timestamps
    k = np.searchsorted(t, x + COINCIDENCE_ATOL, side="right") - 1
    return np.where(k >= 0, np.maximum(x - t[np.maximum(k, 0)], 0.0), np.inf)


def _points_from_points(s: Stream, x: np.ndarray, tol: float) -> _Chunk:
    t, v = s.timestamps, s.values
    n = t.size
    k = np.searchsorted(t, x + COINCIDENCE_ATOL, side="right") - 1  # last sample at or before x
    kc = np.clip(k, 0, n - 1)
    kn = np.clip(k + 1, 0, n - 1)
    d_prev = np.where(k >= 0, np.abs(x - t[kc]), np.inf)
    d_next = np.where(k + 1 < n, t[kn] - x, np.inf)
    inside = (x >= t[0] - COINCIDENCE_ATOL) & (x <= t[-1] + COINCIDENCE_ATOL)
    present = inside & (np.minimum(d_prev, d_next) <= tol + COINCIDENCE_ATOL)
    coincident = d_prev <= COINCIDENCE_ATOL
    staleness = np.where(k >= 0, np.maximum(x - t[kc], 0.0), np.inf)
    out = np.zeros((x.size, v.shape[1]), dtype=np.float32)
    idx = np.flatnonzero(present)
    if idx.size:
        k0 = kc[idx]
        if s.kind is StreamKind.DISCRETE:
            out[idx] = v[k0]
        else:
            k1 = kn[idx]
            span = t[k1] - t[k0]
            hold = coincident[idx] | (span <= 0)
            w = np.where(hold, 0.0, (x[idx] - t[k0]) / np.where(span > 0, span, 1.0))
            w = np.clip(w, 0.0, 1.0)[:, None]
            v0 = v[k0]  # [K, D] float32
            vals = v[k1].astype(np.float64)  # [K, D]; in place below: v0 + w * (v1 - v0), within [v0, v1]
            vals -= v0
            vals *= w
            vals += v0
            if s.kind is StreamKind.EMBEDDING:
                nearest = np.where(d_prev[idx] <= d_next[idx], k0, k1)
                vals = _renormalise(vals, v[nearest].astype(np.float64))
            out[idx] = vals
    return out, present, staleness, present & ~coincident


def _points_from_intervals(s: Stream, x: np.ndarray, tol: float, rule: str, block: int) -> _Chunk:
    starts, ends = s.timestamps, s.ends
    assert ends is not None
    lo = np.searchsorted(ends, x - tol, side="right")  # first row ending after x - tol
    hi = np.searchsorted(starts, x + tol, side="right")  # rows starting at or before x + tol
    inside = (x >= starts[0]) & (x <= ends[-1])
    present = inside & (hi > lo)
    covered = np.searchsorted(starts, x, side="right") > np.searchsorted(ends, x, side="right")
    out = np.zeros((x.size, s.dim), dtype=np.float32)
    idx = np.flatnonzero(present)
    if idx.size:
        xi = x[idx]
        out[idx] = _collapse(s, lo[idx], hi[idx], rule, block, win=(xi - tol, xi + tol))
    return out, present, _staleness_points(s, x), present & ~covered


def _intervals(s: Stream, a: np.ndarray, b: np.ndarray, tol: float, rule: str, block: int) -> _Chunk:
    if s.kind is StreamKind.INTERVAL:
        assert s.ends is not None
        lo = np.searchsorted(s.ends, a, side="right")  # first row ending after a
        hi = np.searchsorted(s.timestamps, b, side="left")  # rows starting before b
    else:
        lo = np.searchsorted(s.timestamps, a, side="left")  # samples in [a, b)
        hi = np.searchsorted(s.timestamps, b, side="left")
    has = hi > lo
    out = np.zeros((a.size, s.dim), dtype=np.float32)
    mask = has.copy()
    interp = np.zeros(a.size, dtype=bool)
    idx = np.flatnonzero(has)
    if idx.size:
        vals = _collapse(s, lo[idx], hi[idx], rule, block, win=(a[idx], b[idx]))
        if s.kind is StreamKind.EMBEDDING:
            vals = _renormalise(vals, s.values[lo[idx]].astype(np.float64))
        out[idx] = vals
    empty = np.flatnonzero(~has)
    if empty.size:  # no row inside the interval: the point rule at its midpoint, subject to the tolerance
        mid = 0.5 * (a[empty] + b[empty])
        if s.kind is StreamKind.INTERVAL:
            fv, fm, _, _ = _points_from_intervals(s, mid, tol, rule, block)
        else:
            fv, fm, _, _ = _points_from_points(s, mid, tol)
        out[empty] = fv
        mask[empty] = fm
        interp[empty] = fm
    return out, mask, _staleness_points(s, b), interp


# ---------------------------------------------------------------------------------------------------------
# public entry points


def _check_chunk(chunk_size: Any) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise StreamError(f"The 'chunk_size' parameter of align must be a positive integer. Got {chunk_size!r}.")
    return int(chunk_size)


def _check_tolerance(tol: Any, owner: str) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not np.isfinite(tol) or tol < 0:
        raise StreamError(f"The 'tolerance' for {owner} must be a finite number of seconds >= 0. Got {tol!r}.")
    return float(tol)


def align_stream(
    stream: Stream,
    timeline: Timeline,
    *,
    tolerance: float | None = None,
    collapse: str = "mean",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> AlignedStream:
    """Align one stream onto ``timeline``; see :func:`align` for the rules.

    Args:
        stream: The source stream.
        timeline: The reference timeline (``T`` steps).
        tolerance: Seconds; None uses ``stream.tolerance`` or else ``stream.default_tolerance``.
        collapse: ``"mean"``, ``"max"``, ``"first"`` or ``"last"``.
        chunk_size: Target steps per chunk (bounds the extra memory).

    Returns:
        The :class:`AlignedStream` (values ``[T, D]``).

    Raises:
        StreamError: for an unknown collapse rule, a bad tolerance or chunk size.

    Example:
        >>> s = Stream.create("speaking", [0.0, 1.0, 2.0], [0, 1, 0], kind="discrete")
        >>> align_stream(s, Timeline.from_points([0.5, 1.5])).values[:, 0].tolist()
        [0.0, 1.0]
    """
    if not isinstance(stream, Stream):
        raise StreamError(f"align_stream expects a Stream. Got {type(stream).__name__} instead.")
    if not isinstance(timeline, Timeline):
        raise StreamError(f"align_stream expects a Timeline. Got {type(timeline).__name__} instead.")
    rule = check_choice(collapse, COLLAPSE_RULES, parameter="collapse", owner=f"stream {stream.name!r}")
    if tolerance is None:
        tolerance = stream.tolerance if stream.tolerance is not None else stream.default_tolerance
    tol = _check_tolerance(tolerance, f"stream {stream.name!r}")
    block = _check_chunk(chunk_size)
    n_steps = len(timeline)
    values = np.zeros((n_steps, stream.dim), dtype=np.float32)
    mask = np.zeros(n_steps, dtype=bool)
    staleness = np.empty(n_steps, dtype=np.float64)
    interpolated = np.zeros(n_steps, dtype=bool)
    for c0 in range(0, n_steps, block):
        sl = slice(c0, min(c0 + block, n_steps))
        if timeline.ends is not None:
            res = _intervals(stream, timeline.times[sl], timeline.ends[sl], tol, rule, block)
        elif stream.kind is StreamKind.INTERVAL:
            res = _points_from_intervals(stream, timeline.times[sl], tol, rule, block)
        else:
            res = _points_from_points(stream, timeline.times[sl], tol)
        values[sl], mask[sl], staleness[sl], interpolated[sl] = res
    return AlignedStream(
        name=stream.name,
        kind=stream.kind,
        values=values,
        mask=mask,
        staleness=staleness,
        interpolated=interpolated,
        tolerance=tol,
    )


def _per_stream(option: Any, names: Sequence[str], parameter: str) -> dict[str, Any]:
    if isinstance(option, Mapping):
        unknown = sorted(set(option) - set(names))
        if unknown:
            raise StreamError(
                f"The {parameter!r} parameter of align names unknown streams {unknown}; streams: {sorted(names)}."
            )
        return {n: option.get(n) for n in names}
    return {n: option for n in names}


def align(
    streams: Sequence[Stream] | Mapping[str, Stream],
    timeline: Timeline,
    *,
    tolerance: float | Mapping[str, float] | None = None,
    collapse: str | Mapping[str, str] = "mean",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> AlignedSet:
    """Align several streams onto one reference timeline.

    Point timeline (a grid, another stream's timestamps), step at time ``x``, source samples ``t_0 < ... <
    t_{N-1}``:

    * **present** (mask True) iff ``t_0 <= x <= t_{N-1}`` (never extrapolated) and some sample lies within
      ``tolerance`` of ``x``; otherwise the step is missing: value 0, mask False;
    * continuous: linear interpolation between the samples around ``x``; discrete: the last sample at or
      before ``x``, held; embedding: interpolated, then scaled to unit length (a zero result falls back to
      the nearest sample);
    * interval sources: the rows covering ``x`` (``start <= x < end``) are collapsed with equal weights; with a
      tolerance > 0 the rows overlapping ``[x - tol, x + tol]`` are collapsed, weighted by overlap, bridging
      short gaps between rows (still only between the first start and the last end).

    Interval timeline, step ``[a, b)``: point sources collapse the samples with ``a <= t < b``, interval
    sources the rows overlapping ``[a, b)`` weighted by overlap (``collapse="mean"``), or their ``max``,
    ``first`` or ``last``. A step with no such row falls back to the point rule at its midpoint.

    Staleness: seconds since the last real sample at or before the step (interval steps: at their end;
    interval sources: 0 inside a row, else time since the last row ended); ``inf`` before the first sample.
    ``interpolated``: present but not read at that instant (interpolated, held, bridged or a midpoint
    fallback). Two times within :data:`COINCIDENCE_ATOL` count as the same instant.

    Args:
        streams: Streams, or a mapping name -> stream (the key is then the output name).
        timeline: The reference timeline (``T`` steps).
        tolerance: Seconds, for all streams or per stream name. Per stream, the order of precedence is: this
            mapping's entry, the stream's own ``tolerance``, this number, then the stream's default (its
            median sampling interval; 0 for interval streams).
        collapse: The reduction when several source rows fall into one step, for all or per stream name.
        chunk_size: Target steps per chunk; the extra memory is ``O(chunk_size × D)``.

    Returns:
        An :class:`AlignedSet` whose streams are in sorted name order.

    Raises:
        StreamError: duplicate stream names, unknown names in per-stream options, unknown collapse rules (the
            message lists the valid ones), bad tolerances or chunk sizes.

    Example:
        >>> audio = Stream.create("audio", [0.0, 0.01, 0.02, 0.03], [0.0, 1.0, 2.0, 3.0])
        >>> words = Timeline.from_intervals([0.0, 0.02], [0.02, 0.04])
        >>> out = align({"audio": audio}, words)
        >>> out["audio"].values[:, 0].tolist()
        [0.5, 2.5]
    """
    if isinstance(streams, Mapping):
        items = list(streams.items())
    elif isinstance(streams, Stream):
        items = [(streams.name, streams)]
    else:
        items = [(s.name if isinstance(s, Stream) else "?", s) for s in streams]
    names = [n for n, _ in items]
    seen: set[str] = set()
    for n, s in items:
        if not isinstance(s, Stream):
            raise StreamError(f"align expects Stream objects. Got {type(s).__name__} for entry {n!r}.")
        if n in seen:
            raise StreamError(f"align got two streams named {n!r}; stream names must be unique.")
        seen.add(n)
    tols = _per_stream(tolerance, names, "tolerance")
    rules = _per_stream(collapse, names, "collapse")
    out: dict[str, AlignedStream] = {}
    for n, s in sorted(items, key=lambda kv: kv[0]):
        tol = tols[n]  # a mapping entry wins; a missing entry falls back to the stream's own / default
        if not isinstance(tolerance, Mapping) and s.tolerance is not None:
            tol = s.tolerance
        aligned = align_stream(s, timeline, tolerance=tol, collapse=rules[n] or "mean", chunk_size=chunk_size)
        aligned.name = n
        out[n] = aligned
    return AlignedSet(timeline=timeline, streams=out)
