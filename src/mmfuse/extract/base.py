"""The extractor contract: a media file in, named feature streams out; and the registry of extractors.

An extractor is a small class with a registered name, a ``version`` and a JSON-safe :meth:`Extractor.config`
(both part of the cache key), and a ``__call__`` that turns a :class:`Media` (a file whose audio and frames are
decoded once, on first use, and shared by every extractor) into a dict of :class:`ExtractedStream`. Models are
loaded lazily and kept on the instance, so one extractor object serves many files.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from mmfuse._io import json_fields
from mmfuse._registry import Registry
from mmfuse.align import StreamKind
from mmfuse.extract.decode import MediaInfo, decode_audio, decode_frames, probe

__all__ = [
    "ExtractedStream",
    "Extractor",
    "Media",
    "create_extractor",
    "is_extractor",
    "list_extractors",
    "register_extractor",
]

_E = TypeVar("_E", bound=type)

EXTRACTORS: Registry[type[Extractor]] = Registry("extractor")

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


@dataclass(frozen=True, eq=False)
class ExtractedStream:
    """One feature stream produced from one media file.

    Attributes:
        kind: A :class:`mmfuse.align.StreamKind` value ("continuous", "discrete", "embedding", "interval").
        timestamps: ``[N]`` float64 seconds from the start of the file (interval streams: start times).
        values: ``[N, D]`` float32.
        ends: ``[N]`` float64 end times (interval streams only).
        columns: Names of the ``D`` features (may be empty).
        meta: JSON-safe extra facts (a transcript, a model name).
    """

    kind: str
    timestamps: np.ndarray
    values: np.ndarray
    ends: np.ndarray | None = None
    columns: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        StreamKind(self.kind)  # raises on an unknown kind
        t = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        v = np.asarray(self.values, dtype=np.float32)
        if v.ndim == 1:
            v = v[:, None]  # [N] -> [N, 1]
        if v.ndim != 2 or v.shape[0] != t.shape[0]:
            raise ValueError(
                f"An ExtractedStream needs values [N, D] matching timestamps [N]. Got {v.shape} and {t.shape}."
            )
        object.__setattr__(self, "timestamps", t)
        object.__setattr__(self, "values", v)
        if self.ends is not None:
            object.__setattr__(self, "ends", np.asarray(self.ends, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "columns", tuple(self.columns))

    @property
    def dim(self) -> int:
        """Feature size ``D``."""
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])


class Media:
    """A media file whose audio and frames are decoded on first use and then shared by every extractor.

    Args:
        path: A video or audio file.

    Example:
        >>> import tempfile, wave, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
        >>> with wave.open(str(p), "wb") as w:
        ...     w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000); w.writeframes(bytes(16000))
        >>> m = Media(p)
        >>> m.info.has_video, m.audio(16000).shape, m.audio(16000) is m.audio(16000)
        (False, (16000,), True)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._info: MediaInfo | None = None
        self._audio: dict[int, np.ndarray] = {}
        self._frames: dict[tuple[float, int | None], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def info(self) -> MediaInfo:
        """The file's :class:`MediaInfo` (read once)."""
        if self._info is None:
            self._info = probe(self.path)
        return self._info

    def audio(self, sample_rate: int = 16000) -> np.ndarray:
        """Mono float32 samples ``[N]`` at ``sample_rate`` Hz (see :func:`decode_audio`)."""
        if sample_rate not in self._audio:
            self._audio[sample_rate] = decode_audio(self.path, sample_rate=sample_rate)
        return self._audio[sample_rate]

    def frames(self, rate: float = 5.0, max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(times [F], frames [F, H, W, 3] uint8)`` sampled at ``rate`` Hz (see :func:`decode_frames`)."""
        key = (float(rate), max_side)
        if key not in self._frames:
            self._frames[key] = decode_frames(self.path, rate=rate, max_side=max_side)
        return self._frames[key]


class Extractor:
    """Base class of feature extractors.

    Subclasses set ``name`` (by registering), ``version`` (bump it when outputs change, so caches refresh),
    ``needs`` ("audio" or "video": a file without that track yields no streams instead of an error), implement
    :meth:`__call__`, and list their stream names in ``streams``. :meth:`config` reads the ``__init__``
    arguments back from the attributes of the same name; a subclass whose settings are not its arguments
    overrides it.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    needs: ClassVar[str] = "audio"
    streams: ClassVar[tuple[str, ...]] = ()
    lazy: ClassVar[tuple[str, ...]] = ()
    """Attributes holding loaded models: emptied when the extractor is pickled (sent to a Ray worker)."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: ({} if k in self.lazy else v) for k, v in self.__dict__.items()}

    def config(self) -> dict[str, Any]:
        """Return the JSON-safe settings that change the output (part of the cache key).

        By default the arguments of the class's ``__init__`` in their order, each read from the attribute of the
        same name (as scikit-learn's ``get_params`` reads an estimator); ``{}`` when ``__init__`` takes none.

        Raises:
            TypeError: an ``__init__`` argument is not kept as an attribute of that name (keep it, or override
                :meth:`config`).
        """
        signature = inspect.signature(type(self).__init__)
        names = [p.name for p in list(signature.parameters.values())[1:] if p.kind not in _VARIADIC]
        missing = [n for n in names if not hasattr(self, n)]
        if missing:
            raise TypeError(
                f"{type(self).__name__}.config() reads the __init__ arguments back from the attributes of the same "
                f"name, and {missing} are not kept; keep them as attributes, or override config()."
            )
        return json_fields(self, names)

    def available(self, media: Media) -> bool:
        """Whether ``media`` has the track this extractor needs."""
        return media.info.has_audio if self.needs == "audio" else media.info.has_video

    def __call__(self, media: Media) -> dict[str, ExtractedStream]:
        """Extract this extractor's streams from ``media``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


def register_extractor(name: str) -> Callable[[_E], _E]:
    """Register an :class:`Extractor` subclass under ``name`` (a decorator).

    Args:
        name: Lower-case name (``--extractors`` on the command line).

    Returns:
        The decorator.

    Raises:
        ValueError: the name is taken or malformed.
    """

    def decorator(cls: _E) -> _E:
        cls.name = name  # type: ignore[attr-defined]
        EXTRACTORS.register(name)(cls)
        return cls

    return decorator


def list_extractors() -> list[str]:
    """Return the registered extractor names, sorted.

    Example:
        >>> {"audio", "speech", "face", "frames"} <= set(list_extractors())
        True
    """
    import mmfuse.extract  # noqa: F401  (registers the built-ins)

    return EXTRACTORS.names()


def is_extractor(name: str) -> bool:
    """Whether ``name`` is a registered extractor."""
    return name in list_extractors()


def create_extractor(name: str, **kwargs: Any) -> Extractor:
    """Build the extractor registered as ``name`` with its keyword arguments.

    Raises:
        ValueError: unknown name (the valid ones are listed).

    Example:
        >>> create_extractor("audio").config()["feature_set"]
        'eGeMAPSv02'
    """
    list_extractors()
    return EXTRACTORS.get(name)(**kwargs)


def check_positive(value: Any, parameter: str, owner: str) -> float:
    """Return ``value`` as a float, or raise the standard error for a non-positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"The '{parameter}' parameter of {owner} must be a positive number. Got {value!r} instead.")
    return float(value)
