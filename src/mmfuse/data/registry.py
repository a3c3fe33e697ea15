"""The data-set registry: named built-in (and user) data sets, converted once into the native format and cached.

A builder is a function ``builder(dest, *, data_dir, cache_dir) -> None`` that writes the data set at ``dest``
with :func:`~mmfuse.data.write_dataset`. :func:`load_dataset` calls it once and reopens the cached copy
afterwards; the cache key holds the builder ``version``, so bumping it rebuilds.

The cache folder is ``cache_dir`` when given, else ``$MMFUSE_CACHE_DIR``, else ``~/.cache/mmfuse``. Built data
sets live in ``<cache>/datasets/<name>-v<version>/``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mmfuse._registry import Registry
from mmfuse.data.format import FORMAT_VERSION, MultimodalDataset, open_dataset
from mmfuse.errors import DataError

__all__ = [
    "DatasetInfo",
    "cache_root",
    "data_root",
    "dataset_info",
    "dataset_preset",
    "is_dataset",
    "list_datasets",
    "load_dataset",
    "open_or_load_dataset",
    "register_dataset",
    "registered_name_of",
]

log = logging.getLogger(__name__)


class Builder(Protocol):
    """Writes a data set at ``dest`` (with ``write_dataset``), reading raw data from ``data_dir`` or the cache."""

    def __call__(self, dest: Path, *, data_dir: Path | None, cache_dir: Path) -> None: ...


Probe = Callable[..., bool]
Locator = Callable[..., str]


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`dataset_info` reports about a registered data set.

    Attributes:
        name: Registry name.
        description: One paragraph.
        available: True when it can be loaded without network access (raw data found, or already converted).
        where: Where the data is (or would be) read from: the converted cache folder, the raw data folder, or
            the download source.
        citation: How to cite the data.
        homepage: Where it is described.
    """

    name: str
    description: str
    available: bool
    where: str
    citation: str = ""
    homepage: str = ""


@dataclass(frozen=True)
class _Entry:
    name: str
    description: str
    builder: Builder
    is_available: Probe
    locate: Locator | None
    citation: str
    homepage: str
    version: str
    preset: Mapping[str, Any] | None


_DATASETS: Registry[_Entry] = Registry("data set")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the mmfuse cache folder: ``cache_dir``, else ``$MMFUSE_CACHE_DIR``, else ``~/.cache/mmfuse``.

    Example:
        >>> str(cache_root("/tmp/x"))
        '/tmp/x'
    """
    return _given_or_env(cache_dir, "MMFUSE_CACHE_DIR") or Path.home() / ".cache" / "mmfuse"


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the raw-data root: ``data_dir``, else ``$MMFUSE_DATA_DIR``, else None.

    Example:
        >>> str(data_root("/data"))
        '/data'
    """
    return _given_or_env(data_dir, "MMFUSE_DATA_DIR")


def _given_or_env(folder: str | os.PathLike[str] | None, variable: str) -> Path | None:
    """``folder``, else the environment variable ``variable`` when it is set and not empty (``~`` expanded)."""
    if folder is None:
        folder = os.environ.get(variable) or None
    return None if folder is None else Path(folder).expanduser()


def _converted_dir(entry: _Entry, cache: Path) -> Path:
    return cache / "datasets" / f"{entry.name}-v{entry.version}"


def register_dataset(
    name: str,
    *,
    description: str,
    builder: Builder | None = None,
    is_available: Probe | None = None,
    citation: str = "",
    homepage: str = "",
    version: str = "1",
    locate: Locator | None = None,
    preset: Mapping[str, Any] | None = None,
) -> Any:
    """Register a data set under ``name``; without ``builder`` it returns a decorator for the builder.

    Args:
        name: Registry name (lower case, no spaces; refused when taken).
        description: One paragraph.
        builder: ``builder(dest, *, data_dir, cache_dir)`` writes the data set at ``dest`` with
            :func:`~mmfuse.data.write_dataset`.
        is_available: ``is_available(data_dir=..., cache_dir=...) -> bool``: whether the raw data can be read
            without network access. Default: always True (the data ships with a package).
        citation: How to cite the data.
        homepage: Where it is described.
        version: Builder version; part of the cache key, so a new version rebuilds.
        locate: ``locate(data_dir=..., cache_dir=...) -> str``: where the raw data is read from (for
            :func:`dataset_info`).
        preset: The hyperparameters comparisons use on this data set: ``{"model": {...}, "train": {...}}``
            keyword arguments of ``ModelConfig`` and ``TrainConfig``, optionally ``"fusions": {name: {"model":
            {...}, "train": {...}}}`` per fusion. It applies to this data set as built by ``builder`` only, never to
            another folder of the same name (see :func:`registered_name_of`).

    Returns:
        The builder (or, in decorator form, a decorator that registers and returns it).

    Example:
        >>> import numpy as np
        >>> from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset
        >>> @register_dataset("doc-toy", description="Two tiny samples.")
        ... def build_toy(dest, *, data_dir, cache_dir):
        ...     recs = [SequenceRecord(str(i), str(i), "train", {"x": np.ones((2, 1))}, {}, i) for i in range(2)]
        ...     write_dataset(dest, recs, name="doc-toy", modalities=[ModalitySpec("x", 1)],
        ...                   task=TaskSpec("classification", "sample", ("a", "b")))
        >>> is_dataset("doc-toy")
        True
    """
    if not isinstance(description, str) or not description:
        raise ValueError(f"The 'description' parameter of register_dataset({name!r}) must be a non-empty string.")
    if not isinstance(version, str) or not version or "/" in version:
        raise ValueError(f"The 'version' parameter of register_dataset({name!r}) must be a non-empty string.")
    if preset is not None:
        _check_preset(name, preset)

    def decorator(fn: Builder) -> Builder:
        if not callable(fn):
            raise TypeError(f"The builder of data set {name!r} must be callable. Got {type(fn).__name__}.")
        entry = _Entry(
            name=name,
            description=description,
            builder=fn,
            is_available=is_available or (lambda **_: True),
            locate=locate,
            citation=citation,
            homepage=homepage,
            version=version,
            preset=copy.deepcopy(dict(preset)) if preset is not None else None,
        )
        _DATASETS.add(name, entry)
        return fn

    if builder is None:
        return decorator
    return decorator(builder)


def _check_preset(name: str, preset: Mapping[str, Any]) -> None:
    """The preset's shape (its keys are checked against ModelConfig / TrainConfig where it is used)."""
    where = f"The 'preset' parameter of register_dataset({name!r})"
    if not isinstance(preset, Mapping):
        raise ValueError(f"{where} must be a mapping. Got {type(preset).__name__}.")
    unknown = sorted(set(preset) - {"model", "train", "fusions"})
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; valid keys: ['fusions', 'model', 'train'].")
    sections = [("model", preset.get("model", {})), ("train", preset.get("train", {}))]
    fusions = preset.get("fusions", {})
    if not isinstance(fusions, Mapping):
        raise ValueError(f"{where}: 'fusions' must map fusion names to {{'model': ..., 'train': ...}}.")
    for fusion, entry in fusions.items():
        if not isinstance(entry, Mapping) or set(entry) - {"model", "train"}:
            raise ValueError(f"{where}: 'fusions'[{fusion!r}] must hold only 'model' and 'train' mappings.")
        sections += [(f"fusions.{fusion}.{k}", v) for k, v in entry.items()]
    for key, section in sections:
        if not isinstance(section, Mapping):
            raise ValueError(f"{where}: {key!r} must be a mapping of keyword arguments. Got {section!r}.")


def dataset_preset(name: str) -> dict[str, Any] | None:
    """Return (a copy of) the preset registered with data set ``name``, or None when it has none.

    Raises:
        ValueError: unknown name (the message lists the valid ones).

    Example:
        >>> dataset_preset("basic-motions")["train"]["monitor"]
        'loss'
    """
    entry = _DATASETS.get(name)
    return copy.deepcopy(dict(entry.preset)) if entry.preset is not None else None


def registered_name_of(dataset: Any) -> str | None:
    """Return the registered name of the data set ``dataset`` is, or None for any other folder.

    A data set is the registered one when it is the folder :func:`load_dataset` converts that entry into
    (``<cache>/datasets/<name>-v<version>``, whatever the cache root) and its ``meta.json`` carries the name.
    A user's data set that merely has a built-in's name is not the built-in, so it does not get its preset.

    Example:
        >>> registered_name_of(load_dataset("basic-motions"))
        'basic-motions'
    """
    name = getattr(dataset, "name", None)
    path = getattr(dataset, "path", None)
    if not isinstance(name, str) or path is None or name not in _DATASETS:
        return None
    entry = _DATASETS.get(name)
    folder = Path(path).resolve()
    if folder.name == f"{entry.name}-v{entry.version}" and folder.parent.name == "datasets":
        return entry.name
    return None


def list_datasets() -> list[str]:
    """Return the registered data-set names, sorted.

    Example:
        >>> {"basic-motions", "mosi-utterance"} <= set(list_datasets())
        True
    """
    return _DATASETS.names()


def is_dataset(name: str) -> bool:
    """Return whether ``name`` is a registered data set.

    Example:
        >>> is_dataset("basic-motions"), is_dataset("nope")
        (True, False)
    """
    return name in _DATASETS


def dataset_info(
    name: str, *, data_dir: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> DatasetInfo:
    """Describe the registered data set ``name`` and whether it is available offline.

    Raises:
        ValueError: unknown name (the message lists the valid ones).

    Example:
        >>> dataset_info("basic-motions").available
        True
    """
    entry = _DATASETS.get(name)
    cache = cache_root(cache_dir)
    root = data_root(data_dir)
    converted = _converted_dir(entry, cache)
    if (converted / "meta.json").is_file():
        available, where = True, str(converted)
    else:
        available = bool(entry.is_available(data_dir=root, cache_dir=cache))
        where = entry.locate(data_dir=root, cache_dir=cache) if entry.locate else ""
    return DatasetInfo(
        name=entry.name,
        description=entry.description,
        available=available,
        where=where,
        citation=entry.citation,
        homepage=entry.homepage,
    )


def load_dataset(
    name: str, *, data_dir: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> MultimodalDataset:
    """Load a registered data set, converting it into the native format on first use.

    Args:
        name: Registry name (see :func:`list_datasets`).
        data_dir: Raw-data root (default ``$MMFUSE_DATA_DIR``); a built-in looks in ``<data_dir>/<name>/``.
        cache_dir: Cache folder (default ``$MMFUSE_CACHE_DIR`` or ``~/.cache/mmfuse``).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        DataError: the raw data is missing, corrupt or fails validation.

    Example:
        >>> ds = load_dataset("basic-motions")
        >>> sorted(ds.modalities), ds.split_names
        (['accelerometer', 'gyroscope'], ['test', 'train', 'val'])
    """
    entry = _DATASETS.get(name)
    cache = cache_root(cache_dir)
    root = data_root(data_dir)
    dest = _converted_dir(entry, cache)
    _retire_older_format(dest)
    if not (dest / "meta.json").is_file():
        log.info("converting data set %r into %s", name, dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            entry.builder(dest, data_dir=root, cache_dir=cache)
        except (DataError, OSError) as exc:
            # Another process may have finished the same conversion first; its copy is as good as ours.
            if not (dest / "meta.json").is_file():
                raise
            log.debug("concurrent conversion of %r detected: %s", name, exc)
        if not (dest / "meta.json").is_file():
            raise DataError(f"The builder of data set {name!r} returned without writing {dest}.")
    return open_dataset(dest)


def _retire_older_format(dest: Path) -> None:
    """Delete a converted copy written in an older on-disk format, so that it is converted again.

    A converted copy is derived data: rebuilding it from the raw files brings the newer format's guarantees (format 2
    seals ``meta.json`` with a checksum) instead of reading the old copy with a warning on every open.
    """
    try:
        version = json.loads((dest / "meta.json").read_text(encoding="utf-8")).get("format_version")
    except (OSError, ValueError, AttributeError):
        return  # absent, or unreadable: open_dataset names the problem
    if not isinstance(version, int) or isinstance(version, bool) or version >= FORMAT_VERSION:
        return
    aside = dest.with_name(f"{dest.name}.old-{os.getpid()}")
    try:
        dest.rename(aside)
    except OSError:  # another process retired it first
        return
    log.info("converting %s again: it was written in format version %d (now %d)", dest, version, FORMAT_VERSION)
    shutil.rmtree(aside, ignore_errors=True)


def open_or_load_dataset(
    dataset: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None
) -> MultimodalDataset:
    """Open ``dataset`` as a native data-set folder, or else load the registered data set of that name.

    The one rule every command uses: a folder holding ``meta.json`` (or any folder whose name is not a
    registered data set) is opened as a native data set; anything else is a registered name.

    Raises:
        DataError: for a folder that is not a native data set (naming its missing ``meta.json``).
        ValueError: for an unknown name (listing the registered ones).

    Example:
        >>> open_or_load_dataset("basic-motions").name
        'basic-motions'
    """
    path = Path(dataset)
    if path.is_dir() and ((path / "meta.json").exists() or not is_dataset(str(dataset))):
        return open_dataset(path)
    return load_dataset(str(dataset), data_dir=data_dir)
