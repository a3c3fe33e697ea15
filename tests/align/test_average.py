"""Averaging dense streams into grid windows: property-tested against a naive per-window mean, and in folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfuse.align import Stream, Timeline, align_folder, align_stream
from mmfuse.data import open_dataset

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def dense_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float, str]:
    """A stream with clustered and spread-out samples, and a grid rate (sometimes finer than the stream)."""
    steps = draw(st.lists(st.one_of(st.floats(0.001, 0.02), st.floats(0.02, 0.6)), min_size=1, max_size=120))
    t = np.cumsum(np.asarray(steps, dtype=np.float64))
    d = draw(st.integers(1, 3))
    flat = draw(st.lists(st.floats(-50, 50, width=32), min_size=t.size * d, max_size=t.size * d))
    vals = np.asarray(flat, dtype=np.float32).reshape(t.size, d)
    rate = draw(st.sampled_from([1.0, 2.5, 10.0, 25.0, 100.0]))
    kind = draw(st.sampled_from(["continuous", "discrete"]))
    return t, vals, rate, kind


@SETTINGS
@given(dense_case())
def test_windows_average_every_sample_inside_them(case):
    t, vals, rate, kind = case
    stream = Stream.create("s", t, vals, kind=kind)
    windows = Timeline.windows(rate, float(t[0]), float(t[-1]))
    grid = Timeline.grid(rate, float(t[0]), float(t[-1]))
    np.testing.assert_allclose(windows.times + 0.5 / rate, grid.times, atol=1e-9)  # centred on the grid points
    got = align_stream(stream, windows)
    point = align_stream(stream, Timeline.from_points(0.5 * (windows.times + windows.ends)))
    for k, (a, b) in enumerate(zip(windows.times, windows.ends, strict=True)):
        inside = (t >= a) & (t < b)
        if inside.any():  # the naive mean of the samples in [a, b)
            assert got.mask[k] and not got.interpolated[k]
            naive = vals[inside].astype(np.float64).mean(axis=0)
            np.testing.assert_allclose(got.values[k], naive, rtol=1e-5, atol=1e-4)
        else:  # an empty window is read at its centre, as point sampling would
            assert got.mask[k] == point.mask[k]
            np.testing.assert_allclose(got.values[k], point.values[k], rtol=1e-6, atol=1e-6)
    # windows tile [start - h/2, last point + h/2) without gaps or overlaps: every sample there is in exactly one
    # (the last one ends half a step after the last grid point: later samples, under half a step, are unused)
    np.testing.assert_array_equal(windows.ends[:-1], windows.times[1:])
    used = t[t < windows.ends[-1]]
    which = np.searchsorted(windows.times, used, side="right") - 1
    assert which.min() >= 0 and np.all(used < windows.ends[which])
    assert np.all(t[t >= windows.ends[-1]] < windows.ends[-1] + 0.5 / rate + 1e-9)  # the unused tail: < h/2


def test_averaging_uses_every_frame_where_point_sampling_reads_one_in_ten():
    t = 0.005 + np.arange(200) / 100  # 100 Hz frames stamped at their centres, 2 s
    x = np.sin(2 * np.pi * 13 * t)[:, None]  # 13 Hz: aliased by 10 Hz point sampling
    s = Stream.create("lld", t, x)
    avg = align_stream(s, Timeline.windows(10.0, t[0], t[-1]))
    expected = x[: 19 * 10 + 5].astype(np.float64)  # window k holds frames 10k-5 .. 10k+4 (the first holds 5)
    np.testing.assert_allclose(avg.values[1, 0], expected[5:15].mean(), atol=1e-6)
    assert avg.mask.all() and len(avg.values) == 20


def _folder(tmp: Path, *, streams_json: dict | None = None) -> Path:
    src = tmp / "src"
    rng = np.random.default_rng(1)
    for i, rec in enumerate(["a", "b", "c"]):
        (src / rec).mkdir(parents=True)
        t = 0.005 + np.arange(100 + 10 * i) / 100  # 100 Hz
        np.savez(src / rec / "lld.npz", timestamps=t, values=rng.normal(size=(t.size, 2)))
        tv = np.arange(5 + i) / 4  # 4 Hz: sparser than the 10 Hz grid
        np.savez(src / rec / "video.npz", timestamps=tv, values=rng.normal(size=(tv.size, 3)))
    (src / "labels.csv").write_text("recording,label\na,x\nb,y\nc,x\n")
    if streams_json is not None:
        (src / "streams.json").write_text(json.dumps(streams_json))
    return src


def test_align_folder_averages_the_named_modalities(tmp_path):
    src = _folder(tmp_path)
    path, _ = align_folder(src, tmp_path / "ds", rate=10.0, average=["lld"])
    plain, _ = align_folder(src, tmp_path / "plain", rate=10.0)
    ds, base = open_dataset(path), open_dataset(plain)
    assert json.loads((path / "meta.json").read_text())["extra_meta"]["align"]["average"] == ["lld"]
    for i in range(len(ds)):
        rec, ref = ds[i], base[i]
        np.testing.assert_allclose(rec.timestamps, ref.timestamps)  # the grid points either way
        np.testing.assert_array_equal(rec.values["video"], ref.values["video"])  # not averaged: as before
        raw = np.load(src / rec.id / "lld.npz")
        t, v = raw["timestamps"], raw["values"]
        for k, x in enumerate(rec.timestamps):
            inside = (t >= x - 0.05) & (t < x + 0.05)
            if inside.any():
                np.testing.assert_allclose(rec.values["lld"][k], v[inside].mean(axis=0), rtol=1e-5, atol=1e-5)
            else:  # past the 100 Hz stream's end (the video runs longer): masked, never filled
                assert not rec.masks["lld"][k] and not rec.values["lld"][k].any()
    # streams.json says the same thing, and the argument overrides it
    src2 = _folder(tmp_path / "two", streams_json={"lld": {"average": True}})
    again, _ = align_folder(src2, tmp_path / "ds2", rate=10.0)
    off, _ = align_folder(src2, tmp_path / "ds3", rate=10.0, average=False)
    np.testing.assert_allclose(open_dataset(again)[0].values["lld"], ds[0].values["lld"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(open_dataset(off)[0].values["lld"], base[0].values["lld"], rtol=1e-5, atol=1e-6)


def test_average_needs_a_grid_and_known_names(tmp_path):
    src = _folder(tmp_path)
    with pytest.raises(ValueError, match="only on a grid"):
        align_folder(src, tmp_path / "ds", reference="video", average=True)
    with pytest.raises(ValueError, match=r"names unknown modalities \['audio'\]"):
        align_folder(src, tmp_path / "ds", rate=10.0, average=["audio"])
    (src / "streams.json").write_text(json.dumps({"lld": {"average": "yes"}}))
    with pytest.raises(Exception, match="'average' must be true or false"):
        align_folder(src, tmp_path / "ds", rate=10.0)
    assert not (tmp_path / "ds").exists()
