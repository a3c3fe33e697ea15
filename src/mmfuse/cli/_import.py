"""``mmfuse import csd | mmsa | folders``: data in other tools' formats into the native format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mmfuse.cli import _options as opt
from mmfuse.cli._common import MAX_WARNINGS, console, err_console, show_warnings

__all__ = ["IMPORT_HELP", "csd", "folders", "mmsa"]

IMPORT_HELP = "Import data written by other tools (CMU SDK .csd, MMSA pickles, feature folders) as a native data set."


def _show(path: Path, report: Any) -> None:
    """The import report's summary, what was left out or masked (counts), the first warnings, and where the rest is."""
    console.print(report.summary(), highlight=False, soft_wrap=True)
    for title, table in (("masked (kept)", report.missing), ("left out", report.skipped)):
        for key, names in sorted(table.items()):
            if names:
                shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
                console.print(f"  {title}: {escape(key)}: {len(names)} ({escape(shown)})", highlight=False)
    for note in report.mismatched[:MAX_WARNINGS]:
        err_console.print(f"[yellow]mismatched:[/] {escape(note)}", highlight=False, soft_wrap=True)
    show_warnings(report.warnings, str(path / "import_report.md"))
    console.print(f"Wrote data set {path} (import_report.json, import_report.md inside).")


_NAME_HELP = "Data set name (reports are titled after it; default: the output folder's / source's name)."


def _pairs(items: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"The '{option}' option takes NAME=VALUE. Got {item!r} instead.")
        out[key] = value
    return out


def csd(
    seq: Annotated[
        list[str], typer.Option("--seq", "-s", help="MODALITY=FILE.csd, once per sequence (the reference included).")
    ],
    labels: Annotated[
        Path, typer.Option("--labels", "-l", help="Label .csd (segments) or CSV video,label[,start,end].")
    ],
    out: opt.DataSetOutOption,
    reference: Annotated[
        str, typer.Option("--reference", help="The modality whose intervals are the steps.")
    ] = "words",
    label_column: Annotated[
        str, typer.Option("--label-column", help="Label column: an index or a dimension / column name.")
    ] = "0",
    task: Annotated[
        str, typer.Option("--task", help="regression, or binary (negative < 0 <= positive).")
    ] = "regression",
    splits: Annotated[
        Path | None, typer.Option("--splits", help="JSON {split: [video ids]} or CSV video,split (default: seeded).")
    ] = None,
    collapse: Annotated[str, typer.Option("--collapse", help="mean (overlap-weighted), max, first or last.")] = "mean",
    duplicates: Annotated[str, typer.Option("--duplicates", help="Rows sharing a start: error, mean, first, last.")] = (
        "error"
    ),
    name: Annotated[str | None, typer.Option("--name", help=_NAME_HELP)] = None,
    overwrite: opt.OverwriteDataSetOption = False,
) -> None:
    """Import CMU Multimodal SDK computational sequences, aligned at word level onto --reference."""
    from mmfuse.importers import import_csd

    column: int | str = int(label_column) if label_column.lstrip("-").isdigit() else label_column
    path, report = import_csd(
        _pairs(seq, "--seq"),
        out,
        labels=labels,
        reference=reference,
        label_column=column,
        task=task,
        splits=splits,
        collapse=collapse,
        duplicates=duplicates,
        name=name,
        overwrite=overwrite,
    )
    _show(path, report)


def mmsa(
    pickle_file: Annotated[Path, typer.Argument(help="An MMSA feature pickle (train / valid / test).")],
    out: opt.DataSetOutOption,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Required: loading a pickle can run arbitrary code. Trust it first.")
    ] = False,
    task: Annotated[
        str, typer.Option("--task", help="regression, or binary (negative < 0 <= positive).")
    ] = "regression",
    name: Annotated[str | None, typer.Option("--name", help=_NAME_HELP)] = None,
    overwrite: opt.OverwriteDataSetOption = False,
) -> None:
    """Import an MMSA feature pickle (refused without --allow-pickle)."""
    from mmfuse.importers import import_mmsa

    path, report = import_mmsa(pickle_file, out, allow_pickle=allow_pickle, task=task, name=name, overwrite=overwrite)
    _show(path, report)


def folders(
    root: Annotated[Path, typer.Argument(help="Folder with one sub-folder per modality, one file per video.")],
    out: opt.DataSetOutOption,
    rate: opt.RateOption = None,
    reference: opt.ReferenceOption = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="Labels CSV (default ROOT/labels.csv).")] = None,
    kind: Annotated[
        list[str] | None, typer.Option("--kind", help="MODALITY=KIND (continuous, discrete, embedding, interval).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help=_NAME_HELP)] = None,
    overwrite: opt.OverwriteDataSetOption = False,
) -> None:
    """Import per-modality feature folders, matching videos by file name; missing modalities are masked."""
    from mmfuse.importers import import_feature_folders

    path, report = import_feature_folders(
        root,
        out,
        rate=rate,
        reference=reference,
        labels=labels,
        kinds=_pairs(kind or [], "--kind"),
        name=name,
        overwrite=overwrite,
    )
    _show(path, report)
