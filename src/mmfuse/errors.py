"""Exceptions and warnings raised by mmfuse.

Every error names the parameter or place, the owner, what was expected and what came, e.g.
``The 'rate' parameter of grid_timeline must be a positive number. Got -3 instead.``
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "MmfuseError",
    "MmfuseWarning",
    "NotFittedError",
    "StreamError",
    "UnsafeLoadError",
]


class MmfuseError(Exception):
    """Base class of every error mmfuse raises on purpose."""


class StreamError(MmfuseError, ValueError):
    """A stream is malformed: NaN/inf, unsorted or duplicate timestamps, empty, wrong shape."""


class DataError(MmfuseError, ValueError):
    """A data set or file is malformed, truncated, corrupt or inconsistent."""


class UnsafeLoadError(DataError):
    """A file holds pickled data, which can run code while it loads, and loading it was not allowed.

    Raised by :func:`mmfuse._io.check_unpickling_allowed`, the one gate of every loader of such files; the message
    names the file and the option (and CLI flag) that allows it.
    """


class ConfigError(MmfuseError, ValueError):
    """A run's settings conflict with what is already stored: an existing study or output folder, a resumed study."""


class NotFittedError(MmfuseError, AttributeError):
    """A stateful object (normaliser, calibrator, monitor) was used before ``fit``."""


class MmfuseWarning(UserWarning):
    """Base class of the warnings mmfuse emits (coverage, gaps, dropped data)."""
