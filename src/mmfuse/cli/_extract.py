"""``mmfuse extract``: raw video/audio files -> feature streams -> one aligned native data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mmfuse.cli._common import console, err_console, split_names

__all__ = ["extract"]


def extract(
    media_dir: Annotated[Path, typer.Argument(help="Folder of video/audio files (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the data set (a folder).")],
    extractors: Annotated[
        list[str] | None,
        typer.Option("--extractors", "-e", help="Extractors (repeat or comma-separate): audio, speech, face, frames."),
    ] = None,
    rate: Annotated[float, typer.Option("--rate", min=0.0, help="Grid rate of the data set in Hz.")] = 10.0,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="CSV with columns file,label[,split][,group] (default: subfolder names)."),
    ] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run the per-file work as Ray tasks.")] = False,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster address (implies --ray); default: a local Ray.")
    ] = None,
    frame_model: Annotated[
        Path | None,
        typer.Option(
            "--frame-model", help="Image model file for the frames extractor (TorchScript .pt or torch.export .pt2)."
        ),
    ] = None,
    frame_rate: Annotated[float, typer.Option("--frame-rate", min=0.0, help="Frame sampling rate (Hz).")] = 5.0,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Extraction cache (default $MMFUSE_CACHE_DIR/extract).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing data set.")] = False,
) -> None:
    """Extract audio (openSMILE eGeMAPS), speech (Whisper + MiniLM), face and frame streams into a data set."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmfuse.extract import DEFAULT_EXTRACTORS, create_extractor, extract_folder, find_media

    names = split_names(extractors) or list(DEFAULT_EXTRACTORS)
    objs: list[Any] = []
    for n in names:
        if n == "frames":
            kwargs: dict[str, Any] = {"rate": frame_rate}
            if frame_model is not None:
                kwargs.update(encoder="torch-file", encoder_kwargs={"path": frame_model})
            objs.append(create_extractor("frames", **kwargs))
        elif n == "face":
            objs.append(create_extractor("face", rate=frame_rate))
        else:
            objs.append(create_extractor(n))
    n_files = len(find_media(media_dir))
    with Progress(
        TextColumn("[bold]extract[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=n_files)

        def on_file(res: Any) -> None:
            progress.advance(task)
            progress.update(task, description=res.path.name)
            if res.error:
                progress.console.print(f"[yellow]failed:[/] {res.path}: {res.error}", highlight=False, soft_wrap=True)

        path, report = extract_folder(
            media_dir,
            out,
            extractors=objs,
            rate=rate,
            labels=labels,
            executor="ray" if (ray or ray_address) else "local",
            ray_address=ray_address,
            cache_dir=cache_dir,
            use_cache=not no_cache,
            overwrite=overwrite,
            on_file=on_file,
        )
    console.print(report.summary())
    for f in report.failures:
        console.print(f"[yellow]failed:[/] {f.path}: {f.error}", highlight=False, soft_wrap=True)
    console.print(f"Wrote {path}")
