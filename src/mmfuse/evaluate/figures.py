r"""The figure kit shared by the report and the analyses: one palette, one DPI, one set of escapers.

Every figure of ``report.html`` and of ``analysis/`` is drawn on matplotlib's Agg canvas directly, without
``pyplot``, so writing a report never changes the user's matplotlib backend or open figures. Text that comes
from the user (fusion names, metric columns, modality names) passes through one escaper per target:
:func:`mpl_text` for figure text, :func:`html_escape` for HTML (the same function jinja2's autoescape uses) and
:func:`md_escape` for Markdown.

Example:
    >>> from mmfuse.evaluate.figures import PALETTE, colour, md_escape, mpl_text
    >>> colour(0) == colour(len(PALETTE))
    True
    >>> print(md_escape("a_b|c"), mpl_text("cost $5"))
    a\_b\|c cost \$5
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from markupsafe import escape
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from mmfuse._io import atomic_write

__all__ = [
    "BASELINE_COLOR",
    "BEST_COLOR",
    "DPI",
    "GRID_COLOR",
    "MAIN_COLOR",
    "MUTED_COLOR",
    "PALETTE",
    "TRAIN_COLOR",
    "VAL_COLOR",
    "colour",
    "html_escape",
    "md_escape",
    "mpl_text",
    "png_bytes",
    "png_data_uri",
    "save_png",
    "style_axes",
    "text_width_px",
]

DPI = 100
"""Dots per inch of every PNG the report and the analyses write."""

PALETTE = (
    "#2563eb",
    "#ea580c",
    "#16a34a",
    "#dc2626",
    "#9333ea",
    "#0891b2",
    "#ca8a04",
    "#db2777",
    "#4b5563",
    "#65a30d",
    "#7c3aed",
    "#0d9488",
    "#b45309",
    "#be123c",
    "#1d4ed8",
    "#15803d",
)
"""Series colours, in order; :func:`colour` cycles through them."""

MAIN_COLOR = PALETTE[0]
BEST_COLOR = PALETTE[2]
TRAIN_COLOR = PALETTE[0]
VAL_COLOR = PALETTE[1]
BASELINE_COLOR = "#9333ea"  # unimodal baselines: distinct from every fusion marker
MUTED_COLOR = "#6b7280"
GRID_COLOR = "#e5e7eb"

# The Markdown punctuation that acts inside a line or a table cell (CommonMark backslash escapes).
_MD_SPECIAL = frozenset("\\`*_{}[]<>|~&#")


def colour(i: int) -> str:
    """A distinct colour for the ``i``-th series (the palette repeats after 16)."""
    return PALETTE[i % len(PALETTE)]


def mpl_text(text: object, limit: int = 40) -> str:
    """User text made safe for matplotlib: ``$`` would start mathtext; very long names are shortened."""
    value = str(text)
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value.replace("$", r"\$")


def html_escape(value: object) -> str:
    """HTML-escape ``value`` (``&``, ``<``, ``>``, quotes): the escaper jinja2's autoescape applies."""
    return str(escape(str(value)))


def md_escape(text: object) -> str:
    """Backslash-escape the Markdown punctuation that acts inside a line or a table cell."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(text))


def style_axes(ax: Any, *, labelsize: float = 9) -> None:
    """The house style: no top/right spines, a light grid behind the data."""
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=labelsize)
    ax.grid(True, axis="both", color=GRID_COLOR, linewidth=0.8)
    ax.set_axisbelow(True)


def text_width_px(texts: Iterable[str], size: float, *, family: str = "sans-serif", weight: str = "normal") -> float:
    """The widest rendered width of ``texts`` in pixels at :data:`DPI`.

    Figures are laid out from these measurements instead of matplotlib's constrained layout, which draws every
    figure twice.
    """
    renderer = RendererAgg(1, 1, DPI)
    prop = FontProperties(size=size, family=family, weight=weight)
    widths = [renderer.get_text_width_height_descent(t.replace(r"\$", "$"), prop, ismath=False)[0] for t in texts]
    return max(widths, default=0.0)


def png_bytes(fig: Figure) -> bytes:
    """``fig`` as PNG bytes at :data:`DPI` on a white background (no timestamp metadata); the figure is cleared."""
    FigureCanvasAgg(fig)  # attaches an Agg canvas to this figure only; pyplot and the global backend stay untouched
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    fig.clear()
    return buffer.getvalue()


def png_data_uri(fig: Figure) -> str:
    """``fig`` as a ``data:image/png;base64,...`` URI for embedding in HTML."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig)).decode("ascii")


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG file (atomically) and release it."""
    data = png_bytes(fig)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), suffix=".png")
