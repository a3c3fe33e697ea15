from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mmfuse.data import fetch, sha256_file
from mmfuse.errors import DataError


def _src(tmp_path: Path, data: bytes = b"payload " * 1000) -> tuple[Path, str]:
    src = tmp_path / "src" / "file.csv"
    src.parent.mkdir()
    src.write_bytes(data)
    return src, hashlib.sha256(data).hexdigest()


def test_fetch_downloads_and_verifies(tmp_path: Path) -> None:
    src, digest = _src(tmp_path)
    dest = tmp_path / "cache" / "sub" / "file.csv"
    assert fetch(src.as_uri(), digest, dest) == dest
    assert dest.read_bytes() == src.read_bytes() and sha256_file(dest) == digest
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.csv"]  # no temp file left


def test_fetch_skips_when_cached_file_matches(tmp_path: Path) -> None:
    src, digest = _src(tmp_path)
    dest = tmp_path / "file.csv"
    fetch(src.as_uri(), digest, dest)
    src.unlink()  # the source is gone: a second fetch must not need it
    assert fetch(src.as_uri(), digest, dest).read_bytes().startswith(b"payload")


def test_fetch_replaces_a_stale_cached_file(tmp_path: Path) -> None:
    src, digest = _src(tmp_path)
    dest = tmp_path / "file.csv"
    dest.write_bytes(b"old and wrong")
    fetch(src.as_uri(), digest, dest)
    assert sha256_file(dest) == digest


def test_fetch_checksum_mismatch_removes_temp_and_keeps_dest(tmp_path: Path) -> None:
    src, _ = _src(tmp_path)
    dest = tmp_path / "out" / "file.csv"
    with pytest.raises(DataError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}"):
        fetch(src.as_uri(), "0" * 64, dest)
    assert list(dest.parent.iterdir()) == []
    dest.write_bytes(b"previous")
    with pytest.raises(DataError):
        fetch(src.as_uri(), "0" * 64, dest)
    assert dest.read_bytes() == b"previous" and [p.name for p in dest.parent.iterdir()] == ["file.csv"]


def test_fetch_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"Downloading file:.*failed"):
        fetch((tmp_path / "missing.csv").as_uri(), "a" * 64, tmp_path / "x.csv")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="64 hex characters"):
        fetch("file:///x", "abc", tmp_path / "x.csv")
