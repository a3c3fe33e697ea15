"""Reference timelines: what every stream is aligned onto (points or intervals)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmfuse.align.stream import Stream, StreamKind
from mmfuse.errors import StreamError

__all__ = ["MAX_GRID_STEPS", "Timeline"]

MAX_GRID_STEPS = 20_000_000
"""The most steps :meth:`Timeline.grid` builds (55 hours at 100 Hz); more is refused with the size it would need."""


def _times(arr: Any, what: str) -> np.ndarray:
    t = np.asarray(arr, dtype=np.float64)
    if t.ndim != 1:
        raise StreamError(f"Timeline {what} must be 1-D [T]. Got an array of shape {t.shape}.")
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise StreamError(f"Timeline {what} must be finite. Got {float(t[bad[0]])!r} at index {int(bad[0])}.")
    return np.ascontiguousarray(t).view()  # a view, so read-only does not reach the caller's array


@dataclass(frozen=True, eq=False)
class Timeline:
    """The reference steps streams are aligned onto.

    A point timeline has strictly increasing step times; an interval timeline has one ``[start, end)`` per
    step, with non-decreasing starts and ``end >= start``. Build one with :meth:`grid`, :meth:`from_stream`,
    :meth:`from_points` or :meth:`from_intervals`.

    Attributes:
        times: ``[T]`` float64 step times in seconds (interval timelines: the starts).
        ends: ``[T]`` float64 end times for interval timelines, else None.

    Example:
        >>> tl = Timeline.grid(10.0, 0.0, 0.5)
        >>> len(tl), tl.times.tolist()
        (6, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
        >>> Timeline.from_intervals([0.0, 0.4], [0.4, 1.0]).is_interval
        True
    """

    times: np.ndarray
    ends: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = _times(self.times, "times")
        if self.ends is None:
            bad = np.flatnonzero(np.diff(t) <= 0)
            if bad.size:
                i = int(bad[0])
                raise StreamError(
                    f"Timeline times must be strictly increasing. Time at index {i + 1} ({float(t[i + 1])!r}) is not "
                    f"after index {i} ({float(t[i])!r})."
                )
            e = None
        else:
            e = _times(self.ends, "ends")
            if e.size != t.size:
                raise StreamError(f"Timeline ends has {e.size} entries but starts has {t.size}; they must match.")
            bad = np.flatnonzero(np.diff(t) < 0)
            if bad.size:
                i = int(bad[0])
                raise StreamError(
                    f"Timeline interval starts must be sorted. Start at index {i + 1} ({float(t[i + 1])!r}) is before "
                    f"index {i} ({float(t[i])!r})."
                )
            neg = np.flatnonzero(e < t)
            if neg.size:
                i = int(neg[0])
                raise StreamError(f"Timeline interval {i} ends at {float(e[i])!r} before it starts at {float(t[i])!r}.")
            e.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "times", t)
        object.__setattr__(self, "ends", e)

    @classmethod
    def grid(cls, rate: float, start: float, end: float, *, include_end: bool = True) -> Timeline:
        """A fixed-rate grid ``start, start + 1/rate, ...`` up to and including ``end`` (when on the grid).

        With ``include_end=False`` the grid covers the half-open span ``[start, end)``: a point exactly on
        ``end`` is left out (the span of interval streams, whose rows cover ``[start, end)``). It keeps at least
        the step at ``start``.

        Raises:
            StreamError: if ``rate`` is not a positive finite number or ``end < start``.

        Example:
            >>> len(Timeline.grid(10.0, 0.0, 0.4)), len(Timeline.grid(10.0, 0.0, 0.4, include_end=False))
            (5, 4)
        """
        if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise StreamError(f"The 'rate' parameter of Timeline.grid must be a positive number (Hz). Got {rate!r}.")
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise StreamError(f"Timeline.grid needs finite start <= end. Got start={start!r}, end={end!r} instead.")
        steps = (end - start) * rate
        if not steps < MAX_GRID_STEPS:
            raise StreamError(
                f"A grid at {rate:g} Hz over {end - start:.6g} s ({start:.6g} to {end:.6g}) would need "
                f"{steps + 1:,.0f} steps ({(steps + 1) * 8 / 1e9:,.3g} GB for the step times alone), over the limit "
                f"of {MAX_GRID_STEPS:,}. Check the timestamps' unit (they must be seconds, not epoch milli- or "
                "nanoseconds) or lower the rate."
            )
        n = math.floor(steps + 1e-9) + 1 if include_end else max(math.ceil(steps - 1e-9), 1)
        return cls(start + np.arange(n, dtype=np.float64) / float(rate))

    @classmethod
    def windows(cls, rate: float, start: float, end: float, *, include_end: bool = True) -> Timeline:
        """The steps of :meth:`grid` as windows: step ``k`` is ``[x_k - h/2, x_k + h/2)`` with ``h = 1/rate``.

        Aligning onto windows averages every sample inside a step (``collapse``) instead of reading the stream
        at the grid point, which is what a dense stream (100 Hz audio frames on a 10 Hz grid) needs: point
        sampling would use one frame in ten. The centres (``times + h/2``) are the grid's points, so there are
        as many windows as grid steps; they tile ``[start - h/2, x_last + h/2)``, and samples after that (less
        than half a step, as the grid stops at or before ``end``) fall in none, as point sampling never reads
        them either.

        Raises:
            StreamError: as :meth:`grid`.

        Example:
            >>> tl = Timeline.windows(10.0, 0.0, 0.2)
            >>> tl.times.round(3).tolist(), tl.ends.round(3).tolist()
            ([-0.05, 0.05, 0.15], [0.05, 0.15, 0.25])
        """
        n = len(cls.grid(rate, start, end, include_end=include_end))
        edges = start + (np.arange(n + 1, dtype=np.float64) - 0.5) / float(rate)  # shared: no gap, no overlap
        return cls(edges[:-1], edges[1:])

    @classmethod
    def from_points(cls, times: Any) -> Timeline:
        """A point timeline at the given strictly increasing times."""
        return cls(times)

    @classmethod
    def from_intervals(cls, starts: Any, ends: Any) -> Timeline:
        """An interval timeline: step ``j`` is ``[starts[j], ends[j])``."""
        return cls(starts, ends)

    @classmethod
    def from_stream(cls, stream: Stream) -> Timeline:
        """The timeline of another stream: its timestamps, or its rows for an interval stream."""
        if stream.kind is StreamKind.INTERVAL:
            return cls(stream.timestamps, stream.ends)
        return cls(stream.timestamps)

    @property
    def is_interval(self) -> bool:
        """Whether the steps are intervals (else points)."""
        return self.ends is not None

    @property
    def start(self) -> float:
        """Time of the first step (0.0 for an empty timeline)."""
        return float(self.times[0]) if self.times.size else 0.0

    @property
    def end(self) -> float:
        """Time the last step ends (its time for point timelines; 0.0 for an empty one)."""
        if not self.times.size:
            return 0.0
        return float(self.ends.max() if self.ends is not None else self.times[-1])

    @property
    def step_times(self) -> np.ndarray:
        """``[T]`` one representative time per step: the point, or the interval's end (used for staleness)."""
        return self.ends if self.ends is not None else self.times

    def __len__(self) -> int:
        return int(self.times.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-safe description (kind, steps, span)."""
        return {
            "kind": "intervals" if self.is_interval else "points",
            "steps": len(self),
            "start": self.start,
            "end": self.end,
        }

    def __repr__(self) -> str:
        kind = "intervals" if self.is_interval else "points"
        return f"Timeline({kind}, T={len(self)}, span=[{self.start:.3f}, {self.end:.3f}] s)"
