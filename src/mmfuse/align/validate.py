"""Validation reports: what is wrong with a set of (possibly broken) streams, before and after alignment."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmfuse._io import json_fields
from mmfuse.align.core import align_stream
from mmfuse.align.stream import Stream, StreamKind
from mmfuse.align.timeline import Timeline
from mmfuse.errors import StreamError

__all__ = ["StreamReport", "ValidationReport", "validate_streams"]

RawStream = Any
"""A :class:`Stream`, ``(timestamps, values)``, ``(timestamps, values, kind)``, ``(timestamps, values, kind,
ends)``, or None for a stream that is absent from the recording."""


@dataclass
class StreamReport:
    """What validation found in one stream of one recording.

    Attributes:
        recording: The recording (sequence) the stream belongs to ("" for a single one).
        name: Stream name.
        kind: Stream kind name.
        present: False when the stream is absent from the recording.
        n_samples: Rows given (before any cleaning).
        dim: Feature size ``D`` (None when it could not be read).
        out_of_order: Count of consecutive pairs whose timestamps decrease.
        duplicates: Count of rows whose timestamp repeats an earlier one.
        non_finite: Count of rows with a NaN/inf timestamp, end or value.
        start: First timestamp (seconds), None when there is none.
        end: Last timestamp or end (seconds), None when there is none.
        coverage: Fraction of reference steps present after alignment.
        interpolated: Fraction of the present steps whose value was interpolated or held.
        gaps: ``(start, end, duration)`` of every period longer than the threshold, within the reference
            span, that has no source data.
        problems: Errors that stopped the stream from being aligned at all.
    """

    recording: str
    name: str
    kind: str
    present: bool = True
    n_samples: int = 0
    dim: int | None = None
    out_of_order: int = 0
    duplicates: int = 0
    non_finite: int = 0
    start: float | None = None
    end: float | None = None
    coverage: float = 0.0
    interpolated: float = 0.0
    gaps: list[tuple[float, float, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field (non-finite numbers become None, gaps lists)."""
        return json_fields(self)


@dataclass
class ValidationReport:
    """Findings for a set of streams against a reference timeline; merge reports across recordings.

    Attributes:
        streams: One :class:`StreamReport` per (recording, stream).
        recordings: Recording name -> its reference timeline (``Timeline.to_dict()``).
        gap_threshold: Gaps at least this long (seconds) are listed.
        warnings: Human-readable warnings (too much interpolation, long gaps, broken timestamps, ...).
        errors: Problems that stopped a stream from being aligned.
        label_coverage: Recording -> ``{"steps", "labelled", "coverage"}``: how many of its reference steps carry
            a step label (filled by :func:`~mmfuse.align.align_folder` for step-level labels; empty otherwise).

    Example:
        >>> tl = Timeline.grid(1.0, 0.0, 10.0)
        >>> rep = validate_streams({"a": ([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])}, tl)
        >>> round(rep.streams[0].coverage, 3), rep.streams[0].gaps
        (0.273, [(2.0, 10.0, 8.0)])
        >>> len(rep.warnings)
        1
    """

    streams: list[StreamReport] = field(default_factory=list)
    recordings: dict[str, dict[str, Any]] = field(default_factory=dict)
    gap_threshold: float = 1.0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    label_coverage: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no stream failed to align (warnings allowed)."""
        return not self.errors

    @classmethod
    def merge(cls, reports: Iterable[ValidationReport]) -> ValidationReport:
        """Combine the reports of several recordings (e.g. a whole data set) into one.

        Example:
            >>> tl = Timeline.grid(1.0, 0.0, 2.0)
            >>> r1 = validate_streams({"a": ([0.0, 1.0, 2.0], [0.0, 0.0, 0.0])}, tl, recording="r1")
            >>> r2 = validate_streams({"a": None}, tl, recording="r2")
            >>> ValidationReport.merge([r1, r2]).summary()["a"]["coverage"]
            0.5
        """
        out = cls()
        thresholds = set()
        for r in reports:
            out.streams.extend(r.streams)
            out.recordings.update(r.recordings)
            out.warnings.extend(r.warnings)
            out.errors.extend(r.errors)
            out.label_coverage.update(r.label_coverage)
            thresholds.add(r.gap_threshold)
        if thresholds:
            out.gap_threshold = max(thresholds)
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per stream name, aggregated over recordings (coverage weighted by the number of steps)."""
        by_name: dict[str, list[StreamReport]] = {}
        for s in self.streams:
            by_name.setdefault(s.name, []).append(s)
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(by_name):
            reps = by_name[name]
            steps = [int(self.recordings.get(r.recording, {}).get("steps", 1)) or 1 for r in reps]
            total = float(sum(steps))
            cov = sum(r.coverage * n for r, n in zip(reps, steps, strict=True)) / total
            present_steps = [r.coverage * n for r, n in zip(reps, steps, strict=True)]
            interp = sum(r.interpolated * p for r, p in zip(reps, present_steps, strict=True)) / max(
                sum(present_steps), 1e-300
            )
            all_gaps = [g for r in reps for g in r.gaps]
            dims = sorted({r.dim for r in reps if r.dim is not None})
            out[name] = {
                "kinds": sorted({r.kind for r in reps}),
                "recordings": len(reps),
                "present_in": sum(r.present for r in reps),
                "dims": dims,
                "coverage": cov,
                "min_coverage": min(r.coverage for r in reps),
                "interpolated": interp if sum(present_steps) > 0 else 0.0,
                "out_of_order": sum(r.out_of_order for r in reps),
                "duplicates": sum(r.duplicates for r in reps),
                "non_finite": sum(r.non_finite for r in reps),
                "gaps": len(all_gaps),
                "longest_gap": max((g[2] for g in all_gaps), default=0.0),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: summary, per-stream findings, reference timelines, warnings and errors."""
        return {
            "gap_threshold": float(self.gap_threshold),
            "ok": self.ok,
            "summary": self.summary(),
            "recordings": {k: dict(v) for k, v in sorted(self.recordings.items())},
            "streams": [s.to_dict() for s in self.streams],
            "warnings": list(self.warnings),
            "errors": list(self.errors),
            "label_coverage": {k: dict(v) for k, v in sorted(self.label_coverage.items())},
        }

    def to_markdown(self) -> str:
        """A Markdown report: a summary table per stream, a table per recording and stream, the warnings."""
        lines = [
            "# Stream validation report",
            "",
            f"{len(self.recordings) or 1} recording(s), {len(self.streams)} stream(s); gaps listed from "
            f"{self.gap_threshold:g} s.",
            "",
            "## Summary",
            "",
            "| stream | kind | dims | present in | coverage % | min coverage % | interpolated % | out of order "
            "| duplicates | non-finite | gaps | longest gap (s) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in self.summary().items():
            lines.append(
                f"| {name} | {'/'.join(s['kinds'])} | {'/'.join(map(str, s['dims'])) or '-'} | "
                f"{s['present_in']}/{s['recordings']} | {100 * s['coverage']:.1f} | {100 * s['min_coverage']:.1f} "
                f"| {100 * s['interpolated']:.1f} | {s['out_of_order']} | {s['duplicates']} | {s['non_finite']} | "
                f"{s['gaps']} | {s['longest_gap']:.2f} |"
            )
        lines += [
            "",
            "## Streams",
            "",
            "| recording | stream | samples | dim | span (s) | coverage % | interpolated % | gaps |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.streams:
            span = "-" if r.start is None or r.end is None else f"{r.start:.2f}–{r.end:.2f}"
            gaps = ", ".join(f"{a:.2f}–{b:.2f}" for a, b, _ in r.gaps[:5]) + (" …" if len(r.gaps) > 5 else "")
            lines.append(
                f"| {r.recording or '-'} | {r.name} | {r.n_samples if r.present else 'absent'} | {r.dim or '-'} | "
                f"{span} | {100 * r.coverage:.1f} | {100 * r.interpolated:.1f} | {gaps or '-'} |"
            )
        if self.label_coverage:
            steps = sum(int(c["steps"]) for c in self.label_coverage.values())
            labelled = sum(int(c["labelled"]) for c in self.label_coverage.values())
            lines += [
                "",
                "## Step labels",
                "",
                f"{labelled} of {steps} steps labelled ({100 * labelled / max(steps, 1):.1f} %); unlabelled steps are "
                "left out of losses and metrics.",
                "",
                "| recording | steps | labelled | coverage % |",
                "|---|---|---|---|",
            ]
            for rec, c in sorted(self.label_coverage.items()):
                lines.append(f"| {rec or '-'} | {c['steps']} | {c['labelled']} | {100 * c['coverage']:.1f} |")
        for title, items in (("Errors", self.errors), ("Warnings", self.warnings)):
            if items:
                lines += ["", f"## {title}", ""] + [f"- {w}" for w in items]
        return "\n".join(lines) + "\n"


def _gaps_points(t: np.ndarray, r0: float, r1: float, thr: float) -> list[tuple[float, float, float]]:
    inner = np.clip(t, r0, r1)
    edges = np.concatenate([[r0], inner, [r1]])
    d = np.diff(edges)
    idx = np.flatnonzero(d > thr)
    return [(float(edges[i]), float(edges[i + 1]), float(d[i])) for i in idx]


def _gaps_intervals(s: np.ndarray, e: np.ndarray, r0: float, r1: float, thr: float) -> list[tuple[float, float, float]]:
    covered_to = np.maximum.accumulate(e)  # [N] latest end so far
    gap_from = np.clip(np.concatenate([[r0], covered_to]), r0, r1)
    gap_to = np.clip(np.concatenate([s, [r1]]), r0, r1)
    d = gap_to - gap_from
    idx = np.flatnonzero(d > thr)
    return [(float(gap_from[i]), float(gap_to[i]), float(d[i])) for i in idx]


def _report_one(
    recording: str, name: str, raw: RawStream, timeline: Timeline, thr: float, tolerance: float | None
) -> StreamReport:
    span0, span1 = timeline.start, timeline.end
    if raw is None:
        rep = StreamReport(recording=recording, name=name, kind="-", present=False)
        if span1 - span0 > thr:
            rep.gaps = [(span0, span1, span1 - span0)]
        return rep
    if isinstance(raw, Stream):
        t_raw: Any = raw.timestamps
        v_raw: Any = raw.values
        kind_raw: Any = raw.kind
        e_raw: Any = raw.ends
        tolerance = raw.tolerance if tolerance is None else tolerance
    else:
        if not isinstance(raw, (tuple, list)) or not 2 <= len(raw) <= 4:
            rep = StreamReport(recording=recording, name=name, kind="?")
            rep.problems.append(
                f"Stream {name!r}: expected a Stream or (timestamps, values[, kind[, ends]]). Got {type(raw).__name__}."
            )
            return rep
        t_raw, v_raw = raw[0], raw[1]
        e_raw = raw[3] if len(raw) > 3 else None
        kind_raw = raw[2] if len(raw) > 2 and raw[2] is not None else ("continuous" if e_raw is None else "interval")
    rep = StreamReport(recording=recording, name=name, kind=str(getattr(kind_raw, "value", kind_raw)))
    try:
        kind = StreamKind.parse(kind_raw, owner=f"stream {name!r}")
        t = np.asarray(t_raw, dtype=np.float64)
        v = np.asarray(v_raw, dtype=np.float32)
        if v.ndim == 1:
            v = v[:, None]  # [N] -> [N, 1]
        e = None if e_raw is None else np.asarray(e_raw, dtype=np.float64)
        if t.ndim != 1 or v.ndim != 2 or v.shape[0] != t.shape[0] or (e is not None and e.shape != t.shape):
            raise StreamError(
                f"Stream {name!r}: shapes do not fit: timestamps {t.shape}, values {v.shape}"
                + ("" if e is None else f", ends {e.shape}")
                + "; expected [N], [N, D] (or [N]) and [N]."
            )
    except (StreamError, TypeError, ValueError) as exc:
        rep.problems.append(str(exc))
        return rep
    rep.kind = kind.value
    rep.n_samples = int(t.size)
    rep.dim = int(v.shape[1])
    finite = np.isfinite(t) & np.isfinite(v).all(axis=1)
    if e is not None:
        finite &= np.isfinite(e)
    rep.non_finite = int((~finite).sum())
    t, v = t[finite], v[finite]
    e = None if e is None else e[finite]
    if t.size:
        rep.out_of_order = int((np.diff(t) < 0).sum())
        rep.duplicates = int(t.size - np.unique(t).size)
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        e = None if e is None else e[order]
        rep.start = float(t[0])
        rep.end = float(e.max() if e is not None else t[-1])
    try:
        stream = Stream.create(name, t, v, kind=kind, ends=e, duplicates="first", tolerance=tolerance)
    except StreamError as exc:
        rep.problems.append(str(exc))
        if span1 - span0 > thr:
            rep.gaps = [(span0, span1, span1 - span0)]
        return rep
    aligned = align_stream(stream, timeline)
    rep.coverage = aligned.coverage
    rep.interpolated = aligned.interpolated_fraction
    if stream.ends is not None:
        rep.gaps = _gaps_intervals(stream.timestamps, stream.ends, span0, span1, thr)
    else:
        rep.gaps = _gaps_points(stream.timestamps, span0, span1, thr)
    return rep


def validate_streams(
    streams: Mapping[str, RawStream],
    timeline: Timeline,
    *,
    gap_threshold: float = 1.0,
    tolerance: float | Mapping[str, float | None] | None = None,
    recording: str = "",
    interpolated_warning: float = 0.5,
    gap_warning: float = 5.0,
) -> ValidationReport:
    """Check a set of streams, possibly broken, against a reference timeline.

    Unlike :class:`Stream`, this never raises on bad data: it counts out-of-order pairs, duplicate timestamps
    and non-finite rows, then sorts the finite rows, keeps the first of each duplicate and aligns the result
    to measure coverage, interpolation and gaps. A stream that still cannot be built (mismatched lengths,
    unknown kind, nested intervals) is listed in ``errors``.

    Args:
        streams: Name -> a :class:`Stream`, ``(timestamps, values[, kind[, ends]])``, or None when the stream is
            absent from this recording (reported with 0 coverage).
        timeline: The reference timeline.
        gap_threshold: Periods without data longer than this (seconds) are listed as gaps.
        tolerance: Alignment tolerance for coverage, as in :func:`mmfuse.align.align`.
        recording: Name of the recording, to tell reports apart after :meth:`ValidationReport.merge`.
        interpolated_warning: Warn when more than this fraction of the present steps is interpolated.
        gap_warning: Warn about gaps longer than this many seconds.

    Returns:
        A :class:`ValidationReport`.

    Raises:
        StreamError: only for bad arguments (not for bad stream data).

    Example:
        >>> tl = Timeline.grid(10.0, 0.0, 1.0)
        >>> rep = validate_streams({"x": ([0.0, 0.5, 0.3, 0.5, 1.0], [1, 2, 3, 4, 5])}, tl)
        >>> rep.streams[0].out_of_order, rep.streams[0].duplicates
        (1, 1)
    """
    if not isinstance(streams, Mapping):
        raise StreamError(f"validate_streams expects a mapping name -> stream. Got {type(streams).__name__}.")
    if not isinstance(timeline, Timeline):
        raise StreamError(f"validate_streams expects a Timeline. Got {type(timeline).__name__}.")
    if not isinstance(gap_threshold, (int, float)) or not gap_threshold >= 0:
        raise StreamError(f"The 'gap_threshold' parameter of validate_streams must be >= 0. Got {gap_threshold!r}.")
    report = ValidationReport(gap_threshold=float(gap_threshold))
    report.recordings[recording] = timeline.to_dict()
    where = f"recording {recording!r}: " if recording else ""
    for name in sorted(streams):
        tol = tolerance.get(name) if isinstance(tolerance, Mapping) else tolerance
        rep = _report_one(recording, name, streams[name], timeline, float(gap_threshold), tol)
        report.streams.append(rep)
        label = f"{where}stream {name!r}"
        if not rep.present:
            report.warnings.append(f"{label} is absent; all {len(timeline)} steps are masked.")
            continue
        for p in rep.problems:
            report.errors.append(f"{where}{p}")
        if rep.non_finite:
            report.warnings.append(f"{label} has {rep.non_finite} row(s) with NaN/inf timestamps or values.")
        if rep.out_of_order:
            report.warnings.append(f"{label} has {rep.out_of_order} out-of-order timestamp pair(s).")
        if rep.duplicates:
            report.warnings.append(f"{label} has {rep.duplicates} duplicate timestamp(s).")
        if not rep.problems and rep.coverage == 0.0:
            report.warnings.append(f"{label} covers none of the {len(timeline)} reference steps.")
        if rep.interpolated > interpolated_warning:
            report.warnings.append(
                f"{label}: {100 * rep.interpolated:.1f}% of present steps are interpolated "
                f"(above {100 * interpolated_warning:g}%); the reference timeline may be finer than the stream."
            )
        long_gaps = [g for g in rep.gaps if g[2] > gap_warning]
        if long_gaps:
            worst = max(long_gaps, key=lambda g: g[2])
            report.warnings.append(
                f"{label} has {len(long_gaps)} gap(s) over {gap_warning:g} s; the longest is {worst[2]:.2f} s "
                f"({worst[0]:.2f}–{worst[1]:.2f} s)."
            )
    return report
