"""Streams onto one timeline, with availability masks, staleness and validation reports.

A :class:`Stream` is timestamped features of one :class:`StreamKind`; :func:`align` puts any set of streams
onto a reference :class:`Timeline` (a fixed-rate grid, another stream's timestamps, or intervals such as
words) and returns, per stream, values ``[T, D]``, a presence mask ``[T]``, staleness ``[T]`` and an
interpolation flag ``[T]``. :func:`validate_streams` reports on raw, possibly broken streams, and
:func:`align_folder` turns a folder of recordings into an mmfuse data set. See ``docs/alignment.md``.

Example:
    >>> import numpy as np
    >>> from mmfuse.align import Stream, Timeline, align
    >>> audio = Stream.create("audio", np.arange(100) / 100, np.random.rand(100, 4))
    >>> video = Stream.create("video", np.arange(30) / 30, np.random.rand(30, 8))
    >>> out = align([audio, video], Timeline.grid(10.0, 0.0, 0.99))
    >>> out["video"].values.shape, bool(out["audio"].mask.all())
    ((10, 8), True)
"""

from __future__ import annotations

from mmfuse.align.core import (
    COINCIDENCE_ATOL,
    DEFAULT_CHUNK_SIZE,
    AlignedSet,
    AlignedStream,
    align,
    align_stream,
)
from mmfuse.align.folder import STREAM_SUFFIXES, TIME_COLUMNS, align_folder, read_stream_file
from mmfuse.align.stream import COLLAPSE_RULES, DUPLICATE_POLICIES, Stream, StreamKind
from mmfuse.align.timeline import Timeline
from mmfuse.align.validate import StreamReport, ValidationReport, validate_streams

__all__ = [
    "COINCIDENCE_ATOL",
    "COLLAPSE_RULES",
    "DEFAULT_CHUNK_SIZE",
    "DUPLICATE_POLICIES",
    "STREAM_SUFFIXES",
    "TIME_COLUMNS",
    "AlignedSet",
    "AlignedStream",
    "Stream",
    "StreamKind",
    "StreamReport",
    "Timeline",
    "ValidationReport",
    "align",
    "align_folder",
    "align_stream",
    "read_stream_file",
    "validate_streams",
]
