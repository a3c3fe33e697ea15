"""MMSA-style feature pickles (CMU-MOSI / MOSEI / CH-SIMS as the MMSA toolkit ships them).

The file is a pickled dict ``{"train" | "valid" | "test": {...}}``; each split holds ``text`` ``[N, L_t, D_t]``,
``audio`` ``[N, L_a, D_a]``, ``vision`` ``[N, L_v, D_v]`` (zero padded), optional ``audio_lengths`` /
``vision_lengths`` ``[N]``, optional ``text_bert`` ``[N, 3, L_t]`` (token ids, attention mask, segment ids),
``regression_labels`` ``[N]``, and optional ``id`` (``"<video>$_$<clip>"``), ``raw_text``,
``classification_labels``.

Unpickling runs code chosen by whoever wrote the file, so :func:`import_mmsa` refuses unless
``allow_pickle=True``, and warns even then.
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse._io import check_unpickling_allowed
from mmfuse.align import Stream, Timeline, align
from mmfuse.errors import DataError, MmfuseWarning
from mmfuse.importers._common import SPLIT_ALIASES, ImportReport, encode_labels, label_task, task_spec

__all__ = ["MMSA_MODALITIES", "import_mmsa"]

log = logging.getLogger(__name__)

MMSA_MODALITIES: tuple[str, ...] = ("audio", "text", "vision")
"""The modality keys of an MMSA split."""


def _load(path: Path) -> Any:
    try:
        with path.open("rb") as fh:
            return pickle.load(fh)
    except FileNotFoundError:
        raise DataError(f"{path}: MMSA pickle not found.") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        ValueError,
        TypeError,
        OSError,
    ) as e:
        raise DataError(f"{path}: cannot unpickle this file (truncated or corrupt?): {type(e).__name__}: {e}") from None


def _array(split: Mapping[str, Any], key: str, where: str, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(split[key])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {key!r} is not an array: {exc}") from None
    if arr.ndim != ndim or arr.dtype.kind not in "fiub":
        raise DataError(f"{where}: {key!r} must be a numeric {ndim}-D array. Got shape {arr.shape}, dtype {arr.dtype}.")
    return arr


def _present(x: np.ndarray, split: Mapping[str, Any], m: str, where: str) -> np.ndarray:
    """``[N, L]`` bool: the real (unpadded) rows of modality ``m``."""
    n, length = x.shape[:2]
    lengths = None
    if f"{m}_lengths" in split:
        lengths = np.asarray(split[f"{m}_lengths"]).reshape(-1)
    elif m == "text" and "text_bert" in split:
        bert = np.asarray(split["text_bert"])
        if bert.ndim == 3 and bert.shape[0] == n and bert.shape[1] == 3 and bert.shape[2] == length:
            return bert[:, 1, :] > 0  # the attention mask
    if lengths is not None:
        if lengths.shape[0] != n or not np.all((lengths >= 0) & (lengths <= length)):
            raise DataError(f"{where}: '{m}_lengths' must be [N] = [{n}] lengths within 0..{length}.")
        return np.arange(length)[None, :] < lengths[:, None]  # [N, L]
    return np.any(x != 0, axis=-1)  # [N, L]: all-zero rows are padding


def import_mmsa(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    allow_pickle: bool = False,
    task: str = "regression",
    label_key: str = "regression_labels",
    modalities: Sequence[str] = MMSA_MODALITIES,
    name: str | None = None,
    description: str = "",
    overwrite: bool = False,
) -> tuple[Path, ImportReport]:
    r"""Import an MMSA feature pickle as a native data set (splits kept: ``valid`` becomes ``val``).

    Padding becomes masks: the real rows of a modality are the first ``<m>_lengths`` rows when the split
    gives lengths, the attention mask of ``text_bert`` for BERT text, and otherwise the rows that are not all
    zero. When every modality has the same padded length and no lengths are given (MMSA's *aligned* files),
    step ``k`` is position ``k``, trimmed to the positions where some modality is real. Otherwise (*unaligned*
    files) the steps are the real text rows, and each other modality's real rows are spread evenly over the
    same span (row ``i`` of ``n`` covers ``[i/n, (i+1)/n)``) and collapsed onto them by overlap-weighted mean:
    an approximation, as the file keeps no times. Non-finite values (MMSA audio holds ``-inf``) are set to 0,
    as MMSA's own loader does, with a warning.

    Args:
        path: The pickle file.
        out: Where to write the data set (a folder).
        allow_pickle: Must be True: loading a pickle can run arbitrary code (see above).
        task: ``"regression"`` or ``"binary"`` (``negative`` < 0 <= ``positive``).
        label_key: The label array of each split.
        modalities: Which of ``audio``, ``text``, ``vision`` to import.
        name: Data set name (default: the file name without suffix).
        description: Free text stored with the data set.
        overwrite: Replace an existing data set at ``out``.

    Returns:
        ``(path of the data set, import report)``.

    Raises:
        UnsafeLoadError: ``allow_pickle`` is not True (a DataError; nothing is read).
        DataError: the file is missing, truncated or corrupt,
            a split or key is missing, shapes disagree, a label is not finite.
        ValueError: an unknown task or modality.

    Example:
        >>> import pickle, tempfile, warnings, numpy as np
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp())
        >>> split = lambda n: {"text": np.ones((n, 4, 3)), "audio": np.ones((n, 4, 2)), "vision": np.ones((n, 4, 2)),
        ...                    "regression_labels": np.linspace(-1, 1, n)}
        >>> _ = (d / "f.pkl").write_bytes(pickle.dumps({"train": split(4), "valid": split(2), "test": split(2)}))
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     path, report = import_mmsa(d / "f.pkl", d / "ds", allow_pickle=True)
        >>> report.samples
        8
    """
    p = Path(path)
    check_unpickling_allowed(
        p,
        "MMSA feature",
        allowed=allow_pickle,
        instead="get the file from a source you trust (the MMSA authors' download, checked against its published "
        "checksum)",
        option="allow_pickle",
        cli_option="--allow-pickle",
    )
    label_task(task, "import_mmsa")
    mods = sorted(modalities)
    bad = sorted(set(mods) - set(MMSA_MODALITIES))
    if bad or not mods:
        raise ValueError(
            f"The 'modalities' parameter of import_mmsa must name some of {list(MMSA_MODALITIES)}. "
            f"Got {list(modalities)}."
        )
    data = _load(p)
    if not isinstance(data, Mapping):
        raise DataError(f"{p}: expected a dict of splits ('train', 'valid', 'test'). Got {type(data).__name__}.")
    splits = [s for s in ("train", "valid", "val", "test") if s in data]
    if not splits:
        raise DataError(f"{p}: no split found; expected keys 'train', 'valid', 'test'. Got {list(data)[:10]}.")
    report = ImportReport(source=str(p), format="mmsa", modalities=mods)

    prepared = []
    dims: dict[str, int] = {}
    n_nonfinite = 0
    for s in splits:
        where = f"{p}: split {s!r}"
        part = data[s]
        if not isinstance(part, Mapping):
            raise DataError(f"{where}: expected a dict of arrays. Got {type(part).__name__}.")
        for key in (*mods, label_key):
            if key not in part:
                raise DataError(f"{where}: no {key!r} array. Keys: {sorted(part)}.")
        xs = {m: _array(part, m, where, 3) for m in mods}
        n = next(iter(xs.values())).shape[0]
        raw_y = np.asarray(part[label_key])
        if raw_y.size != n or raw_y.dtype.kind not in "fiub":
            raise DataError(f"{where}: {label_key!r} must hold one number per sample ({n}). Got shape {raw_y.shape}.")
        y = raw_y.astype(np.float64).reshape(n)
        nonfinite_labels = np.flatnonzero(~np.isfinite(y))
        if nonfinite_labels.size:
            raise DataError(f"{where}: {label_key!r} is not finite at sample {int(nonfinite_labels[0])}.")
        for m, x in xs.items():
            if x.shape[0] != n:
                raise DataError(f"{where}: {m!r} has {x.shape[0]} samples but {mods[0]!r} has {n}.")
            if m in dims and dims[m] != x.shape[2]:
                raise DataError(f"{where}: {m!r} has {x.shape[2]} features, another split {dims[m]}.")
            dims[m] = int(x.shape[2])
        pres = {}
        for m in mods:
            x = np.asarray(xs[m], dtype=np.float32)
            finite = np.isfinite(x)
            if not finite.all():
                n_nonfinite += int((~finite).sum())
                x = np.where(finite, x, np.float32(0.0))
            xs[m] = x
            pres[m] = _present(x, part, m, where)
        ids = [str(i) for i in part["id"]] if "id" in part and len(part["id"]) == n else [f"{s}-{i}" for i in range(n)]
        lengths_given = any(f"{m}_lengths" in part for m in mods)
        aligned = not lengths_given and len({x.shape[1] for x in xs.values()}) == 1
        prepared.append((SPLIT_ALIASES.get(s, s), xs, pres, y, ids, aligned))
    if n_nonfinite:
        msg = f"{p}: {n_nonfinite} non-finite feature value(s) (MMSA audio holds -inf) were set to 0."
        warnings.warn(msg, MmfuseWarning, stacklevel=2)
        report.warnings.append(msg)
    all_ids = [i for _, _, _, _, ids, _ in prepared for i in ids]
    if len(set(all_ids)) != len(all_ids):
        raise DataError(f"{p}: sample ids repeat across or within splits; they must be unique.")

    empty: list[str] = []
    missing: dict[str, list[str]] = {m: [] for m in mods}

    def sample(xs: dict[str, np.ndarray], pres: dict[str, np.ndarray], i: int, aligned: bool):
        if aligned:
            anyp = np.any(np.stack([pres[m][i] for m in mods]), axis=0)  # [L]
            idx = np.flatnonzero(anyp)
            if idx.size == 0:
                return None
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            return {m: xs[m][i, sl] for m in mods}, {m: pres[m][i, sl].copy() for m in mods}
        counts = {m: int(pres[m][i].sum()) for m in mods}
        base = "text" if counts.get("text", 0) else max(mods, key=lambda m: counts[m])
        t = counts[base]
        if t == 0:
            return None
        tl = Timeline.from_intervals(np.arange(t) / t, np.arange(1, t + 1) / t)
        streams = {}
        for m in mods:
            k = counts[m]
            if k:
                rows = xs[m][i][pres[m][i]]  # [k, D] the real rows, in order
                streams[m] = Stream.create(m, np.arange(k) / k, rows, "interval", np.arange(1, k + 1) / k)
        al = align(streams, tl)
        values = {m: al[m].values if m in al.streams else np.zeros((t, dims[m]), np.float32) for m in mods}
        masks = {m: al[m].mask if m in al.streams else np.zeros(t, bool) for m in mods}
        return values, masks

    from mmfuse.data import ModalitySpec, SequenceRecord, write_dataset

    def records() -> Iterator[SequenceRecord]:
        for split, xs, pres, y, ids, aligned in prepared:
            labels = encode_labels(y, task)
            for i, sid in enumerate(ids):
                got = sample(xs, pres, i, aligned)
                if got is None:
                    empty.append(sid)
                    continue
                values, masks = got
                for m in mods:
                    if not masks[m].any():
                        missing[m].append(sid)
                yield SequenceRecord(
                    id=sid,
                    group=sid.split("$_$")[0],
                    split=split,
                    values=values,
                    masks=masks,
                    label=labels[i].item(),
                )

    specs = [ModalitySpec(m, dims[m], "continuous", f"MMSA {m}") for m in mods]
    extra = {"import": {"format": "mmsa", "source": str(p), "label_key": label_key, "task": task}}
    out_path = write_dataset(
        out,
        records(),
        name=name or p.stem,
        modalities=specs,
        task=task_spec(task, "import_mmsa"),
        description=description,
        extra_meta=extra,
        overwrite=overwrite,
    )
    report.skip("no real row in any modality", empty)
    report.missing = missing
    report.samples = len(all_ids) - len(empty)
    report.save(out_path)
    log.info("%s", report.summary())
    return out_path, report
