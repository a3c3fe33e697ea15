"""Session-wide test set-up: keep every cache the tests (and doctests) write inside a temporary folder."""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config: object) -> None:
    """Point mmfuse's cache at a per-session temporary folder unless the caller chose one."""
    if "MMFUSE_CACHE_DIR" not in os.environ:
        os.environ["MMFUSE_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmfuse-test-cache-")
    os.environ.setdefault("MPLBACKEND", "Agg")
