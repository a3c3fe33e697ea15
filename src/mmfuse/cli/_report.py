"""``mmfuse report``: re-render the report of a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli._common import console

__all__ = ["report"]


def report(run_dir: Annotated[Path, typer.Argument(help="A run directory written by 'mmfuse compare'.")]) -> None:
    """Re-render report.html and summary.md of a compare run directory."""
    from mmfuse.evaluate.report import write_report, write_summary_markdown

    write_summary_markdown(run_dir)
    path = write_report(run_dir)
    console.print(f"Wrote {path}")
