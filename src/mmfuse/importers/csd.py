"""CMU Multimodal SDK computational sequences (``.csd``): read, write, and import with word-level alignment.

A ``.csd`` file is HDF5. Its one root group is named after the sequence and holds::

    <root>/data/<video id>/features     [n, d]   numbers (or [n, 1] byte strings: the words of a words sequence)
    <root>/data/<video id>/intervals    [n, 2]   start, end in seconds
    <root>/metadata/<key>               [1] string ("root name", "dimension names", ...)

It is read with ``h5py`` alone (``pip install 'mmfuse[importers]'``); the SDK is not needed. The SDK writes
each metadata value as ``str(value)`` (a list becomes ``"['sentiment']"``); :func:`read_csd` decodes JSON and
Python literals, and :func:`write_csd` writes strings as they are (so the SDK reads ``"root name"`` back
unchanged) and other values as JSON. See ``docs/importers.md``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse._io import atomic_write
from mmfuse.align import Stream, Timeline, align
from mmfuse.align.stream import COLLAPSE_RULES, DUPLICATE_POLICIES, check_choice, non_finite_at
from mmfuse.errors import DataError, MmfuseWarning, StreamError
from mmfuse.importers._common import (
    ImportReport,
    SplitsLike,
    encode_labels,
    label_task,
    read_label_table,
    read_splits,
    task_spec,
)

__all__ = ["CsdSequence", "import_csd", "read_csd", "write_csd"]

log = logging.getLogger(__name__)


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading .csd files needs h5py: pip install 'mmfuse[importers]' (or pip install h5py)."
        ) from None
    return h5py


def _text(x: Any) -> str:
    return x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x)


def _metadata_value(text: str) -> Any:
    """Decode one metadata string: JSON, a Python literal (the SDK's ``str(value)``), else the text itself.

    JSON covers what mmfuse wrote before (``'"mine"'``); a literal covers the SDK's lists, dicts and tuples
    (``"['sentiment']"``, ``"True"``). A bare number reads as that number.

    Example:
        >>> _metadata_value("['sentiment', 'happy']"), _metadata_value('"mine"'), _metadata_value("mine")
        (['sentiment', 'happy'], 'mine', 'mine')
    """
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError, ValueError):
        pass
    if text.lstrip()[:1] in ("[", "{", "(") or text in ("True", "False", "None"):
        try:
            value = ast.literal_eval(text)  # literals only: never evaluates code
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return text
        return list(value) if isinstance(value, tuple) else value
    return text


def _metadata_text(value: Any) -> str:
    """Encode one metadata value: a string as it is (the SDK's convention), anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class CsdSequence:
    """One computational sequence in memory.

    Attributes:
        name: The root group's name (the sequence name, e.g. ``"COVAREP"``).
        path: The file it was read from.
        metadata: The decoded metadata (JSON values where they parse, else strings).
        intervals: Video id -> ``[n, 2]`` float64 ``(start, end)`` seconds, sorted by start.
        features: Video id -> ``[n, d]`` float32, or ``[n]`` str for a words sequence (:attr:`is_text`).

    Example:
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = write_csd(f"{d}/a.csd", {"v1": (np.array([[0.0, 0.5], [0.5, 1.0]]), np.ones((2, 3)))},
        ...                   root_name="audio")
        ...     seq = read_csd(p)
        >>> seq.name, seq.video_ids, seq.dim, seq.stream("v1").kind.value
        ('audio', ['v1'], 3, 'interval')
    """

    name: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def video_ids(self) -> list[str]:
        """The video ids, sorted."""
        return sorted(self.intervals)

    @property
    def is_text(self) -> bool:
        """Whether the features are words (strings) rather than numbers."""
        return any(f.dtype.kind in "OUS" for f in self.features.values())

    @property
    def dim(self) -> int:
        """``D``, the feature size (1 for a words sequence; 0 when there is no video)."""
        for f in self.features.values():
            return 1 if f.ndim == 1 else int(f.shape[1])
        return 0

    def stream(self, video: str, *, name: str | None = None, duplicates: str = "error") -> Stream:
        """Video ``video`` as an interval :class:`~mmfuse.align.Stream` (numeric sequences only).

        Raises:
            DataError: a words sequence, an unknown video, or a video with no rows.
            StreamError: rows the stream refuses (duplicate starts, nested intervals), naming file and video.
        """
        if self.is_text:
            raise DataError(f"{self.path}: sequence {self.name!r} holds words, not numbers; it has no stream.")
        if video not in self.intervals:
            raise DataError(f"{self.path}: sequence {self.name!r} has no video {video!r}.")
        iv = self.intervals[video]
        if iv.shape[0] == 0:
            raise DataError(f"{self.path}: video {video!r} of sequence {self.name!r} has no rows.")
        try:
            return Stream.create(
                name or self.name, iv[:, 0], self.features[video], "interval", iv[:, 1], duplicates=duplicates
            )
        except StreamError as exc:
            raise StreamError(f"{self.path}: video {video!r}: {exc}") from None

    def to_streams(self, *, name: str | None = None, duplicates: str = "error") -> dict[str, Stream]:
        """Video id -> stream, for every video with at least one row."""
        return {
            v: self.stream(v, name=name, duplicates=duplicates) for v in self.video_ids if self.intervals[v].shape[0]
        }


class _CsdFile:
    """An open ``.csd`` file; reads and checks one video at a time."""

    def __init__(self, path: str | os.PathLike[str], *, root: str | None = None) -> None:
        h5py = _h5py()
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: .csd file not found.")
        try:
            self._h5 = h5py.File(self.path, "r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from None
        try:
            roots = list(self._h5.keys())
            if root is None:
                if len(roots) != 1:
                    raise DataError(
                        f"{self.path}: a .csd file has one root group (the sequence name). Got {roots}; pass root=."
                    )
                root = roots[0]
            if root not in self._h5 or not isinstance(self._h5[root], h5py.Group):
                raise DataError(f"{self.path}: no root group {root!r}. Root groups: {roots}.")
            self.root = root
            group = self._h5[root]
            if "data" not in group or not isinstance(group["data"], h5py.Group):
                raise DataError(f"{self.path}: root group {root!r} has no 'data' group. It holds: {list(group)}.")
            self._data = group["data"]
            self.video_ids = sorted(self._data.keys())
            self.metadata = self._read_metadata(group.get("metadata"))
        except DataError:
            self._h5.close()
            raise
        except (OSError, RuntimeError, KeyError) as exc:
            self._h5.close()
            raise DataError(f"{self.path}: cannot read the HDF5 structure (truncated or corrupt?): {exc}") from None

    def _read_metadata(self, group: Any) -> dict[str, Any]:
        if group is None:
            return {}
        meta: dict[str, Any] = {k: _metadata_value(_text(v)) for k, v in group.attrs.items()}
        for key in group.keys():
            try:
                raw = group[key][()]
            except (OSError, RuntimeError, TypeError):
                continue
            item = raw[0] if isinstance(raw, np.ndarray) and raw.size else raw
            meta[key] = _metadata_value(_text(item))
        return meta

    def close(self) -> None:
        self._h5.close()

    def _where(self, video: str, dataset: str | None = None) -> str:
        at = f"{self.path}: sequence {self.root!r}, video {video!r}"
        return at if dataset is None else f"{at}, dataset {dataset!r}"

    def shape(self, video: str) -> tuple[int, int]:
        """``(n, d)`` of a video without reading its data; checks that both datasets exist and agree."""
        h5py = _h5py()
        try:
            grp = self._data[video]
            if not isinstance(grp, h5py.Group):
                raise DataError(f"{self._where(video)}: expected a group with 'features' and 'intervals'.")
            for ds in ("features", "intervals"):
                if ds not in grp:
                    raise DataError(f"{self._where(video)}: no {ds!r} dataset. It holds: {sorted(grp.keys())}.")
            fshape, ishape = grp["features"].shape, grp["intervals"].shape
        except (OSError, RuntimeError, KeyError) as exc:
            raise DataError(f"{self._where(video)}: cannot read (truncated or corrupt?): {exc}") from None
        if len(ishape) != 2 or ishape[1] != 2:
            raise DataError(f"{self._where(video, 'intervals')}: must be [n, 2] (start, end). Got shape {ishape}.")
        if len(fshape) not in (1, 2):
            raise DataError(f"{self._where(video, 'features')}: must be [n, d]. Got shape {fshape}.")
        if fshape[0] != ishape[0]:
            raise DataError(
                f"{self._where(video)}: 'features' has {fshape[0]} rows but 'intervals' has {ishape[0]}; they must "
                "match."
            )
        return int(ishape[0]), 1 if len(fshape) == 1 else int(fshape[1])

    def read(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        """``(intervals [n, 2] float64 sorted by start, features [n, d] float32 | [n] str)`` of one video.

        Unsorted rows are sorted (stable, by start then end) with a warning; everything else that is wrong is
        a DataError naming the file, the video, the dataset and the row.
        """
        self.shape(video)
        grp = self._data[video]
        try:
            iv = np.asarray(grp["intervals"][()], dtype=np.float64)
            raw = grp["features"][()]
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            raise DataError(f"{self._where(video)}: cannot read (truncated or corrupt?): {exc}") from None
        bad = non_finite_at(iv)
        if bad:
            raise DataError(f"{self._where(video, 'intervals')}: times must be finite. Got {bad}.")
        neg = np.flatnonzero(iv[:, 1] < iv[:, 0])
        if neg.size:
            r = int(neg[0])
            raise DataError(
                f"{self._where(video, 'intervals')}: row {r} ends at {float(iv[r, 1])!r} before it starts at "
                f"{float(iv[r, 0])!r} ({neg.size} such row(s))."
            )
        feats: np.ndarray
        if raw.dtype.kind in "OSU":
            feats = np.array([_text(x) for x in np.asarray(raw).reshape(raw.shape[0], -1)[:, 0]], dtype=object)
        elif raw.dtype.kind in "fiub":
            feats = np.asarray(raw, dtype=np.float32)
            if feats.ndim == 1:
                feats = feats[:, None]  # [n] -> [n, 1]
            bad = non_finite_at(feats)
            if bad:
                raise DataError(f"{self._where(video, 'features')}: features must be finite. Got {bad}.")
        else:
            raise DataError(f"{self._where(video, 'features')}: unsupported dtype {raw.dtype}.")
        if iv.shape[0] > 1 and bool(np.any(np.diff(iv[:, 0]) < 0)):
            order = np.lexsort((iv[:, 1], iv[:, 0]))  # by start, then end; stable
            warnings.warn(
                f"{self._where(video, 'intervals')}: rows were not sorted by start time; sorted them.",
                MmfuseWarning,
                stacklevel=3,
            )
            iv, feats = iv[order], feats[order]
        return iv, feats


def read_csd(
    path: str | os.PathLike[str], *, videos: Sequence[str] | None = None, root: str | None = None
) -> CsdSequence:
    """Read a computational sequence (``.csd``) into memory, checking every video.

    Args:
        path: The ``.csd`` file.
        videos: Read only these video ids (default: all).
        root: The root group (default: the file's only one).

    Returns:
        The :class:`CsdSequence`.

    Raises:
        DataError: a missing, truncated or corrupt file, no or several root groups, no ``data`` group, a video
            without ``features`` or ``intervals``, rows that differ between them, non-finite values, or an
            interval that ends before it starts (file, video and dataset named). Unsorted intervals are sorted
            with a :class:`~mmfuse.errors.MmfuseWarning`.
    """
    with contextlib.closing(_CsdFile(path, root=root)) as f:
        seq = CsdSequence(name=f.root, path=f.path, metadata=f.metadata)
        for v in f.video_ids if videos is None else videos:
            if v not in f.video_ids:
                raise DataError(f"{f.path}: sequence {f.root!r} has no video {v!r}.")
            seq.intervals[v], seq.features[v] = f.read(v)
    return seq


def write_csd(
    path: str | os.PathLike[str],
    data: Mapping[str, tuple[Any, Any]],
    *,
    root_name: str,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a computational sequence in the CMU Multimodal SDK's layout (atomically).

    Args:
        path: Target ``.csd`` file.
        data: Video id -> ``(intervals [n, 2], features [n, d])``; features may be strings (words).
        root_name: The root group's name (the sequence name).
        metadata: Metadata entries, each stored in a one-element string dataset: a string as it is (as the SDK
            writes it, so the SDK reads ``"root name"`` back unchanged), any other value JSON-encoded.

    Returns:
        ``path`` as a Path.

    Example:
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = write_csd(f"{d}/w.csd", {"v": ([[0.0, 0.3]], [[b"hello"]])}, root_name="words")
        ...     read_csd(p).features["v"].tolist()
        ['hello']
    """
    h5py = _h5py()
    meta = {"root name": root_name, **dict(metadata or {})}

    def fill(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            root = h5.create_group(root_name)
            grp = root.create_group("data")
            for vid, (iv, feats) in data.items():
                g = grp.create_group(vid)
                f = np.asarray(feats)
                if f.dtype.kind in "OU":
                    f = np.array([_text(x).encode("utf-8") for x in f.reshape(f.shape[0], -1)[:, 0]])[:, None]
                g.create_dataset("features", data=f)
                g.create_dataset("intervals", data=np.asarray(iv, dtype=np.float64))
            mg = root.create_group("metadata")
            for key, value in meta.items():
                ds = mg.create_dataset(key, (1,), dtype=h5py.string_dtype())
                ds[0] = _metadata_text(value)

    return atomic_write(path, fill)


# ---------------------------------------------------------------------------------------------------------
# import_csd


@dataclass
class _Sample:
    id: str
    video: str
    label: float
    starts: np.ndarray  # [T] step starts
    ends: np.ndarray  # [T] step ends


def _label_segments(
    labels: str | os.PathLike[str], label_column: int | str
) -> tuple[dict[str, list[tuple[float, float | None, float | None]]], bool]:
    """Video -> [(value, start, end)], and whether the labels are segments."""
    p = Path(labels)
    out: dict[str, list[tuple[float, float | None, float | None]]] = {}
    if p.suffix.lower() == ".csv":
        rows = read_label_table(p, column=label_column if isinstance(label_column, str) else "label")
        segments = bool(rows) and rows[0].start is not None
        for r in rows:
            out.setdefault(r.video, []).append((r.value, r.start, r.end))
        return out, segments
    with contextlib.closing(_CsdFile(p)) as f:
        names = f.metadata.get("dimension names")
        if isinstance(label_column, str):
            if not isinstance(names, list) or label_column not in names:
                raise DataError(f"{p}: no label dimension {label_column!r}; dimension names: {names}.")
            col = names.index(label_column)
        else:
            col = int(label_column)
        for v in f.video_ids:
            iv, feats = f.read(v)
            if feats.dtype == object:
                raise DataError(f"{p}: video {v!r}: label features must be numbers.")
            if not 0 <= col < feats.shape[1]:
                raise DataError(
                    f"{p}: video {v!r}: label column {col} is out of range; the labels have {feats.shape[1]} column(s)."
                )
            out[v] = [(float(feats[k, col]), float(iv[k, 0]), float(iv[k, 1])) for k in range(iv.shape[0])]
    return out, True


def import_csd(
    sequences: Mapping[str, str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str],
    reference: str = "words",
    label_column: int | str = 0,
    task: str = "regression",
    collapse: str | Mapping[str, str] = "mean",
    splits: SplitsLike | None = None,
    skip_tokens: Sequence[str] = ("sp",),
    include_reference: bool | None = None,
    duplicates: str = "error",
    name: str | None = None,
    description: str = "",
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[Path, ImportReport]:
    r"""Import CMU Multimodal SDK computational sequences as a native data set, aligned at word level.

    Every sequence is aligned onto the reference sequence's intervals (the words) of the same video with
    :func:`mmfuse.align.align` on :meth:`Timeline.from_intervals <mmfuse.align.Timeline.from_intervals>`: the
    frames overlapping a word are collapsed, by default into their overlap-weighted mean (the SDK averages
    them with equal weights). A word no frame overlaps is masked, never filled.

    Samples: with segment labels (a label ``.csd`` such as the SDK's "All Labels" / "Opinion Segment Labels",
    or a CSV with ``start`` and ``end`` columns) each labelled segment is one sample ``"<video>[<k>]"`` (group:
    the video) whose steps are the words with their midpoint inside the segment; a segment holding no word
    becomes one step covering the segment (reported). With per-video labels (a CSV without ``start``/``end``)
    each video is one sample over all its words.

    Videos: a video without the reference sequence, without labels, or (with ``splits``) in no split is left
    out and listed in the report; a video lacking another sequence is kept with that modality masked.

    Args:
        sequences: Modality name -> ``.csd`` file. Must include ``reference``.
        out: Where to write the data set (a folder).
        labels: A label ``.csd`` (segments; ``label_column`` picks the feature column, by index or by its
            metadata "dimension names" entry) or a CSV ``video,label[,start,end]`` (``label_column`` names the
            column when it is a string).
        reference: The modality whose intervals are the timeline.
        label_column: Which label value to use.
        task: ``"regression"`` (the value) or ``"binary"`` (``negative`` < 0 <= ``positive``).
        collapse: How the frames inside a word are reduced (``mean``: overlap-weighted; ``max``, ``first``,
            ``last``), for all or per modality.
        splits: Split name -> video ids (e.g. the standard CMU-MOSI / MOSEI folds), or a ``.json`` / ``.csv``
            file; default: a seeded split of the videos by ``split_fractions``.
        skip_tokens: Words of a words reference (string features) that are not steps (the SDK's ``"sp"``
            silence marker).
        include_reference: Keep the reference as a modality (default: when its features are numbers).
        duplicates: Rows sharing a start time in a non-reference sequence: ``"error"``, ``"mean"``, ``"first"``
            or ``"last"`` (see :meth:`mmfuse.align.Stream.create`).
        name: Data set name (default: the output folder's name).
        description: Free text stored with the data set.
        split_fractions: Train/val/test fractions when ``splits`` is None.
        seed: Seed of that split.
        overwrite: Replace an existing data set at ``out``.

    Returns:
        ``(path of the data set, import report)``; the report is also saved as ``import_report.json`` and
        ``import_report.md`` in the data set.

    Raises:
        ValueError: an unknown reference, collapse rule, task or duplicate policy.
        DataError: unreadable or malformed files (see :func:`read_csd`), feature sizes that differ between the
            videos of a sequence, no sample left to write.
        StreamError: rows the alignment refuses (duplicate starts, nested intervals), naming file and video.

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp())
        >>> words = {v: (np.array([[0.0, 0.4], [0.4, 1.0]]), np.array([[b"hi"], [b"there"]])) for v in "abc"}
        >>> audio = {v: (np.c_[np.arange(10) / 10, np.arange(1, 11) / 10], np.ones((10, 2))) for v in "abc"}
        >>> lab = {v: (np.array([[0.0, 1.0]]), np.array([[1.0 if v == "a" else -1.0]])) for v in "abc"}
        >>> _ = write_csd(d / "w.csd", words, root_name="words"), write_csd(d / "a.csd", audio, root_name="covarep")
        >>> _ = write_csd(d / "l.csd", lab, root_name="All Labels")
        >>> path, report = import_csd({"words": d / "w.csd", "audio": d / "a.csd"}, d / "ds", labels=d / "l.csd")
        >>> report.samples, report.modalities
        (3, ['audio'])
    """
    if reference not in sequences:
        raise ValueError(
            f"The 'reference' parameter of import_csd must name one of the sequences {sorted(sequences)}. "
            f"Got {reference!r}."
        )
    if isinstance(collapse, Mapping):
        for m, rule in collapse.items():
            check_choice(rule, COLLAPSE_RULES, parameter="collapse", owner=f"import_csd modality {m!r}")
    else:
        check_choice(collapse, COLLAPSE_RULES, parameter="collapse", owner="import_csd")
    check_choice(duplicates, DUPLICATE_POLICIES, parameter="duplicates", owner="import_csd")
    label_task(task, "import_csd")
    skip = set(skip_tokens)
    report = ImportReport(source=", ".join(str(p) for p in sequences.values()), format="csd")

    with contextlib.ExitStack() as stack:
        files = {m: stack.enter_context(contextlib.closing(_CsdFile(p))) for m, p in sequences.items()}
        ref = files[reference]
        # Pass 1: shapes of every video (no feature data read), the reference intervals, the labels.
        dims: dict[str, tuple[int, str]] = {}
        text_ref = False
        for m, f in files.items():
            for v in f.video_ids:
                n, d = f.shape(v)
                if n == 0:
                    continue
                if m == reference and f._data[v]["features"].dtype.kind in "OSU":
                    text_ref = True
                if m in dims and dims[m][0] != d:
                    raise DataError(
                        f"{f.path}: sequence {f.root!r} has {dims[m][0]} features in video {dims[m][1]!r} but {d} "
                        f"in video {v!r}."
                    )
                dims.setdefault(m, (d, v))
        keep_ref = (not text_ref) if include_reference is None else include_reference
        if keep_ref and text_ref:
            raise ValueError(
                f"import_csd: the reference {reference!r} holds words, not numbers; it cannot be a modality."
            )
        modalities = sorted(m for m in files if (m != reference or keep_ref) and m in dims)
        report.modalities = modalities
        segs, is_segments = _label_segments(labels, label_column)

        words: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        empty_ref = []
        for v in ref.video_ids:
            iv, feats = ref.read(v)
            if feats.dtype == object and skip:
                keep = ~np.isin(feats, list(skip))
                iv = iv[keep]
            if iv.shape[0] == 0:
                empty_ref.append(v)
                continue
            words[v] = (iv[:, 0].copy(), iv[:, 1].copy())
        report.skip(f"no rows in the reference {reference!r}", empty_ref)
        all_videos = sorted(set().union(*(f.video_ids for f in files.values())))
        report.skip(f"no reference {reference!r}", [v for v in all_videos if v not in ref.video_ids])
        report.skip("no labels", [v for v in sorted(words) if v not in segs])
        report.skip(f"labels but no reference {reference!r}", sorted(v for v in segs if v not in words))
        videos = [v for v in sorted(words) if v in segs]
        if splits is not None:
            split_of = read_splits(splits)
            report.skip("in no split", [v for v in videos if v not in split_of])
            absent = sorted(v for v in split_of if v not in words)
            if absent:
                report.mismatched.append(
                    f"{len(absent)} video(s) named in the splits have no imported data: {absent[:10]}"
                    + (" …" if len(absent) > 10 else "")
                )
            videos = [v for v in videos if v in split_of]
        else:
            from mmfuse.align.folder import _assign_splits

            split_of = _assign_splits(videos, split_fractions, seed)
        if not videos:
            raise DataError(
                f"import_csd: no video has the reference {reference!r}, labels and a split. {report.summary()}"
            )

        samples: dict[str, list[_Sample]] = {}
        fallback = []
        for v in videos:
            ws, we = words[v]
            mid = 0.5 * (ws + we)
            rows = segs[v]
            out_v = []
            for k, (value, s, e) in enumerate(rows):
                if not is_segments or s is None or e is None:
                    out_v.append(_Sample(v, v, value, ws, we))
                    continue
                inside = np.flatnonzero((mid >= s) & (mid < e))
                sid = f"{v}[{k}]"
                if inside.size == 0:
                    fallback.append(sid)
                    out_v.append(_Sample(sid, v, value, np.array([s]), np.array([e])))
                else:
                    out_v.append(_Sample(sid, v, value, ws[inside], we[inside]))
            if not is_segments and len(out_v) > 1:
                raise DataError(f"{labels}: video {v!r} has {len(out_v)} labels; give start/end for segment labels.")
            samples[v] = out_v
        if fallback:
            report.warnings.append(
                f"{len(fallback)} labelled segment(s) hold no reference row; each became one step covering the "
                f"segment: {fallback[:10]}" + (" …" if len(fallback) > 10 else "")
            )
        with_ts = all(np.all(np.diff(s.starts) > 0) for ss in samples.values() for s in ss)
        for m in modalities:
            report.missing[m] = [v for v in videos if v not in files[m].video_ids or files[m].shape(v)[0] == 0]
        report.samples = sum(len(ss) for ss in samples.values())

        from mmfuse.data import ModalitySpec, SequenceRecord, write_dataset

        rules = {m: (collapse.get(m, "mean") if isinstance(collapse, Mapping) else collapse) for m in modalities}

        def records() -> Iterator[SequenceRecord]:
            for v in videos:
                ss = samples[v]
                starts = np.concatenate([s.starts for s in ss])  # every step of the video's samples
                ends = np.concatenate([s.ends for s in ss])
                order = np.argsort(starts, kind="stable")
                tl = Timeline.from_intervals(starts[order], ends[order])
                streams = {}
                for m in modalities:
                    f = files[m]
                    if v in f.video_ids and f.shape(v)[0]:
                        iv, feats = f.read(v)
                        try:
                            streams[m] = Stream.create(m, iv[:, 0], feats, "interval", iv[:, 1], duplicates=duplicates)
                        except StreamError as exc:
                            raise StreamError(f"{f.path}: sequence {f.root!r}, video {v!r}: {exc}") from None
                aligned = align(streams, tl, collapse={m: rules[m] for m in streams})
                inverse = np.empty_like(order)
                inverse[order] = np.arange(order.size)
                offset = 0
                for s in ss:
                    idx = inverse[offset : offset + s.starts.size]  # this sample's steps in the sorted timeline
                    offset += s.starts.size
                    t = s.starts.size
                    values, masks = {}, {}
                    for m in modalities:
                        if m in aligned.streams:
                            values[m], masks[m] = aligned[m].values[idx], aligned[m].mask[idx]
                        else:
                            values[m] = np.zeros((t, dims[m][0]), dtype=np.float32)
                            masks[m] = np.zeros(t, dtype=bool)
                    label = encode_labels(np.array([s.label]), task)[0].item()
                    yield SequenceRecord(
                        id=s.id,
                        group=v,
                        split=split_of[v],
                        values=values,
                        masks=masks,
                        label=label,
                        timestamps=s.starts if with_ts else None,
                    )

        specs = [ModalitySpec(m, dims[m][0], "interval", f"{files[m].root} (.csd)") for m in modalities]
        extra = {
            "import": {
                "format": "csd",
                "sequences": {m: str(p) for m, p in sequences.items()},
                "reference": reference,
                "labels": str(labels),
                "label_column": label_column,
                "collapse": rules,
                "skip_tokens": sorted(skip),
            }
        }
        path = write_dataset(
            out,
            records(),
            name=name or Path(out).name,
            modalities=specs,
            task=task_spec(task, "import_csd"),
            description=description,
            extra_meta=extra,
            overwrite=overwrite,
        )
    report.save(path)
    log.info("%s", report.summary())
    return path, report
