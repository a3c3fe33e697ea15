"""Feature folders as research code writes them: one folder per modality, one file per video.

Layout read by :func:`import_feature_folders`::

    ROOT/
      labels.csv                  video,label[,split][,group]   (or labels=PATH; id column: video|video_id|recording|id)
      audio/<video>.csv           a timestamp column (timestamp|time|t) + feature columns  (or .npz / .parquet)
      visual/<video>.csv          e.g. CLIP embeddings written as float16 text
      clip/<video>.npz            arrays timestamps [N], values [N, D] (any float dtype, float16 included)

The files are matched by name (the file stem is the video id) and handed to :func:`mmfuse.align.align_folder`
(which reads the other common layout, ``<recording>/<modality>.csv``) through a temporary folder of links,
so reading, alignment, validation, labels and splits follow exactly its rules.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmfuse._io import atomic_write_text
from mmfuse.align import STREAM_SUFFIXES, align_folder
from mmfuse.data.format import open_dataset, update_extra_meta
from mmfuse.errors import DataError, StreamError
from mmfuse.importers._common import ID_COLUMNS, ImportReport, _read_csv_rows

__all__ = ["import_feature_folders"]


def _normal(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # pragma: no cover - file systems without symlinks
        shutil.copyfile(src, dst)


def _rewrite(exc: Exception, paths: Mapping[str, str]) -> Exception:
    """The same error with the temporary folder's paths replaced by the user's files."""
    text = str(exc)
    for tmp, real in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(tmp, real)
    return type(exc)(text)


def import_feature_folders(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    modalities: Sequence[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    rate: float | None = None,
    reference: str | None = None,
    kinds: Mapping[str, str] | None = None,
    time_columns: Mapping[str, str] | None = None,
    tolerance: float | Mapping[str, float] | None = None,
    collapse: str | Mapping[str, str] = "mean",
    duplicates: str = "error",
    name: str | None = None,
    description: str = "",
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[Path, ImportReport]:
    r"""Import one folder per modality (one file per video, matched by name) as a native data set.

    A video lacking a modality is kept with that modality masked (zeros, all-False mask) and listed in the
    report under ``missing``. A video with feature files but no label, a label with no feature file, and (with
    ``reference``) a video lacking the reference modality are left out and listed under ``skipped``. Names
    that differ only in case or punctuation (``Video_01`` / ``video01``) are not merged; they are listed under
    ``mismatched``. Alignment, validation (``validation.json``/``.md``), labels and splits follow
    :func:`mmfuse.align.align_folder`; the import report is saved as ``import_report.json``/``.md``.

    Args:
        root: The folder holding one sub-folder per modality.
        out: Where to write the data set (a folder).
        modalities: Sub-folders to read (default: every sub-folder that holds stream files).
        labels: Per-video labels CSV (default ``ROOT/labels.csv``): a video id column (``video``,
            ``video_id``, ``recording`` or ``id``), ``label``, optional ``split`` and ``group``.
        rate: Grid rate in Hz; give exactly one of ``rate`` and ``reference``.
        reference: The modality whose timestamps (rows) are the timeline.
        kinds: Modality -> stream kind (``continuous``, ``discrete``, ``embedding``, ``interval``); default
            continuous (interval when a file has an ``end`` column).
        time_columns: Modality -> its timestamp column in CSV/Parquet files (default ``timestamp``, ``time``
            or ``t``).
        tolerance: Alignment tolerance in seconds, global or per modality.
        collapse: Reduction of several rows into one step, global or per modality.
        duplicates: Duplicate-timestamp policy (see :meth:`mmfuse.align.Stream.create`).
        name: Data set name (default: the root folder's name).
        description: Free text stored with the data set.
        split_fractions: Train/val/test fractions for videos without a split.
        seed: Seed of the split assignment.
        overwrite: Replace an existing data set at ``out``.

    Returns:
        ``(path of the data set, import report)``.

    Raises:
        ValueError: neither or both of ``rate`` and ``reference``; an unknown reference modality.
        DataError: a missing root, modality folder or labels file; a video given twice in one modality
            folder; no video with a label; unreadable files and the other errors of
            :func:`mmfuse.align.align_folder`, naming the user's file.
        StreamError: malformed data in a file (the file is named).

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp())
        >>> for m in ("audio", "clip"):
        ...     (d / "src" / m).mkdir(parents=True)
        ...     for v in ("a", "b", "c"):
        ...         if (m, v) != ("clip", "c"):
        ...             np.savez(d / "src" / m / f"{v}.npz", timestamps=np.arange(4) / 2, values=np.ones((4, 2)))
        >>> _ = (d / "src" / "labels.csv").write_text("video,label\na,pos\nb,neg\nc,pos\n")
        >>> path, report = import_feature_folders(d / "src", d / "ds", rate=2.0)
        >>> report.samples, report.missing
        (3, {'audio': [], 'clip': ['c']})
    """
    if (rate is None) == (reference is None):
        raise ValueError(
            "import_feature_folders needs exactly one of 'rate' (grid in Hz) and 'reference' (a modality name). "
            f"Got rate={rate!r}, reference={reference!r}."
        )
    src = Path(root)
    if not src.is_dir():
        raise DataError(f"{src}: feature folder root not found.")
    if modalities is None:
        mods = sorted(
            p.name
            for p in src.iterdir()
            if p.is_dir() and not p.name.startswith(".") and any(f.suffix in STREAM_SUFFIXES for f in p.iterdir())
        )
        if not mods:
            raise DataError(f"{src}: no modality folders with stream files (.csv, .npz, .parquet) found.")
    else:
        mods = list(modalities)
        for m in mods:
            if not (src / m).is_dir():
                raise DataError(f"{src / m}: modality folder not found.")
    if reference is not None and reference not in mods:
        raise ValueError(
            f"The 'reference' parameter of import_feature_folders must be one of the modalities {mods}. "
            f"Got {reference!r}."
        )
    report = ImportReport(source=str(src), format="feature-folders", modalities=mods)

    files: dict[str, dict[str, Path]] = {}  # modality -> video -> file
    for m in mods:
        found: dict[str, Path] = {}
        for f in sorted((src / m).iterdir()):
            if f.is_file() and f.suffix in STREAM_SUFFIXES and not f.name.startswith("."):
                if f.stem in found:
                    raise DataError(f"{src / m}: video {f.stem!r} is given twice ({found[f.stem].name} and {f.name}).")
                found[f.stem] = f
        files[m] = found

    label_path = Path(labels) if labels is not None else src / "labels.csv"
    if not label_path.is_file():
        raise DataError(f"{label_path}: labels file not found (a CSV video,label[,split][,group]).")
    columns, rows = _read_csv_rows(label_path)
    vid_col = next((c for c in ID_COLUMNS if c in columns), None)
    if vid_col is None or "label" not in columns:
        raise DataError(
            f"{label_path}: needs a video id column (one of {list(ID_COLUMNS)}) and a 'label' column. "
            f"Columns: {columns}."
        )
    label_rows: dict[str, dict[str, str]] = {}
    for i, r in enumerate(rows, start=2):
        v = r[vid_col]
        if not v or not r["label"]:
            raise DataError(f"{label_path}: line {i} has an empty video id or label.")
        if v in label_rows:
            raise DataError(f"{label_path}: video {v!r} is listed twice (line {i}).")
        label_rows[v] = r

    videos = sorted(set().union(*(set(f) for f in files.values())))
    report.skip("no label", [v for v in videos if v not in label_rows])
    report.skip("label but no feature file", sorted(v for v in label_rows if v not in videos))
    keep = [v for v in videos if v in label_rows]
    if reference is not None:
        report.skip(f"no reference modality {reference!r}", [v for v in keep if v not in files[reference]])
        keep = [v for v in keep if v in files[reference]]
    for m in mods:
        report.missing[m] = [v for v in keep if v not in files[m]]
    names_by_key: dict[str, set[str]] = {}
    for v in set(videos) | set(label_rows):
        names_by_key.setdefault(_normal(v), set()).add(v)
    for key in sorted(names_by_key):
        alike = sorted(names_by_key[key])
        if len(alike) > 1:
            where = {n: [m for m in mods if n in files[m]] + (["labels"] if n in label_rows else []) for n in alike}
            report.mismatched.append(
                "names differ only in case or punctuation, not merged: "
                + "; ".join(f"{n!r} ({', '.join(w)})" for n, w in where.items())
            )
    if not keep:
        raise DataError(f"{src}: no video has both feature files and a label. {report.summary()}")

    with tempfile.TemporaryDirectory(prefix=".mmfuse-import-") as tmp_dir:
        tmp = Path(tmp_dir) / src.name
        tmp.mkdir()
        paths = {str(tmp): str(src)}
        for v in keep:
            (tmp / v).mkdir()
            for m in mods:
                if v in files[m]:
                    dst = tmp / v / f"{m}{files[m][v].suffix}"
                    _link(files[m][v], dst)
                    paths[str(dst)] = str(files[m][v])
        extra_cols = [c for c in ("split", "group") if c in columns]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["recording", "label", *extra_cols])
        for v in keep:
            writer.writerow([v, label_rows[v]["label"], *(label_rows[v][c] for c in extra_cols)])
        (tmp / "labels.csv").write_text(buf.getvalue(), encoding="utf-8")
        paths[str(tmp / "labels.csv")] = str(label_path)
        config: dict[str, dict[str, Any]] = {}
        for m, k in (kinds or {}).items():
            config.setdefault(m, {})["kind"] = k
        for m, c in (time_columns or {}).items():
            config.setdefault(m, {})["time_column"] = c
        unknown = sorted(set(config) - set(mods))
        if unknown:
            raise ValueError(f"import_feature_folders: kinds/time_columns name unknown modalities {unknown}; {mods}.")
        if config:
            (tmp / "streams.json").write_text(json.dumps(config), encoding="utf-8")
        try:
            path, validation = align_folder(
                tmp,
                out,
                rate=rate,
                reference=reference,
                tolerance=tolerance,
                collapse=collapse,
                duplicates=duplicates,
                name=name or src.name,
                description=description,
                split_fractions=split_fractions,
                seed=seed,
                overwrite=overwrite,
            )
        except (DataError, StreamError) as exc:
            raise _rewrite(exc, paths) from None
    align_notes = dict(open_dataset(path).extra_meta.get("align", {}))
    align_notes["source"] = str(src)
    imported = {"format": "feature-folders", "root": str(src), "labels": str(label_path)}
    update_extra_meta(path, {"align": align_notes, "import": imported})
    for fname in ("validation.json", "validation.md"):  # name the user's folder, not the temporary one
        f = path / fname
        atomic_write_text(f, _rewrite(DataError(f.read_text(encoding="utf-8")), paths).args[0])
    report.samples = len(keep)
    report.warnings.extend(validation.warnings)
    report.save(path)
    return path, report
