"""The data-set registry: named built-in (and user) data sets, converted once into the native format and cached.

A builder is a function ``builder(dest, *, data_dir, cache_dir) -> None`` that writes the data set at ``dest``
with :func:`~mmfuse.data.write_dataset`. :func:`load_dataset` calls it once and reopens the cached copy
afterwards; the cache key holds the builder ``version``, so bumping it rebuilds.

The cache folder is ``cache_dir`` when given, else ``$MMFUSE_CACHE_DIR``, else ``~/.cache/mmfuse``. Built data
sets live in ``<cache>/datasets/<name>-v<version>/``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mmfuse._registry import Registry
from mmfuse.data.format import MultimodalDataset, open_dataset
from mmfuse.errors import DataError

__all__ = [
    "DatasetInfo",
    "cache_root",
    "data_root",
    "dataset_info",
    "is_dataset",
    "list_datasets",
    "load_dataset",
    "open_or_load_dataset",
    "register_dataset",
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


_DATASETS: Registry[_Entry] = Registry("data set")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the mmfuse cache folder: ``cache_dir``, else ``$MMFUSE_CACHE_DIR``, else ``~/.cache/mmfuse``.

    Example:
        >>> str(cache_root("/tmp/x"))
        '/tmp/x'
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MMFUSE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mmfuse"


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the raw-data root: ``data_dir``, else ``$MMFUSE_DATA_DIR``, else None.

    Example:
        >>> str(data_root("/data"))
        '/data'
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("MMFUSE_DATA_DIR")
    return Path(env).expanduser() if env else None


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
        )
        _DATASETS.add(name, entry)
        return fn

    if builder is None:
        return decorator
    return decorator(builder)


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
