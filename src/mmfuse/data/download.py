"""Pinned downloads: stream a URL to a temporary file, verify its sha256, rename it into place."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from mmfuse._io import atomic_write
from mmfuse.errors import DataError

__all__ = ["fetch", "sha256_file"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as fh:
        ...     sha256_file(fh.name)[:12]
        'e3b0c44298fc'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, sha256: str, dest: str | os.PathLike[str], *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already holds a file with the expected ``sha256``.

    The body is streamed into a temporary file next to ``dest`` while it is hashed; on a match it is flushed
    and renamed onto ``dest`` (atomic), otherwise the temporary file is removed and nothing changes at
    ``dest``. Any URL scheme that ``urllib`` handles works (``https://``, ``file://``).

    Args:
        url: Source.
        sha256: Expected hex digest (64 characters).
        dest: Target file path (its folder is created).
        timeout: Socket timeout in seconds.

    Returns:
        ``dest`` as a Path.

    Raises:
        DataError: the download fails or its checksum differs (the message names the URL and both digests).

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     src = pathlib.Path(tmp, "a.txt"); _ = src.write_bytes(b"hi")
        ...     out = fetch(src.as_uri(), sha256_file(src), pathlib.Path(tmp, "copy", "a.txt"))
        ...     out.read_bytes()
        b'hi'
    """
    expected = sha256.lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"The 'sha256' parameter of fetch must be 64 hex characters. Got {sha256!r}.")
    target = Path(dest)
    if target.is_file() and sha256_file(target) == expected:
        log.debug("%s already present with the expected checksum", target)
        return target
    log.info("downloading %s -> %s", url, target)

    def stream_and_check(tmp: Path) -> None:
        h = hashlib.sha256()
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataError(f"Downloading {url} failed: {exc}.") from exc
        got = h.hexdigest()
        if got != expected:
            raise DataError(
                f"The file downloaded from {url} has sha256 {got}, expected {expected}; it was discarded "
                f"(the source changed or the transfer was corrupted)."
            )

    # atomic_write fsyncs the ".part" file and renames it onto dest only when stream_and_check returns; when it
    # raises, the ".part" file is removed and dest is left as it was.
    atomic_write(target, stream_and_check, suffix=".part")
    return target
