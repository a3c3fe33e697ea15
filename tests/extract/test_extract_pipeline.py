"""extract_folder: cache, failure isolation, labels, the data set written, the CLI, Ray."""

from __future__ import annotations

import shutil
from typing import ClassVar

import numpy as np
import pytest
from media_fixtures_extract import build_fox_clip, build_media_folder

from mmfuse.data import open_dataset
from mmfuse.errors import DataError
from mmfuse.extract import AudioExtractor, ExtractionCache, Extractor, FramesExtractor, extract_file, extract_folder


@pytest.fixture(scope="module")
def fox_clip(tmp_path_factory):
    return build_fox_clip(tmp_path_factory)


@pytest.fixture(scope="module")
def media_folder(tmp_path_factory):
    return build_media_folder(tmp_path_factory)


class Counting(Extractor):
    """Wraps an extractor and counts its calls."""

    version: ClassVar[str] = "1"

    def __init__(self, inner: Extractor) -> None:
        self.inner = inner
        self.calls = 0
        self.needs = inner.needs  # type: ignore[misc]

    @property
    def name(self):  # type: ignore[override]
        return self.inner.name

    def config(self):
        return self.inner.config()

    def __call__(self, media):
        self.calls += 1
        return self.inner(media)


def _fast():
    return [AudioExtractor(functionals=False), FramesExtractor("pixel-stats", rate=2.0, max_side=32)]


def test_cache_hit_on_rerun_calls_no_extractor(tmp_path, fox_clip):
    cache = ExtractionCache(tmp_path / "cache")
    ex = Counting(AudioExtractor(functionals=False))
    first = extract_file(fox_clip.path, [ex], cache=cache)
    assert first.ok and first.computed == ["audio"] and ex.calls == 1
    # A copy under another name has the same content: served from the cache.
    copy = tmp_path / "renamed.mp4"
    shutil.copy(fox_clip.path, copy)
    second = extract_file(copy, [ex], cache=cache)
    assert ex.calls == 1 and second.cache_hits == ["audio"] and second.computed == []
    np.testing.assert_array_equal(second.streams["audio_lld"].values, first.streams["audio_lld"].values)
    # Another config is another entry.
    other = Counting(AudioExtractor(feature_set="GeMAPSv01b", functionals=False))
    extract_file(copy, [other], cache=cache)
    assert other.calls == 1


def test_extract_folder_writes_an_aligned_dataset_and_isolates_a_corrupt_file(tmp_path, media_folder):
    src = tmp_path / "media"
    shutil.copytree(media_folder, src)
    (src / "fox" / "corrupt.mp4").write_bytes(b"\x00garbage" * 500)
    seen = []
    path, report = extract_folder(
        src, tmp_path / "ds", extractors=_fast(), rate=10.0, on_file=seen.append, cache_dir=tmp_path / "cache"
    )
    assert len(seen) == 4 and [f.recording for f in report.failures] == ["fox__corrupt"]
    assert "DataError" in report.failures[0].error and "corrupt.mp4" in report.failures[0].error
    ds = open_dataset(path)
    assert sorted(ds.ids) == ["fox__fox", "stella__stella", "weather__weather"]
    assert sorted(ds.modalities) == ["audio_lld", "video_pixel-stats"]
    assert ds.modalities["audio_lld"].dim == 25 and ds.task.class_names == ("fox", "stella", "weather")
    rec = ds[ds.ids.index("stella__stella")]  # the WAV has no video: that modality is masked throughout
    assert not rec.masks["video_pixel-stats"].any() and rec.masks["audio_lld"].mean() > 0.95
    assert np.median(np.diff(rec.timestamps)) == pytest.approx(0.1)
    fox = ds[ds.ids.index("fox__fox")]
    assert fox.masks["video_pixel-stats"].mean() > 0.9
    assert report.media_seconds > 10 and report.throughput > 0
    assert (path / "extraction.json").is_file() and (path / "validation.json").is_file()
    # Re-run: everything from the cache.
    _, again = extract_folder(src, tmp_path / "ds2", extractors=_fast(), cache_dir=tmp_path / "cache")
    assert again.computed == 0 and again.cache_hits == 6


def test_labels_csv_and_errors(tmp_path, media_folder):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label,split\nfox/fox.mp4,1,train\nweather.mp4,0,val\nstella,1,test\n")
    path, _ = extract_folder(
        media_folder,
        tmp_path / "ds",
        extractors=[AudioExtractor(functionals=False)],
        labels=labels,
        cache_dir=tmp_path / "c",
    )
    ds = open_dataset(path)
    assert dict(zip(ds.ids, ds.splits, strict=True)) == {
        "fox__fox": "train",
        "stella__stella": "test",
        "weather__weather": "val",
    }
    with pytest.raises(DataError, match="no label for media file"):
        extract_folder(media_folder, tmp_path / "x", labels={"fox": "a"}, extractors=_fast())
    with pytest.raises(ValueError, match="'rate' parameter of extract_folder"):
        extract_folder(media_folder, tmp_path / "x", rate=0)
    with pytest.raises(ValueError, match="'executor' parameter of extract_folder must be one of"):
        extract_folder(media_folder, tmp_path / "x", executor="spark")
    with pytest.raises(ValueError, match="Unknown extractor 'ocr'"):
        extract_folder(media_folder, tmp_path / "x", extractors=["ocr"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no media files"):
        extract_folder(tmp_path / "empty", tmp_path / "x")
    with pytest.raises(FileExistsError):
        extract_folder(media_folder, path)


def test_every_file_failing_is_an_error(tmp_path):
    (tmp_path / "m" / "a").mkdir(parents=True)
    (tmp_path / "m" / "a" / "bad.wav").write_bytes(b"RIFF....junk")
    with pytest.raises(DataError, match="no file produced any stream"):
        extract_folder(tmp_path / "m", tmp_path / "ds", extractors=_fast(), use_cache=False)


def test_cli_extract(tmp_path, media_folder):
    from typer.testing import CliRunner

    from mmfuse.cli._app import app

    res = CliRunner().invoke(
        app,
        [
            "extract",
            str(media_folder),
            "--out",
            str(tmp_path / "ds"),
            "-e",
            "audio,frames",
            "--rate",
            "5",
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "3/3 files extracted" in res.output
    assert open_dataset(tmp_path / "ds").modalities["audio_functionals"].dim == 88
    bad = CliRunner().invoke(app, ["extract", str(media_folder), "--out", str(tmp_path / "y"), "-e", "nope"])
    assert bad.exit_code == 2 and "Unknown extractor 'nope'" in bad.output


@pytest.mark.slow
def test_ray_local_equals_local_executor(tmp_path, media_folder):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mmfuse[ray]')")
    import ray

    local, _ = extract_folder(media_folder, tmp_path / "a", extractors=_fast(), use_cache=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote, report = extract_folder(
            media_folder, tmp_path / "b", extractors=_fast(), executor="ray", use_cache=False
        )
    finally:
        ray.shutdown()
    assert report.executor == "ray" and not report.failures
    a, b = open_dataset(local), open_dataset(remote)
    assert a.ids == b.ids and a.splits == b.splits
    for i in range(len(a)):
        for m in a.modalities:
            np.testing.assert_array_equal(a[i].values[m], b[i].values[m])
            np.testing.assert_array_equal(a[i].masks[m], b[i].masks[m])
