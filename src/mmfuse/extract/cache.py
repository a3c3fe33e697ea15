"""On-disk cache of extraction results, keyed by file content and extractor configuration.

A result lives at ``<root>/<content[:2]>/<content>/<extractor>-<config>.npz`` with a JSON sidecar: the content
key is the SHA-256 of the media file's bytes (so renaming or moving a file keeps its cache, and editing it
does not), the config key the SHA-256 of the extractor's name, version and :meth:`Extractor.config`. Arrays are
stored in NPZ (read back with ``allow_pickle=False``), everything else in JSON; both are written atomically
and the JSON last, so a result is visible only once complete. The root is ``root`` |
``$MMFUSE_CACHE_DIR/extract`` | ``~/.cache/mmfuse/extract``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse._io import atomic_write_bytes, atomic_write_text
from mmfuse.extract.base import ExtractedStream, Extractor

__all__ = ["ExtractionCache", "config_key", "content_hash", "default_cache_dir"]

_FORMAT = 2


def default_cache_dir() -> Path:
    """Return ``$MMFUSE_CACHE_DIR/extract``, or ``~/.cache/mmfuse/extract`` when the variable is unset.

    The root is :func:`mmfuse.data.registry.cache_root`'s, the one rule for mmfuse's cache folder.
    """
    from mmfuse.data.registry import cache_root

    return cache_root() / "extract"


def content_hash(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Return the SHA-256 hex digest of a file's bytes (read in chunks).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> _ = p.write_bytes(b"abc")
        >>> content_hash(p)[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def config_key(extractor: Extractor) -> str:
    """Return the SHA-256 (first 16 hex digits) of the extractor's name, version and config.

    Example:
        >>> from mmfuse.extract import create_extractor
        >>> a, b = create_extractor("audio"), create_extractor("audio", functionals=False)
        >>> config_key(a) == config_key(create_extractor("audio")), config_key(a) == config_key(b)
        (True, False)
    """
    text = json.dumps(
        {"name": extractor.name, "version": extractor.version, "config": extractor.config(), "format": _FORMAT},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class ExtractionCache:
    """Stores and finds the streams an extractor produced from a file.

    Args:
        root: Cache folder (default :func:`default_cache_dir`).

    Example:
        >>> import tempfile, numpy as np
        >>> from mmfuse.extract import ExtractedStream, create_extractor
        >>> cache = ExtractionCache(tempfile.mkdtemp())
        >>> ex = create_extractor("audio")
        >>> cache.get("ab" * 32, ex) is None
        True
        >>> s = ExtractedStream("continuous", np.arange(3) / 100, np.ones((3, 2)), columns=("a", "b"))
        >>> _ = cache.put("ab" * 32, ex, {"audio_x": s})
        >>> got = cache.get("ab" * 32, ex)
        >>> got["audio_x"].values.shape, got["audio_x"].columns
        ((3, 2), ('a', 'b'))
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def _paths(self, content: str, extractor: Extractor) -> tuple[Path, Path]:
        folder = self.root / content[:2] / content
        stem = f"{extractor.name}-{config_key(extractor)}"
        return folder / f"{stem}.npz", folder / f"{stem}.json"

    def get(self, content: str, extractor: Extractor) -> dict[str, ExtractedStream] | None:
        """Return the cached streams, or None when there are none (or the entry is unreadable)."""
        npz, meta_path = self._paths(content, extractor)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            out: dict[str, ExtractedStream] = {}
            with np.load(npz, allow_pickle=False) as z:
                for i, (name, entry) in enumerate(meta["streams"].items()):
                    out[name] = ExtractedStream(
                        kind=entry["kind"],
                        timestamps=z[f"s{i}_timestamps"],
                        values=z[f"s{i}_values"],
                        ends=z[f"s{i}_ends"] if f"s{i}_ends" in z.files else None,
                        columns=tuple(entry.get("columns", ())),
                        meta=entry.get("meta", {}),
                    )
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None  # a damaged entry is recomputed
        return out

    def put(self, content: str, extractor: Extractor, streams: dict[str, ExtractedStream]) -> Path:
        """Store ``streams`` (atomically: arrays first, then the JSON that makes the entry visible)."""
        npz, meta_path = self._paths(content, extractor)
        arrays: dict[str, np.ndarray] = {}
        entries: dict[str, Any] = {}
        for i, (name, s) in enumerate(streams.items()):
            arrays[f"s{i}_timestamps"] = s.timestamps
            arrays[f"s{i}_values"] = s.values
            if s.ends is not None:
                arrays[f"s{i}_ends"] = s.ends
            entries[name] = {"kind": s.kind, "columns": list(s.columns), "meta": s.meta}
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(npz, buf.getvalue())
        meta = {
            "format": _FORMAT,
            "extractor": extractor.name,
            "version": extractor.version,
            "config": extractor.config(),
            "streams": entries,
        }
        atomic_write_text(meta_path, json.dumps(meta, indent=1, default=str))
        return meta_path
