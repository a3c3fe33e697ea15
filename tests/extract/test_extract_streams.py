"""Bring your own raw data: ``extract --streams-out`` (full-rate stream files in the ``align`` layout), ``--extra``
(the user's streams in the ``import folders`` layout) and per-file progress lines.

The media are the shared test clips (three short clips, two of them videos); the extractors are the fast ones
(openSMILE low-level descriptors, pixel statistics of frames).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from media_fixtures_extract import build_media_folder

from mmfuse.align import align_folder
from mmfuse.data import open_dataset
from mmfuse.errors import DataError, MmfuseWarning
from mmfuse.extract import AudioExtractor, FramesExtractor, extract_folder, find_media


@pytest.fixture(scope="module")
def media_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_media_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")  # shared: each clip is extracted once for the module


def _fast() -> list:
    return [AudioExtractor(functionals=False), FramesExtractor("pixel-stats", rate=2.0, max_side=32)]


def _extra(root: Path, media_folder: Path, *, skip: str = "stella__stella") -> Path:
    """An 'image' interval stream (one row per recording, over its first second) and one unmatched file."""
    (root / "image").mkdir(parents=True)
    for rec in find_media(media_folder):
        if rec != skip:
            np.savez(root / "image" / f"{rec}.npz", timestamps=[0.0], ends=[1.0], values=[[1.0, 2.0, 3.0]])
    np.savez(root / "image" / "nobody.npz", timestamps=[0.0], ends=[1.0], values=[[0.0, 0.0, 0.0]])
    (root / "streams.json").write_text(json.dumps({"image": {"kind": "interval"}}))
    return root


def test_streams_out_writes_full_rate_stream_files_that_align_reads(
    tmp_path: Path, media_folder: Path, cache_dir: Path
) -> None:
    streams = tmp_path / "streams"
    with pytest.warns(MmfuseWarning, match=r"1 extra stream file\(s\) name no extracted recording.*nobody\.npz"):
        path, report = extract_folder(
            media_folder,
            None,
            streams_out=streams,
            extra=_extra(tmp_path / "extra", media_folder),
            extractors=_fast(),
            cache_dir=cache_dir,
        )
    assert path == streams and len(report.files) == 3
    recs = sorted(p.name for p in streams.iterdir() if p.is_dir())
    assert recs == sorted(find_media(media_folder))
    lld = np.load(streams / "fox__fox" / "audio_lld.npz")
    assert np.median(np.diff(lld["timestamps"])) == pytest.approx(0.01, abs=1e-6)  # openSMILE's 100 Hz, not a grid
    assert sorted(p.name for p in (streams / "fox__fox").iterdir()) == [
        "audio_lld.npz",
        "image.npz",
        "video_pixel-stats.npz",
    ]
    assert not (streams / "stella__stella" / "image.npz").exists()
    kinds = json.loads((streams / "streams.json").read_text())
    assert kinds["image"] == {"kind": "interval"} and kinds["audio_lld"]["kind"] == "continuous"
    assert (streams / "labels.csv").read_text().splitlines()[0] == "recording,label"
    assert json.loads((streams / "extraction.json").read_text())["extra"] == str(tmp_path / "extra")

    # the stream files are an 'align' source: any rate, averaging the 100 Hz frames into steps
    ds_path, _ = align_folder(streams, tmp_path / "ds", rate=25.0, average=["audio_lld"])
    ds = open_dataset(ds_path)
    assert sorted(ds.modalities) == ["audio_lld", "image", "video_pixel-stats"]
    stella = ds[ds.ids.index("stella__stella")]
    assert not stella.masks["image"].any() and stella.masks["audio_lld"].any()
    fox = ds[ds.ids.index("fox__fox")]
    assert fox.masks["image"][:25].all() and not fox.masks["image"][25:].any()  # [0, 1) at 25 Hz: 25 steps


def test_out_and_streams_out_together_write_both(tmp_path: Path, media_folder: Path, cache_dir: Path) -> None:
    with pytest.warns(MmfuseWarning):
        path, _ = extract_folder(
            media_folder,
            tmp_path / "ds",
            streams_out=tmp_path / "streams",
            extra=_extra(tmp_path / "extra", media_folder),
            extractors=_fast(),
            rate=5.0,
            cache_dir=cache_dir,
        )
    ds = open_dataset(path)
    assert "image" in ds.modalities and ds.modalities["image"].kind == "interval"
    assert (tmp_path / "streams" / "weather__weather" / "image.npz").is_file()
    assert (path / "extraction.json").is_file()


def test_extra_stream_named_like_an_extracted_one_is_refused(tmp_path: Path, media_folder: Path) -> None:
    root = tmp_path / "extra"
    (root / "audio_lld").mkdir(parents=True)
    np.savez(root / "audio_lld" / "fox__fox.npz", timestamps=[0.0, 0.1], values=[[1.0], [2.0]])
    with pytest.raises(DataError, match=r"extra stream 'audio_lld' has the name of an extracted stream"):
        extract_folder(
            media_folder, None, streams_out=tmp_path / "s", extra=root, extractors=_fast(), cache_dir=tmp_path / "c"
        )
    assert not (tmp_path / "s").exists()


def test_extra_and_output_errors(tmp_path: Path, media_folder: Path) -> None:
    with pytest.raises(ValueError, match=r"needs 'out' .* or 'streams_out'"):
        extract_folder(media_folder, None)
    with pytest.raises(DataError, match=r"extra streams .* does not exist"):
        extract_folder(media_folder, None, streams_out=tmp_path / "s", extra=tmp_path / "missing")
    (tmp_path / "empty" / "image").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no stream files found; .*ROOT/<modality>/<recording>"):
        extract_folder(media_folder, None, streams_out=tmp_path / "s", extra=tmp_path / "empty")
    (tmp_path / "s").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        extract_folder(media_folder, None, streams_out=tmp_path / "s")


def test_cli_streams_out_prints_one_line_per_file_when_not_a_terminal(
    tmp_path: Path, media_folder: Path, cache_dir: Path
) -> None:
    from typer.testing import CliRunner

    from mmfuse.cli._app import app

    args = ["extract", str(media_folder), "--streams-out", str(tmp_path / "s"), "-e", "audio,frames"]
    res = CliRunner().invoke(app, [*args, "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("extract ")]
    assert [line.split(":")[0] for line in lines] == ["extract 1/3", "extract 2/3", "extract 3/3"]
    assert "s of media in" in lines[0] and "\x1b[" not in res.output  # plain lines, no bar
    assert f"Wrote the stream files to {tmp_path / 's'}" in res.output
    neither = CliRunner().invoke(app, ["extract", str(media_folder)])
    assert neither.exit_code == 2 and "--streams-out" in neither.output


def test_alignment_warnings_name_the_users_input_not_a_temporary_folder(
    tmp_path: Path, media_folder: Path, cache_dir: Path
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label,split\nfox/fox.mp4,a,train\nweather/weather.mp4,b,train\nstella/stella.wav,a,\n")
    with pytest.warns(MmfuseWarning) as caught:
        extract_folder(media_folder, tmp_path / "ds", extractors=_fast(), cache_dir=cache_dir, labels=labels)
    texts = [str(w.message) for w in caught]
    assert any(t.startswith(f"{labels}: ") for t in texts), texts
    assert not any(".extract-" in t for t in texts), texts
