"""``mmfuse extract``: raw video/audio files -> feature streams -> one aligned native data set (and/or stream files)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mmfuse.cli._common import console, err_console, split_names

__all__ = ["extract"]


def extract(
    media_dir: Annotated[Path, typer.Argument(help="Folder of video/audio files (searched recursively).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write the aligned data set (a folder).")
    ] = None,
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
            "--frame-model",
            help="Image model file for the frames extractor (TorchScript .pt or torch.export .pt2; both need "
            "--allow-unsafe-load).",
        ),
    ] = None,
    allow_unsafe_load: Annotated[
        bool,
        typer.Option(
            "--allow-unsafe-load",
            help="Allow a TorchScript or .pt2 --frame-model: loading one can run code. Trust the file first.",
        ),
    ] = False,
    frame_rate: Annotated[float, typer.Option("--frame-rate", min=0.0, help="Frame sampling rate (Hz).")] = 5.0,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Extraction cache (default $MMFUSE_CACHE_DIR/extract).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing data set.")] = False,
    streams_out: Annotated[
        Path | None,
        typer.Option(
            "--streams-out",
            help="Also write the per-recording stream files at full rate in the 'mmfuse align' layout here.",
        ),
    ] = None,
    extra: Annotated[
        Path | None,
        typer.Option(
            "--extra",
            help="Add your own streams: a folder of <modality>/<recording>.csv|npz|parquet ('import folders' "
            "layout, optional streams.json), matched by recording name.",
        ),
    ] = None,
) -> None:
    """Extract audio (openSMILE eGeMAPS), speech (Whisper + MiniLM), face and frame streams into a data set.

    Give --out for the aligned data set, --streams-out for the stream files at full rate (which 'mmfuse align'
    reads), or both.
    """
    from mmfuse.extract import DEFAULT_EXTRACTORS, create_extractor, extract_folder, find_media

    if out is None and streams_out is None:
        raise typer.BadParameter("give --out (the data set), --streams-out (the stream files) or both.")
    _silence_third_party_bars()

    names = split_names(extractors) or list(DEFAULT_EXTRACTORS)
    objs: list[Any] = []
    for n in names:
        if n == "frames":
            kwargs: dict[str, Any] = {"rate": frame_rate}
            if frame_model is not None:
                kwargs.update(
                    encoder="torch-file", encoder_kwargs={"path": frame_model, "allow_unsafe": allow_unsafe_load}
                )
            objs.append(create_extractor("frames", **kwargs))
        elif n == "face":
            objs.append(create_extractor("face", rate=frame_rate))
        else:
            objs.append(create_extractor(n))
    n_files = len(find_media(media_dir))
    settings: dict[str, Any] = {
        "extractors": objs,
        "rate": rate,
        "labels": labels,
        "executor": "ray" if (ray or ray_address) else "local",
        "ray_address": ray_address,
        "cache_dir": cache_dir,
        "use_cache": not no_cache,
        "overwrite": overwrite,
        "streams_out": streams_out,
        "extra": extra,
    }
    if err_console.is_terminal:
        path, report = _with_progress_bar(media_dir, out, n_files, settings)
    else:
        path, report = extract_folder(media_dir, out, on_file=_progress_lines(n_files), **settings)
    console.print(report.summary())
    for f in report.failures:
        console.print(f"[yellow]failed:[/] {f.path}: {f.error}", highlight=False, soft_wrap=True)
    if streams_out is not None:
        console.print(f"Wrote the stream files to {streams_out} (read them with 'mmfuse align {streams_out}')")
    if out is not None:
        console.print(f"Wrote {path}")


def _silence_third_party_bars() -> None:
    """The CLI owns the terminal: no Hugging Face or tqdm progress bar beside its own progress."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # read by every tqdm bar when it is created
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # for huggingface_hub imported after this
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:  # the extract extra brings it; without it there is no such bar
        return
    disable_progress_bars()


def _progress_lines(total: int) -> Any:
    """One plain line on stderr per finished file, for output that is not a terminal (logs, CI, nohup)."""
    done = 0

    def on_file(res: Any) -> None:
        nonlocal done
        done += 1
        head = f"extract {done}/{total}: {res.path}"
        if res.error:
            line = f"{head} failed: {res.error}"
        else:
            work = f"computed {', '.join(res.computed) or 'none'}; cached {', '.join(res.cache_hits) or 'none'}"
            line = f"{head} ({res.duration:.1f} s of media in {res.seconds:.1f} s; {work})"
        err_console.print(line, highlight=False, soft_wrap=True, markup=False)

    return on_file


def _with_progress_bar(media_dir: Path, out: Path | None, n_files: int, settings: dict[str, Any]) -> Any:
    """Run the extraction under a live progress bar on the terminal (files done, the last file's name)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmfuse.extract import extract_folder

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

        return extract_folder(media_dir, out, on_file=on_file, **settings)
