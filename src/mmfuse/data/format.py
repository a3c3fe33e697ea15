"""The native on-disk format of mmfuse: a directory of Parquet files plus ``meta.json``.

Layout of a data set directory (format version 1)::

    meta.json                   format name + version, name, description, modalities, task, counts, splits,
                                context vocabularies, per-file row counts and sha256, mmfuse version, extra_meta
    samples.parquet             one row per sample: id, group, split, n_steps, offset[, label][, ctx.<name>...]
    modalities/<name>.parquet   one row per step, all samples concatenated in sample order:
                                values FixedSizeList<float32>[D], present bool
    steps.parquet               one row per step (only when there are timestamps or step-level labels):
                                [timestamp float64][, label]

``offset`` is the row of the sample's first step in every per-step file and ``n_steps`` its length. Labels
are int64 class indices (classification), float32 (scalar regression) or FixedSizeList<float32>[C]. A step
label may mark an unlabelled step: ``IGNORE_INDEX`` (-100) for classification, NaN for regression.

:func:`write_dataset` validates every record and writes atomically; :func:`open_dataset` is lazy.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch.utils.data

from mmfuse.data._spec import MAX_TOKEN_ID, ModalitySpec, SequenceRecord, TaskSpec, invalid_token_rows
from mmfuse.data.collate import IGNORE_INDEX
from mmfuse.errors import DataError, MmfuseWarning
from mmfuse.types import LabelLevel, TaskType

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MultimodalDataset",
    "open_dataset",
    "recover_interrupted_write",
    "update_extra_meta",
    "write_dataset",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "mmfuse-dataset"
"""The ``format`` value in every ``meta.json``."""
FORMAT_VERSION = 2
"""The on-disk format version this code writes and the highest it reads (2: ``meta.json`` carries its checksum)."""

_META = "meta.json"
_META_SHA = "meta_sha256"
_SAMPLES = "samples.parquet"
_STEPS = "steps.parquet"
_CTX_PREFIX = "ctx."
_FLUSH_STEPS = 65_536
_FLUSH_SAMPLES = 8_192


def _modality_file(name: str) -> str:
    return f"modalities/{name}.parquet"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _meta_digest(meta: Mapping[str, Any]) -> str:
    """sha256 of ``meta`` without its own checksum entry, in a canonical JSON form (sorted keys, no spaces)."""
    body = {k: v for k, v in meta.items() if k != _META_SHA}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Directories cannot be opened for fsync on every platform (Windows); durability is best effort there.
    with contextlib.suppress(OSError):
        _fsync_file(path)


def _label_type(task: TaskSpec) -> pa.DataType:
    if task.type is TaskType.CLASSIFICATION:
        return pa.int64()
    if task.target_dim == 1:
        return pa.float32()
    return pa.list_(pa.float32(), task.target_dim)


def _label_array(labels: np.ndarray, task: TaskSpec) -> pa.Array:
    if task.type is TaskType.REGRESSION and task.target_dim > 1:
        flat = pa.array(np.ascontiguousarray(labels, dtype=np.float32).reshape(-1))  # [N, C] -> [N*C]
        return pa.FixedSizeListArray.from_arrays(flat, task.target_dim)
    return pa.array(labels, type=_label_type(task))


# --------------------------------------------------------------------------------------------------------------
# validation of one record


def _check_label(label: Any, task: TaskSpec, n_steps: int, where: str) -> np.ndarray:
    """Return the label as an array ([], [C], [T] or [T, C]) or raise DataError."""
    step = task.level is LabelLevel.STEP
    if task.type is TaskType.CLASSIFICATION:
        if step:
            arr = np.asarray(label)
            if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
                raise DataError(
                    f"{where}: a step-level classification label must be an integer array of class indices. "
                    f"Got dtype {arr.dtype} instead."
                )
            if arr.shape != (n_steps,):
                raise DataError(f"{where}: the step-level label must have shape ({n_steps},). Got {arr.shape}.")
        else:
            if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
                raise DataError(
                    f"{where}: a sample-level classification label must be an int class index. "
                    f"Got {label!r} ({type(label).__name__}) instead."
                )
            arr = np.asarray(label, dtype=np.int64)
        n = len(task.class_names)
        flat = arr.reshape(-1)  # [] or [T] -> [1] or [T]
        out_of_range = (flat < 0) | (flat >= n)
        if step:  # IGNORE_INDEX marks an unlabelled step
            out_of_range &= flat != IGNORE_INDEX
        bad = np.flatnonzero(out_of_range)
        if bad.size:
            at = f" at step {int(bad[0])}" if step else ""
            raise DataError(
                f"{where}: class index {int(flat[bad[0]])}{at} is out of range; expected 0..{n - 1} ({n} classes)."
            )
        return arr.astype(np.int64, copy=False)
    # regression
    c = task.target_dim
    expected: tuple[int, ...] = (() if c == 1 else (c,)) if not step else ((n_steps,) if c == 1 else (n_steps, c))
    if isinstance(label, (str, bytes)):
        raise DataError(f"{where}: a regression label must be numeric. Got the string {label!r} instead.")
    arr = np.asarray(label)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{where}: a regression label must be numeric. Got dtype {arr.dtype} instead.")
    if arr.shape != expected:
        raise DataError(f"{where}: the regression label must have shape {expected}. Got {arr.shape} instead.")
    arr = arr.astype(np.float32)
    if step:  # NaN in every component marks an unlabelled step; inf, or NaN in some components only, is an error
        nan = np.isnan(arr) if c == 1 else np.isnan(arr).all(axis=1)  # [T]
        bad_rows = ~np.isfinite(arr) if c == 1 else ~np.isfinite(arr).all(axis=1)
        bad_step = np.flatnonzero(bad_rows & ~nan)
        if bad_step.size:
            raise DataError(
                f"{where}: the regression target is not finite (inf, or NaN in some components only) at step "
                f"{int(bad_step[0])}; a step-level target is finite, or NaN (in every component) for an unlabelled "
                "step."
            )
        return arr
    finite = np.isfinite(arr)
    if not finite.all():
        at = f" at step {int(np.argwhere(~finite)[0][0])}" if step else ""
        raise DataError(f"{where}: the regression target is not finite (NaN or inf){at}.")
    return arr


class _Validator:
    """Checks records one at a time against the specs (keeps only the ids seen and the context values)."""

    def __init__(self, modalities: Sequence[ModalitySpec], task: TaskSpec) -> None:
        self.modalities = {m.name: m for m in modalities}
        self.task = task
        self.seen: set[str] = set()
        self.context_keys: tuple[str, ...] | None = None
        self.context_values: dict[str, set[str]] = {}
        self.has_timestamps: bool | None = None

    def check(
        self, rec: Any, index: int
    ) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
        if not isinstance(rec, SequenceRecord):
            raise DataError(f"Record #{index} passed to write_dataset is a {type(rec).__name__}, not a SequenceRecord.")
        if not isinstance(rec.id, str) or not rec.id:
            raise DataError(f"Record #{index} has an invalid id {rec.id!r}; expected a non-empty string.")
        where = f"Sample {rec.id!r}"
        if rec.id in self.seen:
            raise DataError(f"{where} (record #{index}): duplicate id; every sample id must be unique.")
        self.seen.add(rec.id)
        for attr in ("group", "split"):
            v = getattr(rec, attr)
            if not isinstance(v, str) or not v:
                raise DataError(f"{where}: the {attr} must be a non-empty string. Got {v!r}.")
        if not isinstance(rec.values, Mapping) or not isinstance(rec.masks, Mapping):
            raise DataError(f"{where}: 'values' and 'masks' must be dicts keyed by modality name.")
        unknown = sorted(set(rec.values) - set(self.modalities)) + sorted(set(rec.masks) - set(self.modalities))
        if unknown:
            raise DataError(
                f"{where}: unknown modality {unknown[0]!r}; the data set declares {sorted(self.modalities)}."
            )
        n_steps: int | None = None
        values: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        for name, spec in self.modalities.items():
            if name not in rec.values:
                raise DataError(
                    f"{where}: modality {name!r} is missing from 'values'. A modality absent from a whole sample "
                    "is written as zeros of shape [T, D] with an all-False mask."
                )
            v = np.asarray(rec.values[name])
            if v.dtype == bool or not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
                raise DataError(f"{where}, modality {name!r}: values must be numeric. Got dtype {v.dtype}.")
            if v.ndim != 2 or v.shape[1] != spec.dim:
                raise DataError(
                    f"{where}, modality {name!r}: values must have shape [T, {spec.dim}]. Got {tuple(v.shape)}."
                )
            t = int(v.shape[0])
            if t == 0:
                raise DataError(f"{where}, modality {name!r}: the sequence is empty (T = 0).")
            if n_steps is None:
                n_steps = t
            elif t != n_steps:
                raise DataError(
                    f"{where}, modality {name!r}: has {t} steps but the other modalities have {n_steps}; "
                    "the modalities of a sample must be aligned to one timeline."
                )
            if name in rec.masks:
                mk = np.asarray(rec.masks[name])
                if mk.dtype != bool:
                    raise DataError(f"{where}, modality {name!r}: the mask must be a bool array. Got {mk.dtype}.")
                if mk.shape != (t,):
                    raise DataError(
                        f"{where}, modality {name!r}: the mask has shape {tuple(mk.shape)} but the values have "
                        f"{t} steps; expected ({t},)."
                    )
            else:
                mk = np.ones(t, dtype=bool)
            v32 = v.astype(np.float32)
            bad = ~np.isfinite(v32).all(axis=1) & mk
            if bad.any():
                step = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{where}, modality {name!r}, step {step}: the values are not finite (NaN or inf) at a step "
                    "marked present. Mark the step missing (mask False) or fix the value."
                )
            if spec.kind == "tokens" and (not_ids := invalid_token_rows(v32, mk)).size:
                raise DataError(
                    f"{where}, modality {name!r} (kind 'tokens'), step {int(not_ids[0])}: the values must be token "
                    f"ids, whole numbers in [0, {MAX_TOKEN_ID}]. Got {v32[not_ids[0]][:8].tolist()} (first 8)."
                )
            values[name] = np.where(mk[:, None], v32, np.float32(0.0))
            masks[name] = mk
        assert n_steps is not None  # at least one modality is declared (checked by write_dataset)
        label = _check_label(rec.label, self.task, n_steps, where)
        ts: np.ndarray | None = None
        if rec.timestamps is not None:
            ts = np.asarray(rec.timestamps, dtype=np.float64)
            if ts.shape != (n_steps,):
                raise DataError(f"{where}: timestamps must have shape ({n_steps},). Got {tuple(ts.shape)}.")
            if not np.isfinite(ts).all():
                step = int(np.flatnonzero(~np.isfinite(ts))[0])
                raise DataError(f"{where}, step {step}: the timestamp is not finite.")
            dec = np.flatnonzero(np.diff(ts) <= 0)
            if dec.size:
                raise DataError(f"{where}, step {int(dec[0]) + 1}: timestamps must be strictly increasing.")
        if self.has_timestamps is None:
            self.has_timestamps = ts is not None
        elif self.has_timestamps != (ts is not None):
            raise DataError(
                f"{where}: {'has' if ts is not None else 'lacks'} timestamps while earlier records "
                f"{'lack' if ts is not None else 'have'} them; give timestamps for all records or none."
            )
        ctx = rec.context or {}
        if not isinstance(ctx, Mapping):
            raise DataError(f"{where}: context must be a dict of name -> str. Got {type(ctx).__name__}.")
        keys = tuple(sorted(ctx))
        if self.context_keys is None:
            self.context_keys = keys
            self.context_values = {k: set() for k in keys}
        elif keys != self.context_keys:
            raise DataError(
                f"{where}: context keys {list(keys)} differ from those of earlier records {list(self.context_keys)}."
            )
        for k in keys:
            if not isinstance(k, str) or not k or not isinstance(ctx[k], str):
                raise DataError(f"{where}: context {k!r} must map a non-empty str name to a str. Got {ctx[k]!r}.")
            self.context_values[k].add(ctx[k])
        return n_steps, values, masks, label, ts


# --------------------------------------------------------------------------------------------------------------
# writing


class _TableSink:
    """Buffers columns and writes them as Parquet row groups with one ParquetWriter."""

    def __init__(self, path: Path, schema: pa.Schema, flush_rows: int) -> None:
        self.path = path
        self.schema = schema
        self.flush_rows = flush_rows
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.buffers: dict[str, list[Any]] = {f.name: [] for f in schema}
        self.pending = 0
        self.rows = 0

    def add(self, n: int, **cols: Any) -> None:
        for k, v in cols.items():
            self.buffers[k].append(v)
        self.pending += n
        if self.pending >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        arrays = []
        for f in self.schema:
            parts = self.buffers[f.name]
            arrays.append(_build_column(f.type, parts))
            self.buffers[f.name] = []
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows += self.pending
        self.pending = 0

    def close(self) -> int:
        self.flush()
        self.writer.close()
        return self.rows

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def _build_column(dtype: pa.DataType, parts: list[Any]) -> pa.Array:
    if pa.types.is_fixed_size_list(dtype):
        flat = np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1) for p in parts])  # [rows*width]
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), dtype.list_size)
    if pa.types.is_string(dtype):
        return pa.array(parts, type=dtype)
    if isinstance(parts[0], np.ndarray) and parts[0].ndim >= 1:
        return pa.array(np.concatenate(parts), type=dtype)
    return pa.array(np.asarray(parts), type=dtype)


_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"
_OS_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def _write_error(target: Path, exc: OSError, overwrite: bool) -> DataError:
    """A DataError that says why the data set could not be written, and that nothing was."""
    reason = _OS_REASONS.get(exc.errno or -1) or exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    kept = f"; the existing data set at {target} is unchanged" if overwrite and target.exists() else ""
    return DataError(
        f"Cannot write the data set {target}: {reason}{where} [{type(exc).__name__}: {exc}]. Nothing was written{kept}."
    )


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace the data set ``target`` by the complete one in ``tmp``: two renames through ``.NAME.old-PID-*``.

    A crash between the renames leaves ``target`` absent and the old data set in ``.NAME.old-PID-*/old``;
    :func:`recover_interrupted_write` (run by the next write) puts it back.
    """
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}{_OLD_TAG}{os.getpid()}-", dir=target.parent))
    os.replace(target, trash / "old")
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(trash / "old", target)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def _leftover_owner(entry: Path, prefix: str) -> int | None:
    """The process id written into a leftover's name (``.NAME.tmp-PID-XXXX``), or None when it has none."""
    head = entry.name[len(prefix) :].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill would terminate the process there: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def recover_interrupted_write(path: str | os.PathLike[str]) -> list[str]:
    """Clean up after a :func:`write_dataset` of ``path`` that was killed, and finish an interrupted overwrite.

    A killed write leaves its temporary directory ``.NAME.tmp-PID-XXXX`` beside ``path``: it is deleted. A write
    killed between the two renames of ``overwrite=True`` leaves ``path`` absent and the old data set in
    ``.NAME.old-PID-XXXX/old``: it is moved back to ``path`` (the write is rolled back), or deleted when
    ``path`` holds the new data set (the swap had finished). Leftovers of a process that still runs are left
    alone; so are leftovers whose name carries no process id (written by an older mmfuse), which are only
    reported. :func:`write_dataset` calls this first.

    Returns:
        What was done, one line per leftover (also logged as warnings).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> (d / ".ds.tmp-999999999-abcd").mkdir()
        >>> recover_interrupted_write(d / "ds")[0].startswith("removed the temporary directory")
        True
    """
    target = Path(path)
    parent = target.parent
    done: list[str] = []
    if not parent.is_dir():
        return done
    olds = sorted(p for p in parent.iterdir() if p.name.startswith(f".{target.name}{_OLD_TAG}"))
    tmps = sorted(p for p in parent.iterdir() if p.name.startswith(f".{target.name}{_TMP_TAG}"))
    for entry, prefix in [(p, f".{target.name}{_OLD_TAG}") for p in olds] + [
        (p, f".{target.name}{_TMP_TAG}") for p in tmps
    ]:
        pid = _leftover_owner(entry, prefix)
        if pid is None:
            done.append(f"left alone {entry}: the leftover of an interrupted write by an older mmfuse; delete it")
            continue
        if _alive(pid):
            continue
        old = entry / "old"
        if prefix.endswith(_OLD_TAG) and old.is_dir() and not (target.exists() or target.is_symlink()):
            os.replace(old, target)
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"restored the data set {target} from {entry}: an overwrite was interrupted (rolled back)")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            what = "an overwrite's old copy" if prefix.endswith(_OLD_TAG) else "the temporary directory"
            done.append(f"removed {what} {entry} left by an interrupted write (process {pid})")
    for line in done:
        log.warning("%s", line)
        warnings.warn(line, MmfuseWarning, stacklevel=3)
    return done


def write_dataset(
    path: str | os.PathLike[str],
    records: Iterable[SequenceRecord],
    *,
    name: str,
    modalities: Sequence[ModalitySpec],
    task: TaskSpec,
    description: str = "",
    extra_meta: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Validate ``records`` and write them as an mmfuse data set directory at ``path``, atomically.

    Records are streamed: only a bounded buffer of steps, the set of ids and the context values are held in
    memory. The data set is built in a temporary directory next to ``path``, flushed to disk and renamed into
    place, so ``path`` either holds the complete data set or is untouched (also when a record is rejected
    midway). Values at steps whose mask is False are stored as zero (they may be NaN on the way in). A record
    must give every declared modality; a modality absent from a whole sample is given as zeros with an
    all-False mask. A missing ``masks`` entry means the modality is present at every step.

    Args:
        path: Target directory.
        records: The samples, in the order they are stored.
        name: Data set name (stored in ``meta.json``).
        modalities: The modality specs; every record must give exactly these modalities.
        task: Label type and level.
        description: Free text.
        extra_meta: JSON-serialisable extra metadata, stored as ``meta.json["extra_meta"]``.
        overwrite: Replace an existing mmfuse data set at ``path``. Without it an existing path is refused.
        extra_files: File name -> text of further files of the data set folder (a validation report), written
            inside the same atomic unit.

    Returns:
        The path of the written data set.

    Raises:
        DataError: a record is invalid (the message names the sample id, modality and step), ``path``
            exists and ``overwrite`` is False (or it exists and is not an mmfuse data set), or the disk is full,
            read-only or not writable (nothing is written then; an overwritten data set is kept).

    Example:
        >>> import tempfile, numpy as np
        >>> rec = SequenceRecord("a", "g", "train", {"x": np.ones((4, 2), np.float32)}, {"x": np.ones(4, bool)}, 1)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     out = write_dataset(f"{tmp}/toy", [rec], name="toy", modalities=[ModalitySpec("x", 2)],
        ...                         task=TaskSpec("classification", "sample", ("a", "b")))
        ...     len(open_dataset(out))
        1
    """
    target = Path(path)
    if not isinstance(name, str) or not name:
        raise ValueError(f"The 'name' parameter of write_dataset must be a non-empty string. Got {name!r}.")
    if not isinstance(task, TaskSpec):
        raise TypeError(f"The 'task' parameter of write_dataset must be a TaskSpec. Got {type(task).__name__}.")
    specs = sorted(modalities, key=lambda m: m.name) if modalities else []
    if not specs or not all(isinstance(m, ModalitySpec) for m in specs):
        raise ValueError("The 'modalities' parameter of write_dataset must be a non-empty sequence of ModalitySpec.")
    if len({m.name for m in specs}) != len(specs):
        raise ValueError(f"The 'modalities' parameter of write_dataset repeats a name: {[m.name for m in specs]}.")
    extra = dict(extra_meta or {})
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The 'extra_meta' parameter of write_dataset must be JSON-serialisable: {exc}") from None
    files = dict(extra_files or {})
    for fname, text in files.items():
        if (
            not isinstance(fname, str)
            or not isinstance(text, str)
            or fname in (_META, _SAMPLES, _STEPS, "modalities")
            or Path(fname).name != fname
            or fname.startswith(".")
        ):
            raise ValueError(
                "The 'extra_files' parameter of write_dataset maps plain file names (not meta.json, samples.parquet, "
                f"steps.parquet or modalities) to text. Got {fname!r}."
            )
    recover_interrupted_write(target)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise DataError(f"{target} already exists; pass overwrite=True to replace it.")
        if not (target.is_dir() and ((target / _META).is_file() or not any(target.iterdir()))):
            raise DataError(f"{target} exists and is not an mmfuse data set (no {_META}); refusing to overwrite it.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_TAG}{os.getpid()}-", dir=target.parent))
    except OSError as exc:
        raise _write_error(target, exc, overwrite) from exc
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a data set directory is as readable as a normal one
        meta = _write_into(tmp, records, name, specs, task, description, extra)
        meta[_META_SHA] = _meta_digest(meta)
        for fname, text in sorted(files.items()):
            with open(tmp / fname, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        with open(tmp / _META, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2, sort_keys=False)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp / "modalities")
        _fsync_dir(tmp)
        if overwrite and target.exists():
            _swap_in(tmp, target)
        else:
            try:
                os.replace(tmp, target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # another writer created a non-empty target meanwhile: theirs is kept
                raise DataError(
                    f"{target} was created by another writer while this data set was being written; theirs is kept "
                    "and this one was discarded. Pass overwrite=True to replace it."
                ) from None
        _fsync_dir(target.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, DataError):
            raise _write_error(target, exc, overwrite) from exc
        raise
    log.info("wrote data set %r (%d samples) to %s", name, meta["num_samples"], target)
    return target


def _write_into(
    tmp: Path,
    records: Iterable[SequenceRecord],
    name: str,
    specs: list[ModalitySpec],
    task: TaskSpec,
    description: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    from mmfuse._version import __version__

    (tmp / "modalities").mkdir()
    validator = _Validator(specs, task)
    step_level = task.level is LabelLevel.STEP
    mod_sinks = {
        m.name: _TableSink(
            tmp / _modality_file(m.name),
            pa.schema([("values", pa.list_(pa.float32(), m.dim)), ("present", pa.bool_())]),
            _FLUSH_STEPS,
        )
        for m in specs
    }
    sinks: list[_TableSink] = list(mod_sinks.values())
    sample_sink: _TableSink | None = None
    step_sink: _TableSink | None = None
    offset = 0
    n = 0
    split_counts: dict[str, int] = {}
    try:
        for i, rec in enumerate(records):
            t, values, masks, label, ts = validator.check(rec, i)
            if sample_sink is None:
                fields = [
                    ("id", pa.string()),
                    ("group", pa.string()),
                    ("split", pa.string()),
                    ("n_steps", pa.int64()),
                    ("offset", pa.int64()),
                ]
                if not step_level:
                    fields.append(("label", _label_type(task)))
                fields += [(_CTX_PREFIX + k, pa.string()) for k in validator.context_keys or ()]
                sample_sink = _TableSink(tmp / _SAMPLES, pa.schema(fields), _FLUSH_SAMPLES)
                sinks.append(sample_sink)
                step_fields = []
                if validator.has_timestamps:
                    step_fields.append(("timestamp", pa.float64()))
                if step_level:
                    step_fields.append(("label", _label_type(task)))
                if step_fields:
                    step_sink = _TableSink(tmp / _STEPS, pa.schema(step_fields), _FLUSH_STEPS)
                    sinks.append(step_sink)
            for m, sink in mod_sinks.items():
                sink.add(t, values=values[m], present=masks[m])
            cols: dict[str, Any] = {
                "id": rec.id,
                "group": rec.group,
                "split": rec.split,
                "n_steps": t,
                "offset": offset,
            }
            if not step_level:
                cols["label"] = label if label.ndim else label.item()
            for k in validator.context_keys or ():
                cols[_CTX_PREFIX + k] = rec.context[k]
            sample_sink.add(1, **cols)
            if step_sink is not None:
                step_cols: dict[str, Any] = {}
                if ts is not None:
                    step_cols["timestamp"] = ts
                if step_level:
                    step_cols["label"] = label
                step_sink.add(t, **step_cols)
            offset += t
            n += 1
            split_counts[rec.split] = split_counts.get(rec.split, 0) + 1
        if n == 0:
            raise DataError(f"write_dataset got no records for data set {name!r}; a data set needs at least one.")
        assert sample_sink is not None
        files: dict[str, dict[str, Any]] = {}
        for sink in sinks:
            rows = sink.close()
            _fsync_file(sink.path)
            files[sink.path.relative_to(tmp).as_posix()] = {"rows": rows, "sha256": _sha256(sink.path)}
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "modalities": [m.to_dict() for m in specs],
        "task": task.to_dict(),
        "num_samples": n,
        "num_steps": offset,
        "splits": dict(sorted(split_counts.items())),
        "has_timestamps": bool(validator.has_timestamps),
        "context": {k: sorted(v) for k, v in sorted(validator.context_values.items())},
        "files": files,
        "mmfuse_version": __version__,
        "extra_meta": extra,
    }


# --------------------------------------------------------------------------------------------------------------
# reading


def _fixed_list_to_numpy(col: pa.ChunkedArray, width: int, dtype: Any) -> np.ndarray:
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    flat = arr.flatten().to_numpy(zero_copy_only=False)  # [rows*width]
    return np.asarray(flat, dtype=dtype).reshape(-1, width)  # [rows, width]


class _Store:
    """Everything read from one data set directory; per-step arrays are loaded on first use and cached.

    Opening checks what is cheap: ``meta.json`` against its own checksum and schema, and ``samples.parquet``
    (ids unique, labels in range for the task, splits and context as ``meta.json`` records them). A modality's
    arrays, and ``steps.parquet``, are checked (vectorised) when first loaded: the stored width and type, present
    values finite, masked values zero, timestamps strictly increasing within each sample, step labels in range.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = self._read_meta()
        meta_path = root / _META
        try:
            self.modalities = _meta_modalities(self.meta["modalities"], meta_path)
            self.task = TaskSpec.from_dict(self.meta["task"])
            self.context_vocab: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in self.meta["context"].items()}
            self.files: dict[str, dict[str, Any]] = dict(self.meta["files"])
            self.num_samples = _meta_count(self.meta, "num_samples", meta_path, minimum=1)
            self.num_steps = _meta_count(self.meta, "num_steps", meta_path, minimum=self.num_samples)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{meta_path} is malformed: {exc!r}.") from None
        self._check_meta_layout(meta_path)
        table = self._read_table(_SAMPLES, self.num_samples)
        try:
            self.ids: list[str] = table.column("id").to_pylist()
            self.groups: list[str] = table.column("group").to_pylist()
            self.splits: list[str] = table.column("split").to_pylist()
            self.n_steps = table.column("n_steps").to_numpy().astype(np.int64)
            self.offsets = table.column("offset").to_numpy().astype(np.int64)
            self.context = {k: table.column(_CTX_PREFIX + k).to_pylist() for k in self.context_vocab}
            self.sample_labels: np.ndarray | None = None
            if self.task.level is LabelLevel.SAMPLE:
                self._check_label_type(table.schema.field("label").type, root / _SAMPLES)
                self.sample_labels = self._label_numpy(table.column("label"))
        except DataError:
            raise
        except KeyError as exc:
            raise DataError(
                f"{root / _SAMPLES} lacks a column this data set needs ({exc.args[0]}); its columns: "
                f"{table.column_names}."
            ) from None
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DataError(f"{root / _SAMPLES} holds a column of the wrong type: {exc}.") from None
        expected = np.concatenate([[0], np.cumsum(self.n_steps)[:-1]]) if self.num_samples else self.offsets
        if (
            (self.n_steps <= 0).any()
            or not np.array_equal(self.offsets, expected)
            or int(self.n_steps.sum()) != self.num_steps
        ):
            raise DataError(f"{root / _SAMPLES}: the n_steps/offset columns are inconsistent with {_META}.")
        self._check_samples()
        self._modality_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._steps_cache: tuple[np.ndarray | None, np.ndarray | None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_modality_cache"] = {}
        state["_steps_cache"] = None
        return state

    def _read_meta(self) -> dict[str, Any]:
        path = self.root / _META
        if not self.root.is_dir():
            parent = self.root.parent
            asides = sorted(parent.glob(f".{self.root.name}{_OLD_TAG}*/old")) if parent.is_dir() else []
            hint = (
                f" An overwrite of it was interrupted: the previous data set is in {asides[0]}; the next "
                "write_dataset or mmfuse align of this path puts it back (recover_interrupted_write)."
                if asides
                else ""
            )
            raise DataError(f"{self.root} is not a directory holding an mmfuse data set.{hint}")
        try:
            with open(path, encoding="utf-8") as fh:
                meta = json.load(fh)
        except FileNotFoundError:
            raise DataError(
                f"{path} is missing; {self.root} is not an mmfuse data set (or was not fully written)."
            ) from None
        except RecursionError:
            raise DataError(f"{path} cannot be read as JSON: it is nested too deeply.") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} cannot be read as JSON: {exc}.") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise DataError(f"{path} does not describe an mmfuse data set (expected format {FORMAT_NAME!r}).")
        version = meta.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise DataError(f"{path} has format_version {version!r}; this mmfuse reads versions 1..{FORMAT_VERSION}.")
        if version >= 2:
            recorded = meta.get(_META_SHA)
            if not isinstance(recorded, str) or recorded != _meta_digest(meta):
                raise DataError(
                    f"{path} was modified after the data set was written: its content does not match the checksum "
                    f"recorded in its {_META_SHA!r} entry ({str(recorded)[:12]}...). Restore it, or write the data "
                    "set again."
                )
        else:
            log.warning("%s is format version 1: its metadata is not covered by a checksum (written before 2).", path)
        return meta

    def _check_meta_layout(self, path: Path) -> None:
        """The cheap consistency of ``meta.json`` with itself: file list, has_timestamps, splits, context."""
        meta = self.meta
        has_ts = meta.get("has_timestamps")
        if not isinstance(has_ts, bool):
            raise DataError(f"{path}: 'has_timestamps' must be true or false. Got {has_ts!r}.")
        needed = {_SAMPLES, *(_modality_file(m) for m in self.modalities)}
        if has_ts or self.task.level is LabelLevel.STEP:
            needed.add(_STEPS)
        listed = set(self.files)
        if listed != needed:
            raise DataError(
                f"{path}: 'files' lists {sorted(listed)} but the modalities, task and has_timestamps recorded there "
                f"need {sorted(needed)}."
            )
        for rel, info in self.files.items():
            if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
                raise DataError(f"{path}: the entry of {rel!r} in 'files' needs 'rows' and 'sha256'. Got {info!r}.")
            rows = info.get("rows")
            want = self.num_samples if rel == _SAMPLES else self.num_steps
            if isinstance(rows, bool) or not isinstance(rows, int) or rows != want:
                what = "num_samples" if rel == _SAMPLES else "num_steps"
                raise DataError(f"{path}: 'files' gives {rel!r} {rows!r} rows but {what} is {want}.")
        splits = meta.get("splits")
        if not isinstance(splits, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in splits.values()
        ):
            raise DataError(f"{path}: 'splits' must map split names to sample counts. Got {splits!r}.")
        for k, vocab in self.context_vocab.items():
            if not all(isinstance(v, str) for v in vocab) or list(vocab) != sorted(set(vocab)):
                raise DataError(f"{path}: the context vocabulary of {k!r} must be sorted distinct strings.")

    def _check_samples(self) -> None:
        """Check ids (unique, non-empty), splits (as recorded), labels (in range) and context (in the vocabularies)."""
        path = self.root / _SAMPLES
        for attr in ("ids", "groups", "splits"):
            bad = next((i for i, v in enumerate(getattr(self, attr)) if not isinstance(v, str) or not v), None)
            if bad is not None:
                raise DataError(f"{path}: row {bad} has an empty {attr[:-1]} {getattr(self, attr)[bad]!r}.")
        if len(set(self.ids)) != len(self.ids):
            seen: dict[str, int] = {}
            for i, sid in enumerate(self.ids):
                if sid in seen:
                    raise DataError(f"{path}: the sample id {sid!r} appears twice (rows {seen[sid]} and {i}).")
                seen[sid] = i
        counts: dict[str, int] = {}
        for s in self.splits:
            counts[s] = counts.get(s, 0) + 1
        if dict(sorted(counts.items())) != dict(sorted(self.meta["splits"].items())):
            raise DataError(
                f"{self.root / _META}: 'splits' records {dict(sorted(self.meta['splits'].items()))} but "
                f"{_SAMPLES} holds {dict(sorted(counts.items()))}."
            )
        if self.sample_labels is not None:
            self._check_labels(self.sample_labels, path, step=False)
        for k, values in self.context.items():
            vocab = set(self.context_vocab[k])
            bad = next((i for i, v in enumerate(values) if v not in vocab), None)
            if bad is not None:
                raise DataError(
                    f"{path}: row {bad} has context {k!r} = {values[bad]!r}, which is not in the vocabulary recorded "
                    f"in {_META} {list(self.context_vocab[k])}."
                )

    def _check_label_type(self, dtype: pa.DataType, path: Path) -> None:
        want = _label_type(self.task)
        if dtype != want:
            raise DataError(
                f"{path}: the label column has type {dtype}, but the task recorded in {_META} "
                f"({self.task.type.value}, {self.task.out_dim} output(s)) is stored as {want}."
            )

    def _check_labels(self, labels: np.ndarray, path: Path, *, step: bool) -> None:
        """Class indices in 0..C-1 (IGNORE_INDEX allowed per step), regression targets finite (NaN rows per step)."""
        what = "step" if step else "row"
        if self.task.type is TaskType.CLASSIFICATION:
            n = len(self.task.class_names)
            bad = (labels < 0) | (labels >= n)
            if step:
                bad &= labels != IGNORE_INDEX
            at = np.flatnonzero(bad)
            if at.size:
                raise DataError(
                    f"{path}: {what} {int(at[0])} holds class index {int(labels[at[0]])}; the task recorded in {_META} "
                    f"has {n} classes {list(self.task.class_names)}, so a label is 0..{n - 1}"
                    + (f" or {IGNORE_INDEX} (unlabelled)." if step else ".")
                )
            return
        finite = np.isfinite(labels) if labels.ndim == 1 else np.isfinite(labels).all(axis=1)  # [N]
        if step:  # NaN in every component marks an unlabelled step
            finite |= np.isnan(labels) if labels.ndim == 1 else np.isnan(labels).all(axis=1)
        at = np.flatnonzero(~finite)
        if at.size:
            raise DataError(f"{path}: {what} {int(at[0])} holds a regression target that is not finite (NaN or inf).")

    def _read_table(self, rel: str, rows: int) -> pa.Table:
        path = self.root / rel
        info = self.files.get(rel)
        if info is None:
            raise DataError(f"{self.root / _META} does not list the file {rel!r}.")
        if not path.is_file():
            raise DataError(f"{path} is missing from the data set.")
        digest = _sha256(path)
        if digest != info.get("sha256"):
            raise DataError(
                f"{path} is corrupt or was modified: its sha256 {digest[:12]}... does not match the one recorded "
                f"in {_META} ({str(info.get('sha256'))[:12]}...)."
            )
        try:
            table = pq.read_table(path, memory_map=True)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path} is not a readable Parquet file: {exc}.") from None
        if table.num_rows != rows:
            raise DataError(f"{path} has {table.num_rows} rows; {_META} records {rows}.")
        return table

    def _label_numpy(self, col: pa.ChunkedArray, path: Path | None = None) -> np.ndarray:
        if col.null_count:
            import pyarrow.compute as pc

            row = int(pc.index(pc.is_null(col), True).as_py())
            where = path or self.root / _SAMPLES
            raise DataError(f"{where}: the label of row {row} is missing (null); every label must be stored.")
        if self.task.type is TaskType.CLASSIFICATION:
            return col.to_numpy().astype(np.int64)
        if self.task.target_dim == 1:
            return col.to_numpy().astype(np.float32)
        return _fixed_list_to_numpy(col, self.task.target_dim, np.float32)

    def modality(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        cached = self._modality_cache.get(name)
        if cached is None:
            cached = self._load_modality(name)
            self._modality_cache[name] = cached
            log.debug("loaded modality %r of %s", name, self.root)
        return cached

    def _load_modality(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        spec = self.modalities[name]
        rel = _modality_file(name)
        path = self.root / rel
        table = self._read_table(rel, self.num_steps)
        want = pa.schema([("values", pa.list_(pa.float32(), spec.dim)), ("present", pa.bool_())])
        if not table.schema.remove_metadata().equals(want):
            got = ", ".join(f"{f.name}: {f.type}" for f in table.schema)
            raise DataError(
                f"{path} does not hold modality {name!r} as {_META} records it ([values, present] of width "
                f"{spec.dim}): it holds [{got}]. Was a modality file swapped with another?"
            )
        if table.column("present").null_count or table.column("values").null_count:
            raise DataError(f"{path}: the values or present column has missing (null) entries.")
        values = _fixed_list_to_numpy(table.column("values"), spec.dim, np.float32)  # [S, D]
        present = table.column("present").to_numpy().astype(bool)  # [S]
        # A row's sum is finite when all its values are (one pass, [S] memory); the exact test runs only on the
        # rows it flags (a sum can also overflow to inf from large finite values).
        with np.errstate(over="ignore", invalid="ignore"):
            flagged = np.flatnonzero(~np.isfinite(values.sum(axis=1, dtype=np.float32)))
        bad = flagged[present[flagged] & ~np.isfinite(values[flagged]).all(axis=1)]
        if bad.size:
            raise DataError(
                f"{path}: {self._where(int(bad[0]))} is marked present but its values are not finite (NaN or inf)."
            )
        if spec.kind == "tokens" and (not_ids := invalid_token_rows(values, present)).size:
            raise DataError(
                f"{path}: {self._where(int(not_ids[0]))} of the 'tokens' modality {name!r} holds values that are not "
                f"token ids (whole numbers in [0, {MAX_TOKEN_ID}])."
            )
        missing = np.flatnonzero(~present)
        bad = missing[(values[missing] != 0).any(axis=1)]
        if bad.size:
            raise DataError(f"{path}: {self._where(int(bad[0]))} is marked missing but its values are not zero.")
        return values, present

    def _where(self, row: int) -> str:
        """``step k of sample 'id'`` for a row of the per-step files."""
        i = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return f"step {row - int(self.offsets[i])} of sample {self.ids[i]!r} (row {row})"

    def steps(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self._steps_cache is None:
            ts: np.ndarray | None = None
            labels: np.ndarray | None = None
            if _STEPS in self.files:
                path = self.root / _STEPS
                table = self._read_table(_STEPS, self.num_steps)
                names = set(table.column_names)
                want = {"timestamp"} if self.meta["has_timestamps"] else set()
                if self.task.level is LabelLevel.STEP:
                    want.add("label")
                if names != want:
                    raise DataError(
                        f"{path} holds the columns {sorted(names)}; has_timestamps and the task recorded in {_META} "
                        f"need {sorted(want)}."
                    )
                if "timestamp" in names:
                    if table.schema.field("timestamp").type != pa.float64():
                        raise DataError(f"{path}: the timestamp column must be float64.")
                    ts = table.column("timestamp").to_numpy().astype(np.float64)
                    self._check_timestamps(ts, path)
                if "label" in names:
                    self._check_label_type(table.schema.field("label").type, path)
                    try:
                        labels = self._label_numpy(table.column("label"), path)
                    except (ValueError, TypeError, pa.ArrowException) as exc:
                        raise DataError(f"{path}: the step labels cannot be read: {exc}") from None
                    self._check_labels(labels, path, step=True)
            self._steps_cache = (ts, labels)
        return self._steps_cache

    def _check_timestamps(self, ts: np.ndarray, path: Path) -> None:
        bad = np.flatnonzero(~np.isfinite(ts))
        if bad.size:
            raise DataError(f"{path}: the timestamp of {self._where(int(bad[0]))} is not finite.")
        rising = np.diff(ts) > 0  # [S-1]
        rising[self.offsets[1:] - 1] = True  # a new sample may start earlier
        bad = np.flatnonzero(~rising)
        if bad.size:
            raise DataError(f"{path}: the timestamps are not strictly increasing at {self._where(int(bad[0]) + 1)}.")


def _meta_modalities(entries: Any, path: Path) -> dict[str, ModalitySpec]:
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: 'modalities' must be a non-empty list of modality specs. Got {entries!r}.")
    specs = [ModalitySpec.from_dict(m) for m in entries]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: 'modalities' repeats a name: {names}.")
    return {s.name: s for s in sorted(specs, key=lambda s: s.name)}


def _meta_count(meta: Mapping[str, Any], key: str, path: Path, *, minimum: int) -> int:
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{path}: {key!r} must be an integer >= {minimum}. Got {value!r}.")
    return value


class MultimodalDataset(torch.utils.data.Dataset[SequenceRecord]):
    """A lazily loaded mmfuse data set, or a view (split, subset, transform) of one.

    Built by :func:`open_dataset`; views share the loaded arrays. ``__getitem__`` returns a
    :class:`SequenceRecord` holding copies, so a transform may modify it in place.

    Attributes:
        name: Data set name.
        description: Free text.
        modalities: Modality name -> :class:`ModalitySpec`, sorted by name.
        task: The :class:`TaskSpec`.
        ids: Sample ids of this view.
        groups: Sample groups of this view.
        splits: Split name of each sample of this view.
        context_vocab: Context name -> sorted vocabulary (index = the code :func:`collate` gives).
        extra_meta: The ``extra_meta`` dict given to :func:`write_dataset`.
        path: The data set directory.

    Example:
        >>> from mmfuse.data import load_dataset
        >>> ds = load_dataset("basic-motions")
        >>> train = ds.split("train")
        >>> values, mask = train.stacked("gyroscope")
        >>> values.shape[1], len(train[0])
        (3, 100)
    """

    def __init__(
        self,
        store: _Store,
        indices: np.ndarray | None = None,
        transforms: tuple[Callable[[SequenceRecord], SequenceRecord], ...] = (),
    ) -> None:
        self._store = store
        self._indices = np.arange(store.num_samples) if indices is None else np.asarray(indices, dtype=np.int64)
        self._transforms = transforms
        self.name: str = store.meta["name"]
        self.description: str = store.meta.get("description", "")
        self.modalities: dict[str, ModalitySpec] = dict(store.modalities)
        self.task: TaskSpec = store.task
        self.context_vocab: dict[str, tuple[str, ...]] = dict(store.context_vocab)
        self.extra_meta: dict[str, Any] = dict(store.meta.get("extra_meta", {}))
        self.path: Path = store.root
        self.ids: list[str] = [store.ids[i] for i in self._indices]
        self.groups: list[str] = [store.groups[i] for i in self._indices]
        self.splits: list[str] = [store.splits[i] for i in self._indices]

    def __len__(self) -> int:
        return int(self._indices.shape[0])

    def __repr__(self) -> str:
        return (
            f"MultimodalDataset(name={self.name!r}, samples={len(self)}, modalities={list(self.modalities)}, "
            f"task={self.task.type.value}/{self.task.level.value})"
        )

    @property
    def split_names(self) -> list[str]:
        """The split names of the whole data set, sorted."""
        return sorted(set(self._store.splits))

    @property
    def lengths(self) -> np.ndarray:
        """``[len(self)]`` int64: number of steps of each sample of this view."""
        return self._store.n_steps[self._indices].copy()

    @property
    def sample_labels(self) -> np.ndarray:
        """Sample-level labels of this view (``[N]`` or ``[N, C]``), without loading any modality.

        Raises:
            DataError: the data set has step-level labels.
        """
        if self._store.sample_labels is None:
            raise DataError(f"Data set {self.name!r} has step-level labels; sample_labels is for sample-level ones.")
        return self._store.sample_labels[self._indices].copy()

    def __getitem__(self, index: int) -> SequenceRecord:
        """Return sample ``index`` of this view as a :class:`SequenceRecord` (after the transforms)."""
        n = len(self)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"MultimodalDataset indices must be integers. Got {type(index).__name__}.")
        if not -n <= index < n:
            raise IndexError(f"Index {index} is out of range for a data set of {n} samples.")
        s = self._store
        i = int(self._indices[index])
        lo = int(s.offsets[i])
        hi = lo + int(s.n_steps[i])
        values: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        for m in self.modalities:
            v, p = s.modality(m)
            values[m] = v[lo:hi].copy()
            masks[m] = p[lo:hi].copy()
        ts, step_labels = s.steps()
        label: Any
        if s.sample_labels is not None:
            lab = s.sample_labels[i]
            label = lab.copy() if lab.ndim else lab.item()
        else:
            assert step_labels is not None
            label = step_labels[lo:hi].copy()
        rec = SequenceRecord(
            id=s.ids[i],
            group=s.groups[i],
            split=s.splits[i],
            values=values,
            masks=masks,
            label=label,
            timestamps=None if ts is None else ts[lo:hi].copy(),
            context={k: s.context[k][i] for k in s.context},
        )
        for fn in self._transforms:
            rec = fn(rec)
        return rec

    def split(self, name: str) -> MultimodalDataset:
        """Return a view of the samples of this view in split ``name``.

        Raises:
            ValueError: ``name`` is not a split of the data set (the message lists the valid ones).
        """
        if name not in set(self._store.splits):
            raise ValueError(f"Unknown split {name!r} of data set {self.name!r}. Valid splits: {self.split_names}.")
        keep = [k for k, sp in enumerate(self.splits) if sp == name]
        return MultimodalDataset(self._store, self._indices[keep], self._transforms)

    def subset(self, indices: Sequence[int] | np.ndarray) -> MultimodalDataset:
        """Return a view of the samples at ``indices`` (positions in this view; negative ones count from the end).

        Raises:
            IndexError: an index is out of range.
        """
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
            raise TypeError("The 'indices' parameter of MultimodalDataset.subset must be a 1-D sequence of integers.")
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"The 'indices' parameter of subset has values outside [-{n}, {n}).")
        return MultimodalDataset(self._store, self._indices[idx % max(n, 1)], self._transforms)

    def with_transform(self, fn: Callable[[SequenceRecord], SequenceRecord]) -> MultimodalDataset:
        """Return a view whose records pass through ``fn`` (after any earlier transforms)."""
        if not callable(fn):
            raise TypeError(f"The 'fn' parameter of with_transform must be callable. Got {type(fn).__name__}.")
        return MultimodalDataset(self._store, self._indices, (*self._transforms, fn))

    def stacked(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """Return all steps of this view for one modality, for fitting normalisers.

        Transforms are not applied (this reads the stored arrays directly).

        Returns:
            ``([S, D] float32 values, [S] bool mask)`` where ``S`` is the total number of steps of the view.

        Raises:
            ValueError: unknown modality.
        """
        if modality not in self.modalities:
            raise ValueError(
                f"Unknown modality {modality!r} of data set {self.name!r}. Valid modalities: {list(self.modalities)}."
            )
        v, p = self._store.modality(modality)
        rows = self._step_rows()
        return v[rows], p[rows]

    def _step_rows(self) -> np.ndarray:
        s = self._store
        if len(self) == s.num_samples and np.array_equal(self._indices, np.arange(s.num_samples)):
            return np.arange(s.num_steps)
        starts = s.offsets[self._indices]
        lens = s.n_steps[self._indices]
        if not lens.size:
            return np.zeros(0, dtype=np.int64)
        # rows = start of each sample repeated over its length + position inside the sample
        within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        return np.repeat(starts, lens) + within

    def collate_fn(self, records: Sequence[SequenceRecord]) -> Any:
        """:func:`~mmfuse.data.collate` bound to this data set's task and context vocabulary."""
        from mmfuse.data.collate import collate

        return collate(records, task=self.task, context_vocab=self.context_vocab)

    def loaded_modalities(self) -> list[str]:
        """Names of the modalities whose arrays have been read from disk so far."""
        return sorted(self._store._modality_cache)


def open_dataset(path: str | os.PathLike[str]) -> MultimodalDataset:
    """Open an mmfuse data set directory lazily.

    Reads ``meta.json`` and ``samples.parquet`` (checking its row count and sha256). A modality's arrays are
    read (memory-mapped) on its first access, checked against ``meta.json`` and cached.

    Raises:
        DataError: a file is missing, truncated, corrupt (checksum) or not the expected Parquet/JSON; the
            message names the file.

    Example:
        >>> import tempfile, numpy as np
        >>> rec = SequenceRecord("a", "g", "test", {"x": np.ones((3, 1), np.float32)}, {}, np.array([0.5, 1, 2]))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     p = write_dataset(f"{tmp}/d", [rec], name="d", modalities=[ModalitySpec("x", 1)],
        ...                       task=TaskSpec("regression", "step"))
        ...     open_dataset(p)[0].label.tolist()
        [0.5, 1.0, 2.0]
    """
    return MultimodalDataset(_Store(Path(path)))


def update_extra_meta(path: str | os.PathLike[str], updates: Mapping[str, Any]) -> Path:
    """Merge ``updates`` into the ``extra_meta`` of the data set at ``path`` and re-seal ``meta.json`` atomically.

    ``meta.json`` carries its own checksum, so a hand edit is refused by :func:`open_dataset`; this is the way
    for a tool (an importer) to add its notes after :func:`write_dataset`. The data set is opened first, so a
    broken one is refused rather than re-sealed.

    Raises:
        DataError: ``path`` is not a valid data set.
        ValueError: ``updates`` is not a JSON-serialisable mapping.

    Example:
        >>> import tempfile, numpy as np
        >>> rec = SequenceRecord("a", "g", "train", {"x": np.ones((2, 1), np.float32)}, {}, 0.5)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     p = write_dataset(f"{tmp}/d", [rec], name="d", modalities=[ModalitySpec("x", 1)],
        ...                       task=TaskSpec("regression", "sample"))
        ...     _ = update_extra_meta(p, {"source": "lab"})
        ...     open_dataset(p).extra_meta
        {'source': 'lab'}
    """
    from mmfuse._io import atomic_write_text

    root = Path(path)
    meta = _Store(root).meta
    if not isinstance(updates, Mapping):
        raise ValueError(f"The 'updates' parameter of update_extra_meta must be a mapping. Got {updates!r}.")
    meta = dict(meta)
    meta["extra_meta"] = {**meta.get("extra_meta", {}), **updates}
    meta["format_version"] = FORMAT_VERSION
    try:
        meta[_META_SHA] = _meta_digest(meta)
        text = json.dumps(meta, indent=2, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The 'updates' parameter of update_extra_meta must be JSON-serialisable: {exc}") from None
    atomic_write_text(root / _META, text)
    return root
