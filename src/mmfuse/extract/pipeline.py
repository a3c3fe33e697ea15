"""Extraction over a folder of media files: cached per file and extractor, failures isolated, one data set out.

:func:`extract_folder` runs every extractor on every file (locally, or as Ray tasks), keeps results in the
:class:`~mmfuse.extract.cache.ExtractionCache`, writes the streams of the files that worked as a
``SRC_DIR/<recording>/<stream>.npz`` folder (the ``align`` layout, at each extractor's full rate; kept as
``streams_out`` when asked, together with the user's own streams from ``extra``) and hands it to
:func:`mmfuse.align.align_folder`, which aligns them onto one grid per recording and writes a native data set
(with its validation report). Every finished file is logged (``logging``, INFO) and passed to ``on_file``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse._io import atomic_write_json, json_fields
from mmfuse.align import STREAM_SUFFIXES, align_folder
from mmfuse.align.folder import _read_stream_config
from mmfuse.data.format import _swap_in
from mmfuse.errors import DataError, MmfuseWarning
from mmfuse.extract.base import ExtractedStream, Extractor, Media, create_extractor
from mmfuse.extract.cache import ExtractionCache, content_hash
from mmfuse.extract.decode import MEDIA_SUFFIXES

__all__ = [
    "DEFAULT_EXTRACTORS",
    "EXECUTORS",
    "ExtractReport",
    "FileResult",
    "extract_file",
    "extract_folder",
    "find_media",
]

DEFAULT_EXTRACTORS: tuple[str, ...] = ("audio", "speech")
"""Extractors run when none are named: they need no model path and no optional extra beyond ``extract``."""

EXECUTORS: tuple[str, ...] = ("local", "ray")
"""Ways :func:`extract_folder` can run the per-file work."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

log = logging.getLogger(__name__)


@dataclass
class FileResult:
    """What extraction did with one media file.

    Attributes:
        path: The media file.
        recording: Its recording (sample) name in the data set.
        duration: Media length in seconds (0.0 when the file could not be read).
        streams: Stream name -> extracted stream (empty on failure).
        cache_hits: Extractors whose result came from the cache.
        computed: Extractors that ran.
        error: ``"<ErrorType>: <message>"`` when the file failed, else None.
        seconds: Wall time spent on this file.
    """

    path: Path
    recording: str
    duration: float = 0.0
    streams: dict[str, ExtractedStream] = field(default_factory=dict)
    cache_hits: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the file was extracted."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict of what happened (without the streams)."""
        return json_fields(self, ("path", "recording", "duration", "ok", "error", "cache_hits", "computed", "seconds"))


@dataclass
class ExtractReport:
    """Summary of one :func:`extract_folder` run.

    Attributes:
        files: One :class:`FileResult` per media file, in file order (streams dropped to keep it small).
        wall_seconds: Wall time of the extraction (not the alignment and writing).
        executor: "local" or "ray".
    """

    files: list[FileResult]
    wall_seconds: float
    executor: str = "local"

    @property
    def failures(self) -> list[FileResult]:
        """The files that failed."""
        return [f for f in self.files if not f.ok]

    @property
    def media_seconds(self) -> float:
        """Total length of the files extracted."""
        return float(sum(f.duration for f in self.files if f.ok))

    @property
    def throughput(self) -> float:
        """Seconds of media extracted per second of wall time (0.0 when nothing took time)."""
        return self.media_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def cache_hits(self) -> int:
        """Extractor results read from the cache."""
        return sum(len(f.cache_hits) for f in self.files)

    @property
    def computed(self) -> int:
        """Extractor results computed."""
        return sum(len(f.computed) for f in self.files)

    def summary(self) -> str:
        """One line: files, failures, media seconds, throughput, cache use."""
        return (
            f"{len(self.files) - len(self.failures)}/{len(self.files)} files extracted "
            f"({len(self.failures)} failed), {self.media_seconds:.1f} s of media in {self.wall_seconds:.1f} s "
            f"({self.throughput:.2f} media-s/s); {self.computed} computed, {self.cache_hits} from cache"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        keys = ("executor", "wall_seconds", "media_seconds", "throughput", "files")
        return json_fields(self, keys, files=[f.to_dict() for f in self.files])


def find_media(media_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Return recording name -> media file for every media file under ``media_dir`` (recursively, sorted).

    The recording name is the path relative to ``media_dir`` without its suffix, folders joined by ``__`` and
    characters other than letters, digits, ``_ . -`` replaced by ``_``.

    Raises:
        DataError: the folder is missing, holds no media file, or two files map to one name.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for f in ["a/x 1.mp4", "b.wav", "notes.txt"]:
        ...     (d / f).parent.mkdir(parents=True, exist_ok=True); _ = (d / f).write_bytes(b"")
        >>> sorted(find_media(d))
        ['a__x_1', 'b']
    """
    root = Path(media_dir)
    if not root.is_dir():
        raise DataError(f"{root}: media folder not found.")
    found: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or p.suffix.lower() not in MEDIA_SUFFIXES or any(x.startswith(".") for x in rel.parts):
            continue
        name = _UNSAFE.sub("_", "__".join(rel.with_suffix("").parts))
        if name in found:
            raise DataError(f"{root}: files {found[name]} and {p} both map to recording name {name!r}; rename one.")
        found[name] = p
    if not found:
        raise DataError(f"{root}: no media files found (file endings: {', '.join(MEDIA_SUFFIXES)}).")
    return found


def extract_file(
    path: str | os.PathLike[str],
    extractors: Sequence[Extractor],
    *,
    recording: str = "",
    cache: ExtractionCache | str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> FileResult:
    """Run ``extractors`` on one media file, reading and filling the cache; never raises on a bad file.

    Args:
        path: The media file.
        extractors: Extractor objects (see :func:`mmfuse.extract.create_extractor`).
        recording: Name recorded in the result (default: the file's stem).
        cache: An :class:`ExtractionCache` or its root folder (default: :func:`default_cache_dir`).
        use_cache: Read and write the cache.

    Returns:
        A :class:`FileResult`; a decoding or extractor error is caught and recorded in ``error``. A missing
        optional dependency (ImportError) is raised: it would fail every file.
    """
    t0 = time.perf_counter()
    p = Path(path)
    store = cache if isinstance(cache, ExtractionCache) else ExtractionCache(cache)
    result = FileResult(path=p, recording=recording or p.stem)
    try:
        content = content_hash(p) if use_cache else ""
        media = Media(p)
        result.duration = media.info.duration
        for ex in extractors:
            got = store.get(content, ex) if use_cache else None
            if got is not None:
                result.cache_hits.append(ex.name)
            else:
                got = ex(media) if ex.available(media) else {}
                result.computed.append(ex.name)
                if use_cache:
                    store.put(content, ex, got)
            result.streams.update(got)
        if media._audio:  # the decoded length is more exact than the header's
            rate, samples = next(iter(media._audio.items()))
            result.duration = max(result.duration, samples.shape[0] / rate)
    except ImportError:
        raise
    except Exception as exc:
        result.streams = {}
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - t0
    return result


def _resolve_extractors(extractors: Sequence[str | Extractor] | None) -> list[Extractor]:
    items = list(DEFAULT_EXTRACTORS if extractors is None else extractors)
    if not items:
        raise ValueError("The 'extractors' parameter of extract_folder must name at least one extractor.")
    out = [create_extractor(e) if isinstance(e, str) else e for e in items]
    for e in out:
        if not isinstance(e, Extractor):
            raise ValueError(
                f"The 'extractors' parameter of extract_folder takes extractor names or Extractor objects. Got {e!r}."
            )
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ValueError(f"The 'extractors' parameter of extract_folder names an extractor twice: {names}.")
    return out


def _read_label_rows(
    labels: str | os.PathLike[str] | Mapping[str, str] | None, media: Mapping[str, Path], media_dir: Path
) -> dict[str, dict[str, str]]:
    """Recording -> {"label", optional "split", "group"} from a CSV, a mapping, or the parent folder names."""
    keys: dict[str, str] = {}
    for rec, p in media.items():  # every way a row may name a file
        rel = p.relative_to(media_dir)
        for k in (rec, str(rel), rel.as_posix(), p.name, p.stem, str(rel.with_suffix(""))):
            keys.setdefault(k, rec)
    rows: dict[str, dict[str, str]] = {}
    if labels is None:
        parents = {rec: p.relative_to(media_dir).parent.as_posix() for rec, p in media.items()}
        flat = sorted(rec for rec, par in parents.items() if par == ".")
        if flat:
            raise DataError(
                f"{media_dir}: no labels given and files {flat[:5]} are not in a class subfolder; give labels "
                "(--labels CSV with columns file,label[,split][,group]) or put each file in a folder named after "
                "its label."
            )
        return {rec: {"label": par.split("/")[0]} for rec, par in parents.items()}
    if isinstance(labels, Mapping):
        items: list[dict[str, str]] = [{"file": str(k), "label": str(v)} for k, v in labels.items()]
        where = "labels mapping"
    else:
        path = Path(labels)
        where = str(path)
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                raw_rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: cannot read the labels file: {exc}") from None
        header = list(raw_rows[0]) if raw_rows else []
        col = "file" if "file" in header else "recording" if "recording" in header else None
        if col is None or "label" not in header:
            raise DataError(f"{path}: the labels file needs columns 'file' and 'label'. Got {header}.")
        items = [{("file" if k == col else k): (v or "").strip() for k, v in r.items() if k} for r in raw_rows]
    for i, row in enumerate(items):
        found = keys.get(row.get("file", ""))
        if found is None:
            continue  # a label for a file that is not there: ignored (the data set lists what was extracted)
        if not row.get("label"):
            raise DataError(f"{where}: row {i + 1} ({row.get('file')!r}) has an empty label.")
        rows[found] = {k: row[k] for k in ("label", "split", "group") if row.get(k)}
    missing = sorted(set(media) - set(rows))
    if missing:
        raise DataError(f"{where}: no label for media file(s) {[str(media[m]) for m in missing[:10]]}.")
    return rows


@dataclass
class _Extra:
    """The user's streams (``extra`` root, ``import folders`` layout) matched to the extracted recordings."""

    files: dict[str, dict[str, Path]]  # recording -> modality -> file
    config: dict[str, dict[str, Any]]  # the root's streams.json
    unmatched: list[Path]  # files naming no extracted recording


def _read_extra(root: str | os.PathLike[str], recordings: Sequence[str]) -> _Extra:
    """Read ``ROOT/<modality>/<recording>.csv|npz|parquet`` (and ``ROOT/streams.json``) for :func:`extract_folder`.

    Raises:
        DataError: a missing root, no modality folder, a recording given twice in one modality, or a
            ``streams.json`` that ``align_folder`` would refuse (unreadable, not modality -> object, unknown keys).
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: the folder of extra streams ('extra', --extra) does not exist.")
    config = _read_stream_config(base)  # align_folder's own reader and checks, before any extraction runs
    wanted = set(recordings)
    files: dict[str, dict[str, Path]] = {}
    unmatched: list[Path] = []
    folders = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    found_any = False
    for folder in folders:
        for f in sorted(folder.iterdir()):
            if f.name.startswith(".") or not f.is_file() or f.suffix.lower() not in STREAM_SUFFIXES:
                continue
            found_any = True
            if f.stem not in wanted:
                unmatched.append(f)
                continue
            given = files.setdefault(f.stem, {})
            if folder.name in given:
                raise DataError(f"{folder}: recording {f.stem!r} is given twice ({given[folder.name].name}, {f.name}).")
            given[folder.name] = f
    if not found_any:
        raise DataError(
            f"{base}: no stream files found; extra streams are laid out as ROOT/<modality>/<recording>.csv|.npz|"
            ".parquet (the 'import folders' layout), named by the recording names of the media files."
        )
    return _Extra(files=files, config=config, unmatched=unmatched)


def _write_source(
    folder: Path,
    results: Sequence[FileResult],
    rows: Mapping[str, Mapping[str, str]],
    extra: _Extra | None = None,
) -> None:
    """Write the align_folder source: <rec>/<stream>.npz (and the extra streams), streams.json, labels.csv."""
    kinds: dict[str, str] = {}
    for r in results:
        rec_dir = folder / r.recording
        rec_dir.mkdir(parents=True)
        for name, s in r.streams.items():
            arrays = {"timestamps": s.timestamps, "values": s.values}
            if s.ends is not None:
                arrays["ends"] = s.ends
            np.savez(rec_dir / f"{name}.npz", **arrays)  # type: ignore[arg-type]
            kinds.setdefault(name, s.kind)
    config: dict[str, dict[str, Any]] = {m: {"kind": k} for m, k in sorted(kinds.items())}
    if extra is not None:
        for r in results:
            for modality, path in sorted(extra.files.get(r.recording, {}).items()):
                if modality in r.streams:
                    raise DataError(
                        f"{path}: the extra stream {modality!r} has the name of an extracted stream of recording "
                        f"{r.recording!r}; rename its folder (extracted: {sorted(r.streams)})."
                    )
                shutil.copyfile(path, folder / r.recording / f"{modality}{path.suffix.lower()}")
        for modality, entry in sorted(extra.config.items()):
            mine = config.setdefault(modality, {})
            if "kind" in mine and entry.get("kind", mine["kind"]) != mine["kind"]:
                raise DataError(
                    f"streams.json of the extra streams gives the extracted stream {modality!r} kind "
                    f"{entry['kind']!r}; its extractor writes {mine['kind']!r}."
                )
            mine.update(entry)
    atomic_write_json(folder / "streams.json", config)
    cols = ["recording", "label"] + [c for c in ("split", "group") if any(c in rows[r.recording] for r in results)]
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in results:
            w.writerow([r.recording, *(rows[r.recording].get(c, "") for c in cols[1:])])


def extract_folder(
    media_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    *,
    extractors: Sequence[str | Extractor] | None = None,
    rate: float = 10.0,
    labels: str | os.PathLike[str] | Mapping[str, str] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    name: str | None = None,
    description: str = "",
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    overwrite: bool = False,
    on_file: Callable[[FileResult], None] | None = None,
    streams_out: str | os.PathLike[str] | None = None,
    extra: str | os.PathLike[str] | None = None,
) -> tuple[Path, ExtractReport]:
    """Extract feature streams from every media file in a folder and write them as one aligned data set.

    Each file becomes one recording (sample). Streams of a recording are aligned onto a grid at ``rate`` Hz
    spanning all of them (:func:`mmfuse.align.align_folder`); a stream a file lacks (no audio track, no speech)
    is written as zeros with an all-False mask. A file that fails (corrupt, undecodable) is reported in the
    :class:`ExtractReport` and left out; the others continue. Results are cached per file content and extractor
    config, so a re-run computes only what is new.

    Labels: a CSV with columns ``file,label[,split][,group]`` (``file`` is the path relative to ``media_dir``,
    the file name or its stem), a mapping file -> label, or None to use each file's top-level subfolder name.
    Splits missing from the labels are assigned by group (see :func:`mmfuse.align.align_folder`).

    ``streams_out`` keeps the per-recording stream files at each extractor's full rate in the ``align`` layout
    (``<recording>/<stream>.npz``, ``streams.json``, ``labels.csv``, ``extraction.json``), which ``mmfuse align``
    reads (to align at another rate, or averaging frames into steps). ``extra`` adds the user's own streams in
    the ``import folders`` layout, ``EXTRA/<modality>/<recording>.csv|npz|parquet`` (and an optional
    ``EXTRA/streams.json`` of kinds and options), matched by recording name (see :func:`find_media`); a
    recording without a file of an extra modality has it masked, and files naming no recording are warned about.

    Args:
        media_dir: Folder of video/audio files (searched recursively).
        out: Where to write the data set; None writes only ``streams_out``.
        extractors: Extractor names or objects (default :data:`DEFAULT_EXTRACTORS`).
        rate: Grid rate of the data set in Hz.
        labels: Labels CSV, mapping, or None (see above).
        executor: "local" (this process) or "ray" (Ray tasks, one per file).
        ray_address: Address of a running Ray cluster (``executor="ray"``); None starts a local one.
        cache_dir: Extraction cache folder (default ``$MMFUSE_CACHE_DIR/extract``).
        use_cache: Read and write the cache.
        name: Data set name (default: the media folder's name).
        description: Free text stored with the data set.
        split_fractions: Train/val/test fractions for files without a split.
        seed: Seed of the split assignment.
        overwrite: Replace an existing data set at ``out``.
        on_file: Called with each :class:`FileResult` as it completes (progress display).
        streams_out: Also write the stream files (full rate, ``align`` layout) into this folder.
        extra: Folder of the user's own streams to add (``import folders`` layout, see above).

    Returns:
        ``(data set path, ExtractReport)`` (the ``streams_out`` path when ``out`` is None); ``extraction.json``
        (the report and the extractor configs) and the transcripts (``transcripts.json``, when the speech
        extractor ran) are written into the data set and ``streams_out``.

    Raises:
        ValueError: bad ``rate``, unknown executor or extractor (the valid ones are listed).
        DataError: no media files, missing labels, every file failed (the first errors are quoted).
        FileExistsError: ``out`` or ``streams_out`` exists and ``overwrite`` is False.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"The 'rate' parameter of extract_folder must be a positive number (Hz). Got {rate!r}.")
    if executor not in EXECUTORS:
        raise ValueError(
            f"The 'executor' parameter of extract_folder must be one of {list(EXECUTORS)}. Got {executor!r}."
        )
    if out is None and streams_out is None:
        raise ValueError("extract_folder needs 'out' (the data set) or 'streams_out' (the stream files), or both.")
    outputs = [Path(p) for p in (out, streams_out) if p is not None]
    for target in outputs:
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target}: the output exists; pass overwrite=True (--overwrite) to replace it.")
    exs = _resolve_extractors(extractors)
    root = Path(media_dir)
    media = find_media(root)
    rows = _read_label_rows(labels, media, root)
    user = _read_extra(extra, list(media)) if extra is not None else None
    cache = ExtractionCache(cache_dir)
    jobs = list(media.items())
    t0 = time.perf_counter()
    finished = _file_logger(len(jobs), on_file)
    if executor == "ray":
        from mmfuse.extract.ray_executor import run_ray

        results = run_ray(jobs, exs, cache_root=cache.root, use_cache=use_cache, address=ray_address, on_file=finished)
    else:
        results = []
        for rec, path in jobs:
            res = extract_file(path, exs, recording=rec, cache=cache, use_cache=use_cache)
            results.append(res)
            finished(res)
    report = ExtractReport(files=results, wall_seconds=time.perf_counter() - t0, executor=executor)
    good = [r for r in results if r.ok and r.streams]
    if not good:
        errors = "; ".join(f"{r.path.name}: {r.error or 'no streams'}" for r in results[:3])
        raise DataError(f"{root}: no file produced any stream ({len(results)} tried). First errors: {errors}")
    if user is not None and user.unmatched:
        shown = ", ".join(str(p) for p in user.unmatched[:5])
        warnings.warn(
            f"{len(user.unmatched)} extra stream file(s) name no extracted recording and are left out: {shown}"
            f"{' ...' if len(user.unmatched) > 5 else ''}. Extra files are named <recording>.<ext>, with the "
            f"recording names of the media files (e.g. {good[0].recording!r}).",
            MmfuseWarning,
            stacklevel=2,
        )
    meta = {
        "media_dir": str(root),
        "rate": float(rate),
        "extractors": {e.name: {"version": e.version, "config": e.config()} for e in exs},
        "streams": {
            n: {"kind": s.kind, "dim": s.dim, "columns": list(s.columns)}
            for r in good
            for n, s in sorted(r.streams.items())
        },
        "extra": str(extra) if extra is not None else None,
        "report": report.to_dict(),
    }
    transcripts = {r.recording: r.streams["text_words"].meta for r in good if "text_words" in r.streams}
    anchor = Path(streams_out) if streams_out is not None else Path(str(out))  # staging beside it: one rename
    anchor.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{anchor.name}.extract-", dir=anchor.parent))
    try:
        _write_source(staging, good, rows, user)
        source = staging
        if streams_out is not None:
            atomic_write_json(staging / "extraction.json", meta)
            if transcripts:
                atomic_write_json(staging / "transcripts.json", transcripts)
            source = _replace_dir(staging, Path(streams_out))
        path = source
        if out is not None:
            with _warnings_about(source, staged=source == staging, labels=labels, media_dir=root):
                path, _validation = align_folder(
                    source,
                    Path(out),
                    rate=float(rate),
                    name=name or root.name,
                    description=description
                    or f"Extracted from {root} by mmfuse.extract ({', '.join(e.name for e in exs)}).",
                    split_fractions=split_fractions,
                    seed=seed,
                    overwrite=overwrite,
                )
            atomic_write_json(path / "extraction.json", meta)
            if transcripts:
                atomic_write_json(path / "transcripts.json", transcripts)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for r in results:
        r.streams = {}  # the report stays small; the data set holds the values
    return path, report


@contextmanager
def _warnings_about(
    source: Path, *, staged: bool, labels: str | os.PathLike[str] | Mapping[str, str] | None, media_dir: Path
) -> Iterator[None]:
    """Re-issue align_folder's warnings naming what the user gave instead of a temporary folder.

    Only when ``source`` is the temporary staging folder: the labels file there stands for ``labels`` (the
    ``--labels`` CSV, or the class folders of ``media_dir``), the rest of it for ``media_dir``.
    """
    if not staged:
        yield
        return
    given = str(labels) if isinstance(labels, str | os.PathLike) else f"{media_dir} (labels from its class folders)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = str(w.message).replace(str(source / "labels.csv"), given).replace(str(source), str(media_dir))
        category = w.category if issubclass(w.category, Warning) else MmfuseWarning
        warnings.warn(text, category, stacklevel=3)


def _replace_dir(staging: Path, target: Path) -> Path:
    """Move the finished ``staging`` folder onto ``target``; an existing one is replaced as ``write_dataset`` does."""
    if target.exists():
        _swap_in(staging, target)  # two renames; a failed second one puts the old folder back
    else:
        os.replace(staging, target)
    return target


def _file_logger(total: int, on_file: Callable[[FileResult], None] | None) -> Callable[[FileResult], None]:
    """Log each finished file (``extract k/N: file ...``) and pass it on to ``on_file``."""
    done = 0

    def finished(res: FileResult) -> None:
        nonlocal done
        done += 1
        if res.error:
            log.warning("extract %d/%d: %s failed: %s", done, total, res.path, res.error)
        else:
            log.info(
                "extract %d/%d: %s (%.1f s of media in %.1f s; computed %s, cached %s)",
                done,
                total,
                res.path,
                res.duration,
                res.seconds,
                ", ".join(res.computed) or "none",
                ", ".join(res.cache_hits) or "none",
            )
        if on_file is not None:
            on_file(res)

    return finished
