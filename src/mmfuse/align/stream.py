"""Streams: timestamped feature arrays of one declared kind, validated at construction.

A stream is ``N`` samples: timestamps ``[N]`` float64 seconds and values ``[N, D]`` float32. Interval streams
(words, utterances) also carry ``ends`` ``[N]``: each row covers ``[timestamps[i], ends[i])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from mmfuse.errors import StreamError

__all__ = [
    "COLLAPSE_RULES",
    "DUPLICATE_POLICIES",
    "Stream",
    "StreamKind",
    "check_choice",
    "non_finite_at",
]

DUPLICATE_POLICIES: tuple[str, ...] = ("error", "mean", "first", "last")
"""How :meth:`Stream.create` treats samples that share a timestamp."""

COLLAPSE_RULES: tuple[str, ...] = ("mean", "max", "first", "last")
"""How several source rows falling into one target step are reduced to one value."""


class StreamKind(str, Enum):
    """What a stream's values are, which decides how they are aligned.

    * ``CONTINUOUS`` (audio energy, motion, landmarks): linear interpolation between samples.
    * ``DISCRETE`` (is_speaking, face_count, labels): the previous sample is held, never interpolated.
    * ``EMBEDDING`` (unit-norm vectors): interpolated, then renormalised to unit length.
    * ``INTERVAL`` (words, utterances): each row covers ``[start, end)``; rows are collapsed by overlap.

    Example:
        >>> StreamKind("embedding") is StreamKind.EMBEDDING
        True
        >>> StreamKind.parse("discrete").value
        'discrete'
    """

    CONTINUOUS = "continuous"
    DISCRETE = "discrete"
    EMBEDDING = "embedding"
    INTERVAL = "interval"

    @classmethod
    def parse(cls, kind: StreamKind | str, *, owner: str = "Stream") -> StreamKind:
        """Return the kind named by ``kind``.

        Raises:
            StreamError: naming the owner and listing the valid kinds when ``kind`` is unknown.
        """
        if isinstance(kind, StreamKind):
            return kind
        try:
            return cls(str(kind).lower())
        except ValueError:
            valid = ", ".join(k.value for k in cls)
            raise StreamError(f"Unknown stream kind {kind!r} for {owner}. Valid kinds: {valid}.") from None


def check_choice(value: object, valid: Sequence[str], *, parameter: str, owner: str) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise a StreamError listing the valid ones."""
    if not isinstance(value, str) or value not in valid:
        raise StreamError(
            f"The {parameter!r} parameter of {owner} must be one of {', '.join(map(repr, valid))}. Got {value!r}."
        )
    return value


def _real_array(name: str, what: str, arr: Any, refused: str, dtype: Any) -> np.ndarray:
    """``arr`` as a ``dtype`` array; complex ("c") or bool ("b") kinds in ``refused`` are errors.

    A cast would drop the imaginary part, or read True/False as 1/0 seconds.
    """
    try:
        a = np.asarray(arr)
        if a.dtype.kind in refused:
            got = {"c": "complex numbers", "b": "true/false values"}[a.dtype.kind]
            raise StreamError(f"Stream {name!r}: {what} must be real numbers. Got {got} (dtype {a.dtype}).")
        return a.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, StreamError):
            raise
        what_as = "numbers (seconds)" if what != "values" else "numbers"
        raise StreamError(f"Stream {name!r}: {what} must be {what_as}. Could not convert: {exc}") from None


def non_finite_at(values: np.ndarray, *, row: str = "row", column: str = "column") -> str | None:
    """Where an ``[N]`` or ``[N, D]`` array is not finite, in words for an error message; None when it all is.

    Args:
        values: The array.
        row: What a row is called (``"index"``, ``"event"``).
        column: What a column is called (``"feature"``).

    Example:
        >>> non_finite_at(np.array([[0.0, 1.0], [np.nan, np.inf]]))
        'nan at row 1, column 0 (2 non-finite in all)'
        >>> non_finite_at(np.array([0.0, np.inf]), row="index"), non_finite_at(np.zeros(3))
        ('inf at index 1 (1 non-finite in all)', None)
    """
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    at = f"{row} {first[0]}" + "".join(f", {column} {i}" for i in first[1:])
    return f"{float(values[first])!r} at {at} ({int(bad.sum())} non-finite in all)"


def _as_timestamps(name: str, what: str, arr: Any) -> np.ndarray:
    t = _real_array(name, what, arr, "cb", np.float64)
    if t.ndim != 1:
        raise StreamError(f"Stream {name!r}: {what} must be 1-D [N]. Got an array of shape {t.shape}.")
    bad = non_finite_at(t, row="index")
    if bad:
        raise StreamError(f"Stream {name!r}: {what} must be finite. Got {bad}.")
    return t


def _as_values(name: str, arr: Any, n: int) -> np.ndarray:
    v = _real_array(name, "values", arr, "c", np.float32)
    if v.ndim == 1:
        v = v[:, None]  # [N] -> [N, 1]
    if v.ndim != 2:
        raise StreamError(f"Stream {name!r}: values must be [N, D] (or [N]). Got an array of shape {v.shape}.")
    if v.shape[0] != n:
        raise StreamError(
            f"Stream {name!r}: values has {v.shape[0]} rows but timestamps has {n}; they must have the same length."
        )
    if v.shape[1] == 0:
        raise StreamError(f"Stream {name!r}: values must have at least one feature column. Got shape {v.shape}.")
    bad = non_finite_at(v)
    if bad:
        raise StreamError(f"Stream {name!r}: values must be finite. Got {bad}.")
    return v


def _merge_duplicates(
    t: np.ndarray, v: np.ndarray, ends: np.ndarray | None, policy: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Merge runs of equal (sorted) timestamps into one row each; vectorised with reduceat."""
    first = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])  # start index of each run
    if first.size == t.size:
        return t, v, ends
    last = np.r_[first[1:], t.size] - 1  # last index of each run
    if policy == "first":
        pick = first
    elif policy == "last":
        pick = last
    else:
        counts = (last - first + 1).astype(np.float64)
        means = np.add.reduceat(v, first, axis=0, dtype=np.float64) / counts[:, None]  # [U, D]
        merged_ends = None if ends is None else np.maximum.reduceat(ends, first)
        return t[first], means.astype(np.float32), merged_ends
    return t[pick], v[pick], None if ends is None else ends[pick]


@dataclass(frozen=True, eq=False)
class Stream:
    """One validated stream of timestamped features.

    Construction checks everything (use :meth:`create` to merge duplicate timestamps or pass a 1-D signal):
    timestamps finite and strictly increasing, values ``[N, D]`` finite, ``N >= 1``; interval streams need
    ``ends`` with ``ends >= timestamps`` and ends non-decreasing (rows may overlap, but one row may not lie
    strictly inside an earlier, longer one). Arrays are stored read-only.

    Attributes:
        name: The stream (modality) name, used in every error message.
        kind: How the stream is aligned, see :class:`StreamKind`.
        timestamps: ``[N]`` float64 seconds; start times for interval streams.
        values: ``[N, D]`` float32 features.
        ends: ``[N]`` float64 end times (interval streams only, else None).
        tolerance: Optional per-stream alignment tolerance in seconds (None: the default rule of
            :func:`mmfuse.align.align`).

    Example:
        >>> s = Stream.create("energy", [0.0, 0.1, 0.2], [1.0, 2.0, 4.0])
        >>> s.values.shape, s.kind.value
        ((3, 1), 'continuous')
        >>> round(s.median_interval, 3)
        0.1
    """

    name: str
    kind: StreamKind
    timestamps: np.ndarray
    values: np.ndarray
    ends: np.ndarray | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name:
            raise StreamError(f"The 'name' of a Stream must be a non-empty string. Got {name!r}.")
        kind = StreamKind.parse(self.kind, owner=f"stream {name!r}")
        t = _as_timestamps(name, "timestamps", self.timestamps)
        if t.size == 0:
            raise StreamError(f"Stream {name!r} is empty: it needs at least one sample.")
        v = _as_values(name, self.values, t.size)
        d = np.diff(t)
        bad = np.flatnonzero(d < 0)
        if bad.size:
            i = int(bad[0])
            raise StreamError(
                f"Stream {name!r}: timestamps must be sorted. Timestamp at index {i + 1} ({float(t[i + 1])!r}) is "
                f"before the one at index {i} ({float(t[i])!r}); {bad.size} out-of-order pair(s) in all."
            )
        dup = np.flatnonzero(d == 0)
        if dup.size:
            i = int(dup[0])
            raise StreamError(
                f"Stream {name!r}: duplicate timestamp {float(t[i])!r} at indices {i} and {i + 1} "
                f"({dup.size} duplicate(s) in all). Pass duplicates='mean', 'first' or 'last' to Stream.create to "
                "merge them."
            )
        ends: np.ndarray | None = None
        if kind is StreamKind.INTERVAL:
            if self.ends is None:
                raise StreamError(f"Stream {name!r} is of kind 'interval' and needs 'ends' (one end time per row).")
            ends = _as_timestamps(name, "ends", self.ends)
            if ends.size != t.size:
                raise StreamError(
                    f"Stream {name!r}: ends has {ends.size} entries but timestamps has {t.size}; they must match."
                )
            neg = np.flatnonzero(ends < t)
            if neg.size:
                i = int(neg[0])
                raise StreamError(
                    f"Stream {name!r}: interval ends must be >= starts. Row {i} ends at {float(ends[i])!r} before it "
                    f"starts at {float(t[i])!r}."
                )
            back = np.flatnonzero(np.diff(ends) < 0)
            if back.size:
                i = int(back[0]) + 1
                raise StreamError(
                    f"Stream {name!r}: interval ends must be non-decreasing (nested intervals are not supported; "
                    f"put them in separate streams). Row {i} ends at {float(ends[i])!r}, before row {i - 1} "
                    f"({float(ends[i - 1])!r})."
                )
            ends = np.ascontiguousarray(ends).view()
            ends.setflags(write=False)
        elif self.ends is not None:
            raise StreamError(f"Stream {name!r}: 'ends' is only allowed for kind 'interval', not {kind.value!r}.")
        tol = self.tolerance
        if tol is not None and (not isinstance(tol, (int, float)) or not np.isfinite(tol) or tol < 0):
            raise StreamError(f"The 'tolerance' of stream {name!r} must be a finite number >= 0. Got {tol!r}.")
        t = np.ascontiguousarray(t).view()  # read-only views: the caller's own arrays stay writable
        v = np.ascontiguousarray(v).view()
        t.setflags(write=False)
        v.setflags(write=False)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "timestamps", t)
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "ends", ends)
        object.__setattr__(self, "tolerance", None if tol is None else float(tol))

    @classmethod
    def create(
        cls,
        name: str,
        timestamps: Any,
        values: Any,
        kind: StreamKind | str = "continuous",
        ends: Any = None,
        duplicates: str = "error",
        tolerance: float | None = None,
    ) -> Stream:
        """Build a stream from array-likes, merging duplicate timestamps by an explicit rule.

        Args:
            name: Stream name.
            timestamps: ``[N]`` seconds, sorted (interval streams: start times).
            values: ``[N, D]`` or ``[N]`` (read as ``[N, 1]``); converted to float32.
            kind: A :class:`StreamKind` or its name.
            ends: ``[N]`` end times, interval streams only.
            duplicates: ``"error"`` (default) refuses repeated timestamps; ``"mean"`` averages the rows of a
                repeated timestamp (interval streams keep the latest end), ``"first"``/``"last"`` keep one row.
            tolerance: Optional per-stream alignment tolerance in seconds.

        Raises:
            StreamError: naming the stream, the problem and the first offending index, row or column.

        Example:
            >>> s = Stream.create("x", [0.0, 1.0, 1.0, 2.0], [1.0, 2.0, 4.0, 5.0], duplicates="mean")
            >>> s.timestamps.tolist(), s.values[:, 0].tolist()
            ([0.0, 1.0, 2.0], [1.0, 3.0, 5.0])
        """
        policy = check_choice(duplicates, DUPLICATE_POLICIES, parameter="duplicates", owner=f"stream {name!r}")
        k = StreamKind.parse(kind, owner=f"stream {name!r}")
        t = _as_timestamps(str(name), "timestamps", timestamps)
        if t.size == 0:
            raise StreamError(f"Stream {name!r} is empty: it needs at least one sample.")
        v = _as_values(str(name), values, t.size)
        e = None if ends is None else _as_timestamps(str(name), "ends", ends)
        if policy != "error" and t.size > 1:
            d = np.diff(t)
            bad = np.flatnonzero(d < 0)
            if bad.size == 0 and (d == 0).any():
                if e is not None and e.size != t.size:
                    raise StreamError(
                        f"Stream {name!r}: ends has {e.size} entries but timestamps has {t.size}; they must match."
                    )
                t, v, e = _merge_duplicates(t, v, e, policy)
        return cls(name=name, kind=k, timestamps=t, values=v, ends=e, tolerance=tolerance)

    @classmethod
    def _trusted(
        cls, name: str, kind: StreamKind, timestamps: np.ndarray, values: np.ndarray, ends: np.ndarray | None = None
    ) -> Stream:
        """Internal: wrap arrays that already satisfy every invariant of a Stream, without checking them again.

        Only for callers that validated the rows themselves (the live fusion buffer: finite float64 times sorted
        and without duplicates, finite float32 ``[N, D]`` values with ``N >= 1``). Public entry points validate.
        """
        self = object.__new__(cls)
        for key, value in (("name", name), ("kind", kind), ("timestamps", timestamps), ("values", values)):
            object.__setattr__(self, key, value)
        object.__setattr__(self, "ends", ends)
        object.__setattr__(self, "tolerance", None)
        return self

    @property
    def dim(self) -> int:
        """``D``, the feature size."""
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def start(self) -> float:
        """Time of the first sample (seconds)."""
        return float(self.timestamps[0])

    @property
    def end(self) -> float:
        """Time of the last sample, or the last end for interval streams (seconds)."""
        return float(self.ends[-1] if self.ends is not None else self.timestamps[-1])

    @property
    def median_interval(self) -> float:
        """Median spacing between consecutive timestamps (0.0 for a single sample)."""
        if self.timestamps.size < 2:
            return 0.0
        return float(np.median(np.diff(self.timestamps)))

    @property
    def default_tolerance(self) -> float:
        """The tolerance used when none is given: the median sampling interval; 0 for interval streams."""
        if self.kind is StreamKind.INTERVAL:
            return 0.0
        return self.median_interval

    def __repr__(self) -> str:
        return (
            f"Stream(name={self.name!r}, kind={self.kind.value!r}, N={len(self)}, D={self.dim}, "
            f"span=[{self.start:.3f}, {self.end:.3f}] s)"
        )
