"""Options that several commands share: each declared once, with its flags, bounds and help.

A command imports the module (``from mmfuse.cli import _options as opt``), names the type and keeps its own default
in its signature (``dataset: opt.DatasetOption = "basic-motions"``), so its ``--help``, its experiment-file key
(:mod:`mmfuse.cli._experiment`) and its behaviour stay the command's own. Where commands word an option's help
differently (``--fusion``, ``--seeds``, ``--jobs``, ``--preset``, ``--executor``), a small function gives the shared
flags and bounds with the command's help: ``Annotated[int, opt.seeds_option("...")]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "DataDirOption",
    "DataSetOutOption",
    "DatasetOption",
    "DeviceOption",
    "EpochsOption",
    "HiddenOption",
    "LogOption",
    "OverwriteDataSetOption",
    "PluginOption",
    "RateOption",
    "RayAddressOption",
    "ReferenceOption",
    "TrackingUriOption",
    "executor_option",
    "fusion_option",
    "jobs_option",
    "preset_option",
    "seeds_option",
]

DatasetOption = Annotated[
    str, typer.Option("--dataset", "-d", help="Registered data-set name or a native data-set folder.")
]
"""``--dataset / -d`` of the commands that train (compare, tune, train)."""

DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Folder of local data sets (else $MMFUSE_DATA_DIR).")
]
"""``--data-dir``: where registered data sets find their raw files."""

DeviceOption = Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")]
"""``--device`` (default ``"auto"`` in every command)."""

EpochsOption = Annotated[int | None, typer.Option("--epochs", "-e", min=1, help="Override the preset's epochs.")]
"""``--epochs / -e`` over the preset's."""

HiddenOption = Annotated[int | None, typer.Option("--hidden", min=1, help="Override the hidden size H.")]
"""``--hidden`` over the preset's hidden size."""

LogOption = Annotated[
    list[str] | None,
    typer.Option(
        "--log",
        help="Log every run to an experiment tracker: 'tensorboard' (events in OUT/tensorboard/) or 'mlflow' "
        "(default store OUT/mlflow.db); repeat or comma-separate for both. Needs the 'tracking' extra.",
    ),
]
"""``--log`` (compare, tune, train)."""

TrackingUriOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI for --log mlflow (sqlite:///file.db, http://host:5000; default OUT/mlflow.db).",
    ),
]
"""``--tracking-uri`` of ``--log mlflow``."""

RayAddressOption = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster for --executor ray ('auto', ray://host:10001); default local."),
]
"""``--ray-address`` of ``--executor ray``."""

PluginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin",
        help="Import this module first so the components it registers (fusions, data sets, metrics, ...) "
        "can be used; repeat or comma-separate.",
    ),
]
"""``--plugin``: every command gets it (``_app.py`` adds it)."""

DataSetOutOption = Annotated[Path, typer.Option("--out", "-o", help="Where to write the native data set.")]
"""``--out / -o`` of the commands that write a native data set (align, import ...)."""

OverwriteDataSetOption = Annotated[bool, typer.Option("--overwrite", help="Replace an existing data set at --out.")]
"""``--overwrite`` of the commands that write a native data set."""

RateOption = Annotated[float | None, typer.Option("--rate", help="Align onto a fixed grid at this rate (Hz).")]
"""``--rate`` of the commands that align streams (align, import folders)."""

ReferenceOption = Annotated[
    str | None, typer.Option("--reference", help="Align onto this modality's timestamps instead of a grid.")
]
"""``--reference`` of the commands that align streams onto a modality's timestamps."""


def fusion_option(help_text: str) -> Any:
    """``--fusion / -f`` with the command's help (what it does with the names)."""
    return typer.Option("--fusion", "-f", help=help_text)


def seeds_option(help_text: str) -> Any:
    """``--seeds / -s`` (at least 1) with the command's help."""
    return typer.Option("--seeds", "-s", min=1, help=help_text)


def jobs_option(help_text: str) -> Any:
    """``--jobs / -j`` (at least 1) with the command's help (what runs at once)."""
    return typer.Option("--jobs", "-j", min=1, help=help_text)


def preset_option(help_text: str) -> Any:
    """``--preset`` (a preset file, a 'mmfuse tune' folder or its best.json) with the command's help."""
    return typer.Option("--preset", help=help_text)


def executor_option(help_text: str) -> Any:
    """``--executor`` ('local' or 'ray') with the command's help (what runs where)."""
    return typer.Option("--executor", help=help_text)
