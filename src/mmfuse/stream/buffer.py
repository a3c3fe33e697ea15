"""The fusion buffer: time-stamped events per modality in, aligned steps out, with the offline alignment code.

Events arrive per modality, each at its own rate and out of order within a bounded lateness. The buffer keeps
the recent events of every modality and, once no accepted event can change a step any more, aligns the new
steps of a fixed-rate grid by building a :class:`~mmfuse.align.Stream` from the kept events and calling
:func:`mmfuse.align.align_stream`: the very function the offline pipeline uses, so live and offline windows
follow the same rules (tolerance, masks, staleness, interpolation, interval collapse).

Timing (all in the recording's own clock, seconds):

* the *watermark* is ``max(newest event time, now) - lateness`` (``now`` optional, e.g. a wall clock mapped
  onto the recording clock, so the buffer moves on while every modality is silent);
* a grid step at ``x`` is emitted once ``x + horizon < watermark``, where ``horizon`` is the largest
  tolerance of the modalities (the farthest a sample can be from a step and still count for it);
* an event that could still change an emitted step (its time is at or before the last emitted step plus its
  modality's tolerance) is *late*: it is dropped, counted in :attr:`FusionBuffer.dropped` and reported with
  one :class:`LateEventWarning` per modality. Events within ``lateness`` of the newest event are never late;
* a gap is a gap: once ``max_gap`` seconds have passed since the last event (of any modality) the grid stops,
  and it resumes just before the next event; the steps in between are neither aligned nor emitted (counted in
  :attr:`FusionBuffer.skipped_gap`), so two events a day apart cost two short windows, not a day of steps;
* ``max_steps`` bounds the steps one call emits: beyond it the oldest are skipped (counted in
  :attr:`FusionBuffer.skipped_overflow`), as a server drops the oldest steps of a stream it cannot keep up with.
  A call ends at a gap; call :meth:`FusionBuffer.pop_ready` (or :meth:`~FusionBuffer.flush`) again for the steps
  after it (:func:`collect_sessions <mmfuse.stream.collect_sessions>` does).

The only place live alignment can differ from aligning the finished recording is the live edge itself: a step
is aligned with the samples known when it is emitted, so a step after a modality's newest sample is missing
(never extrapolated), exactly as offline alignment treats the end of a recording. Offline, the same step would
be interpolated towards a sample that arrives more than ``horizon`` later (a gap just after a sample that is
within the tolerance). Give the buffer enough ``lateness`` for the sources' real delays.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmfuse._io import json_fields
from mmfuse.align import AlignedStream, Stream, StreamKind, Timeline, align_stream
from mmfuse.align.stream import COLLAPSE_RULES, check_choice, non_finite_at
from mmfuse.errors import MmfuseWarning, StreamError

__all__ = ["AlignedWindow", "FusionBuffer", "LateEventWarning", "StreamSpec", "pop_ready_many"]


class LateEventWarning(MmfuseWarning):
    """An event arrived after the steps it belongs to were emitted; it was dropped and counted."""


@dataclass(frozen=True)
class StreamSpec:
    """What the buffer expects from one modality.

    Attributes:
        dim: Feature size ``D_m`` of every event.
        kind: ``"continuous"``, ``"discrete"``, ``"embedding"`` or ``"interval"`` (see
            :class:`mmfuse.align.StreamKind`).
        tolerance: Alignment tolerance in seconds. Default: ``1 / rate`` when ``rate`` is given (what offline
            alignment uses for a regularly sampled stream: its median interval), 0 for interval streams.
        rate: Nominal sampling rate in Hz (only used for the default tolerance).
        collapse: How several rows falling into one step are reduced (``"mean"``, ``"max"``, ``"first"``,
            ``"last"``).

    Example:
        >>> StreamSpec(3, rate=50.0).effective_tolerance
        0.02
        >>> StreamSpec(300, kind="interval").effective_tolerance
        0.0
    """

    dim: int
    kind: str = "continuous"
    tolerance: float | None = None
    rate: float | None = None
    collapse: str = "mean"

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, (int, np.integer)) or self.dim < 1:
            raise StreamError(f"The 'dim' parameter of StreamSpec must be a positive integer. Got {self.dim!r}.")
        kind = StreamKind.parse(self.kind, owner="StreamSpec")
        object.__setattr__(self, "kind", kind.value)
        for name in ("tolerance", "rate"):
            v = getattr(self, name)
            ok = v is None or (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)
            if not ok or (name == "rate" and v == 0):
                raise StreamError(f"The {name!r} parameter of StreamSpec must be a positive finite number. Got {v!r}.")
        check_choice(self.collapse, COLLAPSE_RULES, parameter="collapse", owner="StreamSpec")
        if self.kind != "interval" and self.tolerance is None and self.rate is None:
            raise StreamError(
                f"StreamSpec of kind {self.kind!r} needs 'tolerance' (seconds) or 'rate' (Hz): live alignment cannot "
                "estimate a sampling interval from a recording it has not seen yet."
            )

    @property
    def effective_tolerance(self) -> float:
        """The tolerance used: ``tolerance``, else ``1 / rate``, else 0 (interval streams)."""
        if self.tolerance is not None:
            return float(self.tolerance)
        if self.rate is not None and self.kind != "interval":
            return 1.0 / float(self.rate)
        return 0.0

    @classmethod
    def from_value(cls, value: StreamSpec | Mapping[str, Any]) -> StreamSpec:
        """A spec from a spec or a mapping of its fields (e.g. read from JSON)."""
        if isinstance(value, StreamSpec):
            return value
        if not isinstance(value, Mapping):
            raise StreamError(f"A stream spec must be a StreamSpec or a mapping of its fields. Got {value!r}.")
        known = {"dim", "kind", "tolerance", "rate", "collapse"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise StreamError(f"Unknown StreamSpec field(s) {unknown}; valid: {sorted(known)}.")
        return cls(**dict(value))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return json_fields(self)


@dataclass
class AlignedWindow:
    """Consecutive aligned grid steps emitted by the buffer (``K`` steps, possibly 0).

    Attributes:
        times: ``[K]`` float64 step times.
        values: Modality -> ``[K, D_m]`` float32 (0 where missing).
        masks: Modality -> ``[K]`` bool.
        staleness: Modality -> ``[K]`` float64 seconds since the last real sample (inf before the first).
        interpolated: Modality -> ``[K]`` bool.
        first_index: Grid index of the first step (``times[0] = start + first_index / rate``).
    """

    times: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    staleness: dict[str, np.ndarray] = field(default_factory=dict)
    interpolated: dict[str, np.ndarray] = field(default_factory=dict)
    first_index: int = 0

    def __len__(self) -> int:
        return int(self.times.shape[0])

    @classmethod
    def concat(cls, windows: list[AlignedWindow]) -> AlignedWindow:
        """Join consecutive windows into one (an empty list gives an empty window without modalities)."""
        if not windows:
            return cls(times=np.zeros(0, dtype=np.float64))
        names = list(windows[0].values)

        def cat(attr: str) -> dict[str, np.ndarray]:
            return {m: np.concatenate([getattr(w, attr)[m] for w in windows]) for m in names}

        return cls(
            times=np.concatenate([w.times for w in windows]),
            values=cat("values"),
            masks=cat("masks"),
            staleness=cat("staleness"),
            interpolated=cat("interpolated"),
            first_index=windows[0].first_index,
        )


class _Events:
    """The kept events of one modality in growable arrays: appended in place, sorted on demand, pruned from the front.

    ``t``, ``v`` and ``e`` are views of the live rows ``[lo, hi)`` of larger arrays whose capacity doubles when
    full, so adding one event costs a copy of that event rather than of everything kept.
    """

    def __init__(self, dim: int, interval: bool) -> None:
        cap = 16
        self._t = np.empty(cap, dtype=np.float64)
        self._v = np.empty((cap, dim), dtype=np.float32)
        self._e: np.ndarray | None = np.empty(cap, dtype=np.float64) if interval else None
        self.lo = self.hi = 0
        self.sorted = True

    @property
    def t(self) -> np.ndarray:
        return self._t[self.lo : self.hi]

    @property
    def v(self) -> np.ndarray:
        return self._v[self.lo : self.hi]

    @property
    def e(self) -> np.ndarray | None:
        return None if self._e is None else self._e[self.lo : self.hi]

    @property
    def size(self) -> int:
        return self.hi - self.lo

    def _reserve(self, n: int) -> None:
        if self.hi + n <= self._t.size:
            return
        size, cap = self.hi - self.lo, self._t.size
        if size + n > cap // 2:  # grow; otherwise move the live rows to the front
            cap = max(2 * cap, 2 * (size + n))
        t, v = np.empty(cap, dtype=np.float64), np.empty((cap, self._v.shape[1]), dtype=np.float32)
        t[:size], v[:size] = self._t[self.lo : self.hi], self._v[self.lo : self.hi]
        if self._e is not None:
            e = np.empty(cap, dtype=np.float64)
            e[:size] = self._e[self.lo : self.hi]
            self._e = e
        self._t, self._v, self.lo, self.hi = t, v, 0, size

    def add(self, t: np.ndarray, v: np.ndarray, e: np.ndarray | None) -> None:
        n = t.shape[0]
        if n == 1:
            if self.hi > self.lo and t[0] < self._t[self.hi - 1]:
                self.sorted = False
        elif n > 1 and ((self.hi > self.lo and t[0] < self._t[self.hi - 1]) or bool((t[1:] < t[:-1]).any())):
            self.sorted = False
        self._reserve(n)
        self._t[self.hi : self.hi + n] = t
        self._v[self.hi : self.hi + n] = v
        if self._e is not None and e is not None:
            self._e[self.hi : self.hi + n] = e
        self.hi += n

    def sort(self) -> None:
        if not self.sorted:
            order = np.argsort(self.t, kind="stable")  # stable: the later arrival of a duplicate time wins
            lo, hi = self.lo, self.hi
            self._t[lo:hi], self._v[lo:hi] = self._t[lo:hi][order], self._v[lo:hi][order]
            if self._e is not None:
                self._e[lo:hi] = self._e[lo:hi][order]
            self.sorted = True

    def drop_front(self, n: int) -> None:
        """Forget the ``n`` oldest rows (the rows must be sorted)."""
        self.lo += max(0, min(n, self.hi - self.lo))

    def prune(self, cutoff: float) -> None:
        """Drop events before ``cutoff`` except the newest of them (kept for staleness and interpolation)."""
        self.sort()
        ref = self._e if self._e is not None else self._t
        k = int(ref[self.lo : self.hi].searchsorted(cutoff, side="left")) - 1  # keep one before the cutoff
        if k > 0:
            self.drop_front(k)


class FusionBuffer:
    """Accept time-stamped events per modality and emit aligned steps of a fixed-rate grid.

    See the module docstring for the timing rules. Alignment is :func:`mmfuse.align.align_stream` on the kept
    events; the buffer only decides *when* a step is final and *which* events are kept.

    Args:
        specs: Modality name -> :class:`StreamSpec` (or a mapping of its fields). Sorted names are canonical.
        rate: Grid rate in Hz (the model's step rate).
        lateness: Seconds an event may arrive behind the newest event seen and still be used.
        start: Time of grid step 0; default the earliest event seen before the first emission.
        max_pending: Most events kept per modality; beyond it the oldest are discarded (counted in
            :attr:`overflow`), so a flood of events cannot exhaust memory.
        max_gap: Seconds without any event after which the grid stops until the next event (None: never; every
            step of a gap is emitted as missing).
        max_steps: Most steps one call emits; the oldest beyond it are skipped (None: no bound).

    Attributes:
        dropped: Modality -> late events dropped.
        overflow: Modality -> events discarded by ``max_pending``.
        accepted: Modality -> events accepted.
        skipped_gap: Grid steps skipped inside gaps longer than ``max_gap``.
        skipped_overflow: Grid steps skipped by ``max_steps``.

    Example:
        >>> buf = FusionBuffer({"a": StreamSpec(1, rate=10.0), "b": StreamSpec(1, rate=5.0)}, rate=10.0, start=0.0)
        >>> for t in np.arange(0, 1.0, 0.1):
        ...     _ = buf.push("a", t, [t])
        >>> _ = buf.push_many("b", [0.0, 0.2, 0.4, 0.6, 0.8], [[0], [2], [4], [6], [8]])
        >>> w = buf.pop_ready()
        >>> len(w), w.values["b"][:3, 0].tolist(), w.masks["b"][:3].tolist()
        (7, [0.0, 1.0, 2.0], [True, True, True])
    """

    def __init__(
        self,
        specs: Mapping[str, StreamSpec | Mapping[str, Any]],
        rate: float,
        *,
        lateness: float = 0.0,
        start: float | None = None,
        max_pending: int = 100_000,
        max_gap: float | None = 60.0,
        max_steps: int | None = None,
    ) -> None:
        if not isinstance(specs, Mapping) or not specs:
            raise StreamError(f"The 'specs' parameter of FusionBuffer must be a non-empty mapping. Got {specs!r}.")
        self.specs: dict[str, StreamSpec] = {str(m): StreamSpec.from_value(specs[m]) for m in sorted(specs)}
        for name, value, lo in (("rate", rate, 0.0), ("lateness", lateness, -1.0)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= lo
            ):
                what = "positive" if lo == 0.0 else "non-negative"
                raise StreamError(f"The {name!r} parameter of FusionBuffer must be a {what} number. Got {value!r}.")
        if lateness < 0:
            raise StreamError(f"The 'lateness' parameter of FusionBuffer must be >= 0 seconds. Got {lateness!r}.")
        if start is not None and (not isinstance(start, (int, float)) or not math.isfinite(start)):
            raise StreamError(f"The 'start' parameter of FusionBuffer must be a finite number. Got {start!r}.")
        if not isinstance(max_pending, int) or max_pending < 2:
            raise StreamError(
                f"The 'max_pending' parameter of FusionBuffer must be an integer >= 2. Got {max_pending!r}."
            )
        if max_gap is not None and (
            isinstance(max_gap, bool) or not isinstance(max_gap, (int, float)) or not 0 < max_gap < math.inf
        ):
            raise StreamError(
                "The 'max_gap' parameter of FusionBuffer must be a positive number of seconds or None. "
                f"Got {max_gap!r}."
            )
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
            raise StreamError(
                f"The 'max_steps' parameter of FusionBuffer must be a positive integer or None. Got {max_steps!r}."
            )
        self.rate = float(rate)
        self.lateness = float(lateness)
        self.start = None if start is None else float(start)
        self.max_pending = max_pending
        self.max_gap = None if max_gap is None else float(max_gap)
        self.max_steps = max_steps
        self.skipped_gap = 0
        self.skipped_overflow = 0
        self.modalities: tuple[str, ...] = tuple(self.specs)
        self._tol = {m: s.effective_tolerance for m, s in self.specs.items()}
        self.horizon = max(self._tol.values())
        self._events = {m: _Events(s.dim, s.kind == "interval") for m, s in self.specs.items()}
        self._newest = -math.inf  # newest event time seen (interval events: their end)
        self._earliest = math.inf
        self._next = 0  # grid index of the next step to emit
        self._last_emitted: float | None = None
        self.dropped = dict.fromkeys(self.modalities, 0)
        self.overflow = dict.fromkeys(self.modalities, 0)
        self.accepted = dict.fromkeys(self.modalities, 0)
        self._warned: set[str] = set()

    # ----------------------------------------------------------------------------------------------- input
    def push(self, modality: str, t: float, values: Any, end: float | None = None) -> int:
        """Add one event; see :meth:`push_many`. Returns the number of events accepted (0 or 1)."""
        return self.push_many(
            modality, [t], [values] if np.ndim(values) <= 1 else values, None if end is None else [end]
        )

    def push_many(self, modality: str, times: Any, values: Any, ends: Any = None) -> int:
        """Add events of one modality, in any order.

        Args:
            modality: One of :attr:`modalities`.
            times: ``[N]`` seconds (interval streams: start times).
            values: ``[N, D_m]`` (or ``[N]`` when ``D_m`` is 1).
            ends: ``[N]`` end times, interval streams only.

        Returns:
            How many events were accepted (the rest were late and dropped).

        Raises:
            StreamError: an unknown modality, wrong shapes, a wrong ``D_m``, non-finite numbers, ends before starts
                or ends for a non-interval stream (nothing of the call is kept then).
        """
        spec = self.specs.get(modality)
        if spec is None:
            raise StreamError(
                f"FusionBuffer got an event for unknown modality {modality!r}; modalities: {list(self.modalities)}."
            )
        try:
            with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
                t = np.asarray(times, dtype=np.float64).reshape(-1)
                v = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError, OverflowError) as exc:
            raise StreamError(f"Events of modality {modality!r} must be numbers: {exc}") from None
        if v.ndim == 1 and spec.dim == 1:
            v = v[:, None]  # [N] -> [N, 1]
        if v.ndim == 1 and t.size == 1:
            v = v[None, :]  # one event given as [D]
        if v.ndim != 2 or v.shape[1] != spec.dim or v.shape[0] != t.size:
            raise StreamError(
                f"Events of modality {modality!r} must have values of shape [N, {spec.dim}] with N = {t.size} "
                f"times. Got {list(v.shape)}."
            )
        for what, a in (("times", t), ("values", v)):
            bad = non_finite_at(a, row="event", column="feature")
            if bad:
                raise StreamError(f"Event {what} of modality {modality!r} must be finite. Got {bad}.")
        e: np.ndarray | None = None
        if spec.kind == "interval":
            if ends is None:
                raise StreamError(f"Events of interval modality {modality!r} need 'end' times.")
            e = np.asarray(ends, dtype=np.float64).reshape(-1)
            if e.size != t.size or not np.isfinite(e).all() or np.any(e < t):
                raise StreamError(
                    f"Event ends of modality {modality!r} must be {t.size} finite times, each >= its start."
                )
        elif ends is not None:
            raise StreamError(f"'end' is only allowed for interval modalities; {modality!r} is {spec.kind!r}.")
        return self._accept(modality, t, v, e)

    def _accept(self, modality: str, t: np.ndarray, v: np.ndarray, e: np.ndarray | None) -> int:
        """Keep validated events (``t [N]`` float64, ``v [N, D_m]`` float32, finite; ``e`` for intervals)."""
        if t.size == 0:
            return 0
        if self._last_emitted is not None:
            late = t <= self._last_emitted + self._tol[modality]  # could change an emitted step
            n_late = int(late.sum())
            if n_late:
                self.dropped[modality] += n_late
                if modality not in self._warned:
                    self._warned.add(modality)
                    warnings.warn(
                        f"FusionBuffer dropped late event(s) of modality {modality!r}: they belong to steps already "
                        f"emitted (lateness bound {self.lateness} s). Counted in FusionBuffer.dropped.",
                        LateEventWarning,
                        stacklevel=2,
                    )
                keep = ~late
                t, v = t[keep], v[keep]
                e = None if e is None else e[keep]
                if t.size == 0:
                    return 0
        self._events[modality].add(t, v, e)
        self.accepted[modality] += int(t.size)
        if t.size == 1:
            newest, earliest = float(t[0] if e is None else e[0]), float(t[0])
        else:
            newest, earliest = float((e if e is not None else t).max()), float(t.min())
        if newest > self._newest:
            self._newest = newest
        if earliest < self._earliest:
            self._earliest = earliest
        ev = self._events[modality]
        if ev.size > self.max_pending:
            ev.sort()
            extra = ev.size - self.max_pending
            self.overflow[modality] += extra
            ev.drop_front(extra)
        return int(t.size)

    # ---------------------------------------------------------------------------------------------- output
    @property
    def watermark(self) -> float:
        """``newest event time - lateness`` (``-inf`` before any event)."""
        return self._newest - self.lateness

    @property
    def next_time(self) -> float | None:
        """Time of the next step to emit (None before the start is known)."""
        return None if self.start is None else self.start + self._next / self.rate

    def pending(self) -> dict[str, int]:
        """Modality -> events currently kept."""
        return {m: ev.size for m, ev in self._events.items()}

    def pop_ready(self, now: float | None = None) -> AlignedWindow:
        """Emit every step that no accepted event can change any more.

        Args:
            now: Optional current time on the recording clock; the watermark is then
                ``max(newest event, now) - lateness``, so steps are emitted (as missing) while every source is
                silent.

        Returns:
            The new steps (``K >= 0``).
        """
        newest = self._newest if now is None else max(self._newest, float(now))
        return self._emit_until(newest - self.lateness - self.horizon, strict=True)

    def flush(self) -> AlignedWindow:
        """End of the stream: emit the remaining steps up to the newest event time.

        One call stops at a gap longer than ``max_gap``: call again until it returns no step.
        """
        return self._emit_until(self._newest, strict=False)

    def _plan(self, limit: float, strict: bool) -> np.ndarray | None:
        """Times ``[K]`` of the steps to emit up to ``limit`` (None when there are none)."""
        if not math.isfinite(limit):
            return None
        if self.start is None:
            if not math.isfinite(self._earliest):
                return None
            self.start = self._earliest
        pos = (limit - self.start) * self.rate
        # strict: x < limit (a sample exactly at x + horizon may still arrive with the newest time); else x <= limit
        n_last = math.ceil(pos - 1e-9) - 1 if strict else math.floor(pos + 1e-9)
        if n_last < self._next:
            return None
        if self.max_gap is not None:
            cut = self._gaps()
            if cut is None:  # inside a gap with no later event yet: nothing to emit
                return None
            n_last = min(n_last, cut)
            if n_last < self._next:
                return None
        if self.max_steps is not None and n_last - self._next + 1 > self.max_steps:
            extra = n_last - self._next + 1 - self.max_steps
            self.skipped_overflow += extra
            self._next += extra
        return self.start + np.arange(self._next, n_last + 1) / self.rate  # [K]

    def _gaps(self) -> int | None:
        """Apply ``max_gap`` at the next step: skip a gap it lies in; return the last index before the next gap.

        Evidence is every kept event (an interval covers its whole span). Returns a large index when no gap
        longer than ``max_gap`` lies ahead, and None when the next step lies in such a gap with no event after it.
        """
        assert self.start is not None and self.max_gap is not None
        kept = [ev for ev in self._events.values() if ev.size]
        if not kept:
            return None
        x = self.start + self._next / self.rate
        oldest = min(x, *(float(ev.t.min()) for ev in kept))
        if self._newest - oldest <= self.max_gap:  # the usual case: no gap can be longer than max_gap
            return sys.maxsize
        lo = np.concatenate([ev.t for ev in kept])  # [N] evidence spans [lo, hi]
        hi = np.concatenate([ev.t if ev.e is None else np.maximum(ev.e, ev.t) for ev in kept])
        order = np.argsort(lo, kind="stable")
        lo, reach = lo[order], np.maximum.accumulate(hi[order])  # reach[i]: farthest evidence of spans 0..i
        k = int(lo.searchsorted(x, side="right")) - 1  # the last span starting at or before x
        last = x - self.max_gap if k < 0 else min(x, float(reach[k]))  # before any event: a gap when it is long
        if x - last > self.max_gap or (k < 0 and float(lo[0]) - x > self.max_gap):  # skip the rest of the gap
            if k + 1 >= lo.size:
                return None
            j = math.ceil((float(lo[k + 1]) - self.horizon - self.start) * self.rate - 1e-9)
            if j > self._next:
                self.skipped_gap += j - self._next
                self._next = j
            x = self.start + self._next / self.rate
        gap = (lo[1:] - reach[:-1] > self.max_gap) & (lo[1:] > x) & (reach[:-1] + self.max_gap >= x)
        ahead = np.nonzero(gap)[0]  # gaps still ahead of x
        if ahead.size == 0:
            return sys.maxsize
        return math.floor((float(reach[ahead[0]]) + self.max_gap - self.start) * self.rate + 1e-9)

    def _advance(self, times: np.ndarray) -> None:
        """Mark the steps ``times`` emitted and prune the events no later step needs."""
        self._next += int(times.shape[0])
        self._last_emitted = float(times[-1])
        next_x = self.start + self._next / self.rate  # type: ignore[operator]
        for m, ev in self._events.items():
            ev.prune(next_x - self._tol[m] - 1.0 / self.rate)

    def _emit_until(self, limit: float, strict: bool) -> AlignedWindow:
        times = self._plan(limit, strict)
        if times is None:
            return self._empty()
        timeline = Timeline.from_points(times)
        out = AlignedWindow(times=times, first_index=self._next)
        for m, spec in self.specs.items():
            ev = self._events[m]
            ev.sort()
            aligned = self._align(m, spec, ev, timeline)
            out.values[m], out.masks[m] = aligned.values, aligned.mask
            out.staleness[m], out.interpolated[m] = aligned.staleness, aligned.interpolated
        self._advance(times)
        return out

    def _align(self, m: str, spec: StreamSpec, ev: _Events, timeline: Timeline) -> AlignedStream:
        k = len(timeline)
        if ev.size == 0:
            return AlignedStream(
                name=m,
                kind=StreamKind(spec.kind),
                values=np.zeros((k, spec.dim), dtype=np.float32),
                mask=np.zeros(k, dtype=bool),
                staleness=np.full(k, np.inf),
                interpolated=np.zeros(k, dtype=bool),
                tolerance=self._tol[m],
            )
        t = ev.t
        if spec.kind == "interval" or (t.size > 1 and not bool((t[1:] > t[:-1]).all())):
            # Full validation (nested intervals are refused there). Later arrivals of an identical time replace
            # earlier ones (a corrected sample), as duplicates="last".
            stream = Stream.create(m, t, ev.v, kind=spec.kind, ends=ev.e, duplicates="last")
        else:  # the kept rows are already valid: sorted, unique, finite (checked when pushed)
            stream = Stream._trusted(m, StreamKind(spec.kind), t, ev.v, ev.e)
        return align_stream(stream, timeline, tolerance=self._tol[m], collapse=spec.collapse)

    def _empty(self) -> AlignedWindow:
        z = np.zeros(0, dtype=np.float64)
        return AlignedWindow(
            times=z,
            values={m: np.zeros((0, s.dim), dtype=np.float32) for m, s in self.specs.items()},
            masks={m: np.zeros(0, dtype=bool) for m in self.specs},
            staleness={m: z.copy() for m in self.specs},
            interpolated={m: np.zeros(0, dtype=bool) for m in self.specs},
            first_index=self._next,
        )

    def stats(self) -> dict[str, Any]:
        """JSON-safe counters: accepted, dropped (late), overflow, pending per modality, and the watermark."""
        return {
            "accepted": dict(self.accepted),
            "dropped_late": dict(self.dropped),
            "overflow": dict(self.overflow),
            "skipped_gap": self.skipped_gap,
            "skipped_overflow": self.skipped_overflow,
            "pending": self.pending(),
            "watermark": self.watermark if math.isfinite(self.watermark) else None,
            "next_time": self.next_time,
        }


_SLOT = 32.0
"""Seconds between the segments of a merged alignment; a buffer joins only while its rows lie within a quarter of
it around its first step, so no segment's samples are ever within a tolerance of another segment's steps."""


def pop_ready_many(buffers: Sequence[FusionBuffer], now: float | None = None) -> list[AlignedWindow]:
    """:meth:`FusionBuffer.pop_ready` for many buffers at once, with one alignment call per modality for all.

    Buffers with the same specs and rate (the streams of one server) are aligned together: the kept events and
    the new steps of buffer ``j`` are moved to their own segment of one time axis (``t - first step + 32 j``
    seconds) and that single stream is aligned by :func:`mmfuse.align.align_stream`. Segments are far apart, so
    a step only ever sees the samples of its own buffer. A buffer takes part for a modality only where the
    result cannot depend on anything but its own samples: non-interval kinds, sorted unique times, a kept sample
    at or before its first new step and one after its last, everything within 8 s of its first step (the
    shifts then cost at most a few 1e-12 s of rounding). Every other case is aligned alone, exactly as
    :meth:`FusionBuffer.pop_ready` does.

    Args:
        buffers: The buffers (at most a few thousand).
        now: As for :meth:`FusionBuffer.pop_ready`, applied to every buffer.

    Returns:
        One window per buffer, in order (``K >= 0`` steps each).

    Example:
        >>> specs = {"a": StreamSpec(1, rate=10.0)}
        >>> bufs = [FusionBuffer(specs, rate=10.0, start=0.0) for _ in range(2)]
        >>> for j, b in enumerate(bufs):
        ...     _ = b.push_many("a", np.arange(6) / 10, (np.arange(6.0) + 10 * j)[:, None])
        >>> [w.values["a"][:, 0].tolist() for w in pop_ready_many(bufs)]
        [[0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]]
    """
    plans: list[np.ndarray | None] = []
    for b in buffers:
        newest = b._newest if now is None else max(b._newest, float(now))
        plans.append(b._plan(newest - b.lateness - b.horizon, strict=True))
    out = [
        b._empty() if p is None else AlignedWindow(times=p, first_index=b._next)
        for b, p in zip(buffers, plans, strict=True)
    ]
    busy = [j for j, p in enumerate(plans) if p is not None]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for j in busy:  # buffers that can share one alignment call
        b = buffers[j]
        groups.setdefault((b.rate, tuple(b.specs.items()), tuple(b._tol.items())), []).append(j)
    for members in groups.values():
        first = buffers[members[0]]
        for m, spec in first.specs.items():
            left = _align_merged(buffers, plans, members, m, spec, out) if len(members) > 1 else members
            for j in left:  # those left to align alone
                b, times = buffers[j], plans[j]
                assert times is not None
                ev = b._events[m]
                ev.sort()
                a = b._align(m, spec, ev, Timeline.from_points(times))
                w = out[j]
                w.values[m], w.masks[m], w.staleness[m], w.interpolated[m] = (
                    a.values,
                    a.mask,
                    a.staleness,
                    a.interpolated,
                )
    for j in busy:
        buffers[j]._advance(plans[j])  # type: ignore[arg-type]
    return out


def _align_merged(
    buffers: Sequence[FusionBuffer],
    plans: Sequence[np.ndarray | None],
    members: Sequence[int],
    m: str,
    spec: StreamSpec,
    out: list[AlignedWindow],
) -> list[int]:
    """Align modality ``m`` of several buffers in one :func:`align_stream` call; return the buffers left out."""
    tol = buffers[members[0]]._tol[m]
    if spec.kind == "interval" or tol > _SLOT / 8:
        return list(members)
    reach = _SLOT / 4
    alone: list[int] = []
    joined: list[int] = []
    ts: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    for j in members:
        ev = buffers[j]._events[m]
        times = plans[j]
        assert times is not None
        if ev.size < 2:
            alone.append(j)
            continue
        ev.sort()
        t = ev.t
        x0, x1, first, last = float(times[0]), float(times[-1]), float(t[0]), float(t[-1])
        # a sample at or before the first step and one after the last: no edge rule applies to these steps
        if not (first <= x0 and last > x1 + 1e-6 and x0 - first <= reach and last - x0 <= reach):
            alone.append(j)
            continue
        offset = _SLOT * len(joined)
        ts.append((t - x0) + offset)
        xs.append((times - x0) + offset)
        vs.append(ev.v)
        joined.append(j)
    if len(joined) < 2:
        return list(members)
    t_all = np.concatenate(ts)  # [N_all], segment j around 32 j seconds
    if not bool((t_all[1:] > t_all[:-1]).all()):  # duplicate times (or ones a shift made equal): align alone
        return list(members)
    x_all = np.concatenate(xs)  # [K_all]
    stream = Stream._trusted(m, StreamKind(spec.kind), t_all, np.concatenate(vs))
    a = align_stream(stream, Timeline.from_points(x_all), tolerance=tol, collapse=spec.collapse)
    ends = np.cumsum([x.shape[0] for x in xs]).tolist()
    cuts = list(zip([0, *ends[:-1]], ends, strict=True))
    parts = zip(
        joined,
        [a.values[i:k] for i, k in cuts],
        [a.mask[i:k] for i, k in cuts],
        [a.staleness[i:k] for i, k in cuts],
        [a.interpolated[i:k] for i, k in cuts],
        strict=True,
    )
    for j, values, mask, staleness, interpolated in parts:
        w = out[j]
        w.values[m], w.masks[m], w.staleness[m], w.interpolated[m] = values, mask, staleness, interpolated
    return alone
