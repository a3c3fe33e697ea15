from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ~/.cache/mmfuse or $MMFUSE_DATA_DIR from the tests."""
    monkeypatch.setenv("MMFUSE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mmfuse-cache"))
    monkeypatch.delenv("MMFUSE_DATA_DIR", raising=False)
