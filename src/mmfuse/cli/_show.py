"""How ``align``, ``import`` and ``extract`` show what they wrote: short summaries, each warning once."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from rich.markup import escape
from rich.table import Table

from mmfuse.cli._app import console, err_console

__all__ = ["install_warning_display", "show_validation", "show_warnings"]

MAX_WARNINGS = 5
"""Warnings printed in full; the rest are counted and left to the report files."""

_shown: set[str] = set()  # texts already printed by the warning display (so a report does not repeat them)


def show_warnings(items: Sequence[str], where: str, *, limit: int = MAX_WARNINGS) -> None:
    """Print the first ``limit`` warnings, one line each, and how many more ``where`` lists.

    A text the warning display already printed (the library warned it and also put it in its report) is not
    printed again.
    """
    items = [t for t in items if t not in _shown]
    for text in items[:limit]:
        err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)
    if len(items) > limit:
        err_console.print(
            f"[yellow]warning:[/] … and {len(items) - limit} more; all {len(items)} are in {escape(where)}",
            highlight=False,
            soft_wrap=True,
        )


def show_validation(report: Any, path: Path) -> None:
    """One row per stream of a :class:`~mmfuse.align.ValidationReport`, the first warnings, and where the rest is."""
    summary = report.summary()
    table = Table(title=f"{len(report.recordings)} recording(s) aligned", title_justify="left")
    for col, justify in (
        ("stream", "left"),
        ("kind", "left"),
        ("D", "right"),
        ("present in", "right"),
        ("coverage %", "right"),
        ("min %", "right"),
        ("interpolated %", "right"),
        ("gaps", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for name, s in summary.items():
        table.add_row(
            escape(name),
            "/".join(s["kinds"]),
            "/".join(map(str, s["dims"])) or "-",
            f"{s['present_in']}/{s['recordings']}",
            f"{100 * s['coverage']:.1f}",
            f"{100 * s['min_coverage']:.1f}",
            f"{100 * s['interpolated']:.1f}",
            str(s["gaps"]),
        )
    console.print(table)
    if report.label_coverage:
        steps = sum(int(c["steps"]) for c in report.label_coverage.values())
        labelled = sum(int(c["labelled"]) for c in report.label_coverage.values())
        console.print(f"step labels: {labelled} of {steps} steps labelled ({100 * labelled / max(steps, 1):.1f} %)")
    show_warnings(list(report.errors) + list(report.warnings), str(path / "validation.md"))


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    from mmfuse.errors import MmfuseWarning

    kind = "" if issubclass(category, MmfuseWarning) else f" ({category.__name__})"
    _shown.add(str(message))
    err_console.print(f"[yellow]warning{kind}:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def install_warning_display() -> Callable[[], None]:
    """Show Python warnings as one ``warning: ...`` line each on stderr (no source line, no code).

    Returns:
        A function that puts the previous display back (the CLI calls it when the command ends).
    """
    previous = warnings.showwarning
    warnings.showwarning = _show_warning

    def restore() -> None:
        warnings.showwarning = previous

    return restore
