from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _data_testing import CLS_SAMPLE, MODALITIES, records

from mmfuse.data import (
    DatasetInfo,
    cache_root,
    dataset_info,
    is_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
    write_dataset,
)
from mmfuse.data.registry import _DATASETS


@pytest.fixture
def scratch_names():
    """Remove the data sets a test registers, so tests stay independent."""
    before = set(_DATASETS.names())
    yield
    for name in set(_DATASETS.names()) - before:
        del _DATASETS._entries[name]


def test_builtins_are_registered() -> None:
    assert {"basic-motions", "mosi-utterance"} <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())
    assert is_dataset("basic-motions") and not is_dataset("Basic-Motions")


def test_unknown_name_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Unknown data set 'nope'. Valid names: .*basic-motions.*mosi-utterance"):
        load_dataset("nope", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown data set 'nope'"):
        dataset_info("nope")


def test_register_refuses_duplicates_and_bad_input(scratch_names: None) -> None:
    def builder(dest: Path, *, data_dir: Path | None, cache_dir: Path) -> None:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="'basic-motions' is already registered"):
        register_dataset("basic-motions", description="again", builder=builder)
    with pytest.raises(ValueError, match="lower-case"):
        register_dataset("Bad Name", description="x", builder=builder)
    with pytest.raises(ValueError, match="'description' parameter"):
        register_dataset("fine", description="", builder=builder)
    assert not is_dataset("fine")


def test_decorator_form_builds_once_and_reopens_from_cache(tmp_path: Path, scratch_names: None) -> None:
    calls: list[Path] = []

    @register_dataset(
        "toy-reg",
        description="A toy.",
        citation="Me (2024).",
        homepage="https://example.org",
        version="3",
        is_available=lambda *, data_dir, cache_dir: data_dir is not None,
        locate=lambda *, data_dir, cache_dir: f"raw in {data_dir}",
    )
    def build(dest: Path, *, data_dir: Path | None, cache_dir: Path) -> None:
        calls.append(dest)
        write_dataset(dest, records(4), name="toy-reg", modalities=MODALITIES, task=CLS_SAMPLE)

    assert callable(build) and is_dataset("toy-reg")
    info = dataset_info("toy-reg", cache_dir=tmp_path)
    assert info == DatasetInfo("toy-reg", "A toy.", False, "raw in None", "Me (2024).", "https://example.org")
    assert dataset_info("toy-reg", data_dir=tmp_path / "raw", cache_dir=tmp_path).available
    ds = load_dataset("toy-reg", cache_dir=tmp_path)
    assert len(ds) == 4 and calls == [tmp_path / "datasets" / "toy-reg-v3"]
    again = load_dataset("toy-reg", cache_dir=tmp_path)
    assert len(calls) == 1 and again.ids == ds.ids
    info = dataset_info("toy-reg", cache_dir=tmp_path)
    assert info.available and info.where == str(tmp_path / "datasets" / "toy-reg-v3")


def test_builder_that_writes_nothing_is_an_error(tmp_path: Path, scratch_names: None) -> None:
    register_dataset("lazy-builder", description="x", builder=lambda dest, *, data_dir, cache_dir: None)
    with pytest.raises(ValueError, match="returned without writing"):
        load_dataset("lazy-builder", cache_dir=tmp_path)


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMFUSE_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env" and cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("MMFUSE_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "mmfuse"


def test_env_cache_dir_is_used_by_load_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMFUSE_CACHE_DIR", str(tmp_path))
    ds = load_dataset("basic-motions")
    assert ds.path == tmp_path / "datasets" / "basic-motions-v1"
    assert np.isfinite(ds.stacked("gyroscope")[0]).all()


def test_a_converted_copy_in_an_older_format_is_converted_again(tmp_path: Path) -> None:
    import json

    from mmfuse.data.format import FORMAT_VERSION

    first = load_dataset("basic-motions", cache_dir=tmp_path)
    meta_path = first.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 1
    meta["description"] = "an old copy"
    meta_path.write_text(json.dumps(meta))
    again = load_dataset("basic-motions", cache_dir=tmp_path)
    assert json.loads((again.path / "meta.json").read_text())["format_version"] == FORMAT_VERSION
    assert again.description != "an old copy"
    assert not list(again.path.parent.glob("*.old-*"))
