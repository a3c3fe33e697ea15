"""Interval ends do not count: rows cover ``[start, end)``, so a recording's grid stops before its last end.

Before this rule, a recording whose interval stream ended exactly on a grid point got one extra step where every
other stream was masked (62 of 62 recordings of a spoken-digit data set had T + 1 steps).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from mmfuse.align import Timeline, align_folder
from mmfuse.data import open_dataset
from mmfuse.errors import MmfuseWarning


def _csv(path: Path, header: str, rows: np.ndarray) -> None:
    path.write_text(header + "\n" + "\n".join(",".join(repr(float(x)) for x in row) for row in rows) + "\n")


def _folder(root: Path, *, image_rows: list[tuple[float, float]], audio_end: float | None = 0.39) -> Path:
    """Two recordings: 100 Hz audio frames (points) up to ``audio_end`` and an image stream of interval rows."""
    src = root / "src"
    for rec in ("r1", "r2"):
        d = src / rec
        d.mkdir(parents=True)
        if audio_end is not None:
            t = np.round(np.arange(0.0, audio_end + 1e-9, 0.01), 6)
            _csv(d / "audio.csv", "timestamp,e0", np.column_stack([t, np.sin(t)]))
        rows = np.array([(a, b, 1.0) for a, b in image_rows])
        _csv(d / "image.csv", "timestamp,end,v", rows)
    (src / "labels.csv").write_text("recording,label,group\nr1,a,g1\nr2,b,g2\n")
    return src


@pytest.mark.parametrize(
    ("include_end", "end", "expected"),
    [(True, 0.4, 5), (False, 0.4, 4), (False, 0.41, 5), (False, 0.39, 4), (False, 0.0, 1), (True, 0.0, 1)],
)
def test_grid_end_is_inclusive_or_half_open(include_end: bool, end: float, expected: int) -> None:
    assert len(Timeline.grid(10.0, 0.0, end, include_end=include_end)) == expected


def test_an_interval_ending_on_a_grid_point_adds_no_step(tmp_path: Path) -> None:
    src = _folder(tmp_path, image_rows=[(0.0, 0.4)])  # a 0.4 s digit: the image ends on the 25 Hz grid point 0.4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path, _ = align_folder(src, tmp_path / "out", rate=25.0, split_fractions=(0.5, 0.0, 0.5))
    assert not [w for w in caught if "end of an interval" in str(w.message)]  # no step is covered by an end only
    ds = open_dataset(path)
    for i in range(len(ds)):
        rec = ds[i]
        assert len(rec) == 10  # 0, 0.04, ..., 0.36: not 11
        assert rec.masks["image"].all() and rec.masks["audio"].all()


def test_a_point_stream_ending_on_the_grid_keeps_its_last_step(tmp_path: Path) -> None:
    src = _folder(tmp_path, image_rows=[(0.0, 0.4)], audio_end=0.4)  # a real sample at 0.4: the step stays
    path, _ = align_folder(src, tmp_path / "out", rate=25.0, split_fractions=(0.5, 0.0, 0.5))
    rec = open_dataset(path)[0]
    assert len(rec) == 11
    assert rec.masks["audio"][-1] and not rec.masks["image"][-1]


def test_a_step_covered_only_by_an_interval_end_is_warned(tmp_path: Path) -> None:
    # two image rows with a one-step hole at 0.2 (a row ends there, the next starts at 0.24); no audio
    src = _folder(tmp_path, image_rows=[(0.0, 0.2), (0.24, 0.4)], audio_end=None)
    with pytest.warns(MmfuseWarning, match=r"2 step\(s\) in 2 recording\(s\).*'r1' at 0\.2 s.*\[start, end\)"):
        path, _ = align_folder(src, tmp_path / "out", rate=25.0, split_fractions=(0.5, 0.0, 0.5))
    rec = open_dataset(path)[0]
    assert len(rec) == 10 and not rec.masks["image"][5] and rec.masks["image"][[4, 6]].all()
