"""The figure kit: one palette, one DPI and one escaper per target, shared by the report and the analyses."""

from __future__ import annotations

import struct
from importlib import resources
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from mmfuse.evaluate import figures
from mmfuse.evaluate.analysis.robustness import robustness_grid


def _png_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a_b", r"a\_b"), ("x|y", r"x\|y"), ("#h", r"\#h"), ("{k}", r"\{k\}"), ("~&<>", r"\~\&\<\>"), ("plain", "plain")],
)
def test_md_escape_covers_the_punctuation_of_both_former_escapers(text: str, expected: str) -> None:
    assert figures.md_escape(text) == expected


def test_html_escape_is_autoescapes_escaper() -> None:
    assert figures.html_escape("<b a='1'>&</b>") == "&lt;b a=&#39;1&#39;&gt;&amp;&lt;/b&gt;"


def test_mpl_text_shortens_and_escapes_mathtext() -> None:
    assert figures.mpl_text("$" * 3) == r"\$\$\$"
    assert figures.mpl_text("x" * 50, 10) == "x" * 9 + "…"


def test_report_and_analysis_figures_share_one_dpi(tmp_path: Path) -> None:
    # A 3 x 2 inch figure is 300 x 200 px at the kit's 100 DPI, whether embedded by the report or saved by an analysis.
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([0, 1])
    saved = figures.save_png(fig, tmp_path / "a.png").read_bytes()
    fig2 = Figure(figsize=(3, 2))
    fig2.add_subplot().plot([0, 1])
    embedded = figures.png_bytes(fig2)
    assert _png_size(saved) == _png_size(embedded) == (3 * figures.DPI, 2 * figures.DPI)
    # an analysis figure is drawn in the kit's palette (the analyses have no styling of their own)
    curves = {"a": {"all": ([0.0, 1.0], [1.0, 0.5])}, "b": {"all": ([0.0, 1.0], [0.9, 0.4])}}
    grid = robustness_grid(curves, ["all"], "level", "accuracy", "t")
    assert [line.get_color() for line in grid.axes[0].lines] == [figures.colour(0), figures.colour(1)]


def test_templates_ship_as_package_data() -> None:
    folder = resources.files("mmfuse.evaluate").joinpath("templates")
    names = {p.name for p in folder.iterdir()}
    assert {"report.html.j2", "summary.md.j2", "report.css", "_macros.html.j2"} <= names
