"""``mmfuse version``, ``datasets`` and ``fusions``: what is installed and registered."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mmfuse import __version__
from mmfuse.cli._common import console

__all__ = ["datasets", "fusions", "version"]


def version() -> None:
    """Print the mmfuse version."""
    console.print(f"mmfuse {__version__}")


def datasets(
    full: Annotated[bool, typer.Option("--full", help="Show each data set's whole description.")] = False,
) -> None:
    """List the registered data sets and whether each is available on this machine."""
    from mmfuse.data import dataset_info, list_datasets

    table = Table(title="mmfuse data sets", show_lines=full)
    table.add_column("name", no_wrap=True)
    table.add_column("available", no_wrap=True)
    table.add_column("where", overflow="fold")
    table.add_column("description")
    for name in list_datasets():
        info = dataset_info(name)
        text = info.description if full else info.description.split(": ")[0]  # the title before the colon
        table.add_row(name, "[green]yes[/]" if info.available else "[red]no[/]", info.where, text)
    console.print(table)


def fusions() -> None:
    """List the registered fusions."""
    from mmfuse.fusion import get_fusion_class, list_fusions

    table = Table(title="mmfuse fusions")
    table.add_column("name")
    table.add_column("causal")
    table.add_column("summary")
    for name in list_fusions():
        cls = get_fusion_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        summary = doc[0].replace("``", "`") if doc else ""  # reST literals read as Markdown ones
        table.add_row(name, str(getattr(cls, "is_causal", "?")), escape(summary))
    console.print(table)
