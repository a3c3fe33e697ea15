"""``mmfuse align``: a folder of per-recording stream files -> one native data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli import _options as opt
from mmfuse.cli._common import console, show_validation

__all__ = ["align"]


def _average_option(text: str | None) -> bool | list[str] | None:
    """``--average``: None (streams.json decides), 'all', 'none', or modality names."""
    if text is None:
        return None
    if text.strip().lower() in ("all", "none"):
        return text.strip().lower() == "all"
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"The '--average' option takes 'all', 'none' or modality names. Got {text!r} instead.")
    return names


def align(
    src_dir: Annotated[Path, typer.Argument(help="Folder of recordings: <recording>/<modality>.csv|npz|parquet.")],
    out: opt.DataSetOutOption,
    rate: opt.RateOption = None,
    reference: opt.ReferenceOption = None,
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", help="Seconds within which a step counts as observed.")
    ] = None,
    gap_threshold: Annotated[float, typer.Option("--gap-threshold", help="Report gaps longer than this (s).")] = 1.0,
    label_tolerance: Annotated[
        float | None,
        typer.Option("--label-tolerance", help="Seconds a point step label holds (default: its median interval)."),
    ] = None,
    average: Annotated[
        str | None,
        typer.Option(
            "--average",
            help="Average each grid step's window instead of reading the grid point: 'all', 'none' or modality "
            "names (comma-separated). Default: streams.json's 'average' entries.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Data set name (reports are titled after it; default: the folder).")
    ] = None,
    no_carve_val: Annotated[
        bool,
        typer.Option("--no-carve-val", help="Keep train groups in train when the split column names no 'val'."),
    ] = False,
    overwrite: opt.OverwriteDataSetOption = False,
) -> None:
    """Align a folder of per-recording stream files into a native data set, with a validation report."""
    from mmfuse.align import align_folder

    path, report = align_folder(
        src_dir,
        out,
        rate=rate,
        reference=reference,
        tolerance=tolerance,
        gap_threshold=gap_threshold,
        label_tolerance=label_tolerance,
        average=_average_option(average),
        name=name,
        carve_val=not no_carve_val,
        overwrite=overwrite,
    )
    show_validation(report, path)
    console.print(f"Wrote data set {path} (the full validation report: {path / 'validation.md'}).")
